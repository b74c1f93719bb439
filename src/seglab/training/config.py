"""Training configuration: one frozen dataclass, loaded from a flat YAML file plus `key=value` overrides.

Each key is defined once, by `seglab.keys.option(...)` on its field (the data keys on `DataOptions`' and
`FolderOptions`' fields): help text, accepted values (choices, bounds, list length, a check of its own) and
whether it may change on `--resume`. Every reader derives from that definition:
validation (`make_config`), `seglab train --help-config` (`help_config_text`), the comments of each run's
config.yaml (`save_config`), resume (`check_resume_overrides`) and the docs' reference (`reference_rows`,
`config_reference_markdown`). Unknown keys and bad values raise `ConfigError` at load time, naming the valid keys
or values. Parsing reads no file but the config itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from seglab.data.classes import default_palette
from seglab.data.options import DataOptions
from seglab.errors import ConfigError
from seglab.inference.spec import InferenceSpec, working_geometry
from seglab.keys import ConfigKey, Resume, check_value, flat_values, from_checked, option, option_keys
from seglab.models.backbone import OUTPUT_STRIDES
from seglab.models.normalization import NORMALIZATIONS, normalization_stats
from seglab.models.registry import backbone_weights, list_models, model_options, renamed_options
from seglab.training.losses import LOSSES

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "poly", "cosine", "onecycle", "plateau")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
LOGGERS = ("tensorboard", "csv", "mlflow", "wandb")

def check_run_name(name: str) -> str | None:
    """A run name is one plain folder name: a path (`../x`, `/`) or `.`/`..` would put the run folder, and the
    overwrite that deletes it, outside `runs_dir`. Returns the problem, or None."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name or name != name.strip():
        return ("a plain folder name (no '/', '\\', '.' or '..', no surrounding spaces); the run is written to "
                "<runs_dir>/<name>/")
    return None


def _check_progressive_resize(schedule: list[list[float]]) -> str | None:
    if schedule and all(len(step) == 2 and 0 <= step[0] < 1 and isinstance(step[1], int) and step[1] > 0
                        for step in schedule) and schedule[0][0] == 0 and all(
            a[0] < b[0] for a, b in itertools.pairwise(schedule)):
        return None
    return ("a list of [progress, side] pairs starting at progress 0 in increasing progress, e.g. "
            "[[0, 64], [0.6, 128]]")


def _check_batch_limit(limit: int | float) -> str | None:
    # Lightning reads an int as a number of batches and a float as a share, so 1.0 is every batch. A whole float
    # above 1 (160.0, as config.yaml files written before ints were kept) it reads as a number of batches.
    if isinstance(limit, float) and limit > 1 and not limit.is_integer():
        return "a number of batches (an int >= 0) or a share of the epoch (a float in [0, 1])"
    return None


_TRACKERS_EXPECTED = f"one of {', '.join(LOGGERS)} or a non-empty list of them without repeats"


