"""Many pairs: `patch_heads` patches every usable pair, then per head the mean effect over pairs with a cluster
bootstrap CI and the maxT step-down `p_fwer` (`probing.stats`), the behavioural gate (`gates.choose_gate`),
control pairs (negation: adverb <-> adverb) and the attention-vs-effect rank correlation.

A head is named only when the gate passes, its effect is significant (p_fwer < alpha) and, for negation with
controls, its effect on relation pairs beats its effect on control pairs (paired, clustered, maxT-corrected
sign-flip test).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probing import hooks, stats
from probing.patching.attribution import check_method, confirm_screen, estimate_columns, method_notes
from probing.patching.correlation import attention_vector, rank_correlation
from probing.models import as_loaded
from probing.patching.engine import KINDS, LOGIT_SANITY_TOLERANCE, SANITY_TOLERANCE, check_kinds, run_pairs
from probing.patching.gates import choose_gate
from probing.patching.pairs import ADVERBS, PairSet, _coarse_counts, control_pairs
from probing.patching.readouts import READOUTS, choose_readout, normalise_all


@dataclass
class PatchingResult:
    """Per-head patching effects over a set of pairs. `table`: one row per head (layer, head, each kind's
    mean with CI and p_fwer, control effects and the specificity test, attention); `per_pair[kind]`:
    [pairs, layers*heads]; `gate`: the behavioural gate (`gates.Gate.to_dict()`); `named`: heads named per
    effect (empty when the gate fails)."""
    model: str
    relation: str
    readout: str
    n_layers: int
    n_heads: int
    pair_ids: list[str]
    table: pd.DataFrame
    per_pair: dict[str, np.ndarray]
    gate: dict
    skipped: dict[str, int]
    skipped_pairs: list[tuple[str, str]]
    sanity: dict
    correlation: dict
    named: dict[str, list[tuple[int, int]]]
    control: dict
    seconds: float
    notes: list[str] = field(default_factory=list)
    method: str = "exact"                    # exact | attribution | screen (patch_heads)
    screen: dict = field(default_factory=dict)   # screen: estimate vs exact on the heads patched exactly

    def top(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The k heads with the largest mean effect `by` (default: the first kind run): layer, head, the
        effect with its CI and p_fwer, and the control-pair difference where there is one."""
        by = by or next(iter(self.per_pair))
        if by not in self.per_pair:
            raise ValueError(f"by must be one of {list(self.per_pair)}, got {by!r}")
        columns = ["layer", "head", by, f"{by}_ci_low", f"{by}_ci_high", f"{by}_p_fwer"]
        columns += [c for c in (f"{by}_minus_control",) if c in self.table]
        ranked = self.table.sort_values([by, "layer", "head"], ascending=[False, True, True])
        return ranked[columns].head(k).reset_index(drop=True)

    def ranked(self, by: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The top k heads by `by` as (layer, head, effect) tuples (the summaries' `top` lists)."""
        top = self.top(k, by)
        return [(int(l), int(h), float(v)) for l, h, v in zip(top["layer"], top["head"], top[by])]

    def to_dict(self) -> dict:
        return stats.strict_json({
            "model": self.model, "relation": self.relation, "readout": self.readout,
            "n_layers": self.n_layers, "n_heads": self.n_heads, "n_pairs": len(self.pair_ids),
            "gate": self.gate, "skipped": self.skipped, "sanity": self.sanity, "correlation": self.correlation,
            "named": {k: [list(h) for h in v] for k, v in self.named.items()},
            "top": {kind: [list(t) for t in self.ranked(kind)] for kind in self.per_pair},
            "control": self.control, "seconds": self.seconds, "notes": self.notes, "method": self.method,
            "screen": self.screen})


# ---- The steps of patch_heads -----------------------------------------------------------------------------

def _check_options(n_boot, n_perm, alpha, max_pairs, readout):
    for name, value in (("n_boot", n_boot), ("n_perm", n_perm)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    if max_pairs is not None and (not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be a positive integer, got {max_pairs!r}")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")


def _pairs_to_run(loaded, examples, readout: str, max_pairs):
    """(pairs, the LM or None, the readout's description); ValueError when there is no pair at all."""
    pair_set, lm, readout_text = choose_readout(loaded, examples, readout)
    if max_pairs is not None:
        pair_set = PairSet(pair_set.pairs[:max_pairs], pair_set.skipped)
    if not pair_set.pairs:
        raise ValueError("no clean/corrupt pairs in these examples: patching needs rows paired by meta.pair "
                         "(negation: role negated + control), meta.twin with meta.twin_role, or NEG-136-style "
                         f"rows; skipped: {_coarse_counts(pair_set.skipped)}")
    return pair_set, lm, readout_text


def _tested(values: np.ndarray, statistics) -> tuple[np.ndarray, ...]:
    """`statistics(values)` (a tuple of per-column arrays) on the columns patched exactly, NaN elsewhere:
    method="screen" patches only some heads, and the maxT family is those heads."""
    tested = ~np.isnan(values).any(0)
    out = tuple(np.full(values.shape[1], np.nan) for _ in range(2))
    for full, part in zip(out, statistics(values[:, tested])):
        full[tested] = part
    return out


def _effects_table(outs, kinds, n_layers, n_heads, groups, n_boot, n_perm, seed):
    """(table: one row per head with each kind's mean, CI and p_fwer, and the mean attention when every pair
    has a target; per_pair[kind]: [pairs, layers*heads])."""
    per_pair = {kind: np.stack([o["effects"][kind].reshape(-1) for o in outs]) for kind in kinds}
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers)})
    for index, kind in enumerate(kinds):
        low, high = _tested(per_pair[kind], lambda v: stats.bootstrap_ci(v, n_boot, seed=seed, groups=groups))
        p_fwer = _tested(per_pair[kind], lambda v: stats.sign_flip_tests(v, n_perm, seed + index, groups=groups))[1]
        table[kind], table[f"{kind}_ci_low"], table[f"{kind}_ci_high"] = per_pair[kind].mean(0), low, high
        table[f"{kind}_p_fwer"] = p_fwer
    raw_attention = [o["attention"] for o in outs if o["attention"] is not None]
    if raw_attention and len(raw_attention) == len(outs):
        table["attention"] = np.stack(raw_attention).reshape(len(outs), -1).mean(0)
    raw_norm = [o.get("norm_attention") for o in outs if o.get("norm_attention") is not None]
    if raw_norm and len(raw_norm) == len(outs):     # Kobayashi et al.'s norm, read as the attention is
        table["norm_attention"] = np.stack(raw_norm).reshape(len(outs), -1).mean(0)
    return table, per_pair


