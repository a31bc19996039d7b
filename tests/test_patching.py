"""probing.patching (the package): `analysis patch` end to end, its numbers checked against patch_pair and plain
forward passes."""
import json

import numpy as np
import pytest
import torch

from probing import patching
from probing.examples import write_jsonl
from probing.models import load_model


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    from analysis.__main__ import main
    from probing.examples import load_examples
    examples = load_examples("builtin-negation")
    chosen = [e for e in examples if e.id in ("neg-f01-p1-not", "neg-f01-p1-ctl-really", "neg-f01-p2-not",
                                              "neg-f01-p2-ctl-really")]
    data = tmp_path / "pairs.jsonl"
    write_jsonl(chosen, data)
    out = tmp_path / "out"
    assert main(["patch", "--data", str(data), "--out", str(out), "--n-boot", "50", "--n-perm", "100"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_pairs"] == 2 and summary["sanity"]["passed"]
    import pandas as pd
    table = pd.read_csv(out / "effects.csv")
    assert len(table) == 72 and {"noising", "denoising", "noising_p_fwer", "pattern_noising",
                                 "row_denoising", "control_noising", "attention_score"} <= set(table)
    assert (out / "patching.png").stat().st_size > 0 and "Behaviour first" in (out / "report.md").read_text()
    # the command's effects are the per-pair effects of patch_pair averaged over the two pairs (the CSV keeps 6
    # significant digits)
    minilm = load_model("minilm")
    pairs = patching.collect_pairs(chosen).pairs
    ones = [patching.patch_pair(minilm, p.clean, p.corrupt, source=p.clean_source, target=p.clean_target,
                                kinds=("noising", "denoising", "row_denoising"))
            for p in pairs]
    for kind in ("noising", "denoising", "row_denoising"):
        expected = np.mean([one.effects[kind].reshape(-1) for one in ones], 0)
        np.testing.assert_allclose(table[kind], expected, rtol=1e-5, atol=1e-6)
    # the gate's distances, by a plain forward pass: ||mean hidden(clean) - mean hidden(corrupt)||
    def distance(a, b):
        ids = torch.tensor([minilm.tokenizer(a)["input_ids"], minilm.tokenizer(b)["input_ids"]])
        with torch.inference_mode():
            e = minilm.model(input_ids=ids).last_hidden_state.double().mean(1)
        return float(torch.linalg.norm(e[0] - e[1]))
    gate = summary["gate"]
    distances = [distance(p.clean, p.corrupt) for p in pairs]
    controls = [distance(p.clean, p.corrupt) for p in patching.control_pairs(pairs, minilm).pairs]
    assert gate["clean_minus_corrupt"] == pytest.approx(np.mean(distances), abs=1e-9)
    assert gate["control_mean"] == pytest.approx(np.mean(controls), abs=1e-9)
    differences = np.array(distances) - np.array(controls)
    # two pairs in two groups: each bootstrap replicate's mean is one pair's difference or their average, so the
    # CI's lower bound is the smaller difference, and the gate passes exactly when both pairs move the embedding
    # more than their controls (in one group the replicates are all the mean)
    decisive = differences.min() if pairs[0].group != pairs[1].group else differences.mean()
    assert gate["passed"] == bool(decisive > 0)
