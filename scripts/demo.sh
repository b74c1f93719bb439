#!/usr/bin/env bash
# The README's main job: set up .venv if needed, then train and evaluate DeepLabV3+ on the built-in shapes data.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
export PATH="$root/.venv/bin:$PATH"
cd "$root"
exec seglab demo "$@"
