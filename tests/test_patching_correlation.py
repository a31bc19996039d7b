"""probing.patching.correlation: Spearman's rho of attention against effect equals scipy's, ties included, with a
bootstrap CI that contains it; attention scores given as a table or an array are put in the heads' order."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from probing.patching.correlation import attention_vector, rank_correlation


def test_rank_correlation_matches_scipy_and_its_ci_holds_it():
    rng = np.random.default_rng(0)
    attention = np.array([0.1, 0.5, 0.5, 0.9, 0.3, 0.7])            # a tie, as real scores have
    per_pair = attention[None, :] * 2 + rng.normal(0, 0.3, (8, 6))    # [pairs, heads]
    result = rank_correlation(attention, per_pair, n_boot=300, seed=0, groups=[f"g{i // 2}" for i in range(8)])
    assert result["spearman"] == pytest.approx(spearmanr(attention, per_pair.mean(0)).statistic, abs=1e-12)
    assert result["ci_low"] <= result["spearman"] <= result["ci_high"] and result["n_heads"] == 6
    reversed_effects = rank_correlation(attention, -per_pair, n_boot=50, seed=0, groups=None)
    assert reversed_effects["spearman"] == pytest.approx(-result["spearman"], abs=1e-12)


def test_attention_scores_as_a_table_or_an_array():
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1]})
    scores = pd.DataFrame({"layer": [1, 0, 1, 0], "head": [1, 1, 0, 0], "mean_attention": [4.0, 2.0, 3.0, 1.0]})
    scores.attrs["score"] = "mean_attention"
    values, name = attention_vector(scores, table, 2, 2)
    assert values.tolist() == [1.0, 2.0, 3.0, 4.0] and name == "mean_attention"
    assert attention_vector(np.arange(4.0).reshape(2, 2), table, 2, 2)[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert attention_vector(None, table, 2, 2) == (None, "")
    with pytest.raises(ValueError, match="must have shape \\(2, 2\\)"):
        attention_vector(np.zeros(3), table, 2, 2)
    with pytest.raises(ValueError, match="lacks some heads"):
        attention_vector(scores.iloc[:3], table, 2, 2)
