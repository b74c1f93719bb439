"""`seglab report`: one self-contained HTML page, checked as text and in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main

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


def _browser() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return (browser, driver) if browser and driver else None


def test_the_report_renders_in_a_real_browser(report, tmp_path):
    found = _browser()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser check: .ci/run installs chromium and chromium-driver (Debian)")
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver (and selenium) to run it")
    browser, driver_path = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
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
