"""Datasets and data utilities. Every dataset returns `(image, mask)`: image float32 `(3, H, W)` in [0, 1], mask
int64 `(H, W)` of class indices, and carries `class_names`, `num_classes` and `ignore_index` (255 by default).

- `ShapesDataset`: built-in procedural shapes ("shapes v1"), streamed without storage (`data/shapes.py`)
- `OxfordPets`: Oxford-IIIT Pet trimaps, download and splits (`data/pets.py`)
- `FolderDataset`: users' image and mask folders paired by stem, read as `FolderOptions` say (`data/folder.py`)
- `find_splits`: the train/val/test folders of common dataset layouts (`data/layouts.py`)
- `seglab.data.transforms`: batch augmentation (kornia) and normalisation
- `check_folders`: the checks behind `seglab data check` (`data/validation.py`)
"""

from __future__ import annotations

import os

from seglab.data.files import FileProblem, MaskDecoder
from seglab.data.folder import FolderDataset, FolderOptions, pair_files
from seglab.data.layouts import (
    CITYSCAPES_CLASS_NAMES,
    CITYSCAPES_LABEL_IDS,
    LAYOUTS,
    DatasetLayout,
    SplitFolders,
    find_splits,
)
from seglab.data.pets import OxfordPets, download_pets
from seglab.data.shapes import SHAPES_V1, ShapesDataset, ShapesSpec, export_shapes, generate_shapes
from seglab.data.validation import CheckReport, check_folders

__all__ = [
    "CITYSCAPES_CLASS_NAMES",
    "CITYSCAPES_LABEL_IDS",
    "LAYOUTS",
    "SHAPES_V1",
    "CheckReport",
    "DatasetLayout",
    "FileProblem",
    "FolderDataset",
    "FolderOptions",
    "MaskDecoder",
    "OxfordPets",
    "ShapesDataset",
    "ShapesSpec",
    "SplitFolders",
    "check_folders",
    "default_num_workers",
    "download_pets",
    "export_shapes",
    "find_splits",
    "generate_shapes",
    "pair_files",
]


def default_num_workers() -> int:
    """Data loader workers for training: one core is left to the training step itself (1 on a 2-core machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))
