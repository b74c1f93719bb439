"""Output names stay inside `--out`: an input named `..png` (stem `.`) or `...png` (stem `..`) is refused by name
before anything is predicted, never written beside or above the output folder (issue 31, item 6)."""

from __future__ import annotations

import shutil

from predict_helpers import write_images, write_tiny_checkpoint
from seglab.cli import main
from training_helpers import register_tiny_model


def test_inputs_whose_stem_is_dots_are_refused_by_name(tmp_path, monkeypatch, capsys):
    register_tiny_model(monkeypatch)
    checkpoint = write_tiny_checkpoint(tmp_path / "model" / "tiny.ckpt")
    images = tmp_path / "imgs"
    (good,) = write_images(images, 1)
    dot, dot_dot = images / "..png", images / "...png"
    shutil.copy(good, dot)
    shutil.copy(good, dot_dot)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    code = main(["predict", str(checkpoint), str(good), str(dot), str(dot_dot), "--out", str(out),
                 "--no-progress", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(dot) in err and str(dot_dot) in err and "rename" in err, err
    assert list(work.iterdir()) == []  # no out.png beside --out, and nothing predicted


def test_a_safe_name_beginning_with_dots_is_predicted(tmp_path, monkeypatch, capsys):
    register_tiny_model(monkeypatch)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    (good,) = write_images(tmp_path / "imgs", 1)
    odd = shutil.copy(good, tmp_path / "imgs" / "..a.png")  # stem "..a": a plain, if hidden, file name
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(odd), "--out", str(out), "--no-progress", "--precision",
                 "fp32"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["..a.png", "seglab-predict.json"]
