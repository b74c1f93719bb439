"""`seglab train` (a config file, or --resume a run folder) and `seglab demo` (the README's main job)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train a model from a flat YAML config (see configs/), or resume a run",
        description="Train from CONFIG.yaml into runs/<name>/, or continue runs/<name> exactly with --resume.")
    train.add_argument("config", nargs="?", help="flat YAML config, e.g. configs/shapes_deeplabv3plus_xception41.yaml")
    train.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="override config keys, values parsed as YAML (e.g. --set lr=3e-4 max_epochs=5)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue runs/<name> from checkpoints/last.ckpt")
    train.add_argument("--help-config", action="store_true",
                       help="list every config key: default, type, meaning, accepted values, resume rule")
    train.set_defaults(handler=run_train)

    demo = subparsers.add_parser(
        "demo", help="train DeepLabV3+ from scratch on built-in shapes under a time budget, then evaluate",
        description="Train DeepLabV3+ (Xception-41) on shapes v1 at 128 px for --minutes, evaluate on the test "
                    "split, save predicted masks and an image/prediction/truth grid to runs/demo/results/.")
    demo.add_argument("--minutes", type=float, default=None,
                      help="training budget in wall-clock minutes (default 10 on a CPU, 3 with a GPU)")
    demo.add_argument("--runs-dir", default="runs", help="parent folder of runs/demo (default runs)")
    demo.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                      help="override recipe keys, as for `seglab train`")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace runs/demo even if an earlier demo did not make it (a seglab run folder only)")
    demo.set_defaults(handler=run_demo)


def run_train(args: argparse.Namespace) -> int:
    from seglab.errors import ConfigError
    from seglab.training.config import help_config_text

    if args.help_config:
        print(help_config_text(), end="")
        return 0
    from seglab.training.callbacks import TrainingInterrupted
    from seglab.training.config import load_config
    from seglab.training.run import resume, train

    if args.config and args.resume:
        raise ConfigError("give either CONFIG or --resume RUN_DIR, not both (the run folder has its config)")
    if not args.config and not args.resume:
        raise ConfigError("missing CONFIG: `seglab train CONFIG.yaml` (see configs/) or `--resume RUN_DIR`")
    try:
        result = resume(args.resume, args.overrides) if args.resume else train(
            load_config(args.config, args.overrides))
    except TrainingInterrupted as stop:
        print(f"seglab: {stop}", file=sys.stderr)
        return stop.exit_code
    if result.trainer.is_global_zero:
        best = f"{result.best_miou:.4f}" if result.best_miou is not None else "n/a"
        print(f"run folder: {result.run_dir}  best val mIoU: {best}  best checkpoint: {result.best_checkpoint}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from seglab.apps.demo import demo_config, run_demo
    from seglab.training.config import parse_overrides

    config = demo_config(args.minutes, runs_dir=args.runs_dir, **parse_overrides(args.overrides))
    run_demo(config, overwrite=args.overwrite)
    return 0
