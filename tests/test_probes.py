"""Probes: features equal independent recomputations, no leakage across folds, controls keep the label
distribution, and the coreference probe beats chance on the built-in set with MiniLM."""
import json

import numpy as np
import pytest

from conftest import COREF_EXAMPLES, NEGATION_EXAMPLES
from probing.examples import load_examples
from probing.features import adjacent_pair_features, candidate_features, word_hidden_states
from probing.heads import score_examples
from probing.naive import word_attention_matrix, words_of
from probing.probes import (CandidateFeatures, _pair_rows, coref_control_targets, coref_probe_from_features,
                            group_control_labels, grouped_bootstrap, grouped_folds, layer_probe_from_states,
                            negation_probe_from_features, weighted_f1, weighted_mean)

FAST_CS = (0.1, 1.0)


@pytest.fixture(scope="module")
def builtin_coref():
    return load_examples("builtin-coref")[0]


@pytest.fixture(scope="module")
def coref_features(minilm, builtin_coref):
    return candidate_features(minilm, builtin_coref)


@pytest.fixture(scope="module")
def coref_result(coref_features):
    return coref_probe_from_features(coref_features, n_folds=5, Cs=FAST_CS, n_boot=200, data="builtin-coref")


@pytest.fixture(scope="module")
def negation_features(minilm):
    return adjacent_pair_features(minilm, load_examples("builtin-negation")[0])


@pytest.fixture(scope="module")
def negation_result(negation_features):
    selectivity = np.linspace(-1, 1, 72)  # any per-head ranking: only the bookkeeping is tested here
    return negation_probe_from_features(negation_features, selectivity, n_folds=4, Cs=FAST_CS, n_boot=100)


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

def test_pronoun_to_candidate_feature_equals_score_examples_attention(minilm, builtin_coref, coref_features):
    with_candidates = [e for e in builtin_coref if e.candidate_spans]
    scores, _ = score_examples(minilm, with_candidates)
    assert coref_features.ids == scores.ids
    on_target = coref_features.features[np.arange(len(coref_features)), coref_features.target, 0]
    np.testing.assert_allclose(on_target, scores.attention, atol=1e-5)
    assert len(coref_features.skipped) == len(builtin_coref) - len(with_candidates)   # no candidate_spans


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
                matrix = word_attention_matrix(attention[layer, head], units)
                for c in range(len(example.candidate_spans)):
                    assert feats.features[row, c, 0, layer, head] == pytest.approx(matrix[0, c + 1], abs=1e-5)
                    assert feats.features[row, c, 1, layer, head] == pytest.approx(matrix[c + 1, 0], abs=1e-5)


def test_adjacent_pair_features_equal_the_naive_word_matrix(minilm):
    feats = adjacent_pair_features(minilm, NEGATION_EXAMPLES, batch_tokens=16)
    for row, example in enumerate(NEGATION_EXAMPLES):
        attention, groups, _ = _piece_attention(minilm, example.text)
        pieces = [groups[w] for w in sorted(groups)]
        pairs = np.flatnonzero(feats.example == row)
        for layer in (0, minilm.n_layers - 1):
            for head in (0, 5, minilm.n_heads - 1):
                matrix = word_attention_matrix(attention[layer, head], pieces)
                for p in pairs:
                    w = feats.position[p]
                    assert feats.features[p, 0, layer, head] == pytest.approx(matrix[w, w + 1], abs=1e-5)
                    assert feats.features[p, 1, layer, head] == pytest.approx(matrix[w + 1, w], abs=1e-5)


