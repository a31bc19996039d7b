"""Many pairs: `patch_heads` patches every usable pair and its relation-free control pair (negation: adverb <->
adverb; Winograd twins: a swap that keeps the referent, `pairs.relation_controls`), then per head the mean effect
over pairs with a clustered CI and the maxT step-down `p_fwer` (`probing.stats`), the behavioural gate on the
same pairs (`gates.choose_gate`), and the within-layer attention-vs-effect correlation (`correlation.py`).

A head is named only when (1) the gate passes, (2) its effect is significant (p_fwer < alpha) and (3) its effect
on the relation pairs beats its effect on their control pairs (paired by item, clustered sign flips, maxT over
heads), with at least 30 units; nothing is named from p_fwer alone. Below 50 units the CIs are t-based cluster
intervals. A head not named has shown no single-head effect with this readout: other heads can compensate, so
that does not show it is unused.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probing.defaults import ALPHA, N_BOOT, N_PERM, SEED
from probing import hooks, stats
from probing.patching.attribution import (SCREEN_RANDOM, SCREEN_TOP_K, agreement, check_method,
                                          estimate_columns, method_notes, screened_heads)
from probing.patching.correlation import attention_scores as comparison_score, score_vs_effect
from probing.models import as_loaded
from probing.patching.engine import KINDS, check_kinds, run_pairs, sanity_summary
from probing.patching.gates import choose_gate
from probing.patching.pairs import PairSet, coarse_counts, relation_controls, row_accounting
from probing.patching.paths import PATH_KINDS, heads_to_trace, trace_paths
from probing.patching.professions import CONTROLS_BUILT_FROM, are_profession_pairs, profession_controls
from probing.patching.readouts import (READOUTS, Pooling, SHARED, check_probe_readout, choose_readout, normalise,
                                       normalise_all, pooling_for)
import probing.patching.units as design
from probing.patching.results import PairRun


# A head is named only when its mean effect is at least this share of the clean - corrupt difference: with
# hundreds of pairs, maxT can make an effect of 0.001 significant, and such a head explains nothing.
# (Belongs in probing.defaults, where it moves at the next full regeneration: editing defaults re-keys every report.)
MIN_EFFECT = 0.02


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
    norm_correlation: dict = field(default_factory=dict)   # as `correlation`, for the norm-based attention
    rows: dict = field(default_factory=dict)   # every data row patched or counted unused (`pairs.row_accounting`)
    paths: dict = field(default_factory=dict)  # direct and indirect effects of the traced heads (`paths.PathResult`)

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
            "screen": self.screen, "norm_correlation": self.norm_correlation, "rows": self.rows,
            "paths": self.paths})


# ---- The steps of patch_heads -----------------------------------------------------------------------------

def confirm_screen(loaded, kept: list, estimate_outs: list[PairRun], kinds, max_rows: int, progress: bool, lm,
                   n_heads: int, seed: int = SEED, top_k: int = SCREEN_TOP_K, n_random: int = SCREEN_RANDOM,
                   pooling: Pooling = SHARED):
    """Exact patching of the heads the estimates pick (`screened_heads`) on the same pairs. Returns (the exact
    runs' outputs, normalised, NaN for heads not patched, each with its pair's `estimates`; the heads patched;
    the screen's summary: per kind the agreement of estimate and exact over those heads, and the largest exact
    effect among the randomly drawn heads, i.e. what the screen would have missed)."""
    estimates = {kind: np.stack([o.effects[kind].reshape(-1) for o in estimate_outs]) for kind in kinds}
    heads, drawn = screened_heads(estimates, n_heads, top_k, n_random, seed)
    outs, confirmed, _ = run_pairs(loaded, PairSet(kept, []), kinds, max_rows, progress, lm, heads=heads,
                                   pooling=pooling)
    if [p.id for p in confirmed] != [p.id for p in kept]:
        raise RuntimeError("the screen's exact runs did not keep the same pairs as its estimates")
    normalise_all(outs, per_pair_scale=lm is None and pooling.per_pair_scale)
    for out, estimate in zip(outs, estimate_outs):
        out.estimates = estimate.effects
    summary = {"top_k": top_k, "n_random": len(drawn), "heads_patched_exactly": [list(h) for h in heads],
               "random_heads": [list(divmod(i, n_heads)) for i in sorted(drawn)], "by_kind": {}}
    for kind in kinds:
        exact = np.stack([o.effects[kind].reshape(-1) for o in outs]).mean(0)
        by_kind = agreement(estimates[kind].mean(0), exact, n_heads)
        random_exact = [exact[i] for i in sorted(drawn)]
        by_kind["largest_exact_among_random"] = float(max(random_exact)) if random_exact else None
        summary["by_kind"][kind] = by_kind
    return outs, heads, summary


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


def pairs_to_run(loaded, examples, readout: str, max_pairs, pooling: Pooling | None = None, data_root=None):
    """(pairs, the LM or None, the readout's description); ValueError when there is no pair at all."""
    pair_set, lm, readout_text = choose_readout(loaded, examples, readout, pooling, data_root)
    if max_pairs is not None:
        beyond = [(row, f"in a pair beyond max_pairs={max_pairs}") for pair in pair_set.pairs[max_pairs:]
                  for row in pair.rows]
        pair_set = pair_set.with_pairs(pair_set.pairs[:max_pairs], pair_set.skipped)
        pair_set.unused_rows = pair_set.unused_rows + beyond
    if not pair_set.pairs:
        raise ValueError("no clean/corrupt pairs in these examples: patching needs rows paired by meta.pair "
                         "(negation: role negated + control), meta.twin with meta.twin_role, or NEG-136-style "
                         f"rows; skipped: {coarse_counts(pair_set.skipped)}")
    return pair_set, lm, readout_text


def _tested(values: np.ndarray, statistics, n_out: int = 2) -> tuple[np.ndarray, ...]:
    """`statistics(values)` (a tuple of per-column arrays, then anything else) on the columns patched exactly,
    NaN elsewhere: method="screen" patches only some heads, and the maxT family is those heads."""
    tested = ~np.isnan(values).any(0)
    found = statistics(values[:, tested])
    out = tuple(np.full(values.shape[1], np.nan) for _ in range(n_out))
    for full, part in zip(out, found[:n_out]):
        full[tested] = part
    return out + tuple(found[n_out:])


def _effects_table(outs, kinds, n_layers, n_heads, groups, n_boot, n_perm, seed):
    """(table: one row per head with each kind's mean, CI and p_fwer, and the mean attention when every pair
    has a target; per_pair[kind]: [pairs, layers*heads]; the CI method: the cluster bootstrap, or below 50
    units the t-based cluster interval)."""
    per_pair = {kind: np.stack([o.effects[kind].reshape(-1) for o in outs]) for kind in kinds}
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers)})
    for index, kind in enumerate(kinds):
        low, high, method = _tested(per_pair[kind], lambda v: design.ci(v, n_boot, seed, groups))
        p_fwer = _tested(per_pair[kind], lambda v: stats.sign_flip_tests(v, n_perm, seed + index, groups=groups))[1]
        table[kind], table[f"{kind}_ci_low"], table[f"{kind}_ci_high"] = per_pair[kind].mean(0), low, high
        table[f"{kind}_p_fwer"] = p_fwer
    raw_attention = [o.attention for o in outs if o.attention is not None]
    if raw_attention and len(raw_attention) == len(outs):
        table["attention"] = np.stack(raw_attention).reshape(len(outs), -1).mean(0)
    raw_norm = [o.norm_attention for o in outs if o.norm_attention is not None]
    if raw_norm and len(raw_norm) == len(outs):     # Kobayashi et al.'s norm, read as the attention is
        table["norm_attention"] = np.stack(raw_norm).reshape(len(outs), -1).mean(0)
    return table, per_pair, method


