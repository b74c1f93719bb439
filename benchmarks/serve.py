"""`seglab serve` under load, on loopback only, bounded in requests and time.

- `load`: the issue's table. 512 x 512 photographs (scikit-image's bundled ones, JPEG), requests/s and p50/p99
  latency at 1, 4 and 16 concurrent clients, for
    * `seglab serve` on the INT8 export of DeepLabV3+ Xception-65 (`export_int8`, calibrated on the photographs);
    * `seglab serve` on the float checkpoint with its defaults (precision auto);
    * a plain peer: a FastAPI endpoint running smp `DeepLabV3Plus(tu-xception65)` in bf16 + channels-last once per
      request, as a plain `def` endpoint (FastAPI's thread pool runs requests side by side) and with a lock
      around the model (one forward pass at a time).
  21 classes, random weights, all in one run, every server in its own process (the peer's: `python
  benchmarks/serve.py server KIND`) bound to 127.0.0.1; every client sends the multipart upload a browser or
  `curl -F` sends. The smp peer runs in the peers' environment (benchmarks/peers.sh: smp is not one of seglab's
  dependencies; FastAPI there is seglab's `serve` extra), everything else in seglab's. Writes
  results/serve.{json,md}.

    python benchmarks/serve.py load                          # ~10 min on 2 cores; the peer runs in .venv-peers
    python benchmarks/serve.py --render                      # rewrites serve.md from serve.json

The serving engine choice (seglab serve's FastAPI app against LitServe around the same Predictor; serve.md's
first table, kept in serve.json) was measured by `python benchmarks/serve.py engines` at ee6947c (INDEX.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from fastapi import FastAPI, File, Response, UploadFile
from PIL import Image

from harness import PEER_PYTHON, RESULTS, STUB_NOTE, Section, cpu_name, write_report
from seglab.atomic import write_text_atomically

CLIENT_COUNTS = (1, 4, 16)
PHOTO_SIDE = 512
# Scikit-image's bundled photographs (no download): the load benchmark's inputs and INT8 calibration set.
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
          "brick.png", "grass.png")
MAX_BATCH = 8
MAX_WAIT_MS = 10.0
# Per measured point: at most this many requests per client, and no more than this many seconds.
REQUESTS_PER_CLIENT = {1: 12, 4: 6, 16: 4}
POINT_SECONDS = 90.0


def photographs(side: int = PHOTO_SIDE) -> list[bytes]:
    """The bundled photographs, centre-cropped square and resized to `side`, as JPEG files (quality 90)."""
    import skimage

    photos = []
    for name in PHOTOS:
        image = Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")
        short = min(image.size)
        left, top = (image.width - short) // 2, (image.height - short) // 2
        image = image.crop((left, top, left + short, top + short)).resize((side, side), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def run_peer(port: int, *, locked: bool) -> None:
    """The plain peer: FastAPI + smp DeepLabV3+ (tu-xception65), bf16 + channels-last, one forward per request,
    written as its users write one (a plain `def` endpoint, optionally a lock around the model)."""
    import uvicorn

    from harness import CLASSES, smp_model

    torch.manual_seed(0)
    model = smp_model("tu-xception65").eval().to(memory_format=torch.channels_last)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    palette = np.random.default_rng(0).integers(0, 256, (CLASSES, 3), dtype=np.uint8).flatten().tolist()
    lock = threading.Lock() if locked else None
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(image: Annotated[UploadFile, File()]) -> Response:
        rgb = np.asarray(Image.open(image.file).convert("RGB"))
        batch = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255).sub(mean).div(std)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with lock or contextlib.nullcontext(), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch)
        mask = Image.fromarray(logits.argmax(1)[0].to(torch.uint8).numpy(), mode="P")
        mask.putpalette(palette)
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def running(command: Sequence[str], ready_path: str, timeout: float = 300) -> Iterator[str]:
    """The server `command` on a free port (`--port N`), from when `ready_path` answers 200 to the end of the
    block; yields its /predict URL."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    arguments = [*command, "--port", str(port)]
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(arguments)} exited with {process.returncode}: {process.stderr.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(arguments)} was not ready within {timeout:.0f} s")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def load(url: str, bodies: Sequence[bytes], clients: int, per_client: int, seconds: float = POINT_SECONDS) -> dict:
    """`clients` concurrent clients each POSTing up to `per_client` images (stopping at `seconds`)."""
    import httpx

    latencies: list[float] = []
    failures: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def one_client(client: httpx.AsyncClient, index: int) -> None:
        for number in range(per_client):
            if time.monotonic() > deadline:
                return
            body = bodies[(index + number * clients) % len(bodies)]
            started = time.perf_counter()
            try:
                response = await client.post(url, files={"image": ("photo.jpg", body, "image/jpeg")})
                outcome = str(response.status_code)
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            if outcome == "200":
                latencies.append(time.perf_counter() - started)
            else:
                failures[outcome] = failures.get(outcome, 0) + 1

    async def every_client() -> float:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=max(seconds, 60)) as client:
            started = time.perf_counter()
            await asyncio.gather(*(one_client(client, index) for index in range(clients)))
            return time.perf_counter() - started

    wall = asyncio.run(every_client())
    ordered = sorted(latencies)

    def quantile(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else None

    return {"clients": clients, "answered": len(latencies), "failures": failures, "wall_s": wall,
            "requests_per_s": len(latencies) / wall if wall else 0.0, "p50_s": quantile(0.5),
            "p99_s": quantile(0.99), "mean_s": statistics.fmean(latencies) if latencies else None}


def load_table(workdir: Path, with_peer: bool) -> dict:
    """The issue's table: seglab serve (INT8, float default) and the smp peer (plain def, locked) at 1/4/16 clients;
    without the peer, seglab's rows alone."""
    from harness import seglab_model, write_checkpoint
    from seglab.export import export_int8

    conditions = {"cpu": cpu_name(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "load_average_at_start": os.getloadavg()}
    started_at, bodies = time.strftime("%Y-%m-%d %H:%M:%S"), photographs()
    calibration = workdir / "calibration"
    calibration.mkdir()
    for index, body in enumerate(bodies):
        (calibration / f"{index}.jpg").write_bytes(body)
    torch.manual_seed(0)
    checkpoint = write_checkpoint(seglab_model("deeplabv3plus_xception65"), workdir / "x65.ckpt")
    started = time.perf_counter()
    int8 = export_int8(checkpoint, workdir / "x65.int8.onnx", calibration=calibration, min_agreement=0.0).path
    export_seconds = time.perf_counter() - started
    serve = [sys.executable, "-m", "seglab", "serve", "--max-batch", str(MAX_BATCH), "--max-wait-ms",
             str(MAX_WAIT_MS), "--queue", "256", "--timeout-s", "300"]
    peer = [str(PEER_PYTHON) if PEER_PYTHON.exists() else sys.executable, __file__, "server"]
    contenders = {"seglab serve INT8": ([*serve, str(int8)], "/ready"),
                  "seglab serve float (default)": ([*serve, str(checkpoint)], "/ready"),
                  "smp peer, plain def": ([*peer, "peer"], "/health"),
                  "smp peer, locked": ([*peer, "peer-locked"], "/health")}
    rows: dict[str, list[dict]] = {}
    for name, (command, ready) in contenders.items():
        if name.startswith("smp") and not with_peer:
            continue
        with running(command, ready) as url:
            load(url, bodies, 4, 1, seconds=120)  # warm-up
            rows[name] = []
            for clients in CLIENT_COUNTS:
                rows[name].append(load(url, bodies, clients, REQUESTS_PER_CLIENT[clients]))
                print(name, json.dumps(rows[name][-1]), flush=True)
    return {"machine": conditions, "started": started_at, "rows": rows,
            "int8_export_seconds": export_seconds, "note": STUB_NOTE,
            "conditions": f"{len(bodies)} photographs of {PHOTO_SIDE} x {PHOTO_SIDE} (JPEG q90), multipart uploads; "
                          f"seglab serve --max-batch {MAX_BATCH} --max-wait-ms {MAX_WAIT_MS:g}; requests per "
                          f"client {REQUESTS_PER_CLIENT}, at most {POINT_SECONDS:g} s per point"}


ENGINE_LABELS = {"seglab-tiny": "seglab serve's app (FastAPI + uvicorn, its own batcher)",
                 "litserve-tiny": "LitServe (LitAPI batching, one worker process)"}


def render(report: dict) -> Path:
    """serve.md from serve.json, with the harness's renderer."""
    def ms(value: float | None) -> int | None:
        return None if value is None else round(1000 * value)

    def about(run: dict, more: str) -> str:
        note = f" **Conditions:** {run['machine_note']}." if run.get("machine_note") else ""
        load_average = ", ".join(f"{value:.1f}" for value in run["machine"]["load_average_at_start"])
        return (f"{run['started']}: **{run['machine']['cpu']}**, torch {run['machine']['torch']}, load average at "
                f"start (1, 5, 15 min) {load_average}. {run['conditions']}. {more}{note}")

    sections = []
    engines_run = report.get("engines")
    if engines_run:
        sections.append(Section(
            "Serving engine: FastAPI + uvicorn vs LitServe",
            about(engines_run, "The same Predictor (a 1x1 convolution), decoding and PNG answer in both."),
            [{"engine": ENGINE_LABELS.get(kind, kind), "requests/s": row["requests_per_s"],
              "rounds": ", ".join(map(str, engines_run["rounds"][kind])), "p50 ms": ms(row["p50_s"]),
              "p99 ms": ms(row["p99_s"]), "failures": row["failures"] or 0}
             for kind, row in engines_run["rows"].items()]))
    table = report.get("load")
    if table:
        peers = [rows for name, rows in table["rows"].items() if name.startswith("smp")]
        int8, floats = table["rows"].get("seglab serve INT8"), table["rows"].get("seglab serve float (default)")
        sections.append(Section(
            "Load: 512 x 512 photographs",
            about(table, f"INT8 export {table['int8_export_seconds']:.0f} s."
                  + (f" Note: {table['note']}." if peers else "")),
            [{"server": name, "clients": row["clients"], "requests/s": row["requests_per_s"],
              "p50 ms": ms(row["p50_s"]), "p99 ms": ms(row["p99_s"]), "answered": row["answered"],
              "failures": row["failures"] or 0} for name, rows in table["rows"].items() for row in rows]))
        summary = []
        if int8 and floats:
            summary.append("seglab serve INT8 / float default, requests/s: " + ", ".join(
                f"{ours['requests_per_s'] / theirs['requests_per_s']:.2f}x at {ours['clients']}"
                for ours, theirs in zip(int8, floats, strict=True)) + " client(s).")
        if not peers:
            summary.append("The smp peer was not measured in this run (`--without-peer`: no environment with smp "
                           "here), so this table cannot say how seglab serve compares with it.")
        elif int8:
            best = max((next(row for row in rows if row["clients"] == 16) for rows in peers),
                       key=lambda row: row["requests_per_s"])
            ours = next(row for row in int8 if row["clients"] == 16)
            ratio = ours["requests_per_s"] / best["requests_per_s"]
            summary.append(f"At 16 clients: seglab serve INT8 {ours['requests_per_s']:.2f} requests/s against the "
                           f"better peer's {best['requests_per_s']:.2f}: **{ratio:.2f}x**; p99 {ms(ours['p99_s'])} ms "
                           f"against {ms(best['p99_s'])} ms.")
        if summary:
            sections.append(Section("Load: the ratios", " ".join(summary)))
    return write_report("serve", "seglab serve under load", "Written by `python benchmarks/serve.py` "
                        "(commands in its docstring) from results/serve.json.", sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("load", "server"), nargs="?")
    parser.add_argument("kind", nargs="?", choices=("peer", "peer-locked"), help="server: which peer")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--without-peer", action="store_true",
                        help="load: seglab's rows only (where the peers' environment with smp is missing)")
    parser.add_argument("--machine-note", default="",
                        help="what else ran on the machine, written beside the results (e.g. 'shared with other "
                             "jobs: indicative only')")
    parser.add_argument("--render", action="store_true", help="rewrite serve.md from serve.json")
    args = parser.parse_args()
    if args.what == "server":
        run_peer(args.port, locked=args.kind == "peer-locked")
        return
    results = RESULTS / "serve.json"
    report = json.loads(results.read_text()) if results.exists() else {}
    if args.what == "load":
        with tempfile.TemporaryDirectory() as workdir:
            report["load"] = {**load_table(Path(workdir), with_peer=not args.without_peer),
                              "machine_note": args.machine_note}
        write_text_atomically(results, json.dumps(report, indent=1) + "\n")
    elif not args.render:
        parser.error("say what to run: load, or --render")
    print(render(report).read_text())


if __name__ == "__main__":
    main()
