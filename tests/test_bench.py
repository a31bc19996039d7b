"""analysis/bench.py's long patching pair: one "not" <-> "really" swap in the middle of filler text, at about
the asked length, and exact vs attribution patching over it (shapes and agreement keys; no timing asserted)."""
import pytest

from analysis.bench import long_patching_bench, long_patching_pair


def test_the_long_pair_swaps_not_for_really_in_the_middle(minilm):
    info = long_patching_pair(minilm, 200)
    clean, corrupt = info["ids"]
    assert 180 <= len(clean) <= 200 and len(clean) == len(corrupt)
    assert info["swapped"] == info["source"] and len(info["source"]) == 1
    source, target = info["source"][0], info["target"][0]
    tokens = minilm.tokenizer.convert_ids_to_tokens
    assert tokens([clean[source], corrupt[source], clean[target]]) == ["not", "really", "sign"]
    assert abs(source - len(clean) / 2) < 20
    with pytest.raises(SystemExit, match="reads at most 512 pieces"):
        long_patching_pair(minilm, 4096)


@pytest.mark.slow
def test_the_long_bench_compares_exact_and_attribution_over_every_head(minilm):
    row = long_patching_bench(minilm, 48)
    assert row["pieces"] <= 48 and row["exact_s"] > 0 and row["attribution_s"] > 0
    assert set(row["agreement"]) == {"noising", "denoising"}
    assert all(-1 <= a["spearman"] <= 1 and 0 <= a["top5_in_top10"] <= 5 for a in row["agreement"].values())