def _run_controls(loaded, kept, kinds, max_rows, lm, pooling: Pooling, scale, method="exact", heads=None,
                  data_root=None):
    """Runs the relation-free control pairs of the kept pairs (negation: adverb <-> adverb; twins: a swap that
    keeps the referent) through every kind. Returns (the control summary, per kept pair its control pair's
    output or None), or ({}, None) for a relation without controls. Control effects are in the same units as the
    relation's: each control pair's own difference (embedding), or the relation pairs' mean difference (logits,
    where a control's own difference is ~0 by design)."""
    built = ((profession_controls(kept, loaded, data_root=data_root), CONTROLS_BUILT_FROM) if are_profession_pairs(kept, loaded)
             else relation_controls(kept, loaded))
    if built is None:
        return {}, None
    control_set, how = built
    control_outs, control_kept, control_set = run_pairs(loaded, control_set, kinds, max_rows, False, lm,
                                                        method=method, heads=heads, pooling=pooling)
    for out in control_outs:
        out.effects, out.sanity = normalise(out, out.difference if scale is None else scale)
    control = {"built_from": how, "n_pairs": len(control_outs), "skipped": coarse_counts(control_set.skipped),
               "ids": [p.id for p in control_kept]}
    by_id = {p.id[:-len(":control")]: o for p, o in zip(control_kept, control_outs)}
    return control, [by_id.get(p.id) for p in kept]


