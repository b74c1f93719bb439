"""Prediction: the one place that says how a trained model sees an image (`predict_logits`), and `Predictor`.

Training's validation and test steps, `seglab evaluate`, `seglab predict` and the demo all go through
`predict_logits`, so a model is always scored and used exactly as it was selected. Nothing here imports
Lightning, torchmetrics or kornia.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seglab.errors import ConfigError
from seglab.inference.device import (
    autocast_dtype,
    batch_norm_folding_is_faster,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from seglab.inference.fold import fold_batch_norms
from seglab.inference.options import TTA_MODES
from seglab.inference.spec import InferenceSpec
from seglab.models.normalization import normalize


def class_map(scores: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Each pixel's class, the index of its largest score along `dim`: `max(dim).indices`, which picks the first
    of equal maxima as argmax does and ran in 0.44x argmax's time on a CPU (21 x 768 x 1024 float32, 63 against
    143 ms on one AMD EPYC core, torch 2.13)."""
    return scores.max(dim=dim).indices


def calls_for_folder(images: int) -> int:
    """Engine calls to keep in flight on a CPU over a folder of `images`: one per core, each on one thread, when
    there are at least two images per core; otherwise one call on every core, so that no core idles at the end.
    One image's operators leave the cores waiting for each other: over 300 LabelMeFacade photographs on 2 cores,
    one image per core ran 1.11x (bf16, PyTorch) and 1.02x (INT8, ONNX Runtime) one image at a time on both
    (benchmarks/results/predict_folder.md)."""
    cores = torch.get_num_threads()
    return cores if images >= 2 * cores else 1


