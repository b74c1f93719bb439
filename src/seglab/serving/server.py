"""`serve`: load a model with `seglab.load` and run its service under uvicorn until SIGTERM or Ctrl+C.

On SIGTERM the service stops accepting connections, answers 503 to requests on connections already open, and
finishes every request it has started (queued ones included) before the process exits.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn

from seglab.inference.loading import load
from seglab.serving.app import ServiceState, create_app
from seglab.serving.settings import ServeSettings

# Seconds a stopping service waits for its last requests: the longest a request may take, plus the answer.
SHUTDOWN_GRACE_S = 5
# Connections beyond the queue and a batch that may be open at once (being read, decoded, or asking /metrics);
# past them uvicorn answers 503 at once, so a flood of slow uploads cannot hold unbounded memory.
SPARE_CONNECTIONS = 32


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which on SIGTERM/SIGINT also marks the service as draining (/ready 503, new
    /predict 503) while uvicorn closes the listening socket and waits for requests in progress."""

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self.service_state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service_state.draining = True
        super().handle_exit(sig, frame)


def serve(model: str | Path, settings: ServeSettings | None = None, *, engine: str | None = None,
          device: str | None = None, precision: str = "auto",
          predict_options: Mapping[str, Any] | None = None) -> None:
    """Serve `model` (a checkpoint, run folder or `.onnx`/INT8 file) over HTTP as `settings` say; returns after
    a graceful shutdown."""
    settings = settings or ServeSettings()
    predictor = load(model, engine=engine, device=device, precision=precision, batch_size=settings.max_batch)
    app = create_app(predictor, settings, predict_options=predict_options)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=math.ceil(settings.timeout_s + SHUTDOWN_GRACE_S),
                            limit_concurrency=settings.queue + settings.max_batch + SPARE_CONNECTIONS)
    server = DrainingServer(config, app.state.service)
    print(f"seglab serve: {predictor} on http://{settings.host}:{settings.port} (page at /, POST /predict); "
          "Ctrl+C or SIGTERM stops it", file=sys.stderr, flush=True)
    server.run()
