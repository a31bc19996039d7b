"""probing.patching.sets and the engine's head-set rows: a set of one head gives exactly the single-head number,
a set of every head equals an independent all-patched run (one broadcast z replacement, no engine), and
`patch_head_sets` compares the chosen sets with layer-matched random sets."""
import numpy as np
import pandas as pd
import pytest
import torch

from probing import hooks
from probing.models import load_model
from probing.patching import pairs as pairs_module, patch_heads
from probing.patching.engine import patch_ids, patch_set_ids
from probing.patching.readouts import normalise, run_readout
from probing.patching.sets import (distinct_sets, holm_over_sets, layer_matched_sets, patch_head_sets,
                                   random_set_test, rank_in_layer, top_heads)
from tests.patching_cases import CLEAN, CORRUPT, _neg

PAIRS = [(CLEAN, CORRUPT, "not", "really"),
         ("The workers did not open the door.", "The workers did really open the door.", "not", "really"),
         ("The cat did not eat the fish.", "The cat did really eat the fish.", "not", "really")]


def _examples():
    rows = []
    for index, (clean, corrupt, cue, adverb) in enumerate(PAIRS):
        rows += [_neg(clean, cue, f"p{index}", "negated"), _neg(corrupt, adverb, f"p{index}", "control")]
    return rows


def _ids(loaded, clean=CLEAN, corrupt=CORRUPT):
    pieces = pairs_module.minimal_pair(loaded, clean, corrupt)
    return pieces.clean_ids, pieces.corrupt_ids, pieces.swapped


@pytest.fixture(scope="module")
def tiny(tiny_causal_path):
    return load_model(tiny_causal_path)


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_a_set_of_one_head_equals_single_head_patching(which, request):
    loaded = request.getfixturevalue("tiny" if which == "tiny" else "minilm")
    clean_ids, corrupt_ids, swapped = _ids(loaded)
    layout = hooks.head_layout(loaded)
    single = patch_ids(loaded.model, clean_ids, corrupt_ids, swapped, [], ("noising", "denoising"), 512)
    heads = [(l, h) for l in range(layout.n_layers) for h in range(layout.n_heads)]
    sets = patch_set_ids(loaded.model, clean_ids, corrupt_ids, [[head] for head in heads])
    for kind in ("noising", "denoising"):
        np.testing.assert_array_equal(sets.values[kind], single.values[kind].reshape(-1))
    assert sets.clean == single.clean and sets.corrupt == single.corrupt


def _all_patched_by_hand(loaded, clean_ids, corrupt_ids, heads):
    """Noising of `heads` together, without the engine: cache the corrupt run's z, then one forward of the clean
    text with a broadcast replacement of those heads' z (probing.hooks.replace_z with a dict). Read out as the
    engine reads by default: the embedding over the positions whose piece is the same in both texts."""
    module = loaded.model
    ids = torch.tensor([clean_ids, corrupt_ids])
    base = run_readout(module, ids, None)
    shared = [i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a == b]
    keep = torch.tensor(shared)
    direction = base.double()[0, keep].mean(0) - base.double()[1, keep].mean(0)
    value = lambda hidden: hidden.double()[:, keep].mean(1) @ direction       # noqa: E731
    base_values = value(base)
    with hooks.cache_z(module) as z:
        run_readout(module, ids[1:], None)
    with hooks.replace_z(module, {(l, h): z[l][0, :, h] for l, h in heads}):
        patched = value(run_readout(module, ids[:1], None))
    return float((base_values[0] - patched[0]) / (base_values[0] - base_values[1]))


def test_every_head_of_every_layer_equals_the_all_patched_run(minilm):
    clean_ids, corrupt_ids, _ = _ids(minilm)
    layout = hooks.head_layout(minilm)
    every = [(l, h) for l in range(layout.n_layers) for h in range(layout.n_heads)]
    layer_two = [(2, h) for h in range(layout.n_heads)]
    out = patch_set_ids(minilm.model, clean_ids, corrupt_ids, [every, layer_two], kinds=("noising",))
    effects, sanity = normalise(out, out.difference)
    assert sanity["own_noising_max_abs"] < 1e-5 and abs(sanity["embedding_denoising"] - 1) < 1e-5
    assert effects["noising"][0] == pytest.approx(_all_patched_by_hand(minilm, clean_ids, corrupt_ids, every),
                                                  abs=1e-5)
    assert effects["noising"][1] == pytest.approx(_all_patched_by_hand(minilm, clean_ids, corrupt_ids, layer_two),
                                                  abs=1e-5)
    # every head's output from the corrupt run removes most, not all, of the difference: the residual stream
    # still carries the clean word's embedding at its position
    assert 0.5 < effects["noising"][0] <= 1.0 + 1e-5


