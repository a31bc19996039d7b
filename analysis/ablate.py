"""`python -m analysis ablate`: knock out the top-k negation and coreference heads, raw-attention heads and random
heads, and write ablation.json, ablation.csv, ablation.png and ablation.md to the output folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probing.ablation import DEFAULT_MODE, MODES, AblationResult, run_ablation
from probing.report.outputs import atomic_write, prepare_out_dir, write_json, write_text

ABLATION_FILES = ["ablation.json", "ablation.csv", "ablation.png", "ablation.md"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="minilm (default), mpnet, gemma-270m, a hub id or a path")
    parser.add_argument("--k", type=int, default=3, help="heads knocked out per condition (default 3)")
    parser.add_argument("--draws", type=int, default=20,
                        help="random k-head sets for the null distribution (default 20)")
    parser.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                        help="zero (default): the head's output slice is set to 0; "
                             "mean: set to its mean over the texts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random head sets and bootstraps")
    parser.add_argument("--sweep-ks", default="1,2,3,4,5",
                        help="comma-separated k values for the sweep (default 1,2,3,4,5; 'none' for the main k only)")
    parser.add_argument("--sweep-draws", type=int, default=10,
                        help="random draws per sweep k other than --k (default 10)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N pairs / examples / items of each set (a quick check, not a result)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding NEG-136 (default: $PROBING_DATA_ROOT or ../shared/data)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help="overwrite results already in --out")


def _parse_ks(text: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]; 'none' or '' -> []."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--sweep-ks must be comma-separated integers such as 1,2,3, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    out = prepare_out_dir(args.out, ABLATION_FILES, args.force)
    result = run_ablation(args.model or "minilm", k=args.k, draws=args.draws, mode=args.mode, seed=args.seed,
                          data_root=args.data_root, sweep_ks=_parse_ks(args.sweep_ks), sweep_draws=args.sweep_draws,
                          n_boot=args.n_boot, limit=args.limit, progress=True)
    write_ablation_outputs(result, out)
    for name, text in result.verdicts().items():
        print(f"{name}: {text}")
    for reason in result.skipped.values():
        print(f"skipped: {reason}")
    print(f"took {result.seconds:.0f} s; wrote {', '.join(str(out / f) for f in ABLATION_FILES)}", file=sys.stderr)
    return 0


def write_ablation_outputs(result: AblationResult, out: Path) -> None:
    """ablation.json, ablation.csv, ablation.png and ablation.md, each written atomically."""
    out = Path(out)
    write_json(out / "ablation.json", result.to_dict())
    atomic_write(out / "ablation.csv", lambda tmp: result.rows.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(out / "ablation.png", lambda tmp: save_ablation_figure(result, tmp))
    write_text(out / "ablation.md", ablation_markdown(result))


def _heads(heads) -> str:
    return ", ".join(f"{layer}-{head}" for layer, head in heads) or "none"


def save_ablation_figure(result: AblationResult, path) -> None:
    """One panel per measure: histogram of the random draws' effects, the targeted and raw-attention sets marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    measures = [m for m in result.measures.values() if "random" in m]
    n_cols = min(3, max(len(measures), 1))
    n_rows = max(1, -(-len(measures) // n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 3.6 * n_rows), squeeze=False)
    for ax, measure in zip(axes.flat, measures):
        ax.hist(measure["random"]["effects"], bins=15, color="0.75", edgecolor="0.4",
                label=f"{measure['random']['n_draws']} random {result.k}-head sets")
        ax.axvline(0, color="0.3", linestyle=":", linewidth=1)
        for entry in measure["conditions"].values():
            if entry["relation"] != measure["relation"]:
                continue
            targeted = entry["kind"] == "targeted"
            color, name = ("tab:red", "targeted") if targeted else ("tab:orange", "raw attention")
            ax.axvline(entry["effect"], color=color, linewidth=2, linestyle="-" if targeted else "--",
                       label=f"{name} ({_heads(entry['heads'])}), p={entry['p_vs_random']:.2f}")
        ax.set_title(measure["title"], fontsize=9)
        ax.set_xlabel("effect: ablated - no ablation (mean over examples)", fontsize=8)
        ax.set_ylabel("random draws", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(measures):]:
        ax.axis("off")
    fig.suptitle(f"Head ablation ({result.mode}) in {result.model}: top-{result.k} heads vs random heads", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _ci(value: float, ci) -> str:
    return f"{value:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _measure_table(measure: dict) -> list[str]:
    """The conditions of one measure: mean, effect vs no ablation with CIs, rank among the random draws."""
    base = measure["baseline"]
    lines = [f"### {measure['title']}", "", f"{measure['description']}; n = {measure['n']}.", "",
             "| condition | heads | mean [95% CI] | effect vs none [95% CI] | random draws at least as damaging "
             "| p vs random |",
             "|---|---|---|---|---|---|",
             f"| no ablation | - | {base['mean']:.4f} [{base['ci'][0]:.4f}, {base['ci'][1]:.4f}] | - | - | - |"]
    ordered = sorted(measure["conditions"].values(),
                     key=lambda c: (c["relation"] != measure["relation"], c["kind"] != "targeted"))
    for c in ordered:
        off_target = "" if c["relation"] == measure["relation"] else " (other relation)"
        rank = (f"{c['n_random_at_least_as_damaging']} of {measure['random']['n_draws']}"
                if "random" in measure else "-")
        p = f"{c['p_vs_random']:.3f}" if "p_vs_random" in c else "-"
        lines.append(f"| {c['label']}{off_target} | {_heads(c['heads'])} | {c['mean']:.4f} [{c['ci'][0]:.4f}, "
                     f"{c['ci'][1]:.4f}] | {_ci(c['effect'], c['effect_ci'])} | {rank} | {p} |")
    if "random" in measure:
        r = measure["random"]
        spread = r["effect_2.5_97.5_percent_of_draws"]
        lines.append(f"| random {measure['k']}-head sets ({r['n_draws']} draws) | drawn | - | "
                     f"{_ci(r['effect_mean'], r['effect_ci'])}; draws' 95% range [{spread[0]:+.4f}, {spread[1]:+.4f}] "
                     "| - | - |")
    return lines + ["", f"**Verdict.** {measure['verdict']}", ""]


def _lm_paragraph(result: AblationResult) -> list[str]:
    """Ettinger's (2020) NEG-136 numbers in one paragraph: true-completion accuracy with and without ablation."""
    aff, neg = result.measures.get("lm_affirmative_correct"), result.measures.get("lm_negated_correct")
    if not (aff and neg):
        return []
    key = f"k{result.k}:negation:targeted"

    def share(measure: dict, condition: str | None) -> str:
        value = measure["baseline"]["mean"] if condition is None else measure["conditions"][condition]["mean"]
        return f"{100 * value:.0f}%"

    text = (f"Without ablation the true completion wins in {share(aff, None)} of affirmative contexts and "
            f"{share(neg, None)} of negated contexts (n = {aff['n']} items); with the top-{result.k} negation heads "
            f"knocked out: {share(aff, key)} and {share(neg, key)}.")
    if "random" in neg:
        mean_random = neg["baseline"]["mean"] + neg["random"]["effect_mean"]
        text += f" Random {result.k}-head sets give {100 * mean_random:.0f}% on negated contexts on average."
    return ["## NEG-136 language-model test (Ettinger 2020)", "", text, ""]


def _sweep_table(result: AblationResult) -> list[str]:
    """Targeted, raw and mean-random effects per k for each measure."""
    if len(result.sweep_ks) < 2:
        return []
    lines = ["## Sweep over k", "",
             f"Random draws per k: {result.draws} at k = {result.k}, {result.sweep_draws} elsewhere. Effects are "
             "mean differences from no ablation; p is the empirical p-value against that k's random draws.", "",
             "| measure | k | targeted effect (p) | raw-attention effect (p) | mean random effect |",
             "|---|---|---|---|---|"]
    p = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for entry in result.sweep:
        random_mean = entry.get("random_effect_mean")
        lines.append(f"| {entry['measure']} | {entry['k']} | {entry['targeted_effect']:+.4f} "
                     f"({p(entry.get('targeted_p_vs_random'))}) | "
                     f"{entry['raw_effect']:+.4f} ({p(entry.get('raw_p_vs_random'))}) | "
                     f"{'-' if random_mean is None else f'{random_mean:+.4f}'} |")
    return lines + [""]


def ablation_markdown(result: AblationResult) -> str:
    """The result in words: setup, the plain verdicts, each measure's table, the sweep, what was skipped."""
    lines = [f"# Head ablation in `{result.model}`", "",
             f"{result.n_layers} layers x {result.n_heads} heads (0-indexed, written layer-head); k = {result.k} heads "
             f"per condition; {result.mode} ablation; {result.draws} random draws (seed {result.seed}); "
             f"{result.seconds:.0f} s.", "", "Heads knocked out:", ""]
    for relation, ranking in result.rankings.items():
        lines.append(f"- {relation}: top-{result.k} by {ranking['main_score']} "
                     f"{_heads(ranking['top_by_main_score'][:result.k])}; top-{result.k} by mean_attention "
                     f"{_heads(ranking['top_by_mean_attention'][:result.k])} (ranking: {ranking['source']})")
    lines += ["", "## Verdicts", ""]
    lines += [f"- **{m['title']}**: {m['verdict']}" for m in result.measures.values()]
    lines += ["", "## Effects", "",
              "Effect = mean over examples of (ablated - no ablation), 95% percentile-bootstrap CI over examples "
              "(pairs). *p vs random* = (1 + #random draws with damage >= the condition's damage) / (1 + #draws), "
              "where damage is the effect signed so that losing the relation is positive (here: a decrease).", ""]
    for measure in result.measures.values():
        lines += _measure_table(measure)
    lines += _lm_paragraph(result)
    lines += _sweep_table(result)
    if result.skipped:
        lines += ["## Skipped", ""] + [f"- {reason}" for reason in result.skipped.values()] + [""]
    lines += ["## Notes", ""] + [f"- {note}" for note in result.notes]
    lines += ["- the smallest possible p vs random is 1 / (1 + #draws)"
              f" = {1 / (1 + result.draws):.3f} here", "", "![ablation](ablation.png)", ""]
    return "\n".join(lines)
