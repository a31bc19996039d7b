"""Head scoring: batched scores equal an independent one-sentence recomputation, for encoders and decoders."""
import numpy as np
import pytest

from conftest import COREF_EXAMPLES, NEGATION_EXAMPLES
from probing.heads import score_examples, score_heads
from probing.naive import naive_example_scores


def _assert_matches_naive(loaded, examples, batch_tokens):
    scores, skipped = score_examples(loaded, examples, batch_tokens=batch_tokens)
    assert skipped == []
    for example in examples:
        row = scores.ids.index(example.id)
        naive = naive_example_scores(loaded, example)
        np.testing.assert_allclose(scores.attention[row], naive["attention"], atol=1e-5)
        assert (scores.hit[row] == naive["hit"]).all()
        if example.relation == "negation":
            np.testing.assert_allclose(scores.next_word[row], naive["next_word"], atol=1e-5)


@pytest.mark.parametrize("batch_tokens", [16, 4096])   # one example per batch, and all padded together
def test_encoder_scores_match_naive(minilm, batch_tokens):
    _assert_matches_naive(minilm, NEGATION_EXAMPLES, batch_tokens)
    _assert_matches_naive(minilm, COREF_EXAMPLES, batch_tokens)


def test_causal_model_is_detected_and_reads_negation_backwards(tiny_causal_path):
    from probing.models import load_model
    loaded = load_model(tiny_causal_path)
    assert loaded.is_causal and loaded.negation_direction == "next_word->cue"
    _assert_matches_naive(loaded, NEGATION_EXAMPLES, 4096)
    _assert_matches_naive(loaded, COREF_EXAMPLES, 4096)
    result = score_heads(loaded, NEGATION_EXAMPLES, n_boot=50, n_perm=200)
    assert result.direction == "next_word->cue"
    # Causal attention to a later word is exactly 0, so cue->next_word would be all zeros: the reversed
    # direction must give positive attention.
    assert (result.table["mean_attention"] > 0).all()


def test_encoder_is_not_causal(minilm):
    assert not minilm.is_causal and minilm.negation_direction == "cue->next_word"


def test_negation_table_columns_and_controls(minilm):
    result = score_heads(minilm, NEGATION_EXAMPLES, n_boot=100, n_perm=500)
    table = result.table
    assert len(table) == 72 and len(result.examples) == 3 and len(result.controls) == 2
    for column in ("mean_attention", "accuracy", "next_word_baseline", "selectivity", "control_attention",
                   "paired_difference", "p_value", "p_holm", "selectivity_ci_low", "selectivity_ci_high"):
        assert column in table
    np.testing.assert_allclose(table["selectivity"], table["mean_attention"] - table["next_word_baseline"])
    # paired_difference = mean over the 2 pairs of (negated - control) attention
    neg = result.examples.attention[[result.examples.ids.index("n1"), result.examples.ids.index("n3")]]
    ctl = result.controls.attention[[result.controls.ids.index("n1c"), result.controls.ids.index("n3c")]]
    np.testing.assert_allclose(table["paired_difference"], (neg - ctl).mean(0).reshape(-1), atol=1e-6)
    assert (table["p_holm"] >= table["p_value"]).all()
    assert (table["selectivity_ci_low"] <= table["selectivity"] + 1e-9).all()


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
