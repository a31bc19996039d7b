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
    # the "weren't" row's contraction is written out, so an adverb can swap its "not" piece for piece
    assert len(pairs.pairs) == 7 and not pairs.skipped and pairs.pairs[-1].clean == "The dogs were not"
    assert (pairs.pairs[0].clean, pairs.pairs[0].corrupt) == ("A trout is not a", "A trout is really a")
    assert pairs.pairs[0].answers == ("tool", "fish")
    masked = patching.completion_pairs(rows, load_model(tiny_masked_path), masked=True)
    assert masked.pairs[0].clean == "A trout is not a [MASK]."
    result = patching.patch_heads(causal, rows, kinds=("noising", "denoising"), n_boot=200, n_perm=200)
    assert result.readout.startswith("logit difference") and result.sanity["passed"]
    gate = result.gate
    assert len(result.pair_ids) == 7 and gate["ci"][0] <= gate["clean_minus_corrupt"] <= gate["ci"][1]
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
    assert len(result.pair_ids) == 3 and "masked pronoun" in result.gate["measure"]
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


def _five_negation_pairs():
    sentences = ["The lawyer did not sign the contract.", "The cat did not eat the fish.",
                 "The girl did not read the book.", "The man did not open the door.",
                 "The boy did not wash the car."]
    rows = []
    for i, text in enumerate(sentences):
        rows += [_neg(text, "not", f"p{i}", "negated"), _neg(text.replace("not", "really"), "really", f"p{i}", "control")]
    return rows


def test_five_pairs_are_too_few_and_name_nothing(tiny_causal_path, tmp_path):
    """5 pairs with their adverb controls: the gate reports its control, fails as "too few" (< 30 units), no head
    is named, the CIs are the small-sample t intervals, and the report says so in words."""
    from probing.report.patching import patching_markdown
    tiny = load_model(tiny_causal_path)
    result = patching.patch_heads(tiny, _five_negation_pairs(), kinds=("noising", "denoising"), n_boot=50,
                                  n_perm=50)
    gate = result.gate
    assert len(result.pair_ids) == 5 and result.control["n_pairs"] == 5
    assert gate["too_few"] and not gate["passed"] and gate["n_units"] == 5 and "control_mean" in gate
    assert all(heads == [] for heads in result.named.values())
    assert {"control_noising", "noising_minus_control", "denoising_specific_p_fwer"} <= set(result.table)
    assert any("t-based cluster interval (5 units < 50)" in note for note in result.notes)
    text = patching_markdown(result, "five pairs")
    assert "**Too few**" in text and "none (too few units to name a head)" in text and "not used" not in text
    # without control pairs nothing can be named either
    bare = patching.patch_heads(tiny, _five_negation_pairs(), kinds=("noising",), controls=False, n_boot=20,
                                n_perm=20)
    assert not bare.gate["passed"] and "no relation-free control" in bare.gate["note"] and not bare.named["noising"]


def test_a_head_is_named_only_when_it_beats_its_control():
    """_named_heads by hand: significance alone names nothing; the control comparison, the gate and 30 units
    all have to hold."""
    import pandas as pd
    from probing.patching.study import _named_heads
    table = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "noising": [0.3, 0.2, 0.1],
                          "noising_p_fwer": [0.001, 0.001, 0.2], "noising_specific_p_fwer": [0.01, 0.4, 0.01]})
    assert _named_heads(table, ["noising"], 0.05, True, 40) == {"noising": [(0, 0)]}
    assert _named_heads(table, ["noising"], 0.05, False, 40) == {"noising": []}     # gate failed
    assert _named_heads(table, ["noising"], 0.05, True, 29) == {"noising": []}      # too few units
    no_control = table.drop(columns="noising_specific_p_fwer")
    assert _named_heads(no_control, ["noising"], 0.05, True, 40) == {"noising": []}  # not from p_fwer alone


