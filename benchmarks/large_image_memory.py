"""Peak memory of `seglab predict --tile` on one large image (README, "Predict and evaluate").

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/large_image_memory.py [--size 6000] [--tile 512]
        [--model deeplabv3plus_xception41 | conv] [--classes 21] [--save-probs]

A fresh child process (one torch thread) builds the model with random weights and a spec whose working size is
the image's own, predicts one random SIZE x SIZE image in TILE windows through `predict_files` (what `seglab
predict` runs) and prints JSON: the peak RSS (VmHWM from /proc/self/status) before and after predicting, and the
seconds. Compare two trees by pointing PYTHONPATH at each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np, torch
from PIL import Image
from seglab.inference import InferenceSpec, Predictor
from seglab.inference.files import InputImage, predict_files
from seglab.models import build_model

folder, size, tile, model_name, classes, save_probs = sys.argv[1:7]
size, tile, classes = int(size), int(tile), int(classes)
torch.set_num_threads(1)

def peak_rss_gb():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024 ** 2

image = Path(folder) / "large.png"
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(image, compress_level=1)
torch.manual_seed(0)
if model_name == "conv":  # two convolutions: the arrays around the model, with next to no model of its own
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, classes, 1))
else:
    model = build_model(model_name, num_classes=classes).eval()
spec = InferenceSpec(model=model_name, model_options={}, num_classes=classes,
                     class_names=tuple(f"c{i}" for i in range(classes)),
                     palette=tuple((i, i, i) for i in range(classes)))  # working size: the image's own
predictor = Predictor(model, spec, device="cpu")
before = peak_rss_gb()
start = time.perf_counter()
summary = predict_files(predictor, [InputImage(image, Path("large"))], Path(folder) / "out", tile=tile,
                        save_probs=save_probs == "1")
assert summary.ok and summary.predicted == 1, summary.report(Path(folder))
print(json.dumps({"size": size, "tile": tile, "model": model_name, "classes": classes, "save_probs": save_probs == "1",
                  "peak_rss_gb_before_predicting": round(before, 3), "peak_rss_gb": round(peak_rss_gb(), 3),
                  "seconds": round(time.perf_counter() - start, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--model", default="deeplabv3plus_xception41")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--save-probs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-c", CHILD, folder, str(args.size), str(args.tile), args.model,
                                 str(args.classes), "1" if args.save_probs else "0"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    print(result.stdout.strip())


if __name__ == "__main__":
    main()