def test_random_sets_match_the_layers_and_top_heads_rank():
    rng = np.random.default_rng(0)
    chosen = [(1, 3), (1, 5), (4, 0)]
    for draw in layer_matched_sets(chosen, 12, 50, rng):
        assert sorted(l for l, _ in draw) == [1, 1, 4] and len(set(draw)) == 3
    assert top_heads(np.array([0.1, 0.9, 0.5, 0.9]), 2, 2) == [(0, 1), (1, 1)]


def test_random_draws_equal_to_the_chosen_set_are_the_same_column_and_count_as_ties():
    """Ties are decided by set identity: a draw equal to the chosen set shares its column (patched once), so it
    counts in b whatever the float rounding; p = (1 + b) / (1 + n) is never 0."""
    sets = [{"heads": [(1, 3)], "random": [[(1, 3)], [(1, 0)], [(1, 3)], [(1, 5)]]},
            {"heads": [(1, 0), (2, 2)], "random": [[(2, 2), (1, 0)], [(1, 1), (2, 2)]]}]
    distinct, layout = distinct_sets(sets)
    assert distinct == [((1, 3),), ((1, 0),), ((1, 5),), ((1, 0), (2, 2)), ((1, 1), (2, 2))]
    assert layout == [(0, [0, 1, 0, 2]), (3, [3, 4])]
    means = np.array([0.5, 0.2, 0.9, 0.1, 0.0])
    test = random_set_test(0, layout[0][1], means)
    # b = the two draws that are the set itself + the one larger set: (1 + 3) / (1 + 4)
    assert test["p_random"] == pytest.approx(4 / 5) and test["random_is_chosen"] == 2
    assert test["n_random_distinct"] == 3 and test["detectable"] >= 0
    alone = random_set_test(2, [1, 1, 1], means)
    assert alone["p_random"] == pytest.approx(1 / 4)          # nothing above it: (1 + 0) / (1 + 3), not 0


def test_holm_runs_over_the_k_above_1_comparisons_and_k_1_is_a_rank():
    table = pd.DataFrame({"selection": ["attention", "effect", "effect", "layer"], "k": [1, 3, 5, 12],
                          "test": ["rank", "random sets", "random sets", np.nan], "p_random": [0.1, 0.01, 0.04, np.nan]})
    held = holm_over_sets(table)
    assert np.isnan(held["p_holm"][0]) and np.isnan(held["p_holm"][3])
    assert held["p_holm"][1] == pytest.approx(0.02) and held["p_holm"][2] == pytest.approx(0.04)
    single = np.array([0.1, 0.3, 0.2, 0.5, 0.5, 0.0])      # 2 layers x 3 heads
    assert [rank_in_layer(single, 0, h, 3) for h in range(3)] == [3, 1, 2]
    assert [rank_in_layer(single, 1, h, 3) for h in range(3)] == [1, 1, 3]


def test_the_report_says_not_distinguishable_with_what_could_be_detected():
    from types import SimpleNamespace
    from probing.report.patching import _set_verdict
    row = SimpleNamespace(test="random sets", p_holm=0.3, detectable=0.123, ranks_in_layer="1-8:1/12")
    assert _set_verdict(row) == ("not distinguishable from random sets (p_holm 0.3; could detect >= 0.123 over the "
                                 "random median)")
    assert "above random sets" in _set_verdict(SimpleNamespace(test="random sets", p_holm=0.01, detectable=0.1))
    assert _set_verdict(SimpleNamespace(test="rank", ranks_in_layer="1-8:1/12")) == "rank 1-8:1/12 (a rank, not a test)"


