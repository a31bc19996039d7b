"""probing.patching.gates: the gates on hand-made numbers, the substitution preferences of twins, and the one
function that chooses the gate."""

import numpy as np

from probing import patching
from tests.patching_cases import WINOGRAD, _twin


def test_twin_gate_substitution_preferences(minilm):
    rows = [row for i, (clean, a, corrupt, b) in enumerate(WINOGRAD) for row in
            (_twin(clean, "it" if " it " in clean else "he", a, f"w{i}", "clean"),
             _twin(corrupt, "it" if " it " in corrupt else "he", b, f"w{i}", "corrupt"))]
    rows += [_twin("The nurse met the cook because he was late.", "he", "nurse", "wb", "clean"),
             _twin("The nurse met the cook because she was late.", "she", "nurse", "wb", "corrupt")]
    pairs = patching.collect_pairs(rows).pairs
    assert patching.gates._mention(pairs[0].clean, pairs[0].clean_target) == "the box"
    preferences = patching.substitution_preferences(minilm, pairs)
    # the same referent in both twins: no contrast, NaN; the others are finite cosine differences
    assert np.isnan(preferences[-1]) and np.isfinite(preferences[:-1]).all() and np.abs(preferences[:-1]).max() < 4
    # by hand: a model blind to the swap fails the gate, one that prefers the right referent passes
    assert not patching.twin_gate(np.array([0.01, -0.01, 0.02, -0.02]), 500, 0, None).passed
    passed = patching.twin_gate(np.array([0.05, 0.04, np.nan, 0.06]), 500, 0, None)
    assert passed.passed and passed.n_pairs == 3
    none = patching.twin_gate(np.array([np.nan, np.nan]), 500, 0, None)
    assert not none.passed and "no coreference behaviour" in none.note


def test_logit_gate_by_hand():
    no_behaviour = patching.logit_gate(np.array([1.0, -1.0, 0.5, -0.5]), 500, 0, None, "negation")
    assert not no_behaviour.passed and "no behaviour to localise" in no_behaviour.note
    assert no_behaviour.clean_minus_corrupt == 0.0
    behaviour = patching.logit_gate(np.array([1.0, 1.2, 0.9, 1.1]), 500, 0, None, "coreference")
    assert behaviour.passed and behaviour.ci[0] >= 0.9


def test_the_gate_is_chosen_in_one_place(minilm):
    """gates.choose_gate: logit readout -> logit gate; controls -> the embedding gate against them (pairs without
    a control left out); coreference -> the twin gate; otherwise the plain embedding gate."""
    from probing.patching.gates import choose_gate
    outs = [{"clean": 2.0, "corrupt": 1.0, "distance": d} for d in (3.0, 4.0, 5.0)]
    negation = [patching.Pair(id=f"p{i}", relation="negation", clean="a", corrupt="b", clean_source=(0, 1),
                              corrupt_source=(0, 1)) for i in range(3)]
    common = {"n_boot": 200, "seed": 0, "groups": ["a", "b", "c"]}
    logit = choose_gate(minilm, negation, outs, logit_readout=True, control_distances=None, **common)
    assert logit.measure.startswith("logit difference") and logit.clean_minus_corrupt == 1.0 and logit.passed
    controlled = choose_gate(minilm, negation, outs, logit_readout=False,
                             control_distances=np.array([1.0, np.nan, 6.0]), **common)
    # the middle pair has no control: the comparison is over the first and last pairs only
    assert controlled.control_mean == 3.5 and controlled.relation_minus_control == 0.5
    assert controlled.clean_minus_corrupt == 4.0 and not controlled.passed      # 3 - 1 > 0 but 5 - 6 < 0
    plain = choose_gate(minilm, negation, outs, logit_readout=False, control_distances=None, **common)
    assert plain.clean_minus_corrupt == 4.0 and plain.control_mean is None and plain.passed
    assert list(controlled.to_dict()) == ["measure", "clean_minus_corrupt", "ci", "control_mean",
                                          "relation_minus_control", "relation_minus_control_ci", "passed", "note"]
    twins = [patching.Pair(id="t", relation="coreference", clean="He left.", corrupt="She left.",
                           clean_source=(0, 2), corrupt_source=(0, 3))]
    twin = choose_gate(minilm, twins, outs[:1], logit_readout=False, control_distances=None,
                       n_boot=50, seed=0, groups=["t"])
    assert twin.measure.startswith("substitution preference") and twin.n_pairs == 0 and not twin.passed
