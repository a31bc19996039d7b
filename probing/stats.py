"""Statistics over per-example head scores: bootstrap CIs, paired sign-flip tests, family-wise correction.

Every function takes an (examples, heads) array, so one call covers all L x H heads at once.

Resampling unit: the example by default. Examples that share a template or a sentence frame are not
independent, so every function takes `groups` (one label per example): then whole groups are resampled
(cluster bootstrap) and whole groups flip sign together (cluster sign-flip test). Seeds are fixed so a report
is reproducible.

Two-way clustering: where examples are crossed by two factors (the built-in negation set: host frame x
predicate), resampling one factor ignores the correlation along the other. `Clusters` carries the second
factor with the first; `bootstrap_ci` then also computes the Cameron-Gelbach-Miller (2011) two-way
cluster-robust interval (`two_way_ci`) and reports, per column, the wider of the two.

The tests follow the same design: with `Clusters` that carry a second factor, `sign_flip_tests` flips each
factor's part of the data with its own signs (`crossed_sign_flip_tests`), so a factor the CI resamples is not
ignored by the test. `item_means` first averages the forms of one item (a negation item with "not" and
"n't"), so each item weighs the same in its cluster.

Family-wise correction: the same sign matrix is applied to every head, so the Westfall-Young maxT step-down
adjustment is exact for the family and its floor is 1/(n_perm+1), not m/(n_perm+1) as with Holm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probing.defaults import MIN_UNITS, N_BOOT, N_PERM, SEED     # MIN_UNITS: read here as stats.MIN_UNITS too


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% bootstrap CI (plain floats, so it serialises as it is)."""
    mean: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}


def _nanmean_cols(values: np.ndarray) -> np.ndarray:
    """Column means that ignore NaN (examples where a score is undefined)."""
    counts = np.sum(~np.isnan(values), axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)


def _as_matrix(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"{name} needs an (examples, heads) array with rows, got shape {values.shape}")
    return values


def group_codes(groups, n: int) -> np.ndarray:
    """Integer codes 0..G-1 for a list of group labels (None: each example is its own group)."""
    if groups is None:
        return np.arange(n)
    groups = list(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} labels for {n} examples")
    _, codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    return codes


class Clusters(list):
    """Cluster labels of the first factor (one per example, a plain list to every function here), plus
    `second`: the labels of a second factor crossed with it (e.g. frame x predicate), or None."""

    def __init__(self, labels, second=None):
        super().__init__(labels)
        self.second = None if second is None else list(second)
        if self.second is not None and len(self.second) != len(self):
            raise ValueError(f"second has {len(self.second)} labels for {len(self)} examples")


def clusters(first, second):
    """`Clusters(first, second)` when the second factor is given for every example, else the plain list
    `first` (one-way clustering); a second factor with one level, or one level per example, adds nothing."""
    first = list(first)
    second = None if second is None else list(second)
    if second is None or any(s is None for s in second) or len(set(map(str, second))) in (1, len(second)):
        return first
    return Clusters(first, second)


