"""probing.patching.attribution: the first-order estimate is the derivative exact patching approaches (central
finite differences on a float64 model, to 1e-4), it ranks heads as exact patching does on a MiniLM pair, and
`patch_heads(method=...)` keeps the exact method's columns while naming heads from exact values only."""

import numpy as np
import pytest

from probing.patching.readouts import SHARED
import torch
from scipy.stats import spearmanr

from probing import hooks, patching
from probing.examples import load_examples
from probing.models import load_model
from probing.patching.attribution import _gradient_run, agreement, attribute_ids, screened_heads
from tests.patching_cases import CLEAN, CORRUPT, tiny_masked_path  # noqa: F401 (fixture)

EPSILON = 1e-4


def _ids(loaded):
    pieces = patching.minimal_pair(loaded, CLEAN, CORRUPT)
    return pieces, torch.tensor([pieces.clean_ids, pieces.corrupt_ids])


def _nudged_value(module, ids, value, run: int, layer: int, head: int, delta, pattern: bool) -> float:
    """The readout value of row `run` with head (layer, head)'s z (or pattern) moved by `delta`."""
    def nudge(tensor):
        tensor = tensor.clone()
        if pattern:
            tensor[run, head] += delta
        else:
            tensor[run, :, head] += delta
        return tensor
    edit = hooks.edit_pattern if pattern else hooks.edit_z
    with torch.inference_mode(), edit(module, {layer: nudge}):
        return float(value(module(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state)[run])


def test_estimate_is_the_finite_difference_derivative(tiny_masked_path):
    loaded = load_model(tiny_masked_path)
    module = loaded.model.double()
    pieces, ids = _ids(loaded)
    out = attribute_ids(module, pieces.clean_ids, pieces.corrupt_ids, pieces.swapped, [],
                        ("noising", "denoising", "pattern_noising", "pattern_denoising"))
    # the readout the estimate used: the embedding over the pieces both texts share
    base, value, base_values, *_ = _gradient_run(module, ids, None, SHARED, pieces.clean_ids, pieces.corrupt_ids)
    worst, scale = 0.0, 0.0
    for kind, values in out.values.items():
        run, pattern = (1 if kind.endswith("denoising") else 0), kind.startswith("pattern")
        cache = base.patterns if pattern else base.z
        for layer in range(loaded.n_layers):
            for head in range(loaded.n_heads):
                own = cache[layer][run, head] if pattern else cache[layer][run, :, head]
                other = cache[layer][1 - run, head] if pattern else cache[layer][1 - run, :, head]
                delta = other - own
                up = _nudged_value(module, ids, value, run, layer, head, EPSILON * delta, pattern)
                down = _nudged_value(module, ids, value, run, layer, head, -EPSILON * delta, pattern)
                derivative = (up - down) / (2 * EPSILON)
                estimate = values[layer, head] - float(base_values[run])
                worst, scale = max(worst, abs(derivative - estimate)), max(scale, abs(derivative))
    assert scale > 0                                  # the heads do move the readout
    assert worst <= 1e-4 * scale, (worst, scale)


@pytest.mark.slow
def test_estimate_ranks_heads_like_exact_patching_on_minilm(minilm):
    # measured on this pair: Spearman 0.972 (noising), 0.994 (denoising); exact's top 5 all in the top 10
    exact = patching.patch_pair(minilm, CLEAN, CORRUPT, kinds=("noising", "denoising"))
    estimate = patching.patch_pair(minilm, CLEAN, CORRUPT, kinds=("noising", "denoising"), method="attribution")
    assert estimate.method == "attribution" and estimate.sanity["passed"]
    for kind in ("noising", "denoising"):
        x, y = exact.effects[kind].ravel(), estimate.effects[kind].ravel()
        assert spearmanr(x, y)[0] > 0.9
        assert agreement(y, x, minilm.n_heads)["top5_in_top10"] >= 4
        assert np.sign(x[np.argmax(x)]) == np.sign(y[np.argmax(x)])


def test_screened_heads_take_the_top_and_a_seeded_random_sample():
    estimates = {"noising": np.array([[0.0, 5.0, 1.0, 4.0, 0.1, 0.2, 0.3, 0.4]])}
    heads, drawn = screened_heads(estimates, n_heads=4, top_k=2, n_random=2, seed=0)
    assert (0, 1) in heads and (0, 3) in heads and len(heads) == 4 and len(drawn) == 2
    assert not drawn & {1, 3}
    assert screened_heads(estimates, 4, 2, 2, seed=0) == (heads, drawn)


def test_agreement_names_what_the_estimate_missed():
    exact = np.array([9, 8, 7, 6, 5, np.nan] + [0.0] * 10)
    estimate = np.array([9, 8, 7, 6, -5, 1] + list(range(10, 20)))
    result = agreement(estimate, exact, n_heads=4)
    assert result["n_heads_compared"] == 15 and result["top5_in_top10"] < 5
    assert result["missed_by_estimate"]


def test_unknown_method_is_refused(minilm):
    with pytest.raises(ValueError, match="method must be one of"):
        patching.patch_pair(minilm, CLEAN, CORRUPT, method="screen")
    with pytest.raises(ValueError, match="method must be one of"):
        patching.patch_heads(minilm, load_examples("builtin-negation"), method="guess", max_pairs=1)


@pytest.mark.slow
def test_patch_heads_methods_keep_columns_and_name_only_from_exact(minilm):
    examples = load_examples("builtin-negation")
    options = dict(kinds=("noising", "denoising"), max_pairs=3, n_boot=50, n_perm=200)
    exact = patching.patch_heads(minilm, examples, **options)
    estimated = patching.patch_heads(minilm, examples, method="attribution", **options)
    screened = patching.patch_heads(minilm, examples, method="screen", **options)
    assert list(estimated.table.columns) == list(exact.table.columns)
    assert estimated.named == {"noising": [], "denoising": []} and estimated.method == "attribution"
    assert {"noising_estimate", "denoising_estimate"} <= set(screened.table.columns)
    patched = screened.table[screened.table["noising"].notna()]
    assert 10 <= len(patched) < len(screened.table)
    # the heads patched exactly have exactly exact patching's values
    merged = patched.merge(exact.table, on=["layer", "head"], suffixes=("", "_all"))
    np.testing.assert_allclose(merged["noising"], merged["noising_all"], atol=1e-9)
    for kind in ("noising", "denoising"):
        assert set(screened.named[kind]) <= set(zip(patched["layer"], patched["head"]))
        assert screened.screen["by_kind"][kind]["n_heads_compared"] == len(patched)


@pytest.mark.slow
def test_patch_pair_on_some_heads_gives_exact_values_there_and_nan_elsewhere(minilm):
    full = patching.patch_pair(minilm, CLEAN, CORRUPT, kinds=("noising",))
    some = patching.patch_pair(minilm, CLEAN, CORRUPT, kinds=("noising",), heads=[(5, 9), (0, 0)])
    assert np.isnan(some.effects["noising"]).sum() == minilm.n_layers * minilm.n_heads - 2
    for layer, head in [(5, 9), (0, 0)]:
        assert some.effects["noising"][layer, head] == pytest.approx(full.effects["noising"][layer, head], abs=1e-6)
    assert some.sanity["passed"]
    with pytest.raises(ValueError, match="out of range"):
        patching.patch_pair(minilm, CLEAN, CORRUPT, heads=[(99, 0)])
