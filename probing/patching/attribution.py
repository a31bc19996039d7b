"""Attribution patching: every head's patching effect from one forward and one backward pass (Nanda 2023;
Syed et al. 2023), as a screen that exact patching (`engine.py`) then confirms.

The first-order (linear) estimate of patching head (l, h)'s output z (`probing.hooks`: the head's slice of the
input to layer l's attention output projection) from the other run, with m the readout value of a run:
- noising:   m(clean with z from corrupt) - m(clean)   ~  (z_corrupt - z_clean) . dm/dz  at the clean run
- denoising: m(corrupt with z from clean) - m(corrupt) ~  (z_clean - z_corrupt) . dm/dz  at the corrupt run
and the same with the head's attention probabilities in place of z for `pattern_*` (the whole pattern) and
`row_*` (only the source word's query rows). The estimated run values go through `readouts.normalise` exactly
like exact patching's, so effects are in the same units (clean = 1, corrupt = 0) and the output files keep
their columns.

Cost: the clean and the corrupt text run as one batch of 2 with gradients, then one backward pass gives every
head's gradient at both runs (each batch row's readout depends on that row alone); the pair's sanity rows
(own activations give 0, the first layer's input gives denoising 1) run exactly, as one batch of 3, so the
hooks are checked the same way as in exact patching.

Why no AtP* QK correction here (Kramar et al. 2024): it repairs the linearisation of a head's *own* softmax
when the patched node is the head's queries or keys. The nodes patched here sit after that softmax (z = A V,
and the pattern A itself), so the estimate already uses the other run's exact pattern; what remains first-order
is the path through later layers, which AtP*'s QK fix does not address. An estimate is never used alone:
`screen` (study.py) patches the top heads exactly.
"""
from __future__ import annotations

import inspect
import time

import numpy as np
import torch

from probing.defaults import PATCH_METHODS, SEED
from probing import attention as attention_function, hooks
from probing.patching.results import PairRun, SanityReadings
from probing.patching.runs import BaseRun, clean_attention, patched_values, plan_rows, sanity_readings
from probing.patching.readouts import SHARED, LogitReadout, Pooling, value_function

METHODS = PATCH_METHODS        # (probing.defaults)


def check_method(method: str, allowed=METHODS) -> str:
    if method not in allowed:
        raise ValueError(f"method must be one of {list(allowed)}, got {method!r}")
    return method


