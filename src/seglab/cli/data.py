"""`seglab data shapes|pets|check`: export the built-in shapes, fetch Oxford-IIIT Pet, validate users' folders."""

from __future__ import annotations

import argparse

from seglab.errors import ConfigError


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
            colour = colour.strip().lstrip("#")
            if len(colour) != 6:
                raise ValueError
            palette[int(cls)] = (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))
        except ValueError:
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

    check = commands.add_parser("check", help="read every image/mask pair of two folders and report all problems")
    check.add_argument("--images", required=True, help="folder of images")
    check.add_argument("--masks", required=True, help="folder of masks, paired with the images by file stem")
    encoding = add_mask_options(check)
    encoding.add_argument("--num-classes", type=int, help="masks hold class indices 0..N-1")
    check.add_argument("--class-names", help="comma-separated class names (also sets the number of classes)")
    check.add_argument("--ignore-index", type=int, default=255, help="mask value meaning 'void' (default 255)")
    check.set_defaults(handler=run_check)


def add_mask_options(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """How mask files encode classes, as `seglab data check`, `predict --masks` and `evaluate` read them;
    returns the group of mutually exclusive encodings, so a command can add its own."""
    encoding = parser.add_mutually_exclusive_group()
    encoding.add_argument("--value-map", type=parse_value_map, help="stored value -> class, e.g. 0:0,255:1")
    encoding.add_argument("--palette", type=parse_palette, help="class -> colour of RGB masks: 0:#000000,1:#ff0000")
    parser.add_argument("--mask-suffix", default="", help="suffix of mask stems, e.g. _mask for x.jpg <-> x_mask.png")
    return encoding


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
    from seglab.data.validation import check_folders

    class_names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    report = check_folders(
        args.images,
        args.masks,
        num_classes=args.num_classes,
        class_names=class_names,
        value_map=args.value_map,
        palette=args.palette,
        ignore_index=args.ignore_index,
        mask_suffix=args.mask_suffix,
    )
    print(report.summary())
    return 0 if report.ok else 1
