"""Checkpoint files: written atomically, read back with `weights_only=True` so loading never runs code."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seglab.errors import OutputError, describe_os_error
from seglab.inference.loading import read_checkpoint
from seglab.training.pause_points import pause_point

# Temporary files of `save_atomically` are named `.<target>.<random>.tmp`: hidden, and never `*.ckpt`.
TEMPORARY_PATTERN = ".*.ckpt.*.tmp"


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
    """`torch.save(checkpoint, path)` through a temporary file and `os.replace`.

    A failed write (full disk, read-only folder) raises `OutputError` naming the file and the cause; the
    previous file at `path`, if any, is left as it was.
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(descriptor, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            pause_point(f"checkpoint_write:{path.name}")
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        if isinstance(error, OSError):
            kept = f"the previous {path.name} is unchanged" if path.is_file() else f"no {path.name} was written"
            raise OutputError(f"cannot write checkpoint {path}: {describe_os_error(error)}; {kept}. Free space "
                              f"on that disk or make {path.parent} writable") from error
        raise


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
