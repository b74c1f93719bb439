"""Generated data for the data-layer tests: image/mask folders, a miniature Oxford-IIIT Pet, a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import tarfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

# The tests tree and the repository root, for tests at any depth under tests/.
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
ISBI_DIR = REPO_ROOT.parent / "shared" / "data" / "isbi2012_membrane"

# Miniature Oxford-IIIT Pet: 8 trainval and 4 test names in the official naming scheme.
PETS_TRAINVAL = ["Abyssinian_1", "Abyssinian_2", "beagle_3", "beagle_4", "Bengal_5", "boxer_6", "pug_7", "Persian_8"]
PETS_TEST = ["Abyssinian_9", "beagle_10", "Bengal_11", "pug_12"]


def trimap_for(height: int, width: int) -> np.ndarray:
    """A trimap like the official ones: 1 pet (an ellipse), 3 its border ring, 2 background."""
    ys, xs = np.mgrid[0:height, 0:width]
    r = ((ys - height / 2) / (height * 0.35)) ** 2 + ((xs - width / 2) / (width * 0.35)) ** 2
    trimap = np.full((height, width), 2, dtype=np.uint8)
    trimap[r <= 1.3] = 3
    trimap[r <= 1.0] = 1
    return trimap


def make_pets_tree(root: Path) -> Path:
    """Write a miniature Pet dataset in the official layout, with the official oddities: a CMYK JPEG, a greyscale
    JPEG, a PNG with alpha named .jpg, and macOS `._*` files."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for i, name in enumerate(PETS_TRAINVAL + PETS_TEST):
        height, width = 30 + 2 * i, 40 - i
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(rgb)
        path = root / "images" / f"{name}.jpg"
        if i == 1:
            image.convert("CMYK").save(path, format="JPEG")
        elif i == 2:
            image.convert("L").save(path, format="JPEG")
        elif i == 3:
            image.convert("RGBA").save(path, format="PNG")  # the official set has a few PNGs named .jpg
        else:
            image.save(path, format="JPEG", quality=90)
        Image.fromarray(trimap_for(height, width)).save(root / "annotations" / "trimaps" / f"{name}.png")
    (root / "images" / "._Abyssinian_1.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "annotations" / "trimaps" / "._Abyssinian_1.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    header = "#Image CLASS-ID SPECIES BREED ID\n"
    (root / "annotations" / "trainval.txt").write_text(header + "".join(f"{n} 1 1 1\n" for n in PETS_TRAINVAL))
    (root / "annotations" / "test.txt").write_text(header + "".join(f"{n} 1 1 1\n" for n in PETS_TEST))
    return root


def tar_gz_of(folder: Path, arcname: str) -> bytes:
    """`folder` packed as a .tar.gz whose top-level entry is `arcname`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        bundle.add(folder, arcname=arcname)
    return buffer.getvalue()


def make_pets_archives(work: Path) -> dict[str, bytes]:
    """The two official archive files (`images.tar.gz`, `annotations.tar.gz`) of the miniature dataset."""
    tree = make_pets_tree(work / "tree")
    return {
        "images.tar.gz": tar_gz_of(tree / "images", "images"),
        "annotations.tar.gz": tar_gz_of(tree / "annotations", "annotations"),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares `width x height` pixels but holds almost no data (a decompression-bomb stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b"")


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    image.save(path)
    return path


class _FileHandler(BaseHTTPRequestHandler):
    # Serves `server.files` (URL path -> bytes) with HTTP Range support, optionally cutting a transfer short.

    def do_GET(self) -> None:
        server = self.server
        requested_range = self.headers.get("Range")
        server.requests.append((self.path, requested_range))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        # A strong ETag, as real file servers send: seglab resumes a part file only under If-Range with it.
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        same_file = self.headers.get("If-Range") in (None, etag if server.validators else None)
        match = re.fullmatch(r"bytes=(\d+)-", requested_range or "")
        if match and same_file and not server.ignore_range:
            start = int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if server.validators:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = server.cut_after.pop(self.path, None)
        if cut is not None:
            # Send only part of the promised body, then drop the connection: an interrupted transfer.
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass


@contextmanager
def running_in_thread(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """`server` answering from a daemon thread for the `with` block, then shut down and closed."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_files(
    files: dict[str, bytes], *, ignore_range: bool = False, cut_after: dict[str, int] | None = None,
    validators: bool = True,
) -> Iterator[ThreadingHTTPServer]:
    """Serve `files` (name -> bytes) at `server.url + name` on 127.0.0.1 (ephemeral port) for the `with` block.

    `cut_after={name: n}` makes the first transfer of `name` stop after n bytes; `ignore_range=True` makes the
    server answer every request with the whole file (200), like servers without Range support.
    `server.requests` records `(path, Range header)` of every request. Each file carries a strong ETag unless
    `validators=False` (a server that proves nothing about its file, so a part file cannot be resumed).
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FileHandler)
    server.daemon_threads = True
    server.files = {"/" + name: data for name, data in files.items()}
    server.cut_after = {"/" + name: n for name, n in (cut_after or {}).items()}
    server.ignore_range = ignore_range
    server.validators = validators
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    with running_in_thread(server):
        yield server


class Payload:
    """Unpickling this writes a file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def write_pickled_payload_checkpoint(path: Path, marker: Path) -> None:
    """A checkpoint whose unpickling would write `marker`: loading it safely must leave no file behind."""
    import torch

    torch.save({"state_dict": {}, "hyper_parameters": Payload(marker)}, path)