def _readout_with_grad(module, ids: torch.Tensor, readout: LogitReadout | None) -> torch.Tensor:
    """`readouts.run_readout` with gradients on: final hidden states [batch, pos, d_model] or the logit
    difference [batch] (float64)."""
    if readout is None:
        return module(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.float()
    keep = ids.shape[1] - readout.position
    kwargs = {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(module.forward).parameters else {}
    logits = module(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits[:, -keep].double()
    return logits[:, readout.answers[0]] - logits[:, readout.answers[1]]


def _shifted(store: dict, layer: int):
    """A hook fn adding a zero leaf (kept in `store[layer]`) to the tensor it sees: d(value)/d(leaf) is
    d(value)/d(tensor), with the graph through the tensor intact (a detached copy would cut the paths from this
    layer's heads through later layers' heads), and it works when the weights do not require gradients."""
    def fn(tensor):
        leaf = torch.zeros_like(tensor, requires_grad=True)
        store[layer] = (tensor.detach(), leaf)      # nothing edits it in place later: no copy
        return tensor + leaf
    return fn


def _gradient_run(module, ids: torch.Tensor, readout: LogitReadout | None, pooling: Pooling = SHARED,
                  clean_ids=None, corrupt_ids=None):
    """(base run as `runs.BaseRun`, readout value fn, base values [2], distance, dm/dz per layer
    [2, pos, head, d_head], dm/dpattern per layer [2, head, q, k]): one forward of both texts with gradients and
    one backward pass of the sum of both rows' values."""
    layout = hooks.head_layout(module)
    z_store, pattern_store = {}, {}
    grams = attention_function.head_output_grams(layout)     # for the norm-based attention, as exact runs
    with torch.enable_grad(), \
            hooks.edit_z(module, {l: _shifted(z_store, l) for l in range(layout.n_layers)}), \
            hooks.edit_pattern(module, {l: _shifted(pattern_store, l) for l in range(layout.n_layers)}), \
            hooks.cache_layer_inputs(module) as layer_inputs, \
            attention_function.measuring_norms(grams, module) as norms:
        output = _readout_with_grad(module, ids, readout)
        value, base_values, distance = value_function(output.detach(), readout, pooling, clean_ids, corrupt_ids)
        leaves = [z_store[l][1] for l in range(layout.n_layers)] + \
                 [pattern_store[l][1] for l in range(layout.n_layers)]
        grads = torch.autograd.grad(value(output).sum(), leaves)
    n = layout.n_layers
    base = BaseRun(output.detach(), {l: z_store[l][0] for l in range(n)},
                 {l: pattern_store[l][0] for l in range(n)}, layer_inputs,
                 [m.detach() for m in norms.norms] if len(norms.norms) == len(grams) else None)
    return base, value, base_values, distance, grads[:n], grads[n:]


def _estimates(kind: str, base: BaseRun, z_grads, pattern_grads, source: list[int], base_values) -> np.ndarray:
    """Estimated readout value of every head's patched run of `kind`, [layers, heads] (float64): the run's own
    value plus (other run's activation - own) . gradient at the run."""
    run = 1 if kind.endswith("denoising") else 0
    other = 1 - run
    per_layer = []
    for layer in range(len(z_grads)):
        if kind in ("noising", "denoising"):
            own, theirs, grad = base.z[layer][run], base.z[layer][other], z_grads[layer][run]   # [pos, head, d]
            delta = ((theirs - own).double() * grad.double()).sum((0, 2))
        else:
            own, theirs, grad = (base.patterns[layer][run], base.patterns[layer][other],
                                 pattern_grads[layer][run])                                      # [head, q, k]
            if kind.startswith("row_"):
                own, theirs, grad = own[:, source], theirs[:, source], grad[:, source]
            delta = ((theirs - own).double() * grad.double()).sum((1, 2))
        per_layer.append(float(base_values[run]) + delta.cpu().numpy())
    return np.stack(per_layer)


def attribute_ids(module, clean_ids: list[int], corrupt_ids: list[int], source: list[int], target: list[int],
                  kinds, max_rows: int = 512, readout: LogitReadout | None = None, check: bool = True,
                  pooling: Pooling = SHARED) -> PairRun:
    """`engine.patch_ids`'s output (same fields, raw readout values) with the patched runs' values estimated
    to first order instead of run; the sanity rows run exactly. check=False skips them (their values are NaN):
    they cost as much again as the gradient run, and the demo's quick first answer leaves them to the exact
    confirmation that follows it."""
    started = time.perf_counter()
    ids = torch.tensor([clean_ids, corrupt_ids], device=next(module.parameters()).device)
    base, value, base_values, distance, z_grads, pattern_grads = _gradient_run(
        module, ids, readout, pooling, clean_ids, corrupt_ids)
    by_kind = {kind: _estimates(kind, base, z_grads, pattern_grads, source, base_values) for kind in kinds}
    layout = hooks.head_layout(module)
    sanity_rows = plan_rows(layout.n_layers, layout.n_heads, ())     # the sanity rows alone
    readings = (sanity_readings(sanity_rows, patched_values(module, ids, sanity_rows, base, source, max_rows,
                                                            readout, value))
                if check else SanityReadings(float("nan"), float("nan"), float("nan")))
    return PairRun(values=by_kind, clean=float(base_values[0]), corrupt=float(base_values[1]),
                   sanity_readings=readings, distance=distance, seconds=time.perf_counter() - started,
                   method="attribution", summary=clean_attention(base, source, target, layout.n_layers))


# ---- screen: attribution for every head, exact patching for the heads it picks (and a random check) ------

SCREEN_TOP_K = 10        # heads per kind confirmed exactly, by estimated mean effect
SCREEN_RANDOM = 10       # further heads drawn at random from the rest: what the screen would have missed


def screened_heads(estimates: dict[str, np.ndarray], n_heads: int, top_k: int = SCREEN_TOP_K,
                   n_random: int = SCREEN_RANDOM, seed: int = SEED) -> tuple[list[tuple[int, int]], set]:
    """(heads to patch exactly, sorted; the flat indices of those picked at random). `estimates[kind]`:
    per-pair estimated effects [pairs, layers*heads]; per kind the top_k heads by mean estimate, their union,
    plus n_random drawn (seeded) from the heads no kind picked."""
    top = set()
    for values in estimates.values():
        means = values.mean(0)
        top.update(int(i) for i in np.argsort(-means, kind="stable")[:top_k])
    n_all = next(iter(estimates.values())).shape[1]
    rest = np.array(sorted(set(range(n_all)) - top), dtype=int)
    drawn = set(int(i) for i in np.random.default_rng(seed).choice(rest, min(n_random, len(rest)), replace=False))
    return [divmod(i, n_heads) for i in sorted(top | drawn)], drawn


def agreement(estimate: np.ndarray, exact: np.ndarray, n_heads: int) -> dict:
    """How well mean estimates [layers*heads] rank the heads that exact patching measured (exact: NaN where
    not patched): Spearman over those heads, how many of exact's top 5 are in the estimate's top 10 (over all
    heads), and exact's top-5 heads the estimate's top 10 missed."""
    from scipy.stats import spearmanr
    measured = np.flatnonzero(~np.isnan(exact))
    rho = float(spearmanr(estimate[measured], exact[measured])[0]) if len(measured) > 2 else float("nan")
    exact_top5 = measured[np.argsort(-exact[measured], kind="stable")[:5]]
    estimate_top10 = set(np.argsort(-estimate, kind="stable")[:10].tolist())
    missed = [divmod(int(i), n_heads) for i in exact_top5 if int(i) not in estimate_top10]
    return {"spearman": rho, "n_heads_compared": int(len(measured)), "top5_in_top10": len(exact_top5) - len(missed),
            "missed_by_estimate": missed}


def estimate_columns(table, outs: list[PairRun], kinds) -> dict[str, np.ndarray]:
    """Adds each kind's mean estimate over pairs as `{kind}_estimate` to a screen's heads table; returns the
    per-pair estimates [pairs, layers*heads] per kind."""
    estimates = {kind: np.stack([o.estimates[kind].reshape(-1) for o in outs]) for kind in kinds}
    for kind in kinds:
        table[f"{kind}_estimate"] = estimates[kind].mean(0)
    return estimates


def method_notes(method: str) -> list[str]:
    if method == "attribution":
        return ["method attribution: every effect is a first-order estimate (attribution patching: one forward "
                "and one backward pass per pair); no head is named from an estimate"]
    if method == "screen":
        return [f"method screen: first-order estimates for every head ({{kind}}_estimate), then exact patching of "
                f"the top {SCREEN_TOP_K} heads per kind by estimate and {SCREEN_RANDOM} more drawn at random; "
                "effects, CIs, p_fwer (maxT over the heads patched exactly) and named heads come from exact "
                "patching only; the attention-vs-effect correlation is over the estimates (it needs every head)"]
    return []
