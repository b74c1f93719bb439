"""`seglab serve` as a process: it loads a checkpoint, answers, and on SIGTERM finishes every request in flight
(queued ones included) while refusing new ones: none lost, none half-answered."""

from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from serving_helpers import CLASS_NAMES, encoded, free_port, metric, untrained_checkpoint

IN_FLIGHT = 12
SIDE = 160  # large enough that 12 images take a few passes of an Xception-41 on a CPU


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("serve") / "x41.ckpt")


def start_service(checkpoint, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab", "serve", str(checkpoint), "--port", str(port), "--max-batch", "4",
         "--max-wait-ms", "20", "--precision", "fp32"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"seglab serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("seglab serve was not ready within 90 s")


@pytest.mark.slow
def test_sigterm_finishes_the_requests_in_flight_and_refuses_new_ones(checkpoint):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_service(checkpoint, port)
    try:
        model = httpx.get(f"{url}/model").json()
        assert model["class_names"] == list(CLASS_NAMES) and model["engine"] == "pytorch"
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in range(IN_FLIGHT)]

        def send(image: np.ndarray) -> tuple[httpx.Response | None, float]:
            try:
                response = httpx.post(f"{url}/predict?format=index", content=encoded(image),
                                      headers={"content-type": "image/png"}, timeout=60)
            except httpx.ConnectError:
                # Refused before it connected (on a loaded machine a client thread may start after the signal): it
                # never was in flight. A request dropped after it was accepted would fail otherwise (read error).
                return None, time.monotonic()
            if response.status_code == 503 and response.json().get("error") == "shutting-down":
                return None, time.monotonic()  # arrived after the signal and refused at the door: never in flight
            return response, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(send, image) for image in images]
            deadline = time.monotonic() + 30
            while metric(httpx.get(f"{url}/metrics").text, "seglab_queue_depth") < 4:
                assert time.monotonic() < deadline, "the requests never queued up"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.3)
            try:  # a request that comes after the signal is refused: no connection, or a 503
                late = httpx.post(f"{url}/predict", content=encoded(images[0]), headers={"content-type": "image/png"},
                                  timeout=10)
                late_refused = late.status_code == 503
            except httpx.TransportError:
                late_refused = True
            answers = [future.result() for future in futures]
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert late_refused
    accepted = [(response, finished) for response, finished in answers if response is not None]
    assert len(accepted) >= 4  # at least the ones seen queued before the signal
    assert sum(finished > signalled for _, finished in accepted) >= 1, "no request was still in flight at SIGTERM"
    for response, _ in accepted:  # every accepted one answered whole
        assert response.status_code == 200, response.text
        mask = Image.open(io.BytesIO(response.content))
        mask.load()
        assert mask.size == (SIDE, SIDE) and np.asarray(mask).max() < len(CLASS_NAMES)
    assert returncode in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr, stderr