def test_pair_labels_cue_and_hard_negative(minilm):
    feats = adjacent_pair_features(minilm, NEGATION_EXAMPLES)
    cues = [feats.word[i] for i in np.flatnonzero(feats.label)]
    adverbs = [feats.word[i] for i in np.flatnonzero(feats.hard_negative)]
    assert sorted(cues) == ["not", "not", "t"]            # "weren't" -> words "weren" "'" "t": labelled at "t"
    assert sorted(adverbs) == ["also", "really"]
    # Pairs that start inside the multi-word cue ("weren" -> "'", "'" -> "t") carry no label and are left out.
    contraction = feats.ids.index("n2")
    assert [feats.word[i] for i in np.flatnonzero(feats.example == contraction)][:4] == ["the", "dogs", "t", "barking"]
    assert feats.groups[feats.ids.index("n1")] == feats.groups[feats.ids.index("n1c")] == "p1"


def test_word_hidden_states_shape_and_word(minilm):
    states = word_hidden_states(minilm, NEGATION_EXAMPLES[:2])
    assert states.states.shape == (2, minilm.n_layers + 1, 384)
    # Same word ("sign") at the same position in both sentences: identical embedding-layer state.
    np.testing.assert_allclose(states.states[0, 0], states.states[1, 0], atol=1e-5)
    assert not np.allclose(states.states[0, -1], states.states[1, -1], atol=1e-3)


# ---- No leakage --------------------------------------------------------------------------------------

def test_coref_folds_keep_groups_apart_and_scaler_sees_training_rows_only(coref_features, coref_result):
    group_of = dict(zip(coref_features.ids, coref_features.groups))
    index_of = {id_: i for i, id_ in enumerate(coref_features.ids)}
    assert len(coref_result.folds) == 5
    tested = []
    for fold in coref_result.folds:
        train_groups = {group_of[i] for i in fold.train_ids}
        test_groups = {group_of[i] for i in fold.test_ids}
        assert train_groups.isdisjoint(test_groups)
        assert set(fold.train_ids).isdisjoint(fold.test_ids)
        tested += fold.test_ids
        train_rows = np.array([index_of[i] for i in fold.train_ids])
        X_train, _ = _pair_rows(coref_features, train_rows, coref_features.target)
        X_all, _ = _pair_rows(coref_features, np.arange(len(coref_features)), coref_features.target)
        for probe in (fold.probe, fold.control_probe):
            scaler = probe.named_steps["scale"]
            assert scaler.n_samples_seen_ == len(X_train)
            np.testing.assert_allclose(scaler.mean_, X_train.mean(0), rtol=1e-5, atol=1e-7)
            assert not np.allclose(scaler.mean_, X_all.mean(0), rtol=1e-6, atol=1e-9)
    assert sorted(tested) == sorted(coref_features.ids)          # every example is tested exactly once
    fold_of = coref_result.predictions.groupby("group")["fold"].nunique()
    assert (fold_of == 1).all()


def test_negation_folds_keep_a_sentence_with_its_control(negation_features, negation_result):
    predictions = negation_result.predictions
    assert (predictions.groupby("group")["fold"].nunique() == 1).all()
    # The group is the pair: a negated sentence and its control share it, so they share a fold.
    sentences_per_group = predictions.groupby("group")["sentence"].nunique()
    assert (sentences_per_group == 2).all()
    for train, test in grouped_folds(negation_features.pair_groups, 4):
        assert set(negation_features.pair_groups[train]).isdisjoint(negation_features.pair_groups[test])


def test_group_by_keeps_minimal_pair_templates_together():
    from probing.examples import Example
    from probing.features import example_group
    text = "The technician told the customer that he could pay with cash."
    meta = {"group": "technician.customer.1", "occupation": "technician"}
    example = Example(text=text, relation="coreference", source_span=(38, 40), target_span=(22, 30), meta=meta)
    assert example_group(example) == "technician.customer.1"
    assert example_group(example, "occupation") == "occupation:technician"
    assert example_group(example, "missing-key") == "technician.customer.1"      # falls back to meta["group"]


def test_grouped_folds_refuse_too_few_groups():
    with pytest.raises(ValueError, match="groups"):
        grouped_folds(["a", "a", "b"], 3)


# ---- Control tasks keep the label distribution --------------------------------------------------------

