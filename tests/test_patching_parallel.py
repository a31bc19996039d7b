"""`accelerate launch --cpu --num_processes 2 -m analysis patch` shards the pairs and gives exactly the
single-process effects table."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from launcher import needs_accelerate, run_two_processes

ARGS = ["patch", "--data", "builtin-negation", "--limit", "5", "--kinds", "noising,denoising", "--n-boot", "100",
        "--n-perm", "500"]


@pytest.mark.slow   # two `accelerate launch` processes, each loading MiniLM and patching its shard: about 1 min
@needs_accelerate
def test_two_cpu_processes_patch_like_one(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(ARGS + ["--out", str(single)]) == 0
    run_two_processes(ARGS, double, timeout=900)
    a, b = pd.read_csv(single / "effects.csv"), pd.read_csv(double / "effects.csv")
    numeric = a.select_dtypes("number").columns
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 72
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), atol=1e-6, rtol=0, equal_nan=True)
    sa, sb = (json.loads((folder / "summary.json").read_text()) for folder in (single, double))
    assert sa["n_pairs"] == sb["n_pairs"] >= 4 and sa["named"] == sb["named"]
