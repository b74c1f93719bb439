"""`seglab.load` and the Predictor: every input kind, sizes, probabilities, tiling, TTA, old checkpoints, safety."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import seglab
from data_fixtures import write_pickled_payload_checkpoint
from seglab.data import ShapesDataset
from seglab.data.files import FileProblem
from seglab.errors import ConfigError, WeightsError
from seglab.inference import InferenceSpec, Predictor, predict_logits
from seglab.inference.predictor import blend_weights, tile_starts
from seglab.models import build_model

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return seglab.load(trained_run / "checkpoints" / "best.ckpt")


def shapes_image(index: int = 0, size: int = 64) -> np.ndarray:
    image, _ = ShapesDataset("test", size=size)[index]
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def test_spec_travels_in_the_checkpoint(trained_run, predictor):
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    spec = InferenceSpec.from_dict(checkpoint["inference_spec"])
    assert spec == predictor.spec
    assert spec.model == "deeplabv3plus_xception41" and spec.model_options["output_stride"] == 16
    assert spec.class_names == ("background", "circle", "triangle", "square")
    assert spec.palette == ShapesDataset.palette  # the dataset's own display colours
    assert spec.working_size == (64, 64) and spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert InferenceSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert seglab.load(trained_run).spec == spec  # a run folder means its best.ckpt
    text = repr(predictor)
    assert "device=cpu" in text and "precision=fp32" in text


def test_every_input_kind_gives_the_same_map(tmp_path, predictor):
    array = shapes_image(3)[:, :48]  # not square: 64 x 48
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    expected = predictor.predict(path)
    assert expected.dtype == np.int64 and expected.shape == (64, 48)
    assert set(np.unique(expected)) - {0}, "the trained model should find a shape in a shapes image"
    for same in (Image.open(path), array, tensor, str(path)):
        assert np.array_equal(predictor.predict(same), expected)
    batch = predictor.predict(tensor[None].repeat(2, 1, 1, 1))
    listed = predictor.predict([path, array, tensor, Image.open(path)])
    assert len(batch) == 2 and len(listed) == 4
    assert all(np.array_equal(result, expected) for result in [*batch, *listed])


def test_any_size_comes_back_at_its_own_size(predictor):
    small, large = shapes_image(0)[:40, :60], np.asarray(Image.fromarray(shapes_image(1)).resize((150, 97)))
    results = predictor.predict([small, large, small])
    assert [r.shape for r in results] == [(40, 60), (97, 150), (40, 60)]
    probabilities = predictor.predict_proba(large)
    assert probabilities.dtype == np.float32 and probabilities.shape == (4, 97, 150)
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(probabilities.argmax(axis=0), results[1])


def test_predict_repeats_the_validation_transform(predictor):
    # The spec's working size is the training side: a 128 px image is shrunk to 64 px before the model.
    image = torch.from_numpy(shapes_image(2, size=128)).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        logits = predictor.model(F.interpolate(image[None], size=(64, 64), mode="area"))
        expected = F.interpolate(logits, size=(128, 128), mode="bilinear", align_corners=False).argmax(1)[0]
    assert np.array_equal(predictor.predict(image), expected.numpy())


def test_bad_inputs_are_refused_clearly(predictor, tmp_path):
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        predictor.predict(torch.rand(3, 8, 8) * 255)
    with pytest.raises(ConfigError, match="uint8"):
        predictor.predict(np.zeros((8, 8, 3), dtype=np.float64))
    with pytest.raises(ConfigError, match="cannot predict on a dict"):
        predictor.predict({"image": 1})
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(FileProblem, match=r"empty\.png: the file is empty"):
        predictor.predict(tmp_path / "empty.png")
    with pytest.raises(ConfigError, match="unknown tta"):
        predictor.predict(shapes_image(), tta="rotate")


def test_prediction_imports_no_training_stack(trained_run):
    code = (
        "import sys, numpy as np, seglab\n"
        f"predictor = seglab.load({str(trained_run / 'checkpoints' / 'best.ckpt')!r})\n"
        "predictor.predict(np.zeros((40, 30, 3), dtype=np.uint8), tta='flip', tile=32)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics', 'kornia', "
        "'lightning_fabric', 'pytorch_lightning', 'onnx', 'onnxruntime', 'onnxscript'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_tile_windows_cover_the_image_and_end_at_its_border():
    assert tile_starts(128, 64, 0.25) == [0, 48, 64]
    assert tile_starts(50, 64, 0.25) == [0]
    for length, tile, overlap in ((1000, 512, 0.25), (97, 32, 0.5), (64, 64, 0.0)):
        starts = tile_starts(length, tile, overlap)
        covered = np.zeros(length, dtype=bool)
        for start in starts:
            covered[start:start + tile] = True
        assert covered.all() and starts[-1] == max(0, length - tile)
    weights = blend_weights(16, 24)
    assert weights.min() > 0 and weights[8, 12] > 0.9 and weights[0, 0] < 0.05


def mosaic(size: int = 64) -> np.ndarray:
    """Four test images side by side: a 2x2 larger image whose shapes are at the model's training scale."""
    tiles = [shapes_image(i, size) for i in range(4)]
    return np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)


