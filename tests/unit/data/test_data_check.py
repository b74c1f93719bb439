"""`seglab data check` / check_folders: every problem of a folder reported at once, each naming its file."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
from PIL import Image

from data_fixtures import ISBI_DIR, make_layout_tree, png_header_only, save_png
from seglab.cli import main
from seglab.cli.data import add_folder_options, add_mask_options, folder_options
from seglab.data import FolderOptions, check_folders


def _folder_with_every_problem(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    rng = np.random.default_rng(0)

    def image(name: str, height: int = 16, width: int = 16):
        return save_png(images / name, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))

    def mask(name: str, value: int = 1, height: int = 16, width: int = 16):
        return save_png(masks / name, np.full((height, width), value, np.uint8))

    for stem in ("good_1", "good_2"):
        image(f"{stem}.png")
        mask(f"{stem}.png")
    image("unreadable.png").write_bytes(b"this is text, not a PNG")
    mask("unreadable.png")
    full = image("truncated.png", 48, 48).read_bytes()
    (images / "truncated.png").write_bytes(full[: len(full) // 2])
    mask("truncated.png", height=48, width=48)
    image("empty.png").write_bytes(b"")
    mask("empty.png")
    image("mismatch.png")
    mask("mismatch.png", height=16, width=20)
    image("badvalues.png")
    mask("badvalues.png", value=9)
    image("deep.png")
    Image.fromarray(np.ones((16, 16), np.uint16)).save(masks / "deep.png")
    image("colour.png")
    save_png(masks / "colour.png", np.ones((16, 16, 3), np.uint8))
    image("bomb.png").write_bytes(png_header_only(120_000, 90_000))
    mask("bomb.png")
    image("no_mask.png")
    mask("no_image.png")
    return images, masks


EXPECTED = {
    ("unreadable.png", "unreadable"),
    ("truncated.png", "truncated"),
    ("empty.png", "empty"),
    ("mismatch.png", "size-mismatch"),
    ("badvalues.png", "mask-values"),
    ("deep.png", "mask-16bit"),
    ("colour.png", "mask-channels"),
    ("bomb.png", "too-large"),
    ("no_mask.png", "unpaired"),
    ("no_image.png", "unpaired"),
}


def test_check_folders_reports_every_problem(tmp_path):
    images, masks = _folder_with_every_problem(tmp_path)
    report = check_folders(images, masks, FolderOptions(num_classes=3))
    assert {(p.path.name, p.kind) for p in report.problems} == EXPECTED
    assert report.pairs == 10 and report.good_pairs == 2 and not report.ok
    assert report.class_pixels == [0, 2 * 16 * 16, 0]


def test_cli_check_lists_problems_and_fails(tmp_path, capsys):
    images, masks = _folder_with_every_problem(tmp_path)
    assert main(["data", "check", "--images", str(images), "--masks", str(masks), "--num-classes", "3"]) == 1
    out = capsys.readouterr().out
    for name, kind in EXPECTED:
        assert any(name in line and f"[{kind}]" in line for line in out.splitlines()), (name, kind)
    assert "10 problems" in out


def test_cli_check_passes_clean_folder(tmp_path, capsys):
    images, masks = tmp_path / "i", tmp_path / "m"
    for stem in ("a", "b"):
        save_png(images / f"{stem}.jpg", np.zeros((8, 8, 3), np.uint8))
        save_png(masks / f"{stem}.png", np.array([[0, 255]] * 8, np.uint8).repeat(4, axis=1))
    code = main(["data", "check", "--images", str(images), "--masks", str(masks), "--value-map", "0:0,255:1"])
    assert code == 0
    assert "0 problems" in capsys.readouterr().out
    # The same masks read as indices: 255 is the ignore index, and the report says so.
    assert main(["data", "check", "--images", str(images), "--masks", str(masks), "--num-classes", "2"]) == 0
    assert "most pixels are ignored" not in capsys.readouterr().out  # exactly half here
    with pytest.raises(SystemExit) as info:  # argparse rejects a malformed value map with its usage message
        main(["data", "check", "--images", str(images), "--masks", str(masks), "--value-map", "oops"])
    assert info.value.code == 2 and "is not VALUE:CLASS" in capsys.readouterr().err


def test_cli_check_isbi_membrane(capsys):
    if not (ISBI_DIR / "train" / "label").is_dir():
        pytest.skip(f"ISBI-2012 data not found at {ISBI_DIR}")
    folders = ["--images", str(ISBI_DIR / "train" / "image"), "--masks", str(ISBI_DIR / "train" / "label")]
    args = ["data", "check", *folders]
    assert main([*args, "--value-map", "0:0,255:1", "--class-names", "membrane,cell"]) == 0
    out = capsys.readouterr().out
    assert "30 pairs found, 30 without problems, 0 problems" in out
    share = float(out.split("membrane ")[1].split("%")[0])
    assert 10 < share < 40
    # Without the value map, 255 would silently be "ignore": the check warns.
    main([*args, "--num-classes", "2"])
    assert "most pixels are ignored" in capsys.readouterr().out


def test_check_flags_come_from_folder_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "check", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for spec in dataclasses.fields(FolderOptions):
        assert f"--{spec.name.replace('_', '-')}" in text, spec.name
        assert spec.metadata["help"] in text, spec.name
    parser = argparse.ArgumentParser()
    add_folder_options(parser)
    flags = "--palette 0:#000000,1:#ff0000 --class-names bg,red --ignore-index 9 --mask-suffix _m --image-suffix _i"
    args = parser.parse_args([*flags.split(" "), "--recursive", "--allow-unpaired"])
    expected = FolderOptions(
        palette={0: (0, 0, 0), 1: (255, 0, 0)},
        class_names=["bg", "red"],
        ignore_index=9,
        mask_suffix="_m",
        image_suffix="_i",
        recursive=True,
        allow_unpaired=True,
    )
    assert folder_options(args) == expected
    assert folder_options(parser.parse_args([])) == FolderOptions()
    with pytest.raises(SystemExit):  # one encoding at a time
        parser.parse_args(["--palette", "0:#000000", "--value-map", "0:0"])


def test_mask_options_for_predict_and_evaluate():
    parser = argparse.ArgumentParser()
    group = add_mask_options(parser)
    group.add_argument("--own", action="store_true")
    assert [action.dest for action in group._group_actions] == ["value_map", "palette", "own"]
    args = parser.parse_args(["--value-map", "0:0,255:1", "--mask-suffix", "_mask"])
    assert (args.value_map, args.palette, args.mask_suffix) == ({0: 0, 255: 1}, None, "_mask")


def test_check_allow_unpaired_skips_instead_of_failing(tmp_path, capsys):
    images, masks = tmp_path / "i", tmp_path / "m"
    for stem in ("a", "b"):
        save_png(images / f"{stem}.jpg", np.zeros((4, 6, 3), np.uint8))
    save_png(masks / "a.png", np.zeros((4, 6), np.uint8))
    folders = ["data", "check", "--images", str(images), "--masks", str(masks), "--num-classes", "2"]
    assert main(folders) == 1
    assert main([*folders, "--allow-unpaired"]) == 0
    assert "1 unpaired files skipped" in capsys.readouterr().out


def _sections(out: str) -> dict[str, str]:
    # "== val: ... ==" headers -> the text under each
    parts = out.split("\n== ")
    return {part.split(":")[0]: part for part in parts[1:]}


def test_check_root_reports_each_split(tmp_path, capsys):
    root = make_layout_tree(tmp_path / "data", "mmseg", {"train": 3, "val": 2})
    save_png(root / "ann_dir" / "val" / "val_1.png", np.full((6, 10), 7, np.uint8))  # a class that does not exist
    assert main(["data", "check", "--root", str(root), "--num-classes", "2"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"layout mmseg in {root}\n  train: img_dir/train/ + ann_dir/train/, 3 pairs\n")
    sections = _sections(out)
    assert list(sections) == ["train", "val"]
    assert "3 pairs found, 3 without problems, 0 problems" in sections["train"]
    assert "val_1.png" not in sections["train"]
    assert any("val_1.png" in line and "[mask-values]" in line for line in sections["val"].splitlines())
    assert "2 pairs found, 1 without problems, 1 problems" in sections["val"]
    assert out.rstrip().endswith("problems in val")

    save_png(root / "ann_dir" / "val" / "val_1.png", np.ones((6, 10), np.uint8))
    assert main(["data", "check", "--root", str(root), "--layout", "mmseg", "--num-classes", "2"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no problems in train, val")


def test_check_root_errors(tmp_path, capsys):
    root = make_layout_tree(tmp_path / "data", "segnet", {"train": 1})
    assert main(["data", "check", "--root", str(root), "--layout", "cityscapes", "--num-classes", "2"]) == 2
    assert "is not a cityscapes dataset" in capsys.readouterr().err
    assert main(["data", "check", "--root", str(root), "--images", str(root / "train"), "--num-classes", "2"]) == 2
    assert "give one of --root, --images / --masks or --config, not --root and --images" in capsys.readouterr().err
    assert main(["data", "check", "--num-classes", "2"]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(["data", "check", "--root", str(root), "--palette", "0:#000000,1:#000000"]) == 2
    assert "share one colour" in capsys.readouterr().err
