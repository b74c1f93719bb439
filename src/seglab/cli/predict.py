"""`seglab predict` (masks for files and folders) and `seglab evaluate` (scores on a split or folders): thin
layers over `seglab.inference` and `seglab.evaluation.checkpoint`."""

from __future__ import annotations

import argparse
import sys

from seglab.cli.data import add_mask_options, mask_options
from seglab.inference.options import ENGINES, PRECISIONS, TTA_MODES


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes comma-separated numbers, e.g. 0.75,1,1.25; got {text!r}"
                                         ) from None
    if not scales or any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(f"--scales must be positive numbers, got {text!r}")
    return scales


def _add_engine_options(parser: argparse.ArgumentParser, *, default_precision: str) -> None:
    parser.add_argument("--engine", default="auto", choices=("auto", *ENGINES),
                        help="what runs the model (default auto: onnxruntime for an .onnx file from seglab export, "
                             "else pytorch); onnxruntime runs on the CPU in fp32")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a GPU if there is one)")
    parser.add_argument("--precision", default=default_precision, choices=PRECISIONS,
                        help=f"number format (default {default_precision}; auto = bf16 where the hardware runs it "
                             "fast, else fp32)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--tile-batch", type=int, default=None,
                        help="windows per forward pass with --tile (default 1 on a CPU: fastest and smallest there; "
                             "--batch-size on a GPU)")
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE",
                        help="sliding-window inference with SIZE-pixel windows at the model's working size "
                             "(large images)")
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction (default 0.25)")
    parser.add_argument("--tta", choices=TTA_MODES, default=None, help="average with the horizontally flipped image")
    parser.add_argument("--scales", type=parse_scales, default=None, metavar="S1,S2,...",
                        help="average over these multiples of the working size, e.g. 0.75,1,1.25")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
        "predict", help="predict masks for image files, folders and globs with a trained checkpoint",
        description="Write OUT/<stem>.png (palette PNG of class indices) for every input image; bad inputs are "
                    "reported at the end and make the exit code 1.")
    predict.add_argument("checkpoint", metavar="MODEL",
                         help="a seglab checkpoint (.ckpt), run folder (uses its best.ckpt) or .onnx export")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    predict.add_argument("--out", required=True, help="output folder (never an input folder)")
    predict.add_argument("--recursive", action="store_true", help="include sub-folders, mirrored under --out")
    predict.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (colours over image)")
    predict.add_argument("--save-probs", action="store_true", help="also write <stem>_probs.npy (C,H,W float16)")
    predict.add_argument("--masks", default=None, metavar="DIR",
                         help="ground-truth masks paired by stem: adds per_image.csv and image/prediction/truth "
                              "grids")
    predict.add_argument("--format", default=None, choices=("coco", "labelme", "cvat", "labelstudio"),
                         help="also write the predictions as annotations an annotation tool imports, each object "
                              "with its class and score: coco (OUT/predictions.coco.json), labelme "
                              "(OUT/<stem>.json), cvat (OUT/annotations.xml, CVAT for images 1.1) or labelstudio "
                              "(OUT/predictions.labelstudio.json, tasks with predictions); polygons traced from the "
                              "masks (docs/guides/annotations.md)")
    predict.add_argument("--rle", action="store_true",
                         help="with --format coco, cvat or labelstudio: one exact RLE object per class instead of "
                              "polygons")
    predict.add_argument("--image-prefix", default="", metavar="PREFIX",
                         help="with --format labelstudio: put PREFIX before each image's file name in the tasks' "
                              "data.image, e.g. /data/local-files/?d=photos/")
    add_mask_options(predict)
    predict.add_argument("--overwrite", action="store_true", help="replace existing output files")
    predict.add_argument("--skip-existing", action="store_true",
                         help="predict only the inputs whose outputs are missing (a rerun after a crash); refused if "
                              "--out was written by another model or with other options (its seglab-predict.json)")
    predict.add_argument("--compile", action="store_true",
                         help="torch.compile the network with frozen weights: ~20 s to compile per input shape; on "
                              "the 2-core CPU measured it then ran as fast as the default at batch 8 and slower at "
                              "batch 1 (benchmarks/results/speed.md)")
    _add_engine_options(predict, default_precision="auto")
    scale = predict.add_argument_group("across processes and machines (Lightning's predict loop under DDP)")
    scale.add_argument("--devices", type=int, default=None,
                       help="processes per machine, one per device (default: what torchrun or SLURM started, else 1)")
    scale.add_argument("--num-nodes", type=int, default=None,
                       help="machines (default: what torchrun or SLURM started, else 1)")
    scale.add_argument("--workers", type=int, default=2,
                       help="decoding and writing threads in one process; image-decoding worker processes per "
                            "process across devices (default 2)")
    scale.add_argument("--concurrent-calls", type=int, default=None, metavar="N",
                       help="on a CPU: images predicted at once in one process, the cores shared among them "
                            "(default: one per core, one thread each, when there are at least two images per core, "
                            "without --tile or --compile; else 1)")
    scale.add_argument("--ddp-timeout-s", type=float, default=1800,
                       help="how long a process waits for the others at the end before naming them lost "
                            "(default 1800)")
    predict.set_defaults(handler=run_predict)

    evaluate = subparsers.add_parser(
        "evaluate", help="score a checkpoint on its run's val/test split or on image/mask folders",
        description="Pixel accuracy, mean class accuracy, mIoU, frequency-weighted IoU, per-class IoU, Dice, "
                    "precision and recall (ignore_index excluded); writes metrics.json, per_image.csv and the "
                    "confusion matrix (CSV, PNG) to --out (default <run>/evaluate/<split>/, or "
                    "<run>/evaluate/folder-<name>/ for --images/--masks).")
    evaluate.add_argument("checkpoint", metavar="MODEL",
                          help="a seglab checkpoint (.ckpt), run folder (uses its best.ckpt) or .onnx export (scored "
                               "on --images/--masks)")
    evaluate.add_argument("--split", default="test", choices=("val", "test"),
                          help="split of the run's own dataset (default test)")
    evaluate.add_argument("--images", default=None, metavar="DIR", help="evaluate on this image folder instead")
    evaluate.add_argument("--masks", default=None, metavar="DIR", help="its masks, paired by file stem")
    add_mask_options(evaluate)
    evaluate.add_argument("--out", default=None,
                          help="report folder (default <run>/evaluate/<split>/; for --images/--masks "
                               "<run>/evaluate/folder-<name>/, <name> the image folder's own name, so a folder "
                               "never takes a split's place)")
    _add_engine_options(evaluate, default_precision="fp32")
    evaluate.set_defaults(handler=run_evaluate)


