#!/usr/bin/env bash
# Creates .venv if missing and installs seglab into it. Run by the README's commands so that a fresh clone
# needs nothing typed beforehand. Re-installs only when pyproject.toml changed since the last run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "seglab: creating $venv" >&2
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"

# An open torch range would pull the newest CUDA build (gigabytes); pin the release we test on unless the
# user already installed a torch of their own choice into the venv.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    echo "seglab: installing torch==2.13.0" >&2
    "$py" -m pip install --quiet torch==2.13.0
fi

stamp="$venv/.seglab-installed"
wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "seglab: installing seglab and its dependencies into $venv" >&2
    "$py" -m pip install --quiet -e "$root[dev]"
    echo "$wanted" > "$stamp"
fi
