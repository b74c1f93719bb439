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

from seglab.lazy import lazy_exports

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
    "default_num_workers": "loading",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