def two_way_ci(values, first, second, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Cameron-Gelbach-Miller two-way cluster-robust CI of each column's mean.

    Var = V_first + V_second - V_intersection, each the cluster-robust variance of the mean,
    V_G = G/(G-1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2; where the sum is negative (it can be, in
    small samples) the larger one-way variance is used. The interval is mean +- t(min(G1, G2) - 1) * sqrt(Var).
    NaN values are left out of each column."""
    from scipy.stats import t as student_t
    values = _as_matrix(values, "two_way_ci")
    finite = ~np.isnan(values)
    n = finite.sum(0)
    mean = _nanmean_cols(values)
    residuals = np.where(finite, values - mean, 0.0)
    codes_1, codes_2 = group_codes(first, len(values)), group_codes(second, len(values))
    _, codes_12 = np.unique(codes_1 * (codes_2.max() + 1) + codes_2, return_inverse=True)

    def variance(codes):
        sums = np.zeros((int(codes.max()) + 1, values.shape[1]))
        np.add.at(sums, codes, residuals)
        g = len(sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            return g / max(g - 1, 1) * (sums ** 2).sum(0) / n.astype(np.float64) ** 2

    v1, v2, v12 = variance(codes_1), variance(codes_2), variance(codes_12)
    total = v1 + v2 - v12
    total = np.where(total > 0, total, np.maximum(v1, v2))
    df = max(min(int(codes_1.max()) + 1, int(codes_2.max()) + 1) - 1, 1)
    half = student_t.ppf(1 - (1 - level) / 2, df) * np.sqrt(total)
    return mean - half, mean + half


def n_units(groups, n: int) -> int:
    """How many independent resampling units there are (groups, or examples when there are none)."""
    return int(group_codes(groups, n).max()) + 1


def _group_sums(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the sum of finite values and their count, each (groups, heads)."""
    finite = ~np.isnan(values)
    n_groups = int(codes.max()) + 1
    sums = np.zeros((n_groups, values.shape[1]))
    counts = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, codes, np.where(finite, values, 0.0))
    np.add.at(counts, codes, finite.astype(np.float64))
    return sums, counts


def bootstrap_ci(values, n_boot: int = N_BOOT, level: float = 0.95, seed: int = SEED, groups=None):
    """Percentile bootstrap CI of each column's mean, resampling examples (or whole groups) with replacement.

    With groups, each replicate draws G groups with replacement and takes the mean over all examples of the
    drawn groups (the ratio estimator), so a CI reflects how much the score varies between templates.
    With `Clusters` that carry a second factor, each column gets the wider of that interval and the two-way
    one (`two_way_ci`).
    """
    values = _as_matrix(values, "bootstrap_ci")
    codes = group_codes(groups, len(values))
    sums, counts = _group_sums(values, codes)
    n_groups = len(sums)
    rng = np.random.default_rng(seed)
    # Resampling by multinomial counts: one matmul gives every replicate's mean for all heads.
    draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (draws @ sums) / (draws @ counts)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(means, alpha, axis=0), np.nanquantile(means, 1 - alpha, axis=0)
    if getattr(groups, "second", None) is None:
        return low, high
    # Two crossed factors: the wider of the one-way (first factor) and the two-way interval, per column.
    low_2, high_2 = two_way_ci(values, list(groups), groups.second, level)
    wider = (high_2 - low_2) > (high - low)
    return np.where(wider, low_2, low), np.where(wider, high_2, high)


SMALL_SAMPLE_UNITS = 50     # below this many units the percentile bootstrap undercovers (0.88 with 10 clusters)


def t_cluster_ci(values, groups=None, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Small-sample CI of each column's mean: mean +- t(G - 1) * the cluster-robust (CR1) standard error,
    se^2 = G / (G - 1) * sum_g (sum of the residuals in group g)^2 / n^2, G groups, n examples. With one example
    per group this is the ordinary t interval (se^2 = s^2 / n). NaN values are left out; NaN when G < 2."""
    from scipy.stats import t as student_t
    values = _as_matrix(values, "t_cluster_ci")
    codes = group_codes(groups, len(values))
    mean = _nanmean_cols(values)
    residuals = np.where(np.isnan(values), 0.0, values - mean)
    sums, _counts = _group_sums(residuals, codes)
    g, n = len(sums), (~np.isnan(values)).sum(0).astype(np.float64)
    if g < 2:
        return np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(g / (g - 1) * (sums ** 2).sum(0) / n ** 2)
    half = student_t.ppf(1 - (1 - level) / 2, g - 1) * se
    return mean - half, mean + half


def cluster_ci(values, n_boot: int = N_BOOT, seed: int = SEED, groups=None) -> tuple[np.ndarray, np.ndarray, str]:
    """(low, high, method): the cluster bootstrap from SMALL_SAMPLE_UNITS units on, the t-based cluster
    interval (`t_cluster_ci`) below, where percentile bootstrap intervals are too narrow."""
    values = _as_matrix(values, "cluster_ci")
    units = n_units(groups, len(values))
    if units < SMALL_SAMPLE_UNITS:
        low, high = t_cluster_ci(values, groups)
        return low, high, f"t-based cluster interval ({units} units < {SMALL_SAMPLE_UNITS})"
    low, high = bootstrap_ci(values, n_boot, seed=seed, groups=groups)
    return low, high, f"cluster bootstrap ({units} units)"


def estimate(values, n_boot: int = N_BOOT, seed: int = SEED, groups=None) -> list[Estimate]:
    """Mean and bootstrap CI of each column, as `Estimate`s."""
    values = _as_matrix(values, "estimate")
    low, high = bootstrap_ci(values, n_boot, seed=seed, groups=groups)
    return [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(_nanmean_cols(values), low, high)]


def sign_flip_tests(differences, n_perm: int = N_PERM, seed: int = SEED, groups=None):
    """One-sided paired sign-flip tests of mean(differences) > 0 for every column, with maxT correction.

    Returns (p_value, p_fwer), each (heads,):
    - p_value: per column, (1 + #{flipped sums >= observed}) / (1 + n_perm), never 0;
    - p_fwer: Westfall-Young maxT step-down adjusted p-values over all columns. The statistic is the
      studentised sum  sum(d) / sqrt(sum(d^2))  (its denominator is the same under every flip), so heads
      with larger spread do not dominate the maximum.
    NaN differences count as 0 (they contribute nothing under any flip). With groups, the differences are
    summed per group and whole groups flip together. With `Clusters` that carry a second factor (the factor
    the two-way CI also uses), the test is `crossed_sign_flip_tests` over both factors.
    """
    if getattr(groups, "second", None) is not None:
        return crossed_sign_flip_tests(differences, [list(groups), groups.second], n_perm, seed)
    diffs = np.nan_to_num(_as_matrix(differences, "sign_flip_tests"))
    codes = group_codes(groups, len(diffs))
    group_diffs = np.zeros((int(codes.max()) + 1, diffs.shape[1]))
    np.add.at(group_diffs, codes, diffs)
    scale = np.sqrt((group_diffs ** 2).sum(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    observed = group_diffs.sum(axis=0) / scale
    rng = np.random.default_rng(seed)
    # (flips, heads), in chunks that keep the sign matrix small for big datasets
    flips = lambda size: (rng.choice((-1.0, 1.0), size=(size, len(group_diffs))) @ group_diffs) / scale  # noqa: E731
    return _maxt_pvalues(observed, flips, n_perm)


def crossed_components(differences, factors) -> tuple[list[np.ndarray], np.ndarray]:
    """Split each column of `differences` (examples, heads) into one additive part per crossed factor and a
    residual: d = sum_k mean_k[code_k] + residual, where mean_k is the per-level mean of what the earlier
    factors left (the first factor's level means of d, then the second factor's level means of the rest, ...).

    Returns (sums, residual): sums[k] is (levels of factor k, heads), the part's sum over each level's examples
    (the unit that flips in `crossed_sign_flip_tests`); residual is (examples, heads). NaN counts as 0."""
    rest = np.nan_to_num(_as_matrix(differences, "crossed_components")).copy()
    sums = []
    for labels in factors:
        codes = group_codes(labels, len(rest))
        level_sums, level_counts = _group_sums(rest, codes)
        sums.append(level_sums)
        rest -= (level_sums / np.maximum(level_counts, 1))[codes]
    return sums, rest


def crossed_sign_flip_tests(differences, factors, n_perm: int = N_PERM, seed: int = SEED):
    """One-sided tests of mean(differences) > 0 per column where examples are crossed by several factors
    (the built-in negation set: frame x predicate), with Westfall-Young maxT over the columns.

    Why not flip frames only: examples that share a predicate are correlated too, and a frame-only flip
    treats that correlation as signal (a predicate-only effect is then "significant" far more often than the
    level says). Here each factor's part of the data (`crossed_components`) flips with its own signs, drawn
    independently per level of that factor, and the residual flips per example:
        flipped = sum_k sum_g s_kg * sums_k[g] + sum_i u_i * residual_i,   s, u in {-1, +1}.
    Under the null (mean 0, each part symmetric about 0) this keeps every factor's share of the variance,
    so the null spread is about V_first + V_second + V_residual, never below the frame-only flip's V_first.
    The statistic per column is the mean difference (equivalently its sum) divided by the flip-invariant
    scale sqrt(sum_k sum_g sums_k[g]^2 + sum_i residual_i^2), so the maxT treats heads alike; the first
    factor's parts carry the whole observed sum (the later parts sum to 0).

    The first factor's level means absorb part of the later factors' effects (a frame's mean holds its
    predicates' effects), which then flip as if independent across frames; so the test is run with each
    factor first in turn and keeps, per column, the larger p_value and the larger p_fwer (either order alone
    over-rejects when the factor placed second dominates). Returns (p_value, p_fwer) as `sign_flip_tests`
    does; floor 1/(n_perm+1).
    """
    values = _as_matrix(differences, "crossed_sign_flip_tests")
    if not factors:
        raise ValueError("crossed_sign_flip_tests needs at least one factor (labels per example)")
    factors = [list(f) for f in factors]
    results = [_crossed_sign_flip_ordered(values, factors[k:] + factors[:k], n_perm, seed)
               for k in range(len(factors))]
    return (np.max([r[0] for r in results], axis=0), np.max([r[1] for r in results], axis=0))


def _crossed_sign_flip_ordered(values: np.ndarray, factors, n_perm: int, seed: int):
    """`crossed_sign_flip_tests` with the factors decomposed in the order given."""
    sums, residual = crossed_components(values, factors)
    scale = np.sqrt(sum((s ** 2).sum(0) for s in sums) + (residual ** 2).sum(0))
    scale = np.where(scale > 0, scale, 1.0)
    observed = np.nan_to_num(values).sum(0) / scale
    rng = np.random.default_rng(seed)

    def flips(size):
        total = sum(rng.choice((-1.0, 1.0), size=(size, len(s))) @ s for s in sums)
        return (total + rng.choice((-1.0, 1.0), size=(size, len(residual))) @ residual) / scale

    return _maxt_pvalues(observed, flips, n_perm)


def _maxt_pvalues(observed: np.ndarray, flips, n_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """(p_value, p_fwer) from `n_perm` null draws of the statistic: `flips(size)` returns (size, heads).
    p_fwer is the Westfall-Young maxT step-down (monotone in the order of the observed statistic)."""
    order = np.argsort(-observed)
    exceed, exceed_max = np.zeros(len(observed)), np.zeros(len(observed))
    for start in range(0, n_perm, 2000):
        flipped = flips(min(2000, n_perm - start))
        exceed += np.sum(flipped >= observed - 1e-12, axis=0)
        # Step-down: for the k-th most significant head, the max over it and every less significant head.
        tail_max = np.maximum.accumulate(flipped[:, order[::-1]], axis=1)[:, ::-1]
        exceed_max[order] += np.sum(tail_max >= observed[order] - 1e-12, axis=0)
    p_value = (1 + exceed) / (1 + n_perm)
    p_sorted = np.maximum.accumulate(((1 + exceed_max) / (1 + n_perm))[order])   # monotone in the order
    p_fwer = np.empty_like(p_sorted)
    p_fwer[order] = p_sorted
    return p_value, p_fwer


def item_means(values, items) -> tuple[np.ndarray, list[int]]:
    """Average the rows of `values` (examples, heads) that belong to the same item, so that an item weighs
    the same in its cluster whatever number of forms it has (a negation item with both "not" and "n't").

    Returns (means (items, heads), the first row of each item, in order of first appearance); NaN values are
    left out of a mean (all-NaN stays NaN)."""
    values = _as_matrix(values, "item_means")
    items = [str(i) for i in items]
    if len(items) != len(values):
        raise ValueError(f"items has {len(items)} labels for {len(values)} examples")
    first: dict[str, int] = {}
    for row, item in enumerate(items):
        first.setdefault(item, row)
    index = {item: k for k, item in enumerate(first)}
    codes = np.array([index[i] for i in items])
    sums, counts = _group_sums(values, codes)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, list(first.values())


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error across all tests given)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = len(p)
    adjusted_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted


def cross_fitted_best(values, groups=None, seed: int = SEED) -> dict:
    """The best column's mean, chosen and estimated on different halves of the units, and the reverse.

    Choosing the best of many heads and reporting its in-sample mean is optimistic (the winner's curse).
    The units (groups, else examples) are split at random into two halves; the column with the highest mean
    on one half is estimated on the other, and vice versa; the two estimates are averaged, weighted by the
    number of examples they use. Returns {"score", "chosen": [column chosen on half A, on half B],
    "in_sample_best", "in_sample_score"}; the score is NaN with fewer than two units.
    """
    values = _as_matrix(values, "cross_fitted_best")
    codes = group_codes(groups, len(values))
    means = _nanmean_cols(values)
    best = int(np.nanargmax(means)) if np.isfinite(means).any() else 0
    result = {"in_sample_best": best, "in_sample_score": float(means[best]), "score": float("nan"), "chosen": []}
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        return result
    order = np.random.default_rng(seed).permutation(n_groups)
    in_a = np.isin(codes, order[: n_groups // 2])
    estimates, weights = [], []
    for choose, judge in ((in_a, ~in_a), (~in_a, in_a)):
        chosen_means = _nanmean_cols(values[choose])
        pick = int(np.nanargmax(chosen_means)) if np.isfinite(chosen_means).any() else 0
        result["chosen"].append(pick)
        estimates.append(float(_nanmean_cols(values[judge][:, [pick]])[0]))
        weights.append(int(judge.sum()))
    result["score"] = float(np.average(estimates, weights=weights))
    return result


def gap_bootstrap_ci(values, in_a, n_boot: int = N_BOOT, level: float = 0.95, seed: int = SEED, groups=None):
    """Percentile CI of mean(values[in_a]) - mean(values[~in_a]) per column, resampling units (groups).

    For two unpaired samples (say pro- and anti-stereotyped items) drawn from shared templates: a replicate
    draws the groups with replacement and takes the difference of the two ratio-estimator means."""
    values = _as_matrix(values, "gap_bootstrap_ci")
    in_a = np.asarray(in_a, dtype=bool)
    codes = group_codes(groups, len(values))
    sums_a, counts_a = _group_sums(np.where(in_a[:, None], values, np.nan), codes)
    sums_b, counts_b = _group_sums(np.where(in_a[:, None], np.nan, values), codes)
    n_groups = len(sums_a)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = (draws @ sums_a) / (draws @ counts_a) - (draws @ sums_b) / (draws @ counts_b)
    alpha = (1 - level) / 2
    return np.nanquantile(gaps, alpha, axis=0), np.nanquantile(gaps, 1 - alpha, axis=0)


def label_permutation_tests(values, in_a, n_perm: int = N_PERM, seed: int = SEED, groups=None):
    """One-sided tests of mean(values[in_a]) > mean(values[~in_a]) per column, with maxT correction.

    For two unpaired samples: the labels are shuffled within each group (with no groups, across all examples),
    which keeps each template's mix of the two kinds; where no group mixes them, whole groups swap labels.
    The statistic is the gap divided by the column's
    standard deviation (the same under every shuffle), so the maxT step-down treats heads alike. Returns
    (p_value, p_fwer) as `sign_flip_tests` does; floor 1/(n_perm+1).
    """
    values = np.nan_to_num(_as_matrix(values, "label_permutation_tests"))
    in_a = np.asarray(in_a, dtype=bool)
    if in_a.all() or not in_a.any():
        raise ValueError("label_permutation_tests needs examples of both kinds")
    codes = group_codes(groups, len(values))
    scale = values.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)

    def statistic(labels):              # labels (perms, N) bool -> (perms, heads)
        weights = labels / labels.sum(1, keepdims=True) - ~labels / (~labels).sum(1, keepdims=True)
        return (weights @ values) / scale

    observed = statistic(in_a[None])[0]
    order = np.argsort(-observed)
    exceed, exceed_max = np.zeros(values.shape[1]), np.zeros(values.shape[1])
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(codes == g) for g in range(int(codes.max()) + 1)]
    # Where no group mixes the two kinds (each example its own group, say), whole groups swap labels instead.
    pure = all(in_a[rows].all() or not in_a[rows].any() for rows in members)
    group_labels = np.array([in_a[rows[0]] for rows in members])
    for start in range(0, n_perm, 1000):
        size = min(1000, n_perm - start)
        labels = np.empty((size, len(values)), dtype=bool)
        if pure:
            shuffled = group_labels[rng.random((size, len(members))).argsort(axis=1)]     # (size, groups)
            labels = shuffled[:, codes]
        else:
            for rows in members:        # shuffle the labels within each group
                keys = rng.random((size, len(rows))).argsort(axis=1)
                labels[:, rows] = in_a[rows][keys]
        flipped = statistic(labels)
        exceed += np.sum(flipped >= observed - 1e-12, axis=0)
        tail_max = np.maximum.accumulate(flipped[:, order[::-1]], axis=1)[:, ::-1]
        exceed_max[order] += np.sum(tail_max >= observed[order] - 1e-12, axis=0)
    p_value = (1 + exceed) / (1 + n_perm)
    p_sorted = np.maximum.accumulate(((1 + exceed_max) / (1 + n_perm))[order])
    p_fwer = np.empty_like(p_sorted)
    p_fwer[order] = p_sorted
    return p_value, p_fwer


def strict_json(value):
    """`value` as strict-JSON data: NaN and infinities become None, tuples lists, numpy numbers and arrays
    Python ones (results' `to_dict()`; `json.dumps(..., allow_nan=False)` accepts it)."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
