"""The `seglab` command line: one module per command group, each a thin layer over the Python API.

Each module exposes `register(subparsers)`, which adds its sub-commands and sets `handler` on them. Heavy
imports (torch, lightning) happen inside handlers so that `seglab --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from seglab.cli import data as data_commands
from seglab.cli import export as export_commands
from seglab.cli import models as models_commands
from seglab.cli import predict as predict_commands
from seglab.cli import report as report_commands
from seglab.cli import serve as serve_commands
from seglab.cli import train as train_commands
from seglab.errors import SeglabError

COMMAND_GROUPS = (models_commands, data_commands, train_commands, predict_commands, export_commands, report_commands,
                  serve_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seglab", description="seglab: semantic segmentation toolkit (FCN-VGG16, DeepLabV3+)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SeglabError as error:
        tag = getattr(error, "kind", None)  # a FileProblem's tag, as `seglab data check` prints it
        print(f"seglab: error: {f'[{tag}] ' if tag else ''}{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seglab: interrupted", file=sys.stderr)
        return 130
