"""The lazy packages' two lists of public names agree: `_EXPORTS` (what `__getattr__` imports at run time) and
the `if TYPE_CHECKING:` imports (what editors and pyright see), and each name resolves to the object its module
defines."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import seglab

SOURCE = Path(seglab.__file__).parent
# Every package whose names are imported on first use (a new one is covered without being listed).
LAZY_PACKAGES = sorted(".".join(init.parent.relative_to(SOURCE).parts) for init in SOURCE.rglob("__init__.py")
                       if "lazy_exports(" in init.read_text())


def test_the_lazy_packages_are_found() -> None:
    assert {"data", "evaluation", "export", "inference", "serving", "training"} <= set(LAZY_PACKAGES)


def type_checking_imports(package: str) -> dict[str, str]:
    """name -> module (relative to the package) of the imports under `if TYPE_CHECKING:` in its `__init__`."""
    init = SOURCE.joinpath(*package.split("."), "__init__.py")
    found: dict[str, str] = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module is not None, ast.dump(statement)
                module = statement.module.removeprefix(f"seglab.{package}.")
                for alias in statement.names:
                    # `name as name`: the form that marks a re-export for type checkers
                    assert alias.asname == alias.name, f"{package}: import {alias.name} as {alias.name}"
                    found[alias.name] = module
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_type_checking_imports_match_lazy_exports(package: str) -> None:
    module = importlib.import_module(f"seglab.{package}")
    assert type_checking_imports(package) == module._EXPORTS
    assert module.__all__ == sorted(module._EXPORTS)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_export_resolves_to_its_module_object(package: str) -> None:
    module = importlib.import_module(f"seglab.{package}")
    for name, source in module._EXPORTS.items():
        defining = importlib.import_module(f"seglab.{package}.{source}")
        assert getattr(module, name) is getattr(defining, name), f"seglab.{package}.{name}"
