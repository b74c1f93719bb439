#!/usr/bin/env bash
# The README's test command (and CI's): set up .venv if needed, run the test suite, then lint.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" || exit 1
export PATH="$root/.venv/bin:$PATH"
cd "$root"

python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
    # pytest's "no tests ran" must not look like success.
    echo "seglab: pytest collected no tests; failing on purpose" >&2
    exit 1
fi
ruff check || { echo "seglab: ruff found problems (above)" >&2; exit 1; }
# The layer contract in pyproject.toml ([tool.importlinter]): every import points down the stack.
lint-imports --no-cache || { echo "seglab: an import points up the stack (above)" >&2; exit 1; }
# Type annotations on src/, pyright in basic mode (pyproject.toml [tool.pyright]): 0 errors.
pyright || { echo "seglab: pyright found type errors (above)" >&2; exit 1; }
# The documentation site (mkdocs.yml): --strict fails on a broken link, a page missing from the nav's files or an API
# reference to a name that no longer exists. The site goes to a temporary folder, never into the checkout.
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$site" \
    || { rm -rf "$site"; echo "seglab: the documentation site does not build (above)" >&2; exit 1; }
rm -rf "$site"
exit "$status"