# Dataset trees in the layouts `seglab.data.find_splits` recognises: split -> (image folder, mask folder, image
# name, mask name) for a stem. "isbi" is the second form of images_masks ({split}/image + {split}/label).
LAYOUT_TREES = {
    "images_masks": lambda s, stem: (f"images/{s}", f"masks/{s}", f"{stem}.jpg", f"{stem}.png"),
    "isbi": lambda s, stem: (f"{s}/image", f"{s}/label", f"{stem}.png", f"{stem}.png"),
    "mmseg": lambda s, stem: (f"img_dir/{s}", f"ann_dir/{s}", f"{stem}.jpg", f"{stem}.png"),
    "segnet": lambda s, stem: (s, f"{s}annot", f"{stem}.png", f"{stem}.png"),
    "cityscapes": lambda s, stem: (
        f"leftImg8bit/{s}/{stem.split('_')[0]}",
        f"gtFine/{s}/{stem.split('_')[0]}",
        f"{stem}_leftImg8bit.png",
        f"{stem}_gtFine_labelIds.png",
    ),
}


def make_layout_tree(root: Path, layout: str, counts: dict[str, int], *, size: tuple[int, int] = (6, 10)) -> Path:
    """Write `counts[split]` tiny non-square image/mask pairs per split in `layout` (a key of LAYOUT_TREES).

    Masks hold 0 and 1 (Cityscapes: label ids 7 road and 26 car, plus the `_gtFine_color.png` and
    `_gtFine_instanceIds.png` files the official release keeps beside them)."""
    rng = np.random.default_rng(len(layout))
    height, width = size
    for split, count in counts.items():
        for i in range(count):
            stem = f"{('aachen', 'bremen')[i % 2]}_{i:06d}_000019" if layout == "cityscapes" else f"{split}_{i}"
            images, masks, image_name, mask_name = LAYOUT_TREES[layout](split, stem)
            save_png(root / images / image_name, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            mask = np.zeros((height, width), np.uint8)
            mask[:, width // 2 :] = 1
            if layout == "cityscapes":
                mask = np.where(mask == 1, 26, 7).astype(np.uint8)
                save_png(root / masks / f"{stem}_gtFine_color.png", np.zeros((height, width, 3), np.uint8))
                save_png(root / masks / f"{stem}_gtFine_instanceIds.png", mask)
            save_png(root / masks / mask_name, mask)
    return root


def headless_chrome(window_size: str):
    """A Selenium driver for Debian's headless Chromium, with no network of its own; the caller quits it. Fails
    under CI (`.ci/run` installs chromium and chromium-driver) and skips elsewhere when there is none."""
    import os
    import shutil

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        browser = None
    if not (browser and driver_path):
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser check: .ci/run installs chromium and chromium-driver (Debian)")
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver (and selenium) to run it")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--window-size={window_size}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
