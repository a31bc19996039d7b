"""Attention versus effect: does a head's attention score rank the heads as their patching effects do?
Spearman's rho over heads, with a cluster-bootstrap CI over pairs (the attention scores stay fixed)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from probing import stats


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of x [heads] with every row of y [draws, heads], average ranks for ties."""
    from scipy.stats import rankdata
    rx = rankdata(x)
    ry = rankdata(y, axis=-1)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ry = ry - ry.mean(-1, keepdims=True)
    norms = np.linalg.norm(ry, axis=-1)
    return np.where(norms > 0, (ry @ rx) / np.where(norms > 0, norms, 1), np.nan)


def rank_correlation(attention: np.ndarray, per_pair: np.ndarray, n_boot: int, seed: int, groups) -> dict:
    """Spearman correlation between each head's attention score [heads] and its mean effect (per_pair: [pairs,
    heads]), with a cluster-bootstrap CI over pairs."""
    effect = np.nanmean(per_pair, 0)
    rho = float(_spearman_rows(attention, effect[None])[0])
    codes = stats.group_codes(groups, len(per_pair))
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(codes == g) for g in range(n_groups)]
    draws = np.stack([np.nanmean(per_pair[np.concatenate([members[g] for g in rng.integers(0, n_groups, n_groups)])], 0)
                      for _ in range(n_boot)])
    boot = _spearman_rows(attention, draws)
    return {"spearman": rho, "ci_low": float(np.nanquantile(boot, 0.025)),
            "ci_high": float(np.nanquantile(boot, 0.975)), "n_heads": int(len(attention))}


def attention_vector(attention_scores, table: pd.DataFrame, n_layers: int, n_heads: int):
    """(per-head attention score in table order [layers*heads], its name), or (None, "") when there is none."""
    if attention_scores is None:
        if "attention" in table:
            return table["attention"].to_numpy(), "mean attention source -> target in the clean texts"
        return None, ""
    if isinstance(attention_scores, pd.DataFrame):
        score = attention_scores.attrs.get("score")
        if score not in attention_scores:
            raise ValueError("attention_scores as a table needs attrs['score'] naming one of its columns")
        ordered = attention_scores.set_index(["layer", "head"]).reindex(
            list(zip(table["layer"], table["head"])))[score].to_numpy()
        if np.isnan(ordered).any():
            raise ValueError(f"attention_scores lacks some heads of this {n_layers}x{n_heads} model")
        return ordered, score
    values = np.asarray(attention_scores, dtype=np.float64)
    if values.shape != (n_layers, n_heads):
        raise ValueError(f"attention_scores must have shape ({n_layers}, {n_heads}), got {values.shape}")
    return values.reshape(-1), "given"
