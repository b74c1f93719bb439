"""`seglab serve`'s command line: its options reach the settings, bad values and models are refused before a
socket opens, and `import seglab.cli` stays free of torch and the web stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from seglab.cli import build_parser, main
from seglab.serving.settings import ServeSettings


def test_import_seglab_cli_loads_no_torch_and_no_web_stack():
    heavy = ("torch", "fastapi", "uvicorn", "starlette", "prometheus_client", "PIL")
    loaded = subprocess.run([sys.executable, "-c", f"import sys, seglab.cli; print([m for m in {heavy!r} "
                             "if m in sys.modules])"], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_options_and_their_defaults():
    args = build_parser().parse_args(["serve", "model.ckpt"])
    defaults = ServeSettings()
    assert (args.host, args.port, args.max_batch, args.max_wait_ms, args.queue, args.timeout_s, args.max_body_mb,
            args.max_pixels) == (defaults.host, defaults.port, defaults.max_batch, defaults.max_wait_ms,
                                 defaults.queue, defaults.timeout_s, defaults.max_body_mb, defaults.max_pixels)
    assert args.host == "127.0.0.1"
    args = build_parser().parse_args(["serve", "m.onnx", "--port", "9000", "--max-batch", "4", "--queue", "3",
                                      "--max-pixels", "100", "--tta", "flip", "--scales", "0.5,1"])
    assert (args.port, args.max_batch, args.queue, args.max_pixels, args.tta, args.scales) == (
        9000, 4, 3, 100, "flip", [0.5, 1.0])


@pytest.mark.parametrize(("arguments", "message"), [
    (["--max-batch", "0"], "max_batch must be at least 1"),
    (["--timeout-s", "0"], "timeout_s must be positive"),
])
def test_bad_settings_are_refused_before_loading(arguments, message, capsys, tmp_path):
    assert main(["serve", str(tmp_path / "missing.ckpt"), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_model_is_refused_before_listening(capsys, tmp_path):
    assert main(["serve", str(tmp_path / "missing.ckpt"), "--port", "0"]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err