def _check_trackers(trackers: str | list[str]) -> str | None:
    names = [trackers] if isinstance(trackers, str) else trackers
    return None if names and len(set(names)) == len(names) else _TRACKERS_EXPECTED


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; the resolved copy is written to `runs/<name>/config.yaml`.

    The dataset's keys live in `data` (a `seglab.data.options.DataOptions`, whose `folder` holds the
    `FolderOptions`): one definition, with its checks, for the datasets, `seglab data check`, `seglab evaluate`
    and this config. Config files and checkpoints stay flat: `config_keys` lists every key, `to_dict` and
    `make_config` translate.
    """

    # --- run ---
    name: str = option("run", help="run folder name: outputs go to <runs_dir>/<name>/", check=check_run_name)
    runs_dir: str = option("runs", help="parent folder of all run folders")
    seed: int = option(0, help="seeds weights, data order, augmentation and procedural data")
    # --- data ---
    data: DataOptions = dataclasses.field(default_factory=DataOptions,
                                          metadata={"help": "the dataset (flat keys in files)"})
    normalize: str = option(
        "auto", choices=("auto", *NORMALIZATIONS),
        help="auto (the pretrained weights' own, else unit), unit [0,1], symmetric [-1,1], imagenet")
    augment: bool = option(
        False, help="random scale/rotation, flips, colour jitter on training batches (kornia, on the device)")
    scale: list[float] | None = option([0.75, 1.5], length=2, low=0, help="augment: zoom range (null: off)")
    degrees: float = option(10.0, low=0, help="augment: rotation range in degrees, +-")
    hflip: bool = option(True, help="augment: random horizontal flips")
    vflip: bool = option(False, help="augment: random vertical flips (aerial and microscopy images)")
    color_jitter: list[float] | None = option(
        [0.3, 0.3, 0.3, 0.0], length=4, low=0, help="augment: brightness, contrast, saturation, hue (null: off)")
    progressive_resize: list[list[float]] | None = option(
        None, check=_check_progressive_resize, help="[[s, px]]: from share s of training on, short side px")
    inference_size: int | None = option(
        None, low=0, low_open=True,
        help="short side for val/test/predict; logits resized back (None: last training side)")
    eval_tile: int | None = option(
        None, low=0, low_open=True, help="validate/test in windows of this size (large images)")
    batch_size: int = option(8, low=0, low_open=True, help="images per step per device")
    num_workers: int = option(0, low=0, resume="may change",
                              help="DataLoader worker processes (0 = load in the training process)")
    # --- model ---
    model: str = option("deeplabv3plus_xception41", help="a name from `seglab models`")
    output_stride: int | None = option(None, choices=OUTPUT_STRIDES,
                                       help="DeepLabV3+: backbone output stride (None = model default)")
    atrous_rates: list[int] | None = option(
        None, low=0, low_open=True, help="DeepLabV3+: ASPP rates (None = derived from output_stride)")
    start_with_relu: bool = option(
        False, help="Xception: one ReLU before each separable conv, none inside (timm's XceptionModule, DeepLab's "
                    "released weights); formerly preactivation")
    zero_init_residual: bool = option(
        False, help="Xception, ResNet: every residual block starts as its shortcut")
    freeze_backbone: bool = option(False, help="keep the backbone's weights fixed (fcn_vgg16 in seed 000)")
    pretrained_backbone: str | None = option(
        None, help="imagenet, or path/URL of weights in that layout (None = from scratch)")
    init_from: str | None = option(
        None, help="checkpoint/run folder whose weights start a new run (other shapes start fresh)")
    channels_last: bool | Literal["auto"] = option(
        "auto", help="NHWC memory format; auto: where it is faster (GPUs; bf16 on a CPU)")
    # --- loss ---
    loss: str = option(
        "ce", choices=LOSSES,
        help="ce, dice, focal, ce_dice, ohem_ce (cross-entropy of the hardest pixels), lovasz (Lovasz-softmax, an "
             "IoU surrogate) or ce_lovasz")
    class_weights: Literal["auto"] | list[float] | None = option(
        None, low=0, help='None, a list of per-class weights, or "auto" (median frequency from train masks)')
    focal_gamma: float = option(2.0, low=0, help="focal: focusing exponent")
    ohem_top_fraction: float = option(
        0.2, low=0, high=1, low_open=True,
        help="ohem_ce: share of the batch's labelled pixels, those with the largest loss, that the loss averages "
             "(DeepLab's top_k_percent_pixels)")
    lovasz_per_image: bool = option(
        False, help="lovasz, ce_lovasz: average the loss of each image instead of one loss over the batch's pixels")
    # --- optimiser and schedule ---
    optimizer: str = option("adamw", choices=OPTIMIZERS, help="adam, adamw or sgd (with momentum)")
    lr: float = option(1e-3, low=0, low_open=True, help="peak learning rate")
    weight_decay: float = option(1e-4, low=0, help="decoupled for adamw, L2 for adam/sgd")
    momentum: float = option(0.9, low=0, high=1, help="sgd momentum")
    scheduler: str = option(
        "cosine", choices=SCHEDULERS,
        help="none, poly, cosine (with warmup), onecycle, plateau (reduce on val mIoU)")
    warmup_fraction: float = option(
        0.0, low=0, high=1, high_open=True, help="cosine: share of training spent ramping the LR up linearly from 0")
    poly_power: float = option(0.9, low=0, help="poly: LR = lr * (1 - progress) ** poly_power, as in DeepLab")
    onecycle_pct_start: float = option(
        0.25, low=0, high=1, high_open=True, help="onecycle: share of training spent ramping up")
    min_lr_ratio: float = option(0.0, low=0, high=1, high_open=True, help="cosine/poly: final LR as a share of lr")
    plateau_factor: float = option(
        0.5, low=0, high=1, high_open=True, help="plateau: LR multiplier when val mIoU stalls")
    plateau_patience: int = option(
        2, low=0, low_open=True, help="plateau: epochs without improvement before decaying")
    ema_decay: float | None = option(
        None, low=0, high=1, low_open=True, high_open=True,
        help="validate and checkpoint an exponential moving average of the weights with this decay per step (e.g. "
             "0.999; null: off)")
    # --- length and stopping ---
    max_epochs: int | None = option(
        30, low=0, low_open=True, resume="may change",
        help="epochs to train (None = until max_steps or max_minutes)")
    max_steps: int | None = option(
        None, low=0, low_open=True, resume="may change", help="optimiser steps to train (None = no step limit)")
    max_minutes: float | None = option(
        None, low=0, low_open=True, resume="may change",
        help="wall-clock training budget; schedules follow time when no epoch/step limit")
    early_stopping_patience: int | None = option(
        None, low=0, low_open=True, resume="may change",
        help="stop after this many validations without val mIoU gain")
    val_every_n_epochs: int = option(
        1, low=0, low_open=True, help="validate (and checkpoint best.ckpt) every n epochs")
    test_after_training: bool = option(
        True, help="score best.ckpt on the test split at the end (test_metrics.json)")
    # --- hardware ---
    accelerator: str = option("auto", choices=ACCELERATORS, resume="may change",
                              help="auto, cpu, gpu/cuda or mps")
    devices: int | list[int] | Literal["auto"] = option(
        1, resume="may change", help='devices per node: an int, a list of GPU ids, or "auto"')
    num_nodes: int = option(1, low=0, low_open=True, resume="may change",
                            help="machines taking part (set by torchrun/SLURM launches)")
    strategy: str = option("auto", choices=STRATEGIES, resume="may change",
                           help="auto, ddp or ddp_spawn (Lightning strategies)")
    ddp_timeout_s: float = option(
        600.0, low=0, low_open=True, resume="may change",
        help="ddp/ddp_spawn: seconds a collective waits for a silent process before the run stops naming it (a "
             "lost node); long enough for rank 0 writing a large checkpoint to slow storage")
    sync_batchnorm: bool | Literal["auto"] = option(
        "auto",
        help="BatchNorm statistics over all processes' batches (Lightning's sync_batchnorm on GPUs; on CPUs, where "
             "SyncBatchNorm has no kernels, an all-reduce of sums); auto: on with more than one process and fewer "
             "than 8 images per process, where one process's batch statistics are too noisy to train and evaluate "
             "BatchNorm on")
    precision: str = option(
        "auto", choices=PRECISIONS, help="32-true, bf16-mixed, 16-mixed or auto (bf16 where supported, else fp32)")
    # --- limits for tests and smoke runs ---
    limit_train_batches: int | float | None = option(
        None, low=0, check=_check_batch_limit,
        help="training batches per epoch: an int is a number of batches (1: one batch), a float in [0, 1] a share "
             "of the epoch (0.5: half; 1.0: all); null: all")
    limit_val_batches: int | float | None = option(
        None, low=0, check=_check_batch_limit,
        help="validation batches: an int is a number of batches (1: one batch), a float in [0, 1] a share of the "
             "split (1.0: all); null: all")
    log_every_n_steps: int = option(10, low=0, low_open=True, help="TensorBoard scalar logging interval")
    progress_bar: bool = option(True, resume="may change", help="show the progress bar (loss, images/s, ETA)")
    logger: str | list[str] = option("tensorboard", choices=LOGGERS, check=_check_trackers, expect=_TRACKERS_EXPECTED,
                                     help="tensorboard, csv, mlflow, wandb, or a list of them")

    def to_dict(self) -> dict[str, Any]:
        """Plain flat dict of primitives, keys in `config_keys` order: what goes into YAML files and checkpoints."""
        return {key: _plain(value) for key, value in flat_values(self).items()}

    def training_side(self, progress: float = 1.0) -> int | None:
        """The short side training batches are brought down to at `progress` in [0, 1] by `progressive_resize`
        (never enlarged; None: the batches keep their size); at the default 1.0, the last one."""
        if not self.progressive_resize:
            return None
        return int([side for start, side in self.progressive_resize if progress >= start][-1])

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
            palette=tuple((int(colour[0]), int(colour[1]), int(colour[2])) for colour in palette) if palette is not None
            else default_palette(num_classes),
            ignore_index=self.data.folder.ignore_index,
            mean=mean,
            std=std,
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
        registered = {taken for name in list_models() for taken in model_options(name)}
        options: dict[str, Any] = {field.name: tuple(value) if isinstance(value, list) else value
                                   for field in dataclasses.fields(self) if field.name in registered
                                   and (value := getattr(self, field.name)) is not None}
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


    def with_normalization_resolved(self) -> TrainConfig:
        """This config with `normalize: auto` made concrete. `make_config` does it where no file is needed; with
        `init_from` it reads the source checkpoint's normalisation, so a run calls this as it starts."""
        return self if self.normalize != "auto" else dataclasses.replace(self, normalize=self._normalization_mode())


