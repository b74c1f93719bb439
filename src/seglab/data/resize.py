"""Bringing one (image, mask) pair to a fixed size: the image antialiased, the mask nearest-neighbour.

`resize_pair` works on tensors (any device), `resize_arrays` on the numpy arrays the datasets read from files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seglab.data.options import as_hw


def fitted_size(
    shape: tuple[int, int], size: int | tuple[int, int], *, keep_aspect: bool
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(output size, size the content is scaled to): equal unless `keep_aspect` leaves padding."""
    out_h, out_w = as_hw(size)
    if not keep_aspect:
        return (out_h, out_w), (out_h, out_w)
    height, width = shape
    scale = min(out_h / height, out_w / width)
    return (out_h, out_w), (max(1, round(height * scale)), max(1, round(width * scale)))


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: int | tuple[int, int], *, keep_aspect: bool = False,
                ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize `image (3, H, W)` float and `mask (H, W)` int64 to `size`.

    `keep_aspect=False` stretches to exactly `size`. `keep_aspect=True` scales so the whole image fits inside
    `size` without distortion, then pads bottom/right: the image with 0, the mask with `ignore_index`, so
    the padding never counts as a class in the loss or the metrics.
    """
    height, width = mask.shape[-2:]
    (out_h, out_w), (new_h, new_w) = fitted_size((height, width), size, keep_aspect=keep_aspect)
    if (new_h, new_w) != (height, width):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
        # "nearest-exact" samples pixel centres; plain "nearest" shifts the mask by half a pixel on downscaling.
        mask = F.interpolate(mask[None, None].float(), size=(new_h, new_w), mode="nearest-exact")[0, 0].long()
    if (new_h, new_w) != (out_h, out_w):
        image = F.pad(image, (0, out_w - new_w, 0, out_h - new_h), value=0.0)
        mask = F.pad(mask, (0, out_w - new_w, 0, out_h - new_h), value=ignore_index)
    return image, mask


def resize_arrays(rgb: np.ndarray, mask: np.ndarray, size: int | tuple[int, int], *, keep_aspect: bool = False,
                  ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """`resize_pair` for numpy arrays as read from files (uint8 `(H, W, 3)`, integer `(H, W)`), done by PIL.

    The datasets use this one: PIL works single-threaded on uint8, so loading stays fast in the training
    process too, where torch's thread pool would compete with the model for the cores.
    """
    height, width = mask.shape
    (out_h, out_w), (new_h, new_w) = fitted_size((height, width), size, keep_aspect=keep_aspect)
    if (new_h, new_w) != (height, width):
        # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases; nearest samples
        # pixel centres, like torch's "nearest-exact".
        rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask.astype(np.int32)).resize((new_w, new_h), Image.Resampling.NEAREST))
    if (new_h, new_w) != (out_h, out_w):
        rgb = np.pad(rgb, ((0, out_h - new_h), (0, out_w - new_w), (0, 0)))
        mask = np.pad(mask, ((0, out_h - new_h), (0, out_w - new_w)), constant_values=ignore_index)
    return rgb, mask.astype(np.int64)


def to_tensors(rgb: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 `(H, W, 3)` and integer `(H, W)` arrays -> float32 `(3, H, W)` in [0, 1] and int64 `(H, W)`."""
    image = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    image *= np.float32(1 / 255)
    return torch.from_numpy(image), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
