"""The package's shape: imports point down the stack (the import-linter contract in pyproject.toml), the command
line loads without torch, and each piece of work is done once (each image decoded once per evaluate)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_fixtures import REPO_ROOT
from seglab.cli import main
from seglab.data import files

ROOT = REPO_ROOT
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=source, env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_the_layer_contract_holds_and_fails_on_an_import_that_points_up(tmp_path):
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"lint-imports is not installed beside {sys.executable}: pip install -e '.[dev]'")
    source = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "seglab", source / "seglab", ignore=shutil.ignore_patterns("__pycache__"))
    kept = lint_imports(source)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    # A model that reaches up into training, as the old config-from-checkpoint path did.
    layers = source / "seglab" / "models" / "layers.py"
    layers.write_text(layers.read_text() + "\n\ndef _config():\n    from seglab.training.config import TrainConfig\n\n"
                      "    return TrainConfig\n")
    broken = lint_imports(source)
    assert broken.returncode != 0
    assert "seglab.models is not allowed to import seglab.training" in broken.stdout


def test_the_command_line_loads_no_torch():
    code = ("import sys, seglab.cli; seglab.cli.build_parser().format_help(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_evaluate_on_folders_decodes_each_image_and_mask_once(trained_run, tmp_path, monkeypatch):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"img{index}.png")
        Image.fromarray(rng.integers(0, 4, (40, 48), dtype=np.uint8)).save(masks / f"img{index}.png")
    opened: Counter[str] = Counter()
    original = files.open_image

    def counting(path, **options):
        opened[Path(path).relative_to(tmp_path).as_posix()] += 1
        return original(path, **options)

    monkeypatch.setattr(files, "open_image", counting)
    assert main(["evaluate", str(trained_run), "--images", str(images), "--masks", str(masks), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 0
    assert opened == {f"{folder}/img{index}.png": 1 for folder in ("images", "masks") for index in range(3)}


def test_the_benchmarks_import_only_names_that_seglab_has():
    """Benchmarks are not run by the suite, so a rename inside seglab would otherwise break them unnoticed
    (it did: `default_palette` moved from inference.spec to data.classes)."""
    import ast
    import importlib

    missing = []
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    assert scripts, "no benchmark scripts found"
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text(), filename=str(script))):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "seglab"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"{script.name}:{node.lineno}: {node.module}.{alias.name}")
    assert not missing, "benchmarks import names seglab does not have:\n" + "\n".join(missing)
