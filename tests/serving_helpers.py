"""Helpers for the `seglab serve` tests: a tiny model whose forward passes can be held and counted, a service
run in this process on a free loopback port, and an untrained checkpoint for the subprocess tests."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seglab.data.classes import default_palette
from seglab.inference.predictor import Predictor
from seglab.inference.spec import SPEC_KEY, InferenceSpec

CLASS_NAMES = ("background", "circle", "square")


def tiny_spec(model: str = "tiny_test", **options) -> InferenceSpec:
    return InferenceSpec(model=model, model_options=options, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
                         palette=default_palette(len(CLASS_NAMES)))


class BrightnessModel(torch.nn.Module):
    """Class by brightness, no weights to learn: < 1/3 background, < 2/3 circle, else square. The answers of
    the service can then be checked pixel by pixel."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        brightness = images.mean(dim=1, keepdim=True)
        centres = torch.tensor([1 / 6, 1 / 2, 5 / 6], device=images.device).view(1, 3, 1, 1)
        return -(brightness - centres).abs() * 100


def expected_classes(image: np.ndarray) -> np.ndarray:
    """What `BrightnessModel` predicts for a uint8 RGB image."""
    brightness = image.astype(np.float32).mean(axis=2) / 255
    return np.abs(brightness[..., None] - np.array([1 / 6, 1 / 2, 5 / 6])).argmin(axis=2)


class GatedPredictor(Predictor):
    """A `Predictor` whose forward passes wait while `gate` is clear, recording each pass's batch size in
    `batches` and setting `entered` when one starts."""

    def __init__(self) -> None:
        super().__init__(BrightnessModel(), tiny_spec(), device="cpu")
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.options: list[dict] = []  # each pass's options (tile, tta, scales...)

    def scores(self, images: torch.Tensor, **options):
        self.batches.append(len(images))
        self.options.append(options)
        self.entered.set()
        if not self.gate.wait(timeout=20):
            raise TimeoutError("the test never opened the gate")
        return super().scores(images, **options)


def stripes(height: int = 64, width: int = 64) -> np.ndarray:
    """A uint8 RGB image of three vertical bands: dark, mid-grey, bright (one per class of `BrightnessModel`)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, width // 3: 2 * width // 3] = 128
    image[:, 2 * width // 3:] = 230
    return image


def encoded(image: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()


@contextlib.contextmanager
def running_service(app) -> Iterator[str]:
    """`app` served by uvicorn on a free 127.0.0.1 port in a thread of this process; yields its base URL and
    stops it (gracefully, as on SIGTERM) on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="seglab-test-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and server.servers):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test service did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metric(text: str, name: str) -> float:
    """The value of the sample `name` (with its labels, e.g. 'seglab_batch_size_count') in Prometheus text; 0 if
    absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def untrained_checkpoint(path: Path, *, model: str = "deeplabv3plus_xception41") -> Path:
    """A seglab checkpoint of an untrained `model` with the 3 test classes: what `seglab.load` reads, without a
    minute of training."""
    from seglab.models import build_model

    torch.manual_seed(0)
    network = build_model(model, num_classes=len(CLASS_NAMES))
    torch.save({SPEC_KEY: tiny_spec(model).to_dict(),
                "state_dict": {f"model.{key}": value for key, value in network.state_dict().items()}}, path)
    return path
