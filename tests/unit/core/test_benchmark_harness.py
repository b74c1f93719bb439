"""The benchmarks' harness (benchmarks/harness.py): results logs keep every row of every run, the one renderer
writes what the rows say, and interleaved timing alternates its contenders."""

from __future__ import annotations

import importlib.util

import pytest

from data_fixtures import REPO_ROOT


@pytest.fixture
def harness(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("harness", REPO_ROOT / "benchmarks" / "harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    return module


def test_rows_append_across_runs_and_render_as_one_table(harness, tmp_path):
    harness.append_rows("speed", [{"contender": "smp", "img/s": 10.0, "ceiling %": 0.4321}])
    harness.append_rows("speed", [{"contender": "seg|lab", "img/s": 12.345, "note": None}])
    rows = harness.read_rows("speed")
    assert [row["contender"] for row in rows] == ["smp", "seg|lab"]
    path = harness.write_report("speed", "Speed", "Intro.", [harness.Section("Inference", "Text.", rows)])
    assert path == tmp_path / "speed.md"
    assert path.read_text() == ("# Speed\n\nIntro.\n\n## Inference\n\nText.\n\n"
                                "| contender | img/s | ceiling % | note |\n|---|---|---|---|\n"
                                "| smp | 10.00 | 43.2 |  |\n"          # a share renders as a percentage
                                "| seg\\|lab | 12.35 |  |  |\n")       # a pipe in a cell cannot split the row


def test_a_section_shows_only_its_columns_and_every_row_carries_the_machine(harness):
    rows = [{"a": 1, "b": 2.0, "hidden": "x"}]
    text = harness.render("T", "I", [harness.Section("S", rows=rows, columns=["b", "a"])])
    assert "| b | a |\n|---|---|\n| 2.00 | 1 |" in text and "hidden" not in text
    stamp = harness.machine()
    assert {"date", "cpu", "threads", "torch", "load_average"} <= set(stamp) and "cores" in stamp["cpu"]


def test_interleaved_rounds_alternate_the_contenders(harness):
    calls = []
    seconds = harness.interleaved_seconds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                          repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and set(seconds) == {"a", "b"}
    assert all(value >= 0 for value in seconds.values())
