"""The README's test command must fail loudly, not pass, when pytest runs no test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from data_fixtures import REPO_ROOT

ROOT = REPO_ROOT


def test_no_tests_collected_fails_the_test_command():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "scripts/test.sh", "tests/unit/core/test_ci_script.py", "-k", "no_test_has_this_name"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "collected no tests; failing on purpose" in result.stderr