def _plain(value: Any) -> Any:
    # Tuples (from a checkpoint's parsed sizes) back to YAML lists.
    return list(value) if isinstance(value, tuple) else value


@functools.cache
def config_keys(kind: type[TrainConfig] | None = None) -> dict[str, ConfigKey]:
    """Every flat config key of `kind` (default `TrainConfig`) in file order: its own keys, the data keys where
    `data` stands (the folder keys where `folder` stands), each defined by `seglab.keys.option` on its field."""
    return option_keys(kind or TrainConfig)


def field_comments(kind: type[TrainConfig] | None = None) -> dict[str, str]:
    """The help text of each key (its field's `help` metadata), by key."""
    return {name: key.rule.help for name, key in config_keys(kind).items()}


def _validate(values: Mapping[str, object], keys: Mapping[str, ConfigKey]) -> dict[str, Any]:
    unknown = [key for key in values if key not in keys]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, keys, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown config key(s) {', '.join(hints)}; valid keys: {', '.join(keys)}")
    return {name: check_value(keys[name], value) for name, value in values.items()}


def make_config(values: Mapping[str, object] | None = None, /, *, kind: type[TrainConfig] | None = None,
                **overrides: object) -> TrainConfig:
    """A validated config of `kind` (default `TrainConfig`) from a mapping plus keyword overrides; `normalize:
    auto` is resolved unless that needs `init_from`'s checkpoint (see `with_normalization_resolved`)."""
    kind = kind or TrainConfig
    keys = config_keys(kind)
    # Keys of model options renamed since (e.g. preactivation) still load, from files and old checkpoints.
    checked = _validate(renamed_options({**(values or {}), **overrides}), keys)
    config = from_checked(kind, checked)
    # `auto` is resolved here, while the weights are known: checkpoints rebuild the model without them. A
    # fine-tune's normalisation is in its source checkpoint, which parsing does not open.
    if config.init_from is None:
        config = config.with_normalization_resolved()
    if config.max_epochs is None and config.max_steps is None and config.max_minutes is None:
        raise ConfigError("training never ends: set at least one of max_epochs, max_steps or max_minutes")
    data = config.data
    data.check_combinations()  # each key was checked above; the rules between the data keys are the data's own
    if data.image_size is None and data.crop_size is None and config.batch_size > 1:
        raise ConfigError("image_size: null keeps each file's own size, so training batches need crop_size (e.g. "
                          "[256, 256]) to have one size, or batch_size: 1")
    return config


