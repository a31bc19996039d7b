"""Writers for `analysis ablate`: ablation.json, ablation.csv (one row per head set and measure),
ablation.png (each set's damage against its layer-matched random sets) and ablation.md, each written atomically."""
from __future__ import annotations

from pathlib import Path

from probing.ablation import AblationResult
from probing.outputs import atomic_write, write_json, write_text

ABLATION_FILES = ["ablation.json", "ablation.csv", "ablation.png", "ablation.md"]


def write_ablation_outputs(result: AblationResult, out: Path, extra: dict | None = None) -> None:
    """The four files; `extra` (e.g. how the heads were chosen) joins ablation.json."""
    out = Path(out)
    write_json(out / "ablation.json", {**result.to_dict(), **(extra or {})})
    atomic_write(out / "ablation.csv", lambda tmp: result.table.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(out / "ablation.png", lambda tmp: save_ablation_figure(result, tmp))
    write_text(out / "ablation.md", ablation_markdown(result, extra))


def save_ablation_figure(result: AblationResult, path) -> None:
    """One panel per (head set, measure) with random draws: histogram of the random sets' effects, the set marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in result.table.itertuples() if r.n_random > 0]
    n_cols = min(3, max(len(rows), 1))
    n_rows = max(1, -(-len(rows) // n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 3.6 * n_rows), squeeze=False)
    draws = result.random_effects
    for ax, row in zip(axes.flat, rows):
        effects = draws[(draws.head_set == row.head_set) & (draws.measure == row.measure)]["effect"]
        ax.hist(effects, bins=20, color="0.75", edgecolor="0.4", label=f"{row.n_random} layer-matched random sets")
        ax.axvline(0, color="0.3", linestyle=":", linewidth=1)
        ax.axvline(row.effect, color="tab:red", linewidth=2, label=f"{row.head_set} ({row.heads}), p={row.p_vs_random:.3f}")
        ax.set_title(row.title, fontsize=9)
        ax.set_xlabel("effect: ablated - no ablation (mean over examples)", fontsize=8)
        ax.set_ylabel("random sets", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(f"Head ablation ({result.mode}) in {result.model}: head sets vs layer-matched random sets", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def ablation_markdown(result: AblationResult, extra: dict | None = None) -> str:
    """The result in words: which heads and how chosen, one table row per set and measure, verdicts, notes."""
    lines = [f"# Head ablation in `{result.model}`", "",
             f"{result.mode} ablation; {result.draws} layer-matched random sets per head set (seed {result.seed}); "
             f"{result.counts}; {result.seconds:.0f} s.", "", "## Head sets", ""]
    for s in result.head_sets:
        lines.append(f"- **{s.name}** ({s.relation}): {' '.join(f'{l}-{h}' for l, h in s.heads)}"
                     + (f"; chosen by {s.chosen_by}" if s.chosen_by else ""))
    if extra and extra.get("selection"):
        lines += ["", f"Selection: {extra['selection']}"]
    lines += ["", "## Effects", "",
              "Effect = mean over examples of (ablated - no ablation), 95% bootstrap CI over examples (pairs). "
              "Random: the layer-matched random sets' mean effect and the 2.5-97.5 percentiles of their effects. "
              "p vs random = (1 + #random sets with damage >= the set's damage) / (1 + #draws), damage = the effect "
              "signed so that losing the relation is positive (here: a decrease).", "",
              "| head set | measure | n | no ablation | effect [95% CI] | random mean [2.5%, 97.5%] | p vs random |",
              "|---|---|---|---|---|---|---|"]
    for r in result.table.itertuples():
        random = ("-" if r.n_random == 0 else
                  f"{r.random_effect_mean:+.4f} [{r.random_effect_p2_5:+.4f}, {r.random_effect_p97_5:+.4f}]")
        p = "-" if r.n_random == 0 else f"{r.p_vs_random:.3f}"
        lines.append(f"| {r.head_set} | {r.measure} | {r.n} | {r.baseline:.4f} | {r.effect:+.4f} "
                     f"[{r.effect_ci_low:+.4f}, {r.effect_ci_high:+.4f}] | {random} | {p} |")
    lines += ["", "## Verdicts", ""]
    lines += [f"- **{r.head_set}, {r.title}**: {r.verdict}" for r in result.table.itertuples()]
    if result.skipped:
        lines += ["", "## Skipped", ""] + [f"- {reason}" for reason in result.skipped.values()]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes] + ["", "![ablation](ablation.png)", ""]
    return "\n".join(lines)