def _run_controls(loaded, kept, kinds, max_rows, table, per_pair, groups, n_perm, seed, method="exact", heads=None):
    """Negation's adverb <-> adverb control pairs: adds control effects and the specificity test to `table`.
    Returns (the control summary, per kept pair its control pair's distance (NaN where none) or None)."""
    control_set = control_pairs(kept, loaded)
    control_outs, control_kept, control_set = run_pairs(loaded, control_set, kinds[:2], max_rows, False,
                                                        method=method, heads=heads)
    normalise_all(control_outs, per_pair_scale=True)
    control = {"built_from": "each negation pair's adverb control, with its adverb swapped for the next adverb "
                             f"in {list(ADVERBS)} of as many pieces", "n_pairs": len(control_outs),
               "skipped": control_set.skipped_counts()}
    if not control_outs:
        return control, None
    by_id = {p.id[:-len(':control')]: o for p, o in zip(control_kept, control_outs)}
    matched = [i for i, p in enumerate(kept) if p.id in by_id]
    distances = np.full(len(kept), np.nan)
    for i in matched:
        distances[i] = by_id[kept[i].id]["distance"]
    for index, kind in enumerate(k for k in ("noising", "denoising") if k in kinds):
        ctrl = np.stack([by_id[kept[i].id]["effects"][kind].reshape(-1) for i in matched])
        table[f"control_{kind}"] = ctrl.mean(0)
        diff = per_pair[kind][matched] - ctrl
        p_fwer = _tested(diff, lambda v: stats.sign_flip_tests(v, n_perm, seed + 100 + index,
                                                                groups=[groups[i] for i in matched]))[1]
        table[f"{kind}_minus_control"] = diff.mean(0)
        table[f"{kind}_specific_p_fwer"] = p_fwer
    return control, distances


