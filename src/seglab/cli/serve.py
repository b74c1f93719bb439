"""`seglab serve MODEL`: a thin layer over `seglab.serving.serve` (FastAPI and torch load inside the handler)."""

from __future__ import annotations

import argparse

from seglab.cli.predict import parse_scales
from seglab.inference.options import ENGINES, PRECISIONS, TTA_MODES
from seglab.serving.settings import ServeSettings

DEFAULTS = ServeSettings()


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve a trained model over HTTP: POST /predict, a drop-an-image page at /, metrics",
        description="Serve MODEL over HTTP with dynamic batching (images of one size share a forward pass). "
                    "Endpoints: POST /predict (?format=png|index|json|rle), GET / (page), /health, /ready, "
                    "/model, /metrics (Prometheus). SIGTERM finishes the requests in flight, then stops.")
    serve.add_argument("model", metavar="MODEL",
                       help="a seglab checkpoint (.ckpt), run folder (uses its best.ckpt) or .onnx / INT8 export")
    serve.add_argument("--host", default=DEFAULTS.host,
                       help=f"address to bind (default {DEFAULTS.host}: this machine only; 0.0.0.0 exposes it)")
    serve.add_argument("--port", type=int, default=DEFAULTS.port, help=f"TCP port (default {DEFAULTS.port})")
    serve.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch,
                       help=f"most images per forward pass (default {DEFAULTS.max_batch})")
    serve.add_argument("--max-wait-ms", type=float, default=DEFAULTS.max_wait_ms,
                       help="longest the oldest waiting image waits for others of its size before its pass "
                            f"(default {DEFAULTS.max_wait_ms:g})")
    serve.add_argument("--queue", type=int, default=DEFAULTS.queue,
                       help=f"most images waiting; more get 503 + Retry-After (default {DEFAULTS.queue})")
    serve.add_argument("--timeout-s", type=float, default=DEFAULTS.timeout_s,
                       help="seconds from a request's arrival to its answer: 408 for a body still arriving, 504 "
                            f"after (default {DEFAULTS.timeout_s:g})")
    serve.add_argument("--max-body-mb", type=float, default=DEFAULTS.max_body_mb,
                       help=f"largest request body in MB; larger gets 413 (default {DEFAULTS.max_body_mb:g})")
    serve.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels,
                       help="largest image in pixels, read from its header before decoding; larger gets 413 "
                            f"(default {DEFAULTS.max_pixels:,})")
    serve.add_argument("--engine", default="auto", choices=("auto", *ENGINES),
                       help="what runs the model (default auto: onnxruntime for an .onnx file, else pytorch)")
    serve.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a GPU if there is one)")
    serve.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="number format (default auto: bf16 where the hardware runs it fast, else fp32)")
    serve.add_argument("--tile", type=int, default=None, metavar="SIZE",
                       help="predict in sliding SIZE-pixel windows at the model's working size (large images)")
    serve.add_argument("--tta", choices=TTA_MODES, default=None, help="average with the horizontally flipped image")
    serve.add_argument("--scales", type=parse_scales, default=None, metavar="S1,S2,...",
                       help="average over these multiples of the working size, e.g. 0.75,1,1.25")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from seglab.serving.server import serve

    settings = ServeSettings(host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             queue=args.queue, timeout_s=args.timeout_s, max_body_mb=args.max_body_mb,
                             max_pixels=args.max_pixels)
    options = {key: value for key, value in (("tile", args.tile), ("tta", args.tta), ("scales", args.scales))
               if value is not None}
    serve(args.model, settings, engine=args.engine, device=args.device, precision=args.precision,
          predict_options=options)
    return 0
