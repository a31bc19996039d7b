"""probing.patching.gates and the small-sample statistics it uses: the t-based cluster interval by hand, the gate
against relation-free controls (paired, clustered, at least 30 units) on hand-made numbers, and the one function
that chooses the gate."""

import numpy as np
import pytest

from probing import patching, stats
from probing.patching.results import PairRun, SanityReadings


def test_t_cluster_ci_by_hand():
    # one value per cluster: the ordinary t interval. mean 2.5, s^2 = 5/3, se^2 = s^2/4 = 5/12, t(3) = 3.18245
    low, high = stats.t_cluster_ci(np.array([[1.0], [2.0], [3.0], [4.0]]))
    half = 3.182446305284263 * np.sqrt(5 / 12)
    assert low[0] == pytest.approx(2.5 - half, abs=1e-9) and high[0] == pytest.approx(2.5 + half, abs=1e-9)
    # two clusters {1, 2} and {3, 4}: residual sums -2 and +2, se^2 = 2/1 * 8 / 16 = 1, t(1) = 12.7062
    low, high = stats.t_cluster_ci(np.array([[1.0], [2.0], [3.0], [4.0]]), groups=["a", "a", "b", "b"])
    assert high[0] - 2.5 == pytest.approx(12.706204736174707, abs=1e-9) and low[0] == pytest.approx(5 - high[0])
    # one cluster: no interval
    assert np.isnan(stats.t_cluster_ci(np.array([[1.0], [2.0]]), groups=["a", "a"])[0]).all()


def test_cluster_ci_switches_to_t_below_50_units():
    values = np.random.default_rng(0).normal(1, 1, (40, 2))
    low, high, method = stats.cluster_ci(values, 200, 0, None)
    assert method.startswith("t-based") and "40 units" in method
    np.testing.assert_allclose(low, stats.t_cluster_ci(values)[0])
    big = np.random.default_rng(0).normal(1, 1, (60, 2))
    assert stats.cluster_ci(big, 200, 0, None)[2] == "cluster bootstrap (60 units)"


def _gate(relation, control, groups=None):
    groups = groups or [f"g{i}" for i in range(len(relation))]
    return patching.controlled_gate(np.asarray(relation, float), None if control is None else np.asarray(control, float),
                                    "m", 300, 0, groups)


def test_gate_needs_the_relation_to_beat_its_control_with_30_units():
    rng = np.random.default_rng(1)
    relation = 2 + rng.normal(0, 0.1, 40)
    assert _gate(relation, relation - 1).passed                        # beats the control by 1 on every item
    same = _gate(relation, relation + rng.normal(0, 0.1, 40))          # a control as large: no behaviour
    assert not same.passed and "no head is named" in same.note
    few = _gate(relation[:5], relation[:5] - 1)                        # a clear difference, but 5 units
    assert not few.passed and few.too_few and few.n_units == 5 and few.note.startswith("too few")
    # 40 pairs in 20 clusters: 20 units, too few
    clustered = _gate(relation, relation - 1, [f"g{i // 2}" for i in range(40)])
    assert clustered.n_units == 20 and not clustered.passed
    # pairs without a control are left out of the comparison and of the unit count
    control = relation - 1
    control[:15] = np.nan
    partial = _gate(relation, control)
    assert partial.n_pairs == 25 and partial.n_units == 25 and not partial.passed
    assert partial.relation_minus_control == pytest.approx(1.0)
    # no control pairs at all: the gate cannot pass
    uncontrolled = _gate(relation, None)
    assert not uncontrolled.passed and "no relation-free control" in uncontrolled.note


def _run(clean: float, corrupt: float) -> PairRun:
    """A pair's unpatched readout values, as the engine gives them (no head patched)."""
    return PairRun(values={}, clean=clean, corrupt=corrupt, sanity_readings=SanityReadings(clean, corrupt, clean),
                   distance=1.0, seconds=0.0)


def test_the_gate_is_chosen_in_one_place():
    """choose_gate takes the readout difference v(clean) - v(corrupt) of the pairs and of their controls."""
    outs = [_run(3.0 + i % 3, 1.0) for i in range(36)]
    controls = [_run(1.5, 1.0) for _ in range(35)] + [None]
    gate = patching.choose_gate("negation", outs, controls, logit_readout=False, n_boot=200, seed=0,
                                groups=[str(i) for i in range(36)])
    assert gate.measure.startswith("readout difference") and gate.passed and gate.n_pairs == 35
    assert gate.control_mean == 0.5 and gate.clean_minus_corrupt == pytest.approx(3.0)
    assert gate.ci_method.startswith("t-based")
    logit = patching.choose_gate("coreference", outs, None, logit_readout=True, n_boot=50, seed=0,
                                 groups=[str(i) for i in range(36)])
    assert logit.measure.startswith("logit difference") and not logit.passed
    assert list(gate.to_dict()) == ["measure", "n_pairs", "n_units", "too_few", "clean_minus_corrupt", "ci",
                                    "control_mean", "relation_minus_control", "relation_minus_control_ci",
                                    "ci_method", "passed", "note"]
