"""SegmentationAugmentation (joint geometry, nearest masks, ignore padding, determinism), normalize, resize_pair.

Also `seglab.models.normalization`, the kornia-free statistics the weights were trained with.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from seglab.data.transforms import SegmentationAugmentation, resize_pair
from seglab.errors import ConfigError
from seglab.models import normalization


def _batch(n: int = 4, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    # Blocky masks with classes 0..3 (and a few ignore pixels); image channel 0 encodes the class, so a
    # geometry that differed between image and mask would show.
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 4, (n, size // 8, size // 8), generator=generator)
    masks = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    masks[:, :2, :2] = 255
    images = torch.rand(n, 3, size, size, generator=generator)
    images[:, 0] = torch.where(masks == 255, torch.zeros_like(images[:, 0]), masks.float() / 4.0 + 0.1)
    return images, masks


def test_shapes_dtypes_and_mask_values_are_preserved():
    images, masks = _batch()
    out_images, out_masks = SegmentationAugmentation(seed=0, degrees=30)(images, masks)
    assert out_images.shape == images.shape and out_images.dtype == torch.float32
    assert out_masks.shape == masks.shape and out_masks.dtype == torch.int64
    assert set(out_masks.unique().tolist()) <= {0, 1, 2, 3, 255}  # nearest: no blended labels
    assert float(out_images.min()) >= 0.0 and float(out_images.max()) <= 1.0


def test_geometry_is_shared_by_image_and_mask():
    images, masks = _batch()
    aug = SegmentationAugmentation(scale=(0.7, 1.4), degrees=25, translate=0.1, color_jitter=None, seed=1)
    out_images, out_masks = aug(images, masks)
    # Away from label edges (where bilinear image and nearest mask legitimately differ) the image must
    # carry the class the mask says; a different geometry agrees on about a third of the pixels.
    m = out_masks.float().unsqueeze(1)
    flat = (F.max_pool2d(m, 3, 1, 1) == m) & (-F.max_pool2d(-m, 3, 1, 1) == m)
    interior = flat[:, 0] & (out_masks != 255)
    agree = (out_images[:, 0] - (out_masks.float() / 4.0 + 0.1)).abs() < 0.05
    assert interior.float().mean() > 0.2 and agree[interior].float().mean() > 0.98
    assert not torch.equal(out_masks, masks)


def test_zoom_out_and_crop_padding_become_ignore():
    images, masks = _batch(2, 48)
    masks[masks == 255] = 0
    zoom_out = SegmentationAugmentation(scale=(0.5, 0.5), degrees=0, hflip=False, color_jitter=None, seed=0)
    _, out = zoom_out(images, masks)
    assert (out[:, 0, 0] == 255).all() and (out[:, -1, -1] == 255).all()  # corners come from outside
    assert (out[:, 24, 24] != 255).all()  # the centre is the shrunken image
    assert 0.6 < float((out == 255).float().mean()) < 0.9  # about 3/4 of the area at scale 0.5
    crop = SegmentationAugmentation(crop_size=(64, 80), scale=None, degrees=0, hflip=False, color_jitter=None)
    crop_images, crop_masks = crop(images, masks)
    assert crop_images.shape == (2, 3, 64, 80) and crop_masks.shape == (2, 64, 80)
    assert int((crop_masks != 255).sum()) == 2 * 48 * 48  # all original pixels kept, the rest is ignore


def test_colour_jitter_changes_images_only():
    images, masks = _batch()
    aug = SegmentationAugmentation(scale=None, degrees=0, hflip=False, color_jitter=(0.5, 0.5, 0.5, 0.05), seed=0)
    out_images, out_masks = aug(images, masks)
    assert torch.equal(out_masks, masks)
    assert (out_images - images).abs().mean() > 0.01


def test_seeded_module_is_deterministic_and_leaves_global_rng_alone():
    images, masks = _batch()
    state = torch.get_rng_state()
    first = SegmentationAugmentation(seed=7, degrees=20)
    second = SegmentationAugmentation(seed=7, degrees=20)
    a1, b1 = first(images, masks), second(images, masks)
    assert torch.equal(a1[0], b1[0]) and torch.equal(a1[1], b1[1])
    assert torch.equal(torch.get_rng_state(), state)
    a2 = first(images, masks)  # the next call draws new parameters
    assert not torch.equal(a1[1], a2[1])
    first.reseed(7)
    assert torch.equal(first(images, masks)[1], a1[1])
    other = SegmentationAugmentation(seed=8, degrees=20)(images, masks)
    assert not torch.equal(other[1], a1[1])


def test_unseeded_module_follows_torch_manual_seed():
    images, masks = _batch()
    aug = SegmentationAugmentation(degrees=20)
    torch.manual_seed(123)
    first = aug(images, masks)
    torch.manual_seed(123)
    second = aug(images, masks)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_bad_batch_shapes_are_reported():
    images, masks = _batch()
    with pytest.raises(ConfigError, match="expects images"):
        SegmentationAugmentation()(images[0], masks[0])


def test_normalization_stats_of_each_mode():
    assert normalization.normalization_stats("unit") == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert normalization.normalization_stats("symmetric") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert normalization.normalization_stats("imagenet") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert set(normalization.NORMALIZATIONS) == {"unit", "symmetric", "imagenet"}
    with pytest.raises(ConfigError, match="unknown normalisation 'auto'; choose one of unit, symmetric, imagenet"):
        normalization.normalization_stats("auto")


@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 3, 5, 4)])
def test_normalize_with_mean_and_std(shape):
    images = torch.rand(shape)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = normalization.normalize(images, mean, std)
    channels = images.unsqueeze(0) if images.ndim == 3 else images
    expected = torch.stack([(channels[:, c] - mean[c]) / std[c] for c in range(3)], dim=1).reshape(shape)
    assert torch.allclose(out, expected)
    assert normalization.normalize(images, (0, 0, 0), (1, 1, 1)) is images
    symmetric = normalization.normalize(images, *normalization.normalization_stats("symmetric"))
    assert torch.allclose(symmetric, images * 2 - 1)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        normalization.normalize(torch.rand(1, 5, 4), mean, std)


def test_normalization_module_imports_no_kornia():
    code = "import sys, seglab.models.normalization; assert 'kornia' not in sys.modules, 'kornia imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_resize_pair_fixed_size_and_keep_aspect():
    image = torch.rand(3, 40, 80)
    mask = torch.zeros(40, 80, dtype=torch.int64)
    mask[:, 40:] = 2
    stretched_image, stretched = resize_pair(image, mask, 32)
    assert stretched_image.shape == (3, 32, 32) and stretched.shape == (32, 32)
    assert set(stretched.unique().tolist()) == {0, 2} and (stretched[:, :16] == 0).all()
    boxed_image, boxed = resize_pair(image, mask, (32, 32), keep_aspect=True, ignore_index=255)
    assert boxed.shape == (32, 32) and (boxed[16:] == 255).all() and (boxed[:16] != 255).all()
    assert (boxed_image[:, 16:] == 0).all()


def test_runs_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    images, masks = _batch()
    out_images, out_masks = SegmentationAugmentation(seed=0, crop_size=40)(images.cuda(), masks.cuda())
    assert out_images.is_cuda and out_masks.is_cuda and out_masks.dtype == torch.int64
    assert out_masks.shape == (4, 40, 40) and set(out_masks.unique().tolist()) <= {0, 1, 2, 3, 255}
