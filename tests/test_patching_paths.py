"""`probing.patching.paths`: direct effects by path patching, checked against a hand computation on a pre-LN
model (GPT-2) with its MLPs silenced, where the residual stream is a plain sum; a last-layer head's direct
effect is its total; and the direct + indirect = total bookkeeping."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from probing import hooks
from probing.patching.paths import direct_ids, heads_to_trace, path_table, where_it_goes
from probing.patching.readouts import Pooling


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_causal_path):
    from probing.models import load_model
    return load_model(tiny_causal_path)


@pytest.fixture(scope="module")
def silent_mlps(tiny_gpt2):
    """A copy of the tiny GPT-2 whose MLPs output 0, so a head's write reaches ln_f unchanged when later heads
    are frozen (MLPs are recomputed by path patching: with them live the hand computation would need them)."""
    module = copy.deepcopy(tiny_gpt2.model)
    with torch.no_grad():
        for block in module.h:
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
    return module


def _final_residual_and_z(module, ids):
    """The residual stream entering the final layer norm [batch, pos, d] and every layer's z."""
    store = {}
    handle = module.ln_f.register_forward_pre_hook(lambda _m, args: store.__setitem__("resid", args[0].detach()))
    try:
        with hooks.cache_z(module) as z, torch.inference_mode():
            module(input_ids=ids)
    finally:
        handle.remove()
    return store["resid"], z


@pytest.mark.parametrize("layer, head", [(0, 0), (0, 1), (1, 1)])
def test_direct_effect_is_the_heads_own_write_into_the_final_residual(silent_mlps, layer, head):
    """GPT-2 is pre-LN: with every later head frozen and the MLPs silent, the final residual is the clean one plus
    what head (layer, head)'s changed z writes through its slice of the output projection; ln_f and the readout
    follow."""
    module = silent_mlps
    clean, corrupt = [101, 2009, 2106, 2025, 3696, 102], [101, 2009, 2106, 2428, 3696, 102]
    ids = torch.tensor([clean, corrupt])
    resid, z = _final_residual_and_z(module, ids)
    d_head = z[0].shape[-1]
    c_proj = module.h[layer].attn.c_proj.weight          # Conv1D: [n_heads * d_head, d_model]
    delta = (z[layer][1, :, head] - z[layer][0, :, head]) @ c_proj[head * d_head:(head + 1) * d_head]
    with torch.inference_mode():
        final = module.ln_f(torch.stack([resid[0], resid[0] + delta, resid[1]]))
    pooling = Pooling("all")
    e_clean, e_corrupt = final[0].double().mean(0), final[2].double().mean(0)
    expected_noising = float(final[1].double().mean(0) @ (e_clean - e_corrupt))
    out = direct_ids(module, clean, corrupt, [(layer, head)], ("noising",), pooling=pooling)
    assert out.values["noising"][0] == pytest.approx(expected_noising, rel=1e-5, abs=1e-6)
    assert out.clean == pytest.approx(float(e_clean @ (e_clean - e_corrupt)), rel=1e-6)


def test_a_last_layer_heads_direct_effect_is_its_total_and_an_earlier_heads_is_not(tiny_gpt2):
    from probing.patching.engine import patch_ids
    module = tiny_gpt2.model             # MLPs live: they are recomputed either way
    clean, corrupt = [101, 2009, 2106, 2025, 3696, 102], [101, 2009, 2106, 2428, 3696, 102]
    heads = [(0, 0), (1, 1)]
    direct = direct_ids(module, clean, corrupt, heads, ("noising", "denoising"), pooling=Pooling("all"))
    total = patch_ids(module, clean, corrupt, [3], [], ("noising", "denoising"), 64, heads=heads,
                      pooling=Pooling("all"))
    assert direct.clean == pytest.approx(total.clean) and direct.corrupt == pytest.approx(total.corrupt)
    for i, kind in enumerate(("noising", "denoising")):
        assert direct.values[kind][1] == pytest.approx(total.values[kind][1, 1], rel=1e-6)   # no later head
        assert abs(direct.values[kind][0] - total.values[kind][0, 0]) > 1e-6       # layer 1 reads head 0-0


def test_direct_plus_indirect_is_the_total_and_the_words_follow_the_tests():
    rng = np.random.default_rng(0)
    n = 40
    direct = np.column_stack([rng.normal(0.5, 0.1, n), rng.normal(0.0, 0.1, n)])      # head A direct, head B not
    indirect = np.column_stack([rng.normal(0.0, 0.1, n), rng.normal(0.4, 0.1, n)])    # head B through later layers
    table = path_table({"noising": direct + indirect}, {"noising": direct}, [(1, 0), (0, 2)],
                       [f"f{i}" for i in range(n)], n_boot=200, n_perm=2000, seed=0)
    assert np.allclose(table["direct"] + table["indirect"], table["total"])
    assert table.loc[0, "where"].startswith("direct") and table.loc[1, "where"].startswith("indirect")
    assert where_it_goes((0.5, 0.9), (0.6, 0.7), 0.05) == "neither part distinguishable from 0"
    assert where_it_goes((0.01, 0.9), (0.9, 0.001), 0.05).startswith("both")


def test_traced_heads_are_the_named_ones_and_the_top_per_kind():
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "noising": [0.1, 0.4, np.nan, 0.2],
                          "denoising": [0.3, 0.0, 0.1, 0.2]})
    assert heads_to_trace({"noising": [(1, 0)]}, table, ["noising", "denoising"], top=1) == [(0, 0), (0, 1), (1, 0)]


def test_a_last_layer_head_is_said_to_be_all_direct_not_tested():
    """A last-layer head's direct part is its total and its indirect part exactly 0 (the runs differ by
    rounding), with no p-value; it stays out of the maxT family, so the earlier head's p-values are those of a
    table without it."""
    rng = np.random.default_rng(1)
    n = 30
    total = rng.normal(0.3, 0.1, (n, 1))
    rounding = total + rng.normal(0, 1e-9, (n, 1))      # what the direct runs give a last-layer head
    earlier = rng.normal(0.2, 0.1, (n, 1))
    groups = [f"f{i}" for i in range(n)]
    both = path_table({"noising": np.hstack([earlier, total])}, {"noising": np.hstack([earlier * 0.5, rounding])},
                      [(0, 1), (1, 0)], groups, n_boot=100, n_perm=500, seed=0, n_layers=2)
    last = both.loc[1]
    assert last["where"].startswith("last layer") and last["indirect"] == 0 and last["direct"] == last["total"]
    assert all(np.isnan(last[f"{part}_p_fwer_{sign}"]) for part in ("direct", "indirect")
               for sign in ("positive", "negative"))
    alone = path_table({"noising": earlier}, {"noising": earlier * 0.5}, [(0, 1)], groups, n_boot=100,
                       n_perm=500, seed=0, n_layers=2)
    for column in ("direct_p_fwer_positive", "indirect_p_fwer_positive", "indirect_p_fwer_negative"):
        assert both.loc[0, column] == alone.loc[0, column]
    only_last = path_table({"noising": total}, {"noising": rounding}, [(1, 0)], groups, n_boot=100, n_perm=500,
                           seed=0, n_layers=2)
    assert only_last.loc[0, "where"].startswith("last layer") and np.isnan(only_last.loc[0, "direct_p_fwer_positive"])
