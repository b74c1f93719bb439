"""The page at `/` in a real headless Chromium: load it, upload an image through the file input, wait for the
overlay, read the class shares from the DOM, move the opacity slider, and keep a screenshot.

The screenshot goes to $SEGLAB_TEST_ARTIFACTS/serve_page.png when that folder is set (CI keeps it), else to the
test's tmp_path (pytest keeps the last three runs' folders)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_fixtures import headless_chrome
from seglab.serving import ServeSettings, create_app
from serving_helpers import CLASS_NAMES, GatedPredictor, encoded, expected_classes, running_service


def shapes_photo(side: int = 160) -> np.ndarray:
    """A dark gradient with a mid-grey disc and a bright square: three classes for the brightness model."""
    rows, columns = np.mgrid[0:side, 0:side]
    image = np.repeat((20 + 40 * columns / side)[..., None], 3, axis=2)
    disc = (rows - side * 0.35) ** 2 + (columns - side * 0.35) ** 2 < (side * 0.22) ** 2
    image[disc] = (120, 130, 140)
    image[int(side * 0.55):int(side * 0.9), int(side * 0.5):int(side * 0.9)] = (235, 225, 215)
    return image.astype(np.uint8)


@pytest.mark.slow
def test_the_page_predicts_an_uploaded_image_in_a_real_browser(tmp_path):

    image = shapes_photo()
    upload = tmp_path / "shapes.png"
    upload.write_bytes(encoded(image))
    with running_service(create_app(GatedPredictor(), ServeSettings())) as url:
        driver = headless_chrome("1100,800")
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 20)
            wait.until(lambda d: "tiny_test" in d.find_element(By.ID, "model").text)
            legend = [row.get_attribute("data-class")
                      for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-class]")]
            driver.find_element(By.ID, "file").send_keys(str(upload))
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
            error = driver.find_element(By.ID, "error").text
            shares = {row.get_attribute("data-class"): float(row.find_element(By.CSS_SELECTOR, "td.share")
                                                              .get_attribute("data-share"))
                      for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-class]")}
            shown = driver.find_element(By.CSS_SELECTOR, "tr[data-class='square'] td.share").text
            overlay = driver.execute_script(
                "const m = document.getElementById('mask'); return [m.complete, m.naturalWidth, m.naturalHeight];")
            slider = driver.find_element(By.ID, "opacity")
            driver.execute_script("arguments[0].value = 25; arguments[0].dispatchEvent(new Event('input'));", slider)
            opacity = driver.execute_script("return document.getElementById('mask').style.opacity")
            screenshot = Path(os.environ.get("SEGLAB_TEST_ARTIFACTS", tmp_path)) / "serve_page.png"
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
            # A file that is no image: the page shows the service's refusal.
            not_an_image = tmp_path / "notes.png"
            not_an_image.write_text("a text file named .png")
            driver.find_element(By.ID, "file").send_keys(str(not_an_image))
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "error")
            refusal = driver.find_element(By.ID, "error").text
            external = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
                ".filter(n => !n.startsWith(location.origin) && !n.startsWith('data:') && !n.startsWith('blob:'))")
        finally:
            driver.quit()
    assert error == ""
    assert legend == list(CLASS_NAMES)
    counts = np.bincount(expected_classes(image).ravel(), minlength=3) / image.shape[0] / image.shape[1]
    assert shares == pytest.approx(dict(zip(CLASS_NAMES, counts, strict=True)), abs=1e-5)
    assert shown == f"{100 * counts[2]:.1f} %"
    assert overlay == [True, image.shape[1], image.shape[0]]
    assert opacity == "0.25"
    assert external == []
    assert refusal.startswith("400 not-an-image:"), refusal
    shot = Image.open(screenshot)
    assert shot.size[0] >= 1000 and len(np.unique(np.asarray(shot.convert("L")))) > 20  # not a blank page
    print(f"screenshot: {screenshot}")
