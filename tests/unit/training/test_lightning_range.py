"""The Lightning range pyproject declares has an upper bound, and the Lightning the tests run on lies in it: a
new Lightning is taken on by widening the range after these tests pass with it, not by accident."""

from __future__ import annotations

import importlib.metadata
import re

from packaging.requirements import Requirement

from data_fixtures import REPO_ROOT


def _declared_lightning() -> Requirement:
    # The quoted requirement in [project] dependencies (tomllib is Python 3.11+; seglab runs on 3.10).
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (requirement,) = re.findall(r'^\s*"(lightning[<>=!~ ].*?)",', text, flags=re.MULTILINE)
    return Requirement(requirement)


def test_lightning_is_pinned_from_above():
    specifier = _declared_lightning().specifier
    assert any(spec.operator in ("<", "<=", "~=", "==") for spec in specifier), str(specifier)


def test_the_installed_lightning_is_in_the_declared_range():
    installed = importlib.metadata.version("lightning")
    specifier = _declared_lightning().specifier
    assert specifier.contains(installed, prereleases=True), f"lightning {installed} is outside {specifier}"
