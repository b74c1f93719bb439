"""The bad-input corpus (tests/bad_inputs.py) through every batch operation: `seglab data check`, training's data
loading, `seglab predict` and `seglab evaluate`.

Every bad file must be named with its case's tag while the good pair beside it is still processed (or, for
training and evaluation, every bad file listed before the first step); every repaired file must read as the
documented repair says, the same way in each operation, because they all decode through
`seglab.data.files.load_rgb`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bad_inputs import CASES, CLASS_NAMES, ERRORS, REPAIRS, Case, build, option_flags, shown, unreadable_files
from seglab.cli import main
from seglab.data import FolderDataset
from seglab.data.files import PROBLEM_TAGS, display_path

CASE_IDS = [case.id for case in CASES]
PREDICT_CASES = [case for case in CASES if case.tag_in_predict is not None or case.tag is None]


def tagged(text: str, tag: str, path: Path) -> bool:
    """Whether one line of `text` names `path` (as seglab prints it) under `[tag]`."""
    return any(f"[{tag}]" in line and shown(path) in line for line in text.splitlines())


def denied(case: Case, built) -> list[Path]:
    return [built.named] if case.unreadable else []


def folder_config(tmp_path: Path, images: Path, masks: Path, case: Case | None = None, **values) -> Path:
    """A tiny `seglab train` config over two folders (all pairs for training, the same pairs for validation)."""
    config = {
        "name": "corpus", "dataset": "folder", "images_dir": str(images), "masks_dir": str(masks),
        "val_images_dir": str(images), "val_masks_dir": str(masks), "class_names": list(CLASS_NAMES),
        "image_size": [24, 32], "batch_size": 2, "model": "deeplabv3plus_xception41", "precision": "32-true",
        "progress_bar": False, "max_epochs": 1, "test_after_training": False, "runs_dir": str(tmp_path / "runs"),
        **(case.options if case else {}), **({"recursive": True} if case and case.recursive else {}), **values,
    }
    if "palette" in config:
        config["palette"] = {cls: list(colour) for cls, colour in config["palette"].items()}
    path = tmp_path / "corpus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_corpus_covers_every_tag_a_data_file_can_get():
    # A tag added to PROBLEM_TAGS without a corpus case fails here. "missing" and "no-match" are only for
    # paths given to `seglab predict` (tests/e2e/test_predict_cli.py) or named by a split list file
    # (tests/unit/data/test_list_splits.py); "out-of-memory" only for inputs too large to predict
    # (tests/unit/inference/test_inference.py); the annotation objects' tags only for annotation exports
    # (tests/unit/data/test_annotations_*.py).
    tags = {case.tag for case in ERRORS} | {case.tag_in_predict for case in CASES if case.tag_in_predict}
    annotation_only = {"bad-shape", "outside-image", "unknown-label"}
    assert tags == set(PROBLEM_TAGS) - {"missing", "no-match", "out-of-memory"} - annotation_only
    assert len(CASES) == 30 and len(ERRORS) == 20 and len(REPAIRS) == 10


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_data_check_names_each_bad_file_and_checks_the_rest(case, tmp_path, capsys):
    built = build(case, tmp_path)
    with unreadable_files(denied(case, built)):
        code = main(["data", "check", "--images", str(built.images), "--masks", str(built.masks),
                     "--class-names", ",".join(CLASS_NAMES), *option_flags(case)])
    out = capsys.readouterr().out
    if case.tag is None:
        assert code == 0, out
        assert "2 pairs found, 2 without problems, 0 problems" in out, out
        return
    assert code == 1, out
    assert tagged(out, case.tag, built.named), out
    good = 1 if case.keeps_good_pair else 0  # the good pair beside the bad file is still read and counted
    assert f"{good} without problems" in out, out


@pytest.mark.parametrize("case", ERRORS, ids=[case.id for case in ERRORS])
def test_training_stops_before_the_first_step_naming_the_bad_file(case, tmp_path, capsys):
    built = build(case, tmp_path)
    config = folder_config(tmp_path, built.images, built.masks, case)
    with unreadable_files(denied(case, built)):
        code = main(["train", str(config)])
    err = capsys.readouterr().err
    assert code == 2  # a seglab error: anything else would have escaped main() and failed this test
    assert tagged(err, case.tag, built.named), err
    # Not one step was taken, and no run folder was made that would block the same command once the file is fixed.
    assert not (tmp_path / "runs" / "corpus").exists()


@pytest.mark.parametrize("case", REPAIRS, ids=[case.id for case in REPAIRS])
def test_training_reads_each_repaired_file_as_documented(case, tmp_path):
    from seglab.training.config import load_config
    from seglab.training.datamodule import SegmentationDataModule

    built = build(case, tmp_path)
    datamodule = SegmentationDataModule.from_config(load_config(folder_config(tmp_path, built.images, built.masks,
                                                                              case)))
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    assert isinstance(dataset, FolderDataset) and len(dataset) == 2
    index = [pair[0] for pair in dataset.pairs].index(built.named) if built.expected is not None else None
    if index is not None:
        rgb, mask = dataset.load(index)
        assert rgb.shape == built.expected.shape and mask.shape == rgb.shape[:2]
        assert np.abs(rgb.astype(int) - built.expected).mean() <= case.tolerance
    if case.id == "ignore_value_in_mask":
        mask = dataset.load([pair[1] for pair in dataset.pairs].index(built.named))[1]
        assert (mask[:6] == 255).all() and set(np.unique(mask[6:]).tolist()) == {0, 1}


@pytest.fixture(scope="module")
def repaired_run(tmp_path_factory) -> Path:
    """A run trained (one epoch) on a folder holding every repaired case: the checkpoint for predict/evaluate."""
    root = tmp_path_factory.mktemp("repaired")
    for case in REPAIRS:
        build(case, root)
    config = folder_config(root, root / "images", root / "masks", recursive=True)
    assert main(["train", str(config)]) == 0
    return root / "runs" / "corpus"


def readable_images(built: dict) -> int:
    """How many images of the predict folder can be read: the good one, and those of every case whose problem
    is not the image itself (repairs, bad masks, images without a mask)."""
    return 1 + sum(1 for case in PREDICT_CASES if case.tag is None or case.tag_in_predict == "no-mask"
                   or built[case.id].named.is_relative_to(built[case.id].masks))


@pytest.fixture(scope="module")
def predicted(repaired_run, tmp_path_factory):
    """One `seglab predict --masks` run over one folder holding every case predict takes: (report, built, out)."""
    root = tmp_path_factory.mktemp("predict")
    built = {case.id: build(case, root) for case in PREDICT_CASES}
    unreadable = [path for case in PREDICT_CASES for path in denied(case, built[case.id])]
    out = tmp_path_factory.mktemp("predictions")
    args = ["predict", str(repaired_run), str(root / "images"), str(built["no_images"].named), "--out", str(out),
            "--masks", str(root / "masks"), "--recursive", "--no-progress", "--precision", "fp32", "--overwrite"]
    with unreadable_files(unreadable), contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = main(args)
    return code, stdout.getvalue(), built, out


@pytest.mark.parametrize("case", PREDICT_CASES, ids=[case.id for case in PREDICT_CASES])
def test_predict_reports_each_bad_file_and_predicts_the_others(case, predicted):
    code, report, built, out = predicted
    report.encode("utf-8")  # non-UTF-8 names are printed as escapes
    assert code == 1  # some inputs failed ...
    # ... and every readable image was predicted
    assert f"\npredicted {readable_images(built)} image(s) into" in report, report
    files = built[case.id]
    tag = case.tag_in_predict
    if tag is not None:
        assert tagged(report, tag, files.named), report
        if files.named.is_relative_to(files.images):  # a bad image gets no prediction; one without a mask does
            assert (out / f"{files.named.stem}.png").is_file() == (tag == "no-mask")
        elif files.named.is_relative_to(files.masks):  # the image of a bad mask is still predicted
            assert (out / f"{files.named.stem}.png").is_file()
        return
    image = files.named if files.named.is_relative_to(files.images) else files.images / files.named.name
    prediction = out / image.relative_to(files.images).with_suffix(".png")
    assert shown(files.named) not in report, report
    assert np.asarray(Image.open(prediction)).shape == (24, 32)  # upright, at the image's own size
    with open(out / "per_image.csv", newline="", encoding="utf-8") as file:
        assert display_path(image) in {row["file"] for row in csv.DictReader(file)}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_evaluate_lists_every_bad_file_before_scoring(case, repaired_run, tmp_path, capsys):
    built = build(case, tmp_path / "data")
    with unreadable_files(denied(case, built)):
        code = main(["evaluate", str(repaired_run), "--images", str(built.images), "--masks", str(built.masks),
                     "--out", str(tmp_path / "report"), "--no-progress", *option_flags(case, recursive=False)])
    captured = capsys.readouterr()
    if case.tag is None:
        assert code == 0, captured.err
        metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
        assert metrics["images"] == (1 if case.recursive else 2)  # evaluate reads the top folder only
        return
    assert code == 2
    assert tagged(captured.err, case.tag, built.named), captured.err
    assert not (tmp_path / "report").exists()  # nothing was scored from a partial set


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_file_that_goes_bad_during_training_stops_it_with_its_name(num_workers, tmp_path, capsys, monkeypatch):
    # The check before training passes; then a file is emptied, as a sync or another process might do.
    from seglab.training import datamodule

    built = build(REPAIRS[0], tmp_path / "data")
    victim = built.named
    check = datamodule.refuse_bad_files

    def check_then_spoil(datasets, action):
        check(datasets, action)
        victim.write_bytes(b"")

    monkeypatch.setattr(datamodule, "refuse_bad_files", check_then_spoil)
    config = folder_config(tmp_path, built.images, built.masks, num_workers=num_workers)
    # 2 is a seglab error; a RuntimeError from a DataLoader worker would have escaped main() instead.
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert tagged(err, "empty", victim), err
    assert "Training stopped at this file" in err and "seglab train --resume" in err


def test_non_utf8_names_print_as_escapes_and_write_valid_utf8(tmp_path, capsys):
    built = build(next(case for case in CASES if case.id == "non_utf8_name_bad"), tmp_path)
    assert os.fsencode(built.named.name) == b"d\xe9fectueux.png"
    assert main(["data", "check", "--images", str(built.images), "--masks", str(built.masks),
                 "--class-names", ",".join(CLASS_NAMES)]) == 1
    out = capsys.readouterr().out
    assert "d\\xe9fectueux.png" in out
    out.encode("utf-8")  # no lone surrogate escaped into the report
