#!/usr/bin/env bash
# The README's test command (and CI's): set up .venv if needed, lint, run the test suite.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh" || exit 1
cd "$root"

ruff check src tests benchmarks || { echo "seglab: ruff found problems (above)" >&2; exit 1; }

python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
    # pytest's "no tests ran" must not look like success.
    echo "seglab: pytest collected no tests; failing on purpose" >&2
    exit 1
fi
exit "$status"
