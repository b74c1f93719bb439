"""Test hook: stop a training process at a named moment, so a fault test can kill or signal it exactly there.

The fault tests (`tests/test_training_faults.py`) send SIGKILL, SIGINT and SIGTERM to a `seglab train`
process and need the signal to land inside a training step, a validation or a checkpoint write rather than
"after a few seconds", which would make them flaky and slow. With `SEGLAB_TEST_PAUSE_AT=<moment>[@<n>]` in
the environment, the n-th arrival (default: the first) at `<moment>` writes the file named by
`SEGLAB_TEST_PAUSE_MARKER` and waits until a signal is handled; several pauses are separated by commas
(`train_step@3,checkpoint_write:last.ckpt@2`: a second signal during the save that the first one caused).
Moments: `train_step` (between the forward and the backward pass), `validation` (after a validation batch),
`checkpoint_write:<file name>` (the checkpoint's bytes are in the temporary file, which is not yet renamed over
the target).

Outside those tests the variable is unset: `pause_point` is then one comparison, and the callback that adds
the step and validation moments is not even installed.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

PAUSE_AT_VARIABLE = "SEGLAB_TEST_PAUSE_AT"
MARKER_VARIABLE = "SEGLAB_TEST_PAUSE_MARKER"

_REQUEST = os.environ.get(PAUSE_AT_VARIABLE) or None  # read once: the hook never looks again when unset
_arrivals: collections.Counter[str] = collections.Counter()


def _pauses(request: str | None) -> dict[str, set[int]]:
    """moment -> the arrivals at it that pause, from "<moment>[@<n>],<moment>[@<n>],..."."""
    pauses: dict[str, set[int]] = {}
    for item in filter(None, (request or "").split(",")):
        moment, _, count = item.rpartition("@") if "@" in item else (item, "", "1")
        pauses.setdefault(moment, set()).add(int(count))
    return pauses


_PAUSES = _pauses(_REQUEST)


def pause_requested() -> bool:
    return _REQUEST is not None


def pause_point(moment: str) -> None:
    """Waits for a signal if the environment asks to pause at this arrival at `moment`; else returns at once."""
    if _REQUEST is None or moment not in _PAUSES:
        return
    _arrivals[moment] += 1
    if _arrivals[moment] not in _PAUSES[moment]:
        return
    marker = os.environ.get(MARKER_VARIABLE)
    if marker:
        Path(marker).write_text(f"{moment}@{_arrivals[moment]} pid {os.getpid()}\n", encoding="utf-8")
    if hasattr(signal, "pause"):
        signal.pause()  # returns once a handler ran (SIGINT/SIGTERM); SIGKILL ends the process here
    else:  # Windows has no signal.pause
        time.sleep(3600)


class PausePoints(pl.Callback):
    """The `train_step` and `validation` moments; installed only when a pause is requested."""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Any) -> None:
        pause_point("train_step")

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            pause_point("validation")
