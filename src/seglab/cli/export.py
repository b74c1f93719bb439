"""`seglab export`: a checkpoint as a deployable file (ONNX, optionally quantised to INT8), checked before it is
written; a thin layer over `seglab.export.onnx.export_onnx` and `seglab.export.int8.export_int8`."""

from __future__ import annotations

import argparse

from seglab.cli.data import add_mask_options, mask_options
from seglab.export import options as int8

FORMATS = ("onnx",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX (with its inference spec), checked against PyTorch",
        description="Write the network (normalised images in, logits out; dynamic batch, height and width) with the "
                    "checkpoint's InferenceSpec in the file's metadata, so that `seglab predict FILE.onnx` needs "
                    "nothing else. The file is written only if ONNX Runtime's probabilities on random images of two "
                    "sizes match PyTorch fp32 within 1e-3. With --int8 the file is statically quantised (uint8 "
                    "activations, int8 weights) and written only if its class maps agree with the float model's. "
                    "Needs the onnx extra: pip install 'seglab[onnx]'.")
    parser.add_argument("checkpoint", help="a seglab checkpoint (.ckpt) or run folder (uses its best.ckpt)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="file format (default onnx)")
    parser.add_argument("--out", required=True, help="the file to write, e.g. model.onnx or model.int8.onnx")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default: torch's)")
    quantised = parser.add_argument_group("INT8 (quantised ONNX)")
    quantised.add_argument("--int8", action="store_true",
                           help="quantise statically (ONNX Runtime QDQ): needs --calibration")
    quantised.add_argument("--calibration", default=None, metavar="DIR",
                           help="images the activation ranges are measured on, read and resized as `seglab predict` "
                                "reads them: images like those the model will see")
    quantised.add_argument("--calibration-images", type=int, default=int8.DEFAULT_CALIBRATION_IMAGES, metavar="N",
                           help=f"use the first N images of --calibration (default {int8.DEFAULT_CALIBRATION_IMAGES})")
    quantised.add_argument("--calibration-method", default=int8.DEFAULT_METHOD, choices=tuple(int8.CALIBRATION_METHODS),
                           help=f"how ranges are set from the measured activations (default {int8.DEFAULT_METHOD}, "
                                "chosen on validation data: see the README)")
    quantised.add_argument("--keep-float", default=int8.DEFAULT_KEEP_FLOAT, choices=int8.KEEP_FLOAT,
                           help="ends: leave the first convolution and the classifier in float (default "
                                f"{int8.DEFAULT_KEEP_FLOAT})")
    quantised.add_argument("--per-tensor", action="store_true",
                           help="one weight scale per tensor instead of per output channel")
    quantised.add_argument("--check", default=None, metavar="DIR",
                           help="compare INT8 with float on these images (default: the calibration images)")
    quantised.add_argument("--check-masks", default=None, metavar="DIR",
                           help="masks for --check, paired by file stem as `seglab evaluate --images/--masks` pairs "
                                "them: each model's mIoU is reported too")
    quantised.add_argument("--min-agreement", type=float, default=int8.DEFAULT_MIN_AGREEMENT, metavar="FRACTION",
                           help="refuse to write the file when fewer pixels than this get the float model's class "
                                f"(default {int8.DEFAULT_MIN_AGREEMENT})")
    add_mask_options(quantised)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from seglab.errors import ConfigError

    if not args.int8:
        given = [f"--{name.replace('_', '-')}" for name in ("calibration", "check", "check_masks")
                 if getattr(args, name) is not None]
        if given or args.per_tensor:
            raise ConfigError(f"{', '.join(given) or '--per-tensor'} applies to INT8 export: add --int8")
        from seglab.export.onnx import export_onnx

        report = export_onnx(args.checkpoint, args.out, opset=args.opset)
        print("\n".join(report.lines()))
        return 0
    if args.calibration is None:
        raise ConfigError("--int8 needs --calibration DIR: a folder of images like those the model will see, to "
                          "measure the activation ranges on")
    from seglab.export.int8 import QuantizationSettings, export_int8

    settings = QuantizationSettings(calibration_method=args.calibration_method,
                                    calibration_images=args.calibration_images, keep_float=args.keep_float,
                                    per_channel=not args.per_tensor)
    report = export_int8(args.checkpoint, args.out, calibration=args.calibration, settings=settings,
                         check=args.check, check_masks=args.check_masks, masks_read=mask_options(args),
                         min_agreement=args.min_agreement, opset=args.opset)
    print("\n".join(report.lines()))
    return 0