@pytest.mark.slow
def test_wsc273_twins_report_their_controls_and_name_only_heads_that_beat_them(minilm):
    """10 WSC273 twins with MiniLM (embedding readout): every twin's hand-written control pair runs, the gate
    compares with it, and a head is named only where it beats its control (here: 10 units, so none)."""
    from pathlib import Path
    from probing.examples import load_examples
    from probing.report.patching import patching_markdown
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (root / "wsc273").exists():
        pytest.skip("WSC273 is not in ../shared/data")
    examples = load_examples("wsc273", data_root=str(root))
    controls = patching.load_twin_controls()
    twins = [t for t in dict.fromkeys(e.meta.get("twin") for e in examples) if t in controls][:10]
    rows = [e for e in examples if e.meta.get("twin") in twins]
    result = patching.patch_heads(minilm, rows, kinds=("noising", "denoising"), n_boot=100, n_perm=200)
    assert len(result.pair_ids) == 10 and result.control["n_pairs"] == 10
    assert all(i.endswith(":control") for i in result.control["ids"])
    gate = result.gate
    assert "control_mean" in gate and gate["n_units"] == 10 and gate["too_few"] and not gate["passed"]
    for kind, heads in result.named.items():
        specific = result.table.set_index(["layer", "head"])[f"{kind}_specific_p_fwer"]
        assert all(specific[h] < 0.05 for h in heads)
    text = patching_markdown(result, "wsc273")
    assert "## Control pairs" in text and "10 pairs, each twin's clean text" in text
    assert "wsc273_controls.jsonl" in text and "not used" not in text


def test_naming_needs_the_minimum_effect_and_is_corrected_over_the_kinds():
    import pandas as pd
    from probing.patching.study import MIN_EFFECT, _named_heads
    table = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "noising": [0.3, MIN_EFFECT / 2],
                          "noising_p_fwer": [0.001, 0.001], "noising_specific_p_fwer": [0.001, 0.001],
                          "denoising": [0.3, 0.3], "denoising_p_fwer": [0.03, 0.001],
                          "denoising_specific_p_fwer": [0.001, 0.001]})
    assert _named_heads(table, ["noising"], 0.05, True, 40) == {"noising": [(0, 0)]}     # 0-1 is too small
    # 0.03 < 0.05 alone, but not below 0.05 / 2 once two kinds are run
    assert _named_heads(table, ["noising", "denoising"], 0.05, True, 40)["denoising"] == [(0, 1)]
    assert _named_heads(table, ["denoising"], 0.05, True, 40)["denoising"] == [(0, 0), (0, 1)]


def test_the_pooled_readouts_run_through_patch_heads_with_paths(tiny_causal_path):
    """sentence and probe readouts on the five pairs: each says its readout, the probe's effects are in units of
    the mean difference (clean = 1 on average), and the traced heads' direct + indirect equal their totals."""
    import numpy as np
    tiny = load_model(tiny_causal_path)
    sentence = patching.patch_heads(tiny, _five_negation_pairs(), kinds=("noising", "denoising"), readout="sentence",
                                    n_boot=20, n_perm=20)
    assert sentence.readout.startswith("sentence: the model's normalised output")
    rows = sentence.paths["rows"]
    assert rows and all(abs(r["direct"] + r["indirect"] - r["total"]) < 1e-9 for r in rows)
    # the direct-path runs check themselves as the study's do (own activations give 0)
    assert sentence.paths["sanity"]["passed"] and sentence.paths["sanity"]["own_activations_max_abs"] < 1e-5
    d_model = tiny.model.config.n_embd
    direction = np.random.default_rng(0).normal(size=d_model)
    probe = patching.patch_heads(tiny, _five_negation_pairs(), kinds=("noising",), readout="probe",
                                 direction=direction / np.linalg.norm(direction), n_boot=20, n_perm=20, paths=False)
    assert probe.readout.startswith("probe:") and probe.paths == {}
    assert any("mean clean - corrupt difference over pairs" in note for note in probe.notes)
    with pytest.raises(ValueError, match="needs a negation direction"):
        patching.patch_heads(tiny, _five_negation_pairs(), kinds=("noising",), readout="probe", n_boot=20, n_perm=20)
