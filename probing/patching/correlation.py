"""Attention versus effect: does a head's score rank the heads within a layer as their patching effects do?

Effects grow with depth (mean noising per layer rises from ~0.002 to ~0.04 in MiniLM), and so do many scores,
so a Spearman over all heads mostly measures depth. `score_vs_effect` therefore ranks heads *within* each
layer (depth partialled out) and pools the within-layer ranks; it also gives each layer's own rho. The score
and the effect come from the same pairs: a per-pair score [pairs, layers, heads] (the clean run's attention
source -> target on the patched pairs) is resampled together with the effects, so the CI covers both sides.
Any [layers, heads] or [pairs, layers, heads] score can be compared the same way (the hook for other scores,
such as the norm-based attention).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from probing import stats
from probing.defaults import N_PERM
from probing.patching.results import PairRun


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks within each layer (last axis: heads), centred per layer  # [..., layers, heads]."""
    ranks = rankdata(values, axis=-1)
    return ranks - ranks.mean(-1, keepdims=True)


def _within_layer_rho(score: np.ndarray, effect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pooled within-layer Spearman [draws], per-layer Spearman [draws, layers]) of score and effect, both
    [draws, layers, heads]. NaN where one side is constant."""
    rs, re = _centred_ranks(score), _centred_ranks(effect)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (rs * re).sum((-1, -2)) / np.sqrt((rs ** 2).sum((-1, -2)) * (re ** 2).sum((-1, -2)))
        per_layer = (rs * re).sum(-1) / np.sqrt((rs ** 2).sum(-1) * (re ** 2).sum(-1))
    return pooled, per_layer


def _resampled_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted means over pairs: values [pairs, ...], weights [draws, pairs] -> [draws, ...]."""
    flat = values.reshape(len(values), -1)
    return ((weights @ flat) / weights.sum(1, keepdims=True)).reshape(len(weights), *values.shape[1:])


def score_vs_effect(score, per_pair: np.ndarray, n_layers: int, n_heads: int, n_boot: int, seed: int,
                    groups, n_perm: int = N_PERM) -> dict:
    """Within-layer Spearman of a head score against the mean effect per head.

    score: [layers, heads] (fixed) or [pairs, layers, heads] (per pair, resampled with the effects);
    per_pair: effects [pairs, layers*heads]. The CI is a cluster bootstrap over pairs (clusters: `groups`)
    that redraws the score's pairs together with the effect's, then redraws the heads within each layer (a
    two-level bootstrap: the heads' own variation is in the CI); `p_permutation` is the two-sided p under a
    within-layer head permutation (`head_permutation_p`, n_perm draws). Returns the pooled rho with its CI
    (`spearman`, `ci_low`, `ci_high`), the p, and per layer `per_layer`: [{layer, spearman, ci_low, ci_high}]."""
    score = np.asarray(score, dtype=np.float64)
    effects = np.asarray(per_pair, dtype=np.float64).reshape(len(per_pair), n_layers, n_heads)
    per_pair_score = score.ndim == 3
    if score.shape[-2:] != (n_layers, n_heads) or (per_pair_score and len(score) != len(effects)):
        raise ValueError(f"the score must be [layers, heads] = ({n_layers}, {n_heads}) or [pairs, layers, heads] "
                         f"with the effects' {len(effects)} pairs, got {score.shape}")
    mean_score = score.mean(0) if per_pair_score else score
    pooled, per_layer = _within_layer_rho(mean_score[None], effects.mean(0)[None])
    codes = stats.group_codes(groups, len(effects))
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)[:, codes].astype(float)
    boot_effect = _resampled_means(effects, weights)
    boot_score = _resampled_means(score, weights) if per_pair_score else np.broadcast_to(mean_score, boot_effect.shape)
    # the second level: the heads of each layer redrawn with replacement (score and effect together), so the
    # CI carries the heads' own variation, not only the pairs'
    heads = rng.integers(0, n_heads, size=(n_boot, n_layers, n_heads))
    boot_pooled, boot_layer = _within_layer_rho(np.take_along_axis(np.asarray(boot_score), heads, -1),
                                                np.take_along_axis(boot_effect, heads, -1))
    quantiles = lambda x: (float(np.nanquantile(x, 0.025)), float(np.nanquantile(x, 0.975)))   # noqa: E731
    low, high = quantiles(boot_pooled) if np.isfinite(boot_pooled).any() else (np.nan, np.nan)
    layers = []
    for layer in range(n_layers):
        finite = np.isfinite(boot_layer[:, layer]).any()
        l_low, l_high = quantiles(boot_layer[:, layer]) if finite else (np.nan, np.nan)
        layers.append({"layer": layer, "spearman": float(per_layer[0, layer]), "ci_low": l_low, "ci_high": l_high})
    p_value, n_perm = head_permutation_p(mean_score, effects.mean(0), float(pooled[0]), n_perm, seed)
    return {"spearman": float(pooled[0]), "ci_low": low, "ci_high": high, "p_permutation": p_value,
            "n_perm": n_perm, "n_heads": n_layers * n_heads,
            "n_pairs": len(effects), "depth": "within-layer (heads ranked inside each layer, then pooled)",
            "resampled": ("two levels: pairs (clusters), score and effect together, then heads within each layer"
                          if per_pair_score else
                          "two levels: pairs (clusters; effect, score fixed), then heads within each layer"),
            "per_layer": layers}


def head_permutation_p(score: np.ndarray, effect: np.ndarray, observed: float, n_perm: int, seed: int):
    """(two-sided p of the pooled within-layer Spearman under a within-layer head permutation, the permutations
    drawn): the score's heads are shuffled inside each layer (score and effect [layers, heads], the means over
    pairs), which keeps depth and each layer's spread and breaks only which head has which score; p = (1 + b) /
    (1 + n) with b the permutations whose |rho| is at least the observed |rho|. NaN when rho is undefined."""
    if not np.isfinite(observed):
        return float("nan"), 0
    rng = np.random.default_rng(seed + 1)
    order = np.argsort(rng.random((n_perm, *score.shape)), axis=-1)            # [perm, layers, heads]
    shuffled = np.take_along_axis(np.broadcast_to(score, order.shape), order, -1)
    rho, _ = _within_layer_rho(shuffled, np.broadcast_to(effect, order.shape))
    b = int(np.sum(np.abs(rho) >= abs(observed) - 1e-12))
    return (1 + b) / (1 + n_perm), n_perm


def attention_scores(outs: list[PairRun], attention_scores, n_layers: int, n_heads: int):
    """(the score to compare [pairs, layers, heads] or [layers, heads], its name), or (None, "") when there is
    none. Default: the clean run's attention source -> target on each patched pair (when every pair has a
    target); a given [layers, heads] or [pairs, layers, heads] array is used as it is."""
    if attention_scores is None:
        attention = [o.attention for o in outs]
        if attention and all(a is not None for a in attention):
            return np.stack(attention), "attention source -> target in the clean run of each patched pair"
        return None, ""
    values = np.asarray(attention_scores, dtype=np.float64)
    if values.shape[-2:] != (n_layers, n_heads) or values.ndim not in (2, 3):
        raise ValueError(f"attention_scores must have shape ({n_layers}, {n_heads}) or (pairs, {n_layers}, "
                         f"{n_heads}), got {values.shape}")
    return values, "given"
