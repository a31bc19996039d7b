"""Shared by the two-process tests: `accelerate launch --cpu --num_processes 2 -m analysis ...` on a free port."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.loadtest import free_port

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
needs_accelerate = pytest.mark.skipif(not Path(ACCELERATE).exists() and shutil.which("accelerate") is None,
                                      reason="accelerate's launcher is not installed")


def run_two_processes(argv: list[str], out: Path, timeout: int) -> None:
    """`analysis <argv> --out <out>` under two CPU processes; fails the test with the launcher's stderr."""
    # A free port, not accelerate's default 29500, which another run may hold.
    result = subprocess.run([ACCELERATE, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", str(free_port()), "-m", "analysis", *argv,
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