def _synthetic_candidates(n_groups=400, per_group=3, seed=0) -> CandidateFeatures:
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    target = (rng.random(n) < 0.3).astype(int)                 # gold is the second candidate 30% of the time
    return CandidateFeatures(model="synthetic", ids=[f"e{i}" for i in range(n)],
                             groups=[f"g{i // per_group}" for i in range(n)],
                             features=rng.normal(size=(n, 2, 2, 1, 2)).astype(np.float32),
                             candidate_mask=np.ones((n, 2), bool), target=target,
                             nearest=np.zeros(n, int), first=np.zeros(n, int))


def test_coref_control_targets_keep_the_distribution_and_ignore_the_gold():
    feats = _synthetic_candidates()
    control = coref_control_targets(feats, seed=0)
    assert set(control) <= {0, 1}                              # one valid candidate per example
    assert abs(control.mean() - feats.target.mean()) < 0.05    # same share of "second candidate"
    by_group = {}
    for group, c in zip(feats.groups, control):
        by_group.setdefault(group, set()).add(c)
    assert all(len(v) == 1 for v in by_group.values())          # fixed per group
    assert abs(np.mean(control == feats.target) - (0.3 * 0.3 + 0.7 * 0.7)) < 0.05   # independent of the gold
    np.testing.assert_array_equal(control, coref_control_targets(feats, seed=0))   # reproducible
    assert not np.array_equal(control, coref_control_targets(feats, seed=1))


def test_coref_control_labels_on_builtin_keep_one_answer_per_example(coref_features):
    control = coref_control_targets(coref_features)
    assert (control < coref_features.n_candidates).all()
    _, y_gold = _pair_rows(coref_features, np.arange(len(coref_features)), coref_features.target)
    _, y_control = _pair_rows(coref_features, np.arange(len(coref_features)), control)
    assert y_gold.sum() == y_control.sum() == len(coref_features)   # one positive pair per example, as gold


def test_group_control_labels_keep_the_distribution():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(2000), 2).astype(str)
    labels = rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=len(groups))
    control = group_control_labels(labels, groups, seed=0)
    for value, share in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(np.mean(control == value) - share) < 0.04
    assert (control[0::2] == control[1::2]).all()               # one label per group


# ---- The probes do what they claim -------------------------------------------------------------------

def test_coref_probe_beats_chance_and_its_control_on_builtin(coref_result):
    r = coref_result
    # Observed with MiniLM: accuracy 0.89, best single head 0.88, control 0.38, chance 0.5.
    assert r.accuracy.value > 0.75 and r.accuracy.ci_low > r.baselines["chance"].value + 0.15
    assert r.accuracy.value > r.baselines["nearest_candidate"].value + 0.15
    assert r.selectivity.ci_low > 0.2
    assert r.control_accuracy.value < 0.65
    assert r.accuracy.ci_low <= r.accuracy.value <= r.accuracy.ci_high
    assert r.n_test == 226
    assert set(r.baselines) == {"chance", "nearest_candidate", "first_candidate", "best_single_head"}
    assert list(r.head_weights.columns) == ["layer", "head", "coef_pronoun->candidate", "coef_candidate->pronoun",
                                            "weight"]
    json.dumps(r.to_dict())                                    # plain JSON, no numpy left


def test_coref_train_test_scheme_tunes_on_validation(coref_features):
    rows = np.arange(len(coref_features))
    train, valid, test = (coref_features.subset(rows[rows % 3 == k]) for k in range(3))
    r = coref_probe_from_features(train, test, valid, Cs=FAST_CS, n_boot=50)
    assert r.n_train == len(train) and r.n_test == len(test) and len(r.C) == 1 and r.C[0] in FAST_CS
    assert "validation" in r.scheme and r.accuracy.value > 0.6
    by_validation = r.accuracy_by_C["validation_accuracy"]
    assert set(by_validation) == {"0.1", "1"} and by_validation[f"{r.C[0]:g}"] == max(by_validation.values())
    assert set(r.accuracy_by_C["test_accuracy_not_used_for_selection"]) == {"0.1", "1"}


