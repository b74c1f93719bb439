"""`seglab data shapes|pets|check`: export the built-in shapes, fetch Oxford-IIIT Pet, validate users' datasets.

The folder flags of `check` (`--value-map` ... `--allow-unpaired`) are made from `FolderOptions`' key definitions
(help, choices, default), so the command line, the Python API and the training config share one definition."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from seglab.data.options import ANNOTATION_LAYOUTS, DataOptions, FolderOptions, parse_colour
from seglab.errors import ConfigError
from seglab.keys import option_keys


def parse_value_map(text: str) -> dict[int, int]:
    """`"0:0,255:1"` -> `{0: 0, 255: 1}` (stored mask value -> class index)."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            value, cls = (int(x) for x in item.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"value map entry {item!r} is not VALUE:CLASS (e.g. 0:0,255:1)") from None
        mapping[value] = cls
    if not mapping:
        raise argparse.ArgumentTypeError("the value map is empty; write it as VALUE:CLASS pairs, e.g. 0:0,255:1")
    return mapping


def parse_palette(text: str) -> dict[int, tuple[int, int, int]]:
    """`"0:#000000,1:#ff0000"` -> `{0: (0, 0, 0), 1: (255, 0, 0)}` (class index -> RGB colour)."""
    palette = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            cls, colour = item.split(":")
            palette[int(cls)] = parse_colour(cls, "#" + colour.strip().lstrip("#"))
        except (ValueError, ConfigError):
            raise argparse.ArgumentTypeError(f"palette entry {item!r} is not CLASS:#RRGGBB (e.g. 1:#ff0000)") from None
    if not palette:
        raise argparse.ArgumentTypeError("the palette is empty; write CLASS:#RRGGBB pairs, e.g. 0:#000000,1:#ff0000")
    return palette


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="datasets: export shapes, download Oxford-IIIT Pet, check folders")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    shapes = commands.add_parser("shapes", help="write the built-in shapes dataset (v1) to disk as PNG files")
    shapes.add_argument("--out", required=True, help="output folder (gets train_imgs/, train_mask/, val_..., test_...)")
    shapes.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    shapes.add_argument("--train", type=int, default=800, help="training images (default 800)")
    shapes.add_argument("--val", type=int, default=100, help="validation images (default 100)")
    shapes.add_argument("--test", type=int, default=100, help="test images (default 100)")
    shapes.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    shapes.set_defaults(handler=run_shapes)

    pets = commands.add_parser("pets", help="download / verify Oxford-IIIT Pet and show its splits")
    pets.add_argument("--root", required=True, help="dataset folder (gets images/ and annotations/)")
    pets.add_argument("--download", action="store_true", help="download and extract the official archives first")
    pets.add_argument(
        "--base-url",
        default=None,
        help="mirror holding images.tar.gz and annotations.tar.gz (default: $SEGLAB_PETS_URL, else the VGG site)",
    )
    pets.add_argument("--no-progress", action="store_true", help="no progress bar")
    pets.set_defaults(handler=run_pets)

    check = commands.add_parser(
        "check",
        help="read every image/mask pair of a dataset (or of two folders) and report all problems",
        description="Check a dataset tree (--root: its train/val/test splits, layout found automatically), one "
        "pair of folders (--images / --masks), or the dataset a training config names (--config, with the same "
        "--set overrides as seglab train; the config's own mask options apply). Exit code 1 when any file has a "
        "problem.",
    )
    check.add_argument("--root", help="dataset folder holding train/val/test splits in a known layout")
    check.add_argument("--config", help="training config whose folder dataset (every split) to check")
    check.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="with --config: override config keys, as for seglab train")
    check.add_argument("--layout", default="auto", choices=option_keys(DataOptions)["layout"].rule.choices,
                       help="layout of --root (default auto: the one that fits)")
    check.add_argument("--images", help="folder of images (with --masks, instead of --root)")
    check.add_argument("--masks", help="folder of masks, paired with the images by file stem")
    add_folder_options(check)
    check.set_defaults(handler=run_check)

    convert = commands.add_parser(
        "convert", help="write an annotation export (COCO, LabelMe, CVAT, Label Studio) as palette PNG masks",
        description="Writes OUT/images/{split}/, OUT/masks/{split}/<stem>.png (palette PNGs of class indices, drawn "
                    "as training draws them), OUT/classes.txt and OUT/seglab.yaml (a training config for OUT).")
    convert.add_argument("source", metavar="SOURCE", help="the export's top folder")
    convert.add_argument("--to", required=True, choices=("masks",), help="what to write (masks: PNG mask files)")
    convert.add_argument("out", metavar="OUT", help="a new (or empty) output folder")
    convert.add_argument("--layout", default="auto", choices=("auto", *ANNOTATION_LAYOUTS),
                         help="the export's format (default auto)")
    _add_folder_option(convert, "crowd")
    _add_folder_option(convert, "class_names")
    _add_folder_option(convert, "ignore_index")
    convert.set_defaults(handler=run_convert)


