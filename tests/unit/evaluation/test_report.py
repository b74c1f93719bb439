"""`seglab report`: one self-contained HTML page, checked as text and in a real headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import headless_chrome
from seglab.cli import main
from seglab.inference import InferenceSpec, Predictor

SECTIONS = ["summary", "curves", "metrics", "classes", "confusion", "gallery", "config"]


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(trained_run), "--out", str(out)]) == 0
    return out


def test_the_report_is_one_self_contained_file(report, trained_run):
    html = report.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    # The run had no evaluation yet: the report ran val and test itself.
    assert (trained_run / "evaluate" / "val" / "metrics.json").is_file()
    assert (trained_run / "evaluate" / "test" / "metrics.json").is_file()
    attributes = re.findall(r'\s[\w-]+="([^"]*)"', html)
    assert not [value for value in attributes if re.search(r"https?:", value)]
    sources = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(sources) == 5  # curves, class bars, confusion matrix, best, worst
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert image.size[0] > 100 and image.size[1] > 50
    assert "<script" not in html
    assert "deeplabv3plus_xception41" in html and "background" in html and "mIoU" in html


def test_the_report_renders_in_a_real_browser(report, tmp_path):
    driver = headless_chrome("1280,1800")
    try:
        driver.get(report.resolve().as_uri())
        sections = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
        title = driver.title
        screenshot = tmp_path / "report.png"
        driver.save_screenshot(str(screenshot))
        light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        # A dark-mode browser gets a dark page.
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    finally:
        driver.quit()
    assert sections == SECTIONS
    assert len(widths) == 5 and all(width > 0 for width in widths), widths
    assert title.startswith("seglab report")
    assert light == "rgb(255, 255, 255)" and dark == "rgb(21, 23, 27)"
    shot = Image.open(screenshot)
    assert shot.size[0] >= 1000 and len(np.unique(np.asarray(shot.convert("L")))) > 20  # not a blank page
    if os.environ.get("SEGLAB_KEEP_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["SEGLAB_KEEP_SCREENSHOT"])


class TinyPairs:
    """Four 16 px image/mask pairs, a run's val or test split in miniature."""

    def __init__(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(4, 3, 16, 16, generator=generator)
        self.masks = torch.randint(0, 2, (4, 16, 16), generator=generator)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index]


MARKUP_CLASSES = ("<b>bold</b>", "<img src=x onerror=alert(1)>")


def tiny_run(folder: Path, seed: int) -> tuple[Predictor, Path]:
    """A run folder whose name, config text and class names hold markup, and a best.ckpt of `seed`'s weights."""
    torch.manual_seed(seed)
    model = torch.nn.Conv2d(3, 2, 3, padding=1)
    spec = InferenceSpec(model="tiny", model_options={}, num_classes=2, class_names=MARKUP_CLASSES,
                         palette=((0, 0, 0), (255, 0, 0)))
    (folder / "config.yaml").write_text("model: tiny\nnote: <script>alert(2)</script>\n")
    checkpoint = folder / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return Predictor(model, spec), checkpoint


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_report_scores_again_when_the_checkpoint_changed_and_escapes_what_it_shows(tmp_path):
    from seglab.evaluation.html_report import write_report

    run = tmp_path / "run <em onmouseover=alert(1)>"
    run.mkdir()
    datasets = {"val": TinyPairs(1), "test": TinyPairs(2)}
    predictor, checkpoint = tiny_run(run, seed=0)
    html = write_report(run, predictor, datasets, checkpoint, sha256(checkpoint)).read_text(encoding="utf-8")
    metrics = run / "evaluate" / "test" / "metrics.json"
    first = json.loads(metrics.read_text())
    assert first["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # Markup in what the page shows appears as text, never as live tags.
    for text in (run.name, *MARKUP_CLASSES, "<script>alert(2)</script>"):
        assert html_escape(text, quote=False) in html, text
    assert "<script" not in html and "<b>bold" not in html and "<img src=x" not in html and "<em " not in html
    # The same checkpoint: the scores stand. Other weights in best.ckpt (a resume): both splits scored again.
    write_report(run, predictor, datasets, checkpoint, sha256(checkpoint))
    assert json.loads(metrics.read_text()) == first
    predictor, checkpoint = tiny_run(run, seed=1)
    write_report(run, predictor, datasets, checkpoint, sha256(checkpoint))
    for split in ("val", "test"):
        again = json.loads((run / "evaluate" / split / "metrics.json").read_text())
        assert again["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert json.loads(metrics.read_text())["per_class"] != first["per_class"]