def _named_heads(table, kinds, alpha: float, gate_passed: bool) -> dict[str, list[tuple[int, int]]]:
    """Per kind, the heads with p_fwer < alpha (and, with controls, specific p_fwer < alpha), largest effect
    first; none when the gate fails."""
    named = {}
    for kind in kinds:
        column = f"{kind}_specific_p_fwer" if f"{kind}_specific_p_fwer" in table else f"{kind}_p_fwer"
        significant = table[(table[f"{kind}_p_fwer"] < alpha) & (table[column] < alpha)] if gate_passed else table[:0]
        named[kind] = [(int(r.layer), int(r.head)) for r in significant.sort_values(kind, ascending=False).itertuples()]
    return named


def _sanity(outs, scale, logit_readout: bool) -> dict:
    """The sanity checks over all pairs; RuntimeError when they fail (the hooks do not patch what they should)."""
    sanity = {"own_activations_max_abs": float(max(max(o["sanity"]["own_noising_max_abs"],
                                                        o["sanity"]["own_denoising_max_abs"]) for o in outs)),
              "embedding_denoising_max_error": float(max(abs(o["sanity"]["embedding_denoising"] - 1) for o in outs))}
    if scale is not None and abs(scale) <= 1e-12:
        sanity["note"] = "the mean clean - corrupt difference is 0: effects are not meaningful"
    if not logit_readout:
        sanity["passed"] = bool(sanity["own_activations_max_abs"] <= SANITY_TOLERANCE
                                and sanity["embedding_denoising_max_error"] <= SANITY_TOLERANCE)
    else:
        # float32 logits of a large vocabulary differ by ~1e-5 between batch sizes (other GEMM kernels): the
        # check is on the raw logit difference, in logits
        sanity["max_abs_error_logits"] = float(max(max(abs(o["clean"] - o["own_clean"]), abs(o["own_corrupt"] - o["corrupt"]),
                                                       abs(o["embedding"] - o["clean"])) for o in outs))
        sanity["tolerance_logits"] = LOGIT_SANITY_TOLERANCE
        sanity["passed"] = bool(sanity["max_abs_error_logits"] <= LOGIT_SANITY_TOLERANCE)
    if not sanity["passed"]:
        raise RuntimeError(f"patching sanity checks failed: {sanity}; the hooks do not patch what they should")
    return sanity


def _notes(readout_text, scale, alpha, control, logit_readout: bool, controls: bool, relation: str) -> list[str]:
    notes = [f"readout: {readout_text}; "
             + ("each pair's effects divided by its own clean - corrupt difference (clean = 1, corrupt = 0)"
                if scale is None else f"effects divided by the mean clean - corrupt difference over pairs "
                f"({scale:.4g}), so clean = 1 and corrupt = 0 on average"),
             f"named heads: p_fwer < {alpha} (maxT over all heads, one-sided effect > 0)"
             + (" and, for negation, effect > control-pair effect at p_fwer < alpha" if control else "")
             + "; none are named when the behavioural gate fails"]
    if logit_readout and controls and relation == "negation":
        notes.append("no adverb <-> adverb control pairs with the logit readout: the answers' contrast is the "
                     "control (an adverb swap does not change which answer is true)")
    return notes


