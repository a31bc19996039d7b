"""Behaviour first: before any head is named, the model must show the behaviour the heads would explain.

The gate tests the quantity the effects are fractions of, on the same pairs: the readout's clean - corrupt
difference v(clean) - v(corrupt) (embedding readout: ||e(clean) - e(corrupt)||^2 over the pieces the texts
share; logit readout: the logit difference between the two answers). It passes only when that difference on
the relation pairs beats the same difference on their relation-free control pairs (negation: adverb <->
adverb; Winograd twins: a swap that keeps the referent), paired by item, with a clustered CI above 0, and only
with at least `stats.MIN_UNITS` units. Below `stats.SMALL_SAMPLE_UNITS` the CI is the t-based cluster interval.
Without control pairs the gate cannot pass (a word swap always moves the readout), so no head is named.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from probing import stats
import probing.patching.units as design
from probing.patching.results import PairRun

EMBEDDING_MEASURE = ("readout difference v(clean) - v(corrupt) = ||e(clean) - e(corrupt)||^2 (the embedding "
                     "the effects are fractions of)")
POOLING_MEASURE = {"sentence": "readout difference v(clean) - v(corrupt) = ||n(clean) - n(corrupt)||^2 (the model's "
                               "normalised output the effects are fractions of)",
                   "probe": "readout difference v(clean) - v(corrupt): the pooled final states' value along the "
                            "negation direction, clean minus corrupt"}
LOGIT_MEASURE = {"negation": "logit difference (target_neg - target_aff), clean (negated) minus corrupt (adverb)",
                 "coreference": "logit difference (answers[0] - answers[1]) at the readout position (a masked LM's "
                                "masked pronoun; a decoder's last position before the pronoun), clean minus corrupt"}


@dataclass(frozen=True)
class Gate:
    """The behavioural gate's outcome. `passed`: whether heads may be named; `ci`: the CI of
    `clean_minus_corrupt` on the relation pairs; `relation_minus_control(_ci)`: the paired comparison with the
    control pairs (absent without them); `n_units`: the independent units (clusters) the comparison rests on;
    `ci_method`: cluster bootstrap, or the t-based interval below 50 units; `too_few`: under 30 units."""
    measure: str
    clean_minus_corrupt: float
    ci: list[float]
    passed: bool
    note: str
    n_pairs: int
    n_units: int
    ci_method: str
    too_few: bool
    control_mean: float | None = None
    relation_minus_control: float | None = None
    relation_minus_control_ci: list[float] | None = None

    _ORDER = ("measure", "n_pairs", "n_units", "too_few", "clean_minus_corrupt", "ci", "control_mean",
              "relation_minus_control", "relation_minus_control_ci", "ci_method", "passed", "note")

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: values[name] for name in self._ORDER if values[name] is not None}


def too_few_note(units: int) -> str:
    return (f"too few: {units} independent units (< {stats.MIN_UNITS}), so the gate fails and no head is named "
            "whatever the numbers")


def _ci(values: np.ndarray, n_boot: int, seed: int, groups) -> tuple[list[float], str]:
    low, high, method = design.ci(values[:, None], n_boot, seed, groups)
    return [float(low[0]), float(high[0])], method


def controlled_gate(relation: np.ndarray, control: np.ndarray | None, measure: str, n_boot: int, seed: int,
                    groups) -> Gate:
    """relation: per pair, v(clean) - v(corrupt) [pairs]; control: the same on each pair's control pair (NaN
    where it has none), or None without control pairs. Pairs without a control are left out of the paired
    comparison (and of its unit count)."""
    ci, method = _ci(relation, n_boot, seed, groups)
    if control is None or np.isnan(control).all():
        units = stats.n_units(groups, len(relation))
        return Gate(measure, float(relation.mean()), ci, passed=False, n_pairs=len(relation), n_units=units,
                    ci_method=method, too_few=units < stats.MIN_UNITS,
                    note="no relation-free control pairs: any word swap moves the readout, so the gate cannot "
                         "pass and no head is named")
    matched = ~np.isnan(control)
    matched_groups = design.take(groups, np.flatnonzero(matched))
    units = stats.n_units(matched_groups, int(matched.sum()))
    diff = relation[matched] - control[matched]
    diff_ci, method = _ci(diff, n_boot, seed, matched_groups)
    too_few = units < stats.MIN_UNITS
    passed = bool(diff_ci[0] > 0) and not too_few
    note = ("passes when the relation pairs' difference beats their control pairs' (paired by item, clustered CI "
            f"above 0) with at least {stats.MIN_UNITS} units")
    if too_few:
        note = too_few_note(units)
    elif not passed:
        note += ": it does not, so there is no behaviour to localise and no head is named"
    return Gate(measure, float(relation.mean()), ci, passed, note, n_pairs=int(matched.sum()), n_units=units,
                ci_method=method, too_few=too_few, control_mean=float(control[matched].mean()),
                relation_minus_control=float(diff.mean()), relation_minus_control_ci=diff_ci)


def choose_gate(relation: str, outs: list[PairRun], control_outs: list[PairRun | None] | None, *,
                logit_readout: bool, n_boot: int, seed: int, groups: list[str], pooling: str = "shared") -> Gate:
    """The one place where a run's gate is decided. `outs`: each kept pair's raw patching output (`clean`,
    `corrupt`: the unpatched readout values); `control_outs`: per kept pair its control pair's output (None
    where it has none), or None when the run has no control pairs."""
    measure = (LOGIT_MEASURE.get(relation, LOGIT_MEASURE["coreference"]) if logit_readout
               else POOLING_MEASURE.get(pooling, EMBEDDING_MEASURE))
    relation_diff = np.array([o.difference for o in outs])
    control_diff = None if control_outs is None else np.array(
        [np.nan if c is None else c.difference for c in control_outs])
    return controlled_gate(relation_diff, control_diff, measure + ", mean over pairs", n_boot, seed, groups)
