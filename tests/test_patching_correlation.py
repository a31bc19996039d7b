"""probing.patching.correlation: the within-layer (depth-partialled) Spearman of a head score against the effects,
checked against scipy layer by layer; depth alone does not make it positive; a per-pair score is resampled with
the effects; any [layers, heads] score goes through the same function."""
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import spearmanr

from probing.patching.correlation import attention_scores, head_permutation_p, score_vs_effect


def _depth_confounded(n_pairs=12, seed=0):
    """3 layers x 4 heads: score and effect both grow with depth, but within each layer they are reversed."""
    rng = np.random.default_rng(seed)
    within = np.array([0.0, 1.0, 2.0, 3.0])
    score = np.stack([10 * layer + within for layer in range(3)])               # [layers, heads]
    effect = np.stack([10 * layer - within for layer in range(3)])
    per_pair = effect.reshape(1, -1) + rng.normal(0, 0.2, (n_pairs, 12))       # [pairs, layers*heads]
    return score, effect, per_pair


def test_within_layer_spearman_removes_depth():
    score, effect, per_pair = _depth_confounded()
    assert spearmanr(score.ravel(), per_pair.mean(0)).statistic > 0.6          # over all heads: depth wins
    result = score_vs_effect(score, per_pair, 3, 4, n_boot=300, seed=0, groups=None)
    assert result["spearman"] < -0.8 and result["ci_low"] <= result["spearman"] <= result["ci_high"]
    mean = per_pair.mean(0).reshape(3, 4)
    for layer in result["per_layer"]:
        expected = spearmanr(score[layer["layer"]], mean[layer["layer"]]).statistic
        assert layer["spearman"] == pytest.approx(expected, abs=1e-12)
    assert result["resampled"].startswith("two levels: pairs (clusters; effect, score fixed)")


def test_per_pair_score_is_resampled_with_the_effects():
    _score, _effect, per_pair = _depth_confounded(seed=1)
    rng = np.random.default_rng(2)
    # a per-pair score that tracks each pair's own effect: within-layer rho near +1, a CI from both sides
    per_pair_score = per_pair.reshape(-1, 3, 4) + rng.normal(0, 0.05, (12, 3, 4))
    result = score_vs_effect(per_pair_score, per_pair, 3, 4, n_boot=300, seed=0,
                             groups=[f"g{i // 2}" for i in range(12)])
    assert result["spearman"] > 0.9 and result["resampled"].startswith("two levels: pairs (clusters), score and effect")
    assert result["n_pairs"] == 12 and len(result["per_layer"]) == 3
    fixed = score_vs_effect(per_pair_score.mean(0), per_pair, 3, 4, n_boot=300, seed=0, groups=None)
    assert fixed["spearman"] == pytest.approx(result["spearman"], abs=1e-12)     # same point estimate
    with pytest.raises(ValueError, match="layers, heads"):
        score_vs_effect(np.zeros((2, 5)), per_pair, 3, 4, 10, 0, None)
    with pytest.raises(ValueError, match="12 pairs"):
        score_vs_effect(np.zeros((5, 3, 4)), per_pair, 3, 4, 10, 0, None)


def test_the_score_to_compare():
    outs = [SimpleNamespace(attention=np.full((2, 2), float(i))) for i in range(3)]
    values, name = attention_scores(outs, None, 2, 2)
    assert values.shape == (3, 2, 2) and "patched pair" in name
    assert attention_scores([SimpleNamespace(attention=None)], None, 2, 2) == (None, "")
    assert attention_scores(outs, np.ones((2, 2)), 2, 2)[1] == "given"
    with pytest.raises(ValueError, match="must have shape"):
        attention_scores(outs, np.zeros(3), 2, 2)


def test_head_permutation_p_and_the_two_level_ci_carry_the_heads_variation():
    """Within-layer head permutation: a score that orders the heads as the effects do in every layer has a small
    p, one unrelated to them a large p; p = (1 + b) / (1 + n) is never 0, and the two-level CI is wider than a
    bootstrap over pairs alone would make it when there are few heads."""
    rng = np.random.default_rng(3)
    effect = rng.normal(size=(6, 12))
    p_same, n = head_permutation_p(effect, effect, 1.0, 999, seed=0)
    assert n == 999 and p_same == pytest.approx(1 / 1000)
    unrelated = rng.normal(size=(6, 12))
    rho = score_vs_effect(unrelated, effect.reshape(1, -1).repeat(4, 0), 6, 12, n_boot=200, seed=0, groups=None,
                          n_perm=999)
    assert rho["p_permutation"] > 0.05 and rho["n_perm"] == 999
    assert rho["ci_low"] < rho["spearman"] < rho["ci_high"] and rho["resampled"].startswith("two levels")