def patch_heads(model, examples, *, kinds=KINDS, readout: str = "auto", attention_scores=None,
                controls: bool = True, n_boot: int = 1000, n_perm: int = 10000, alpha: float = 0.05, seed: int = 0,
                max_pairs: int | None = None, max_rows: int = 512, progress: bool = False,
                method: str = "exact") -> PatchingResult:
    """Noising and denoising effects of every head (and of its pattern, and of its source rows) on the minimal
    pairs in `examples`, with CIs, maxT p_fwer, the behavioural gate, control pairs (negation: adverb <->
    adverb) and the attention-vs-effect rank correlation.

    readout: "embedding" (mean-pooled final hidden states), "logits" (the LM's logit difference between the
    two answers of NEG-136-style rows: meta context_neg, target_aff, target_neg) or "auto" (logits when the
    rows have answers and the model a trained LM head). Control pairs run with the embedding readout only.
    attention_scores: optional per-head scores to correlate with (a heads table with layer, head and one score
    column named in `attention_scores.attrs["score"]`, or a [layers, heads] array); without it, the clean
    run's attention from the source word to the target word is used.
    method: "exact" (every head patched), "attribution" (first-order estimates for every head, no head named:
    `attribution.py`) or "screen" (estimates for every head, then exact patching of the top heads by estimate
    plus a random sample of the rest; only those are tested and named; `{kind}_estimate` columns and `screen`
    hold estimate vs exact)."""
    started = time.perf_counter()
    kinds = check_kinds(kinds)
    _check_options(n_boot, n_perm, alpha, max_pairs, readout)
    loaded = as_loaded(model)
    layout = hooks.head_layout(loaded)   # fail early on an unsupported architecture
    pair_set, lm, readout_text = _pairs_to_run(loaded, examples, readout, max_pairs)
    relation = pair_set.pairs[0].relation
    method = check_method(method)
    outs, kept, pair_set = run_pairs(loaded, pair_set, kinds, max_rows, progress, lm,
                                     method="exact" if method == "exact" else "attribution")
    if not outs:
        raise ValueError(f"none of the {len(pair_set.skipped)} pairs is usable: {pair_set.skipped_counts()}")
    scale = normalise_all(outs, per_pair_scale=lm is None)
    heads, screen = None, {}
    if method == "screen":
        outs, heads, screen = confirm_screen(loaded, kept, outs, kinds, max_rows, progress, lm, layout.n_heads, seed)
    groups = [p.group or p.id for p in kept]
    table, per_pair = _effects_table(outs, kinds, layout.n_layers, layout.n_heads, groups, n_boot, n_perm, seed)
    control, control_distances = {}, None
    if controls and relation == "negation" and lm is None:
        control, control_distances = _run_controls(loaded, kept, kinds, max_rows, table, per_pair, groups,
                                                   n_perm, seed, "attribution" if method == "attribution"
                                                   else "exact", heads)
    gate = choose_gate(loaded, kept, outs, logit_readout=lm is not None, control_distances=control_distances,
                       n_boot=n_boot, seed=seed, groups=groups)
    # screen: the correlation needs every head, so it is over the estimates (said in the notes)
    effects_over_all_heads = estimate_columns(table, outs, kinds) if method == "screen" else per_pair
    score, score_name = attention_vector(attention_scores, table, layout.n_layers, layout.n_heads)
    correlation = {} if score is None else {
        kind: {"attention_score": score_name, **rank_correlation(score, effects_over_all_heads[kind], n_boot,
                                                                 seed, groups)}
        for kind in kinds if kind in ("noising", "denoising")}
    return PatchingResult(
        model=loaded.name, relation=relation, readout=readout_text, n_layers=layout.n_layers,
        n_heads=layout.n_heads, pair_ids=[p.id for p in kept], table=table, per_pair=per_pair, gate=gate.to_dict(),
        skipped=_coarse_counts(pair_set.skipped), skipped_pairs=pair_set.skipped,
        sanity=_sanity(outs, scale, lm is not None), correlation=correlation,
        named=_named_heads(table, kinds, alpha, gate.passed and method != "attribution"), control=control,
        seconds=round(time.perf_counter() - started, 1), method=method, screen=screen,
        notes=_notes(readout_text, scale, alpha, control, lm is not None, controls, relation) + method_notes(method))
