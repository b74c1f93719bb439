"""Every limit of `seglab serve` answers its own status and code, and refuses before the model runs."""

from __future__ import annotations

import socket
import time

import httpx
import numpy as np
import pytest

from data_fixtures import png_header_only
from seglab.serving import REFUSAL_STATUS, ServeSettings, create_app
from serving_helpers import GatedPredictor, encoded, metric, running_service, stripes

BODY_CAP_BYTES = 20_000
PIXEL_CAP = 64 * 64
# Noise: it does not compress, so half its file is half its pixels.
NOISE = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def service():
    predictor = GatedPredictor()
    settings = ServeSettings(max_body_mb=BODY_CAP_BYTES / 1e6, max_pixels=PIXEL_CAP, max_wait_ms=1)
    with running_service(create_app(predictor, settings)) as url:
        yield url, predictor


def refusal(response: httpx.Response, code: str) -> str:
    assert (response.status_code, response.json()["error"]) == (REFUSAL_STATUS[code], code), response.text
    return response.json()["detail"]


def raw_request(url: str, head: str, body: bytes) -> bytes:
    """Sends an HTTP/1.1 request as bytes (httpx always declares a body's length) and returns the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode("ascii") + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(("content", "content_type", "code", "advice"), [
    (b"", "image/png", "empty-body", "curl -F image=@"),
    (b"plain text, not an image", "image/png", "not-an-image", "PNG, JPEG"),
    (encoded(NOISE)[:len(encoded(NOISE)) // 2], "image/png", "truncated-image", "whole file"),
    (encoded(NOISE, "JPEG")[:100], "image/jpeg", "truncated-image", "whole file"),
    (encoded(stripes()), "application/x-www-form-urlencoded", "unsupported-content-type", "Content-Type image/"),
    (encoded(stripes()), "text/plain", "unsupported-content-type", "multipart/form-data"),
])
def test_bad_bodies_are_4xx_json_naming_the_problem(service, content, content_type, code, advice):
    url, predictor = service
    passes = len(predictor.batches)
    detail = refusal(httpx.post(f"{url}/predict", content=content, headers={"content-type": content_type}), code)
    assert advice in detail
    assert len(predictor.batches) == passes  # the model never saw it


def test_multipart_forms_without_a_file_or_broken_are_400(service):
    url, _ = service
    refusal(httpx.post(f"{url}/predict", data={"note": "no file here"}, files={}), "unsupported-content-type")
    no_file = httpx.post(f"{url}/predict", content=b"--x\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
                         b"hi\r\n--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"})
    refusal(no_file, "no-file")
    broken = httpx.post(f"{url}/predict", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data"})
    refusal(broken, "bad-multipart")


def test_a_body_over_the_cap_is_refused_declared_or_streamed(service):
    url, predictor = service
    passes = len(predictor.batches)
    too_big = bytes(BODY_CAP_BYTES + 1)
    detail = refusal(httpx.post(f"{url}/predict", content=too_big, headers={"content-type": "image/png"}),
                     "body-too-large")
    assert f"{BODY_CAP_BYTES + 1:,} bytes" in detail and f"{BODY_CAP_BYTES:,}" in detail
    # Chunked, with no length declared: refused while reading, once the count passes the cap.
    chunk = b"%x\r\n%s\r\n" % (10_000, b"\0" * 10_000)
    answer = raw_request(url, "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                              "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n", chunk * 3 + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b'"body-too-large"' in answer
    # In a multipart form too.
    form = httpx.post(f"{url}/predict", files={"image": ("big.png", too_big, "image/png")})
    refusal(form, "body-too-large")
    assert len(predictor.batches) == passes


def test_pixels_are_counted_from_the_header_before_decoding(service):
    url, predictor = service
    passes = len(predictor.batches)
    # PNG headers over 16 bytes of data: decoding would fail as truncated (or allocate gigabytes), so a 413
    # shows the header was judged first: by the service's cap, and beyond PIL's own bomb threshold by PIL.
    bomb = httpx.post(f"{url}/predict", content=png_header_only(5000, 5000), headers={"content-type": "image/png"})
    assert "5000x5000 = 25,000,000 pixels" in refusal(bomb, "too-many-pixels")
    huge = httpx.post(f"{url}/predict", content=png_header_only(60_000, 60_000), headers={"content-type": "image/png"})
    assert "decompression bomb" in refusal(huge, "too-many-pixels")
    over = httpx.post(f"{url}/predict", content=encoded(stripes(64, 65)), headers={"content-type": "image/png"})
    assert f"at most {PIXEL_CAP:,}" in refusal(over, "too-many-pixels")
    at_cap = httpx.post(f"{url}/predict", content=encoded(stripes(64, 64)), headers={"content-type": "image/png"})
    assert at_cap.status_code == 200
    assert len(predictor.batches) == passes + 1


def test_refusals_are_counted_by_reason(service):
    url, _ = service
    text = httpx.get(f"{url}/metrics").text
    before = metric(text, 'seglab_rejections_total{reason="not-an-image"}')
    httpx.post(f"{url}/predict", content=b"nope", headers={"content-type": "image/png"})
    text = httpx.get(f"{url}/metrics").text
    assert metric(text, 'seglab_rejections_total{reason="not-an-image"}') == before + 1
    assert metric(text, 'seglab_requests_total{endpoint="/predict",status="400"}') >= 1


def test_an_upload_slower_than_the_timeout_is_408():
    predictor = GatedPredictor()
    with running_service(create_app(predictor, ServeSettings(timeout_s=0.5))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            started = time.monotonic()
            client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 5000\r\n\r\n" + encoded(stripes())[:100])  # and then nothing
            answer = client.recv(65536)
            waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and b'"upload-timeout"' in answer
    assert 0.4 < waited < 5
    assert len(predictor.batches) == 1  # the warm-up only


def test_settings_refuse_nonsense():
    from seglab.errors import ConfigError

    for bad in ({"max_batch": 0}, {"queue": 0}, {"timeout_s": 0}, {"max_body_mb": -1}, {"max_wait_ms": -1},
                {"port": 70000}, {"max_pixels": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ServeSettings(**bad)
    assert ServeSettings().host == "127.0.0.1"  # never the network unless asked
