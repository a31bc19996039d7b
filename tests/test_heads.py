"""Head scoring: batched scores equal an independent one-sentence recomputation, for encoders and decoders."""
import dataclasses
import json
import numpy as np
import pytest

from conftest import COREF_EXAMPLES, NEGATION_EXAMPLES
from probing.heads import score_examples, score_heads
from probing.naive import naive_example_scores


def _assert_matches_naive(loaded, examples, batch_tokens, source_pieces="last"):
    scores, skipped = score_examples(loaded, examples, batch_tokens=batch_tokens, source_pieces=source_pieces)
    assert skipped == []
    for example in examples:
        row = scores.ids.index(example.id)
        naive = naive_example_scores(loaded, example, source_pieces=source_pieces)
        np.testing.assert_allclose(scores.attention[row], naive["attention"], atol=1e-5)
        assert (scores.is_argmax[row] == naive["is_argmax"]).all()
        if example.relation == "negation":
            np.testing.assert_allclose(scores.next_word_baseline[row], naive["next_word_baseline"], atol=1e-5)


@pytest.mark.parametrize("batch_tokens", [16, 4096])   # one example per batch, and all padded together
def test_encoder_scores_match_naive(minilm, batch_tokens):
    _assert_matches_naive(minilm, NEGATION_EXAMPLES, batch_tokens)
    _assert_matches_naive(minilm, COREF_EXAMPLES, batch_tokens)


def test_encoder_scores_match_naive_under_the_mean_rule_too(minilm):
    """Clark et al.'s average over a source's pieces ("n't" is ' + t here) stays available and stays right."""
    _assert_matches_naive(minilm, NEGATION_EXAMPLES, 4096, source_pieces="mean")


def test_causal_model_is_detected_and_reads_negation_backwards(tiny_causal_path):
    from probing.models import load_model
    loaded = load_model(tiny_causal_path)
    assert loaded.is_causal
    _assert_matches_naive(loaded, NEGATION_EXAMPLES, 4096)
    _assert_matches_naive(loaded, COREF_EXAMPLES, 4096)
    result = score_heads(loaded, NEGATION_EXAMPLES, n_boot=50, n_perm=200)
    assert result.direction == "next_word->cue"
    # Causal attention to a later word is exactly 0, so cue->next_word would be all zeros: the reversed
    # direction must give positive attention.
    assert (result.table["mean_attention"] > 0).all()


def test_encoder_is_not_causal(minilm):
    assert not minilm.is_causal     # negation read cue -> next word: tests/test_cli.py's end-to-end summary


def test_negation_table_columns_and_controls(minilm):
    result = score_heads(minilm, NEGATION_EXAMPLES, n_boot=100, n_perm=500)
    table = result.table
    assert len(table) == 72 and len(result.examples) == 3 and len(result.controls) == 2
    for column in ("mean_attention", "accuracy", "next_word_baseline", "above_baseline", "control_attention",
                   "paired_difference", "p_value", "p_holm", "above_baseline_ci_low", "above_baseline_ci_high"):
        assert column in table
    np.testing.assert_allclose(table["above_baseline"], table["mean_attention"] - table["next_word_baseline"])
    # paired_difference = mean over the 2 pairs of (negated - control) attention
    neg = result.examples.attention[[result.examples.ids.index("n1"), result.examples.ids.index("n3")]]
    ctl = result.controls.attention[[result.controls.ids.index("n1c"), result.controls.ids.index("n3c")]]
    np.testing.assert_allclose(table["paired_difference"], (neg - ctl).mean(0).reshape(-1), atol=1e-6)
    assert (table["p_holm"] >= table["p_value"]).all()
    assert (table["above_baseline_ci_low"] <= table["above_baseline"] + 1e-9).all()
    # plain data for a notebook: strict JSON, one record per head, NaN as null
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert len(as_dict["heads"]) == 72 and as_dict["main_score"] == result.main_score
    assert as_dict["heads"][5]["above_baseline"] == pytest.approx(table["above_baseline"][5])


