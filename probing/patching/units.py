"""The resampling units of a set of patched pairs: frames, crossed with predicates where the pairs carry both.

The built-in negation pairs are crossed: every frame ("The lawyer did _") meets several predicates ("sign the
contract", ...), and every predicate several frames. Pairs that share a predicate are correlated as much as
pairs that share a frame, so resampling frames alone (the old patching design) treats the predicates' share of
the variance as signal. Here the units are `stats.Clusters` (frame labels with the predicate labels beside
them) wherever every pair carries a predicate, and plain frame labels otherwise (Winograd twins, NEG-136):

- the corrected tests flip each factor's part with its own signs (`stats.sign_flip_tests` with `Clusters` runs
  `crossed_sign_flip_tests`), maxT over heads, as the head scores do;
- each CI is the wider of the frame-clustered interval and the two-way (frame x predicate) one, at every
  sample size (`ci`; `stats.cluster_ci` alone would use the frame-only t interval below 50 frames).

`take` keeps the second factor when a comparison uses a subset of the pairs (those with a control pair).
"""
from __future__ import annotations

import numpy as np

from probing import stats


def pair_units(pairs) -> list:
    """One label per pair: its frame (`Pair.group`, else its id), as `stats.Clusters` with the predicate as the
    second factor when every pair has one (and there is more than one), else the plain list of frames."""
    frames = [p.group or p.id for p in pairs]
    return stats.clusters(frames, [getattr(p, "predicate", None) for p in pairs])


def take(units, rows) -> list:
    """The labels of `rows` (indices), keeping the second factor of `Clusters`."""
    rows = list(rows)
    frames = [units[i] for i in rows]
    second = getattr(units, "second", None)
    return frames if second is None else stats.clusters(frames, [second[i] for i in rows])


def is_crossed(units) -> bool:
    return getattr(units, "second", None) is not None


def ci(values, n_boot: int, seed: int, units) -> tuple[np.ndarray, np.ndarray, str]:
    """(low, high, method) of each column's mean: `stats.cluster_ci` over frames (the cluster bootstrap, or the
    t-based interval below 50 frames); where the units are crossed, per column the wider of that and the
    two-way Cameron-Gelbach-Miller interval."""
    values = np.asarray(values, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    low, high, method = stats.cluster_ci(values, n_boot, seed=seed, groups=units)
    if not is_crossed(units):
        return low, high, method
    low_2, high_2 = stats.two_way_ci(values, list(units), units.second)
    wider = (high_2 - low_2) > (high - low)
    return (np.where(wider, low_2, low), np.where(wider, high_2, high),
            f"the wider of the {method} and the two-way frame x predicate interval")


def in_words(units, n: int) -> str:
    """"44 frames x 20 predicates (crossed)", or "68 units" (frames, or pairs without a frame)."""
    frames = stats.n_units(list(units), n)
    if is_crossed(units):
        return f"{frames} frames x {stats.n_units(units.second, n)} predicates (crossed)"
    return f"{frames} units"
