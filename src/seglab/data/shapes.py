"""Built-in procedural shapes dataset ("shapes v1"): background, circle, triangle, square.

Every sample is a pure function of `(split, index, seed)` and the frozen generator parameters `SHAPES_V1`, so
the dataset streams without storage and is the same on every machine: masks are bit-identical (their geometry
uses only exact float arithmetic on values from `math.cos`/`math.sin`), images agree up to float rounding.
Changing anything in `ShapesSpec` or in the drawing code makes a new version; keep v1 as is so that
benchmark numbers stay comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from seglab.data.classes import indexed_image
from seglab.data.options import as_hw
from seglab.errors import ConfigError

CLASS_NAMES = ("background", "circle", "triangle", "square")
SPLITS = ("train", "val", "test")
# The seed tutorial's 1000 images split 800/100/100.
DEFAULT_LENGTHS = {"train": 800, "val": 100, "test": 100}
# Split codes enter the random seed, so train index 5000 never reproduces a val or test sample.
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Display colour per class: of the exported masks, and (through the checkpoint) of every prediction drawn.
PALETTE = ((0, 0, 0), (220, 50, 47), (133, 153, 0), (38, 139, 210))


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of the shapes generator. Fractions are of the image side; colours are in [0, 1]."""

    version: str = "v1"  # name used in benchmark tables; a changed spec or drawing code gets a new one
    min_shapes: int = 1  # shapes per image, drawn uniformly from min..max; later shapes cover earlier ones
    max_shapes: int = 4
    size_range: tuple[float, float] = (0.08, 0.22)  # circle radius; squares and triangles get the same area
    centre_range: tuple[float, float] = (0.1, 0.9)  # centre coordinates: shapes may be cut by the border
    low_contrast_probability: float = 0.3  # chance that a shape's colour is close to the background under it
    low_contrast_offset: tuple[float, float] = (0.08, 0.2)  # per-channel distance of such a colour
    shading: float = 0.12  # amplitude of a linear brightness ramp across each shape (not flat fills)
    texture_grid: tuple[int, int] = (2, 6)  # background texture: random coarse grid of this many cells a side
    texture_amplitude: tuple[float, float] = (0.03, 0.25)  # ...upsampled bilinearly, scaled by this std-dev
    gradient_amplitude: tuple[float, float] = (0.0, 0.35)  # linear colour gradient across the background
    noise_sigma: tuple[float, float] = (0.0, 0.08)  # per-pixel Gaussian noise over the whole image


SHAPES_V1 = ShapesSpec()

# Equal areas: a circle of radius s, a square of half-side s*sqrt(pi)/2, an equilateral triangle of
# circumradius s*sqrt(pi / (3*sqrt(3)/4)), so size alone never tells the classes apart.
_SQUARE_HALF_SIDE = math.sqrt(math.pi) / 2
_TRIANGLE_CIRCUMRADIUS = math.sqrt(math.pi / (3 * math.sqrt(3) / 4))


@lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel-centre coordinates, shared (read-only) by every sample of one size.
    ys = (np.arange(height, dtype=np.float64) + 0.5)[:, None]
    xs = (np.arange(width, dtype=np.float64) + 0.5)[None, :]
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


@lru_cache(maxsize=32)
def _upsample_matrix(out: int, cells: int) -> np.ndarray:
    # Row weights of bilinear interpolation from `cells` grid points spread over `out` pixels.
    pos = (np.arange(out) + 0.5) / out * (cells - 1)
    low = np.clip(np.floor(pos).astype(int), 0, cells - 2)
    frac = pos - low
    matrix = np.zeros((out, cells), dtype=np.float32)
    matrix[np.arange(out), low] = 1 - frac
    matrix[np.arange(out), low + 1] = frac
    return matrix