def test_tiled_prediction_agrees_with_the_whole_image(predictor):
    native = Predictor(predictor.model, dataclasses.replace(predictor.spec, working_size=None, working_scale=1.0))
    image = mosaic()
    whole = native.predict(image)
    tiled = native.predict(image, tile=64, overlap=0.25)
    assert tiled.shape == whole.shape == (128, 128)
    assert len(np.unique(whole)) >= 3
    # This one-minute model agrees on about 96.6 % of the pixels (0.95-0.99 over mosaics): where it is unsure,
    # the wider context of the whole image changes its mind. The demo's checkpoint, trained for 10 minutes,
    # reaches the 99 % this check is about (benchmarks/results/inference.md).
    agreement = (tiled == whole).mean()
    assert agreement >= 0.95, agreement
    # Blending: windows overlap, so no window's border shows as a seam in the probabilities.
    probabilities = native.predict_proba(np.full((160, 160, 3), 128, dtype=np.uint8), tile=64, overlap=0.25)
    labels = probabilities.argmax(axis=0)
    assert (labels == labels[0, 0]).all()
    assert np.abs(np.diff(probabilities, axis=2)).max() < 0.05 and np.abs(np.diff(probabilities, axis=1)).max() < 0.05


def test_tiles_are_exact_where_one_window_covers_the_image(predictor):
    image = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        whole = predict_logits(predictor.model, image, predictor.spec)
        tiled = predict_logits(predictor.model, image, predictor.spec, tile=64)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_test_time_augmentation_averages_probabilities(predictor):
    image = torch.from_numpy(shapes_image(5)).permute(2, 0, 1).float() / 255
    plain = predictor.predict_proba(image)
    flipped = predictor.predict_proba(image.flip(-1))[:, :, ::-1]
    assert np.allclose(predictor.predict_proba(image, tta="flip"), (plain + flipped) / 2, atol=1e-5)
    by_scale = []
    for scale in (0.75, 1.25):
        with torch.no_grad():
            logits = predict_logits(predictor.model, image[None], predictor.spec, scale=scale)
        by_scale.append(logits.softmax(1)[0].numpy())
    multi = predictor.predict_proba(image, scales=(0.75, 1.25))
    assert np.allclose(multi, sum(by_scale) / 2, atol=1e-5)
    assert np.allclose(multi.sum(axis=0), 1.0, atol=1e-5)
    both = predictor.predict(image, tta="flip", scales=(0.75, 1, 1.25), tile=48)
    assert both.shape == (64, 64)


def test_bf16_autocast_is_available_and_close(predictor):
    images = torch.from_numpy(mosaic(32)).permute(2, 0, 1).float()[None] / 255
    fast = Predictor(predictor.model, predictor.spec, precision="bf16")
    assert fast.precision == "bf16"
    agreement = (fast.predict(images)[0] == predictor.predict(images)[0]).mean()
    assert agreement > 0.95, agreement
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        Predictor(predictor.model, predictor.spec, device="cpu", precision="fp16")


def test_checkpoints_from_before_the_spec_still_load(tmp_path):
    # The metadata of a best.ckpt written by the previous release; the weights are a fresh model's.
    fixture = json.loads((FIXTURES / "checkpoint_before_inference_spec.json").read_text())
    fixture.pop("_about")
    config = fixture["hyper_parameters"]["config"]
    assert config["normalize"] == "symmetric" and config["progressive_resize"] == [[0, 24]]
    torch.manual_seed(0)
    model = build_model(config["model"], num_classes=4).eval()
    checkpoint = {**fixture, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = seglab.load(tmp_path / "old.ckpt")
    assert loaded.spec.working_size == (24, 24) and loaded.spec.mean == (0.5, 0.5, 0.5)
    assert loaded.class_names[1] == "circle"
    image = torch.rand(3, 32, 32)
    with torch.no_grad():
        small = F.interpolate(image[None], size=(24, 24), mode="area") * 2 - 1
        expected = F.interpolate(model(small), size=(32, 32), mode="bilinear", align_corners=False)
    assert np.allclose(loaded.predict_proba(image), expected.softmax(1)[0].numpy(), atol=1e-5)


def test_a_checkpoint_carrying_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker.txt"
    write_pickled_payload_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(WeightsError, match="weights_only"):
        seglab.load(tmp_path / "evil.ckpt")
    assert not marker.exists()
    with pytest.raises(WeightsError, match="does not exist"):
        seglab.load(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        seglab.load(tmp_path / "junk.ckpt")
