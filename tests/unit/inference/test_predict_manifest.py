"""The prediction manifest (`OUT/seglab-predict.json`): `--skip-existing` keeps only outputs of the same model and
options; another model or other options are refused unless `--overwrite`."""

from __future__ import annotations

import json

import pytest

from predict_helpers import write_images, write_tiny_checkpoint
from seglab.cli import main
from seglab.evaluation.checkpoint import checkpoint_identity
from seglab.inference.manifest import MANIFEST_NAME
from training_helpers import register_tiny_model


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    images = tmp_path / "imgs"
    write_images(images, 3)
    return write_tiny_checkpoint(tmp_path / "a.ckpt", seed=0), write_tiny_checkpoint(tmp_path / "b.ckpt", seed=1), \
        images, tmp_path / "out"


def predict(*args):
    return main(["predict", *map(str, args), "--no-progress", "--precision", "fp32"])


def test_the_manifest_names_the_model_by_hash_and_the_options(setup):
    first, _, images, out = setup
    assert predict(first, images, "--out", out, "--tile", 16) == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["model_sha256"] == checkpoint_identity(first)
    assert manifest["options"]["tile"] == 16 and manifest["options"]["engine"] == "pytorch"


def test_skip_existing_with_another_model_or_options_is_refused_unless_overwrite(setup, capsys):
    first, second, images, out = setup
    assert predict(first, images, "--out", out) == 0
    (out / "img1.png").unlink()
    written = {path.name: path.stat().st_mtime_ns for path in out.glob("img*.png")}
    capsys.readouterr()
    assert predict(second, images, "--out", out, "--skip-existing") == 2
    err = capsys.readouterr().err
    assert f"model {first}" in err and f"{second}" in err and "--overwrite" in err, err
    assert predict(first, images, "--out", out, "--skip-existing", "--tta", "flip") == 2
    assert "tta None there, 'flip' now" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("img*.png")} == written  # nothing touched
    # The same model and options: only the missing output is written.
    assert predict(first, images, "--out", out, "--skip-existing") == 0
    assert "predicted 1 image(s)" in capsys.readouterr().out
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written
    # --overwrite: everything again with the other model, and the manifest now names it.
    assert predict(second, images, "--out", out, "--overwrite") == 0
    assert json.loads((out / MANIFEST_NAME).read_text())["model_sha256"] == checkpoint_identity(second)


def test_outputs_without_a_manifest_are_not_kept_by_skip_existing(setup, capsys):
    first, _, images, out = setup
    assert predict(first, images, "--out", out) == 0
    (out / MANIFEST_NAME).unlink()
    assert predict(first, images, "--out", out, "--skip-existing") == 2
    assert f"no {MANIFEST_NAME}" in capsys.readouterr().err
    assert predict(first, images, "--out", out) == 2  # plain rerun: outputs exist
