"""`accelerate launch --cpu --num_processes 2` gives exactly the single-process head table."""
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
ARGS = ["heads", "--data", "builtin-negation", "--limit", "40", "--n-boot", "200", "--n-perm", "2000"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="accelerate's launcher is not installed")
def _free_port() -> int:
    """A port no one is listening on now (accelerate's default, 29500, may be taken by another run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow   # two `accelerate launch` processes, each loading a model: about 10 s
def test_two_cpu_processes_equal_one(tmp_path):
    launcher = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(ARGS + ["--out", str(single)]) == 0
    result = subprocess.run([launcher, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", str(_free_port()), "-m", "analysis", *ARGS,
                             "--out", str(double)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = pd.read_csv(single / "heads.csv"), pd.read_csv(double / "heads.csv")
    numeric = a.select_dtypes("number").columns
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 72
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), atol=1e-6, rtol=0, equal_nan=True)
    # the strata (cue form, next word the predicate or not) are combined exactly too
    a, b = pd.read_csv(single / "strata.csv"), pd.read_csv(double / "strata.csv")
    assert set(a["by"]) == {"cue_form", "next_is_predicate"} and len(a) == len(b)
    numeric = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), atol=1e-6, rtol=0, equal_nan=True)


def test_cuda_request_without_gpu_is_explained(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(ARGS + ["--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