def parse_names(text: str) -> list[str]:
    """`"bg, cat"` -> `["bg", "cat"]`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give the class names separated by commas, e.g. background,cat")
    return names


# Command-line forms of the FolderOptions fields that are not a plain int, str or bool: (parser, metavar).
_TEXT_FORMS = {
    "value_map": (parse_value_map, "VALUE:CLASS,..."),
    "palette": (parse_palette, "CLASS:#RRGGBB,..."),
    "class_names": (parse_names, "NAME,..."),
}


def _add_folder_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str) -> None:
    # One FolderOptions key as a flag: --key-name, its help text, choices and default from the key's definition
    # (the values are checked by it too, in `FolderOptions.check`).
    key = option_keys(FolderOptions)[name]
    kind = next(t for t in (typing.get_args(key.annotation) or (key.annotation,)) if t is not type(None))
    flag = "--" + name.replace("_", "-")
    text = key.rule.help.replace("%", "%%")
    if kind is bool:
        parser.add_argument(flag, action="store_true", help=text)
        return
    if key.default not in (None, ""):
        text += f" (default {key.default})"
    if name in _TEXT_FORMS:
        parse, metavar = _TEXT_FORMS[name]
    elif key.rule.choices is not None:
        parser.add_argument(flag, default=key.default, choices=key.rule.choices, help=text)
        return
    elif kind in (int, str):
        parse, metavar = kind, "N" if kind is int else "TEXT"
    else:
        raise TypeError(f"FolderOptions.{name} ({kind}) has no command-line form; add one to _TEXT_FORMS")
    parser.add_argument(flag, type=parse, default=key.default, metavar=metavar, help=text)


def add_mask_options(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """How mask files encode classes, as `seglab data check`, `predict --masks` and `evaluate` read them
    (`--value-map` or `--palette`, and `--mask-suffix`); returns the group of mutually exclusive encodings, so a
    command can add its own."""
    encoding = parser.add_mutually_exclusive_group()
    _add_folder_option(encoding, "value_map")
    _add_folder_option(encoding, "palette")
    _add_folder_option(parser, "mask_suffix")
    return encoding


def add_folder_options(parser: argparse.ArgumentParser) -> None:
    """One flag per `FolderOptions` field (`--value-map`, ..., `--allow-unpaired`), help texts from the dataclass;
    `folder_options(args)` reads them back."""
    add_mask_options(parser)
    for spec in dataclasses.fields(FolderOptions):
        if spec.name not in ("value_map", "palette", "mask_suffix"):
            _add_folder_option(parser, spec.name)


def mask_options(args: argparse.Namespace) -> FolderOptions:
    """The `FolderOptions` of `add_mask_options`' flags (and `--recursive` where the command has it), checked
    when the model's classes are set."""
    return FolderOptions(value_map=args.value_map, palette=args.palette, mask_suffix=args.mask_suffix,
                         recursive=getattr(args, "recursive", False))


def folder_options(args: argparse.Namespace) -> FolderOptions:
    """The `FolderOptions` given by the flags of `add_folder_options`, checked."""
    options = FolderOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FolderOptions)})
    options.check()
    return options


