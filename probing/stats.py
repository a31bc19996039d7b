"""Statistics over per-example head scores: bootstrap CIs, paired sign-flip tests, multiple-test correction.

Every function takes an (examples, heads) array, so one call covers all L x H heads at once.
Resampling unit: the example. Seeds are fixed so a report is reproducible.
"""
from __future__ import annotations

import numpy as np


def _nanmean_cols(values: np.ndarray) -> np.ndarray:
    """Column means that ignore NaN (examples where a score is undefined)."""
    counts = np.sum(~np.isnan(values), axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap CI of each column's mean, resampling examples (rows) with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"bootstrap_ci needs an (examples, heads) array with rows, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    n = len(values)
    finite = ~np.isnan(values)
    filled = np.where(finite, values, 0.0)
    # Resampling by multinomial counts: means = counts @ values / counts @ finite, one matmul for all heads.
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ filled) / (counts @ finite)
    alpha = (1 - level) / 2
    return np.nanquantile(means, alpha, axis=0), np.nanquantile(means, 1 - alpha, axis=0)


def sign_flip_pvalue(differences: np.ndarray, n_perm: int = 10000, seed: int = 0) -> np.ndarray:
    """One-sided paired permutation test of mean(differences) > 0 per column, by random sign flips.

    p = (1 + #{flipped means >= observed}) / (1 + n_perm), so p is never 0. NaN rows are dropped per column
    by treating them as zero differences (they then contribute nothing under any flip).
    """
    diffs = np.nan_to_num(np.asarray(differences, dtype=np.float64))
    if diffs.ndim != 2 or len(diffs) == 0:
        raise ValueError(f"sign_flip_pvalue needs an (examples, heads) array with rows, got {diffs.shape}")
    rng = np.random.default_rng(seed)
    observed = diffs.sum(axis=0)
    exceed = np.zeros(diffs.shape[1])
    for start in range(0, n_perm, 2000):  # chunks keep the sign matrix small for big datasets
        signs = rng.choice((-1.0, 1.0), size=(min(2000, n_perm - start), len(diffs)))
        exceed += np.sum(signs @ diffs >= observed - 1e-12, axis=0)
    return (1 + exceed) / (1 + n_perm)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error across all tests given)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = len(p)
    adjusted_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted
