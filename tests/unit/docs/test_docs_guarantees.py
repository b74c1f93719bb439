"""docs/guarantees.md names the test behind each promise; a promise whose test is gone fails here."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from data_fixtures import REPO_ROOT

GUARANTEES = REPO_ROOT / "docs" / "guarantees.md"
# `tests/unit/core/test_download.py::test_the_cache_is_keyed_by_the_whole_url`, or a whole file.
CITATION = re.compile(r"`(?P<file>tests/[\w/]+\.py)(?:::(?P<test>\w+))?`")


@functools.cache
def defined_tests(path: Path) -> frozenset[str]:
    """The test functions a test file defines, at module level or in test classes."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return frozenset(node.name for node in ast.walk(tree)
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"))


def missing_citations(text: str, root: Path) -> list[str]:
    """Each citation in `text` whose file or test does not exist under `root`, with what is missing."""
    missing = []
    for citation in CITATION.finditer(text):
        path = root / citation["file"]
        if not path.is_file():
            missing.append(f"{citation['file']}: no such file")
        elif citation["test"] and citation["test"] not in defined_tests(path):
            missing.append(f"{citation['file']}::{citation['test']}: the file defines no such test")
    return missing


def test_every_test_the_guarantees_cite_exists():
    text = GUARANTEES.read_text(encoding="utf-8")
    assert len(CITATION.findall(text)) >= 30, "the guarantees page cites fewer tests than it should: parser broken?"
    assert missing_citations(text, REPO_ROOT) == []


def test_every_promise_cites_a_test():
    rows = [line for line in GUARANTEES.read_text(encoding="utf-8").splitlines()
            if line.startswith("| **")]
    assert rows, "no promise rows found"
    assert [row for row in rows if not CITATION.search(row)] == []


def test_a_citation_of_a_removed_test_or_file_is_reported(tmp_path):
    tests = tmp_path / "tests" / "unit" / "core"
    tests.mkdir(parents=True)
    (tests / "test_kept.py").write_text("def test_here():\n    pass\n\nclass TestGroup:\n    def test_in_class(self):\n"
                                        "        pass\n")
    text = ("`tests/unit/core/test_kept.py::test_here`, `tests/unit/core/test_kept.py::test_in_class`, "
            "`tests/unit/core/test_kept.py::test_renamed`, `tests/test_moved.py`")
    assert missing_citations(text, tmp_path) == [
        "tests/unit/core/test_kept.py::test_renamed: the file defines no such test",
        "tests/test_moved.py: no such file",
    ]