def _specificity(table, per_pair, control_outs, kinds, groups, n_perm, seed) -> int:
    """Adds per kind the control pairs' mean effect, relation - control and its maxT p (paired by item, one-sided
    relation > control, over all heads) to `table`. Returns the number of units the comparison rests on."""
    matched = [i for i, c in enumerate(control_outs) if c is not None]
    if not matched:
        return 0
    matched_groups = design.take(groups, matched)
    for index, kind in enumerate(kinds):
        ctrl = np.stack([control_outs[i].effects[kind].reshape(-1) for i in matched])
        diff = per_pair[kind][matched] - ctrl
        p_fwer = _tested(diff, lambda v: stats.sign_flip_tests(v, n_perm, seed + 100 + index,
                                                                groups=matched_groups))[1]
        table[f"control_{kind}"] = ctrl.mean(0)
        table[f"{kind}_minus_control"] = diff.mean(0)
        table[f"{kind}_specific_p_fwer"] = p_fwer
    return stats.n_units(matched_groups, len(matched))


def _named_heads(table, kinds, alpha: float, gate_passed: bool, control_units: int) -> dict[str, list[tuple[int, int]]]:
    """Per kind, the heads whose effect is significant AND beats the same head's effect on the control pairs
    (maxT over heads for each), both at alpha / (number of kinds) (Bonferroni over the kinds run), and whose
    mean effect is at least MIN_EFFECT, largest effect first. None when the gate fails, without control pairs,
    or with fewer than MIN_UNITS units: nothing is named from p_fwer alone."""
    named = {}
    alpha = alpha / len(kinds)
    for kind in kinds:
        if not gate_passed or control_units < stats.MIN_UNITS or f"{kind}_specific_p_fwer" not in table:
            named[kind] = []
            continue
        significant = table[(table[f"{kind}_p_fwer"] < alpha) & (table[f"{kind}_specific_p_fwer"] < alpha)
                            & (table[kind] >= MIN_EFFECT)]
        named[kind] = [(int(r.layer), int(r.head)) for r in significant.sort_values(kind, ascending=False).itertuples()]
    return named


