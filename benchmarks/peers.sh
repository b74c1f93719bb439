#!/usr/bin/env bash
# Builds .venv-peers: seglab (with its ONNX extra) plus the peers of benchmarks/speed.py, installed without
# their dependencies so that the CPU torch stays the only torch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-peers"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
py="$venv/bin/python"
"$py" -c "import torch" >/dev/null 2>&1 || "$py" -m pip install --quiet torch==2.13.0
"$py" -m pip install --quiet -e "$root[onnx,serve]"  # serve: FastAPI for benchmarks/serve.py's smp peer
"$py" -m pip install --quiet --no-deps -r "$root/benchmarks/requirements-peers.txt"
echo "peers environment ready: $venv" >&2
