"""The code type-checks (house style: mypy clean)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is a development dependency (pip install -e '.[dev]')")
    proc = subprocess.run([sys.executable, "-m", "mypy", "protos", "kvstore", "controlplane", "node", "deploy"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
