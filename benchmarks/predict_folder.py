"""End to end, a folder of photographs on disk to palette PNG masks on disk, on this CPU's cores:

- `seglab predict` with the float checkpoint (precision auto) and with its INT8 ONNX export (`export_int8`),
  each a fresh `python -m seglab predict` process as a user runs it; its own time line gives the split
  (decode, engine, encode, write: busy seconds per stage, its threads overlapping); each also with
  `--concurrent-calls 1` (one image at a time on both cores instead of the default one image per core);
- the peer, a plain script as a user of smp writes it at its best: a DataLoader with workers decoding the files,
  smp `DeepLabV3Plus(tu-xception65)` in bf16 autocast + channels_last, argmax, PIL palette saves.

DeepLabV3+ Xception-65 at output stride 16, 21 classes, random weights (speed only), every image at its own size.
Photographs: LabelMeFacade's (../shared/data/labelmefacade, 512-768 px; every third one enlarged so that its long
side is 1024 px), read-only and never redistributed; synthetic noise photographs where that folder is absent.

Run in the peers' environment (`bash benchmarks/peers.sh`; smp's torchvision stub: harness.STUB_NOTE):
    .venv-peers/bin/python benchmarks/predict_folder.py --count 300     # results/predict_folder.{jsonl,md}
    .venv-peers/bin/python benchmarks/predict_folder.py --count 6        # a smoke run
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness import (
    PEER_PYTHON,
    STUB_NOTE,
    Section,
    append_rows,
    import_smp,
    machine,
    seglab_model,
    write_checkpoint,
    write_report,
)
from seglab.export import export_int8

FACADE = Path(__file__).resolve().parents[2] / "shared" / "data" / "labelmefacade" / "images"

PEER = """\
import sys, time, types
from pathlib import Path
import numpy as np, torch
from PIL import Image
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
import segmentation_models_pytorch as smp

photos, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
started = time.perf_counter()
MEAN, STD = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1), torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
PALETTE = [value for i in range(21) for value in (37 * i % 256, 91 * i % 256, 173 * i % 256)]


class Photos(torch.utils.data.Dataset):
    def __init__(self, files):
        self.files = files
    def __len__(self):
        return len(self.files)
    def __getitem__(self, index):
        image = np.asarray(Image.open(self.files[index]).convert("RGB"))
        return (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - MEAN) / STD, self.files[index].stem


files = sorted(photos.glob("*.jpg"))
loader = torch.utils.data.DataLoader(Photos(files), batch_size=1, num_workers=workers)  # mixed sizes: batch 1
model = smp.DeepLabV3Plus(encoder_name="tu-xception65", encoder_weights=None, classes=21).eval()
model = model.to(memory_format=torch.channels_last)
out.mkdir(parents=True, exist_ok=True)
engine = save = 0.0
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    for image, (name,) in loader:
        tick = time.perf_counter()
        height, width = image.shape[-2:]
        padded = torch.nn.functional.pad(image, (0, -width % 16, 0, -height % 16))  # smp needs multiples of 16
        labels = model(padded.contiguous(memory_format=torch.channels_last))[..., :height, :width].argmax(1)[0]
        tock = time.perf_counter()
        mask = Image.fromarray(labels.to(torch.uint8).numpy(), mode="P")
        mask.putpalette(PALETTE)
        mask.save(out / f"{name}.png")
        engine, save = engine + tock - tick, save + time.perf_counter() - tock