def _notes(readout_text, scale, alpha, control, ci_method: str, groups, n_kinds: int = 1) -> list[str]:
    units = stats.n_units(list(groups), len(groups))
    notes = [f"readout: {readout_text}; "
             + ("each pair's effects divided by its own clean - corrupt difference (clean = 1, corrupt = 0)"
                if scale is None else f"effects divided by the mean clean - corrupt difference over pairs "
                f"({scale:.4g}), so clean = 1 and corrupt = 0 on average"),
             f"named heads: p_fwer < {alpha}/{n_kinds} (maxT over all heads, one-sided effect > 0; Bonferroni over "
             f"the {n_kinds} kinds run) and effect on the relation pairs > effect on their control pairs at the same "
             f"level (paired by item, maxT), and a mean effect of at least {MIN_EFFECT} (a {MIN_EFFECT:.0%} share of "
             f"the clean - corrupt difference); at least {stats.MIN_UNITS} units; none when the behavioural gate "
             "fails",
             f"CIs: {ci_method}" + (" (small sample: t-based rather than the percentile bootstrap, which "
                                    "undercovers with few clusters)" if units < stats.SMALL_SAMPLE_UNITS else ""),
             f"resampling units: {design.in_words(groups, len(groups))}"
             + ("; the tests (p_fwer, relation > control) flip frames and predicates independently (crossed "
                "sign-flip, maxT over heads) and each CI (the gate's too) is the wider of the frame-clustered and "
                "the two-way interval; the attention-effect correlations resample frames only"
                if design.is_crossed(groups) else ""),
             "single-head patching: a head without an effect here has shown no single-head effect with this "
             "readout; other heads can compensate, so this does not show the head is unused"]
    if not control:
        notes.append("no relation-free control pairs for these pairs: the gate cannot pass and no head is named")
    return notes


