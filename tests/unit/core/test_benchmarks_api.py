"""The benchmarks' import contract: a script in benchmarks/ imports only seglab's public API, so a refactoring
inside a package never has to keep a name alive for a benchmark.

Public means a name in the `__all__` of `seglab` or of one of its packages' `__init__` (`PUBLIC_PACKAGES`), or a
public function or class of the ground-floor modules `seglab.atomic` and `seglab.errors`."""

from __future__ import annotations

import ast
import importlib
import inspect

from data_fixtures import REPO_ROOT

PUBLIC_PACKAGES = ("seglab", "seglab.models", "seglab.data", "seglab.inference", "seglab.evaluation",
                   "seglab.training", "seglab.export", "seglab.serving")
PUBLIC_MODULES = ("seglab.atomic", "seglab.errors")


def public_names(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    if module_name in PUBLIC_PACKAGES:
        return set(getattr(module, "__all__", ()))
    return {name for name, value in vars(module).items() if not name.startswith("_")
            and (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module_name}


def private_imports(source: str, filename: str) -> list[str]:
    """'file:line: what' for every import of seglab in `source` that is not public."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno}: import {alias.name}" for alias in node.names
                      if alias.name.split(".")[0] == "seglab" and alias.name != "seglab"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "seglab":
            if node.module not in PUBLIC_PACKAGES + PUBLIC_MODULES:
                found.append(f"{filename}:{node.lineno}: from {node.module} import ... (not a public package)")
                continue
            allowed = public_names(node.module)
            found += [f"{filename}:{node.lineno}: {node.module}.{alias.name} is not in its public names"
                      for alias in node.names if alias.name not in allowed]
    return found


def test_benchmarks_import_only_seglabs_public_api():
    scripts = sorted((REPO_ROOT / "benchmarks").glob("*.py"))
    assert len(scripts) >= 3, "benchmarks/ should hold the maintained benchmarks"
    found = [problem for script in scripts
             for problem in private_imports(script.read_text(encoding="utf-8"), script.name)]
    assert not found, "benchmarks import seglab internals:\n" + "\n".join(found)


def test_every_public_name_resolves():
    # A name listed in `__all__` but missing would pass the contract and fail the benchmark at run time.
    missing = [f"{package}.{name}" for package in PUBLIC_PACKAGES for name in public_names(package)
               if not hasattr(importlib.import_module(package), name)]
    assert not missing, f"listed as public but not importable: {missing}"


def test_the_contract_refuses_internal_modules_and_unlisted_names():
    source = ("import seglab\nfrom seglab import load\nfrom seglab.inference import Predictor\n"
              "from seglab.atomic import write_text_atomically\n"
              "from seglab.training.callbacks import EpochHistory\n"       # an internal module
              "import seglab.models.layers\n"                             # the same, as a plain import
              "from seglab.models import DepthwiseConv2d\n"                # a package, but not a listed name
              "def later():\n    from seglab.inference.loading import MODEL_PREFIX\n")  # inside a function too
    found = private_imports(source, "example.py")
    assert [line.split(":")[1] for line in found] == ["5", "6", "7", "9"], found
    assert "from seglab.training.callbacks import ... (not a public package)" in found[0]
    assert "seglab.models.DepthwiseConv2d is not in its public names" in found[2]