def _progress(args: argparse.Namespace, total: int | None, unit: str):
    from tqdm import tqdm

    return lambda items: tqdm(items, total=total, unit=unit, disable=args.no_progress, file=sys.stderr)


def prediction_manifest(args: argparse.Namespace):
    """This run's `PredictionManifest`: the model file's sha256 and the options that change the outputs."""
    from seglab.evaluation.checkpoint import checkpoint_identity
    from seglab.inference.loading import checkpoint_path, resolve_engine
    from seglab.inference.manifest import PredictionManifest

    model = checkpoint_path(args.checkpoint)
    options = {"engine": resolve_engine(args.checkpoint, args.engine), "precision": args.precision,
               "tile": args.tile, "overlap": args.overlap, "tta": args.tta, "scales": args.scales,
               "overlay": args.overlay, "save_probs": args.save_probs}
    return PredictionManifest.for_run(model, checkpoint_identity(model), options)


def annotations_todo(format_name: str, out, items: list, todo: list) -> list:
    """The inputs to predict with `--format` after `--skip-existing` kept `todo` of `items`. A LabelMe file is
    written after its image's mask, so an input whose mask exists without its JSON (a run killed between the
    two) is predicted again. The other formats write one file for the whole run at its end: a rerun that skips
    inputs would write that file without them, so it is refused before anything is written."""
    from seglab.data.annotations.export import PREDICTION_FILES
    from seglab.errors import ConfigError

    if format_name == "labelme":
        pending = set(todo)
        return [item for item in items
                if item in pending or not (out / item.name).with_suffix(".json").exists()]
    if len(todo) < len(items):
        raise ConfigError(
            f"--format {format_name} writes {out / PREDICTION_FILES[format_name]} for all the images of a run, and "
            f"--skip-existing would leave out the {len(items) - len(todo)} whose masks exist already: rerun with "
            "--overwrite (predicts every image again), or use --format labelme (one file per image)")
    return todo


