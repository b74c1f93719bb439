"""`init_from`: start a new run from a trained checkpoint's weights (fine-tuning), unlike `--resume`, which
continues the same run with its optimizer state.

Every tensor of the new network whose name and shape exist in the checkpoint is copied; the rest (the classifier
when the classes change, layers the checkpoint lacks) keep their fresh initialisation, and the report says which.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from seglab.atomic import write_text_atomically
from seglab.errors import WeightsError
from seglab.inference.loading import checkpoint_path, model_state, read_checkpoint, spec_from_checkpoint

# Names shown in a summary; init_from.json lists all of them.
_SHOWN = 20
# Below this share of the network's values (not tensors) found in the source, it is not a fine-tune.
_MIN_SHARE = 0.5
_ADVICE = "init_from takes a seglab checkpoint (.ckpt) or a seglab run folder"


@dataclasses.dataclass
class InitReport:
    """Which of the new network's tensors came from `source` and which start fresh."""

    source: Path  # the checkpoint file the weights came from
    copied: list[str]  # the network's tensors loaded from the source
    reinitialised: list[str]  # the network's tensors with no same-named, same-shaped tensor in the source
    unused: list[str]  # the source's tensors that went nowhere (no such name here, or another shape)

    def summary(self) -> str:
        """Counts, and the names of the re-initialised tensors."""
        total = len(self.copied) + len(self.reinitialised)
        text = f"init_from {self.source}: copied {len(self.copied)} of {total} tensors"
        if self.reinitialised:
            shown = ", ".join(self.reinitialised[:_SHOWN])
            more = f" (+{len(self.reinitialised) - _SHOWN} more)" if len(self.reinitialised) > _SHOWN else ""
            text += f"; re-initialised {len(self.reinitialised)}: {shown}{more}"
        if self.unused:
            text += f"; {len(self.unused)} source tensors unused"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "copied": self.copied, "reinitialised": self.reinitialised,
                "unused": self.unused}

    def write(self, path: str | Path) -> None:
        """The report as JSON at `path`."""
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")


def _read(source: str | Path) -> tuple[Path, dict[str, Any]]:
    # The checkpoint behind `source`, with errors that say they are about init_from.
    source = Path(source)
    if not source.exists():
        raise WeightsError(f"init_from: {source} does not exist; {_ADVICE}")
    try:
        path = checkpoint_path(source)
        return path, read_checkpoint(path)
    except WeightsError as error:
        raise WeightsError(f"init_from: {error}") from None


def initialise_from(model: torch.nn.Module, source: str | Path) -> InitReport:
    """Load the network weights of `source` (a seglab checkpoint, or a run folder: its best checkpoint) into
    `model` wherever name and shape agree; every other tensor of `model` keeps its current values.

    Raises `WeightsError` when the source is missing or unreadable, or when its tensors fit less than half of
    `model`'s weights (another architecture).
    """
    path, checkpoint = _read(source)
    try:
        weights = model_state(checkpoint, path)
    except WeightsError as error:
        raise WeightsError(f"init_from: {error}; {_ADVICE} (backbone-only weights go in pretrained_backbone)") \
            from None
    own = model.state_dict()
    copied = [name for name, tensor in own.items() if name in weights and weights[name].shape == tensor.shape]
    taken = set(copied)
    # A few tensors fit by chance (a 2-class classifier's bias, BatchNorm counters); a fine-tune takes most of
    # the network from the source, where another architecture fits a small share (a shared head at most).
    fitting = sum(own[name].numel() for name in copied)
    share = fitting / max(1, sum(tensor.numel() for tensor in own.values()))
    if share < _MIN_SHARE:
        raise WeightsError(
            f"init_from: {path}{_model_name(checkpoint)} holds another architecture: its tensors fit only "
            f"{share:.0%} of this run's weights ({len(copied)} of {len(own)} tensors of the {type(model).__name__}). "
            "Fine-tune from a checkpoint of the same model, or set `model` to the one it was trained with")
    model.load_state_dict({name: weights[name] for name in copied}, strict=False)
    return InitReport(source=path, copied=copied, reinitialised=[name for name in own if name not in taken],
                      unused=[name for name in weights if name not in taken])


def _model_name(checkpoint: dict[str, Any]) -> str:
    # " (a deeplabv3plus_xception41)" where the checkpoint says which model it holds, else "".
    try:
        return f" (a {spec_from_checkpoint(checkpoint).model})"
    except WeightsError:
        return ""


def init_normalization(source: str | Path) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) the model in `source` was trained with: a run starting from its weights normalises the same."""
    path, checkpoint = _read(source)
    try:
        spec = spec_from_checkpoint(checkpoint, path)
    except WeightsError as error:
        raise WeightsError(f"init_from: {error}") from None
    return spec.mean, spec.std


def initialise_run_from(model: torch.nn.Module, source: str | Path, run_dir: Path, *,
                        main_process: bool = True) -> InitReport:
    """`initialise_from` for `train`: every DDP rank loads the weights into its own network; the main process
    also prints the summary and writes it to `run_dir/init_from.json`."""
    report = initialise_from(model, source)
    if main_process:
        print(report.summary())
        report.write(run_dir / "init_from.json")
    return report
