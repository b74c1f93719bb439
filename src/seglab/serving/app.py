"""The HTTP service around a `Predictor`: `create_app` builds the FastAPI application `seglab serve` runs.

Every limit is applied before the work it protects: the content type and declared length before the body is
read, the body's size while it is read, the pixel count from the image's header before decoding, the queue's
bound before an image waits. A request whose client leaves, or whose time runs out, is taken out of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.resources
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from seglab.inference.predictor import Predictor, class_map
from seglab.serving.answers import FORMATS, choose_format, encode_answer
from seglab.serving.batching import Batcher, Job, QueueFull
from seglab.serving.images import decode_image
from seglab.serving.metrics import ServeMetrics
from seglab.serving.refusals import Refusal
from seglab.serving.settings import ServeSettings
from seglab.version import __version__

# Media types taken as the raw image body; multipart/form-data carries it as a file field.
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
# A 503 asks the client to come back after this many seconds: about one batch of large images on a CPU.
RETRY_AFTER_S = 1
# Side of the blank image pushed through the model before /ready says yes (first-call allocations and kernels).
WARM_UP_SIDE = 64


@dataclasses.dataclass
class ServiceState:
    """What the endpoints share: the model, the settings, the batcher and whether the service takes requests."""

    predictor: Predictor
    settings: ServeSettings
    metrics: ServeMetrics
    batcher: Batcher
    predict_options: Mapping[str, Any]
    ready: bool = False
    draining: bool = False  # set on SIGTERM: in-flight requests finish, new ones get 503


def predict_same_size(predictor: Predictor, images: Sequence[np.ndarray], options: Mapping[str, Any]
                      ) -> list[np.ndarray]:
    """Class maps for decoded RGB uint8 arrays of one size, in one call of `Predictor.scores` (one forward pass
    without tiles or TTA), whatever the predictor's own `batch_size`."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    scores, _ = predictor.scores(batch, **options)
    return list(class_map(scores, dim=1).to(torch.uint8).numpy())


