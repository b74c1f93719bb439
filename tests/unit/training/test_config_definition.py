"""One definition per config key: a key defined by `option(...)` on its field is known, with its bounds and
resume rule, to validation, `--help-config`, the written config.yaml, resume and the docs' reference."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from seglab.cli import main
from seglab.errors import ConfigError
from seglab.keys import option
from seglab.training.config import (
    TrainConfig,
    check_resume_overrides,
    config_keys,
    config_reference_markdown,
    help_config_text,
    load_config,
    make_config,
    reference_rows,
    save_config,
)
from seglab.training.loggers import LOGGERS as LOGGER_BUILDERS
from seglab.training.run import resume


@dataclasses.dataclass(frozen=True)
class WithOverlap(TrainConfig):
    """TrainConfig plus one key with bounds, defined the way every key is."""

    tile_overlap: int = option(8, low=0, high=64, help="pixels shared by neighbouring evaluation windows")
    print_every: int = option(5, low=0, low_open=True, resume="may change", help="steps between two printed lines")


def test_a_new_key_is_validated_by_its_own_bounds():
    assert make_config(kind=WithOverlap).tile_overlap == 8
    assert make_config({"tile_overlap": 64}, kind=WithOverlap).tile_overlap == 64
    with pytest.raises(ConfigError, match=r"config key 'tile_overlap' must be in \[0, 64\], got 65"):
        make_config({"tile_overlap": 65}, kind=WithOverlap)
    with pytest.raises(ConfigError, match=r"'print_every' must be positive, got 0"):
        make_config({"print_every": 0}, kind=WithOverlap)
    with pytest.raises(ConfigError, match="'tile_overlap' must be int, got 'wide'"):
        make_config({"tile_overlap": "wide"}, kind=WithOverlap)
    with pytest.raises(ConfigError, match="unknown config key"):  # the plain TrainConfig does not have it
        make_config({"tile_overlap": 8})


def test_a_new_key_appears_in_help_config_and_the_written_config(tmp_path):
    text = help_config_text(WithOverlap)
    assert "tile_overlap = 8  (int)\n    pixels shared by neighbouring evaluation windows [in [0, 64]]" in text
    assert "print_every = 5  (int)\n    steps between two printed lines [positive; may change on --resume]" in text
    assert "tile_overlap" not in help_config_text()
    config = make_config({"tile_overlap": 16}, kind=WithOverlap)
    save_config(config, tmp_path / "config.yaml")
    written = (tmp_path / "config.yaml").read_text()
    assert "# pixels shared by neighbouring evaluation windows [in [0, 64]]\ntile_overlap: 16\n" in written
    assert yaml.safe_load(written)["tile_overlap"] == 16
    assert load_config(tmp_path / "config.yaml", kind=WithOverlap) == config


def test_the_cli_prints_the_same_definitions(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out == help_config_text()
    assert "lr = 0.001  (float)\n    peak learning rate [positive]" in out
    assert "max_epochs = 30  (int | null)\n    epochs to train (None = until max_steps or max_minutes) " \
           "[positive; may change on --resume]" in out


def test_a_new_keys_resume_rule_decides_whether_resume_may_change_it(tmp_path):
    check_resume_overrides(["print_every", "max_epochs"], WithOverlap)
    with pytest.raises(ConfigError, match=r"cannot change tile_overlap when resuming; allowed: .*print_every"):
        check_resume_overrides(["tile_overlap"], WithOverlap)
    with pytest.raises(ConfigError, match="cannot change print_every when resuming"):
        check_resume_overrides(["print_every"])  # not a key of TrainConfig
    # `seglab train --resume` asks the same rule before it reads anything.
    (tmp_path / "config.yaml").write_text("name: run\n")
    with pytest.raises(ConfigError, match="cannot change lr when resuming; allowed: accelerator, ddp_timeout_s"):
        resume(tmp_path, ["max_epochs=5", "lr=0.1"])


def test_a_new_key_has_a_reference_row():
    rows = {row.name: row for row in reference_rows(WithOverlap)}
    assert (rows["tile_overlap"].type, rows["tile_overlap"].default, rows["tile_overlap"].accepts,
            rows["tile_overlap"].resume) == ("int", 8, "in [0, 64]", "fixed")
    assert rows["print_every"].resume == "may change"
    assert list(rows) == list(config_keys(WithOverlap))  # every key, data keys included, in file order
    table = config_reference_markdown(WithOverlap)
    assert "| `tile_overlap` | int | `8` | pixels shared by neighbouring evaluation windows | in [0, 64] | fixed |" \
        in table
    assert "| `loss` | str | `ce` |" in config_reference_markdown()


def test_choices_and_list_rules_come_from_the_field():
    assert config_keys()["optimizer"].rule.choices == ("adam", "adamw", "sgd")
    with pytest.raises(ConfigError, match=r"'scale' must be null or a list of 2 numbers >= 0"):
        make_config({"scale": [1.0]})
    with pytest.raises(ConfigError, match=r"'color_jitter' must be a list of numbers >= 0"):
        make_config({"color_jitter": [0.1, 0.1, -0.1, 0.0]})
    with pytest.raises(ConfigError, match="'logger' must be one of tensorboard, csv, mlflow, wandb or a non-empty"):
        make_config({"logger": ["csv", "csvv"]})
    assert set(LOGGER_BUILDERS) == set(config_keys()["logger"].rule.choices)  # a builder for every choice
    with pytest.raises(ConfigError, match=r"'logger' must be .*without repeats"):
        make_config({"logger": ["csv", "csv"]})
    with pytest.raises(ConfigError, match="'channels_last' must be true, false or auto"):
        make_config({"channels_last": "yes"})
    with pytest.raises(ConfigError, match="'name' must be a plain folder name"):
        make_config({"name": "../elsewhere"})


def test_no_key_of_the_config_is_typed_any():
    # The data keys (DataOptions, FolderOptions) included: image_size and crop_size say what they take.
    untyped = [name for name, key in config_keys().items()
               if key.annotation is typing.Any or "Any" in str(key.annotation)]
    assert untyped == []
    assert {key.owner.__name__ for key in config_keys().values()} == {"TrainConfig", "DataOptions", "FolderOptions"}


@dataclasses.dataclass(frozen=True)
class TileOptions:
    """A nested options class, composed into a config the way `DataOptions` is."""

    tile_order: str = option("rows", choices=("rows", "spiral"), help="order the evaluation windows are visited in")
    tile_margin: int = option(4, low=0, high=16, help="pixels dropped at each window's border")


@dataclasses.dataclass(frozen=True)
class WithTiles(TrainConfig):
    tiles: TileOptions = dataclasses.field(default_factory=TileOptions)


def test_the_keys_of_nested_options_are_flat_keys_read_from_their_own_fields(tmp_path):
    keys = config_keys(WithTiles)
    assert keys["tile_order"].owner is TileOptions and list(keys)[-2:] == ["tile_order", "tile_margin"]
    config = make_config({"tile_order": "spiral", "tile_margin": 16}, kind=WithTiles)
    assert config.tiles == TileOptions("spiral", 16)
    with pytest.raises(ConfigError, match="config key 'tile_order' is 'zigzag'; valid values: rows, spiral"):
        make_config({"tile_order": "zigzag"}, kind=WithTiles)
    with pytest.raises(ConfigError, match=r"config key 'tile_margin' must be in \[0, 16\], got 17"):
        make_config({"tile_margin": 17}, kind=WithTiles)
    assert "tile_order = 'rows'  (str)\n    order the evaluation windows are visited in [one of rows, spiral]" \
        in help_config_text(WithTiles)
    assert "| `tile_margin` | int | `4` | pixels dropped at each window's border | in [0, 16] | fixed |" \
        in config_reference_markdown(WithTiles)
    save_config(config, tmp_path / "config.yaml")
    assert "tile_order: spiral" in (tmp_path / "config.yaml").read_text()
    assert load_config(tmp_path / "config.yaml", kind=WithTiles) == config
    with pytest.raises(ConfigError, match="cannot change tile_order when resuming"):
        check_resume_overrides(["tile_order"], WithTiles)


def test_parsing_an_init_from_config_opens_no_checkpoint_the_run_start_does(tmp_path, monkeypatch):
    opened = []

    def read_normalization(source):
        opened.append(source)
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    monkeypatch.setattr("seglab.training.finetune.init_normalization", read_normalization)
    source = str(tmp_path / "elsewhere.ckpt")
    config = make_config({"init_from": source})
    assert config.normalize == "auto" and opened == []
    assert config.with_normalization_resolved().normalize == "unit" and opened == [source]
