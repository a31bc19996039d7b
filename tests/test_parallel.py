"""`accelerate launch --cpu --num_processes 2` gives exactly the single-process head table."""
import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from launcher import needs_accelerate, run_two_processes

ARGS = ["heads", "--data", "builtin-negation", "--limit", "40", "--n-boot", "200", "--n-perm", "2000"]


@pytest.mark.slow   # two `accelerate launch` processes, each loading a model: about 10 s
@needs_accelerate
def test_two_cpu_processes_equal_one(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(ARGS + ["--out", str(single)]) == 0
    run_two_processes(ARGS, double, timeout=600)
    a, b = pd.read_csv(single / "heads.csv"), pd.read_csv(double / "heads.csv")
    numeric = a.select_dtypes("number").columns
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 72
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), atol=1e-6, rtol=0, equal_nan=True)
    # the strata (cue form, next word the predicate or not, each adverb) are combined exactly too
    a, b = pd.read_csv(single / "strata.csv"), pd.read_csv(double / "strata.csv")
    assert {"cue_form", "next_is_predicate", "adverb"} <= set(a["by"]) and len(a) == len(b)
    numeric = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), atol=1e-6, rtol=0, equal_nan=True)


def test_cuda_request_without_gpu_is_explained(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(ARGS + ["--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
