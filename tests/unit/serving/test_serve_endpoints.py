"""`seglab serve`'s endpoints, through a real uvicorn server on a loopback port: each answer format checked
pixel by pixel against a model whose prediction is known, and the service's descriptions of itself."""

from __future__ import annotations

import base64
import io
import json
import re

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

import seglab
from seglab.data.classes import default_palette
from seglab.serving import ServeSettings, create_app
from serving_helpers import CLASS_NAMES, GatedPredictor, encoded, expected_classes, metric, running_service, stripes


@pytest.fixture(scope="module")
def service():
    predictor = GatedPredictor()
    with running_service(create_app(predictor, ServeSettings(max_wait_ms=1))) as url:
        yield url, predictor


def post_png(url: str, image: np.ndarray, query: str = "", **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/predict{query}", content=encoded(image),
                      headers={"content-type": "image/png", **headers}, timeout=30)


def test_the_palette_png_holds_the_class_of_every_pixel(service):
    url, _ = service
    image = stripes(64, 48)
    response = post_png(url, image)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    answer = Image.open(io.BytesIO(response.content))
    assert answer.mode == "P" and answer.size == (48, 64)
    assert np.array_equal(np.asarray(answer), expected_classes(image))
    assert answer.getpalette()[:9] == [value for colour in default_palette(3) for value in colour]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # its decode, numpy 2
def test_the_index_png_json_shares_and_coco_rle_say_the_same(service):
    url, _ = service
    image = stripes()
    expected = expected_classes(image)
    index = Image.open(io.BytesIO(post_png(url, image, "?format=index").content))
    assert index.mode == "L" and np.array_equal(np.asarray(index), expected)

    shares = post_png(url, image, "?format=json").json()
    assert (shares["width"], shares["height"]) == (64, 64)
    assert [entry["name"] for entry in shares["classes"]] == list(CLASS_NAMES)
    counts = np.bincount(expected.ravel(), minlength=3)
    assert [entry["pixels"] for entry in shares["classes"]] == counts.tolist()
    assert sum(entry["share"] for entry in shares["classes"]) == pytest.approx(1.0, abs=1e-5)
    assert "mask_png" not in shares

    rle = post_png(url, image, "?format=rle").json()
    assert sorted(entry["category_id"] for entry in rle["annotations"]) == [0, 1, 2]
    for entry in rle["annotations"]:
        segmentation = {**entry["segmentation"], "counts": entry["segmentation"]["counts"].encode("ascii")}
        assert np.array_equal(coco_mask.decode(segmentation), expected == entry["category_id"])
        assert entry["area"] == counts[entry["category_id"]] and entry["name"] == CLASS_NAMES[entry["category_id"]]


def test_multipart_raw_and_jpeg_uploads_and_accept_headers(service):
    url, _ = service
    image = stripes()
    raw = post_png(url, image).content
    form = httpx.post(f"{url}/predict", files={"image": ("photo.png", encoded(image), "image/png")}, timeout=30)
    assert form.status_code == 200 and form.content == raw
    octet = post_png(url, image, **{"content-type": "application/octet-stream"})
    assert octet.content == raw
    jpeg = httpx.post(f"{url}/predict?format=index", content=encoded(image, "JPEG"),
                      headers={"content-type": "image/jpeg"}, timeout=30)
    assert jpeg.status_code == 200 and np.asarray(Image.open(io.BytesIO(jpeg.content))).shape == (64, 64)
    by_accept = post_png(url, image, accept="application/json")
    assert by_accept.headers["content-type"] == "application/json" and "classes" in by_accept.json()
    with_mask = post_png(url, image, "?format=json&mask=1").json()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(with_mask["mask_png"])))),
                          expected_classes(image))
    refused = post_png(url, image, accept="text/html")
    assert refused.status_code == 406 and refused.json()["error"] == "unknown-format"
    unknown = post_png(url, image, "?format=svg")
    assert unknown.status_code == 406 and "png, index, json, rle" in unknown.json()["detail"]


def test_health_ready_model_and_metrics(service):
    url, _ = service
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/ready").json() == {"ready": True, "status": "ready"}
    model = httpx.get(f"{url}/model").json()
    assert model["class_names"] == list(CLASS_NAMES) and model["palette"] == [list(c) for c in default_palette(3)]
    assert model["engine"] == "pytorch" and model["seglab_version"] == seglab.__version__
    assert model["batching"]["max_batch"] == 8 and model["limits"]["max_pixels"] == 4096 * 4096
    before = metric(httpx.get(f"{url}/metrics").text, 'seglab_requests_total{endpoint="/predict",status="200"}')
    post_png(url, stripes())
    text = httpx.get(f"{url}/metrics").text
    assert metric(text, 'seglab_requests_total{endpoint="/predict",status="200"}') == before + 1
    for name in ("seglab_predict_latency_seconds_count", "seglab_batch_size_count", "seglab_queue_depth",
                 "seglab_forward_seconds_count"):
        assert re.search(rf"^{name} ", text, re.MULTILINE), name
    assert metric(text, "seglab_predict_latency_seconds_count") >= 1


def test_the_page_is_one_self_contained_file(service):
    url, _ = service
    response = httpx.get(f"{url}/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "default-src 'none'" in html  # the browser itself refuses any fetch but this service
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert 'type="file"' in html and 'id="opacity"' in html and "/predict?format=json&mask=1" in html


def test_every_answer_has_its_own_image_size(service):
    url, _ = service
    for height, width in ((17, 31), (64, 64), (5, 120)):
        answer = Image.open(io.BytesIO(post_png(url, stripes(height, width), "?format=index").content))
        assert answer.size == (width, height)


def test_prediction_options_reach_every_pass():
    predictor = GatedPredictor()
    options = {"tta": "flip", "scales": (1.0, 0.5)}
    with running_service(create_app(predictor, ServeSettings(), predict_options=options)) as url:
        assert httpx.get(f"{url}/model").json()["predict_options"] == {"tta": "flip", "scales": [1.0, 0.5]}
        image = stripes(32, 48)
        answer = Image.open(io.BytesIO(post_png(url, image, "?format=index").content))
    assert predictor.options and all(seen == options for seen in predictor.options)
    # Brightness classes survive flips and halving except where bands meet: most pixels agree.
    assert (np.asarray(answer) == expected_classes(image)).mean() > 0.8


def test_errors_are_json_with_a_code_and_advice(service):
    url, _ = service
    response = httpx.post(f"{url}/predict", content=json.dumps({"image": "x"}),
                          headers={"content-type": "application/json"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported-content-type" and "curl -F" in response.json()["detail"]