def generate_shapes(
    split: str, index: int, *, size: int | tuple[int, int] = 128, seed: int = 0, spec: ShapesSpec = SHAPES_V1
) -> tuple[np.ndarray, np.ndarray]:
    """Draw sample `index` of `split`: image float32 `(3, H, W)` in [0, 1] and mask uint8 `(H, W)` of class indices."""
    if split not in _SPLIT_CODES:
        raise ConfigError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")
    if seed < 0 or index < 0:
        raise ConfigError(f"shapes seed and index must be >= 0, got seed={seed}, index={index}")
    height, width = as_hw(size)
    side = min(height, width)
    rng = np.random.default_rng([0x5EED5, int(seed), _SPLIT_CODES[split], int(index)])
    ys, xs = _grid(height, width)

    # Background: base colour + smooth random texture + linear gradient.
    base = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    cells = int(rng.integers(spec.texture_grid[0], spec.texture_grid[1] + 1))
    amplitude = np.float32(rng.uniform(*spec.texture_amplitude))
    coarse = rng.standard_normal((3, cells, cells)).astype(np.float32) * amplitude
    image = _upsample_matrix(height, cells) @ coarse @ _upsample_matrix(width, cells).T
    angle = rng.uniform(0.0, 2 * math.pi)
    ramp = ((xs - width / 2) * math.cos(angle) + (ys - height / 2) * math.sin(angle)) / side
    tint = rng.standard_normal(3) * rng.uniform(*spec.gradient_amplitude)
    image += (tint[:, None, None] * ramp[None]).astype(np.float32)
    image += base[:, None, None]
    np.clip(image, 0.0, 1.0, out=image)

    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(int(rng.integers(spec.min_shapes, spec.max_shapes + 1))):
        cls = int(rng.integers(1, 4))
        radius = rng.uniform(*spec.size_range) * side
        cx = rng.uniform(*spec.centre_range) * width
        cy = rng.uniform(*spec.centre_range) * height
        theta = rng.uniform(0.0, 2 * math.pi)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        dx, dy = xs - cx, ys - cy
        if cls == 1:
            inside = dx * dx + dy * dy <= radius * radius
        elif cls == 2:
            # Equilateral triangle: inside the three half-planes whose normals point between the vertices,
            # at distance inradius = circumradius / 2.
            inradius = radius * _TRIANGLE_CIRCUMRADIUS / 2
            inside = np.ones((height, width), dtype=bool)
            for k in range(3):
                phi = theta + math.pi / 3 + k * 2 * math.pi / 3
                inside &= dx * math.cos(phi) + dy * math.sin(phi) <= inradius
        else:
            half = radius * _SQUARE_HALF_SIDE
            inside = (np.abs(dx * cos_t + dy * sin_t) <= half) & (np.abs(dy * cos_t - dx * sin_t) <= half)

        if rng.random() < spec.low_contrast_probability:
            # Close to the background under the centre: a hard case, as real objects often are.
            under = image[:, min(int(cy), height - 1), min(int(cx), width - 1)]
            offset = rng.uniform(*spec.low_contrast_offset, size=3) * rng.choice((-1.0, 1.0), size=3)
            colour = np.where((under + offset > 1) | (under + offset < 0), under - offset, under + offset)
        else:
            colour = rng.uniform(0.0, 1.0, size=3)
        shade = rng.uniform(-spec.shading, spec.shading) * ((dx * cos_t + dy * sin_t) / radius)
        if inside.any():
            fill = colour[:, None] + shade[inside][None, :]
            image[:, inside] = np.clip(fill, 0.0, 1.0).astype(np.float32)
            mask[inside] = cls

    sigma = rng.uniform(*spec.noise_sigma)
    image += rng.standard_normal((3, height, width), dtype=np.float32) * np.float32(sigma)
    np.clip(image, 0.0, 1.0, out=image)
    return image, mask


class ShapesDataset(Dataset):
    """Procedural shapes (the seed 003 dataset): image float32 `(3, H, W)` in [0, 1], mask int64 `(H, W)`.

    `length=None` gives the split's default size (800/100/100); a larger train `length` yields fresh samples,
    never equal to validation or test ones, because the split is part of each sample's seed.
    """

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    ignore_index = 255
    palette = PALETTE

    def __init__(
        self, split: str = "train", *, size: int | tuple[int, int] = 128, length: int | None = None, seed: int = 0
    ) -> None:
        if split not in _SPLIT_CODES:
            raise ConfigError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")
        self.split = split
        self.size = as_hw(size)
        self.length = DEFAULT_LENGTHS[split] if length is None else int(length)
        if self.length < 0:
            raise ConfigError(f"shapes length must be >= 0, got {self.length}")
        self.seed = int(seed)
        self.spec = SHAPES_V1

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"shapes {self.split} index {index} out of range for length {self.length}")
        image, mask = generate_shapes(self.split, index, size=self.size, seed=self.seed, spec=self.spec)
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64))

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, size={self.size}, length={self.length}, seed={self.seed}, "
            f"shapes {self.spec.version})"
        )


def export_shapes(
    out_dir: Path | str,
    *,
    size: int = 128,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, int]:
    """Write shapes to `out_dir` in the seed's layout (`train_imgs/`, `train_mask/`, ...), masks as palette PNGs.

    Files are named `00000.png` upwards in both folders. Returns the number written per split.
    """
    counts = dict(DEFAULT_LENGTHS if counts is None else counts)
    out_dir = Path(out_dir)
    total = sum(counts.values())
    done = 0
    for split, count in counts.items():
        images_dir, masks_dir = out_dir / f"{split}_imgs", out_dir / f"{split}_mask"
        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, mask = generate_shapes(split, index, size=size, seed=seed)
            rgb = (image.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
            Image.fromarray(rgb, mode="RGB").save(images_dir / f"{index:05d}.png")
            indexed_image(mask, PALETTE).save(masks_dir / f"{index:05d}.png")
            done += 1
            if progress and (done % 100 == 0 or done == total):
                print(f"\rshapes: {done}/{total} written", end="\n" if done == total else "", flush=True)
    return counts
