"""Head-score reports: the summary, the heatmap PNG and the Markdown that `analysis heads` and the demo write.

Every file is written atomically (see `probing.outputs`).
"""
from __future__ import annotations

from pathlib import Path

from probing.outputs import atomic_write, write_json, write_text

HEAD_FILES = ["heads.csv", "summary.json", "heatmap.png", "report.md"]
CAVEAT = ("Attention weights show where a head looks, not why the model decides what it decides "
          "(Jain & Wallace 2019; Wiegreffe & Pinter 2019): a high score is a lead for ablation and "
          "probing, not an explanation.")


def run_heads(data: str, model: str | None, out: Path, relation: str | None = None, data_root=None,
              skip_bad: bool = False, limit: int | None = None, renormalize: bool = False,
              batch_tokens: int = 4096, n_boot: int = 1000, n_perm: int = 10000, progress: bool = False,
              device: str | None = None, dtype: str | None = None, parallel: bool = False) -> dict:
    """Load the data, score every head, write the four head files to `out`; return the summary.

    parallel=True (inside `accelerate launch`) shards the scoring; only the main process writes files.
    """
    import sys
    from probing.examples import load_examples
    from probing.heads import score_heads
    from probing.models import load_model
    examples, load_report = load_examples(data, data_root=data_root, skip_bad=skip_bad, limit=limit)
    if progress:
        print(load_report.summary(), file=sys.stderr)
    if parallel:
        from probing.parallel import is_main_process, process_device
        device = device or str(process_device())
    scores = score_heads(load_model(model, device=device, dtype=dtype), examples, relation=relation,
                         batch_tokens=batch_tokens, renormalize=renormalize, n_boot=n_boot, n_perm=n_perm,
                         progress=progress, parallel=parallel)
    summary = build_summary(scores, data, load_report, renormalize=renormalize)
    if not parallel or is_main_process():
        Path(out).mkdir(parents=True, exist_ok=True)
        write_outputs(Path(out), scores, summary)
    return summary


def build_summary(scores, data_name: str, load_report, renormalize: bool = False, k: int = 5) -> dict:
    """The facts a reader needs to trust the table: model, data, counts, direction, top heads, baselines."""
    from probing.heads import main_score
    table = scores.table
    key = main_score(scores.relation)
    top = scores.top(k)
    columns = [c for c in ("layer", "head", key, f"{key}_ci_low", f"{key}_ci_high", "mean_attention",
                           "accuracy", "next_word_baseline", "control_attention", "paired_difference",
                           "p_value", "p_holm") if c in table]
    columns = list(dict.fromkeys(columns))
    summary = {
        "model": scores.model, "data": data_name, "relation": scores.relation, "direction": scores.direction,
        "layers": scores.n_layers, "heads": scores.n_heads,
        "n_examples": len(scores.examples), "n_controls": len(scores.controls) if scores.controls else 0,
        "n_skipped_alignment": len(scores.skipped), "skipped_alignment": scores.skipped[:50],
        "n_skipped_loading": load_report.n_skipped, "skipped_loading": load_report.skipped[:50],
        "ranked_by": key, "renormalized_without_special_tokens": renormalize,
        "top_heads": top[columns].to_dict(orient="records"),
        "top_heads_by_mean_attention": scores.top(k, by="mean_attention")[columns].to_dict(orient="records"),
        "n_significant_heads_holm": int(table["significant"].sum()),
        "test": str(table["test"].iloc[0]),
    }
    if scores.relation == "negation":
        summary["baselines"] = {"next_word_baseline_mean_over_heads": float(table["next_word_baseline"].mean()),
                                "next_word_baseline_max_over_heads": float(table["next_word_baseline"].max())}
    else:
        summary["baselines"] = {name: float(table[name].iloc[0]) for name in
                                ("nearest_candidate_accuracy", "first_candidate_accuracy", "chance_accuracy")}
    return summary


def write_outputs(out: Path, scores, summary: dict) -> None:
    """heads.csv, summary.json, heatmap.png and report.md, each written atomically."""
    atomic_write(out / "heads.csv", lambda tmp: scores.table.to_csv(tmp, index=False, float_format="%.6g"))
    write_json(out / "summary.json", summary)
    atomic_write(out / "heatmap.png", lambda tmp: save_heatmap(scores, tmp))
    write_text(out / "report.md", report_markdown(scores, summary))


