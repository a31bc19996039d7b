"""`accelerate launch --cpu --num_processes 2 -m analysis patch` shards the pairs and gives exactly the
single-process effects table."""
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["patch", "--data", "builtin-negation", "--limit", "5", "--kinds", "noising,denoising", "--n-boot", "100",
        "--n-perm", "500"]


def _free_port() -> int:
    """A port no one is listening on now (accelerate's default, 29500, may be taken by another run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow   # two `accelerate launch` processes, each loading MiniLM and patching its shard: about 1 min
@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="accelerate's launcher is not installed")
def test_two_cpu_processes_patch_like_one(tmp_path):
    launcher = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(ARGS + ["--out", str(single)]) == 0
    result = subprocess.run([launcher, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", str(_free_port()), "-m", "analysis", *ARGS,
                             "--out", str(double)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = pd.read_csv(single / "effects.csv"), pd.read_csv(double / "effects.csv")
    numeric = a.select_dtypes("number").columns
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 72
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), atol=1e-6, rtol=0, equal_nan=True)
    import json
    sa, sb = (json.loads((folder / "summary.json").read_text()) for folder in (single, double))
    assert sa["n_pairs"] == sb["n_pairs"] >= 4 and sa["named"] == sb["named"]
