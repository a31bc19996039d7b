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
                    groups) -> dict:
    """Within-layer Spearman of a head score against the mean effect per head.

    score: [layers, heads] (fixed) or [pairs, layers, heads] (per pair, resampled with the effects);
    per_pair: effects [pairs, layers*heads]. The CI is a cluster bootstrap over pairs (clusters: `groups`)
    that redraws the score's pairs together with the effect's. Returns the pooled rho with its CI
    (`spearman`, `ci_low`, `ci_high`) and per layer `per_layer`: [{layer, spearman, ci_low, ci_high}]."""
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
    boot_pooled, boot_layer = _within_layer_rho(boot_score, boot_effect)
    quantiles = lambda x: (float(np.nanquantile(x, 0.025)), float(np.nanquantile(x, 0.975)))   # noqa: E731
    low, high = quantiles(boot_pooled) if np.isfinite(boot_pooled).any() else (np.nan, np.nan)
    layers = []
    for layer in range(n_layers):
        finite = np.isfinite(boot_layer[:, layer]).any()
        l_low, l_high = quantiles(boot_layer[:, layer]) if finite else (np.nan, np.nan)
        layers.append({"layer": layer, "spearman": float(per_layer[0, layer]), "ci_low": l_low, "ci_high": l_high})
    return {"spearman": float(pooled[0]), "ci_low": low, "ci_high": high, "n_heads": n_layers * n_heads,
            "n_pairs": len(effects), "depth": "within-layer (heads ranked inside each layer, then pooled)",
            "resampled": "pairs, score and effect together" if per_pair_score else "pairs (effect; score fixed)",
            "per_layer": layers}


def attention_scores(outs: list[dict], attention_scores, n_layers: int, n_heads: int):
    """(the score to compare [pairs, layers, heads] or [layers, heads], its name), or (None, "") when there is
    none. Default: the clean run's attention source -> target on each patched pair (when every pair has a
    target); a given [layers, heads] or [pairs, layers, heads] array is used as it is."""
    if attention_scores is None:
        attention = [o["attention"] for o in outs]
        if attention and all(a is not None for a in attention):
            return np.stack(attention), "attention source -> target in the clean run of each patched pair"
        return None, ""
    values = np.asarray(attention_scores, dtype=np.float64)
    if values.shape[-2:] != (n_layers, n_heads) or values.ndim not in (2, 3):
        raise ValueError(f"attention_scores must have shape ({n_layers}, {n_heads}) or (pairs, {n_layers}, "
                         f"{n_heads}), got {values.shape}")
    return values, "given"
