"""`python -m multi2cap` is the `multi2cap` command (and what `torchrun -m multi2cap` runs)."""

from __future__ import annotations

import subprocess
import sys

import multi2cap


def test_python_dash_m_multi2cap_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "multi2cap", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for group in ("train", "caption", "evaluate", "vggcaps"):
        assert group in result.stdout


def test_info_reports_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "multi2cap", "info"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert multi2cap.__version__ in result.stdout
