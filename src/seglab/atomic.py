"""Atomic file writes: a reader, a crash or a full disk never sees or leaves a half-written file.

`write_atomically(path, write)` lets `write` fill a temporary file in the target's folder, fsyncs it and renames
it over `path` with `os.replace` (atomic within one file system). On any failure the temporary file is removed and
the previous file at `path`, if any, is left as it was; an `OSError` becomes an `OutputError` that names the file,
the cause and, for a full disk, how much space the file needed and how much is free.

Every temporary file seglab creates is named by `temporary_name` and so matches `TEMPORARY_PATTERN`; what a killed
write leaves behind, `remove_temporaries` removes (a resume and an overwrite do, in the run folder they lock).

`writes_in_progress()` tells a signal handler that stopping now would interrupt a write (see
`seglab.training.callbacks.StopOnSignal`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from seglab.errors import OutputError, describe_os_error

_in_progress = 0

# The one name shape of seglab's temporary files, whatever writes them: hidden, recognisable, and never named like
# the target (`*.ckpt`, metrics.csv) so that nothing reads one as a finished file.
TEMPORARY_PREFIX = ".seglab-tmp-"
TEMPORARY_PATTERN = f"{TEMPORARY_PREFIX}*"


def temporary_name(path: Path, suffix: str = "") -> Path:
    """`.seglab-tmp-<random>.<name>.tmp<suffix>` beside `path` (`TEMPORARY_PATTERN`); `suffix` is for writers
    that read the format from the name (".png" for PIL and matplotlib)."""
    return path.with_name(f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}.{path.name}.tmp{suffix}")


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Deletes the temporary files (`TEMPORARY_PATTERN`) in `folder` and its sub-folders that writes killed
    mid-way (kill -9, power cut) left behind; returns them. Only call it while no other process writes there
    (a run folder: with its lock held)."""
    stale = sorted(path for path in Path(folder).rglob(TEMPORARY_PATTERN) if not path.is_dir())
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


def writes_in_progress() -> int:
    """How many `write_atomically` calls of this process are between creating their temporary file and the rename."""
    return _in_progress


@contextlib.contextmanager
def atomic_path(path: str | Path, *, what: str = "", suffix: str | None = None, advice: str = "") -> Iterator[Path]:
    """A new, empty temporary file beside `path` for the block to fill (writers that take a path: PIL, numpy,
    matplotlib); fsynced and renamed onto `path` when the block ends, removed if it raises. `suffix`: the
    temporary's, default `path`'s own so that writers reading the format from the name pick the right one.

    `what` names the kind of file in the error ("checkpoint "), `advice` is appended to it (what else to do).
    The temporary file is created with the permissions a plain `open` gives (not `mkstemp`'s 0600), so the
    result has the permissions the file would have had if written directly.
    """
    global _in_progress
    path = Path(path)
    temporary = temporary_name(path, path.suffix if suffix is None else suffix)
    written = 0
    _in_progress += 1
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "xb"):
            pass
        yield temporary
        with open(temporary, "rb+") as file:
            written = os.fstat(file.fileno()).st_size
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _sync_folder(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            written = max(written, temporary.stat().st_size)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        if isinstance(error, OSError):
            raise OutputError(write_failure(path, error, written=written, what=what, advice=advice)) from error
        raise
    finally:
        _in_progress -= 1


def write_atomically(path: str | Path, write: Callable[[Path], object], *, what: str = "",
                     suffix: str = "", advice: str = "") -> Path:
    """Runs `write(temporary)` to fill a new file, then puts it at `path` atomically (`atomic_path`); returns
    `path`."""
    with atomic_path(path, what=what, suffix=suffix, advice=advice) as temporary:
        write(temporary)
    return Path(path)


def write_text_atomically(path: str | Path, text: str, **options: str) -> Path:
    """`write_atomically` for a UTF-8 text file (newlines written as given)."""
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8", newline=""),
                            **options)


def copy_atomically(source: str | Path, path: str | Path, **options: str) -> Path:
    """A copy of `source` at `path`, put there atomically."""
    return write_atomically(path, lambda temporary: shutil.copyfile(source, temporary), **options)


def write_failure(path: Path, error: OSError, *, written: int = 0, what: str = "", advice: str = "") -> str:
    """The message for a failed write of `path`: the file, the cause, whether an older file is still there, and
    for a full disk the space: free there, and at least needed (what had been written when it filled)."""
    kept = f"the previous {path.name} is unchanged" if path.is_file() else f"no {path.name} was written"
    message = f"cannot write {what}{path}: {describe_os_error(error)}; {kept}."
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_space(path.parent)
        needed = f"it needs more than the {_size(written)} written before the disk filled" if written else ""
        message += (f" The disk holding {path.parent} has {free} free{'; ' + needed if needed else ''}: free space "
                    "there (old runs, checkpoints, caches) or write to another disk.")
    else:
        message += f" Free space on that disk or make {path.parent} writable."
    return f"{message} {advice}".rstrip()


def _free_space(folder: Path) -> str:
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return _size(shutil.disk_usage(candidate).free)
    return "an unknown amount of space"


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _sync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk; file systems that cannot fsync a
    # folder (some network mounts, Windows) are left as they are: the file's data is already synced.
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
