"""From a checkpoint file to a `Predictor`, with `build_model` + `load_state_dict` alone (no Lightning).

Files are read with `torch.load(weights_only=True)`: a checkpoint carrying pickled code is refused before
anything in it runs. That is only as safe as the torch doing it, so a torch older than `SAFE_TORCH` is refused
before the file is opened (`read_checkpoint`, the one place seglab loads a checkpoint).
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from seglab.errors import ConfigError, WeightsError
from seglab.inference.options import ENGINES, ONNX_SUFFIX
from seglab.inference.predictor import Predictor
from seglab.inference.spec import SPEC_KEY, InferenceSpec, working_geometry
from seglab.models import build_model
from seglab.torch_floor import refuse_unsafe_torch

# Lightning saves the LightningModule's state; the network is its `model` attribute.
MODEL_PREFIX = "model."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at `path`, on the CPU, loaded with `weights_only=True` (on a torch that is at least
    `SAFE_TORCH`)."""
    return _read_checkpoint(Path(path), sha256=False)[0]


def read_checkpoint_and_sha256(path: str | Path) -> tuple[dict[str, Any], str]:
    """`read_checkpoint`, and the sha256 of the bytes the dict was loaded from: one open file is hashed, rewound
    and loaded, so a checkpoint replaced meanwhile (seglab's writes rename a new file over the old one, as a
    `--resume` does to best.ckpt) can never pair one file's weights with another's hash."""
    checkpoint, digest = _read_checkpoint(Path(path), sha256=True)
    assert digest is not None  # asked for: sha256=True
    return checkpoint, digest


def _read_checkpoint(path: Path, *, sha256: bool) -> tuple[dict[str, Any], str | None]:
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    refuse_unsafe_torch(path)
    digest = None
    try:
        with open(path, "rb") as file:
            if sha256:
                hasher = hashlib.sha256()
                for block in iter(lambda: file.read(1 << 20), b""):
                    hasher.update(block)
                digest = hasher.hexdigest()
                file.seek(0)
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own text advises weights_only=False, the one thing not to do with such a file: keep its finding.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:  # not code, but bytes the weights-only reader cannot parse: a damaged file
            finding = next((line.strip() for line in str(error).splitlines() if line.strip() and not any(
                line.startswith(noise) for noise in ("Weights only load failed", "Please file", "Check the"))),
                type(error).__name__)
            raise WeightsError(f"cannot read checkpoint {path}: {finding[:300]}; it is damaged or not a checkpoint "
                               "(seglab reads checkpoints with torch.load(weights_only=True))") from None
        raise WeightsError(
            f"cannot read checkpoint {path}: refused, it holds pickled Python objects ({found.group(1)}) that "
            "loading would run, not only weights. seglab reads checkpoints with torch.load(weights_only=True), so "
            "nothing in the file was run; use a checkpoint written by seglab, and never load this one with "
            "weights_only=False unless you trust its source"
        ) from None
    except Exception as error:  # torch raises several unrelated types for corrupt files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"cannot read checkpoint {path}: {first_line[:300]}. seglab reads checkpoints with "
            "torch.load(weights_only=True): files that hold pickled code are refused"
        ) from None
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{path} is not a seglab checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint, digest


def checkpoint_path(path: str | Path) -> Path:
    """`path` itself, or for a run folder its `checkpoints/best.ckpt` (else `last.ckpt`)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise WeightsError(f"{path} is a folder without checkpoints/best.ckpt or last.ckpt; give a checkpoint file "
                           "or a seglab run folder")
    return path


def spec_from_checkpoint(checkpoint: Mapping[str, Any], path: str | Path = "<checkpoint>") -> InferenceSpec:
    """The checkpoint's `InferenceSpec`; for checkpoints written before it existed, rebuilt from the training
    config saved in `hyper_parameters` by the rules training used then."""
    if SPEC_KEY in checkpoint:
        return InferenceSpec.from_dict(checkpoint[SPEC_KEY])
    params = checkpoint.get("hyper_parameters")
    if not isinstance(params, Mapping) or "config" not in params:
        raise WeightsError(f"{path} is not a seglab checkpoint: it has neither an inference spec nor a training "
                           "config (hyper_parameters)")
    try:
        return legacy_spec(params["config"], num_classes=int(params["num_classes"]),
                           class_names=list(params["class_names"]))
    except Exception as error:
        raise WeightsError(f"{path}: cannot rebuild how the model predicts from its saved config: {error}") from None


def legacy_spec(config: Mapping[str, Any], *, num_classes: int, class_names: list[str]) -> InferenceSpec:
    """The spec of a checkpoint written before specs existed, from its flat training config by the rules training
    used then. Nothing the config names is fetched or read: weights and normalisation come from the checkpoint
    and the registry's tables alone."""
    from seglab.data.classes import default_palette
    from seglab.data.options import DataOptions
    from seglab.models import model_options
    from seglab.models.normalization import normalization_stats

    model = str(config["model"])
    options = {key: tuple(value) if isinstance(value, list) else value for key in model_options(model)
               if key != "pretrained_backbone" and (value := config.get(key)) is not None}
    mode = config.get("normalize", "auto")
    mean, std = normalization_stats("unit" if mode == "auto" else mode)
    data = DataOptions.from_flat(config)
    schedule = config.get("progressive_resize")
    return InferenceSpec(
        model=model, model_options=options, num_classes=num_classes, class_names=tuple(class_names),
        palette=default_palette(num_classes), ignore_index=data.folder.ignore_index, mean=mean, std=std,
        **working_geometry(data.image_hw(), keep_aspect=data.keep_aspect, inference_size=config.get("inference_size"),
                           last_training_side=schedule[-1][1] if schedule else None),
        channels_last=config.get("channels_last") is True,
    )


