"""`InferenceSpec`: everything needed to turn an image into a class map with trained weights, as plain data.

Training writes it into every checkpoint (`checkpoint["inference_spec"]`), so a checkpoint alone says which
network to build, how to normalise and scale its inputs, and how to name and colour its classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from seglab.data.classes import RGB
from seglab.errors import WeightsError

SPEC_KEY = "inference_spec"
SPEC_VERSION = 1


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    """How a trained model sees an image and names what it predicts.

    Inputs in [0, 1] are resized to `working_size` (H, W) (fitted inside it when `keep_aspect`), or when that is
    None to a short side of `working_short_side`, or else scaled by `working_scale`; then normalised with
    `mean`/`std` and put in channels-last memory when `channels_last`. The logits are resized back to the
    input's size. This repeats the validation transform the weights were selected with.
    """

    model: str
    model_options: Mapping[str, Any]
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[RGB, ...]
    ignore_index: int = 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    working_size: tuple[int, int] | None = None
    keep_aspect: bool = False
    working_short_side: int | None = None
    working_scale: float = 1.0
    channels_last: bool = False

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes or len(self.palette) != self.num_classes:
            raise WeightsError(f"inference spec: {self.num_classes} classes but {len(self.class_names)} names and "
                               f"{len(self.palette)} palette colours")
        if (self.working_size is not None and min(self.working_size) < 1) or self.working_scale <= 0:
            raise WeightsError(f"inference spec: bad working size {self.working_size} / scale {self.working_scale}")

    def working_hw(self, height: int, width: int, scale: float = 1.0) -> tuple[int, int]:
        """The (H, W) the model sees for an input of `height` x `width` (times a test-time `scale`)."""
        if self.working_size is not None and not self.keep_aspect:
            base_h, base_w = self.working_size
        else:
            if self.working_size is not None:
                factor = min(self.working_size[0] / height, self.working_size[1] / width)
            elif self.working_short_side is not None:
                factor = self.working_short_side / min(height, width)
            else:
                factor = self.working_scale
            base_h, base_w = height * factor, width * factor
        return max(1, round(base_h * scale)), max(1, round(base_w * scale))

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers: loadable with `torch.load(weights_only=True)` and JSON-serialisable."""
        return {
            "version": SPEC_VERSION,
            "model": self.model,
            "model_options": {key: list(value) if isinstance(value, tuple) else value
                              for key, value in self.model_options.items()},
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "palette": [list(colour) for colour in self.palette],
            "ignore_index": self.ignore_index,
            "mean": list(self.mean),
            "std": list(self.std),
            "working_size": None if self.working_size is None else list(self.working_size),
            "keep_aspect": self.keep_aspect,
            "working_short_side": self.working_short_side,
            "working_scale": self.working_scale,
            "channels_last": self.channels_last,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InferenceSpec:
        values = dict(values)
        version = values.pop("version", SPEC_VERSION)
        if version > SPEC_VERSION:
            raise WeightsError(f"the checkpoint's inference spec is version {version}; this seglab reads up to "
                               f"{SPEC_VERSION}: upgrade seglab")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WeightsError(f"inference spec has unknown fields {unknown}")
        try:
            return cls(
                model=str(values["model"]),
                model_options={key: tuple(value) if isinstance(value, list) else value
                               for key, value in dict(values.get("model_options") or {}).items()},
                num_classes=int(values["num_classes"]),
                class_names=tuple(str(name) for name in values["class_names"]),
                palette=tuple(_rgb(colour) for colour in values["palette"]),
                ignore_index=int(values.get("ignore_index", 255)),
                mean=_triple(values.get("mean", (0.0, 0.0, 0.0))),
                std=_triple(values.get("std", (1.0, 1.0, 1.0))),
                working_size=None if values.get("working_size") is None else _pair(values["working_size"]),
                keep_aspect=bool(values.get("keep_aspect", False)),
                working_short_side=None if values.get("working_short_side") is None else int(
                    values["working_short_side"]),
                working_scale=float(values.get("working_scale", 1.0)),
                channels_last=bool(values.get("channels_last", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"inference spec is incomplete or malformed ({type(error).__name__}: {error})") from None


def working_geometry(image_hw: tuple[int, int] | None, *, keep_aspect: bool, inference_size: int | None,
                     last_training_side: int | None) -> dict[str, Any]:
    """How validation shows images to a model, as `InferenceSpec` fields: the dataset's `image_hw` (kept in
    aspect with `keep_aspect`), its short side brought to `inference_size` or, by default, to the last
    progressive-resize side (which only ever shrinks); with `image_hw` None, each image's own size, its short
    side brought to that side if there is one."""
    side = inference_size or last_training_side
    if image_hw is None:
        return {"working_size": None, "working_short_side": side, "keep_aspect": False}
    size = image_hw
    if side is not None:
        factor = side / min(size) if inference_size else min(1.0, side / min(size))
        size = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
    return {"working_size": size, "working_short_side": None, "keep_aspect": keep_aspect}


def _rgb(values: Sequence[Any]) -> RGB:
    red, green, blue = (int(value) for value in values)
    return red, green, blue


def _triple(values: Sequence[Any]) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in values)
    return first, second, third


def _pair(values: Sequence[Any]) -> tuple[int, int]:
    first, second = (int(value) for value in values)
    return first, second
