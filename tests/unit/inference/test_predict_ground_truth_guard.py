"""`seglab predict` never writes onto its inputs or the ground truth named by `--masks` (issue 31, item 1)."""

from __future__ import annotations

import pytest

from predict_helpers import write_images, write_tiny_checkpoint
from seglab.cli import main
from training_helpers import register_tiny_model


@pytest.fixture()
def folders(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    checkpoint = write_tiny_checkpoint(tmp_path / "model.ckpt")
    images = tmp_path / "imgs"
    write_images(images, 3)
    masks = tmp_path / "masks"
    write_images(masks, 3, seed=1)  # stand-ins for ground truth: any bytes seglab must leave alone
    return checkpoint, images, masks


def _snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_out_equal_to_the_masks_folder_is_refused_even_with_overwrite(folders, capsys):
    checkpoint, images, masks = folders
    before = _snapshot(masks)
    code = main(["predict", str(checkpoint), str(images), "--masks", str(masks), "--out", str(masks),
                 "--overwrite", "--no-progress", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--out {masks}" in err and f"--masks {masks}" in err, err
    assert _snapshot(masks) == before  # no prediction over the ground truth, no score written beside it


def test_an_output_file_that_would_replace_a_mask_file_is_refused(folders, tmp_path, capsys):
    checkpoint, _, masks = folders
    # --out is the parent of the masks folder; a recursive input with a sub-folder named "masks" would mirror
    # its outputs onto <out>/masks/img0.png: a ground-truth file.
    tree = tmp_path / "tree"
    write_images(tree / "masks", 1)
    before = _snapshot(masks)
    code = main(["predict", str(checkpoint), str(tree), "--recursive", "--masks", str(masks), "--out",
                 str(tmp_path), "--overwrite", "--no-progress", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(masks / "img0.png") in err and str(tree / "masks" / "img0.png") in err, err
    assert _snapshot(masks) == before
