"""`seglab report RUN_DIR`: one self-contained HTML page about a run (`seglab.evaluation.html_report`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report", help="write one self-contained HTML page about a run (curves, metrics, predictions)",
        description="Write RUN_DIR/report.html: config, training curves, val/test metrics, per-class IoU, confusion "
                    "matrix, best and worst predictions, model size and speed. Evaluates the run first where "
                    "RUN_DIR/evaluate/ has no scores yet. Open the file in any browser; it needs no network.")
    report.add_argument("run_dir", help="a seglab run folder (runs/<name>)")
    report.add_argument("--out", default=None, help="output file (default RUN_DIR/report.html)")
    report.add_argument("--device", default=None, help="cpu, cuda or cuda:N for the evaluation")
    report.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"),
                        help="number format of the evaluation (default fp32)")
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from seglab.evaluation.html_report import build_report

    path = build_report(args.run_dir, args.out, device=args.device, precision=args.precision)
    print(f"report: {path} (open it in a browser: file://{path.resolve()})")
    return 0
