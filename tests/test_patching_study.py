"""probing.patching.study: patch_heads with the logit readout (NEG-136 completions, masked-LM twins), its gate
against plain forwards, and the result's shape."""
import json

import numpy as np
import pytest
import torch

from probing import patching
from probing.models import load_model
from tests.patching_cases import (CLEAN, CORRUPT, WINOGRAD, _neg, _neg136_rows, _plain_logit_effects, _twin,
                                  tiny_masked_path)  # noqa: F401 (fixtures)


@pytest.mark.slow
def test_completion_pairs_and_logit_gate(tiny_causal_path, tiny_masked_path, minilm):
    rows = _neg136_rows(6)
    causal = load_model(tiny_causal_path)
    pairs = patching.completion_pairs(rows, causal, masked=False)
    assert len(pairs.pairs) == 6 and "contraction" in pairs.skipped[0][1]
    assert (pairs.pairs[0].clean, pairs.pairs[0].corrupt) == ("A trout is not a", "A trout is really a")
    assert pairs.pairs[0].answers == ("tool", "fish")
    masked = patching.completion_pairs(rows, load_model(tiny_masked_path), masked=True)
    assert masked.pairs[0].clean == "A trout is not a [MASK]."
    result = patching.patch_heads(causal, rows, kinds=("noising", "denoising"), n_boot=200, n_perm=200)
    assert result.readout.startswith("logit difference") and result.sanity["passed"]
    gate = result.gate
    assert len(result.pair_ids) == 6 and gate["ci"][0] <= gate["clean_minus_corrupt"] <= gate["ci"][1]
    # the gate's measure by a plain forward pass: logit(target_neg) - logit(target_aff) at the last piece,
    # clean minus corrupt, mean over the pairs
    lm, _ = patching.load_lm_model(causal)
    differences = []
    for pair in pairs.pairs:
        answers = patching.pairs._answer_ids(causal, pair.answers)
        ids = torch.tensor([causal.tokenizer(pair.clean)["input_ids"], causal.tokenizer(pair.corrupt)["input_ids"]])
        with torch.inference_mode():
            logits = lm(input_ids=ids).logits[:, -1].double()
        v = logits[:, answers[0]] - logits[:, answers[1]]
        differences.append(float(v[0] - v[1]))
    assert gate["clean_minus_corrupt"] == pytest.approx(np.mean(differences), abs=1e-4)
    if np.mean(differences) <= 0:
        assert not gate["passed"] and all(not heads for heads in result.named.values())
    with pytest.raises(ValueError, match="language-modelling head"):
        patching.patch_heads(minilm, rows, readout="logits", n_boot=10, n_perm=10)
    embedding = patching.patch_heads(minilm, rows[:2], kinds=("noising",), readout="auto", controls=False,
                                     n_boot=10, n_perm=10)
    assert embedding.readout.startswith("embedding") and len(embedding.pair_ids) == 2


@pytest.mark.slow
def test_masked_lm_reads_coreference_twins_kocijan_style(tiny_masked_path, minilm):
    rows = [row for i, (clean, a, corrupt, b) in enumerate(WINOGRAD) for row in
            (_twin(clean, "it" if " it " in clean else "he", a, f"w{i}", "clean"),
             _twin(corrupt, "it" if " it " in corrupt else "he", b, f"w{i}", "corrupt"))]
    # WinoBias-style twins: the pronoun is the only difference and the answer stays: no logit contrast
    rows += [_twin("The nurse met the cook because he was late.", "he", "nurse", "wb", "clean"),
             _twin("The nurse met the cook because she was late.", "she", "nurse", "wb", "corrupt")]
    masked = load_model(tiny_masked_path)
    pairs = patching.masked_twin_pairs(rows, masked)
    assert pairs.pairs[0].clean == "The box would not fit through the door because [MASK] was too wide."
    assert pairs.pairs[0].answers == ("box", "door") and pairs.skipped[0][0] == "twin:wb"
    assert "same answer" in pairs.skipped[0][1]
    result = patching.patch_heads(masked, rows, kinds=("noising", "denoising"), n_boot=100, n_perm=100)
    assert result.readout.endswith("at the masked pronoun") and result.sanity["passed"]
    assert len(result.pair_ids) == 3 and "clean twin minus corrupt twin" in result.gate["measure"]
    # the gate's measure, and one pair's numbers, by the plain one-head-at-a-time loop
    lm, _ = patching.load_lm_model(masked)
    scales = []
    for pair in pairs.pairs:
        ids = torch.tensor([masked.tokenizer(pair.clean)["input_ids"], masked.tokenizer(pair.corrupt)["input_ids"]])
        position = ids[0].tolist().index(masked.tokenizer.mask_token_id)
        noising, denoising, scale = _plain_logit_effects(lm, ids, position,
                                                         patching.pairs._answer_ids(masked, pair.answers))
        scales.append(scale)
    assert result.gate["clean_minus_corrupt"] == pytest.approx(np.mean(scales), abs=1e-4)
    pair = pairs.pairs[-1]
    one = patching.patch_pair(masked, pair.clean, pair.corrupt, answers=pair.answers, kinds=("noising", "denoising"))
    np.testing.assert_allclose(one.effects["noising"] * scale, noising * scale, atol=1e-5)
    np.testing.assert_allclose(one.effects["denoising"] * scale, denoising * scale, atol=1e-5)
    # an encoder without an LM head keeps the embedding readout on the same twins
    embedding = patching.patch_heads(minilm, rows, kinds=("noising",), n_boot=10, n_perm=10)
    assert embedding.readout.startswith("embedding") and len(embedding.pair_ids) == 4


def test_result_shapes(tiny_causal_path):
    """PatchingResult and PairPatch: .table, strict-JSON .to_dict(), .top(k, by) as a short DataFrame."""
    tiny = load_model(tiny_causal_path)
    rows = [_neg(CLEAN, "not", "a", "negated"), _neg(CORRUPT, "really", "a", "control"),
            _neg("The cat did not eat the fish.", "not", "b", "negated"),
            _neg("The cat did really eat the fish.", "really", "b", "control")]
    result = patching.patch_heads(tiny, rows, kinds=("noising", "denoising"), n_boot=20, n_perm=20)
    top = result.top(3, by="denoising")
    assert list(top.columns)[:3] == ["layer", "head", "denoising"] and len(top) == 3
    assert top["denoising"].is_monotonic_decreasing and top["denoising"].iloc[0] == result.table["denoising"].max()
    assert list(result.top(2).columns)[2] == "noising"
    with pytest.raises(ValueError, match="by must be one of"):
        result.top(3, by="pattern_noising")
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["top"]["noising"][0][:2] == [int(v) for v in result.top(1).iloc[0][["layer", "head"]]]
    one = patching.patch_pair(tiny, CLEAN, CORRUPT, kinds=("noising",))
    assert isinstance(one, patching.PairPatch) and one.sanity["passed"]
    assert list(one.top(4).columns) == ["layer", "head", "noising"] and len(one.table) == 4
    json.dumps(one.to_dict(), allow_nan=False)
