"""Head ablation: hooks knock out exactly the chosen head's slice and nothing upstream, are always removed; the
statistics (empirical p-value, layer-matched random sets, measures) do what they say on hand-made numbers; the
experiment and its command end to end."""
import numpy as np
import pytest
import torch
from torch import nn

from probing.ablation import (HeadSet, NegItem, ablate, completion_logprobs, coref_margins, empirical_p_value,
                              head_output_means, layer_matched_sets, lm_negation_scores,
                              pair_cosine_distances, sentence_embeddings)
from probing.hooks import UnsupportedArchitectureError, ablate_heads, check_heads, head_layout
from probing.install_models import local_model_path
from probing.models import load_lm_model, load_model
from probing.runner import encode, pad_ids

TEXTS = ["The lawyer did not sign the contract.", "The doctor called the nurse because she was late today."]


def _batch(loaded):
    encoded = encode(loaded, TEXTS)
    return pad_ids([e.input_ids for e in encoded], loaded.tokenizer.pad_token_id)


def _run(loaded, ids, mask, layer):
    """Hidden states of every layer, and the input of `layer`'s output projection."""
    captured = {}
    projection = head_layout(loaded).projections[layer]

    def remember(_module, args, _output):
        captured["input"] = args[0].clone()          # returns None: the output is left alone

    handle = projection.register_forward_hook(remember)
    try:
        with torch.inference_mode():
            out = loaded.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    finally:
        handle.remove()
    return out.hidden_states, captured["input"]


def _assert_single_head_ablation(loaded, layer=1, head=1):
    layout = head_layout(loaded)
    ids, mask = _batch(loaded)
    cols = slice(head * layout.head_dim, (head + 1) * layout.head_dim)
    hidden, projection_input = _run(loaded, ids, mask, layer)
    with ablate_heads(loaded, [(layer, head)]):
        ablated_hidden, ablated_input = _run(loaded, ids, mask, layer)
    assert (ablated_input[..., cols] == 0).all()
    assert projection_input[..., cols].abs().sum() > 0          # it was not zero to begin with
    others = torch.ones(ablated_input.shape[-1], dtype=torch.bool)
    others[cols] = False
    assert torch.equal(ablated_input[..., others], projection_input[..., others])
    for before in range(layer + 1):                               # hidden_states[i] is the input of layer i
        assert torch.equal(ablated_hidden[before], hidden[before])
    real = mask.bool()
    assert not torch.allclose(ablated_hidden[-1][real], hidden[-1][real])
    restored_hidden, restored_input = _run(loaded, ids, mask, layer)
    assert torch.equal(restored_input, projection_input)
    assert all(torch.equal(a, b) for a, b in zip(restored_hidden, hidden))
    assert all(len(p._forward_pre_hooks) == 0 for p in layout.projections)


def test_single_head_ablation_minilm(minilm):
    assert head_layout(minilm).names[1] == "encoder.layer.1.attention.output.dense"
    _assert_single_head_ablation(minilm, layer=1, head=4)


@pytest.mark.slow
@pytest.mark.skipif(local_model_path("mpnet") is None, reason="mpnet is not installed")
def test_single_head_ablation_mpnet():
    loaded = load_model("mpnet")
    assert (loaded.n_layers, loaded.n_heads) == (12, 12)       # the installed model, whole
    assert head_layout(loaded).names[0] == "encoder.layer.0.attention.attn.o"
    _assert_single_head_ablation(loaded, layer=2, head=3)


@pytest.mark.slow
@pytest.mark.skipif(local_model_path("gemma-270m") is None, reason="gemma-270m is not installed")
def test_single_head_ablation_gemma():
    loaded = load_model("gemma-270m")
    layout = head_layout(loaded)
    assert layout.names[0] == "layers.0.self_attn.o_proj" and layout.head_dim == 256
    _assert_single_head_ablation(loaded, layer=3, head=2)


def test_single_head_ablation_tiny_gpt2(tiny_causal_path):
    loaded = load_model(tiny_causal_path)
    assert head_layout(loaded).names[1] == "h.1.attn.c_proj"     # GPT-2's Conv1D, found by shape and data flow
    _assert_single_head_ablation(loaded, layer=1, head=0)


def test_hooks_are_removed_when_the_block_raises(minilm):
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_heads(minilm, [(0, 0), (2, 5)]):
            assert len(head_layout(minilm).projections[2]._forward_pre_hooks) == 1
            raise RuntimeError("boom")
    assert all(len(p._forward_pre_hooks) == 0 for p in head_layout(minilm).projections)


def test_heads_are_checked_with_explained_errors(minilm):
    with pytest.raises(ValueError, match="layer 9 is out of range: this model has 6 layers"):
        with ablate_heads(minilm, [(9, 0)]):
            pass
    with pytest.raises(ValueError, match="head 12 is out of range: this model has 12 heads"):
        check_heads([(0, 12)], 6, 12)
    with pytest.raises(ValueError, match="listed twice"):
        check_heads([(1, 2), (1, 2)], 6, 12)
    with pytest.raises(ValueError, match="pair of integers"):
        check_heads([(1.0, 2)], 6, 12)
    with pytest.raises(ValueError, match="mode must be one of"):
        with ablate_heads(minilm, [(0, 0)], mode="noise"):
            pass
    with pytest.raises(ValueError, match="head_output_means"):
        with ablate_heads(minilm, [(0, 0)], mode="mean"):
            pass
    assert check_heads([(3, 1), (0, 2)], 6, 12) == [(0, 2), (3, 1)]