def test_negation_probe_finds_the_cue_and_reports_its_controls(negation_result):
    r = negation_result
    assert r.f1.value > 0.8 and r.accuracy.value > r.majority_accuracy.value
    assert set(r.controls) == {"positional", "word_identity"}
    # The controls put "not" and its substitute adverb at the same position: position alone cannot find the cue.
    assert r.controls["positional"]["f1"].value < 0.5
    assert r.hard_pairs["probe_accuracy"].n == 2 * r.n_cues
    assert r.rank_correlation["n_heads"] == 72 and -1 <= r.rank_correlation["signed_coef"]["rho"] <= 1
    assert "score_heads_selectivity" in r.head_weights
    json.dumps(r.to_dict())


def test_layer_probe_finds_the_layer_that_holds_the_label():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 2).astype(str)
    labels = np.tile(["control", "negated"], 200)
    states = rng.normal(size=(400, 2, 8))
    states[:, 1, 0] += np.where(labels == "negated", 3.0, -3.0)     # only layer 1 carries the label
    r = layer_probe_from_states(states, labels, groups, n_folds=4, Cs=(1.0,), n_boot=100)
    accuracy = r.table["accuracy"].to_numpy()
    assert accuracy[1] > 0.95 and abs(accuracy[0] - 0.5) < 0.1
    assert (np.abs(r.table["control_accuracy"] - 0.5) < 0.12).all()
    json.dumps(r.to_dict())


def test_grouped_bootstrap_statistics():
    correct = np.array([1, 1, 0, 0, 1, 1, 1, 1])
    estimate = grouped_bootstrap(weighted_mean(correct), ["a", "a", "b", "b", "c", "c", "d", "d"], n_boot=500)
    assert estimate.value == 0.75 and estimate.ci_low <= 0.75 <= estimate.ci_high
    assert {estimate.ci_low * 4, estimate.ci_high * 4} <= {0, 1, 2, 3, 4}   # whole groups are resampled
    # 40 groups of 5 identical rows carry the information of 40 rows, not 200: a wider CI than 200 groups.
    rows = np.repeat(np.random.default_rng(0).random(40) < 0.6, 5)
    grouped = grouped_bootstrap(weighted_mean(rows), np.repeat(np.arange(40), 5), n_boot=500)
    single = grouped_bootstrap(weighted_mean(rows), np.arange(200), n_boot=500)
    assert grouped.ci_high - grouped.ci_low > 1.8 * (single.ci_high - single.ci_low)
    assert weighted_f1([1, 0, 1, 0], [1, 1, 0, 0])(np.ones(4)) == pytest.approx(0.5)
    assert weighted_f1([1, 0, 1, 0], [1, 1, 0, 0])(np.array([2.0, 0, 0, 1])) == pytest.approx(1.0)


# ---- The command ---------------------------------------------------------------------------------------

def test_probe_command_writes_files_and_refuses_to_overwrite(tmp_path, minilm):
    from analysis.__main__ import main
    args = ["probe", "--task", "coref", "--data", "builtin-coref", "--out", str(tmp_path), "--n-boot", "30",
            "--folds", "3"]
    assert main(args) == 0
    payload = json.loads((tmp_path / "probe_coref.json").read_text())
    result = payload["datasets"]["builtin-coref"]
    assert {"accuracy", "baselines", "control_accuracy", "selectivity", "probe_minus_best_head"} <= set(result)
    for name in ("probe_coref.md", "probe_coref_accuracy.png", "probe_coref_accuracy.csv",
                 "probe_coref_builtin-coref_weights.csv", "probe_coref_builtin-coref_weights.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "best single head" in (tmp_path / "probe_coref.md").read_text()
    assert main(args) == 2                                     # results present, no --force
