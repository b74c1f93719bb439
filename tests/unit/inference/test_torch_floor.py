"""The torch floor: `torch.load(weights_only=True)` is only as safe as the torch that runs it, so seglab requires a
torch without the known weights-only escapes and refuses to read a checkpoint on an older one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from predict_helpers import write_tiny_checkpoint
from seglab.errors import WeightsError
from seglab.inference import loading
from seglab.inference.loading import read_checkpoint

PYPROJECT = Path(__file__).parents[3] / "pyproject.toml"


def test_the_package_requires_torch_2_10_or_newer_and_says_why():
    text = PYPROJECT.read_text(encoding="utf-8")
    # The dependency list's torch entry (the extras name no torch of their own).
    assert re.findall(r'^\s*"(torch\b[^"]*)"', text, flags=re.MULTILINE) == ["torch>=2.10"]
    # The reason sits beside the line, in a comment naming the advisory.
    [line_number] = [i for i, line in enumerate(text.splitlines()) if '"torch>=' in line]
    around = "\n".join(text.splitlines()[max(0, line_number - 4):line_number + 1])
    assert "CVE-2025-32434" in around and "weights_only" in around


@pytest.mark.parametrize("version", ["2.5.1", "2.6.0+cpu", "2.9.1"])
def test_a_checkpoint_is_refused_on_a_torch_older_than_the_floor(tmp_path, monkeypatch, version):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    monkeypatch.setattr(torch, "__version__", version)
    read = []
    monkeypatch.setattr(loading.torch, "load", lambda *args, **kwargs: read.append(args))
    with pytest.raises(WeightsError) as refused:
        read_checkpoint(checkpoint)
    message = str(refused.value)
    assert str(checkpoint) in message and f"torch {version}" in message
    assert "CVE-2025-32434" in message and "weights_only" in message and "2.10" in message
    assert read == []  # refused before torch.load saw a byte


@pytest.mark.parametrize("version", ["2.10.0", "2.13.0+cpu", "3.0.0a0"])
def test_a_checkpoint_loads_on_the_floor_and_newer(tmp_path, monkeypatch, version):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    monkeypatch.setattr(torch, "__version__", version)
    assert "state_dict" in read_checkpoint(checkpoint)


def test_pretrained_backbone_weights_are_refused_on_an_older_torch_too(tmp_path, monkeypatch):
    from seglab.models import pretrained

    weights = tmp_path / "backbone.pth"
    torch.save({"conv.weight": torch.zeros(1)}, weights)
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    read = []
    monkeypatch.setattr(pretrained.torch, "load", lambda *args, **kwargs: read.append(args))
    with pytest.raises(WeightsError) as refused:
        pretrained.read_state_dict(weights)
    assert f"weights file {weights}" in str(refused.value) and "CVE-2025-32434" in str(refused.value)
    assert read == []
