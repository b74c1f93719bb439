"""Checkpoint files: written atomically, read back with `weights_only=True` so loading never runs code."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seglab.atomic import TEMPORARY_PREFIX, write_atomically
from seglab.inference.loading import read_checkpoint
from seglab.training.pause_points import pause_point

# Temporary files of `save_atomically`: `seglab.atomic.temporary_name`'s, for a *.ckpt target.
TEMPORARY_PATTERN = f"{TEMPORARY_PREFIX}*.ckpt.tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file in the target folder, fsyncs it, then renames.

    `os.replace` is atomic on one file system, so a crash or kill mid-write leaves the previous
    `best.ckpt`/`last.ckpt` intact (Lightning's own writer truncates the target before writing).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path)


def save_atomically(checkpoint: dict[str, Any], path: str | Path) -> None:
    """`torch.save(checkpoint, path)` through `seglab.atomic.write_atomically`.

    A failed write (full disk, read-only folder) raises `OutputError` naming the file and the cause; the
    previous file at `path`, if any, is left as it was.
    """

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            pause_point(f"checkpoint_write:{Path(path).name}")

    write_atomically(path, write, what="checkpoint ")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Deletes the temporary files that writes killed mid-way (kill -9, power loss) left in `folder`.

    They never pass for checkpoints (they are not named `*.ckpt`), but each holds up to a checkpoint's size.
    Only call this when no other process is writing checkpoints into `folder`.
    """
    stale = sorted(Path(folder).glob(TEMPORARY_PATTERN))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale
