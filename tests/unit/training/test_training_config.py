"""Config loading: every recipe in configs/ is valid, and bad input fails at once with the valid choices."""

from __future__ import annotations

import dataclasses

import pytest

from data_fixtures import REPO_ROOT
from seglab.cli import main
from seglab.errors import ConfigError
from seglab.models import list_models
from seglab.training.config import TrainConfig, config_keys, field_comments, help_config_text, load_config, save_config

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def test_the_four_recipes_exist():
    names = {path.name for path in CONFIGS}
    assert {"shapes_deeplabv3plus_xception41.yaml", "pets_fcn_vgg16.yaml", "pets_deeplabv3plus_xception65.yaml",
            "folder_example.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_loads_and_names_a_registered_model(path):
    config = load_config(path)
    assert config.model in list_models()
    config.model_options()  # raises ConfigError if the recipe passes an option the model does not take


def test_seed_recipes_follow_the_seeds():
    shapes = load_config(CONFIGS[0].parent / "shapes_deeplabv3plus_xception41.yaml")
    assert (shapes.data.dataset, shapes.data.image_size, shapes.scheduler) == ("shapes", 128, "plateau")
    assert shapes.early_stopping_patience is not None
    pets = load_config(CONFIGS[0].parent / "pets_fcn_vgg16.yaml")
    # The seed scaled inputs to [-1, 1]; torchvision's VGG16 weights take ImageNet mean/std (normalize: auto).
    assert (pets.data.image_size, pets.normalize, pets.optimizer, pets.lr, pets.loss) == (224, "imagenet", "adam",
                                                                                     1e-3, "ce")
    assert (pets.data.split_scheme, pets.freeze_backbone, pets.pretrained_backbone) == ("random_80_20", True,
                                                                                   "imagenet")


def test_every_field_is_documented():
    comments = field_comments()
    assert set(comments) == set(config_keys())
    assert all(len(text) > 10 for text in comments.values()), [k for k, v in comments.items() if len(v) <= 10]


def test_overrides_are_parsed_as_yaml(tmp_path):
    config = load_config(None, ["lr=3e-4", "augment=true", "devices=[0, 1]", "max_epochs=null",
                                "max_minutes=2", "value_map={0: 0, 255: 1}"])
    assert config.lr == pytest.approx(3e-4) and config.augment is True and config.devices == [0, 1]
    assert config.max_epochs is None and config.max_minutes == 2.0 and config.data.folder.value_map == {0: 0, 255: 1}


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["lr=0.01", "class_weights=[1, 2.5]", "atrous_rates=[2, 4, 8]", "name=x"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert "# peak learning rate" in (tmp_path / "config.yaml").read_text()


def test_unknown_key_lists_valid_keys_and_suggests(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rate: 0.1\nbatch_size: 4\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "'learning_rate'" in message and "valid keys:" in message and "batch_size" in message
    assert str(path) in message
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_config(None, ["lrr=1"])


@pytest.mark.parametrize(("override", "expected"), [
    ("loss=bce", "valid values: ce, dice, focal, ce_dice"),
    ("optimizer=rmsprop", "valid values: adam, adamw, sgd"),
    ("scheduler=step", "valid values: none, poly, cosine, onecycle, plateau"),
    ("precision=64", "valid values: 32-true, bf16-mixed, 16-mixed, auto"),
    ("batch_size=0", "must be positive"),
    ("batch_size=2.5", "must be int"),
    ("inference_size=0", "must be positive"),
    ("progressive_resize=[[0,64],[0.8,128],[0.5,96]]", "in increasing progress"),
    ("lr=fast", "must be float"),
    ("output_stride=4", "valid values: 8, 16, 32"),
    ("class_weights=heavy", "auto, a list or null"),
    ("warmup_fraction=1.5", r"in \[0, 1\)"),
    ("dataset=folder", "needs data_root .* or images_dir and masks_dir"),
    ("image_size=[32, 0]", r"positive int, \[H, W\] or null"),
    ("layout=voc", "valid values: auto, images_masks"),
    ("image_size=null", "need crop_size"),
    ("val_images_dir=x", "give both val_images_dir and val_masks_dir"),
    ("palette={0: red}", "palette"),
])
def test_bad_values_name_the_valid_ones(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_training_must_end():
    with pytest.raises(ConfigError, match="never ends"):
        load_config(None, ["max_epochs=null"])


def test_nested_sections_are_rejected(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("optimizer:\n  name: adam\n")
    with pytest.raises(ConfigError, match="flat"):
        load_config(path)


def test_model_option_the_model_does_not_take():
    config = load_config(None, ["model=fcn_vgg16", "output_stride=8"])
    with pytest.raises(ConfigError, match="takes no option output_stride"):
        config.model_options()


def test_zero_init_residual_reaches_the_model_and_is_refused_where_it_does_not_apply():
    options = load_config(None, ["zero_init_residual=true"]).model_options()
    assert options["zero_init_residual"] is True
    with pytest.raises(ConfigError, match="takes no option zero_init_residual"):
        load_config(None, ["model=fcn_vgg16", "zero_init_residual=true"]).model_options()


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("optimiser: adam\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seglab: error: unknown config key(s) 'optimiser' (did you mean 'optimizer'?)")
    assert "Traceback" not in err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not a seglab run folder" in capsys.readouterr().err


def test_help_config_lists_every_key(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out == help_config_text()
    assert all(f"{name} = " in out for name in config_keys())
    assert TrainConfig().max_epochs == 30


def test_folder_example_reads_the_isbi_membranes():
    config = load_config(CONFIGS[0].parent / "folder_example.yaml")
    root = REPO_ROOT
    images, masks = root / config.data.images_dir, root / config.data.masks_dir
    if not images.is_dir():
        pytest.skip(f"the ISBI 2012 membranes are not at {images}")
    from seglab.data.datasets import build_datasets

    datasets = build_datasets(dataclasses.replace(config.data, images_dir=str(images), masks_dir=str(masks)),
                              seed=config.seed)
    assert (len(datasets["train"]), len(datasets["val"])) == (24, 6)
    image, mask = datasets["train"][0]
    assert image.shape == (3, 256, 256) and set(mask.unique().tolist()) == {0, 1}
    assert list(datasets["train"].class_names) == ["membrane", "cell"]


def test_the_old_key_preactivation_loads_as_start_with_relu(tmp_path):
    # configs written before the rename (and the configs saved in old checkpoints) keep loading.
    path = tmp_path / "old.yaml"
    path.write_text("model: deeplabv3plus_xception65\npreactivation: true\n")
    with pytest.deprecated_call(match="preactivation is now called start_with_relu"):
        config = load_config(path)
    assert config.start_with_relu is True and config.model_options()["start_with_relu"] is True
    assert "preactivation" not in config.to_dict()
    with pytest.raises(ConfigError, match="give start_with_relu only: preactivation is its old name"):
        load_config(None, ["preactivation=true", "start_with_relu=false"])


def test_help_text_comes_from_field_metadata():
    help_texts = field_comments()
    lr_field = next(field for field in dataclasses.fields(TrainConfig) if field.name == "lr")
    assert help_texts["lr"] == lr_field.metadata["help"] == "peak learning rate"
    assert help_texts["output_stride"] == "DeepLabV3+: backbone output stride (None = model default)"
    assert help_texts["value_map"].startswith("mask value -> class index")  # inherited from FolderOptions