def test_coreference_baselines(minilm):
    result = score_heads(minilm, COREF_EXAMPLES[:2], n_boot=50, n_perm=200)
    table = result.table
    # c1: nurse is nearest to "she" and second; c2: trophy is first, suitcase nearest.
    assert table["nearest_candidate_accuracy"].iloc[0] == pytest.approx(0.5)
    assert table["first_candidate_accuracy"].iloc[0] == pytest.approx(0.5)
    assert table["chance_accuracy"].iloc[0] == pytest.approx(0.5)


def test_mixed_relations_need_a_choice(minilm):
    with pytest.raises(ValueError, match="mix relations"):
        score_heads(minilm, NEGATION_EXAMPLES + COREF_EXAMPLES)
    result = score_heads(minilm, NEGATION_EXAMPLES + COREF_EXAMPLES, relation="coreference", n_boot=20, n_perm=50)
    assert len(result.examples) == 3


def test_truncated_example_is_skipped_with_reason(minilm):
    from conftest import negation
    long_text = "word " * 600 + "he did not go."
    example = negation(long_text, "not", "go", id="long")
    scores, skipped = score_examples(minilm, NEGATION_EXAMPLES[:1] + [example])
    assert scores.ids == ["n1"] and len(skipped) == 1 and "long" in skipped[0] and "truncated" in skipped[0]


# ---- Rules on hand-made tensors (issues 11 and 12) -------------------------------------------------------
import torch

from conftest import coreference, negation
from probing.heads import ExampleScores, argmax_credit, head_table, task_summaries


def test_ties_give_one_over_k_credit():
    per_unit = torch.tensor([[[1.0, 1.0, 0.5], [2.0, 2.0, 2.0], [0.1, 0.3, float("-inf")]]])   # (1 ex, 3 heads, 3)
    assert argmax_credit(per_unit, torch.tensor([0]))[0].tolist() == pytest.approx([0.5, 1 / 3, 0.0])
    assert argmax_credit(per_unit, torch.tensor([1]))[0].tolist() == pytest.approx([0.5, 1 / 3, 1.0])
    assert argmax_credit(per_unit, torch.tensor([2]))[0].tolist() == pytest.approx([0.0, 1 / 3, 0.0])


def _hand_scores(is_argmax, nearest_choice, nearest_hit, metas, groups=None):
    """ExampleScores for 2-candidate examples with the given per-head credits (N, heads) in one layer."""
    is_argmax = np.asarray(is_argmax, float)[:, None, :]
    n = len(is_argmax)
    return ExampleScores(
        ids=[f"e{i}" for i in range(n)], attention=is_argmax.copy(), is_argmax=is_argmax,
        next_word_baseline=np.full(is_argmax.shape, np.nan),
        nearest_hit=np.asarray(nearest_hit, bool), first_hit=np.asarray(nearest_hit, bool),
        n_candidates=np.full(n, 2), pairs=[""] * n, nearest_choice=np.asarray(nearest_choice, float)[:, None, :],
        groups=groups or [f"g{i}" for i in range(n)], tasks=["candidates"] * n, meta=metas)


def test_a_first_candidate_head_is_flagged_nearest_where_first_is_nearest():
    # 40 examples; candidate 0 is first and nearest; the target is candidate 0 in even rows, 1 in odd rows.
    target_is_first = np.arange(40) % 2 == 0
    first_head = target_is_first.astype(float)                  # always picks candidate 0
    right_head = np.ones(40)                                    # always picks the target
    is_argmax = np.stack([first_head, right_head], 1)
    nearest_choice = np.stack([np.ones(40), target_is_first.astype(float)], 1)
    table = head_table(_hand_scores(is_argmax, nearest_choice, target_is_first, [{}] * 40), "coreference",
                       n_boot=50, n_perm=2000)
    assert table["flags"].tolist() == ["nearest", ""]
    assert table["nearest_choice_rate"].tolist() == [1.0, 0.0]


