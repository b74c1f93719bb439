"""Training configuration: one frozen dataclass, loaded from a flat YAML file plus `key=value` overrides.

Every field below carries its help text as field metadata; `seglab train --help-config` prints them. Unknown keys and
bad values raise `ConfigError` at load time, naming the valid keys or values.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, Union

import yaml

# Field metadata: `seglab train --help-config` and each run's config.yaml show it (`field_comments`).
from seglab.data.classes import default_palette
from seglab.data.options import DATA_FIELDS, FOLDER_FIELDS, DataOptions, FolderOptions, doc
from seglab.errors import ConfigError
from seglab.inference.spec import InferenceSpec, working_geometry
from seglab.models.backbone import STRIDES_TEXT, check_output_stride
from seglab.models.normalization import NORMALIZATIONS, normalization_stats
from seglab.models.registry import backbone_weights, list_models, model_options, renamed_options
from seglab.training.losses import LOSSES

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "poly", "cosine", "onecycle", "plateau")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")




@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; the resolved copy is written to `runs/<name>/config.yaml`.

    The dataset's keys live in `data` (a `seglab.data.options.DataOptions`, whose `folder` holds the
    `FolderOptions`): one definition, with its checks, for the datasets, `seglab data check`, `seglab evaluate`
    and this config. Config files and checkpoints stay flat: `FIELDS` lists every key, `to_dict` and
    `make_config` translate.
    """

    # --- run ---
    name: str = field(default="run", metadata=doc("run folder name: outputs go to <runs_dir>/<name>/"))
    runs_dir: str = field(default="runs", metadata=doc("parent folder of all run folders"))
    seed: int = field(default=0, metadata=doc("seeds weights, data order, augmentation and procedural data"))
    # --- data ---
    data: DataOptions = field(default_factory=DataOptions, metadata=doc("the dataset (flat keys in files)"))
    normalize: str = field(
        default="auto",
        metadata=doc("auto (the pretrained weights' own, else unit), unit [0,1], symmetric [-1,1], imagenet"),
    )
    augment: bool = field(
        default=False,
        metadata=doc("random scale/rotation, flips, colour jitter on training batches (kornia, on the device)"),
    )
    scale: list | None = field(default_factory=lambda: [0.75, 1.5], metadata=doc("augment: zoom range (null: off)"))
    degrees: float = field(default=10.0, metadata=doc("augment: rotation range in degrees, +-"))
    hflip: bool = field(default=True, metadata=doc("augment: random horizontal flips"))
    vflip: bool = field(default=False, metadata=doc("augment: random vertical flips (aerial and microscopy images)"))
    color_jitter: list | None = field(
        default_factory=lambda: [0.3, 0.3, 0.3, 0.0], metadata=doc("augment: brightness, contrast, saturation, hue"))
    progressive_resize: list | None = field(default=None, metadata=doc("[[s, px]]: from share s on, short side px"))
    inference_size: int | None = field(
        default=None, metadata=doc("short side for val/test/predict; logits resized back (None: last training side)"))
    eval_tile: int | None = field(default=None, metadata=doc("validate/test in windows of this size (large images)"))
    batch_size: int = field(default=8, metadata=doc("images per step per device"))
    num_workers: int = field(default=0, metadata=doc("DataLoader worker processes (0 = load in the training process)"))
    # --- model ---
    model: str = field(default="deeplabv3plus_xception41", metadata=doc("a name from `seglab models`"))
    output_stride: int | None = field(default=None, metadata=doc(f"DeepLabV3+: {STRIDES_TEXT} (None = model default)"))
    atrous_rates: list | None = field(
        default=None, metadata=doc("DeepLabV3+: ASPP rates (None = derived from output_stride)"))
    start_with_relu: bool = field(
        default=False,
        metadata=doc("Xception: one ReLU before each separable conv, none inside (timm's "
                       "XceptionModule, DeepLab's released weights); formerly preactivation"),
    )
    zero_init_residual: bool = field(
        default=False, metadata=doc("Xception, ResNet: every residual block starts as its shortcut"))
    freeze_backbone: bool = field(
        default=False, metadata=doc("keep the backbone's weights fixed (fcn_vgg16 in seed 000)"))
    pretrained_backbone: str | None = field(
        default=None, metadata=doc("imagenet, or path/URL of weights in that layout (None = from scratch)"))
    init_from: str | None = field(
        default=None, metadata=doc("checkpoint/run folder whose weights start a new run (other shapes start fresh)"))
    channels_last: bool | str = field(
        default="auto", metadata=doc("NHWC memory format; auto: where it is faster (GPUs; bf16 on a CPU)"))
    # --- loss ---
    loss: str = field(default="ce", metadata=doc(
        "ce, dice, focal, ce_dice, ohem_ce (cross-entropy of the hardest pixels), lovasz (Lovasz-softmax, an IoU "
        "surrogate) or ce_lovasz"))
    class_weights: Any = field(
        default=None,
        metadata=doc('None, a list of per-class weights, or "auto" (median frequency from train masks)'),
    )
    focal_gamma: float = field(default=2.0, metadata=doc("focal: focusing exponent"))
    ohem_top_fraction: float = field(
        default=0.2, metadata=doc("ohem_ce: share of the batch's labelled pixels, those with the largest loss, "
                                  "that the loss averages (DeepLab's top_k_percent_pixels)"))
    lovasz_per_image: bool = field(
        default=False, metadata=doc("lovasz, ce_lovasz: average the loss of each image instead of one loss over "
                                    "the batch's pixels"))
    # --- optimiser and schedule ---
    optimizer: str = field(default="adamw", metadata=doc("adam, adamw or sgd (with momentum)"))
    lr: float = field(default=1e-3, metadata=doc("peak learning rate"))
    weight_decay: float = field(default=1e-4, metadata=doc("decoupled for adamw, L2 for adam/sgd"))
    momentum: float = field(default=0.9, metadata=doc("sgd momentum"))
    scheduler: str = field(
        default="cosine", metadata=doc("none, poly, cosine (with warmup), onecycle, plateau (reduce on val mIoU)"))
    warmup_fraction: float = field(
        default=0.0, metadata=doc("cosine: share of training spent ramping the LR up linearly from 0"))
    poly_power: float = field(default=0.9, metadata=doc("poly: LR = lr * (1 - progress) ** poly_power, as in DeepLab"))
    onecycle_pct_start: float = field(default=0.25, metadata=doc("onecycle: share of training spent ramping up"))
    min_lr_ratio: float = field(default=0.0, metadata=doc("cosine/poly: final LR as a share of lr"))
    plateau_factor: float = field(default=0.5, metadata=doc("plateau: LR multiplier when val mIoU stalls"))
    plateau_patience: int = field(default=2, metadata=doc("plateau: epochs without improvement before decaying"))
    ema_decay: float | None = field(
        default=None, metadata=doc("validate and checkpoint an exponential moving average of the weights with this "
                                   "decay per step (e.g. 0.999; null: off)"))
    # --- length and stopping ---
    max_epochs: int | None = field(default=30, metadata=doc("epochs to train (None = until max_steps or max_minutes)"))
    max_steps: int | None = field(default=None, metadata=doc("optimiser steps to train (None = no step limit)"))
    max_minutes: float | None = field(
        default=None, metadata=doc("wall-clock training budget; schedules follow time when no epoch/step limit"))
    early_stopping_patience: int | None = field(
        default=None, metadata=doc("stop after this many validations without val mIoU gain"))
    val_every_n_epochs: int = field(default=1, metadata=doc("validate (and checkpoint best.ckpt) every n epochs"))
    test_after_training: bool = field(
        default=True, metadata=doc("score best.ckpt on the test split at the end (test_metrics.json)"))
    # --- hardware ---
    accelerator: str = field(default="auto", metadata=doc("auto, cpu, gpu/cuda or mps"))
    devices: Any = field(default=1, metadata=doc('devices per node: an int, a list of GPU ids, or "auto"'))
    num_nodes: int = field(default=1, metadata=doc("machines taking part (set by torchrun/SLURM launches)"))
    strategy: str = field(default="auto", metadata=doc("auto, ddp or ddp_spawn (Lightning strategies)"))
    ddp_timeout_s: float = field(
        default=600.0,
        metadata=doc("ddp/ddp_spawn: seconds a collective waits for a silent process before the run stops naming "
                     "it (a lost node); long enough for rank 0 writing a large checkpoint to slow storage"))
    sync_batchnorm: bool | str = field(
        default="auto",
        metadata=doc("BatchNorm statistics over all processes' batches (Lightning's sync_batchnorm on GPUs; on "
                     "CPUs, where SyncBatchNorm has no kernels, an all-reduce of sums); auto: on with more than one "
                     "process and fewer than 8 images per process, where one process's batch statistics are too "
                     "noisy to train and evaluate BatchNorm on"))
    precision: str = field(
        default="auto", metadata=doc("32-true, bf16-mixed, 16-mixed or auto (bf16 where supported, else fp32)"))
    # --- limits for tests and smoke runs ---
    limit_train_batches: int | float | None = field(
        default=None, metadata=doc("training batches per epoch: an int is a number of batches (1: one batch), a "
                                   "float in [0, 1] a share of the epoch (0.5: half; 1.0: all); null: all"))
    limit_val_batches: int | float | None = field(
        default=None, metadata=doc("validation batches: an int is a number of batches (1: one batch), a float in "
                                   "[0, 1] a share of the split (1.0: all); null: all"))
    log_every_n_steps: int = field(default=10, metadata=doc("TensorBoard scalar logging interval"))
    progress_bar: bool = field(default=True, metadata=doc("show the progress bar (loss, images/s, ETA)"))
    logger: Any = field(default="tensorboard", metadata=doc("tensorboard, csv, mlflow, wandb, or a list of them"))


    def to_dict(self) -> dict[str, Any]:
        """Plain flat dict of primitives, keys in `FIELDS` order: what goes into YAML files and checkpoints."""
        values = {key: getattr(self, key) for key in OWN_FIELDS} | self.data.to_flat()
        return {key: _plain(values[key]) for key in FIELDS}

    def training_side(self, progress: float = 1.0) -> int | None:
        """The short side training batches are brought down to at `progress` in [0, 1] by `progressive_resize`
        (never enlarged; None: the batches keep their size); at the default 1.0, the last one."""
        if not self.progressive_resize:
            return None
        return [side for start, side in self.progressive_resize if progress >= start][-1]

    def inference_spec(self, *, num_classes: int, class_names: Sequence[str],
                       palette: Sequence[Sequence[int]] | None = None) -> InferenceSpec:
        """The spec of a model trained with this config: its working size is how validation showed images to the
        model (`working_geometry`), its normalisation the resolved `normalize`."""
        options = {key: value for key, value in self.model_options().items() if key != "pretrained_backbone"}
        mean, std = self.normalization()
        return InferenceSpec(
            model=self.model,
            model_options=options,
            num_classes=num_classes,
            class_names=tuple(class_names),
            palette=tuple(tuple(int(c) for c in colour) for colour in palette) if palette is not None
            else default_palette(num_classes),
            ignore_index=self.data.folder.ignore_index,
            mean=tuple(mean),
            std=tuple(std),
            **working_geometry(self.data.image_hw(), keep_aspect=self.data.keep_aspect,
                               inference_size=self.inference_size, last_training_side=self.training_side()),
            channels_last=self.channels_last is True,
        )

    def normalization(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(mean, std) per RGB channel that the model's inputs in [0, 1] are normalised with: those of `normalize`,
        where `auto` means the normalisation the pretrained backbone's weights were trained with, else unit."""
        return normalization_stats(self._normalization_mode())

    def _normalization_mode(self) -> str:
        if self.normalize != "auto":
            return self.normalize
        if self.init_from is not None:
            # Fine-tuning keeps the normalisation the weights were trained with.
            from seglab.training.finetune import init_normalization

            stats = init_normalization(self.init_from)
            for mode in NORMALIZATIONS:
                if normalization_stats(mode) == stats:
                    return mode
            raise ConfigError(f"init_from {self.init_from}: its normalisation {stats} is none of "
                              f"{', '.join(NORMALIZATIONS)}; set normalize explicitly")
        if self.pretrained_backbone is None:
            return "unit"
        return backbone_weights(self.model).normalization

    def model_options(self) -> dict[str, Any]:
        """Keyword options for `seglab.models.build_model`: the set ones this model takes and, with a
        `pretrained_backbone`, the layer settings its weights need (e.g. `norm_eps`)."""
        accepted = model_options(self.model)
        # The model fields of this config are those of its fields that some registered model takes; None leaves
        # the model's default.
        registered = {option for name in list_models() for option in model_options(name)}
        options: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value
                                   for name in FIELDS if name in registered
                                   and (value := getattr(self, name)) is not None}
        if self.pretrained_backbone is not None:
            options.update(backbone_weights(self.model).layer_options)
        unsupported = sorted(key for key, value in options.items() if key not in accepted and value)
        if unsupported:
            raise ConfigError(f"model {self.model!r} takes no option {', '.join(unsupported)}; "
                              f"its options: {', '.join(accepted)}")
        options = {key: value for key, value in options.items() if key in accepted}
        if self.pretrained_backbone is not None:
            options["pretrained_backbone"] = self.pretrained_backbone
        return options


