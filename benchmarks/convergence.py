"""Convergence: the `seglab demo` recipe (src/seglab/apps/demo.yaml, or it with `--set` changes) trained from
scratch on shapes v1 for a budget of optimizer steps or of minutes, by `seglab.training.train` itself.

Recipes are chosen on validation data only: a row per validation (val mIoU, the step, images seen, seconds),
then best.ckpt (the best val mIoU) scored once on the test split, the run's reported figure. Accuracy per step
does not depend on the device, so a `--steps` screen can run on any machine; `--minutes` measures this one.
Rows go to results/convergence.jsonl, the table to results/convergence.md.

    python benchmarks/convergence.py --label base --steps 1175
    python benchmarks/convergence.py --label base_10min --minutes 10
    python benchmarks/convergence.py --label os8 --steps 600 --set output_stride=8
    python benchmarks/convergence.py --label smoke --steps 4 --set image_size=32 val_length=8 limit_train_batches=2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import Section, append_rows, machine, read_rows, write_report
from seglab.training import load_config, train

DEMO_RECIPE = Path(__file__).resolve().parent.parent / "src" / "seglab" / "apps" / "demo.yaml"


def report() -> None:
    rows = read_rows("convergence")
    finals = [row for row in rows if row["row"] == "best by val, tested once"]
    intro = ("Written by `python benchmarks/convergence.py` (one row per run; the validation rows of each run are in "
             "convergence.jsonl). Recipe: src/seglab/apps/demo.yaml with the changes named; best.ckpt chosen by "
             "val mIoU, then the test split scored once. Earlier screens: steps_to_accuracy.md, "
             "time_to_accuracy.md (INDEX.md).")
    columns = ["label", "changes", "budget", "step", "images_seen", "seconds", "val mIoU %", "test mIoU %",
               "test pixel accuracy %", "date", "cpu", "load_average"]
    write_report("convergence", "Convergence of the demo recipe", intro, [Section("Runs", rows=finals,
                                                                                 columns=columns)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", help="name of this run in the results")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimizer steps to train")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes to train")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="changes to the demo recipe, as for `seglab train --set`")
    parser.add_argument("--report", action="store_true", help="only rewrite convergence.md")
    args = parser.parse_args()
    if args.report:
        report()
        return
    if args.label is None or (args.steps is None) == (args.minutes is None):
        parser.error("--label and one of --steps / --minutes are required")
    limit = [f"max_steps={args.steps}", "max_minutes=null"] if args.steps else [f"max_minutes={args.minutes}"]
    config = load_config(DEMO_RECIPE, [*limit, f"name=convergence_{args.label}", "runs_dir=runs/benchmarks",
                                       "progress_bar=false", "test_after_training=true", *args.overrides])
    result = train(config, overwrite=True)
    if result.test is None:
        raise SystemExit(f"{args.label}: no validation ran within the budget, so no checkpoint was chosen")
    common = {"label": args.label, "changes": " ".join(args.overrides) or "none",
              "budget": f"{args.steps} steps" if args.steps else f"{args.minutes} min", **machine()}

    def row(kind: str, history: dict) -> dict:
        return {**common, "row": kind, "step": int(history["step"]), "images_seen": int(history["images_seen"]),
                "seconds": round(history["elapsed_s"], 1), "val mIoU %": history["val_miou"]}

    best = max(result.history, key=lambda history: history["val_miou"])  # the first of equals, as best.ckpt
    scores = result.test.evaluation.scores
    final = {**row("best by val, tested once", best), "test mIoU %": float(scores["miou"]),
             "test pixel accuracy %": float(scores["pixel_accuracy"])}
    append_rows("convergence", [*(row("validation", history) for history in result.history), final])
    print(f"{args.label}: best val mIoU {best['val_miou']:.4f} at step {final['step']}; test mIoU "
          f"{final['test mIoU %']:.4f}", flush=True)
    report()


if __name__ == "__main__":
    main()
