"""Oxford-IIIT Pet (the seed 000 dataset): layout, trimap classes, splits and download.

Layout under `root`: `images/*.jpg`, `annotations/trimaps/*.png`, `annotations/trainval.txt` and `test.txt`.
Trimap values 1 = pet, 2 = background, 3 = border become classes 0, 1, 2 (value - 1, as in the seed).

Splits (each seeded, so every run and machine sees the same files):
- `split_scheme="official"`: the `test` split is the official test list (3669 images); the official trainval
  list (3680) is shuffled with `seed` and its last `val_fraction` (10%, 368 images) becomes `val`.
- `split_scheme="random_80_20"`: the seed's split. Every image with a trimap is shuffled with `seed`; the first
  20% is `test`, the remaining 80% is split again into `val` (its first `val_fraction`) and `train`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.classes import default_palette
from seglab.data.files import FileProblem, load_mask_values, load_rgb, natural_key, size_mismatch
from seglab.data.options import SPLIT_SCHEMES, as_hw
from seglab.data.resize import resize_arrays, to_tensors
from seglab.download import download_file, extract_archive
from seglab.errors import ConfigError, DataError

CLASS_NAMES = ("pet", "background", "border")
# The VGG Oxford site, as torchvision's OxfordIIITPet names it; mirrors override it.
DEFAULT_BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
BASE_URL_ENV = "SEGLAB_PETS_URL"
# (archive file name, md5) of the official release.
PETS_ARCHIVES = (
    ("images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
    ("annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"),
)


def _read_list(path: Path) -> list[str]:
    # Lines are "Abyssinian_100 1 1 1" (name, class id, species, breed id); '#' lines are comments.
    if not path.is_file():
        raise DataError(
            f"{path}: split list missing; download the annotations with `seglab data pets --root ... "
            "--download` or check the root folder"
        )
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])
    return names


def pets_split(
    root: Path | str, split: str, *, split_scheme: str = "official", seed: int = 0, val_fraction: float = 0.1
) -> list[str]:
    """The image names (stems) of one split, following the rules in this module's docstring."""
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"unknown Oxford-IIIT Pet split {split!r}; choose train, val or test")
    if split_scheme == "official":
        if split == "test":
            return _read_list(root / "annotations" / "test.txt")
        names = _read_list(root / "annotations" / "trainval.txt")
    elif split_scheme == "random_80_20":
        images_dir, trimaps_dir = root / "images", root / "annotations" / "trimaps"
        if not images_dir.is_dir() or not trimaps_dir.is_dir():
            raise DataError(
                f"{root}: expected images/ and annotations/trimaps/ inside; download with "
                "`seglab data pets --root ... --download`"
            )
        trimaps = {p.stem for p in trimaps_dir.glob("*.png") if not p.name.startswith(".")}
        # Sorted first so the shuffle does not depend on the file system's listing order.
        names = sorted(
            (p.stem for p in images_dir.glob("*.jpg") if not p.name.startswith(".") and p.stem in trimaps),
            key=natural_key,
        )
        random.Random(seed).shuffle(names)
        n_test = int(len(names) * 0.2)
        if split == "test":
            return names[:n_test]
        names = names[n_test:]
    else:
        raise ConfigError(f"unknown split scheme {split_scheme!r}; choose one of {', '.join(SPLIT_SCHEMES)}")
    names = list(names)
    if split_scheme == "official":
        random.Random(seed).shuffle(names)
    n_val = round(len(names) * val_fraction)
    return names[len(names) - n_val :] if split == "val" else names[: len(names) - n_val]


class OxfordPets(Dataset):
    """Oxford-IIIT Pet trimaps: image float32 `(3, H, W)` in [0, 1], mask int64 `(H, W)` with 0 pet, 1 background,
    2 border. Every sample is resized to `size` (int or (H, W); `None` keeps the file's size)."""

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    palette = default_palette(len(CLASS_NAMES))
    ignore_index = 255

    def __init__(
        self,
        root: Path | str,
        split: str = "train",
        *,
        split_scheme: str = "official",
        size: int | tuple[int, int] | None = 224,
        seed: int = 0,
        val_fraction: float = 0.1,
        keep_aspect: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split, self.split_scheme = split, split_scheme
        self.size = None if size is None else as_hw(size)
        self.keep_aspect = keep_aspect
        self.names = pets_split(self.root, split, split_scheme=split_scheme, seed=seed, val_fraction=val_fraction)
        if not self.names:
            raise DataError(f"{self.root}: the {split_scheme} {split} split is empty")

    def __len__(self) -> int:
        return len(self.names)

    def paths(self, index: int) -> tuple[Path, Path]:
        """The image and trimap file of sample `index`."""
        name = self.names[index]
        return self.root / "images" / f"{name}.jpg", self.root / "annotations" / "trimaps" / f"{name}.png"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, trimap_path = self.paths(index)
        rgb = load_rgb(image_path)  # some official JPEGs are CMYK, greyscale or RGBA: all come out RGB
        trimap = load_mask_values(trimap_path).astype(np.int64)
        if trimap.shape != rgb.shape[:2]:
            raise size_mismatch(
                trimap_path, trimap.shape, image_path, rgb.shape, "the download is damaged, download it again"
            )
        if trimap.min() < 1 or trimap.max() > 3:
            bad = np.unique(trimap[(trimap < 1) | (trimap > 3)])[:5].tolist()
            raise FileProblem(trimap_path, "mask-values", f"holds values {bad}; trimaps hold only 1, 2 and 3")
        mask = trimap - 1
        if self.size is not None:
            rgb, mask = resize_arrays(
                rgb, mask, self.size, keep_aspect=self.keep_aspect, ignore_index=self.ignore_index
            )
        return to_tensors(rgb, mask)


def pets_base_url(base_url: str | None = None) -> str:
    """The download base URL: the argument, else `$SEGLAB_PETS_URL`, else the VGG Oxford site."""
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def download_pets(root: Path | str, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Download and extract the official archives into `root` (idempotent; resumes interrupted downloads).

    Each archive is verified against its md5 before extraction; a marker file `.<archive>.extracted` records
    a finished extraction, so a second call does nothing. Archives are kept next to the data (delete them
    to save ~800 MB once extracted).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    url = pets_base_url(base_url)
    for name, md5 in PETS_ARCHIVES:
        marker = root / f".{name}.extracted"
        if marker.is_file():
            continue
        archive = download_file(url + name, root / name, md5=md5, progress=progress)
        extract_archive(archive, root)
        marker.write_text(md5 + "\n")
    return root
