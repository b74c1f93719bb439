"""The data keys (`DataOptions`, `FolderOptions`) are defined once, by `seglab.keys.option` on their fields: their
choices, bounds and help reach validation (of the options, a training config and a checkpoint's flat config),
`seglab train --help-config`, the `seglab data` flags and the docs' reference from there, and nowhere else."""

from __future__ import annotations

import dataclasses
import re

import pytest

from data_fixtures import TESTS_DIR
from seglab.cli import main
from seglab.data.options import CROWD_RULES, DATASETS, LAYOUTS, SPLIT_SCHEMES, DataOptions, FolderOptions
from seglab.errors import ConfigError
from seglab.keys import KeyRule, option_keys
from seglab.training.config import (
    check_resume_overrides,
    config_keys,
    config_reference_markdown,
    help_config_text,
    load_config,
    make_config,
    save_config,
)

OLD_CONFIG = TESTS_DIR / "fixtures" / "config_before_data_key_rules.yaml"  # save_config's file before this change
DATA_KEYS = {**option_keys(DataOptions)}  # the folder keys included, where `folder` stands


def options_with(name: str, value: object) -> DataOptions:
    """Data options with one flat key set, the folder keys' too."""
    if name in option_keys(FolderOptions):
        return DataOptions(folder=FolderOptions(**{name: value}))
    return DataOptions(**{name: value})


def error_of(call) -> str:
    with pytest.raises(ConfigError) as error:
        call()
    return str(error.value)


def test_every_data_key_is_defined_by_its_field():
    fields = [*dataclasses.fields(DataOptions), *dataclasses.fields(FolderOptions)]
    assert {f.name for f in fields if f.name != "folder"} == set(DATA_KEYS)
    assert all(isinstance(f.metadata["rule"], KeyRule) for f in fields if f.name != "folder")
    assert list(DATA_KEYS) == [name for name in config_keys() if name in DATA_KEYS]  # same keys, same order
    choices = {name: key.rule.choices for name, key in DATA_KEYS.items() if key.rule.choices is not None}
    assert choices == {"dataset": DATASETS, "layout": LAYOUTS, "split_scheme": SPLIT_SCHEMES, "crowd": CROWD_RULES}


@pytest.mark.parametrize("name", ["dataset", "layout", "split_scheme", "crowd"])
def test_a_bad_choice_is_named_with_the_choices_of_its_rule(name):
    choices = DATA_KEYS[name].rule.choices
    assert choices is not None
    expected = f"config key {name!r} is 'bogus'; valid values: {', '.join(map(str, choices))}"
    # The options, a training config and a checkpoint's flat config: one reader, one message.
    assert error_of(lambda: options_with(name, "bogus").check()) == expected
    assert error_of(lambda: make_config({name: "bogus"})) == expected
    assert error_of(lambda: DataOptions.from_flat({name: "bogus"})) == expected


@pytest.mark.parametrize(("name", "value"), [
    ("val_fraction", 1.0), ("val_fraction", -0.1), ("ignore_index", -1), ("num_classes", 0), ("train_length", 0),
    ("val_length", -3),
])
def test_a_value_out_of_bounds_is_named_with_the_bounds_of_its_rule(name, value):
    rule = DATA_KEYS[name].rule
    assert not rule.within_bounds(value)
    expected = f"config key {name!r} must be {rule.bounds_text()}, got {value!r}"
    assert error_of(lambda: options_with(name, value).check()) == expected
    assert error_of(lambda: make_config({name: value})) == expected


@pytest.mark.parametrize("value", [128, [96, 128], (96, 128), None])
def test_sizes_take_what_they_took_before(value):
    for name in ("image_size", "crop_size"):
        options_with(name, value).check()
        if not isinstance(value, tuple):  # config files hold lists
            assert getattr(make_config({name: value, "batch_size": 1}).data, name) == value


@pytest.mark.parametrize("value", [0, -8, [32, 0], [1, 2, 3], [32.5, 32], True, 12.5, "128", {"h": 1}])
def test_sizes_refuse_what_they_refused_before(value):
    for name in ("image_size", "crop_size"):
        expected = f"config key {name!r} must be a positive int, [H, W] or null, got {value!r}"
        assert error_of(lambda: options_with(name, value).check()) == expected  # noqa: B023 (called at once)
        assert error_of(lambda: make_config({name: value})) == expected  # noqa: B023


def test_a_config_written_before_the_data_keys_had_rules_still_loads(tmp_path):
    config = load_config(OLD_CONFIG)
    data = config.data
    assert (data.image_size, data.crop_size, data.val_fraction, data.keep_aspect) == ([96, 128], 64, 0.25, True)
    assert (data.folder.value_map, data.folder.class_names, data.folder.ignore_index) == (
        {0: 0, 128: 1, 255: 2}, ["background", "road", "car"], 254)
    # The other shapes old files hold, given as --set overrides on a resumed run's file would be.
    other = load_config(OLD_CONFIG, ["images_dir=null", "masks_dir=null", "data_root=tree", "layout=lists",
                                     "split_lists={train: splits/train.txt}", "value_map=null", "class_names=null",
                                     "palette={0: '#000000', 1: [255, 0, 0]}", "image_size=null",
                                     "crop_size=[32, 48]", "crowd=class"])
    assert other.data.folder.palette_colours() == {0: (0, 0, 0), 1: (255, 0, 0)}
    assert (other.data.crop_hw(), other.data.image_hw()) == ((32, 48), None)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert DataOptions.from_flat(config.to_dict()) == data  # a checkpoint's flat config rebuilds the same options


def test_parsing_checks_each_key_once(monkeypatch):
    import seglab.keys

    checked: list[str] = []
    check = seglab.keys._check_type_and_rule

    def counting(key, value):
        checked.append(key.name)
        return check(key, value)

    monkeypatch.setattr(seglab.keys, "_check_type_and_rule", counting)
    values = {"dataset": "folder", "images_dir": "i", "masks_dir": "m", "layout": "auto", "image_size": [64, 64],
              "palette": {0: "#000000", 1: "#ff0000"}, "crowd": "class", "lr": 0.01}
    make_config(values)
    assert sorted(checked) == sorted(values)
    checked.clear()
    DataOptions.from_flat(values)
    assert sorted(checked) == sorted(set(values) - {"lr"})


def test_help_config_and_the_reference_show_each_data_keys_rule():
    text = help_config_text()
    reference = config_reference_markdown()
    for name, key in DATA_KEYS.items():
        assert f"{name} = {key.default!r}  ({key.type_text})\n    {key.summary()}\n" in text
        accepts = re.escape(key.rule.accepts_text().replace(">", "&gt;"))  # as a Markdown cell holds it
        assert re.search(rf"^\| `{name}` \| .* \| {accepts} \| fixed \|$", reference, re.MULTILINE), name
    assert "    folder with data_root: how the tree is laid out" in text
    assert f"[one of {', '.join(LAYOUTS)}]" in text
    assert "| `val_fraction` | float | `0.2` |" in reference and "| in [0, 1) | fixed |" in reference
    assert "| `image_size` | int \\| a list \\| null | `128` |" in reference


def test_the_data_keys_are_fixed_on_resume():
    for name in ("layout", "image_size", "value_map", "crowd"):
        with pytest.raises(ConfigError, match=f"cannot change {name} when resuming"):
            check_resume_overrides([name])


def test_the_data_flags_take_their_choices_from_the_rules(capsys):
    for command in (["data", "check", "--help"], ["data", "convert", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        text = " ".join(capsys.readouterr().out.split())
        assert "--crowd {" + ",".join(CROWD_RULES) + "}" in text
        assert DATA_KEYS["crowd"].rule.help in text
    with pytest.raises(SystemExit):
        main(["data", "check", "--help"])
    assert "--layout {" + ",".join(LAYOUTS) + "}" in " ".join(capsys.readouterr().out.split())
    assert main(["data", "check", "--images", "i", "--masks", "m", "--ignore-index", "-2"]) == 2
    assert "config key 'ignore_index' must be >= 0, got -2" in capsys.readouterr().err
