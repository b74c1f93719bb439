"""`seglab serve`: a trained model as an HTTP service with dynamic batching, limits and a drop-an-image page.

    from seglab.serving import ServeSettings, serve
    serve("runs/demo", ServeSettings(port=8000, max_batch=8))

`create_app(predictor, settings)` gives the FastAPI application itself (for tests or another ASGI server).
Names are imported on first use, so that `seglab.serving.settings` loads without torch or FastAPI.
"""

from __future__ import annotations

from seglab.lazy import lazy_exports

_EXPORTS = {
    "ServeSettings": "settings", "create_app": "app", "serve": "server", "Refusal": "refusals",
    "REFUSAL_STATUS": "refusals",
    # The service's steps, for another server around a Predictor (benchmarks/serve.py's LitServe contender).
    "decode_image": "images", "predict_same_size": "app", "encode_answer": "answers",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