def test_a_head_that_ignores_the_flip_word_has_twin_consistency_zero():
    # 20 Winograd-like twin pairs: the answer is candidate 0 in the clean, 1 in the corrupt half.
    metas, hit_same, hit_right = [], [], []
    for t in range(20):
        for role in ("clean", "corrupt"):
            metas.append({"twin": f"t{t}", "twin_role": role, "agreement_decides": False})
            hit_same.append(1.0 if role == "clean" else 0.0)        # picks candidate 0 in both halves
            hit_right.append(1.0)
    # plus 40 agreement-decided items that both heads get right
    metas += [{"agreement_decides": True}] * 40
    is_argmax = np.stack([hit_same + [1.0] * 40, hit_right + [1.0] * 40], 1)
    groups = [f"t{i // 2}" for i in range(40)] + [f"a{i}" for i in range(40)]
    scores = _hand_scores(is_argmax, np.zeros_like(is_argmax), np.zeros(80), metas, groups)
    table = head_table(scores, "coreference", n_boot=50, n_perm=2000)
    assert table["twin_consistency"].tolist() == [0.0, 1.0]
    assert table["n_twin_pairs"].iloc[0] == 20
    assert table["agreement_oracle_accuracy"].iloc[0] == pytest.approx((40 * 1.0 + 40 * 0.5) / 80)
    # right where agreement decides, at chance on the twins: the agreement flag; the other head is not flagged
    assert table["flags"].tolist()[0] == "agreement" and "agreement" not in table["flags"].tolist()[1]


def test_stereotype_flag_and_pro_anti_gap_paired_by_twin():
    metas, is_argmax = [], []
    for t in range(40):
        metas += [{"twin": f"w{t}", "stereotype": "pro", "twin_role": "clean"},
                  {"twin": f"w{t}", "stereotype": "anti", "twin_role": "corrupt"}]
        is_argmax += [[1.0, 1.0], [0.0, 1.0]]                          # head 0 is right only on pro items
    scores = _hand_scores(is_argmax, np.zeros((80, 2)), np.zeros(80), metas, [f"w{i // 2}" for i in range(80)])
    table = head_table(scores, "coreference", n_boot=50, n_perm=2000)
    assert table["pro_anti_gap"].tolist() == [1.0, 0.0]
    assert table["pro_anti_p_fwer"].iloc[0] < 0.001 and table["pro_anti_p_fwer"].iloc[1] == 1.0
    assert "stereotype" in table["flags"].iloc[0] and "stereotype" not in table["flags"].iloc[1]


def test_tasks_are_never_averaged():
    scores = _hand_scores(np.ones((6, 1)), np.zeros((6, 1)), [1, 1, 0, 0, 0, 0], [{}] * 6)
    scores.tasks = ["candidates"] * 2 + ["all-words"] * 4
    table = head_table(scores, "coreference", n_boot=20, n_perm=100)
    assert table["task"].tolist() == ["candidates", "all-words"]
    assert table["nearest_candidate_accuracy"].tolist() == [1.0, 0.0]
    assert table["n_examples"].tolist() == [2, 4]


def test_clustering_counts_groups_and_cross_fits_the_best_head():
    rng = np.random.default_rng(0)
    is_argmax = (rng.random((60, 3)) < [0.9, 0.5, 0.5]).astype(float)
    scores = _hand_scores(is_argmax, np.zeros_like(is_argmax), np.zeros(60), [{}] * 60,
                          [f"g{i // 3}" for i in range(60)])
    table = head_table(scores, "coreference", n_boot=50, n_perm=500)
    assert (table["n_units"] == 20).all()
    info = task_summaries(scores, "coreference", n_perm=500)["candidates"]
    assert info["n_units"] == 20 and info["resampling_unit"] == "meta.group"
    assert info["best_head_in_sample"]["head"] == "0-0" and info["best_head_cross_fitted"]["chosen_on_each_half"] == ["0-0", "0-0"]


# ---- The same rules in the batched scorer and in the independent reference --------------------------------

CONTRACTION_EXAMPLES = [negation("In the end, the pilot hasn't read the letter.", "n't", "read", id="c1"),
                        negation("The players can't find the ball.", "n't", "find", id="c2")]
MULTIWORD_EXAMPLES = [coreference("Mary Ann Smith met Tom Brown because she was lost.", "she",
                                  "Mary Ann Smith", ["Mary Ann Smith", "Tom Brown"], id="m1")]


@pytest.mark.parametrize("mention", ["head", "span"])
def test_contractions_and_multiword_mentions_match_naive(minilm, mention):
    for examples in (CONTRACTION_EXAMPLES, MULTIWORD_EXAMPLES):
        scores, skipped = score_examples(minilm, examples, mention=mention)
        assert skipped == []
        for row, example in enumerate(examples):
            naive = naive_example_scores(minilm, example, mention=mention)
            np.testing.assert_allclose(scores.attention[row], naive["attention"], atol=1e-5)
            np.testing.assert_array_equal(scores.is_argmax[row], naive["is_argmax"])
            if example.relation == "negation":
                np.testing.assert_allclose(scores.next_word_baseline[row], naive["next_word_baseline"], atol=1e-5)


def test_head_mention_differs_from_span_sum(minilm):
    head, _ = score_examples(minilm, MULTIWORD_EXAMPLES, mention="head")
    span, _ = score_examples(minilm, MULTIWORD_EXAMPLES, mention="span")
    assert (span.attention >= head.attention - 1e-6).all() and (span.attention > head.attention + 1e-3).any()


# ---- Real numbers on the built-in negation set ------------------------------------------------------------

@pytest.fixture(scope="module")
def builtin_negation_scores(minilm):
    from probing.examples import load_examples
    examples = load_examples("builtin-negation")
    return score_heads(minilm, examples, n_boot=200, n_perm=10000)


def _head(table, layer, head):
    return table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]


@pytest.fixture(scope="module")
def builtin_negation_mean(minilm):
    """The same scores under Clark et al.'s average over a source's pieces (`source_pieces="mean"`)."""
    from probing.examples import load_examples
    return score_heads(minilm, load_examples("builtin-negation"), n_boot=200, n_perm=10000, source_pieces="mean")


@pytest.mark.slow
def test_builtin_negation_paired_difference_leads_and_its_top_head_survives_maxt(builtin_negation_scores):
    # The crossed design: 70 host frames (the units), each negated sentence against the mean of its item's
    # adverb controls. Numbers under the last-piece rule (a source of several pieces read from its last).
    result = builtin_negation_scores
    assert result.main_score == "paired_difference" and result.resampling_unit == "meta.group"
    assert result.source_pieces == "last"
    top = result.top(3)
    assert [tuple(r) for r in top[["layer", "head"]].to_numpy()] == [(2, 8), (1, 8), (1, 7)]
    assert top["paired_difference"].tolist() == pytest.approx([0.262, 0.255, 0.243], abs=0.002)
    assert (top["paired_p_fwer"] < 0.001).all() and (top["p_fwer"] < 0.001).all()
    assert result.tasks["all-words"]["n_units"] == 70
    assert len(result.controls) == 210                      # one (mean) control per frame x predicate item
    assert result.task_table()["significant"].sum() == 21


@pytest.mark.slow
def test_builtin_negation_under_the_mean_rule(builtin_negation_mean):
    """Averaging "n't"'s two pieces (Clark et al.'s rule) drops 1-8 from second to fifth (0.255 -> 0.071)."""
    top = builtin_negation_mean.top(5)
    assert [tuple(r) for r in top[["layer", "head"]].to_numpy()] == [(2, 8), (1, 7), (2, 1), (1, 4), (1, 8)]
    assert top["paired_difference"].tolist() == pytest.approx([0.215, 0.183, 0.097, 0.089, 0.071], abs=0.002)
    assert builtin_negation_mean.task_table()["significant"].sum() == 25


def _cue_forms(scores):
    strata = scores.strata
    cue = strata[strata["by"] == "cue_form"]
    return cue[cue["stratum"] == "not"], cue[cue["stratum"] == "n't"]


@pytest.mark.slow
def test_not_and_nt_items_separately(builtin_negation_scores, builtin_negation_mean):
    not_items, nt_items = _cue_forms(builtin_negation_scores)
    assert not_items["n_examples"].iloc[0] == 204 and nt_items["n_examples"].iloc[0] == 192
    # 1-8 attends from "not" to the next word (0.898) and is selective there; read from the last piece of
    # "n't" (t, beside the next word) it attends 0.905 and is selective there too: it is the best n't head.
    assert _head(not_items, 1, 8)["mean_attention"] == pytest.approx(0.898, abs=0.002)
    assert _head(not_items, 1, 8)["paired_p_fwer"] < 0.001
    assert _head(nt_items, 1, 8)["mean_attention"] == pytest.approx(0.905, abs=0.002)
    assert _head(nt_items, 1, 8)["paired_difference"] == pytest.approx(0.260, abs=0.002)
    assert _head(nt_items, 1, 8)["paired_p_fwer"] < 0.001
    best = nt_items.sort_values("paired_difference", ascending=False).iloc[0]
    assert (best["layer"], best["head"]) == (1, 8)
    # Averaged over ' and t (the mean rule), the same head looks unselective on n't: 0.515, below its controls.
    # The artefact the last-piece rule removes; "not" (one piece) is the same under both rules.
    mean_not, mean_nt = _cue_forms(builtin_negation_mean)
    assert _head(mean_nt, 1, 8)["mean_attention"] == pytest.approx(0.515, abs=0.002)
    assert _head(mean_nt, 1, 8)["paired_difference"] < 0 and _head(mean_nt, 1, 8)["paired_p_fwer"] > 0.5
    assert _head(mean_not, 1, 8)["mean_attention"] == _head(not_items, 1, 8)["mean_attention"]
    # every adverb has its own stratum: each negated sentence against that adverb's control alone
    strata = builtin_negation_scores.strata
    adverbs = set(strata[strata["by"] == "adverb"]["stratum"])
    assert {"really", "actually", "also", "certainly", "probably", "still"} <= adverbs


def test_unpaired_pro_anti_gap_is_tested_by_label_permutation():
    metas = [{"stereotype": "pro"}] * 40 + [{"stereotype": "anti"}] * 40
    is_argmax = np.r_[np.ones(40), np.zeros(40)][:, None] * [1.0, 0.0] + [0.0, 1.0]
    table = head_table(_hand_scores(is_argmax, np.zeros((80, 2)), np.zeros(80), metas), "coreference",
                       n_boot=50, n_perm=2000)
    assert table["pro_anti_gap"].tolist() == [1.0, 0.0] and table["n_pro_anti_pairs"].iloc[0] == 0
    assert table["pro_anti_p_fwer"].iloc[0] < 0.001 and "stereotype" in table["flags"].iloc[0]
    assert "stereotype" not in table["flags"].iloc[1]


def test_bad_options_are_refused_before_any_forward_pass(minilm, monkeypatch):
    """`by`, the counts and the mention rule are checked first: a typo never costs a scoring run."""
    import probing.heads as heads

    def refused(*args, **kwargs):
        raise AssertionError("scored before the options were checked")

    monkeypatch.setattr(heads, "score_examples", refused)
    examples = NEGATION_EXAMPLES
    with pytest.raises(ValueError, match="--by no_such_key: no example's meta has this key"):
        score_heads(minilm, examples, by=["no_such_key"])
    with pytest.raises(ValueError, match="n_boot must be a positive whole number, got 0"):
        score_heads(minilm, examples, n_boot=0)
    with pytest.raises(ValueError, match="n_perm must be a positive whole number, got 2.5"):
        score_heads(minilm, examples, n_perm=2.5)
    with pytest.raises(ValueError, match="mention must be one of"):
        score_heads(minilm, examples, mention="whole")


def test_top_shows_the_columns_read_first_and_ranked_keeps_every_column(minilm):
    scores = score_heads(minilm, COREF_EXAMPLES, n_boot=20, n_perm=100)
    top = scores.top(3)
    assert list(top.columns[:3]) == ["layer", "head", "accuracy"] and len(top) == 3
    assert len(top.columns) <= 12 < len(scores.table.columns)
    assert {"accuracy_ci_low", "accuracy_ci_high", "p_fwer", "nearest_candidate_accuracy"} <= set(top.columns)
    ranked = scores.ranked()
    assert list(ranked.columns) == list(scores.table.columns)
    assert top[["layer", "head"]].to_numpy().tolist() == ranked[["layer", "head"]].head(3).to_numpy().tolist()
    assert ranked["accuracy"].is_monotonic_decreasing
    assert "mean_attention" in scores.top(2, by="mean_attention").columns
    with pytest.raises(ValueError, match="by='nope' is not a column"):
        scores.top(2, by="nope")


def _two_piece_cue():
    """"It wasn't funny." laid out by hand as BERT pieces: [CLS] It wasn ' t fun ##ny . [SEP]; the cue "n't" is
    ' + t (pieces 3, 4), its next word "funny" is fun + ##ny (pieces 5, 6). One head's attention, by hand:
    ' gives "funny" 0.1, t gives it 0.9; "funny" -> "." is 0.2 from fun and 0.6 from ##ny."""
    from probing.alignment import make_layout
    text = "It wasn't funny."
    offsets = [(0, 0), (0, 2), (3, 7), (7, 8), (8, 9), (10, 13), (13, 15), (15, 16), (0, 0)]
    word_ids = [None, 0, 1, 2, 3, 4, 4, 5, None]
    layout = make_layout(text, (6, 9), (10, 15), None, offsets, word_ids)
    attention = torch.zeros(1, 1, 9, 9)               # [batch, head, query_pos, key_pos], float32 as a model's
    attention[0, 0, 3, 5] = attention[0, 0, 3, 6] = 0.05              # ' -> funny: 0.1 in all
    attention[0, 0, 4, 5], attention[0, 0, 4, 6] = 0.5, 0.4           # t -> funny: 0.9
    attention[0, 0, 1, 2] = 0.3                                        # It -> wasn
    attention[0, 0, 2, 3] = 0.2                                        # wasn -> '
    attention[0, 0, 5, 7], attention[0, 0, 6, 7] = 0.2, 0.6           # fun -> ., ##ny -> .
    return layout, attention