def test_mean_ablation_writes_the_reference_mean(minilm):
    layout = head_layout(minilm)
    means = head_output_means(minilm, TEXTS)
    assert means.shape == (6, 12, layout.head_dim)
    ids, mask = _batch(minilm)
    _, plain = _run(minilm, ids, mask, 1)
    # The mean over real tokens recomputed by hand from the captured projection input.
    real = mask.bool()
    assert torch.allclose(means[1].reshape(-1), plain[real].mean(0), atol=1e-5)
    with ablate_heads(minilm, [(1, 4)], mode="mean", means=means):
        _, ablated = _run(minilm, ids, mask, 1)
    cols = slice(4 * layout.head_dim, 5 * layout.head_dim)
    assert torch.allclose(ablated[..., cols], means[1, 4].expand_as(ablated[..., cols]))


def test_unsupported_architecture_is_named():
    from transformers import BertConfig

    class NoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=8)
            self.proj = nn.Linear(8, 8)

    with pytest.raises(UnsupportedArchitectureError, match="found no list of 2 layers"):
        head_layout(NoLayers())
    with pytest.raises(UnsupportedArchitectureError, match="has no `config`"):
        head_layout(nn.Linear(4, 4))


def test_empirical_p_value_on_hand_made_numbers():
    assert empirical_p_value(0.5, [0.1, 0.2, 0.6, 0.5]) == pytest.approx(3 / 5)   # 0.6 and the tie count
    assert empirical_p_value(1.0, [0.1] * 19) == pytest.approx(1 / 20)            # beats every draw
    assert empirical_p_value(-1.0, [0.0, 0.3]) == pytest.approx(1.0)              # beaten by every draw
    with pytest.raises(ValueError):
        empirical_p_value(0.1, [])


def test_random_sets_are_layer_matched_distinct_and_reproducible():
    heads = ((0, 3), (0, 5), (4, 1))
    sets = layer_matched_sets(heads, 12, 200, seed=0)
    assert sets == layer_matched_sets(heads, 12, 200, seed=0) and sets != layer_matched_sets(heads, 12, 200, seed=1)
    for s in sets:
        assert [l for l, _ in s] == [0, 0, 4] and len(set(s)) == 3 and all(0 <= h < 12 for _, h in s)
    # uniform within the layer: every head of layer 4 is drawn, about 1/12 of the time each
    counts = np.bincount([s[2][1] for s in sets], minlength=12)
    assert counts.min() > 0 and counts.max() < 40


