"""Helpers for the prediction tests: a tiny seglab checkpoint written without training, and small image folders.

The checkpoint holds `tiny_test` (training_helpers.TinySegmenter) with random weights and a full inference spec,
so `seglab predict` runs on it end to end in a fraction of a second; processes that load it need `tiny_test`
registered (`register_tiny_model`, or `python tests/training_helpers.py predict ...`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seglab.data.classes import default_palette
from seglab.inference.spec import SPEC_KEY, InferenceSpec
from training_helpers import TINY_MODEL, TinySegmenter

TINY_CLASSES = 4


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A seglab checkpoint of `tiny_test` with weights drawn from `seed` (another seed: another model)."""
    torch.manual_seed(seed)
    model = TinySegmenter(TINY_CLASSES).eval()
    spec = InferenceSpec(model=TINY_MODEL, model_options={}, num_classes=TINY_CLASSES,
                         class_names=tuple(f"class{i}" for i in range(TINY_CLASSES)),
                         palette=default_palette(TINY_CLASSES), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({SPEC_KEY: spec.to_dict(), "state_dict": {f"model.{key}": value
                                                         for key, value in model.state_dict().items()}}, path)
    return path


def write_images(folder: Path, count: int, *, size: int = 32, prefix: str = "img", seed: int = 0) -> list[Path]:
    """`count` random RGB PNGs `<prefix><i>.png` of `size` px in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"{prefix}{index}.png"
        Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