def save_heatmap(scores, path, k: int = 5) -> None:
    """Layer x head heatmap of the main score, the top k heads outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from probing.heads import main_score
    key = main_score(scores.relation)
    grid = scores.table[key].to_numpy().reshape(scores.n_layers, scores.n_heads)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * scores.n_heads, 1.2 + 0.45 * scores.n_layers))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for _, row in scores.top(k).iterrows():
        ax.add_patch(plt.Rectangle((row["head"] - 0.5, row["layer"] - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(scores.n_heads))
    ax.set_yticks(range(scores.n_layers))
    ax.set_title(f"{key} ({scores.direction}), {scores.model}\ntop {k} outlined", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _ci(row, key) -> str:
    return f"{row[key]:.3f} [{row[f'{key}_ci_low']:.3f}, {row[f'{key}_ci_high']:.3f}]"


def report_markdown(scores, summary: dict) -> str:
    """The top heads in words, each against its baseline, with the caveat."""
    lines = [f"# Head scores: {summary['relation']} on {summary['data']}", "",
             f"Model `{summary['model']}` ({summary['layers']} layers x {summary['heads']} heads), "
             f"{summary['n_examples']} examples ({summary['n_skipped_alignment'] + summary['n_skipped_loading']} "
             f"skipped), direction measured: **{summary['direction']}**. Heads are 0-indexed.", ""]
    if scores.relation == "negation":
        lines += ["`selectivity` = `mean_attention` - `next_word_baseline`: how much more the head attends "
                  "from the cue to the next word than from any word to its next word. 95% bootstrap CIs "
                  "in brackets; p from a one-sided paired sign-flip test, Holm-corrected over all heads.", "",
                  "| head | selectivity | mean_attention | next_word_baseline | control_attention | p (Holm) |",
                  "|---|---|---|---|---|---|"]
        for _, row in scores.top(5).iterrows():
            control = f"{row['control_attention']:.3f}" if "control_attention" in row else "n/a"
            lines.append(f"| {row['layer']}-{row['head']} | {_ci(row, 'selectivity')} | "
                         f"{_ci(row, 'mean_attention')} | {row['next_word_baseline']:.3f} | {control} | "
                         f"{row['p_holm']:.2g} |")
        best_raw = scores.top(1, by="mean_attention").iloc[0]
        best_sel = scores.top(1).iloc[0]
        lines += ["", f"The head with the highest raw `mean_attention` is {best_raw['layer']}-{best_raw['head']} "
                  f"({best_raw['mean_attention']:.3f}, baseline {best_raw['next_word_baseline']:.3f}); the most "
                  f"selective is {best_sel['layer']}-{best_sel['head']}."
                  + (f" They differ: the raw leader gives the word after the cue {best_raw['mean_attention']:.3f}, "
                     f"but any word's next word {best_raw['next_word_baseline']:.3f}: mostly a positional habit." if
                     (best_raw['layer'], best_raw['head']) != (best_sel['layer'], best_sel['head']) else "")]
    else:
        b = summary["baselines"]
        lines += [f"`accuracy` = share of examples where the antecedent gets the most attention from the pronoun "
                  f"among the candidates. Baselines: nearest candidate {b['nearest_candidate_accuracy']:.3f}, "
                  f"first candidate {b['first_candidate_accuracy']:.3f}, chance {b['chance_accuracy']:.3f}. "
                  "p from a one-sided paired sign-flip test against the nearest-candidate baseline, "
                  "Holm-corrected over all heads.", "",
                  "| head | accuracy | mean_attention | vs nearest candidate | p (Holm) |", "|---|---|---|---|---|"]
        for _, row in scores.top(5).iterrows():
            lines.append(f"| {row['layer']}-{row['head']} | {_ci(row, 'accuracy')} | {_ci(row, 'mean_attention')} | "
                         f"{row['accuracy'] - b['nearest_candidate_accuracy']:+.3f} | {row['p_holm']:.2g} |")
        best = scores.top(1).iloc[0]
        verdict = ("beats" if best["accuracy_ci_low"] > b["nearest_candidate_accuracy"] else
                   "does not clearly beat")
        lines += ["", f"The best head, {best['layer']}-{best['head']}, {verdict} the nearest-candidate baseline "
                  "(CI low end against the baseline)."]
    lines += ["", f"{summary['n_significant_heads_holm']} of {summary['layers'] * summary['heads']} heads beat "
              "their baseline at p < 0.05 after Holm correction.", "", "![heatmap](heatmap.png)", "",
              f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)


def summary_text(summary: dict) -> str:
    """A short summary for stdout."""
    key = summary["ranked_by"]
    tops = ", ".join(f"{h['layer']}-{h['head']} ({h[key]:.3f})" for h in summary["top_heads"])
    return (f"{summary['model']} | {summary['data']} | {summary['relation']} ({summary['direction']}) | "
            f"{summary['n_examples']} examples\ntop heads by {key}: {tops}\n"
            f"baselines: " + ", ".join(f"{k}={v:.3f}" for k, v in summary["baselines"].items()))
