"""probing.patching: the sanity checks on MiniLM and a tiny GPT-2, agreement with a plain one-head-at-a-time
implementation to 1e-5, a head whose output is exactly zero, hand-made pairs and twins, and the CLI end to end."""
import json

import numpy as np
import pytest
import torch

from probing import hooks, patching
from probing.examples import Example, write_jsonl
from probing.models import load_model

CLEAN, CORRUPT = "The lawyer did not sign the contract.", "The lawyer did really sign the contract."


def _plain_effects(loaded, clean, corrupt):
    """One forward per head with a hand-written pre-hook on the output projection (no probing.hooks edits)."""
    module = loaded.model
    layout = hooks.head_layout(loaded)
    ids = torch.tensor([loaded.tokenizer(clean)["input_ids"], loaded.tokenizer(corrupt)["input_ids"]])
    inputs = {}
    handles = [p.register_forward_hook(lambda m, a, o, l=l: inputs.__setitem__(l, a[0].clone()))
               for l, p in enumerate(layout.projections)]
    with torch.inference_mode():
        base = module(input_ids=ids).last_hidden_state.double().mean(1)
    for h in handles:
        h.remove()
    e_clean, e_corrupt = base
    readout = lambda batch: module(input_ids=batch).last_hidden_state.double().mean(1)[0]  # noqa: E731
    m = lambda e: float((e - e_corrupt) @ (e_clean - e_corrupt) / ((e_clean - e_corrupt) @ (e_clean - e_corrupt)))  # noqa
    return _per_head_runs(layout, inputs, ids, lambda batch: m(readout(batch)))


def _per_head_runs(layout, inputs, ids, normalised):
    """noising = 1 - m(clean run with head h's slice from the corrupt run), denoising = m(corrupt run with it
    from the clean run), one forward per head and run; `normalised(ids)` is the readout with clean = 1,
    corrupt = 0, and `inputs[layer]` the output projection's input on (clean, corrupt)."""
    noising = np.zeros((layout.n_layers, layout.n_heads))
    denoising = np.zeros_like(noising)
    d = layout.head_dim
    for layer in range(layout.n_layers):
        for head in range(layout.n_heads):
            for run, out in ((0, noising), (1, denoising)):
                source = inputs[layer][1 - run, :, head * d:(head + 1) * d]

                def hook(_m, args):
                    x = args[0].clone()
                    x[..., head * d:(head + 1) * d] = source
                    return (x,)
                handle = layout.projections[layer].register_forward_pre_hook(hook)
                with torch.inference_mode():
                    value = normalised(ids[run:run + 1])
                handle.remove()
                out[layer, head] = 1 - value if run == 0 else value
    return noising, denoising


def _assert_sanity(result):
    assert result.sanity["own_noising_max_abs"] <= 1e-6 and result.sanity["own_denoising_max_abs"] <= 1e-6
    assert abs(result.sanity["embedding_denoising"] - 1) <= 1e-5


@pytest.mark.slow
def test_minilm_sanity_and_plain_agreement(minilm):
    result = patching.patch_pair(minilm, CLEAN, CORRUPT)
    _assert_sanity(result)
    noising, denoising = _plain_effects(minilm, CLEAN, CORRUPT)
    np.testing.assert_allclose(result.effects["noising"], noising, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"], denoising, atol=1e-5)
    assert result.effects["noising"].max() > 0.1          # some head matters on this pair
    assert result.tokens[result.source[0]] == "not"


@pytest.mark.slow
def test_tiny_gpt2_sanity_and_plain_agreement(tiny_causal_path):
    loaded = load_model(tiny_causal_path)
    result = patching.patch_pair(loaded, CLEAN, CORRUPT)
    _assert_sanity(result)
    noising, denoising = _plain_effects(loaded, CLEAN, CORRUPT)
    np.testing.assert_allclose(result.effects["noising"], noising, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"], denoising, atol=1e-5)


def _tiny_masked_lm(tmp_path_factory, family: str, seed: int, **config) -> str:
    """A 2-layer x 2-head masked LM of `family` ("Bert", "Roberta") with random weights and MiniLM's tokenizer
    (it has a mask token), saved to a folder."""
    import transformers
    from probing.models import resolve_path
    torch.manual_seed(seed)
    folder = tmp_path_factory.mktemp(f"tiny-{family.lower()}-mlm")
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_path("minilm"))
    settings = getattr(transformers, f"{family}Config")(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                                        num_hidden_layers=2, num_attention_heads=2,
                                                        intermediate_size=37, **config)
    getattr(transformers, f"{family}ForMaskedLM")(settings).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_roberta_path(tmp_path_factory):
    return _tiny_masked_lm(tmp_path_factory, "Roberta", 2, max_position_embeddings=130, pad_token_id=0)


@pytest.mark.slow
def test_tiny_roberta_sanity_plain_agreement_and_masked_twins(tiny_roberta_path):
    """RoBERTa (a hub id the demo allows): the embedding readout agrees with the plain loop, and its LM head
    reads Winograd twins with the pronoun masked."""
    loaded = load_model(tiny_roberta_path)
    result = patching.patch_pair(loaded, CLEAN, CORRUPT, kinds=("noising", "denoising", "row_noising"))
    _assert_sanity(result)
    noising, denoising = _plain_effects(loaded, CLEAN, CORRUPT)
    np.testing.assert_allclose(result.effects["noising"], noising, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"], denoising, atol=1e-5)
    rows = [row for i, (clean, a, corrupt, b) in enumerate(WINOGRAD) for row in
            (_twin(clean, "it" if " it " in clean else "he", a, f"w{i}", "clean"),
             _twin(corrupt, "it" if " it " in corrupt else "he", b, f"w{i}", "corrupt"))]
    masked = patching.patch_heads(loaded, rows, kinds=("noising",), n_boot=50, n_perm=50)
    assert masked.readout.endswith("at the masked pronoun") and masked.sanity["passed"] and len(masked.pair_ids) == 3


def test_head_with_zero_output_has_zero_effects(tiny_causal_path):
    """Zero value weights make z[1, 0] exactly 0 in every run, so all its effects are 0 up to the float64
    rounding of the readout's arithmetic (a tolerance of 1e-12; seen: 7.2e-17)."""
    from transformers import GPT2Model
    model = GPT2Model.from_pretrained(tiny_causal_path, attn_implementation="eager").eval()
    d, n = 16, 32
    with torch.no_grad():
        model.h[1].attn.c_attn.weight[:, 2 * n:2 * n + d] = 0
        model.h[1].attn.c_attn.bias[2 * n:2 * n + d] = 0
    loaded = load_model(tiny_causal_path)
    zeroed = type(loaded)(**{**loaded.__dict__, "model": model})
    result = patching.patch_pair(zeroed, CLEAN, CORRUPT)
    for kind, effects in result.effects.items():
        assert abs(effects[1, 0]) <= 1e-12, kind
    assert np.abs(result.effects["noising"]).sum() > 0


def test_readout_by_hand():
    e_clean, e_corrupt = torch.tensor([2.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64)
    hidden = torch.tensor([[[1.0, 5.0], [1.0, -5.0]], [[2.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    assert patching._readout(hidden, e_clean, e_corrupt).tolist() == [0.5, 1.0, 0.0]


def test_twin_suggestions():
    assert patching.suggest_twin(CLEAN) == (CORRUPT, "not -> really")
    assert patching.suggest_twin("He said she left.") == ("She said she left.", "He -> She")
    assert patching.suggest_twin("Nothing to swap here.") is None


def _neg(text, cue, pair, role, **meta):
    start = text.index(cue)
    return Example(text=text, relation="negation", source_span=(start, start + len(cue)),
                   target_span=(start + len(cue) + 1, start + len(cue) + 5), id=f"{pair}-{role}",
                   meta={"pair": pair, "role": role, **meta})


def test_pairs_skipped_with_reasons(minilm):
    examples = [_neg(CLEAN, "not", "a", "negated"), _neg(CORRUPT, "really", "a", "control"),
                _neg("The workers didn't open it.", "n't", "b", "negated"),
                _neg("The workers did actually open it.", "actually", "b", "control"),
                _neg("The cat did not eat.", "not", "c", "negated")]
    pairs = patching.collect_pairs(examples)
    assert [p.id for p in pairs.pairs] == ["a", "b"] and pairs.skipped[0][0] == "c"
    ok, reason, info = patching.usable(minilm, pairs.pairs[1])
    assert not ok and "contraction" in reason
    ok, _, info = patching.usable(minilm, pairs.pairs[0])
    assert ok and len(info["source"]) == 1 and info["target"]
    twins = [Example(text="He said it.", relation="coreference", source_span=(0, 2), target_span=(8, 10), id="t1",
                     meta={"twin": "w", "twin_role": "clean"}),
             Example(text="She said it.", relation="coreference", source_span=(0, 3), target_span=(9, 11), id="t2",
                     meta={"twin": "w", "twin_role": "corrupt"})]
    assert [(p.clean, p.corrupt) for p in patching.collect_pairs(twins).pairs] == [("He said it.", "She said it.")]
    with pytest.raises(ValueError, match="different numbers of pieces"):
        patching.patch_pair(minilm, "The workers didn't open it.", "The workers did actually open it.")


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    from analysis.__main__ import main
    from probing.examples import load_examples
    examples, _ = load_examples("builtin-negation")
    chosen = [e for e in examples if e.id in ("neg-f01-p1-not", "neg-f01-p1-ctl-really", "neg-f01-p2-not",
                                              "neg-f01-p2-ctl-really")]
    data = tmp_path / "pairs.jsonl"
    write_jsonl(chosen, data)
    out = tmp_path / "out"
    assert main(["patch", "--data", str(data), "--out", str(out), "--n-boot", "50", "--n-perm", "100"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_pairs"] == 2 and summary["sanity"]["passed"]
    assert summary["gate"]["passed"] in (True, False) and "relation_minus_control_ci" in summary["gate"]
    import pandas as pd
    table = pd.read_csv(out / "effects.csv")
    assert len(table) == 72 and {"noising", "denoising", "noising_p_fwer", "pattern_noising",
                                 "row_denoising", "control_noising", "attention_score"} <= set(table)
    # the command's numbers are the per-pair effects averaged: check one pair against patch_pair
    one = patching.patch_pair(load_model("minilm"), chosen[0].text, chosen[1].text)
    assert (out / "patching.png").stat().st_size > 0 and "Behaviour first" in (out / "report.md").read_text()
    assert np.isfinite(one.effects["noising"]).all()


# ---- The logit readout (models with a language-modelling head) -----------------------------------------

@pytest.fixture(scope="module")
def tiny_masked_path(tmp_path_factory):
    return _tiny_masked_lm(tmp_path_factory, "Bert", 1, max_position_embeddings=64)


def _plain_logit_effects(lm, ids, position, answers):
    """Logit-difference noising/denoising per head, one forward per head, with a hand-written pre-hook."""
    layout = hooks.head_layout(lm)
    inputs = {}
    handles = [p.register_forward_hook(lambda m, a, o, l=l: inputs.__setitem__(l, a[0].clone()))
               for l, p in enumerate(layout.projections)]

    def diff(batch):
        with torch.inference_mode():
            logits = lm(input_ids=batch).logits[:, position].double()
        return logits[:, answers[0]] - logits[:, answers[1]]
    v_clean, v_corrupt = diff(ids).tolist()
    for h in handles:
        h.remove()
    noising, denoising = _per_head_runs(layout, inputs, ids,
                                        lambda batch: (float(diff(batch)[0]) - v_corrupt) / (v_clean - v_corrupt))
    return noising, denoising, v_clean - v_corrupt


@pytest.mark.parametrize("fixture", ["tiny_causal_path", "tiny_masked_path"])
def test_logit_readout_sanity_and_plain_agreement(fixture, request):
    loaded = load_model(request.getfixturevalue(fixture))
    mask = "" if loaded.is_causal else f" {loaded.tokenizer.mask_token}."
    clean, corrupt = "A trout is not a" + mask, "A trout is really a" + mask
    result = patching.patch_pair(loaded, clean, corrupt, answers=("tool", "fish"))
    assert result.readout == "logits"
    assert result.sanity["own_noising_max_abs"] <= 1e-5 and abs(result.sanity["embedding_denoising"] - 1) <= 1e-5
    lm, _ = patching.load_lm_model(loaded)
    ids = torch.tensor([loaded.tokenizer(clean)["input_ids"], loaded.tokenizer(corrupt)["input_ids"]])
    position = ids.shape[1] - 1 if loaded.is_causal else ids[0].tolist().index(loaded.tokenizer.mask_token_id)
    answers = patching._answer_ids(loaded, ("tool", "fish"))
    noising, denoising, scale = _plain_logit_effects(lm, ids, position, answers)
    # compared in logits (effect x scale): a random model's clean - corrupt difference is small
    np.testing.assert_allclose(result.effects["noising"] * scale, noising * scale, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"] * scale, denoising * scale, atol=1e-5)
    assert np.abs(result.effects["noising"]).max() > 1e-3


def _neg136_rows(n):
    items = [("trout", "fish", "tool"), ("bee", "insect", "building"), ("rose", "flower", "tree"),
             ("hammer", "tool", "fish"), ("ant", "insect", "vegetable"), ("oak", "tree", "animal")]
    rows = []
    for i, (noun, aff, neg) in enumerate(items[:n]):
        context = f"A {noun} is not a"
        text = f"{context} {aff}."
        start = text.index("not")
        rows.append(Example(text=text, relation="negation", source_span=(start, start + 3),
                            target_span=(start + 4, start + 5), id=f"neg136:{i}",
                            meta={"pair": f"neg136:{i}", "group": f"neg136:{i}", "context_neg": context,
                                  "context_aff": f"A {noun} is a", "target_aff": aff, "target_neg": neg}))
    rows.append(Example(text="The dogs weren't barking.", relation="negation", source_span=(12, 15),
                        target_span=(16, 23), id="neg136:x",
                        meta={"pair": "neg136:x", "context_neg": "The dogs weren't", "context_aff": "The dogs were",
                              "target_aff": "barking", "target_neg": "sleeping"}))
    return rows


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
    assert gate["passed"] == (gate["ci"][0] > 0)
    assert gate["passed"] or all(not heads for heads in result.named.values())
    with pytest.raises(ValueError, match="language-modelling head"):
        patching.patch_heads(minilm, rows, readout="logits", n_boot=10, n_perm=10)
    embedding = patching.patch_heads(minilm, rows[:2], kinds=("noising",), readout="auto", controls=False,
                                     n_boot=10, n_perm=10)
    assert embedding.readout.startswith("embedding") and len(embedding.pair_ids) == 2


def _twin(text, pronoun, answer, twin, role):
    start, target = text.index(f" {pronoun} ") + 1, text.index(answer)
    return Example(text=text, relation="coreference", source_span=(start, start + len(pronoun)),
                   target_span=(target, target + len(answer)), id=f"{twin}-{role}",
                   meta={"twin": twin, "twin_role": role, "group": twin})


WINOGRAD = [("The box would not fit through the door because it was too wide.", "box",
             "The box would not fit through the door because it was too narrow.", "door"),
            ("The cup did not fit in the bag because it was too big.", "cup",
             "The cup did not fit in the bag because it was too small.", "bag"),
            ("The man could not lift his son because he was so weak.", "man",
             "The man could not lift his son because he was so heavy.", "son")]


def test_winograd_twins_swap_a_word_other_than_the_pronoun(minilm):
    rows = [row for i, (clean, a, corrupt, b) in enumerate(WINOGRAD) for row in
            (_twin(clean, "it" if " it " in clean else "he", a, f"w{i}", "clean"),
             _twin(corrupt, "it" if " it " in corrupt else "he", b, f"w{i}", "corrupt"))]
    pairs = patching.collect_pairs(rows)
    ok, reason, info = patching.usable(minilm, pairs.pairs[0])
    assert ok, reason
    tokens = minilm.tokenizer.convert_ids_to_tokens(info["ids"][0])
    assert [tokens[i] for i in info["swapped"]] == ["wide"] and [tokens[i] for i in info["source"]] == ["it"]
    assert [tokens[i] for i in info["target"]] == ["box"]
    two_words = patching.Pair(id="x", relation="coreference", clean="The cat sat here.", corrupt="A dog sat here.",
                              clean_source=(8, 11), corrupt_source=(6, 9))
    assert patching.usable(minilm, two_words)[1] == "the texts differ in more than one word"
    # the pair's row patches read from the pronoun, not from the swapped adjective
    text = WINOGRAD[0][0]
    one = patching.patch_pair(minilm, text, WINOGRAD[0][2], source=(text.index(" it ") + 1, text.index(" it ") + 3),
                              target=(4, 7), kinds=("noising", "row_noising"))
    assert [one.tokens[i] for i in one.source] == ["it"] and [one.tokens[i] for i in one.swapped] == ["wide"]
    np.testing.assert_allclose(one.attention, one.source_pattern[:, :, one.target].sum(-1))
    with pytest.raises(ValueError, match="target must be"):
        patching.patch_pair(minilm, text, WINOGRAD[0][2], target=(5, 500))


def test_twin_gate_substitution_preferences(minilm):
    rows = [row for i, (clean, a, corrupt, b) in enumerate(WINOGRAD) for row in
            (_twin(clean, "it" if " it " in clean else "he", a, f"w{i}", "clean"),
             _twin(corrupt, "it" if " it " in corrupt else "he", b, f"w{i}", "corrupt"))]
    rows += [_twin("The nurse met the cook because he was late.", "he", "nurse", "wb", "clean"),
             _twin("The nurse met the cook because she was late.", "she", "nurse", "wb", "corrupt")]
    pairs = patching.collect_pairs(rows).pairs
    assert patching._mention(pairs[0].clean, pairs[0].clean_target) == "the box"
    preferences = patching.substitution_preferences(minilm, pairs)
    # the same referent in both twins: no contrast, NaN; the others are finite cosine differences
    assert np.isnan(preferences[-1]) and np.isfinite(preferences[:-1]).all() and np.abs(preferences[:-1]).max() < 4
    # by hand: a model blind to the swap fails the gate, one that prefers the right referent passes
    assert not patching._twin_gate(np.array([0.01, -0.01, 0.02, -0.02]), 500, 0, None)["passed"]
    passed = patching._twin_gate(np.array([0.05, 0.04, np.nan, 0.06]), 500, 0, None)
    assert passed["passed"] and passed["n_pairs"] == 3
    none = patching._twin_gate(np.array([np.nan, np.nan]), 500, 0, None)
    assert not none["passed"] and "no coreference behaviour" in none["note"]


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
    assert len(result.pair_ids) == 3 and result.gate["passed"] == (result.gate["ci"][0] > 0)
    assert "clean twin minus corrupt twin" in result.gate["measure"]
    # one pair's numbers agree with the plain one-head-at-a-time loop
    lm, _ = patching.load_lm_model(masked)
    pair = pairs.pairs[0]
    ids = torch.tensor([masked.tokenizer(pair.clean)["input_ids"], masked.tokenizer(pair.corrupt)["input_ids"]])
    position = ids[0].tolist().index(masked.tokenizer.mask_token_id)
    noising, denoising, scale = _plain_logit_effects(lm, ids, position, patching._answer_ids(masked, pair.answers))
    one = patching.patch_pair(masked, pair.clean, pair.corrupt, answers=pair.answers, kinds=("noising", "denoising"))
    np.testing.assert_allclose(one.effects["noising"] * scale, noising * scale, atol=1e-5)
    np.testing.assert_allclose(one.effects["denoising"] * scale, denoising * scale, atol=1e-5)
    # an encoder without an LM head keeps the embedding readout on the same twins
    embedding = patching.patch_heads(minilm, rows, kinds=("noising",), n_boot=10, n_perm=10)
    assert embedding.readout.startswith("embedding") and len(embedding.pair_ids) == 4


def test_logit_gate_by_hand():
    no_behaviour = patching._logit_gate(np.array([1.0, -1.0, 0.5, -0.5]), 500, 0, None, "negation")
    assert not no_behaviour["passed"] and "no behaviour to localise" in no_behaviour["note"]
    assert no_behaviour["clean_minus_corrupt"] == 0.0
    behaviour = patching._logit_gate(np.array([1.0, 1.2, 0.9, 1.1]), 500, 0, None, "coreference")
    assert behaviour["passed"] and behaviour["ci"][0] >= 0.9


def test_normalisation_by_hand():
    out = {"values": {"noising": np.array([[3.0, 1.0]]), "denoising": np.array([[1.0, 2.0]])},
           "clean": 3.0, "corrupt": 1.0, "own_clean": 3.0, "own_corrupt": 1.0, "embedding": 3.0}
    effects, sanity = patching._normalise(out, 2.0)
    assert effects["noising"].tolist() == [[0.0, 1.0]] and effects["denoising"].tolist() == [[0.0, 0.5]]
    assert sanity == {"own_noising_max_abs": 0.0, "own_denoising_max_abs": 0.0, "embedding_denoising": 1.0}
    # the logit readout divides every pair by the mean clean - corrupt difference (2 and 4 -> 3)
    second = {**out, "values": {"noising": np.array([[5.0, 1.0]])}, "clean": 5.0, "own_clean": 5.0, "embedding": 5.0}
    assert patching._normalise_all([dict(out), second], per_pair_scale=False) == 3.0
    assert second["effects"]["noising"].tolist() == [[0.0, 4 / 3]]
