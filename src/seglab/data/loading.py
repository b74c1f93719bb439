"""How many processes read data: the loader-worker default."""

from __future__ import annotations

import os


def default_num_workers() -> int:
    """Data loader workers for training: one core is left to the training step itself (1 on a 2-core machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))
