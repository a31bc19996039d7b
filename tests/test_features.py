"""Feature extraction: attention features equal independent recomputations, pair labels and cue forms,
hidden states, and the fold groups that keep twins and sentence frames together."""
import numpy as np
import pytest

from conftest import COREF_EXAMPLES, NEGATION_EXAMPLES
from probing.examples import Example, load_examples
from probing.features import (DEFAULT_GROUP_BY, adjacent_pair_features, agreement_decides, candidate_features,
                              cue_form, example_group, fold_groups, resolve_group_by, sentence_cue_forms,
                              word_hidden_states, word_type)
from probing.heads import score_examples
from probing.naive import word_attention_matrix, words_of


@pytest.fixture(scope="module")
def builtin_coref():
    return load_examples("builtin-coref")


@pytest.fixture(scope="module")
def coref_features(minilm, builtin_coref):
    return candidate_features(minilm, builtin_coref)


def _piece_attention(loaded, text):
    """Full attention (layers, heads, T, T) and the word -> pieces map of one text, outside the batched path."""
    import torch
    enc = loaded.tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_attentions=True)
    groups = words_of(enc.word_ids(0), [tuple(o) for o in enc["offset_mapping"][0].tolist()])
    offsets = [tuple(o) for o in enc["offset_mapping"][0].tolist()]
    return torch.stack(out.attentions)[:, 0].numpy(), groups, offsets


def _pieces_of(span, groups, offsets):
    return [p for pieces in groups.values() if any(offsets[q][0] < span[1] and span[0] < offsets[q][1] for q in pieces)
            for p in pieces]


# ---- Feature extraction equals independent computations ---------------------------------------------

@pytest.mark.slow
def test_pronoun_to_candidate_feature_equals_score_examples_attention(minilm, builtin_coref, coref_features):
    with_candidates = [e for e in builtin_coref if e.candidate_spans]
    scores, _ = score_examples(minilm, with_candidates)
    assert coref_features.ids == scores.ids
    on_target = coref_features.features[np.arange(len(coref_features)), coref_features.target, 0]
    np.testing.assert_allclose(on_target, scores.attention, atol=1e-5)
    assert len(coref_features.skipped) == len(builtin_coref) - len(with_candidates)   # no candidate_spans


@pytest.mark.slow
@pytest.mark.parametrize("batch_tokens", [16, 4096])
def test_both_coref_directions_equal_the_naive_word_matrix(minilm, batch_tokens):
    examples = [e for e in COREF_EXAMPLES if e.candidate_spans]
    feats = candidate_features(minilm, examples, batch_tokens=batch_tokens)
    for row, example in enumerate(examples):
        attention, groups, offsets = _piece_attention(minilm, example.text)
        units = [_pieces_of(example.source_span, groups, offsets)] + [
            _pieces_of(span, groups, offsets) for span in example.candidate_spans]
        for layer in range(minilm.n_layers):
            for head in range(minilm.n_heads):
                matrix = word_attention_matrix(attention[layer, head], units, "mean")   # the features' rule
                for c in range(len(example.candidate_spans)):
                    assert feats.features[row, c, 0, layer, head] == pytest.approx(matrix[0, c + 1], abs=1e-5)
                    assert feats.features[row, c, 1, layer, head] == pytest.approx(matrix[c + 1, 0], abs=1e-5)


@pytest.mark.slow
def test_adjacent_pair_features_equal_the_naive_word_matrix(minilm):
    feats = adjacent_pair_features(minilm, NEGATION_EXAMPLES, batch_tokens=16)
    for row, example in enumerate(NEGATION_EXAMPLES):
        attention, groups, _ = _piece_attention(minilm, example.text)
        pieces = [groups[w] for w in sorted(groups)]
        pairs = np.flatnonzero(feats.example == row)
        for layer in (0, minilm.n_layers - 1):
            for head in (0, 5, minilm.n_heads - 1):
                matrix = word_attention_matrix(attention[layer, head], pieces, "mean")  # the features' rule
                for p in pairs:
                    w = feats.position[p]
                    assert feats.features[p, 0, layer, head] == pytest.approx(matrix[w, w + 1], abs=1e-5)
                    assert feats.features[p, 1, layer, head] == pytest.approx(matrix[w + 1, w], abs=1e-5)