def run_shapes(args: argparse.Namespace) -> int:
    from seglab.data.shapes import SHAPES_V1, export_shapes

    counts = {"train": args.train, "val": args.val, "test": args.test}
    if min(counts.values()) < 0 or args.size < 8:
        raise ConfigError("counts must be >= 0 and --size at least 8 pixels")
    export_shapes(args.out, size=args.size, counts=counts, seed=args.seed, progress=True)
    print(f"shapes {SHAPES_V1.version}: wrote {sum(counts.values())} image/mask pairs to {args.out}")
    return 0


def run_pets(args: argparse.Namespace) -> int:
    from seglab.data.pets import OxfordPets, download_pets, pets_base_url

    if args.download:
        print(f"Oxford-IIIT Pet from {pets_base_url(args.base_url)}")
        download_pets(args.root, base_url=args.base_url, progress=not args.no_progress)
    for scheme in ("official", "random_80_20"):
        sizes = {split: len(OxfordPets(args.root, split, split_scheme=scheme)) for split in ("train", "val", "test")}
        print(f"{scheme}: " + ", ".join(f"{split} {n}" for split, n in sizes.items()))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from seglab.data.datasets import folder_splits
    from seglab.data.layouts import find_splits
    from seglab.data.validation import check_annotations, check_folders

    sources = [name for name, given in (("--root", args.root), ("--images / --masks", args.images or args.masks),
                                        ("--config", args.config)) if given]
    if len(sources) > 1:
        raise ConfigError(f"give one of --root, --images / --masks or --config, not {' and '.join(sources)}")
    if args.overrides and not args.config:
        raise ConfigError("--set overrides the keys of a training config: give it with --config")
    if args.config:
        from seglab.training.config import load_config

        if folder_options(args) != FolderOptions():
            raise ConfigError("with --config the mask options come from the config; change them with --set "
                              "(e.g. --set ignore_index=0), not with the folder flags")
        # The training config's own DataOptions, parsed as `seglab train` parses them, so both read the same data.
        data = load_config(args.config, args.overrides).data
        if data.dataset != "folder":
            raise ConfigError(f"{args.config} trains on dataset {data.dataset!r}; seglab data check reads folder "
                              "datasets (files on disk)")
        options, root = data.folder, data.data_root
        splits = folder_splits(data)
        if "val" not in splits:
            print(f"(no val split: training holds out val_fraction {data.val_fraction} of train, checked with it)")
    elif args.root is None:
        options = folder_options(args)
        if args.images is None or args.masks is None:
            raise ConfigError("give a dataset folder (--root), a pair of folders (--images and --masks) or a "
                              "training config (--config)")
        report = check_folders(args.images, args.masks, options)
        print(report.summary())
        return 0 if report.ok else 1
    else:
        options = folder_options(args)
        layout = find_splits(args.root, args.layout)
        print(layout.describe(options))
        splits, root = layout.splits, layout.root
    failed = []
    for split, folders in splits.items():
        print(f"\n== {split}: {folders.describe(root)} ==")
        if folders.annotations is not None:
            report = check_annotations(folders.annotations, options)
        else:
            report = check_folders(folders.images_dir, folders.masks_dir, folders.folder_options(options),
                                   pairing=folders.pairing(options))
        print(report.summary())
        if not report.ok:
            failed.append(split)
    print(f"\nproblems in {', '.join(failed)}" if failed else f"\nno problems in {', '.join(splits)}")
    return 1 if failed else 0


def run_convert(args: argparse.Namespace) -> int:
    from seglab.data.annotations.convert import convert_to_masks
    from seglab.data.layouts import find_splits

    options = FolderOptions(class_names=args.class_names, ignore_index=args.ignore_index)
    options.check()
    layout = find_splits(args.source, args.layout)
    print(layout.describe(options))
    summary = convert_to_masks(layout, args.out, options, crowd=args.crowd)
    for found in summary.problems:
        print(f"left out [{found.kind}] {found}")
    for found in summary.warnings:
        print(f"warning [{found.kind}] {found}")
    print(f"classes: {', '.join(summary.class_names)}; wrote {args.out}/seglab.yaml (seglab train "
          f"{args.out}/seglab.yaml)")
    return 1 if summary.problems else 0
