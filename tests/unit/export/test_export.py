"""`seglab export --format onnx` and the ONNX Runtime engine: the spec in the file, the same predictions as the
PyTorch engine (tiling and TTA included), the parity check, the CLI, and clear errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.cli import main
from seglab.data import ShapesDataset
from seglab.errors import ConfigError, ExportError, WeightsError
from seglab.export import onnx as onnx_export
from seglab.export.onnx import export_onnx
from seglab.inference import read_checkpoint, spec_from_checkpoint
from seglab.inference.loading import checkpoint_path, resolve_engine
from seglab.inference.onnx_runtime import FORMAT_KEY, OnnxRuntimeModel, spec_from_metadata, spec_metadata

onnx = pytest.importorskip("onnx", reason="the export tests need the onnx extra: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The session's trained model exported through the CLI: (the .onnx path, what the command printed)."""
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", str(trained_run), "--format", "onnx", "--out", str(path)])
    assert code == 0
    return path, printed.getvalue()


def shapes_image(index: int, size: int, height: int, width: int) -> np.ndarray:
    image, _ = ShapesDataset("test", size=size)[index]
    return (image.permute(1, 2, 0).numpy()[:height, :width] * 255 + 0.5).astype(np.uint8)


def test_export_reports_parity_and_embeds_the_spec(exported, trained_run):
    path, printed = exported
    figures = [float(value) for value in re.findall(r"\dx3x\d+x\d+: ([0-9.e+-]+)", printed)]
    assert len(figures) == 2 and all(0 <= value < 1e-3 for value in figures), printed
    assert f"wrote {path}" in printed and "opset" in printed
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temporary file left beside it

    spec = spec_from_checkpoint(read_checkpoint(checkpoint_path(trained_run)))
    assert seglab.load(path).spec == spec  # read back from the metadata through ONNX Runtime
    proto = onnx.load(str(path), load_external_data=False)
    entries = {prop.key: prop.value for prop in proto.metadata_props}
    assert json.loads(entries["seglab.class_names"]) == list(spec.class_names)
    assert json.loads(entries["seglab.palette"]) == [list(colour) for colour in spec.palette]
    assert json.loads(entries["seglab.mean"]) == list(spec.mean)
    assert json.loads(entries["seglab.working_size"]) == list(spec.working_size)
    assert json.loads(entries[FORMAT_KEY]) == 1
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_onnx_engine_predicts_as_the_pytorch_engine(exported, trained_run):
    path, _ = exported
    runtime = seglab.load(path)
    reference = seglab.load(trained_run, precision="fp32")
    assert "engine=onnxruntime" in repr(runtime) and "precision=fp32" in repr(runtime)
    assert "engine=pytorch" in repr(reference)
    images = [shapes_image(1, 96, 96, 72), shapes_image(2, 64, 48, 64)]  # 96 x 72 and 48 x 64
    for options in ({}, {"tile": 40}, {"tta": "flip", "scales": (0.75, 1.25)},
                    {"tile": 40, "tta": "flip", "scales": (0.75, 1.0)}):
        for image, runtime_probs, reference_probs in zip(images, runtime.predict_proba(images, **options),
                                                         reference.predict_proba(images, **options), strict=True):
            assert runtime_probs.shape == reference_probs.shape == (4, *image.shape[:2])
            assert np.abs(runtime_probs - reference_probs).max() < 1e-3, options
            expected = reference_probs.argmax(0)
            assert (runtime_probs.argmax(0) == expected).mean() >= 0.999, options
            assert len(np.unique(expected)) >= 2, "the trained model should find a shape: else equality is vacuous"


