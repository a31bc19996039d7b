"""`probing.controls`: an item's several control adverbs become one control (their mean), with per-adverb strata.
Hand-made scores where the answer is known, then the scorer on a few real built-in items with MiniLM."""
import numpy as np
import pytest

from probing.controls import adverb_strata, control_members, mean_over_adverbs, mean_rows
from probing.heads import ExampleScores, head_table


def _scores(attention, pairs, metas, groups=None):
    """ExampleScores with one layer; attention (N, heads)."""
    attention = np.asarray(attention, float)[:, None, :]
    n = len(attention)
    return ExampleScores(
        ids=[f"r{i}" for i in range(n)], attention=attention, is_argmax=np.zeros_like(attention),
        next_word_baseline=np.full(attention.shape, 0.1), nearest_hit=np.zeros(n, bool),
        first_hit=np.zeros(n, bool), n_candidates=np.full(n, 5), pairs=list(pairs),
        nearest_choice=np.zeros_like(attention), groups=groups or [f"g-{p}" for p in pairs],
        tasks=["all-words"] * n, meta=metas)


def test_members_and_nan_ignoring_means():
    assert control_members(["a", "b", "a", "", "b"]) == {"a": [0, 2], "b": [1, 4]}
    values = np.array([[1.0, np.nan], [3.0, 4.0], [np.nan, np.nan]])
    assert mean_rows(values, [[0, 1], [2]]).tolist()[0] == [2.0, 4.0]
    assert np.isnan(mean_rows(values, [[0, 1], [2]])[1]).all()


def test_each_pair_s_controls_collapse_to_their_mean():
    adverbs = ["really", "also", "still", "really", "also"]
    controls = _scores([[0.2, 0.9], [0.4, 0.6], [0.6, 0.3], [0.1, 0.0], [0.3, 0.2]], ["p1"] * 3 + ["p2"] * 2,
                       [{"adverb": a, "control_note": "x"} for a in adverbs])
    merged = mean_over_adverbs(controls)
    assert merged.pairs == ["p1", "p2"] and merged.ids == ["r0", "r3"]
    assert np.allclose(merged.attention[:, 0, :], [[0.4, 0.6], [0.2, 0.1]])
    assert merged.meta[0]["adverbs"] == ["really", "also", "still"] and merged.meta[1]["n_adverbs"] == 2
    assert "adverb" not in merged.meta[0]
    single = _scores([[0.1], [0.2]], ["p1", "p2"], [{}, {}])
    assert mean_over_adverbs(single) is single and mean_over_adverbs(None) is None


def test_paired_difference_uses_the_mean_control_and_adverb_strata_use_one_adverb():
    # 40 items (pairs), 2 heads; each negated row's attention is 0.8 (head 0) / 0.5 (head 1). Controls: "really"
    # 0.2, "also" 0.4 on head 0 (mean 0.3 -> paired 0.5); 0.5 for both on head 1 (paired 0).
    n = 40
    pairs = [f"p{i}" for i in range(n)]
    main = _scores(np.tile([0.8, 0.5], (n, 1)), pairs, [{"cue_form": "not"}] * n)
    ctl_pairs = [p for p in pairs for _ in range(2)]
    controls = _scores(np.tile([[0.2, 0.5], [0.4, 0.5]], (n, 1)), ctl_pairs,
                       [{"adverb": a} for _ in range(n) for a in ("really", "also")])
    table = head_table(main, "negation", mean_over_adverbs(controls), n_boot=50, n_perm=200)
    assert table["paired_difference"].tolist() == pytest.approx([0.5, 0.0])
    assert table["control_attention"].tolist() == pytest.approx([0.3, 0.5])
    assert table["n_pairs"].iloc[0] == n
    strata = adverb_strata(main, controls, "negation", head_table, n_boot=50, n_perm=200)
    by = strata.set_index(["stratum", "head"])["paired_difference"]
    assert by[("really", 0)] == pytest.approx(0.6) and by[("also", 0)] == pytest.approx(0.4)
    assert set(strata["by"]) == {"adverb"}
    assert adverb_strata(main, mean_over_adverbs(controls), "negation", head_table) is None   # one per pair


def test_score_heads_on_real_items_pairs_each_negated_sentence_with_its_mean_control(minilm):
    from probing.examples import load_examples
    from probing.heads import score_heads, score_examples
    examples = load_examples("builtin-negation", limit=4)         # 2 items: 4 negated rows, 8 controls
    result = score_heads(minilm, examples, n_boot=20, n_perm=100)
    assert len(result.examples) == 4 and len(result.controls) == 2
    raw, _ = score_examples(minilm, [e for e in examples if e.is_control], mention="span")
    expected = raw.attention[:4].mean(0) if raw.pairs[0] == raw.pairs[3] != raw.pairs[4] else None
    assert np.allclose(result.controls.attention[0], expected, atol=1e-6)
    adverbs = result.strata[result.strata["by"] == "adverb"]
    assert set(adverbs["stratum"]) == {"really", "actually", "indeed", "certainly"}


def test_balanced_controls_keep_one_control_per_negated_sentence_rotating_adverbs():
    from probing.controls import balanced_controls
    from probing.examples import load_examples
    examples = load_examples("builtin-negation")
    kept = balanced_controls(examples)
    from collections import Counter
    roles = Counter(e.role for e in kept)
    assert roles["negated"] == roles["control"] == 396
    per_item = Counter(e.meta["pair"] for e in kept if e.role == "control")
    negated = Counter(e.meta["pair"] for e in kept if e.role == "negated")
    assert per_item == negated
    assert len({e.meta["adverb"] for e in kept if e.role == "control"}) >= 8      # every adverb still appears
    assert balanced_controls(kept) == kept                                        # already balanced: unchanged


def test_each_item_weighs_the_same_whatever_its_cue_forms():
    """Frame g{i} holds item p{i} in two forms (paired differences 0.9 and 0.5: item mean 0.7) and item q{i} in
    one (0.1): per item the mean is (0.7 + 0.1) / 2 = 0.4, not the per-row (0.9 + 0.5 + 0.1) / 3 = 0.5."""
    n = 40
    pairs = [p for i in range(n) for p in (f"p{i}", f"p{i}", f"q{i}")]
    groups = [f"g{i}" for i in range(n) for _ in range(3)]
    main = _scores(np.tile([[0.9], [0.5], [0.1]], (n, 1)), pairs, [{"cue_form": "x"}] * (3 * n), groups)
    controls = _scores(np.zeros((2 * n, 1)), [p for i in range(n) for p in (f"p{i}", f"q{i}")],
                       [{"adverb": "really"}] * (2 * n), [f"g{i}" for i in range(n) for _ in range(2)])
    table = head_table(main, "negation", controls, n_boot=50, n_perm=200)
    assert table["paired_difference"].iloc[0] == pytest.approx(0.4)
    assert (table["n_pairs"].iloc[0], table["n_items"].iloc[0]) == (3 * n, 2 * n)


def test_a_predicate_only_effect_passes_the_frame_only_test_and_not_the_crossed_one():
    """40 frames x 6 predicates (5 items per frame, predicates cycling): head 0's paired difference is the
    predicate's effect alone, mean > 0 only through 6 predicates (3 of them positive); head 1 has none.
    Every frame's sum is about the same, so flipping frames calls head 0 significant; flipping predicates too
    does not (6 predicate units cannot show a mean above 0)."""
    from probing.heads import task_summaries
    n_frames, effects = 40, np.array([0.9, 0.6, 0.4, -0.2, -0.3, 0.1])
    frames = [f"f{f}" for f in range(n_frames) for _ in range(5)]
    predicates = [(f + k) % 6 for f in range(n_frames) for k in range(5)]
    rng = np.random.default_rng(0)
    diff = np.column_stack([effects[predicates] + rng.normal(0, 0.02, len(frames)),
                            rng.normal(0, 0.02, len(frames))])
    pairs = [f"i{r}" for r in range(len(frames))]
    metas = [{"predicate": f"v{p}", "cue_form": "not"} for p in predicates]
    main = _scores(0.5 + diff, pairs, metas, frames)
    controls = _scores(np.full((len(frames), 2), 0.5), pairs, [{"adverb": "really"}] * len(frames), frames)
    info = task_summaries(main, "negation", controls, n_perm=2000)["all-words"]
    assert info["n_heads_p_fwer_below_0.05"]["frame_only"] == 1
    assert info["n_heads_p_fwer_below_0.05"]["clustered"] == 0
    assert info["factors"] == "40 frames x 6 predicates (crossed: meta.group x meta.predicate)"
    assert info["test_design"].startswith("crossed sign-flip")
    table = head_table(main, "negation", controls, n_boot=50, n_perm=2000)
    assert not table["significant"].any() and "40 frames x 6 predicates" in table["paired_test"].iloc[0]
