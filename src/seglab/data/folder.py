"""Users' own data: a folder of images and a folder of masks, paired by file name stem.

Pairing is by stem (`cat_01.jpg` <-> `cat_01.png`), never by sort order: real folders are not named in order,
and one missing mask would silently shift every later pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.files import MaskDecoder, list_image_files, load_rgb, natural_key, size_mismatch
from seglab.data.resize import as_hw, resize_arrays, to_tensors
from seglab.errors import ConfigError, DataError


@dataclass
class Pairing:
    """Result of matching two folders: the pairs, and every file that found no partner."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    images_without_mask: list[Path] = field(default_factory=list)
    masks_without_image: list[Path] = field(default_factory=list)
    duplicates: list[list[Path]] = field(default_factory=list)  # several files sharing one stem in one folder

    def report(self, limit: int = 10) -> str:
        """A readable list of the unpaired and ambiguous files (at most `limit` of each kind)."""
        lines = []
        for title, paths in (
            ("images without a mask", self.images_without_mask),
            ("masks without an image", self.masks_without_image),
        ):
            if paths:
                shown = ", ".join(p.name for p in paths[:limit])
                more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
                lines.append(f"{len(paths)} {title}: {shown}{more}")
        for group in self.duplicates[:limit]:
            lines.append(f"several files share the stem {group[0].stem!r}: {', '.join(str(p) for p in group)}")
        return "\n".join(lines)


def pair_files(images_dir: Path | str, masks_dir: Path | str, *, mask_suffix: str = "") -> Pairing:
    """Match images to masks by file stem; a mask's stem may carry `mask_suffix` (e.g. `"_mask"`)."""

    def by_stem(paths: list[Path], suffix: str) -> tuple[dict[str, Path], list[list[Path]]]:
        groups: dict[str, list[Path]] = {}
        for path in paths:
            stem = path.stem
            if suffix:
                # A mask without the suffix gets a stem no image can have, so it is reported as unpaired.
                stem = stem[: -len(suffix)] if stem.endswith(suffix) else "\0" + stem
            groups.setdefault(stem, []).append(path)
        unique = {stem: group[0] for stem, group in groups.items() if len(group) == 1}
        return unique, [sorted(group) for group in groups.values() if len(group) > 1]

    images, image_dups = by_stem(list_image_files(images_dir), "")
    masks, mask_dups = by_stem(list_image_files(masks_dir), mask_suffix)
    stems = sorted(images.keys() & masks.keys(), key=natural_key)

    def by_name(paths) -> list[Path]:
        return sorted(paths, key=lambda p: natural_key(p.name))

    return Pairing(
        pairs=[(images[s], masks[s]) for s in stems],
        images_without_mask=by_name(images[s] for s in images.keys() - masks.keys()),
        masks_without_image=by_name(masks[s] for s in masks.keys() - images.keys()),
        duplicates=image_dups + mask_dups,
    )


def resolve_classes(
    class_names: Sequence[str] | None,
    num_classes: int | None,
    value_map: Mapping[int, int] | None,
    palette: Mapping[int, Sequence[int]] | None,
    ignore_index: int,
) -> tuple[str, ...]:
    """Class names from what the user gave: names, a count, or the largest class a value map / palette names."""
    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        if num_classes is not None and num_classes != len(names):
            raise ConfigError(f"num_classes={num_classes} but {len(names)} class names were given")
        return names
    if num_classes is None:
        targets = [c for c in (value_map or {}).values()] + [c for c in (palette or {})]
        targets = [int(c) for c in targets if int(c) != ignore_index]
        if not targets:
            raise ConfigError(
                "cannot tell how many classes the masks hold: give the class names or their number "
                "(class_names / num_classes, --class-names / --num-classes), or a value map or palette"
            )
        num_classes = max(targets) + 1
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    return tuple(f"class_{i}" for i in range(num_classes))


class FolderDataset(Dataset):
    """Images and masks from two folders, paired by stem: image float32 `(3, H, W)` in [0, 1], mask int64 `(H, W)`.

    Masks hold class indices, or colours decoded with `palette` (class -> (r, g, b)), or values decoded with
    `value_map` (stored value -> class, e.g. `{0: 0, 255: 1}`); either may send void to `ignore_index`. Classes
    come from `class_names`, else `num_classes`, else the largest class the value map / palette names.
    `size` (int or (H, W)) resizes every sample (image antialiased bilinear, mask nearest), letterboxed
    with `keep_aspect=True`; `size=None` keeps the files' size. Unpaired files raise a `DataError` listing
    them unless `allow_unpaired=True`, which skips them.
    """

    def __init__(
        self,
        images_dir: Path | str,
        masks_dir: Path | str,
        *,
        size: int | tuple[int, int] | None = None,
        value_map: Mapping[int, int] | None = None,
        palette: Mapping[int, Sequence[int]] | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        num_classes: int | None = None,
        mask_suffix: str = "",
        keep_aspect: bool = False,
        allow_unpaired: bool = False,
    ) -> None:
        self.images_dir, self.masks_dir = Path(images_dir), Path(masks_dir)
        self.class_names = resolve_classes(class_names, num_classes, value_map, palette, ignore_index)
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index
        self.size = None if size is None else as_hw(size)
        self.keep_aspect = keep_aspect
        self.decoder = MaskDecoder(self.num_classes, value_map=value_map, palette=palette, ignore_index=ignore_index)
        pairing = pair_files(self.images_dir, self.masks_dir, mask_suffix=mask_suffix)
        if pairing.duplicates or (not allow_unpaired and (pairing.images_without_mask or pairing.masks_without_image)):
            raise DataError(
                f"{self.images_dir} and {self.masks_dir} do not pair up one to one by file name:\n"
                f"{pairing.report()}\nrename or remove these files (or pass allow_unpaired=True to skip unpaired ones)"
            )
        if not pairing.pairs:
            raise DataError(
                f"no image in {self.images_dir} has a mask with the same name in {self.masks_dir}; "
                "check the folders (and the mask suffix, if masks are named like 'x_mask.png')"
            )
        self.pairs = pairing.pairs
        self.unpaired = pairing

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair at `index` as numpy arrays at the files' size: uint8 `(H, W, 3)` and int64 `(H, W)`."""
        image_path, mask_path = self.pairs[index]
        rgb = load_rgb(image_path)
        mask = self.decoder.read(mask_path)
        if rgb.shape[:2] != mask.shape:
            raise size_mismatch(mask_path, mask.shape, image_path, rgb.shape)
        return rgb, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask_array = self.load(index)
        if self.size is not None:
            rgb, mask_array = resize_arrays(
                rgb, mask_array, self.size, keep_aspect=self.keep_aspect, ignore_index=self.ignore_index
            )
        return to_tensors(rgb, mask_array)

    def class_frequencies(self) -> dict[str, float]:
        """Fraction of labelled pixels per class over the whole dataset (reads every mask once)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for _, mask_path in self.pairs:
            mask = self.decoder.read(mask_path)
            counts += np.bincount(mask[mask != self.ignore_index].ravel(), minlength=self.num_classes)
        total = max(int(counts.sum()), 1)
        return {name: float(c) / total for name, c in zip(self.class_names, counts, strict=True)}
