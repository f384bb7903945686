"""Every benchmark answers ``--help`` without importing TensorFlow (an 8 s import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_help_without_tensorflow(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(BENCH / script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "usage:" in done.stdout, done.stderr
    assert done.stdout.strip().endswith("tensorflow imported: False")