def model_description(state: ServiceState) -> dict[str, Any]:
    """`GET /model`: the classes, their colours, how the model sees an input, the engine and the limits."""
    predictor, spec, settings = state.predictor, state.predictor.spec, state.settings
    return {
        "model": spec.model, "num_classes": spec.num_classes, "class_names": list(spec.class_names),
        "palette": [list(colour) for colour in spec.palette], "ignore_index": spec.ignore_index,
        "input": {"working_size": None if spec.working_size is None else list(spec.working_size),
                  "keep_aspect": spec.keep_aspect, "working_short_side": spec.working_short_side,
                  "working_scale": spec.working_scale, "mean": list(spec.mean), "std": list(spec.std)},
        "engine": predictor.engine, "device": str(predictor.device), "precision": predictor.precision,
        "predict_options": dict(state.predict_options),
        "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                     "queue": settings.queue, "rule": "images of one size share a forward pass"},
        "limits": {"max_body_bytes": settings.max_body_bytes, "max_pixels": settings.max_pixels,
                   "timeout_s": settings.timeout_s},
        "formats": dict(FORMATS), "seglab_version": __version__,
    }


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is declared or found to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refusal("body-too-large", f"the body declares {int(declared):,} bytes; this service takes at most "
                                        f"{limit:,} (--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal("body-too-large", f"the body exceeds {limit:,} bytes (--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image's bytes from a raw image body or from the first file field of a multipart form."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        body = await read_body(request, limit)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=limit)
        except (MultiPartException, HTTPException) as error:  # Starlette wraps the first in the second in apps
            reason = getattr(error, "message", None) or getattr(error, "detail", "")
            raise Refusal("bad-multipart", f"the multipart form does not parse ({reason}); send one file field, "
                                           "e.g. curl -F image=@photo.jpg") from None
        try:
            upload = next((value for _, value in form.multi_items() if isinstance(value, UploadFile)), None)
            if upload is None:
                raise Refusal("no-file", "the multipart form has no file field; send the image as one, e.g. "
                                         "curl -F image=@photo.jpg")
            return await upload.read()
        finally:
            await form.close()
    if content_type.startswith(RAW_IMAGE_TYPES):
        return await read_body(request, limit)
    raise Refusal("unsupported-content-type", f"Content-Type {content_type or '(none)'!r} is not an image; send "
                                              "the file with Content-Type image/... or application/octet-stream, "
                                              "or as multipart/form-data (curl -F image=@photo.jpg)")


async def client_left(request: Request) -> None:
    """Returns when the client disconnects (the body is already read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer_of(job: Job, request: Request, batcher: Batcher, timeout_s: float) -> np.ndarray | None:
    """`job`'s class map, or None if the client disconnected first; a `Refusal` when `timeout_s` pass first or
    the model failed. Unless answered, the job leaves the queue, whatever ends the wait (this task's
    cancellation included)."""
    watcher = asyncio.ensure_future(client_left(request))
    try:
        done, _ = await asyncio.wait({job.answer, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not job.answer.done():
            batcher.withdraw(job)
    if job.answer in done:
        try:
            return job.answer.result()
        except Exception as error:
            raise Refusal("prediction-failed", f"the model failed on this image ({type(error).__name__}: "
                                               f"{error})") from None
    if watcher in done:
        return None
    raise Refusal("timeout", "no answer within the request's --timeout-s; the service is overloaded or the image "
                             "is too large for it")


def create_app(predictor: Predictor, settings: ServeSettings | None = None, *,
               predict_options: Mapping[str, Any] | None = None) -> FastAPI:
    """The service for `predictor` (see `seglab serve`): `POST /predict`, `GET /`, `/health`, `/ready`, `/model`
    and `/metrics`. `predict_options` (tile, overlap, tta, scales) go to every prediction."""
    settings = settings or ServeSettings()
    options = dict(predict_options or {})
    metrics = ServeMetrics()
    batcher = Batcher(lambda images: predict_same_size(predictor, images, options), max_batch=settings.max_batch,
                      max_wait_s=settings.max_wait_ms / 1000, max_queue=settings.queue, metrics=metrics)
    state = ServiceState(predictor, settings, metrics, batcher, options)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        blank = np.zeros((WARM_UP_SIDE, WARM_UP_SIDE, 3), dtype=np.uint8)
        await asyncio.to_thread(predict_same_size, predictor, [blank], options)
        batcher.start()
        state.ready = True
        yield
        state.ready = False
        await batcher.stop()

    app = FastAPI(title="seglab serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = state

    def answer(endpoint: str, response: Response) -> Response:
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    def refused(endpoint: str, refusal: Refusal) -> Response:
        metrics.rejections.labels(refusal.code).inc()
        return answer(endpoint, JSONResponse(refusal.body(), status_code=refusal.status, headers=refusal.headers))

    html = importlib.resources.files("seglab.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> Response:
        return answer("/", HTMLResponse(html))

    @app.get("/health")
    async def health() -> Response:
        return answer("/health", JSONResponse({"status": "ok"}))

    @app.get("/ready")
    async def ready() -> Response:
        is_ready = state.ready and not state.draining
        status = "ready" if is_ready else "draining" if state.draining else "loading"
        return answer("/ready", JSONResponse({"ready": is_ready, "status": status},
                                             status_code=200 if is_ready else 503))

    @app.get("/model")
    async def model() -> Response:
        return answer("/model", JSONResponse(model_description(state)))

    @app.get("/metrics")
    async def metrics_text() -> Response:  # not counted in seglab_requests: scrapes would swamp the counts
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        arrived = time.monotonic()
        try:
            if state.draining:
                raise Refusal("shutting-down", "the service is stopping; send the request to another instance or "
                                               "retry later", headers={"Retry-After": str(RETRY_AFTER_S)})
            answer_format = choose_format(request.query_params.get("format"), request.headers.get("accept"))
            deadline = arrived + settings.timeout_s
            try:  # a slow upload holds a connection and memory: it gets the request's time, no more
                body = await asyncio.wait_for(image_bytes(request, settings.max_body_bytes), settings.timeout_s)
            except TimeoutError:
                raise Refusal("upload-timeout", f"the body did not arrive within {settings.timeout_s:g} s "
                                                "(--timeout-s); send it faster or as a smaller file") from None
            image = await asyncio.to_thread(decode_image, body, max_pixels=settings.max_pixels)
            del body
            try:
                job = batcher.submit(image)
            except QueueFull:
                raise Refusal("queue-full", f"{settings.queue} images already wait for the model; retry after "
                                            f"{RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)}
                              ) from None
            mask = await answer_of(job, request, batcher, max(0.0, deadline - time.monotonic()))
            if mask is None:
                metrics.rejections.labels("client-gone").inc()
                # Nobody reads it: 499 is nginx's "client closed request", for the access log.
                return answer("/predict", Response(status_code=499))
            with_mask = request.query_params.get("mask") in ("1", "true")
            content, media_type = await asyncio.to_thread(encode_answer, mask, predictor.spec, answer_format,
                                                          with_mask=with_mask)
        except Refusal as refusal:
            return refused("/predict", refusal)
        except ClientDisconnect:  # the client left while its body was being read: nothing was queued
            metrics.rejections.labels("client-gone").inc()
            return answer("/predict", Response(status_code=499))
        metrics.latency.observe(time.monotonic() - arrived)
        return answer("/predict", Response(content, media_type=media_type))

    return app
