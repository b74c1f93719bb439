"""`seglab models`: the registered architectures with their parameter counts and forward cost."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the registered models with parameters and GFLOPs")
    parser.add_argument("--num-classes", type=int, default=21, help="classes of the head (default 21, as in VOC)")
    parser.add_argument("--size", type=int, default=224, help="square input size for the GFLOPs column")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from seglab.models import describe_models

    rows = describe_models(num_classes=args.num_classes, input_size=args.size)
    header = ("model", "parameters (M)", f"GFLOPs @ {args.size}x{args.size}")
    widths = [max(len(header[0]), *(len(r.name) for r in rows)), len(header[1]), len(header[2])]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        cells = (r.name, f"{r.parameters / 1e6:.2f}", f"{r.gflops:.1f}")
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    return 0
