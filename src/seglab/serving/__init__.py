"""`seglab serve`: a trained model as an HTTP service with dynamic batching, limits and a drop-an-image page.

    from seglab.serving import ServeSettings, serve
    serve("runs/demo", ServeSettings(port=8000, max_batch=8))

`create_app(predictor, settings)` gives the FastAPI application itself (for tests or another ASGI server).
Names are imported on first use, so that `seglab.serving.settings` loads without torch or FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.lazy import lazy_exports

# Editors and type checkers read the names here; at run time `__getattr__` imports each one on first use.
if TYPE_CHECKING:
    from seglab.serving.answers import encode_answer as encode_answer
    from seglab.serving.app import create_app as create_app
    from seglab.serving.app import predict_same_size as predict_same_size
    from seglab.serving.images import decode_image as decode_image
    from seglab.serving.refusals import REFUSAL_STATUS as REFUSAL_STATUS
    from seglab.serving.refusals import Refusal as Refusal
    from seglab.serving.server import serve as serve
    from seglab.serving.settings import ServeSettings as ServeSettings

_EXPORTS = {
    "ServeSettings": "settings", "create_app": "app", "serve": "server", "Refusal": "refusals",
    "REFUSAL_STATUS": "refusals",
    # The service's steps, for another server around a Predictor (benchmarks/serve.py's LitServe contender).
    "decode_image": "images", "predict_same_size": "app", "encode_answer": "answers",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
