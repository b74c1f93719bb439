"""Dynamic batching and the queue: concurrent requests share forward passes (the batch-size metric shows it),
the queue's bound answers 503 + Retry-After, timeouts 504, and a client that leaves takes its image out of the
queue before any pass computes it. Forward passes are held at a gate so that what waits where is certain."""

from __future__ import annotations

import concurrent.futures
import io
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from seglab.serving import ServeSettings, create_app
from serving_helpers import GatedPredictor, encoded, expected_classes, metric, running_service, stripes


def post(url: str, image: np.ndarray, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/predict?format=index", content=encoded(image), headers={"content-type": "image/png"},
                      timeout=timeout)


def metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics").text


def wait_until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def queued(url: str, count: int) -> None:
    wait_until(lambda: metric(metrics(url), "seglab_queue_depth") == count, f"{count} images queued")


@pytest.fixture
def gated():
    """A service whose forward passes wait for `predictor.gate`, closed once the warm-up pass is done."""
    predictor = GatedPredictor()

    def start(**settings):
        app = create_app(predictor, ServeSettings(**{"max_wait_ms": 50, **settings}))
        return running_service(app)

    yield predictor, start
    predictor.gate.set()


def test_concurrent_requests_share_a_forward_pass(gated):
    predictor, start = gated
    with start(max_batch=8) as url, concurrent.futures.ThreadPoolExecutor(8) as pool:
        predictor.gate.clear()
        predictor.entered.clear()
        images = [stripes(64, 64) + index for index in range(5)]
        first = pool.submit(post, url, images[0])
        assert predictor.entered.wait(10)  # the first image's pass holds the model
        rest = [pool.submit(post, url, image) for image in images[1:]]
        queued(url, 4)
        predictor.gate.set()
        answers = [first.result(), *(future.result() for future in rest)]
        text = metrics(url)
    for image, answer in zip(images, answers, strict=True):
        assert answer.status_code == 200
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), expected_classes(image))
    # Two passes for five requests: the four that waited shared one.
    assert predictor.batches[1:] == [1, 4]  # [0] is the warm-up
    assert metric(text, "seglab_batch_size_count") == 2 and metric(text, "seglab_batch_size_sum") == 5
    assert metric(text, 'seglab_batch_size_bucket{le="2.0"}') == 1  # the other pass is above 2
    assert metric(text, "seglab_predict_latency_seconds_count") == 5


def test_only_same_size_images_share_a_pass_and_max_batch_holds(gated):
    predictor, start = gated
    with start(max_batch=3) as url, concurrent.futures.ThreadPoolExecutor(8) as pool:
        predictor.gate.clear()
        predictor.entered.clear()
        first = pool.submit(post, url, stripes(64, 64))
        assert predictor.entered.wait(10)
        # Arrival order: 64, 48, 64, 48, 64, 64 -> passes of [64 x3], [48 x2], [64 x1] after the first.
        sizes = [64, 48, 64, 48, 64, 64]
        futures = []
        for count, side in enumerate(sizes, start=1):
            futures.append(pool.submit(post, url, stripes(side, side)))
            queued(url, count)  # one at a time, so the arrival order is the listed one
        predictor.gate.set()
        answers = [future.result() for future in futures]
        assert first.result().status_code == 200
    assert predictor.batches[1:] == [1, 3, 2, 1]
    for side, answer in zip(sizes, answers, strict=True):
        assert Image.open(io.BytesIO(answer.content)).size == (side, side)


def test_a_full_queue_answers_503_with_retry_after(gated):
    predictor, start = gated
    with start(max_batch=1, queue=2) as url, concurrent.futures.ThreadPoolExecutor(4) as pool:
        predictor.gate.clear()
        predictor.entered.clear()
        running = pool.submit(post, url, stripes())
        assert predictor.entered.wait(10)
        waiting = [pool.submit(post, url, stripes()) for _ in range(2)]
        queued(url, 2)
        refused = post(url, stripes())
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "queue-full"
        assert metric(metrics(url), 'seglab_rejections_total{reason="queue-full"}') == 1
        predictor.gate.set()
        assert [future.result().status_code for future in (running, *waiting)] == [200, 200, 200]


def test_requests_past_their_timeout_get_504_and_leave_the_queue(gated):
    predictor, start = gated
    with start(max_batch=1, timeout_s=0.5) as url, concurrent.futures.ThreadPoolExecutor(4) as pool:
        predictor.gate.clear()
        predictor.entered.clear()
        stuck = pool.submit(post, url, stripes())
        assert predictor.entered.wait(10)
        queued_one = pool.submit(post, url, stripes())
        for future in (stuck, queued_one):
            answer = future.result()
            assert answer.status_code == 504 and answer.json()["error"] == "timeout"
        text = metrics(url)
        assert metric(text, "seglab_queue_depth") == 0
        assert metric(text, 'seglab_rejections_total{reason="timeout"}') == 2
        predictor.gate.set()
        assert post(url, stripes()).status_code == 200
    assert predictor.batches[1:] == [1, 1]  # the queued one never ran: the stuck pass, then the last request


def test_a_client_that_disconnects_leaves_no_work_queued(gated):
    predictor, start = gated
    with start(max_batch=4) as url, concurrent.futures.ThreadPoolExecutor(2) as pool:
        predictor.gate.clear()
        predictor.entered.clear()
        running = pool.submit(post, url, stripes())
        assert predictor.entered.wait(10)
        body = encoded(stripes())
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            queued(url, 1)
        # The connection is closed with the image still waiting: the service takes it out of the queue.
        wait_until(lambda: metric(metrics(url), 'seglab_rejections_total{reason="client-gone"}') == 1,
                   "the disconnect to be noticed")
        assert metric(metrics(url), "seglab_queue_depth") == 0
        predictor.gate.set()
        assert running.result().status_code == 200
    assert predictor.batches[1:] == [1]  # only the request that stayed was ever computed


def test_a_client_that_leaves_during_its_upload_is_counted_and_nothing_runs(gated):
    predictor, start = gated
    with start() as url:
        passes = len(predictor.batches)
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 100000\r\n\r\n" + encoded(stripes())[:100])
            time.sleep(0.2)
        wait_until(lambda: metric(metrics(url), 'seglab_rejections_total{reason="client-gone"}') == 1,
                   "the disconnect to be noticed")
        assert post(url, stripes()).status_code == 200  # the service is unharmed
    assert len(predictor.batches) == passes + 1


class FailingOnOddWidths(GatedPredictor):
    def scores(self, images, **options):
        if images.shape[-1] % 2:
            raise RuntimeError("odd widths break this model")
        return super().scores(images, **options)


def test_a_model_failure_is_a_500_for_its_batch_only():
    with running_service(create_app(FailingOnOddWidths(), ServeSettings())) as url:
        failed = post(url, stripes(32, 33))
        assert failed.status_code == 500 and failed.json()["error"] == "prediction-failed"
        assert "odd widths break this model" in failed.json()["detail"]
        assert post(url, stripes(32, 32)).status_code == 200


def test_a_draining_service_refuses_new_work_and_is_not_ready(gated):
    predictor, _ = gated
    app = create_app(predictor, ServeSettings())
    with running_service(app) as url:
        app.state.service.draining = True
        refused = post(url, stripes())
        assert refused.status_code == 503 and refused.json()["error"] == "shutting-down"
        assert refused.headers["retry-after"] == "1"
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert httpx.get(f"{url}/health").status_code == 200