def run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seglab.errors import ConfigError
    from seglab.evaluation.mask_scoring import MaskScorer
    from seglab.inference.device import resolve_device
    from seglab.inference.files import check_output_folder, collect_inputs, predict_files
    from seglab.inference.loading import load, resolve_engine
    from seglab.inference.manifest import prepare_output_folder
    from seglab.inference.predictor import calls_for_folder

    items, problems = collect_inputs(args.inputs, recursive=args.recursive)
    out = Path(args.out)
    check_output_folder(out, args.inputs, items, masks=args.masks, overlay=args.overlay,
                        save_probs=args.save_probs)
    if may_be_distributed(args):
        from seglab.training.predict_loop import is_distributed

        if is_distributed(args.devices, args.num_nodes):
            return run_predict_distributed(args, items, problems)
    if args.concurrent_calls is not None and args.concurrent_calls < 1:
        raise ConfigError(f"--concurrent-calls must be 1 or more, got {args.concurrent_calls}")
    concurrent_calls = args.concurrent_calls or 1
    if args.concurrent_calls is None and args.tile is None and not args.compile and (
            resolve_engine(args.checkpoint, args.engine) == "onnxruntime" or resolve_device(args.device).type == "cpu"):
        concurrent_calls = calls_for_folder(len(items))
    predictor = load(args.checkpoint, engine=args.engine, device=args.device, precision=args.precision,
                     batch_size=args.batch_size, tile_batch=args.tile_batch, compile=args.compile,
                     concurrent_calls=concurrent_calls)
    todo = prepare_output_folder(out, prediction_manifest(args), items, overlay=args.overlay,
                                 save_probs=args.save_probs, overwrite=args.overwrite, skip_existing=args.skip_existing)
    if args.format:
        todo = annotations_todo(args.format, out, items, todo)
    skipped = f" ({len(items) - len(todo)} done already)" if len(todo) < len(items) else ""
    print(f"{predictor}: {len(todo)} image(s) -> {out}{skipped}", file=sys.stderr)
    scorer = MaskScorer(args.masks, mask_options(args), predictor.spec) if args.masks else None
    writer = None
    if args.format:
        from seglab.data.annotations.export import AnnotationWriter

        writer = AnnotationWriter(args.format, out, predictor.spec.class_names, then=scorer,
                                  names={item.path: item.name for item in todo}, mode="rle" if args.rle else "polygons",
                                  model_version=f"seglab {Path(args.checkpoint).name}", image_prefix=args.image_prefix)
    # The folder was checked just above (prepare_output_folder): what is written now may replace a partial output.
    summary = predict_files(predictor, todo, out, overlay=args.overlay, save_probs=args.save_probs,
                            overwrite=True, tile=args.tile, overlap=args.overlap, tta=args.tta,
                            scales=args.scales, on_written=writer or scorer, progress=_progress(args, len(todo), "img"),
                            workers=args.workers, confidence=writer is not None)
    print(summary.times.report(summary.predicted), file=sys.stderr)
    if writer is not None:
        print(f"annotations ({args.format}): {len(writer.close())} file(s) in {out}", file=sys.stderr)
    summary.failures[:0] = problems
    if scorer is not None:
        summary.failures += scorer.failures
        scorer.write(out)
        rows = scorer.tally.per_image
        if rows:
            accuracy = sum(row["pixel_accuracy"] for row in rows) / len(rows)
            print(f"scored {len(rows)} image(s) against {args.masks}: mean per-image pixel accuracy "
                  f"{accuracy:.4f}; per_image.csv and grids/ in {out}")
    print(summary.report(out))
    return 0 if summary.ok else 1


def may_be_distributed(args: argparse.Namespace) -> bool:
    """Whether several processes may be asked for: a flag, or torchrun's or SLURM's variables. Only then is
    Lightning imported (seconds) to read the geometry."""
    import os

    return bool(args.devices or args.num_nodes or "WORLD_SIZE" in os.environ or "SLURM_NTASKS" in os.environ)


def run_predict_distributed(args: argparse.Namespace, items: list, problems: list) -> int:
    """`seglab predict` on several processes (`--devices`, `--num-nodes`, torchrun, SLURM); rank 0 reports."""
    from seglab.errors import ConfigError
    from seglab.training.predict_loop import options_from, predict_distributed

    if args.masks or args.compile or args.format or args.concurrent_calls:
        raise ConfigError("--masks, --compile, --format and --concurrent-calls run in one process: leave out "
                          "--devices/--num-nodes (and torchrun)")
    accelerator = "auto" if args.device is None else ("cpu" if args.device == "cpu" else "gpu")
    summary, reports = predict_distributed(
        args.checkpoint, items, args.out, prediction_manifest(args), options_from(vars(args)),
        overwrite=args.overwrite, skip_existing=args.skip_existing, devices=args.devices, num_nodes=args.num_nodes,
        accelerator=accelerator, timeout_s=args.ddp_timeout_s, progress=not args.no_progress)
    summary.failures[:0] = problems
    if reports:
        print(summary.report(args.out))
    return 0 if summary.ok else 1


def run_evaluate(args: argparse.Namespace) -> int:
    from seglab.evaluation.checkpoint import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint, split=args.split, images=args.images, masks=args.masks, masks_read=mask_options(args),
        out=args.out, engine=args.engine, device=args.device,
        precision=args.precision, batch_size=args.batch_size, tile_batch=args.tile_batch, tile=args.tile,
        overlap=args.overlap, tta=args.tta,
        scales=args.scales, progress=_progress(args, None, "batch"))
    print(result.table)
    print(f"reports: {result.out}/metrics.json, per_image.csv, confusion_matrix.csv, confusion_matrix.png")
    return 0
