"""`seglab serve` on an ONNX export (the engine INT8 files run on too): answers agree with the checkpoint's
PyTorch predictor, and concurrent same-size requests share one ONNX Runtime pass (dynamic batch dimension)."""

from __future__ import annotations

import concurrent.futures
import io

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.inference.spec import SPEC_KEY
from seglab.serving import ServeSettings, create_app
from serving_helpers import encoded, metric, running_service, tiny_spec
from training_helpers import TINY_MODEL, register_tiny_model, tiny_test


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from seglab.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    with pytest.MonkeyPatch.context() as monkeypatch:
        register_tiny_model(monkeypatch)
        torch.manual_seed(0)
        network = tiny_test(num_classes=3)
        torch.save({SPEC_KEY: tiny_spec(TINY_MODEL).to_dict(),
                    "state_dict": {f"model.{key}": value for key, value in network.state_dict().items()}},
                   folder / "tiny.ckpt")
        export_onnx(folder / "tiny.ckpt", folder / "tiny.onnx")
        reference = seglab.load(folder / "tiny.ckpt", precision="fp32")
    return folder / "tiny.onnx", reference


@pytest.mark.slow
def test_an_onnx_export_is_served_in_shared_passes(exported):
    path, reference = exported
    predictor = seglab.load(path)
    assert predictor.engine == "onnxruntime"
    images = [np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8) for seed in range(4)]
    # The pass waits up to 2 s for company and starts as soon as 4 images are there.
    settings = ServeSettings(max_batch=4, max_wait_ms=2000)
    with running_service(create_app(predictor, settings)) as url, concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert httpx.get(f"{url}/model").json()["engine"] == "onnxruntime"
        answers = list(pool.map(lambda image: httpx.post(
            f"{url}/predict?format=index", content=encoded(image), headers={"content-type": "image/png"},
            timeout=30), images))
        text = httpx.get(f"{url}/metrics").text
    assert metric(text, "seglab_batch_size_count") == 1 and metric(text, "seglab_batch_size_sum") == 4
    for image, answer in zip(images, answers, strict=True):
        assert answer.status_code == 200
        served = np.asarray(Image.open(io.BytesIO(answer.content)))
        assert (served == reference.predict(image)).mean() > 0.99