@pytest.mark.slow
def test_pair_labels_cue_and_hard_negative(minilm):
    feats = adjacent_pair_features(minilm, NEGATION_EXAMPLES)
    cues = [feats.word[i] for i in np.flatnonzero(feats.label)]
    adverbs = [feats.word[i] for i in np.flatnonzero(feats.hard_negative)]
    assert sorted(cues) == ["not", "not", "t"]            # "weren't" -> words "weren" "'" "t": labelled at "t"
    assert sorted(adverbs) == ["also", "really"]
    # The cue "n't" is the pieces inside its span, "'" and "t" (the host "weren" is not part of it): the pair
    # that starts inside the cue ("'" -> "t") carries no label and is left out; "weren" -> "'" is an ordinary pair.
    contraction = feats.ids.index("n2")
    assert [feats.word[i] for i in np.flatnonzero(feats.example == contraction)][:5] == \
        ["the", "dogs", "weren", "t", "barking"]
    assert feats.groups[feats.ids.index("n1")] == feats.groups[feats.ids.index("n1c")] == "p1"


@pytest.mark.slow
def test_word_hidden_states_shape_and_word(minilm):
    states = word_hidden_states(minilm, NEGATION_EXAMPLES[:2])
    assert states.states.shape == (2, minilm.n_layers + 1, 384)
    # Same word ("sign") at the same position in both sentences: identical embedding-layer state.
    np.testing.assert_allclose(states.states[0, 0], states.states[1, 0], atol=1e-5)
    assert not np.allclose(states.states[0, -1], states.states[1, -1], atol=1e-3)


@pytest.mark.slow
def test_word_hidden_states_record_the_probed_word(minilm):
    states = word_hidden_states(minilm, NEGATION_EXAMPLES)
    assert states.words == ["sign", "sign", "barking", "understand", "understand"]


@pytest.mark.slow
def test_candidate_features_carry_types_twins_and_agreement(coref_features, builtin_coref):
    by_id = {e.id: e for e in builtin_coref}
    for row, id_ in enumerate(coref_features.ids):
        example = by_id[id_]
        assert coref_features.candidate_words[row] == tuple(word_type(example.text[a:b])
                                                            for a, b in example.candidate_spans)
        assert coref_features.agreement[row] == (example.meta["category"] != "winograd")
    # 176 of the 226 two-candidate built-in items are decided by agreement alone (all but the Winograd pairs)
    assert sum(coref_features.agreement) == 176 and len(coref_features) == 226


def _ex(id_, **meta):
    return Example(text="He left.", relation="coreference", source_span=(0, 2), target_span=(3, 7), id=id_, meta=meta)


def test_fold_groups_join_twins_and_shared_groups():
    examples = [_ex("w:1", group="g1", twin="t1"), _ex("w:2", group="g2", twin="t1"), _ex("w:3", group="g2"),
                _ex("w:4", group="g3"), _ex("w:5")]
    groups = fold_groups(examples)
    assert groups[0] == groups[1] == groups[2]          # g1 -twin- g2 -group- w:3
    assert len({groups[0], groups[3], groups[4]}) == 3
    assert groups[4] == "w:5"                           # no group: its own unit


def test_group_by_keeps_minimal_pair_templates_together():
    text = "The technician told the customer that he could pay with cash."
    meta = {"group": "technician.customer.1", "occupation": "technician"}
    example = Example(text=text, relation="coreference", source_span=(38, 40), target_span=(22, 30), meta=meta)
    assert example_group(example) == "technician.customer.1"
    assert example_group(example, "occupation") == "occupation:technician"
    assert example_group(example, "missing-key") == "technician.customer.1"      # falls back to meta["group"]


def test_winogender_defaults_to_occupation_groups_in_the_library():
    assert DEFAULT_GROUP_BY == {"winogender": "occupation"}
    winogender = [_ex("winogender:technician.customer.1.male", occupation="technician", group="a"),
                  _ex("winogender:technician.customer.0.male", occupation="technician", group="b")]
    assert resolve_group_by(winogender, None) == "occupation"
    assert resolve_group_by(winogender, "group") == "group"
    assert resolve_group_by(winogender + [_ex("gap-dev:1")], None) is None      # mixed data: no default
    assert len(set(fold_groups(winogender, resolve_group_by(winogender, None)))) == 1


def test_agreement_decides_reads_meta_then_the_builtin_category():
    assert agreement_decides(_ex("a", agreement_decides=False, category="plural")) is False
    assert agreement_decides(_ex("a", category="plural")) is True
    assert agreement_decides(_ex("a", category="winograd")) is False
    assert agreement_decides(_ex("a")) is None


def test_cue_forms_of_sentences_and_their_controls():
    assert [cue_form(c) for c in ("Not", "n't", "didn\u2019t", "never")] == ["not", "n't", "n't", "never"]
    forms = sentence_cue_forms(NEGATION_EXAMPLES)
    assert forms == ["not", "not", "n't", "not", "not"]       # a control takes its negated partner's form