def test_a_failed_parity_check_raises_and_leaves_the_old_file(exported, trained_run, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    # The graph the fixture exported (tracing it again takes 10-20 s), run by an ONNX Runtime that drifts.
    monkeypatch.setattr(onnx_export, "export_graph", lambda model, opset: onnx.load(str(exported[0])))
    run = OnnxRuntimeModel.forward

    def perturbed(self, images):
        logits = run(self, images)
        logits[:, 0] += 0.5  # what a graph that drifted from the network would return
        return logits

    monkeypatch.setattr(OnnxRuntimeModel, "forward", perturbed)
    with pytest.raises(ExportError, match=r"differ from PyTorch fp32 by up to .*limit 0\.001.*no file was written"):
        export_onnx(trained_run, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert out.read_bytes() == b"an earlier export"


def test_cli_predicts_and_evaluates_with_the_onnx_file(exported, trained_run, tmp_path, capsys):
    path, _ = exported
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(3):
        image, mask = ShapesDataset("test", size=80)[index]
        Image.fromarray((image.permute(1, 2, 0).numpy()[:, :56] * 255 + 0.5).astype(np.uint8)).save(
            images / f"img{index}.png")
        Image.fromarray(mask.numpy().astype(np.uint8)[:, :56]).save(masks / f"img{index}.png")

    assert main(["predict", str(path), str(images), "--out", str(tmp_path / "onnx"), "--no-progress",
                 "--tta", "flip"]) == 0
    assert "engine=onnxruntime" in capsys.readouterr().err
    assert main(["predict", str(path), str(images), "--out", str(tmp_path / "onnx_calls"), "--no-progress",
                 "--tta", "flip", "--concurrent-calls", "2"]) == 0
    assert "2 concurrent calls" in capsys.readouterr().err
    assert main(["predict", str(trained_run), str(images), "--out", str(tmp_path / "torch"), "--no-progress",
                 "--tta", "flip", "--precision", "fp32"]) == 0
    for index in range(3):
        from_onnx = np.asarray(Image.open(tmp_path / "onnx" / f"img{index}.png"))
        from_torch = np.asarray(Image.open(tmp_path / "torch" / f"img{index}.png"))
        assert from_onnx.shape == (80, 56) and (from_onnx == from_torch).mean() >= 0.999
        assert np.array_equal(np.asarray(Image.open(tmp_path / "onnx_calls" / f"img{index}.png")), from_onnx)

    scores = {}
    for name, model in (("onnx", path), ("torch", trained_run)):
        assert main(["evaluate", str(model), "--images", str(images), "--masks", str(masks), "--out",
                     str(tmp_path / f"eval_{name}"), "--no-progress"]) == 0
        scores[name] = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())["miou"]
    assert scores["torch"] > 0 and abs(scores["onnx"] - scores["torch"]) < 1e-3

    capsys.readouterr()
    assert main(["predict", str(path), str(images), "--out", str(tmp_path / "x"), "--concurrent-calls", "0"]) == 2
    assert "--concurrent-calls must be 1 or more, got 0" in capsys.readouterr().err
    assert main(["predict", str(path), str(images), "--out", str(tmp_path / "x"), "--engine", "pytorch"]) == 2
    assert "is an ONNX export, which the pytorch engine cannot run" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--out", str(tmp_path / "y")]) == 2
    assert "evaluate it on folders with --images/--masks" in capsys.readouterr().err


def test_engine_choice_by_suffix_and_override(tmp_path):
    assert resolve_engine(tmp_path / "model.onnx") == "onnxruntime"
    assert resolve_engine(tmp_path / "best.ckpt") == "pytorch"
    assert resolve_engine(tmp_path / "model.bin", "onnxruntime") == "onnxruntime"
    with pytest.raises(ConfigError, match="pytorch engine cannot run"):
        resolve_engine(tmp_path / "model.onnx", "pytorch")
    with pytest.raises(ConfigError, match="not a checkpoint or run folder; export it first"):
        resolve_engine(tmp_path, "onnxruntime")
    with pytest.raises(ConfigError, match="unknown engine 'tensorrt'"):
        resolve_engine(tmp_path / "model.onnx", "tensorrt")


def test_onnx_engine_refuses_what_it_cannot_do(exported):
    path, _ = exported
    with pytest.raises(ConfigError, match="runs in fp32, not bf16"):
        seglab.load(path, precision="bf16")
    with pytest.raises(ConfigError, match="runs on the CPU, not cuda"):
        seglab.load(path, device="cuda")


def test_missing_extra_names_the_module_and_the_install_command(exported, trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    message = r"needs the onnx extra: pip install 'seglab\[onnx\]' \(onnxruntime is missing"
    with pytest.raises(ConfigError, match=message):
        seglab.load(exported[0])
    with pytest.raises(ConfigError, match=message):
        export_onnx(trained_run, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_tampered_metadata_names_the_file_and_the_entry(exported, tmp_path):
    path, _ = exported
    spec = seglab.load(path).spec
    entries = spec_metadata(spec)
    assert spec_from_metadata(entries, "model.onnx") == spec
    with pytest.raises(WeightsError, match=r"model\.onnx: ONNX metadata entry 'seglab\.mean' is not valid JSON"):
        spec_from_metadata({**entries, "seglab.mean": "[0.5, 0.5"}, "model.onnx")
    missing = {key: value for key, value in entries.items() if key != "seglab.palette"}
    with pytest.raises(WeightsError, match=r"model\.onnx: ONNX metadata entry 'seglab\.palette' is missing"):
        spec_from_metadata(missing, "model.onnx")
    with pytest.raises(WeightsError, match=r"model\.onnx: the seglab\.\* ONNX metadata .* 4 classes but 2 names"):
        spec_from_metadata({**entries, "seglab.class_names": '["a", "b"]'}, "model.onnx")
    with pytest.raises(WeightsError, match="is not a seglab ONNX export"):
        spec_from_metadata({}, "model.onnx")

    # The same through a real file, as `seglab.load` reads it (from ONNX Runtime's view of the metadata).
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "seglab.class_names":
            prop.value = "['background', 'circle']"  # Python, not JSON
    tampered = tmp_path / "tampered.onnx"
    onnx.save_model(proto, str(tampered))
    with pytest.raises(WeightsError, match=rf"{re.escape(str(tampered))}: ONNX metadata entry 'seglab\.class_names' "
                                           "is not valid JSON"):
        seglab.load(tampered)


def test_onnx_model_is_called_like_the_network(exported):
    model = OnnxRuntimeModel(exported[0], threads=1)
    channels_last = torch.rand(2, 3, 40, 24).contiguous(memory_format=torch.channels_last)
    logits = model(channels_last)
    assert logits.dtype == torch.float32 and logits.shape == (2, 4, 40, 24)
    assert torch.equal(logits, model(channels_last.contiguous()))


def test_onnx_sessions_do_not_spin_between_calls(exported):
    # Spinning pool threads hold the cores Predictor's torch work needs between calls (int8_variants.md).
    options = OnnxRuntimeModel(exported[0]).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