def patch_heads(model, examples, *, kinds=KINDS, readout: str = "auto", attention_scores=None,
                controls: bool = True, n_boot: int = N_BOOT, n_perm: int = N_PERM, alpha: float = ALPHA, seed: int = SEED,
                max_pairs: int | None = None, max_rows: int = 512, progress: bool = False,
                method: str = "exact", direction=None, paths: bool = True, data_root=None) -> PatchingResult:
    """Noising and denoising effects of every head (and of its pattern, and of its source rows) on the minimal
    pairs in `examples` and on their relation-free control pairs, with CIs, maxT p_fwer, the behavioural gate and
    the within-layer attention-vs-effect correlation.

    readout: "embedding" (final hidden states averaged over the pieces both texts share, the swapped word left
    out), "all-positions" (averaged over every piece), "logits" (the LM's logit difference between the two
    answers: NEG-136-style rows with meta context_neg, target_aff, target_neg, or a masked LM's twins) or "auto"
    (logits when the rows allow it and the model has a trained LM head, else "embedding").
    attention_scores: optional per-head score to correlate with the effects, [layers, heads] or [pairs, layers,
    heads] (same pairs, resampled with the effects); default: the clean run's attention source -> target on each
    patched pair. controls=False skips the control pairs (then the gate fails and nothing is named).
    method: "exact" (every head patched), "attribution" (first-order estimates for every head, no head named:
    `attribution.py`) or "screen" (estimates for every head, then exact patching of the top heads by estimate
    plus a random sample of the rest; only those are tested and named; `{kind}_estimate` columns and `screen`
    hold estimate vs exact).
    direction: the probe readout's negation direction ([d_model], or a `direction.Direction`); readout "probe"
    needs it, "sentence" reads the model's normalised output (both: encoders without an LM head).
    paths: trace the direct and indirect effects of the named heads and of the top heads per kind
    (`paths.py`; noising and denoising only). data_root: where Winogender's occupation statistics are, for its
    profession pairs (default: the loaders' data root)."""
    started = time.perf_counter()
    kinds = check_kinds(kinds)
    _check_options(n_boot, n_perm, alpha, max_pairs, readout)
    loaded = as_loaded(model)
    layout = hooks.head_layout(loaded)   # fail early on an unsupported architecture
    check_probe_readout(examples, readout)
    pooling = pooling_for(readout, getattr(direction, "vector", direction), getattr(direction, "source", ""))
    pair_set, lm, readout_text = pairs_to_run(loaded, examples, readout, max_pairs, pooling, data_root)
    relation = pair_set.pairs[0].relation
    method = check_method(method)
    run_method = "exact" if method == "exact" else "attribution"
    outs, kept, pair_set = run_pairs(loaded, pair_set, kinds, max_rows, progress, lm, method=run_method,
                                     pooling=pooling)
    if not outs:
        raise ValueError(f"none of the {len(pair_set.skipped)} pairs is usable: {pair_set.skipped_counts()}")
    scale = normalise_all(outs, per_pair_scale=lm is None and pooling.per_pair_scale)
    heads, screen = None, {}
    if method == "screen":
        outs, heads, screen = confirm_screen(loaded, kept, outs, kinds, max_rows, progress, lm, layout.n_heads,
                                             seed, pooling=pooling)
    groups = design.pair_units(kept)      # frames, crossed with predicates where every pair has one
    table, per_pair, ci_method = _effects_table(outs, kinds, layout.n_layers, layout.n_heads, groups, n_boot,
                                                n_perm, seed)
    control, control_outs = ({}, None) if not controls else _run_controls(loaded, kept, kinds, max_rows, lm,
                                                                          pooling, scale, run_method, heads,
                                                                          data_root)
    control_units = 0 if control_outs is None else _specificity(table, per_pair, control_outs, kinds, groups,
                                                                n_perm, seed)
    gate = choose_gate(relation, outs, control_outs, logit_readout=lm is not None, n_boot=n_boot, seed=seed,
                       groups=groups, pooling=pooling.name)
    # screen: the correlation needs every head, so it is over the estimates (said in the notes)
    effects_over_all_heads = estimate_columns(table, outs, kinds) if method == "screen" else per_pair
    on = "exact effects" if method == "exact" else "on estimates (first-order attribution effects)"
    score, score_name = comparison_score(outs, attention_scores, layout.n_layers, layout.n_heads)
    correlation = {} if score is None else {
        kind: {"attention_score": score_name, "effects": on,
               **score_vs_effect(score, effects_over_all_heads[kind], layout.n_layers, layout.n_heads, n_boot, seed,
                                 groups, n_perm)}
        for kind in kinds}
    # the same comparison for the norm-based attention (Kobayashi et al.), on the same pairs
    norms = [o.norm_attention for o in outs]
    norm_correlation = {} if not norms or any(n is None for n in norms) else {
        kind: {"attention_score": "norm-based attention source -> target in the clean run of each patched pair",
               "effects": on, **score_vs_effect(np.stack(norms), effects_over_all_heads[kind], layout.n_layers,
                                                layout.n_heads, n_boot, seed, groups, n_perm)}
        for kind in kinds}
    named = _named_heads(table, kinds, alpha, gate.passed and method != "attribution", control_units)
    traced = {}
    if paths and method != "attribution" and any(k in per_pair for k in PATH_KINDS):
        traced = trace_paths(loaded, kept, per_pair, heads_to_trace(named, table, [k for k in PATH_KINDS
                                                                                   if k in per_pair]),
                             lm=lm, pooling=pooling, scale=scale, groups=groups, n_boot=n_boot, n_perm=n_perm,
                             seed=seed, alpha=alpha, max_rows=max_rows, n_heads=layout.n_heads,
                             n_layers=layout.n_layers).to_dict()
    return PatchingResult(
        model=loaded.name, relation=relation, readout=readout_text, n_layers=layout.n_layers,
        n_heads=layout.n_heads, pair_ids=[p.id for p in kept], table=table, per_pair=per_pair, gate=gate.to_dict(),
        skipped=coarse_counts(pair_set.skipped), skipped_pairs=pair_set.skipped,
        sanity=sanity_summary(outs, scale, lm is not None), correlation=correlation,
        named=named, control=control, seconds=round(time.perf_counter() - started, 1), method=method, screen=screen,
        norm_correlation=norm_correlation, rows=row_accounting(pair_set, kept) or {}, paths=traced,
        notes=_notes(readout_text, scale, alpha, control, ci_method, groups, len(kinds))
        + method_notes(method))
