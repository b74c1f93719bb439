"""`seglab export`: a checkpoint as a deployable file (ONNX), checked against PyTorch before it is written; a thin
layer over `seglab.export.onnx.export_onnx`."""

from __future__ import annotations

import argparse

FORMATS = ("onnx",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX (with its inference spec), checked against PyTorch",
        description="Write the network (normalised images in, logits out; dynamic batch, height and width) with the "
                    "checkpoint's InferenceSpec in the file's metadata, so that `seglab predict FILE.onnx` needs "
                    "nothing else. The file is written only if ONNX Runtime's probabilities on random images of two "
                    "sizes match PyTorch fp32 within 1e-3. Needs the onnx extra: pip install 'seglab[onnx]'.")
    parser.add_argument("checkpoint", help="a seglab checkpoint (.ckpt) or run folder (uses its best.ckpt)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="file format (default onnx)")
    parser.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default: torch's)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from seglab.export.onnx import export_onnx

    report = export_onnx(args.checkpoint, args.out, opset=args.opset)
    print("\n".join(report.lines()))
    return 0