def _plain(value: Any) -> Any:
    # Tuples (from a checkpoint's parsed sizes) back to YAML lists.
    return list(value) if isinstance(value, tuple) else value


def _fields_of(kind: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(kind)}


OWN_FIELDS = tuple(name for name in _fields_of(TrainConfig) if name != "data")
# Every flat config key in file order: the run's keys, the data keys where `data` stands (the folder keys where
# `folder` stands), then the rest. Each key's dataclass field (help text, default, type) and the class it is on.
_OWNERS: dict[str, type] = {}
for _name in _fields_of(TrainConfig):
    if _name != "data":
        _OWNERS[_name] = TrainConfig
        continue
    for _data_name in DATA_FIELDS:
        if _data_name == "folder":
            _OWNERS.update(dict.fromkeys(FOLDER_FIELDS, FolderOptions))
        else:
            _OWNERS[_data_name] = DataOptions
FIELDS: dict[str, dataclasses.Field] = {name: _fields_of(owner)[name] for name, owner in _OWNERS.items()}


def field_comments() -> dict[str, str]:
    """The help text documenting each field (its `help` metadata), by field name."""
    return {name: field.metadata["help"] for name, field in FIELDS.items()}


_CHOICES = {
    "normalize": ("auto", *NORMALIZATIONS),
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "precision": PRECISIONS,
    "strategy": STRATEGIES,
    "accelerator": ACCELERATORS,
}