wall = time.perf_counter() - started
print(f"time: engine {engine:.2f} s, encode+write {save:.2f} s, decode in {workers} workers; wall {wall:.2f} s")
"""


def make_photos(folder: Path, count: int) -> str:
    """`count` JPEG photographs in `folder`; returns where they came from."""
    folder.mkdir(parents=True)
    sources = sorted(FACADE.glob("*.jpg"))[:count] if FACADE.is_dir() else []
    generator = np.random.default_rng(0)
    for index in range(count):
        if index < len(sources):
            image = Image.open(sources[index]).convert("RGB")
            if index % 3 == 2:
                scale = 1024 / max(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        else:
            side = int(generator.integers(512, 1025))
            image = Image.fromarray(generator.integers(0, 256, (side, side * 3 // 4, 3), dtype=np.uint8))
        image.save(folder / f"photo{index:04d}.jpg", quality=90)
    return f"LabelMeFacade ({len(sources)})" + (f" + synthetic ({count - len(sources)})" if count > len(sources)
                                                 else "")


def timed(command: list[str], log: Path) -> tuple[float, str]:
    """Wall seconds of `command` (a fresh process) and the time line it printed."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    found = re.findall(r"^time: .*$", done.stdout + done.stderr, flags=re.MULTILINE)
    return seconds, found[-1] if found else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="photographs (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="decoding/writing workers of each contender")
    parser.add_argument("--note", default="", help="conditions worth saying in the report (a shared CPU, ...)")
    args = parser.parse_args()
    import_smp()  # installs the torchvision stub before torchmetrics (seglab's INT8 check) imports torchvision
    stamp = {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), **machine()}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        source = make_photos(work / "photos", args.count)
        checkpoint = write_checkpoint(seglab_model("deeplabv3plus_xception65"), work / "x65.ckpt")
        print(f"{args.count} photographs from {source}; exporting INT8", file=sys.stderr)
        started = time.perf_counter()
        calibration = work / "calibration"  # 4 of the photographs: calibration and the export's checks cost minutes
        calibration.mkdir()
        for photo in sorted((work / "photos").glob("*.jpg"))[:4]:
            (calibration / photo.name).write_bytes(photo.read_bytes())
        int8 = export_int8(checkpoint, work / "x65.int8.onnx", calibration=calibration, min_agreement=0.0).path
        export_s = time.perf_counter() - started
        seglab_cli = [sys.executable, "-m", "seglab", "predict"]
        common = [str(work / "photos"), "--no-progress", "--workers", str(args.workers)]
        contenders = {
            "seglab predict, float (auto)": [*seglab_cli, str(checkpoint), *common, "--out", str(work / "float")],
            "seglab predict, float, one image at a time (--concurrent-calls 1)": [
                *seglab_cli, str(checkpoint), *common, "--concurrent-calls", "1", "--out", str(work / "float_one")],
            "seglab predict, INT8 ONNX": [*seglab_cli, str(int8), *common, "--out", str(work / "int8")],
            "seglab predict, INT8 ONNX, one image at a time (--concurrent-calls 1)": [
                *seglab_cli, str(int8), *common, "--concurrent-calls", "1", "--out", str(work / "int8_one")],
            "peer: smp bf16 + channels_last": [str(PEER_PYTHON), "-c", PEER, str(work / "photos"),
                                               str(work / "peer"), str(args.workers)],
        }
        rows = []
        for label, command in contenders.items():
            print(f"running {label}", file=sys.stderr)
            seconds, split = timed(command, work / f"{len(rows)}.log")
            rows.append({"contender": label, "images/s": args.count / seconds, "wall s": seconds,
                         "time split (the contender's own line)": split.removeprefix("time: ")})
    peer = rows[-1]["images/s"]
    for row in rows:
        row["x peer"] = f"{row['images/s'] / peer:.2f}x"
    append_rows("predict_folder", [{**stamp, "count": args.count, "photos": source, "int8_export_s": export_s,
                                    "note": args.note, **row} for row in rows])
    intro = (f"Written by `.venv-peers/bin/python benchmarks/predict_folder.py --count {args.count}` "
             f"({stamp['date']}): {stamp['cpu']}, torch {stamp['torch']}, load average {stamp['load_average']} at "
             f"the start. {args.count} photographs: {source}. DeepLabV3+ Xception-65, OS 16, 21 classes, random "
             f"weights; images/s = photographs / wall seconds of the whole process (start-up, model load, decode, "
             f"predict, encode, write). INT8 export took {export_s:.0f} s (not counted). Note: {STUB_NOTE}. "
             f"{args.note}")
    write_report("predict_folder", "A folder of photographs to palette PNGs: seglab predict against a plain smp "
                 "script", intro, [Section("End to end", rows=rows)])
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
