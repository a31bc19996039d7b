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
    # the gate's measure, by a plain forward pass: the readout difference v(clean) - v(corrupt) =
    # ||e(clean) - e(corrupt)||^2, e the mean final state over the positions whose piece is the same in both texts
    def difference(a, b):
        ids = torch.tensor([minilm.tokenizer(a)["input_ids"], minilm.tokenizer(b)["input_ids"]])
        keep = torch.nonzero(ids[0] == ids[1]).flatten()
        with torch.inference_mode():
            e = minilm.model(input_ids=ids).last_hidden_state.double()[:, keep].mean(1)
        return float(((e[0] - e[1]) ** 2).sum())
    gate = summary["gate"]
    differences = [difference(p.clean, p.corrupt) for p in pairs]
    controls = [difference(p.clean, p.corrupt) for p in patching.control_pairs(pairs, minilm).pairs]
    assert gate["clean_minus_corrupt"] == pytest.approx(np.mean(differences), rel=1e-6)
    assert gate["control_mean"] == pytest.approx(np.mean(controls), rel=1e-6)
    # two pairs: far below 30 units, so the gate fails, nothing is named and the report says "too few"
    assert gate["too_few"] and not gate["passed"] and gate["n_units"] <= 2
    assert all(not heads for heads in summary["named"].values())
    report = (out / "report.md").read_text()
    assert "**Too few**" in report and "t-based cluster interval" in report and "not used" not in report