def _check_type(name: str, value: Any) -> Any:
    annotation = typing.get_type_hints(_OWNERS[name])[name]
    if annotation is Any:
        return value
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else (
        annotation,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):
            # YAML 1.1 reads `3e-4` (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
        if kind is bool and isinstance(value, bool):
            return value
        if kind in (int, float, str, list, dict) and isinstance(value, kind) and not (
                kind is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in allowed)
    raise ConfigError(f"config key {name!r} must be {names}, got {value!r}")


def check_run_name(name: str) -> None:
    """A run name is one plain folder name: a path (`../x`, `/`) or `.`/`..` would put the run folder, and the
    overwrite that deletes it, outside `runs_dir`."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name or name != name.strip():
        raise ConfigError(f"config key 'name' must be a plain folder name (no '/', '\\', '.' or '..', no surrounding "
                          f"spaces), got {name!r}; the run is written to <runs_dir>/<name>/")


def _validate(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = [key for key in values if key not in FIELDS]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown config key(s) {', '.join(hints)}; valid keys: {', '.join(FIELDS)}")
    for name, choices in _CHOICES.items():
        if name in values and values[name] not in choices:
            raise ConfigError(f"config key {name!r} is {values[name]!r}; valid values: {', '.join(choices)}")
    checked = {name: _check_type(name, value) for name, value in values.items()}
    if "name" in checked:
        check_run_name(checked["name"])
    for name in ("channels_last", "sync_batchnorm"):
        if isinstance(checked.get(name), str) and checked[name] != "auto":
            raise ConfigError(f"config key {name!r} must be true, false or auto, got {checked[name]!r}")
    for name, length in (("scale", 2), ("color_jitter", 4)):
        value = checked.get(name)
        if value is not None and not (isinstance(value, list) and len(value) == length
                                      and all(isinstance(v, (int, float)) and v >= 0 for v in value)):
            raise ConfigError(f"config key {name!r} must be null or a list of {length} non-negative numbers, "
                              f"got {value!r}")
    positive = ("batch_size", "inference_size", "eval_tile", "lr", "max_epochs", "max_steps", "max_minutes",
                "num_nodes", "ddp_timeout_s", "val_every_n_epochs", "log_every_n_steps", "early_stopping_patience",
                "plateau_patience")
    for name in positive:
        value = checked.get(name)
        if value is not None and value <= 0:
            raise ConfigError(f"config key {name!r} must be positive, got {value!r}")
    for name in ("warmup_fraction", "min_lr_ratio", "onecycle_pct_start", "plateau_factor"):
        value = checked.get(name)
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"config key {name!r} must be in [0, 1), got {value!r}")
    for name in ("limit_train_batches", "limit_val_batches"):
        value = checked.get(name)
        # Lightning reads an int as a number of batches and a float as a share, so 1.0 is every batch.
        if value is not None and (value < 0 or (isinstance(value, float) and value > 1)):
            raise ConfigError(f"config key {name!r} must be null, a number of batches (an int >= 0) or a share of "
                              f"the epoch (a float in [0, 1]), got {value!r}")
    if checked.get("ema_decay") is not None and not 0 < checked["ema_decay"] < 1:
        raise ConfigError(f"config key 'ema_decay' must be null or in (0, 1), got {checked['ema_decay']!r}")
    top = checked.get("ohem_top_fraction")
    if top is not None and not 0 < top <= 1:
        raise ConfigError(f"config key 'ohem_top_fraction' must be in (0, 1], got {top!r}")
    if checked.get("output_stride") is not None:
        check_output_stride(checked["output_stride"])
    schedule = checked.get("progressive_resize")
    if schedule is not None and not (schedule and all(
            isinstance(step, list) and len(step) == 2 and isinstance(step[0], (int, float)) and 0 <= step[0] < 1
            and isinstance(step[1], int) and step[1] > 0 for step in schedule) and schedule[0][0] == 0
            and all(a[0] < b[0] for a, b in itertools.pairwise(schedule))):
        raise ConfigError("config key 'progressive_resize' must be a list of [progress, side] pairs starting at "
                          f"progress 0 in increasing progress, e.g. [[0, 64], [0.6, 128]]; got {schedule!r}")
    weights = checked.get("class_weights")
    if weights is not None and weights != "auto" and not (
            isinstance(weights, list) and all(isinstance(w, (int, float)) and w >= 0 for w in weights)):
        raise ConfigError(f"config key 'class_weights' must be null, 'auto' or a list of non-negative numbers, "
                          f"got {weights!r}")
    trackers, known = checked.get("logger", "tensorboard"), ("tensorboard", "csv", "mlflow", "wandb")
    names = [trackers] if isinstance(trackers, str) else trackers
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n in known for n in names)
            and len(set(names)) == len(names)):
        raise ConfigError(f"config key 'logger' must be one of {', '.join(known)} or a non-empty list of them "
                          f"without repeats, got {trackers!r}")
    return checked


def make_config(values: Mapping[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """A validated `TrainConfig` from a mapping plus keyword overrides, `normalize: auto` resolved to a mode."""
    # Keys of model options renamed since (e.g. preactivation) still load, from files and old checkpoints.
    checked = _validate(renamed_options({**(values or {}), **overrides}))
    by_owner: dict[type, dict[str, Any]] = {TrainConfig: {}, DataOptions: {}, FolderOptions: {}}
    for key, value in checked.items():
        by_owner[_OWNERS[key]][key] = value
    data = DataOptions(**by_owner[DataOptions], folder=FolderOptions(**by_owner[FolderOptions]))
    config = TrainConfig(**by_owner[TrainConfig], data=data)
    # `auto` is resolved here, while the weights are known: checkpoints rebuild the model without them.
    config = dataclasses.replace(config, normalize=config._normalization_mode())
    if config.max_epochs is None and config.max_steps is None and config.max_minutes is None:
        raise ConfigError("training never ends: set at least one of max_epochs, max_steps or max_minutes")
    data.check()  # the data options' own rules, the folder options' included
    if data.dataset == "folder" and not (data.images_dir and data.masks_dir) and not data.data_root:
        raise ConfigError("dataset 'folder' needs data_root (a dataset tree with split folders) or images_dir and "
                          "masks_dir")
    for split in ("", "val_", "test_"):
        if (getattr(data, f"{split}images_dir") is None) != (getattr(data, f"{split}masks_dir") is None):
            raise ConfigError(f"give both {split}images_dir and {split}masks_dir, or neither")
    if data.image_size is None and data.crop_size is None and config.batch_size > 1:
        raise ConfigError("image_size: null keeps each file's own size, so training batches need crop_size (e.g. "
                          "[256, 256]) to have one size, or batch_size: 1")
    if data.dataset == "pets" and not data.data_root:
        raise ConfigError("dataset 'pets' needs data_root (the Oxford-IIIT Pet folder)")
    return config


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`key=value` strings to a dict, each value parsed as YAML (so `lr=3e-4`, `augment=true`, `devices=[0,1]`)."""
    result = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            result[key.strip()] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {key}: cannot parse value {text!r}: {error}") from None
    return result


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """The config in the flat YAML file `path` (optional) with `key=value` overrides applied."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a flat mapping of key: value")
        mappings = ("value_map", "palette", "split_lists")  # the keys whose values are mappings
        if any(isinstance(value, dict) for key, value in (loaded or {}).items() if key not in mappings):
            raise ConfigError(f"config file {path} must be flat: nested sections are not supported")
        values.update(loaded or {})
    values.update(parse_overrides(overrides))
    try:
        return make_config(values)
    except ConfigError as error:
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(f"{error}{where}") from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write `config` as flat YAML with each field's comment above it."""
    comments = field_comments()
    lines = []
    values = config.to_dict()
    for name, value in ((name, values[name]) for name in FIELDS):
        lines.append(f"# {comments[name]}")
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{name}: {text}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
