"""The oldest torch seglab trusts to read a file of weights: the ground floor, so that every reader (checkpoints in
`seglab.inference.loading`, pretrained backbone weights in `seglab.models.pretrained`) refuses an older one in the
same words before the file is opened."""

from __future__ import annotations

import re
from pathlib import Path

from seglab.errors import WeightsError

# The oldest torch whose weights-only reader seglab trusts (pyproject.toml requires the same): before 2.6,
# torch.load(weights_only=True) could be made to run code (CVE-2025-32434), and later advisories reach further.
SAFE_TORCH = (2, 10)


def refuse_unsafe_torch(path: str | Path, what: str = "checkpoint") -> None:
    """Raises `WeightsError` when the running torch is older than `SAFE_TORCH`: its weights-only reader cannot be
    trusted to keep a file's pickled code from running. `what` names the file's kind in the message."""
    import torch

    version = torch.__version__
    found = re.match(r"(\d+)\.(\d+)", str(version))
    if found is not None and (int(found[1]), int(found[2])) >= SAFE_TORCH:
        return
    floor = ".".join(map(str, SAFE_TORCH))
    raise WeightsError(
        f"refusing to read {what} {path} with torch {version}: torch.load(weights_only=True), which keeps a "
        f"file's pickled code from running, can be escaped before torch 2.6 (CVE-2025-32434) and later "
        f"advisories reach further; seglab requires torch >= {floor}. Upgrade torch (pip install 'torch>={floor}')"
    )