def model_state(checkpoint: Mapping[str, Any], path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The network's weights: `state_dict` entries under the LightningModule's `model.` prefix."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds no state_dict")
    weights = {key.removeprefix(MODEL_PREFIX): value for key, value in state.items() if key.startswith(MODEL_PREFIX)}
    if not weights:
        raise WeightsError(f"{path}: its state_dict has no '{MODEL_PREFIX}*' weights")
    return weights


def build_trained_model(spec: InferenceSpec, weights: Mapping[str, torch.Tensor],
                        path: str | Path = "<checkpoint>") -> torch.nn.Module:
    """The spec's network with `weights` loaded strictly (no pretrained download: the weights are all here)."""
    # Never `pretrained_backbone`: a checkpoint's options must not make loading download or read another file.
    options = {key: value for key, value in spec.model_options.items() if key != "pretrained_backbone"}
    model = build_model(spec.model, num_classes=spec.num_classes, **options)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"{path}: the weights do not fit {spec.model} with options {dict(spec.model_options)}: "
                           f"{str(error).splitlines()[0]}") from None
    return model.eval()


def resolve_engine(path: str | Path, engine: str | None = None) -> str:
    """The engine that runs `path`: `engine` if given, else onnxruntime for an `.onnx` file, pytorch otherwise."""
    path = Path(path)
    is_onnx = path.suffix.lower() == ONNX_SUFFIX
    if engine in (None, "auto"):
        return "onnxruntime" if is_onnx else "pytorch"
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of auto, {', '.join(ENGINES)}")
    if engine == "pytorch" and is_onnx:
        raise ConfigError(f"{path} is an ONNX export, which the pytorch engine cannot run: it builds the network "
                          "from a seglab checkpoint (.ckpt) or run folder. Use the onnxruntime engine (the default for "
                          ".onnx files), or the checkpoint the file was exported from")
    if engine == "onnxruntime" and (path.is_dir() or path.suffix.lower() == ".ckpt"):
        raise ConfigError(f"the onnxruntime engine runs a file written by `seglab export`, not a checkpoint or run "
                          f"folder; export it first: seglab export {path} --format onnx --out model.onnx")
    return engine


def load(path: str | Path, *, engine: str | None = None, device: str | torch.device | None = None,
         precision: str = "fp32", batch_size: int = 8, tile_batch: int | None = None,
         compile: bool = False, concurrent_calls: int = 1) -> Predictor:
    """A `Predictor` from a seglab checkpoint (or a run folder: its best checkpoint), or from an ONNX file
    written by `seglab export`.

    `engine`: "pytorch" or "onnxruntime" (CPU, fp32); by default onnxruntime for an `.onnx` file, else pytorch.
    `precision`: "fp32" (default, exact), "bf16", "fp16" (GPU) or "auto" (bf16 where the hardware runs it fast).
    `batch_size` images, or `tile_batch` windows (default 1 on a CPU, `batch_size` on a GPU), per forward pass.
    `compile`: run the network through torch.compile with frozen weights (pytorch engine; pays off over many
    images of one size, see `Predictor`).
    `concurrent_calls`: calls served at once on a CPU, its cores shared among them (`calls_for_folder`).
    """
    if resolve_engine(path, engine) == "onnxruntime":
        if compile:
            raise ConfigError("compile applies to the pytorch engine; an .onnx file runs on ONNX Runtime")
        from seglab.inference.onnx_runtime import load_onnx

        return load_onnx(path, device=device, precision=precision, batch_size=batch_size, tile_batch=tile_batch,
                         concurrent_calls=concurrent_calls)
    path = checkpoint_path(path)
    return predictor_from_checkpoint(read_checkpoint(path), path, device=device, precision=precision,
                                     batch_size=batch_size, tile_batch=tile_batch, compile=compile,
                                     concurrent_calls=concurrent_calls)


def predictor_from_checkpoint(checkpoint: Mapping[str, Any], path: str | Path = "<checkpoint>",
                              **options: Any) -> Predictor:
    """`load` for a checkpoint dict already read (by `read_checkpoint`); `options` go to `Predictor`."""
    spec = spec_from_checkpoint(checkpoint, path)
    return Predictor(build_trained_model(spec, model_state(checkpoint, path), path), spec, **options)
