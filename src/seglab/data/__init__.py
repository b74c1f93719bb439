"""Datasets and data utilities. Every dataset returns `(image, mask)`: image float32 `(3, H, W)` in [0, 1], mask
int64 `(H, W)` of class indices, and carries `class_names`, `num_classes` and `ignore_index` (255 by default).

- `DataOptions`, `FolderOptions`: which dataset and how its masks read, as plain values (`data/options.py`)
- `build_datasets`: a run's train/val/test datasets from its `DataOptions` (`data/datasets.py`)
- `ShapesDataset`: built-in procedural shapes ("shapes v1"), streamed without storage (`data/shapes.py`)
- `OxfordPets`: Oxford-IIIT Pet trimaps, download and splits (`data/pets.py`)
- `FolderDataset`: users' image and mask folders paired by stem (`data/folder.py`, `data/pairing.py`)
- `find_splits`: the train/val/test folders of common dataset layouts (`data/layouts.py`)
- `seglab.data.transforms`: batch augmentation (kornia)
- `check_folders`: the checks behind `seglab data check` (`data/validation.py`)

Names are imported on first use, so that the torch-free modules (`options`, `pairing`, `files`) load without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.lazy import lazy_exports

# Editors and type checkers read the names here; at run time `__getattr__` imports each one on first use.
if TYPE_CHECKING:
    from seglab.data.datasets import build_datasets as build_datasets
    from seglab.data.files import FileProblem as FileProblem
    from seglab.data.files import MaskDecoder as MaskDecoder
    from seglab.data.folder import FolderDataset as FolderDataset
    from seglab.data.layouts import CITYSCAPES_CLASS_NAMES as CITYSCAPES_CLASS_NAMES
    from seglab.data.layouts import CITYSCAPES_LABEL_IDS as CITYSCAPES_LABEL_IDS
    from seglab.data.layouts import DatasetLayout as DatasetLayout
    from seglab.data.layouts import SplitFolders as SplitFolders
    from seglab.data.layouts import find_splits as find_splits
    from seglab.data.options import LAYOUTS as LAYOUTS
    from seglab.data.options import DataOptions as DataOptions
    from seglab.data.options import FolderOptions as FolderOptions
    from seglab.data.pairing import pair_files as pair_files
    from seglab.data.pets import OxfordPets as OxfordPets
    from seglab.data.pets import download_pets as download_pets
    from seglab.data.shapes import SHAPES_V1 as SHAPES_V1
    from seglab.data.shapes import ShapesDataset as ShapesDataset
    from seglab.data.shapes import ShapesSpec as ShapesSpec
    from seglab.data.shapes import export_shapes as export_shapes
    from seglab.data.shapes import generate_shapes as generate_shapes
    from seglab.data.validation import CheckReport as CheckReport
    from seglab.data.validation import check_folders as check_folders

_EXPORTS = {
    "DataOptions": "options", "FolderOptions": "options", "LAYOUTS": "options",
    "build_datasets": "datasets",
    "FileProblem": "files", "MaskDecoder": "files",
    "FolderDataset": "folder", "pair_files": "pairing",
    "CITYSCAPES_CLASS_NAMES": "layouts", "CITYSCAPES_LABEL_IDS": "layouts", "DatasetLayout": "layouts",
    "SplitFolders": "layouts", "find_splits": "layouts",
    "OxfordPets": "pets", "download_pets": "pets",
    "SHAPES_V1": "shapes", "ShapesDataset": "shapes", "ShapesSpec": "shapes", "export_shapes": "shapes",
    "generate_shapes": "shapes",
    "CheckReport": "validation", "check_folders": "validation",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
