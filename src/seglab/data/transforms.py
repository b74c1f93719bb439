"""Joint image/mask augmentation on batches (CPU or GPU, built on kornia).

Augmentation runs on whole batches after collation (in the training step, on the model's device), so the
data loader workers only decode and resize.

Determinism: with `seed=None` the random parameters come from torch's global generator, as everywhere in
kornia, so `torch.manual_seed(s)` (or Lightning's `seed_everything`) before a run makes it reproducible. With
`seed=s` the module owns a private `torch.Generator`: the k-th call after construction (or after
`reseed(s)`) draws the same parameters whatever else consumes global random numbers, and the global
generator is left untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from kornia import augmentation as K

from seglab.data.options import as_hw
from seglab.data.resize import resize_pair
from seglab.errors import ConfigError

__all__ = ["SegmentationAugmentation", "resize_pair"]


class SegmentationAugmentation(torch.nn.Module):
    """Random scale + crop, horizontal flip, rotation/affine and colour jitter of `(images, masks)` batches.

    Input and output: images float `(N, 3, H, W)` in [0, 1], masks int64 `(N, H, W)`; the output has size
    `crop_size` (default: the input's). Geometry is shared by image and mask; masks are resampled
    nearest-neighbour and every pixel that comes from outside the source image (zoomed-out scale, rotation
    corners, crop padding) gets `ignore_index`, so it is left out of the loss and the metrics. Colour jitter
    changes the images only. Set a flag to 0 / False / None to switch that augmentation off.

    Defaults: scale 0.75-1.5 (a zoom-out to 0.5 would leave 3/4 of the crop void), rotation +-10 degrees,
    flips, brightness/contrast/saturation jitter 0.3. Hue jitter is off by default: on CPU it costs as much as
    all the rest together.
    """

    def __init__(
        self,
        *,
        crop_size: int | tuple[int, int] | None = None,
        scale: Sequence[float] | None = (0.75, 1.5),
        hflip: bool = True,
        vflip: bool = False,
        degrees: float = 10.0,
        translate: float = 0.0,
        shear: float = 0.0,
        color_jitter: Sequence[float] | None = (0.3, 0.3, 0.3, 0.0),
        ignore_index: int = 255,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.crop_size = None if crop_size is None else as_hw(crop_size)
        steps = []
        if scale is not None or degrees or translate or shear:
            steps.append(
                K.RandomAffine(
                    degrees=degrees,
                    translate=(translate, translate) if translate else None,
                    scale=None if scale is None else (scale[0], scale[1]),  # (low, high)
                    shear=shear or None,
                    p=1.0,
                )
            )
        if self.crop_size is not None:
            steps.append(K.RandomCrop(self.crop_size, pad_if_needed=True, fill=0.0))
        if hflip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if vflip:
            steps.append(K.RandomVerticalFlip(p=0.5))
        if color_jitter is not None and any(color_jitter):
            brightness, contrast, saturation, hue = color_jitter
            steps.append(K.ColorJitter(brightness, contrast, saturation, hue, p=1.0))
        self.pipeline = K.AugmentationSequential(*steps, data_keys=["input", "mask"]) if steps else None
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the private random stream at `seed`."""
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or masks.ndim != 3 or images.shape[:1] + images.shape[-2:] != masks.shape:
            raise ConfigError(
                f"augmentation expects images (N, 3, H, W) and masks (N, H, W) of one size, got {tuple(images.shape)} "
                f"and {tuple(masks.shape)}"
            )
        if self.pipeline is None:
            return images, masks
        # Shifting classes up by one makes the zeros that kornia pads with mean "outside the image" (-> ignore).
        shifted = (masks.to(images.dtype) + 1.0).unsqueeze(1)
        if self.generator is None:
            out_images, out_masks = self.pipeline(images, shifted)
        else:
            devices = [images.device] if images.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
                out_images, out_masks = self.pipeline(images, shifted)
        out_masks = out_masks.squeeze(1).round().long()
        out_masks = torch.where(out_masks == 0, torch.full_like(out_masks, self.ignore_index), out_masks - 1)
        return out_images.clamp_(0.0, 1.0), out_masks