@pytest.mark.parametrize("rule, cue_to_next, baseline", [
    ("last", 0.9, (0.3 + 0.2 + 0.6) / 3),       # t, and each baseline word from its last piece (##ny)
    ("mean", 0.5, (0.3 + 0.2 + 0.4) / 3),       # Clark et al.: the mean of ' and t, of fun and ##ny
])
def test_a_two_piece_cue_is_read_from_its_last_piece_unless_mean_is_asked(rule, cue_to_next, baseline):
    """Known answers: the baseline's pairs are It->wasn, wasn->' and funny->. (pairs starting in the cue's
    words ' and t are left out); the target is summed over its pieces under both rules."""
    from probing.attention import FullLayer
    from probing.heads import score_attention
    from probing.naive import word_attention_matrix
    layout, attention = _two_piece_cue()
    got = score_attention([layout], [FullLayer(attention)], "negation", source_pieces=rule)
    # float32 arithmetic on a handful of numbers: equal to the hand-computed answer within 1e-6.
    assert got["attention"][0, 0, 0] == pytest.approx(cue_to_next, abs=1e-6)
    assert got["next_word_baseline"][0, 0, 0] == pytest.approx(baseline, abs=1e-6)
    # The independent reference's word matrix agrees: words are It, wasn, ', t, funny, .
    words = word_attention_matrix(attention[0, 0].numpy(), [[1], [2], [3], [4], [5, 6], [7]], rule)
    assert words[4, 5] == pytest.approx(0.6 if rule == "last" else 0.4, abs=1e-6)
    with pytest.raises(ValueError, match="source_pieces must be one of"):
        score_attention([layout], [FullLayer(attention)], "negation", source_pieces="first")


def test_all_words_coreference_is_tested_against_the_best_fixed_offset_not_the_nearest_word():
    """Every word competes, so the nearest word is never the antecedent (a baseline of 0 that cannot fail).
    Hand-made: 40 examples, the antecedent 3 words before the pronoun in 30 of them and 5 before in 10.
    A head that always looks 3 words back scores 0.75 and must NOT beat the baseline; a head that finds the
    antecedent every time scores 1.0 and must."""
    from probing.heads import positional_baseline
    n = 40
    offsets = np.where(np.arange(n) < 30, -3, -5)
    positional_head = (offsets == -3).astype(float)
    right_head = np.ones(n)
    scores = _hand_scores(np.stack([positional_head, right_head], 1), np.zeros((n, 2)), np.zeros(n), [{}] * n)
    scores = dataclasses.replace(scores, tasks=["all-words"] * n, target_offset=offsets,
                                 n_candidates=np.full(n, 8))
    hit, name, best = positional_baseline(scores)
    assert best == -3 and name == "best fixed offset (-3 words)" and hit.mean() == pytest.approx(0.75)
    table = head_table(scores, "coreference", n_boot=50, n_perm=2000)
    assert "nearest_candidate_accuracy" not in table or table["nearest_candidate_accuracy"].isna().all()
    assert table["best_offset"].iloc[0] == -3 and table["best_offset_accuracy"].iloc[0] == pytest.approx(0.75)
    assert table["test"].iloc[0] == "sign-flip: accuracy > best_offset_accuracy (paired by example)"
    assert table["p_fwer"].iloc[0] == 1.0 and table["p_fwer"].iloc[1] < 0.05
    # ties go to the offset nearest the pronoun
    tied = dataclasses.replace(scores, target_offset=np.where(np.arange(n) % 2 == 0, -4, 2))
    assert positional_baseline(tied)[2] == 2
    # the candidates task keeps the nearest candidate
    candidates = dataclasses.replace(scores, tasks=["candidates"] * n)
    assert positional_baseline(candidates)[1:] == ("nearest candidate", None)


# ---- Coreference: the first-content-word baseline, scored like a head (issue 28 item 5) ----------------------

def test_first_content_word_skips_function_words_and_the_pronoun():
    from probing.examples import Example
    from probing.naive import first_content_hit, first_content_word
    text = "We found the old bird in the garden and brought it inside."
    assert text[slice(*first_content_word(text))] == "found"          # "We" is a pronoun, not a content word
    said = "The man said that he would arrive soon."
    assert said[slice(*first_content_word(said))] == "man"
    assert first_content_word("It was it.", (0, 2)) is None
    man = Example(text="The man said that he would arrive soon.", relation="coreference", source_span=(18, 20),
                  target_span=(4, 7))
    assert first_content_hit(man) == 1.0
    # all-words: under mention="head" only the mention's last word counts; under "span" any word inside it
    old_man = dataclasses.replace(man, text="The old man said that he would arrive soon.", source_span=(22, 24),
                                  target_span=(0, 11))
    assert first_content_hit(old_man, "head") == 0.0 and first_content_hit(old_man, "span") == 1.0
    # candidates: the rule picks the candidate holding the first content word (else the next one)
    thanked = Example(text="The man thanked Mary because she had helped.", relation="coreference",
                      source_span=(29, 32), target_span=(16, 20), candidate_spans=((0, 7), (16, 20)))
    assert first_content_hit(thanked) == 0.0
    assert first_content_hit(dataclasses.replace(thanked, target_span=(0, 7))) == 1.0