def test_measures_on_hand_made_vectors():
    states = [torch.tensor([[9.0, 9.0], [1.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    embeddings = sentence_embeddings(states, skip_first=True)       # first row dropped: mean (2, 0) -> (1, 0)
    assert torch.allclose(embeddings, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(pair_cosine_distances(embeddings, [(0, 1), (0, 0)]), [1.0, 0.0], atol=1e-6)
    from probing.ablation import CorefItem
    coref_states = [torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])]
    item = CorefItem(id="x", text_index=0, pronoun=(0,), antecedent=(1,), distractor=(2,))
    margin = coref_margins(coref_states, [item])[0]
    assert margin == pytest.approx(1 / np.sqrt(1.01) - 0.0, abs=1e-6)


def test_lm_scores_match_a_plain_forward_and_change_under_ablation(tiny_causal_path):
    loaded = load_model(tiny_causal_path)
    lm, reason = load_lm_model(loaded)
    assert lm is not None, reason
    pairs = [("A robin is a", "bird"), ("A robin is not a", "tree")]
    scores = completion_logprobs(lm, loaded, pairs)
    # By hand: log P of each completion piece from the position before it, one sentence at a time.
    for (context, target), score in zip(pairs, scores):
        ids = loaded.tokenizer(f"{context} {target}", return_tensors="pt")["input_ids"]
        n_target = len(loaded.tokenizer(target, add_special_tokens=False)["input_ids"])
        with torch.inference_mode():
            logprobs = torch.log_softmax(lm(input_ids=ids).logits[0].float(), -1)
        start = ids.shape[1] - 1 - n_target           # the last piece is [SEP] (MiniLM's tokenizer)
        expected = sum(float(logprobs[p - 1, ids[0, p]]) for p in range(start, start + n_target))
        assert score == pytest.approx(expected, abs=1e-4)
    items = [NegItem("i1", "A robin is a", "A robin is not a", "bird", "tree"),
             NegItem("i2", "Water is", "Water isn't", "wet", "dry")]
    plain = lm_negation_scores(lm, loaded, items)
    assert set(plain) == {"lm_affirmative_correct", "lm_negated_correct", "lm_negation_shift"}
    with ablate_heads(lm, [(1, 0)]):
        ablated = lm_negation_scores(lm, loaded, items)
    assert not np.allclose(plain["lm_negation_shift"], ablated["lm_negation_shift"])


def test_sentence_embedding_checkpoint_has_no_lm_test(minilm):
    lm, reason = load_lm_model(minilm)
    assert lm is None and "no trained language-modelling head" in reason


def _examples():
    from probing.examples import load_examples
    negation = load_examples("builtin-negation")
    coref = load_examples("builtin-coref")
    # six items, each its "not" sentence and one adverb control
    ids = {f"neg-f0{f}-p{p}-{row}" for f in (1, 2) for p in (1, 2, 3) for row in ("not", "ctl-really")}
    return ([e for e in negation if e.id in ids]
            + [e for e in coref if e.candidate_spans and len(e.candidate_spans) == 2][:6])


def test_ablate_end_to_end_on_a_tiny_model(tiny_causal_path):
    loaded = load_model(tiny_causal_path)
    sets = [HeadSet("neg", "negation", ((1, 0),)), HeadSet("coref", "coreference", ((0, 1), (1, 1)), random=False)]
    result = ablate(loaded, _examples(), head_sets=sets, draws=3, n_boot=50)
    table = result.table.set_index(["head_set", "measure"])
    assert set(table.index) == {("neg", "negation_distance"), ("coref", "coref_margin"),
                                ("coref", "coref_antecedent_closer")}
    neg = table.loc[("neg", "negation_distance")]
    assert neg["n"] == 6 and neg["n_random"] == 3 and neg["p_vs_random"] in {0.25, 0.5, 0.75, 1.0}
    assert neg["effect_ci_low"] <= neg["effect"] <= neg["effect_ci_high"] and "random" in neg["verdict"]
    assert table.loc[("coref", "coref_margin")]["n_random"] == 0          # random=False: no draws
    draws = result.random_effects
    assert len(draws) == 3 and all(h.startswith("1-") for h in draws["heads"])   # layer-matched to (1, 0)
    # the p-value is the rank of the set's damage among the draws' damages
    damages = -draws["effect"].to_numpy()
    assert neg["p_vs_random"] == pytest.approx((1 + np.sum(damages >= neg["damage"])) / 4)
    assert result.to_dict()["head_sets"][0]["heads"] == [[1, 0]]
    # the result's shape: strict JSON (no NaN: the random=False row has none), and top rows by damage
    import json
    results = json.loads(json.dumps(result.to_dict(), allow_nan=False))["results"]
    assert [r["p_vs_random"] for r in results if r["head_set"] == "coref"] == [None, None]
    top = result.top(2)
    assert list(top.columns) == ["head_set", "measure", "effect", "effect_ci_low", "effect_ci_high", "damage",
                                 "p_vs_random"]
    assert len(top) == 2 and top["damage"].iloc[0] == result.table["damage"].max()
    assert result.top(1, by="baseline")["baseline"].iloc[0] == result.table["baseline"].max()
    with pytest.raises(ValueError, match="by must be one of"):
        result.top(1, by="verdict")
    with pytest.raises(ValueError, match="out of range"):
        ablate(loaded, _examples(), head_sets=[HeadSet("bad", "negation", ((9, 0),))], draws=1)
    with pytest.raises(ValueError, match="nothing to measure coreference"):
        ablate(loaded, _examples()[:12], head_sets=[HeadSet("c", "coreference", ((0, 0),))], draws=1)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    import json
    from analysis.__main__ import main
    out = tmp_path / "abl"
    assert main(["ablate", "--limit", "6", "--draws", "2", "--n-boot", "20", "--out", str(out)]) == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["draws"] == 2 and "other half" in summary["selection"]
    assert {s["relation"] for s in summary["head_sets"]} == {"negation", "coreference"}
    assert (out / "ablation.png").stat().st_size > 0 and "layer-matched" in (out / "ablation.md").read_text()


def test_cli_refuses_to_overwrite_without_force(tmp_path, capsys):
    from analysis.__main__ import main
    (tmp_path / "ablation.json").write_text("{}")
    assert main(["ablate", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_masked_lm_completion_scores_match_a_plain_forward(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM
    from probing.models import resolve_path
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    lm, reason = load_lm_model(loaded)
    assert lm is not None and not loaded.is_causal, reason
    score = completion_logprobs(lm, loaded, [("Water is", "wet")])[0]
    ids = tokenizer("Water is wet.", return_tensors="pt")["input_ids"]
    position = ids[0].tolist().index(tokenizer.convert_tokens_to_ids("wet"))
    masked = ids.clone()
    masked[0, position] = tokenizer.mask_token_id
    with torch.inference_mode():
        logprobs = torch.log_softmax(lm(input_ids=masked).logits[0, position].float(), -1)
    assert score == pytest.approx(float(logprobs[ids[0, position]]), abs=1e-4)
    with ablate_heads(lm, [(0, 1)]):
        assert completion_logprobs(lm, loaded, [("Water is", "wet")])[0] != pytest.approx(score, abs=1e-6)