def threads_per_call(concurrent_calls: int) -> int:
    """Each of `concurrent_calls` calls' share of torch's threads (the cores), one at least."""
    return max(1, torch.get_num_threads() // max(1, concurrent_calls))


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images `(N, 3, H, W)` to `size`: area averaging when shrinking (as training's progressive resize
    shrinks batches), antialiased bilinear otherwise."""
    height, width = images.shape[-2:]
    if (height, width) == tuple(size):
        return images
    if size[0] <= height and size[1] <= width:
        return F.interpolate(images, size=size, mode="area")
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def prepare_inputs(images: torch.Tensor, spec: InferenceSpec, *, channels_last: bool | None = None) -> torch.Tensor:
    """Images in [0, 1] at the model's working size, normalised and in the model's memory format (default: the
    spec's, training's): what the model saw in training (the training step calls this on its batches too)."""
    images = normalize(images, spec.mean, spec.std)
    if spec.channels_last if channels_last is None else channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def inference_model(model: torch.nn.Module, *, channels_last: bool, device: torch.device) -> torch.nn.Module:
    """A copy of `model` set up to predict on `device`: in eval mode, with its BatchNorms folded into the
    convolutions before them where that is faster (`fold_batch_norms`, `batch_norm_folding_is_faster`), in NHWC
    memory if `channels_last`. Training's validation and `Predictor` both predict with it, so a checkpoint is
    selected with the arithmetic it is used with."""
    model = copy.deepcopy(model).eval()
    if batch_norm_folding_is_faster(device):
        model = fold_batch_norms(model)
    # Module.to takes memory_format as a keyword (documented), but torch's overloads leave it out.
    return model.to(memory_format=torch.channels_last) if channels_last else model  # pyright: ignore[reportCallIssue]


def predict_logits(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, spec: InferenceSpec, *,
                   scale: float = 1.0, tile: int | None = None, overlap: float = 0.25, tile_batch: int = 4,
                   channels_last: bool | None = None) -> torch.Tensor:
    """Logits `(N, C, H, W)` for images `(N, 3, H, W)` in [0, 1]: resized to the working size (times a
    test-time `scale`), normalised, through the model (in sliding `tile`-pixel windows at the working size
    if given), and resized back to `(H, W)`. `channels_last`: the model's memory format (default the spec's)."""
    size = tuple(images.shape[-2:])
    working = spec.working_hw(*size, scale=scale)
    resized = resize_images(images, working)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return model(prepare_inputs(batch, spec, channels_last=channels_last))

    if tile is None:
        logits = forward(resized)
    else:
        # Windows are normalised one batch at a time: a normalised copy of a large image would double its memory.
        logits = tiled_logits(forward, resized, tile=tile, overlap=overlap, tile_batch=tile_batch)
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Window starts covering `length` with windows of `tile` overlapping by `overlap`; the last window ends
    at the border instead of hanging over it."""
    if tile >= length:
        return [0]
    stride = max(1, math.floor(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_weights(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """`(height, width)` window weights falling off towards the border (a squared sine per axis), never zero:
    a pixel near one window's edge takes its value mostly from a window that sees it in the middle."""

    def ramp(n: int) -> torch.Tensor:
        return torch.sin(math.pi * (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n) ** 2

    return ramp(height)[:, None] * ramp(width)[None, :]


def check_tiling(tile: int, overlap: float) -> None:
    """Refuses windows too small to predict on and overlaps outside [0, 1)."""
    if tile < 8:
        raise ConfigError(f"tile must be at least 8 pixels, got {tile}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"tile overlap must be in [0, 1), got {overlap}")


def tiled_bands(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *, tile: int,
                overlap: float = 0.25, tile_batch: int = 4) -> Iterator[tuple[int, int, torch.Tensor]]:
    """`model`'s logits over one `image (3, H, W)` from overlapping `tile` windows blended with `blend_weights`,
    as `(top, bottom, logits (C, bottom - top, W))` bands from the top row down. A row of windows is predicted,
    then the rows no later window touches are divided by their total weight and handed out: only a band of one
    window's height times the image's width lives at once, never the whole image's logits."""
    check_tiling(tile, overlap)
    _, height, width = image.shape
    tile_h, tile_w = min(tile, height), min(tile, width)
    tops, lefts = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    weights = blend_weights(tile_h, tile_w, image.device)
    band: torch.Tensor | None = None  # blended logits of rows top .. top + tile_h
    band_weight = torch.zeros(tile_h, width, device=image.device)
    for number, top in enumerate(tops):
        for left in lefts:
            band_weight[:, left:left + tile_w] += weights
        for first in range(0, len(lefts), tile_batch):
            chunk = lefts[first:first + tile_batch]
            logits = model(torch.stack([image[:, top:top + tile_h, left:left + tile_w] for left in chunk])).float()
            if band is None:
                band = torch.zeros(logits.shape[1], tile_h, width, device=image.device)
            for left, window_logits in zip(chunk, logits, strict=True):
                band[:, :, left:left + tile_w].addcmul_(window_logits, weights)
        assert band is not None
        # Rows above the next row of windows are final; the rest carry over, shifted to the band's top.
        done = (tops[number + 1] if number + 1 < len(tops) else height) - top
        yield top, top + done, band[:, :done] / band_weight[:done]
        # In place: a rolled copy would hold a second band.
        for buffer, rows in ((band, band[:, done:].clone()), (band_weight, band_weight[done:].clone())):
            buffer.zero_()
            buffer[..., :tile_h - done, :] = rows


def tiled_logits(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, *, tile: int,
                 overlap: float = 0.25, tile_batch: int = 4) -> torch.Tensor:
    """`model`'s logits over `inputs (N, 3, H, W)`, the `tiled_bands` of each image put together (evaluation
    scores whole logits; `seglab predict` writes the bands as they come)."""
    check_tiling(tile, overlap)
    output: torch.Tensor | None = None
    for index, image in enumerate(inputs):
        for top, bottom, logits in tiled_bands(model, image, tile=tile, overlap=overlap, tile_batch=tile_batch):
            if output is None:
                output = torch.zeros(len(inputs), logits.shape[0], *inputs.shape[-2:], device=inputs.device)
            output[index, :, top:bottom] = logits
    assert output is not None
    return output


ImageInput = Any  # a path, PIL image, uint8 array, float tensor, or a list of these
# One image, one result; a list (or tuple) of them, a list of results. A tensor is either: (3, H, W) or (N, 3, H, W).
OneImage = str | Path | Image.Image | np.ndarray
ManyImages = list[Any] | tuple[Any, ...]


def image_tensor(item: Any) -> torch.Tensor:
    """One input as a float32 `(3, H, W)` tensor in [0, 1] (paths read as the datasets read them)."""
    from seglab.data.files import load_rgb, rgb_array

    if isinstance(item, (str, Path)):
        array = load_rgb(item)
    elif isinstance(item, Image.Image):
        array = rgb_array(item)
    elif isinstance(item, np.ndarray):
        array = item
        if array.dtype != np.uint8:
            raise ConfigError(f"image arrays must be uint8 (H, W, 3); got dtype {array.dtype}. Pass floats in "
                              "[0, 1] as a torch tensor (3, H, W)")
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        elif array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, :3]
        if array.ndim != 3 or array.shape[2] != 3:
            raise ConfigError(f"image arrays must be (H, W, 3) uint8 RGB; got shape {array.shape}")
    elif isinstance(item, torch.Tensor):
        if not item.is_floating_point() or item.ndim != 3 or item.shape[0] != 3:
            raise ConfigError(f"image tensors must be float (3, H, W) or (N, 3, H, W) in [0, 1]; got "
                              f"{item.dtype} {tuple(item.shape)}")
        if item.numel() and (item.min() < 0 or item.max() > 1):
            raise ConfigError("image tensors must hold values in [0, 1] (not normalised); got "
                              f"[{float(item.min()):.3g}, {float(item.max()):.3g}]")
        return item.float()
    else:
        raise ConfigError(f"cannot predict on a {type(item).__name__}; give a path, a PIL image, an (H, W, 3) uint8 "
                          "array or a float tensor in [0, 1]")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255)


def _as_list(x: ImageInput) -> tuple[list[Any], bool]:
    """The inputs as a flat list, and whether the caller gave one image (so one result comes back)."""
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return list(x), False
    if isinstance(x, (list, tuple)):
        items: list[Any] = []
        for item in x:
            items.extend(list(item) if isinstance(item, torch.Tensor) and item.ndim == 4 else [item])
        return items, False
    return [x], True


T = TypeVar("T")


def same_size_batches(items: Iterable[T], batch_size: int, image: Callable[[T], torch.Tensor]) -> Iterator[list[T]]:
    """Consecutive `items` whose `image(item)` has one size, at most `batch_size` at a time; `items` are read
    as they come, so a dataset or a folder is never held in memory whole."""
    batch: list[T] = []
    for item in items:
        if batch and (len(batch) == batch_size or image(item).shape != image(batch[0]).shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def stack(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """`(N, 3, H, W)` from same-size images, without a copy for a single one (a large image stays single)."""
    return images[0][None] if len(images) == 1 else torch.stack(list(images))


class Predictor:
    """A trained model ready to predict: `predict(x)` class maps, `predict_proba(x)` class probabilities.

    `x` is a path, a PIL image, an (H, W, 3) uint8 array, a float tensor (3, H, W) or (N, 3, H, W) in [0, 1]
    (not normalised), or a list of these; each result has the input's own size. Options, per call:
    `tile`/`overlap` (sliding windows at the working size, for large images), `tta="flip"` (average with the
    horizontally flipped image) and `scales` (e.g. (0.75, 1, 1.25) times the working size); test-time
    augmentation averages softmax probabilities.
    """

    engine = "pytorch"

    def __init__(self, model: torch.nn.Module, spec: InferenceSpec, *, device: str | torch.device | None = None,
                 precision: str = "fp32", batch_size: int = 8, tile_batch: int | None = None,
                 channels_last: bool | str = "auto", compile: bool = False, concurrent_calls: int = 1) -> None:
        self.spec = spec
        self.device = resolve_device(device)
        # How many `scores` calls run at once, the CPU's cores shared among them (`predict_files` keeps that many
        # in flight, each thread on its share): `calls_for_folder`.
        self.concurrent_calls = int(concurrent_calls)
        if self.concurrent_calls < 1 or (self.concurrent_calls > 1 and (self.device.type != "cpu" or compile)):
            raise ConfigError(f"concurrent_calls={concurrent_calls}: calls share a CPU's cores (1 or more, on the "
                              f"CPU, without compile); this predictor runs on {self.device}"
                              f"{' compiled' if compile else ''}: use 1")
        self.precision = resolve_precision(precision, self.device)
        # The memory format is a speed choice for this device and precision, not the one training used.
        self.channels_last = resolve_channels_last(channels_last, self.device, self.precision)
        self.compiled = bool(compile)
        self.batch_size = int(batch_size)
        # Windows per forward pass. On a CPU one at a time is both the fastest and the smallest: X65 on a
        # 4000x3000 image in 512 px windows took 49 s and 1.9 GB peak RSS with 1, 74 s and 2.55 GB with 4
        # (benchmarks/results/inference.md).
        self.tile_batch = int(tile_batch) if tile_batch else (1 if self.device.type == "cpu" else self.batch_size)
        self.model = self.network(model)

    def network(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` as this engine runs it: a copy prepared by `inference_model` on the predictor's device, and
        compiled when asked. Other engines override this."""
        model = inference_model(model, channels_last=self.channels_last, device=self.device).to(self.device)
        if not self.compiled:
            return model
        # Inductor with frozen weights (constant-folded, prepacked for oneDNN). It compiles on the first batch
        # of each new input shape, a smaller last batch included (about 20 s for X65 at 224 px on 2 CPU
        # cores); then X65 ran as fast as the eager folded model at batch 8 and slower at batch 1
        # (benchmarks/results/speed.md). Hence off by default. Static shapes: one graph per input size.
        compiled = torch.compile(model, dynamic=False, options={"freezing": True})
        # An OptimizedModule (compilation waits for the first call); torch's stubs type the result as any callable.
        assert isinstance(compiled, torch.nn.Module)
        return compiled

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.spec.palette

    def __repr__(self) -> str:
        return (f"Predictor(model={self.spec.model!r}, classes={self.spec.num_classes}, engine={self.engine}, "
                f"device={self.device}, precision={self.precision}, "
                f"memory={'channels_last' if self.channels_last else 'contiguous'}"
                f"{', compiled' if self.compiled else ''}"
                f"{f', {self.concurrent_calls} concurrent calls' if self.concurrent_calls > 1 else ''})")

    def images_per_batch(self, tile: int | None, batch_size: int | None = None) -> int:
        """Whole images are batched with their same-size neighbours (`batch_size`, default the predictor's); with
        `tile`, the windows of one image are."""
        return 1 if tile else batch_size or self.batch_size

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def scores(self, images: torch.Tensor, *, tile: int | None = None, overlap: float = 0.25,
               tta: str | None = None, scales: Sequence[float] | None = None) -> tuple[torch.Tensor, bool]:
        """For a batch `(N, 3, H, W)` in [0, 1]: logits (False) or, with test-time augmentation, averaged
        probabilities (True), on the CPU in float32. Their argmax is the prediction either way."""
        if tta is not None and tta not in TTA_MODES:
            raise ConfigError(f"unknown tta {tta!r}; choose flip or leave it out")
        scales = tuple(scales) if scales else (1.0,)
        if any(s <= 0 for s in scales):
            raise ConfigError(f"scales must be positive, got {scales}")
        passes = [(scale, flip) for scale in scales for flip in ((False, True) if tta == "flip" else (False,))]
        images = images.to(self.device)
        total: torch.Tensor | None = None
        with torch.inference_mode(), self._autocast():
            for scale, flip in passes:
                batch = images.flip(-1) if flip else images
                logits = predict_logits(self.model, batch, self.spec, scale=scale, tile=tile, overlap=overlap,
                                        tile_batch=self.tile_batch, channels_last=self.channels_last).float()
                if flip:
                    logits = logits.flip(-1)
                if len(passes) == 1:
                    return logits.cpu(), False
                probabilities = logits.softmax(dim=1)
                total = probabilities if total is None else total.add_(probabilities)
        assert total is not None  # more than one pass ran (one pass returned above)
        return (total / len(passes)).cpu(), True

    def streams(self, height: int, width: int, *, tile: int | None, tta: str | None = None,
                scales: Sequence[float] | None = None) -> bool:
        """Whether `logit_bands` can predict an image of this size with these options: tiled, one pass (no TTA,
        one scale of 1) and a working size that is the image's own, so that bands of the working size are
        bands of the output. Otherwise `scores` predicts the image whole."""
        return (tile is not None and tta is None and tuple(scales or (1.0,)) == (1.0,)
                and self.spec.working_hw(height, width) == (height, width))

    def logit_bands(self, image: torch.Tensor, *, tile: int, overlap: float = 0.25
                    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """For one image `(3, H, W)` in [0, 1] that `streams`: `(top, bottom, logits (C, bottom - top, W))` on the
        CPU in float32, from the top down (`tiled_bands`): memory grows with the tile, not the image."""
        image = image.to(self.device)

        def forward(batch: torch.Tensor) -> torch.Tensor:
            # The modes are entered per batch, not around the generator: its caller runs between the bands.
            with torch.inference_mode(), self._autocast():
                return self.model(prepare_inputs(batch, self.spec, channels_last=self.channels_last))

        for top, bottom, logits in tiled_bands(forward, image, tile=tile, overlap=overlap, tile_batch=self.tile_batch):
            yield top, bottom, logits.cpu()

    def _run(self, x: ImageInput, reduce: Callable[[torch.Tensor, bool], np.ndarray], options: dict) -> Any:
        items, single = _as_list(x)
        results: list[np.ndarray] = []
        images = (image_tensor(item) for item in items)
        for batch in same_size_batches(images, self.images_per_batch(options.get("tile")), lambda image: image):
            scores, are_probabilities = self.scores(stack(batch), **options)
            results.extend(reduce(item_scores, are_probabilities) for item_scores in scores)
        return results[0] if single else results

    @overload
    def predict(self, x: OneImage, *, tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                scales: Sequence[float] | None = None) -> np.ndarray: ...
    @overload
    def predict(self, x: ManyImages, *, tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                scales: Sequence[float] | None = None) -> list[np.ndarray]: ...
    @overload
    def predict(self, x: torch.Tensor, *, tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                scales: Sequence[float] | None = None) -> np.ndarray | list[np.ndarray]: ...

    def predict(self, x: ImageInput, *, tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                scales: Sequence[float] | None = None) -> np.ndarray | list[np.ndarray]:
        """Class index maps: an int64 (H, W) array per image (a list for a list or a 4-D tensor)."""
        return self._run(x, lambda scores, _: class_map(scores).numpy(),
                         {"tile": tile, "overlap": overlap, "tta": tta, "scales": scales})

    @overload
    def predict_proba(self, x: OneImage, *, tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                      scales: Sequence[float] | None = None) -> np.ndarray: ...
    @overload
    def predict_proba(self, x: ManyImages, *, tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                      scales: Sequence[float] | None = None) -> list[np.ndarray]: ...
    @overload
    def predict_proba(self, x: torch.Tensor, *, tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                      scales: Sequence[float] | None = None) -> np.ndarray | list[np.ndarray]: ...

    def predict_proba(self, x: ImageInput, *, tile: int | None = None, overlap: float = 0.25,
                      tta: str | None = None, scales: Sequence[float] | None = None) -> np.ndarray | list[np.ndarray]:
        """Class probabilities: a float32 (C, H, W) array per image, summing to 1 over C."""

        def probabilities(scores: torch.Tensor, are_probabilities: bool) -> np.ndarray:
            return (scores if are_probabilities else scores.softmax(dim=0)).numpy()

        return self._run(x, probabilities, {"tile": tile, "overlap": overlap, "tta": tta, "scales": scales})
