"""Writers for `analysis patch`: effects.csv, summary.json, patching.png (effect maps beside the attention map,
and the attention-vs-effect scatter) and report.md, each written atomically.

Wording: single-head patching can show that a head's effect beats its control; it cannot show that a head is
unused (other heads can compensate), so the report says "no single-head effect detected with this readout",
never "not used". Too few units (< 30) are said as such, and nothing is named."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probing.outputs import atomic_write, write_json, write_text
from probing.patching import PatchingResult

PATCH_FILES = ["effects.csv", "summary.json", "patching.png", "report.md"]


def write_patching_outputs(result: PatchingResult, out: Path, data: str) -> None:
    out = Path(out)
    summary = {"data": data, **result.to_dict(), "skipped_pairs": [list(s) for s in result.skipped_pairs]}
    write_json(out / "summary.json", summary)
    atomic_write(out / "effects.csv", lambda tmp: result.table.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(out / "patching.png", lambda tmp: save_patching_figure(result, tmp))
    write_text(out / "report.md", patching_markdown(result, data))


def _attention_column(result: PatchingResult) -> tuple[str, np.ndarray] | None:
    table = result.table
    for name in ("attention", "attention_score"):   # the patched pairs' own attention first (same items)
        if name in table:
            return name, table[name].to_numpy()
    return None


def save_patching_figure(result: PatchingResult, path) -> None:
    """Top row: noising and denoising maps (layer x head) and the attention map; bottom: attention vs effect."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shape = (result.n_layers, result.n_heads)
    attention = _attention_column(result)
    maps = [(k, result.table[k].to_numpy()) for k in ("noising", "denoising") if k in result.table]
    if attention:
        maps.append((f"attention ({attention[0]})", attention[1]))
    fig, axes = plt.subplots(2, max(len(maps), 2), figsize=(4.6 * max(len(maps), 2), 7.6), squeeze=False)
    for ax, (title, values) in zip(axes[0], maps):
        image = ax.imshow(values.reshape(shape), cmap="viridis", aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(image, ax=ax, fraction=0.046)
    for ax in axes[0][len(maps):]:
        ax.axis("off")
    for ax, kind in zip(axes[1], ("noising", "denoising")):
        if attention is None or kind not in result.table:
            ax.axis("off")
            continue
        ax.scatter(attention[1], result.table[kind], s=14, color="tab:blue")
        corr = result.correlation.get(kind, {})
        ax.set_title(f"{kind} vs attention: within-layer Spearman {corr.get('spearman', float('nan')):.2f} "
                     f"[{corr.get('ci_low', float('nan')):.2f}, {corr.get('ci_high', float('nan')):.2f}]", fontsize=9)
        ax.set_xlabel(attention[0])
        ax.set_ylabel(f"{kind} effect")
        for r in result.table.sort_values(kind, ascending=False).head(3).itertuples():
            ax.annotate(f"{r.layer}-{r.head}", (getattr(r, attention[0]), getattr(r, kind)), fontsize=7)
    for ax in axes[1][2:]:
        ax.axis("off")
    fig.suptitle(f"Activation patching in {result.model} ({result.relation}, {len(result.pair_ids)} pairs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _heads(heads) -> str:
    return ", ".join(f"{layer}-{head}" for layer, head in heads) or "none"


def _top_rows(result: PatchingResult, kind: str, k: int = 5) -> list[str]:
    table = result.table.sort_values([kind, "layer", "head"], ascending=[False, True, True]).head(k)
    rows = []
    for r in table.itertuples():
        row = r._asdict()
        control = f" | {row[f'control_{kind}']:+.3f} | {row[f'{kind}_specific_p_fwer']:.3f}" \
            if f"control_{kind}" in row else " | - | -"
        rows.append(f"| {kind} | {r.layer}-{r.head} | {row[kind]:+.3f} [{row[f'{kind}_ci_low']:+.3f}, "
                    f"{row[f'{kind}_ci_high']:+.3f}] | {row[f'{kind}_p_fwer']:.3f}{control} |")
    return rows


def _gate_lines(result: PatchingResult) -> list[str]:
    gate = result.gate
    # the gate's own words say what it measured (the readout difference the effects are fractions of)
    text = (f"{gate['measure'][0].upper() + gate['measure'][1:]}: {gate['clean_minus_corrupt']:.4f} "
            f"[{gate['ci'][0]:.4f}, {gate['ci'][1]:.4f}]")
    if "control_mean" in gate:
        low, high = gate["relation_minus_control_ci"]
        text += (f"; on the relation-free control pairs: {gate['control_mean']:.4f}; relation - control "
                 f"{gate['relation_minus_control']:+.4f} [{low:+.4f}, {high:+.4f}]")
    text += f" ({gate['n_pairs']} pairs, {gate['n_units']} units; CI: {gate['ci_method']})."
    if gate.get("too_few"):
        verdict = (f"**Too few**: {gate['n_units']} units, fewer than the 30 this tool needs to name a head; "
                   "the gate fails and nothing is named.")
    elif gate["passed"]:
        verdict = "**Gate passed**: the relation moves the readout more than its control swap does."
    else:
        verdict = "**Gate failed**: there is no behaviour beyond the control to localise, so no head is named."
    return [text + " " + verdict, "", f"({gate['note']})"]


def _named_lines(result: PatchingResult) -> list[str]:
    """Named heads per kind; where none is named, what that shows (and does not)."""
    lines = []
    for kind, heads in result.named.items():
        if heads:
            lines.append(f"- {kind}: {_heads(heads)}")
        elif result.gate.get("too_few"):
            lines.append(f"- {kind}: none (too few units to name a head)")
        elif not result.gate["passed"]:
            lines.append(f"- {kind}: none (the gate failed)")
        else:
            lines.append(f"- {kind}: none: no single-head effect beyond the control pairs detected with this "
                         "readout (other heads may compensate; this does not show the heads are unused)")
    return lines


def _correlation_lines(result: PatchingResult) -> list[str]:
    """Attention vs effect within layers, for the weights and (where measured) the norm-based attention."""
    lines = []
    for label, correlations in (("weight", result.correlation),
                                ("norm", getattr(result, "norm_correlation", {}) or {})):
        for kind, corr in correlations.items():
            # a layer whose effects are all equal has no rank order (row_* in the last layer: the source row
            # only changes the source position, which the default readout leaves out)
            layers = "; ".join(f"L{c['layer']} {c['spearman']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
                               if np.isfinite(c["spearman"]) else f"L{c['layer']} undefined (no spread)"
                               for c in corr.get("per_layer", []))
            p_value = corr.get("p_permutation")
            lines.append(f"- {kind} ({label}): within-layer Spearman {corr['spearman']:+.3f} [{corr['ci_low']:+.3f}, "
                         f"{corr['ci_high']:+.3f}]"
                         + (f", p = {p_value:.2g} under a within-layer head permutation ({corr['n_perm']} draws)"
                            if p_value is not None and np.isfinite(p_value) else "")
                         + f" against {corr['attention_score']}, {corr.get('effects', 'exact effects')} "
                         f"({corr['n_heads']} heads, {corr.get('n_pairs', '?')} pairs; CI resampled: "
                         f"{corr.get('resampled', 'pairs')})"
                         + (f"; per layer: {layers}" if layers else ""))
    return lines


def _screen_lines(result: PatchingResult) -> list[str]:
    """method="screen": how far the first-order estimates agreed with exact patching on the heads patched
    exactly (the top heads by estimate and a random sample of the rest), estimate beside exact."""
    screen = getattr(result, "screen", None) or {}
    if not screen.get("by_kind"):
        return []
    lines = ["", "## Screen: estimate beside exact", "",
             f"Every head was estimated by attribution patching; the top {screen['top_k']} per effect by estimate "
             f"and {screen['n_random']} random others were patched exactly, and only those are tested and named. "
             "Agreement over the heads patched exactly:", ""]
    for kind, agreement in screen["by_kind"].items():
        missed = ", ".join(f"{l}-{h}" for l, h in agreement["missed_by_estimate"])
        lines.append(f"- {kind}: Spearman {agreement['spearman']:+.3f} over {agreement['n_heads_compared']} heads; "
                     f"exact's top 5 in the estimate's top 10: {agreement['top5_in_top10']}/5"
                     + (f" (missed: {missed})" if missed else "")
                     + f"; largest exact effect among the random heads {agreement['largest_exact_among_random']:+.3f}")
    for kind in (k for k in ("noising", "denoising") if f"{k}_estimate" in result.table):
        patched = result.table[result.table[kind].notna()].sort_values(kind, ascending=False).head(10)
        lines += ["", f"| {kind}: head | exact | estimate |", "|---|---|---|"]
        lines += [f"| {int(r['layer'])}-{int(r['head'])} | {r[kind]:+.3f} | {r[f'{kind}_estimate']:+.3f} |"
                  for _, r in patched.iterrows()]
    return lines


def path_lines(paths: dict) -> list[str]:
    """Direct and indirect effects of the traced heads (`probing.patching.paths`), one row per kind and head."""
    if not paths or not paths.get("rows"):
        return []
    lines = ["", "## Direct and indirect effects (path patching)", "",
             "For the named heads and the top 3 per kind: the head's *direct* effect is its patch with every later "
             "attention head frozen at the run's own value, so the change reaches the readout without passing "
             "through a later head (MLPs and layer norms recomputed, as in Wang et al. 2022's path patching; "
             "Goldowsky-Dill et al. 2023); *indirect* = total - direct, what later heads make of it. A head whose "
             "effect is all direct moves the readout by what it writes there (it can carry a word to the "
             "output); an indirect effect is used by later heads. A head of the last layer has no later head: all "
             "of its effect is direct by definition (direct = total, indirect = 0, not tested). 95% CIs over pairs, "
             "clustered; the tests flip signs with maxT over every part and sign of every traced head before the "
             f"last layer ({paths['n_pairs']} pairs, {paths['units']}).", "",
             "| effect | head | total [95% CI] | direct [95% CI] | indirect [95% CI] | where the effect goes |",
             "|---|---|---|---|---|---|"]
    signed = lambda value: "n/a" if value is None else f"{value:+.3f}"     # noqa: E731 (NaN is None in JSON)
    for row in paths["rows"]:
        cell = lambda name: (f"{signed(row[name])} [{signed(row[name + '_ci_low'])}, "      # noqa: E731
                             f"{signed(row[name + '_ci_high'])}]")
        lines.append(f"| {row['kind']} | {row['layer']}-{row['head']} | {cell('total')} | {cell('direct')} | "
                     f"{cell('indirect')} | {row['where']} |")
    return lines


def patching_markdown(result: PatchingResult, data: str) -> str:
    """The result in words: gate first (with its control), sanity checks, named heads, top heads, attention vs
    effect within layers, the control pairs, what was skipped."""
    lines = [f"# Activation patching in `{result.model}` on {data}", "",
             f"{result.relation}; {len(result.pair_ids)} usable pairs; {result.n_layers} layers x {result.n_heads} "
             f"heads (0-indexed, layer-head); readout: {result.readout}; {result.seconds:.0f} s.", "",
             "## Behaviour first", ""]
    lines += _gate_lines(result)
    lines += ["", "## Sanity checks", "",
              f"- patching each run with its own activations: max |effect| = "
              f"{result.sanity['own_activations_max_abs']:.2e} (must be 0)",
              f"- patching the hidden states entering the first layer from the clean run: max |denoising - 1| = "
              f"{result.sanity['embedding_denoising_max_error']:.2e} (must be <= 1e-5)"]
    if "max_abs_error_logits" in result.sanity:
        lines.append(f"- logit readout: max |error| of both checks in raw logits = "
                     f"{result.sanity['max_abs_error_logits']:.2e} (must be <= {result.sanity['tolerance_logits']:g}; "
                     "float32 logits differ by ~1e-5 between batch sizes)")
    lines += ["", "## Heads named (effect > 0 and effect > control effect, both maxT-corrected)", ""]
    lines += _named_lines(result)
    lines += ["", "## Top heads by effect", "",
              "noising = 1 - m(clean run with the head's z from the corrupt run); denoising = m(corrupt run with "
              "the head's z from the clean run); m is the readout normalised so clean = 1, corrupt = 0. 95% CIs "
              "over pairs, clustered; p_fwer: one-sided sign-flip test, Westfall-Young maxT over all heads"
              + ("; the control columns: the same effect on the relation-free control pairs, and the maxT p of "
                 "relation > control (paired by item)." if result.control else
                 "; no control pairs were run, so no head can be named."), "",
              "| effect | head | mean [95% CI] | p_fwer | control effect | p_fwer (> control) |",
              "|---|---|---|---|---|---|"]
    for kind in result.per_pair:
        lines += _top_rows(result, kind)
    lines += path_lines(getattr(result, "paths", None) or {})
    lines += ["", "## Attention vs effect (within layers)", "",
              "Effects grow with depth, so heads are ranked within each layer and the ranks pooled; the score "
              "and the effect come from the same pairs and the CIs resample both.", ""]
    lines += _correlation_lines(result)
    attention = _attention_column(result)
    if attention is not None:
        order = np.argsort(-attention[1], kind="stable")[:5]
        top_attention = [(int(result.table['layer'][i]), int(result.table['head'][i])) for i in order]
        top_effect = {(l, h) for kind in ("noising", "denoising") if kind in result.table
                      for l, h, _ in result.ranked(kind, 5)}
        lines.append(f"- top-5 heads by {attention[0]}: {_heads(top_attention)}; among the top-5 by noising or "
                     f"denoising: {_heads([h for h in top_attention if h in top_effect])}")
    lines += _screen_lines(result)
    if result.control:
        lines += ["", "## Control pairs", "", f"{result.control['n_pairs']} pairs, "
                  f"{result.control['built_from']}; skipped: {result.control['skipped'] or 'none'}."]
    lines += ["", "## Skipped pairs", ""]
    lines += [f"- {reason}: {count}" for reason, count in result.skipped.items()] or ["- none"]
    lines += _row_lines(result.rows)
    lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes] + ["", "![patching](patching.png)", ""]
    return "\n".join(lines)


def _row_lines(rows: dict) -> list[str]:
    """Every row of the data accounted for: patched, or counted with the reason it was not."""
    if not rows:
        return []
    unused = sum(rows["not_patched"].values())
    return (["", "## Rows of the data", "",
             f"{rows['rows']} rows = {rows['patched']} patched (the rows of the usable pairs) + {unused} not "
             "patched, counted here with the reason:", ""]
            + ([f"- {reason}: {count}" for reason, count in rows["not_patched"].items()] or ["- none"]))


def _set_verdict(row, alpha: float = 0.05) -> str:
    """A chosen set's reading in words: k = 1 is its rank; a larger set is above random sets (Holm) or not
    distinguishable from them, with the excess the test could have detected."""
    def number(value, fmt="+.3f"):
        return "-" if value is None or not np.isfinite(value) else format(value, fmt)

    if row.test == "rank":
        return f"rank {row.ranks_in_layer} (a rank, not a test)"
    if np.isfinite(row.p_holm) and row.p_holm < alpha:
        return f"above random sets (p_holm {row.p_holm:.3g})"
    return (f"not distinguishable from random sets (p_holm {number(row.p_holm, '.3g')}; could detect >= "
            f"{number(row.detectable, '.3f')} over the random median)")


def head_sets_markdown(sets) -> str:
    """The `analysis patch --sets` section (a `probing.patching.sets.HeadSetResult`): each chosen set's effect
    with its CI beside layer-matched random sets of the same size (p = (1 + b) / (1 + n), Holm, the effect the
    test could have detected; k = 1 as a rank within its layer), then each whole layer."""
    def number(value, fmt="+.3f"):
        return "-" if value is None or not np.isfinite(value) else format(value, fmt)

    lines = ["## Head sets (compensation)", "",
             f"{sets.n_pairs} pairs; heads patched together, so that other heads cannot make up for one patched "
             f"head. Each chosen set against {sets.n_random} random sets of as many heads per layer (each distinct "
             "set patched once); p_random = (1 + b) / (1 + n), b = random sets whose mean effect is at least as "
             "large (the chosen set itself, when drawn, counts); p_holm: Holm over every k > 1 comparison; "
             "detectable: the random sets' 95th percentile minus their median. k = 1 is read as the head's rank "
             "within its layer. 95% cluster-bootstrap CIs over pairs.",
             "", "| effect | chosen by | k | heads (rank in layer) | mean [95% CI] | random sets: median [2.5%, 97.5%] "
             "| p_random | p_holm | reading |",
             "|---|---|---|---|---|---|---|---|---|"]
    table = sets.table
    for row in table[table["selection"] != "layer"].itertuples():
        lines.append(f"| {row.kind} | {row.selection} | {row.k} | {row.ranks_in_layer} | {number(row.effect)} "
                     f"[{number(row.ci_low)}, {number(row.ci_high)}] | {number(row.random_median)} "
                     f"[{number(row.random_low)}, {number(row.random_high)}] | {number(row.p_random, '.3g')} | "
                     f"{number(row.p_holm, '.3g')} | {_set_verdict(row)} |")
    lines += ["", "Whole layers (every head of the layer patched together):", "",
              "| effect | layer | mean [95% CI] |", "|---|---|---|"]
    for row in table[table["selection"] == "layer"].itertuples():
        lines.append(f"| {row.kind} | {int(row.layer)} | {number(row.effect)} [{number(row.ci_low)}, "
                     f"{number(row.ci_high)}] |")
    lines += [""] + [f"- {note}" for note in sets.notes] + [""]
    return "\n".join(lines)
