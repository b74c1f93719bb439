"""Every code block in docs/ runs or is checked, so the documentation cannot rot.

- ```python blocks are executed in a sandbox folder holding tiny data (`photo.jpg`, `photos/`,
  `data/my_dataset/`, `data/membranes/`, `configs/`) and, for blocks that use `runs/demo`, a copy of the session's
  small trained run. A block preceded by `<!-- docs-test: compile-only (why) -->` is only compiled: for examples
  that need big data, the network or a running server; the reason is required.
- ```bash blocks: every `seglab` command (also behind `srun`, `torchrun -m` or `python -m`) is parsed by the real
  command line (`seglab.cli.build_parser()`), so a renamed or removed flag fails here; `bash scripts/X.sh`,
  `python benchmarks/X.py` and `cp configs/X` must name files that exist. A block preceded by
  `<!-- docs-test: run -->` is also run, command by command, on the sandbox's tiny data, every `seglab train` with
  `TINY_TRAINING` appended (a few-kilobyte model, 16 px crops, one epoch).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_fixtures import REPO_ROOT, save_png
from seglab.cli import build_parser
from seglab.models import registry
from training_helpers import TINY_MODEL, register_tiny_model

DOCS = REPO_ROOT / "docs"
LANGUAGES = ("python", "bash", "text", "yaml", "json")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w-]*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<mode>[\w-]+)\s*(?P<reason>.*?)\s*-->\s*$")
MODES = {"compile-only": "python", "run": "bash"}

# Appended to every `seglab train` of a run block: the tiny test model on 16 px crops for one epoch, whatever the
# recipe says. The recipe's model options that the tiny model lacks are switched off.
TINY_TRAINING = [
    "--set", f"model={TINY_MODEL}", "output_stride=null", "atrous_rates=null", "zero_init_residual=false",
    "start_with_relu=false", "freeze_backbone=false", "pretrained_backbone=null", "crop_size=[16, 16]",
    "batch_size=2", "max_epochs=1", "max_minutes=null", "max_steps=null", "val_every_n_epochs=1", "num_workers=0",
    "precision=32-true", "channels_last=false", "progress_bar=false", "early_stopping_patience=null",
]


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    mode: str | None  # the docs-test directive just above the fence
    reason: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def code_blocks(pages: list[Path]) -> list[CodeBlock]:
    """Every fenced code block of `pages`, with the directive just above it (if any)."""
    blocks = []
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            opening = FENCE.match(lines[index])
            if not opening:
                index += 1
                continue
            end = next((j for j in range(index + 1, len(lines))
                        if lines[j].strip() == "```" and lines[j].startswith(opening["indent"])), None)
            assert end is not None, f"{page}:{index + 1}: a code block that is never closed"
            body = "\n".join(line.removeprefix(opening["indent"]) for line in lines[index + 1:end])
            above = DIRECTIVE.match(lines[index - 1]) if index else None
            blocks.append(CodeBlock(page, index + 1, opening["language"], body + "\n",
                                    above["mode"] if above else None, above["reason"] if above else ""))
            index = end + 1
    return blocks


BLOCKS = code_blocks(sorted(DOCS.rglob("*.md")))
# The README's tour is checked as the docs' blocks are (commands parsed, Python compiled), not run: it shows the
# commands on the user's own data.
README_BLOCKS = code_blocks([REPO_ROOT / "README.md"])


def blocks_of(language: str, *, mode: str | None = None, where=lambda block: True) -> list:
    return [pytest.param(block, id=block.name) for block in BLOCKS
            if block.language == language and block.mode == mode and where(block)]


def needs_trained_run(block: CodeBlock) -> bool:
    return "runs/demo" in block.code


def trains(block: CodeBlock) -> bool:
    return "train(" in block.code


def commands(code: str) -> list[tuple[int, list[str]]]:
    """(line number in the block, words) of each shell command: continuations joined, comments and shell
    keywords (`if`, `fi`, ...) left out."""
    found, pending, start = [], "", 0
    for number, line in enumerate(code.splitlines(), 1):
        if not pending:
            start = number
        pending += line.removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if line.rstrip().endswith("\\"):
            continue
        words = shlex.split(pending, comments=True)
        pending = ""
        if words and words[0] not in {"if", "then", "else", "fi", "for", "do", "done", "source", "export"} \
                and not words[0].startswith("#"):
            found.append((start, words))
    return found


def seglab_arguments(words: list[str]) -> list[str] | None:
    """The arguments given to `seglab` by a command line, or None if it does not run seglab."""
    if words[0] == "srun":
        words = words[1:]
    if words[0] == "seglab":
        return words[1:]
    if "-m" in words and words[0] in {"python", "python3", "torchrun"}:
        module = words.index("-m") + 1
        if module < len(words) and words[module] == "seglab":
            return words[module + 1:]
    return None


def check_files_named(words: list[str], where: str) -> None:
    """The repository files a command line names exist: scripts, benchmarks and shipped recipes."""
    for word in words:
        if re.fullmatch(r"(scripts|benchmarks|configs)/[\w./-]+\.(sh|py|yaml)", word):
            assert (REPO_ROOT / word).is_file(), f"{where}: names {word}, which does not exist"


# --- the pages' blocks are well-formed ------------------------------------------------------------------------


def test_the_docs_have_python_and_bash_blocks_to_check():
    # A parser that found nothing would make every test below pass vacuously.
    languages = [block.language for block in BLOCKS]
    assert languages.count("python") >= 5 and languages.count("bash") >= 10, languages


def test_every_block_names_a_known_language_and_directive():
    for block in BLOCKS + README_BLOCKS:
        assert block.language in LANGUAGES, f"{block.name}: code block language {block.language!r}; " \
                                            f"use one of {', '.join(LANGUAGES)}"
        if block.mode is None:
            continue
        assert block.mode in MODES, f"{block.name}: unknown docs-test directive {block.mode!r}; use one of {MODES}"
        assert MODES[block.mode] == block.language, f"{block.name}: {block.mode} is for {MODES[block.mode]} blocks"
        if block.mode == "compile-only":
            assert re.fullmatch(r"\(.{10,}\)", block.reason), \
                f"{block.name}: say why the block cannot run: <!-- docs-test: compile-only (the reason) -->"


@pytest.mark.parametrize("block", [*blocks_of("python"), *blocks_of("python", mode="compile-only"),
                                   *(pytest.param(b, id=b.name) for b in README_BLOCKS if b.language == "python")])
def test_python_blocks_compile(block):
    compile(block.code, block.name, "exec")


# --- commands parse -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [*blocks_of("bash"), *blocks_of("bash", mode="run"),
                                   *(pytest.param(b, id=b.name) for b in README_BLOCKS if b.language == "bash")])
def test_every_seglab_command_parses_with_the_real_command_line(block):
    parser = build_parser()
    for line, words in commands(block.code):
        where = f"{block.name} (+{line})"
        check_files_named(words, where)
        arguments = seglab_arguments(words)
        if arguments is None:
            continue
        try:
            parser.parse_args(arguments)
        except SystemExit as stop:
            pytest.fail(f"{where}: `seglab {shlex.join(arguments)}` is refused by the command line (exit {stop.code})")


def test_a_renamed_flag_fails_the_parse_check():
    # The check above must be able to fail: a flag the command line does not know makes argparse exit.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "runs/demo", "x.jpg", "--output-dir", "out/"])
    assert seglab_arguments(shlex.split("torchrun --nproc_per_node=4 -m seglab train c.yaml")) == ["train", "c.yaml"]


# --- blocks run -----------------------------------------------------------------------------------------------


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _mask(height: int, width: int, seed: int, classes: int) -> np.ndarray:
    # Horizontal bands, every class present.
    rows = (np.arange(height) * classes // height + seed) % classes
    return np.repeat(rows[:, None], width, axis=1).astype(np.uint8)


def make_sandbox(root: Path) -> Path:
    """The files the docs' examples name, tiny: a photo, a folder of photos, a 3-class dataset in the
    images_masks layout, the membranes folder pair (0/255 masks) and the shipped recipes."""
    root.mkdir(parents=True)
    (root / "configs").symlink_to(REPO_ROOT / "configs", target_is_directory=True)
    save_png(root / "photos" / "street.png", _image(40, 48, 1))
    save_png(root / "photos" / "court.png", _image(36, 52, 2))
    from PIL import Image

    Image.fromarray(_image(44, 56, 3)).save(root / "photo.jpg")
    for offset, (split, count) in enumerate({"train": 6, "val": 2, "test": 2}.items()):
        for index in range(count):
            image = _image(24, 32, 100 * offset + index)
            save_png(root / "data/my_dataset/images" / split / f"{split}{index}.png", image)
            save_png(root / "data/my_dataset/masks" / split / f"{split}{index}.png", _mask(24, 32, index, 3))
    for index in range(3):
        save_png(root / "data/membranes/image" / f"slice{index}.png", _image(20, 20, 10 + index)[..., 0])
        save_png(root / "data/membranes/label" / f"slice{index}.png", _mask(20, 20, index, 2) * 255)
    return root


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """The sandbox as the working folder; models registered by a block are gone after the test."""
    monkeypatch.setattr(registry, "MODEL_FACTORIES", dict(registry.MODEL_FACTORIES))
    monkeypatch.setattr(registry, "MODEL_BACKBONES", dict(registry.MODEL_BACKBONES))
    register_tiny_model(monkeypatch)
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(make_sandbox(tmp_path / "sandbox"))
    return tmp_path / "sandbox"


def with_demo_run(sandbox: Path, trained_run: Path) -> None:
    # Hard links: the sandbox's copy is free, and seglab replaces files rather than writing into them, so the
    # session's run folder stays as the other tests expect it.
    shutil.copytree(trained_run, sandbox / "runs" / "demo", copy_function=os.link,
                    ignore=shutil.ignore_patterns("last.ckpt"))


def run_python(block: CodeBlock) -> None:
    exec(compile(block.code, block.name, "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("block", blocks_of("python", where=lambda b: not needs_trained_run(b) and not trains(b)))
def test_python_block_runs(block, sandbox):
    run_python(block)


@pytest.mark.slow
@pytest.mark.parametrize("block", blocks_of("python", where=lambda b: not needs_trained_run(b) and trains(b)))
def test_python_block_that_trains_runs(block, sandbox):
    run_python(block)


@pytest.mark.parametrize("block", blocks_of("python", where=needs_trained_run))
def test_python_block_runs_with_a_trained_model(block, sandbox, trained_run):
    with_demo_run(sandbox, trained_run)
    run_python(block)


def run_commands(block: CodeBlock) -> None:
    from seglab.cli import main

    for line, words in commands(block.code):
        where = f"{block.name} (+{line})"
        arguments = seglab_arguments(words)
        if words[0] == "cp" and len(words) == 3:
            shutil.copy(words[1], words[2])
            continue
        assert arguments is not None, f"{where}: a run block may hold seglab and cp commands only: {words}"
        if arguments[:1] == ["train"]:
            arguments = [*arguments, *TINY_TRAINING]
        assert main(arguments) == 0, f"{where}: `seglab {shlex.join(arguments)}` failed"


@pytest.mark.slow
@pytest.mark.parametrize("block", blocks_of("bash", mode="run", where=lambda b: not needs_trained_run(b)))
def test_run_block_runs_on_tiny_data(block, sandbox):
    run_commands(block)


@pytest.mark.parametrize("block", blocks_of("bash", mode="run", where=needs_trained_run))
def test_run_block_runs_on_a_trained_model(block, sandbox, trained_run):
    with_demo_run(sandbox, trained_run)
    run_commands(block)