def _all_words_scores(first_content, offsets, credit, split):
    from probing.heads import ExampleScores, HeadScores, head_table
    credit = np.asarray(credit, float)[:, None, :]
    n = len(credit)
    main = ExampleScores(ids=[f"e{i}" for i in range(n)], attention=credit.copy(), is_argmax=credit,
                         next_word_baseline=np.full(credit.shape, np.nan), nearest_hit=np.zeros(n, bool),
                         first_hit=np.zeros(n, bool), n_candidates=np.full(n, 8), pairs=[""] * n,
                         nearest_choice=np.zeros_like(credit), groups=[f"g{i}" for i in range(n)],
                         tasks=["all-words"] * n, meta=[{"split": s} for s in split],
                         target_offset=np.asarray(offsets), first_content_hit=np.asarray(first_content, float))
    table = head_table(main, "coreference", n_boot=100, n_perm=500)
    return HeadScores(model="toy", relation="coreference", direction="pronoun -> antecedent", n_layers=1,
                      n_heads=credit.shape[2], table=table, examples=main, controls=None, skipped=[])


def test_every_headline_head_is_tested_against_the_strongest_baseline_chosen_on_the_exploration_half():
    from probing.report.heads import headline, strongest_baseline_rows, strongest_baseline_test
    n = 60
    split = ["explore" if i < 30 else "confirm" for i in range(n)]
    # First content word: right on 24 of the 30 exploration rows (0.8) and on all 30 confirmation rows; the best
    # fixed offset (-3) is right on 20 of 60. Head 0 is always right, head 1 matches the first-content rule.
    first_content = np.array([i % 5 != 0 if i < 30 else True for i in range(n)], float)
    offsets = np.where(np.arange(n) % 3 == 0, -3, np.arange(n) % 7 - 10)
    scores = _all_words_scores(first_content, offsets, np.stack([np.ones(n), first_content], 1), split)
    test = strongest_baseline_test(scores, "all-words", n_perm=500, n_boot=100)
    assert test["baseline"] == "first content word"
    assert test["chosen_on"].startswith("the exploration half (30 of 60")
    assert test["baselines_considered"]["first content word"] == pytest.approx(0.8)
    assert test["baseline_accuracy"] == pytest.approx(54 / 60)
    by_head = {h["head"]: h for h in test["heads"]}
    assert by_head["0-0"]["difference"] == pytest.approx(6 / 60)
    assert by_head["0-1"]["difference"] == 0 and by_head["0-1"]["p_fwer"] == 1.0
    rows = "\n".join(strongest_baseline_rows(test))
    assert "| 0-1 | 0.900 | 0.900 | +0.000 [+0.000, +0.000] | 1 | 1 | not distinguishable with 60 units" in rows
    assert "Not run, the subject (first noun phrase) on all-words" in rows
    # a head whose CI lies below 0 is said to fall below the baseline, not to be indistinguishable from it
    below = _all_words_scores(first_content, offsets, np.stack([np.zeros(n), first_content], 1), split)
    below_rows = "\n".join(strongest_baseline_rows(strongest_baseline_test(below, "all-words", n_perm=500,
                                                                         n_boot=100)))
    assert "| 0-0 | 0.000 |" in below_rows and "below it (95% CI below 0)" in below_rows
    assert "first content word" in headline(test)