def test_patch_head_sets_compares_with_random_sets(tiny):
    result = patch_head_sets(tiny, _examples(), k=(1, 2), n_random=20, seed=1, n_boot=100)
    table = result.table
    layout = hooks.head_layout(tiny)
    assert result.n_pairs == 3 and result.sanity["passed"]
    # per kind: attention and effect sets for each k, and one set per layer
    assert len(table) == 2 * (2 * 2 + layout.n_layers)
    chosen = table[table["selection"] != "layer"]
    assert chosen["p_random"].between(1 / 21, 1).all() and (chosen["n_random"] == 20).all()
    assert (chosen[chosen["k"] == 1]["test"] == "rank").all() and chosen[chosen["k"] == 2]["p_holm"].notna().all()
    assert (chosen["ci_low"] <= chosen["effect"] + 1e-12).all() and (chosen["effect"] <= chosen["ci_high"] + 1e-12).all()
    assert table[table["selection"] == "layer"]["p_random"].isna().all()
    # a set of one head chosen by single-head effect has that head's own mean effect
    single = patch_heads(tiny, _examples(), kinds=("noising", "denoising"), n_boot=100, n_perm=100)
    for kind in ("noising", "denoising"):
        row = table[(table["kind"] == kind) & (table["selection"] == "effect") & (table["k"] == 1)].iloc[0]
        best = single.table.sort_values(kind, ascending=False, kind="stable").iloc[0]
        assert row["heads"] == f"{int(best['layer'])}-{int(best['head'])}"
        assert row["effect"] == pytest.approx(best[kind], abs=1e-9)
    again = patch_head_sets(tiny, _examples(), k=(1, 2), n_random=20, seed=1, n_boot=100)
    assert again.table.equals(table)          # seeded: the same random sets
    with pytest.raises(ValueError, match="positive whole"):
        patch_head_sets(tiny, _examples(), k=(0,))


def test_sets_from_a_screen_rank_the_heads_patched_exactly_and_refuse_estimates_alone(tiny):
    screened = patch_heads(tiny, _examples(), kinds=("noising", "denoising"), n_boot=100, n_perm=100,
                           method="screen")
    # the tiny model has 4 heads, so its screen patches all; leave out the best noising head by hand, as a
    # screen on a larger model leaves out the heads its estimates rank low
    left_out = screened.table["noising"].idxmax()
    screened.table.loc[left_out, ["noising", "denoising"]] = np.nan
    patched = screened.table.dropna(subset=["noising"])
    result = patch_head_sets(tiny, _examples(), k=(1,), n_random=5, n_boot=100, result=screened)
    for kind in ("noising", "denoising"):
        row = result.table[(result.table["kind"] == kind) & (result.table["selection"] == "effect")].iloc[0]
        best = patched.sort_values(kind, ascending=False, kind="stable").iloc[0]
        assert row["heads"] == f"{int(best['layer'])}-{int(best['head'])}"
    assert any(f"among the {len(patched)} heads the screen patched exactly" in note for note in result.notes)
    estimates = patch_heads(tiny, _examples(), kinds=("noising", "denoising"), n_boot=100, n_perm=100,
                            method="attribution")
    with pytest.raises(ValueError, match="estimates only"):
        patch_head_sets(tiny, _examples(), k=(1,), n_random=5, result=estimates)


@pytest.mark.slow
def test_cli_sets_writes_the_comparison(tmp_path, capsys):
    import pandas as pd
    from analysis.__main__ import main
    from probing.examples import write_jsonl
    data = tmp_path / "pairs.jsonl"
    write_jsonl(_examples()[:4], data)
    out = tmp_path / "out"
    assert main(["patch", "--data", str(data), "--out", str(out), "--kinds", "noising,denoising", "--n-boot", "50",
                 "--n-perm", "50", "--sets", "--set-sizes", "1,2", "--n-random", "10"]) == 0
    sets = pd.read_csv(out / "sets.csv")
    assert len(sets) == 2 * (2 * 2 + 6) and {"effect", "ci_low", "random_mean", "p_random"} <= set(sets)
    report = (out / "report.md").read_text()
    assert "## Head sets (compensation)" in report and "Behaviour first" in report
    effects = pd.read_csv(out / "effects.csv")
    assert {"attention", "norm_attention"} <= set(effects)
    assert "top-1 by attention" in capsys.readouterr().out
    assert main(["patch", "--data", str(data), "--out", str(tmp_path / "o2"), "--sets", "--set-sizes", "1,x"]) == 2
    assert "argument --set-sizes: must be whole numbers" in capsys.readouterr().err
    assert main(["patch", "--data", str(data), "--out", str(tmp_path / "o3"), "--sets", "--method",
                 "attribution"]) == 2
    assert "use --method exact or screen" in capsys.readouterr().err