def parse_overrides(pairs: Iterable[str]) -> dict[str, object]:
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


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *,
                kind: type[TrainConfig] | None = None) -> TrainConfig:
    """The config in the flat YAML file `path` (optional) with `key=value` overrides applied."""
    values: dict[str, object] = {}
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
        keys = config_keys(kind)
        if any(isinstance(value, dict) and not (key in keys and keys[key].accepts_mapping())
               for key, value in (loaded or {}).items()):
            raise ConfigError(f"config file {path} must be flat: nested sections are not supported")
        values.update(loaded or {})
    values.update(parse_overrides(overrides))
    try:
        return make_config(values, kind=kind)
    except ConfigError as error:
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(f"{error}{where}") from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write `config` as flat YAML with each key's `ConfigKey.summary` as a comment above it (`path` is written
    directly: callers write a temporary and rename it, `seglab.atomic`)."""
    lines = []
    values = config.to_dict()
    for name, key in config_keys(type(config)).items():
        lines.append(f"# {key.summary()}")
        text = yaml.safe_dump(values[name], default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{name}: {text}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def help_config_text(kind: type[TrainConfig] | None = None) -> str:
    """What `seglab train --help-config` prints: each key with its default, types and `ConfigKey.summary`."""
    return "\n".join(f"{name} = {key.default!r}  ({key.type_text})\n    {key.summary()}"
                     for name, key in config_keys(kind).items()) + "\n"


def resume_changeable(kind: type[TrainConfig] | None = None) -> tuple[str, ...]:
    """The keys that `--resume` may change (their rule says "may change")."""
    return tuple(name for name, key in config_keys(kind).items() if key.rule.resume == "may change")


def check_resume_overrides(names: Iterable[str], kind: type[TrainConfig] | None = None) -> None:
    """Raise a `ConfigError` naming any key in `names` whose definition does not let a resumed run change it."""
    allowed = resume_changeable(kind)
    refused = [name for name in names if name not in allowed]
    if refused:
        raise ConfigError(f"cannot change {', '.join(refused)} when resuming; allowed: {', '.join(sorted(allowed))}")


@dataclasses.dataclass(frozen=True)
class ReferenceRow:
    """One config key as the docs' reference shows it."""

    name: str
    type: str
    default: object
    help: str
    accepts: str  # choices, list length and bounds in words ("" when the type says it all)
    resume: Resume


def reference_rows(kind: type[TrainConfig] | None = None) -> list[ReferenceRow]:
    """Every config key's reference row, in file order, from the keys' own definitions."""
    return [ReferenceRow(name, key.type_text, key.default, key.rule.help, key.rule.accepts_text(), key.rule.resume)
            for name, key in config_keys(kind).items()]


def config_reference_markdown(kind: type[TrainConfig] | None = None) -> str:
    """The config keys as a Markdown table (key, type, default, meaning, accepted values, on --resume)."""

    def cell(text: object) -> str:
        # One line; a bare `|` would end the cell, and `<name>` would be read as an HTML tag.
        return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")

    lines = ["| key | type | default | meaning | accepts | on --resume |", "|---|---|---|---|---|---|"]
    for row in reference_rows(kind):
        default = yaml.safe_dump(row.default, default_flow_style=True).strip().removesuffix("...").strip()
        default = default.replace("|", "\\|")  # in a code span: only the cell's end needs escaping
        lines.append(f"| `{row.name}` | {cell(row.type)} | `{default}` | {cell(row.help)} | "
                     f"{cell(row.accepts)} | {row.resume} |")
    return "\n".join(lines) + "\n"
