"""`python -m analysis probe --task coref|negation|layers`: probing classifiers with baselines and controls.

Writes to --out (atomically; existing results are kept unless --force):
- coref:    probe_coref.json, probe_coref.md, probe_coref_accuracy.{csv,png} (probe vs baselines vs control per
            dataset), and per dataset probe_coref_<data>_weights.{csv,png} and probe_coref_<data>_predictions.csv;
- negation: probe_negation.json, probe_negation.md, probe_negation_scores.{csv,png},
            probe_negation_weights.{csv,png}, probe_negation_rank.png (weights vs score_heads selectivity; the
            CSV behind it is the weights CSV), probe_negation_predictions.csv;
- layers:   probe_layers.json, probe_layers.md, probe_layers.{csv,png}.

--data means, per task: coref - each value is evaluated on its own ("gap" = train gap-dev, tune C on
gap-validation, test gap-test; any other name or JSONL = grouped k-fold on meta["group"]); negation - all
values are pooled; layers - all values are pooled and split by relation (negation and coreference probes).
The library functions behind it are `probing.probes.coref_probe`, `negation_probe` and `layer_probe`.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from probing.outputs import atomic_write, prepare_out_dir, write_json, write_text

DEFAULT_DATA = {"coref": ["gap", "builtin-coref"], "negation": ["builtin-negation", "blimp-negation"],
                "layers": ["builtin-negation", "blimp-negation", "builtin-coref"]}
GAP_SPLITS = ("gap-dev", "gap-validation", "gap-test")
# Winogender's meta["group"] is one template; the template with the other answer for the same occupation and
# participant is its minimal pair ("... that he could pay" / "... that he had completed the repair"), so folds
# must keep the occupation together or the twin's opposite label sits in training.
DEFAULT_GROUP_BY = {"winogender": "occupation"}
CAVEAT = ("A probe shows that information is linearly decodable from these features, not that the model uses "
          "it (Hewitt & Liang 2019; Belinkov 2022); compare every number with its baseline and control.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=["coref", "negation", "layers"],
                        help="coref: attention-only antecedent probe; negation: cue probe on adjacent word pairs; "
                             "layers: hidden-state probe per layer")
    parser.add_argument("--data", action="append", default=None,
                        help="repeatable. coref: each value evaluated separately ('gap' = dev/validation/test; "
                             "others grouped k-fold); negation, layers: pooled. Defaults: coref gap + builtin-coref; "
                             "negation builtin-negation + blimp-negation; layers both negation sets + builtin-coref")
    parser.add_argument("--model", default=None, help="minilm (default), mpnet, gemma-270m, a hub id or a path")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the real datasets (default: $PROBING_DATA_ROOT or ../shared/data)")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad rows instead of failing")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N examples of each dataset")
    parser.add_argument("--folds", type=int, default=5, help="grouped cross-validation folds")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (of groups) for the CIs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the control labels")
    parser.add_argument("--batch-tokens", type=int, default=4096, help="padded pieces per batch")
    parser.add_argument("--group-by", default=None,
                        help="meta key whose value defines the coreference CV groups (default: meta['group'], "
                             "and 'occupation' for winogender so both answers of one sentence frame share a fold)")
    parser.add_argument("--force", action="store_true", help="overwrite results already in --out")


def slug(name: str) -> str:
    """A file-name-safe version of a dataset name or path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if name.endswith(".jsonl") else name)


def expected_files(task: str, data: list[str]) -> list[str]:
    """Every file the task writes, so prepare_out_dir can refuse to overwrite any of them."""
    if task == "coref":
        per_data = [f"probe_coref_{slug(d)}_{kind}" for d in data
                    for kind in ("weights.csv", "weights.png", "predictions.csv")]
        return ["probe_coref.json", "probe_coref.md", "probe_coref_accuracy.csv", "probe_coref_accuracy.png"] + per_data
    if task == "negation":
        return ["probe_negation.json", "probe_negation.md", "probe_negation_scores.csv", "probe_negation_scores.png",
                "probe_negation_weights.csv", "probe_negation_weights.png", "probe_negation_rank.png",
                "probe_negation_predictions.csv"]
    return ["probe_layers.json", "probe_layers.md", "probe_layers.csv", "probe_layers.png"]


def run(args: argparse.Namespace) -> int:
    for name in ("folds", "n_boot", "batch_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number")
    data = args.data or DEFAULT_DATA[args.task]
    out = prepare_out_dir(args.out, expected_files(args.task, data), args.force)
    from probing.models import load_model
    loaded = load_model(args.model)
    started = time.time()
    runner = {"coref": run_coref, "negation": run_negation, "layers": run_layers}[args.task]
    written = runner(loaded, data, out, args, started)
    print(f"wrote {', '.join(str(out / f) for f in written)}")
    return 0


def _load(name: str, args) -> list:
    from probing.examples import load_examples
    examples, report = load_examples(name, data_root=args.data_root, skip_bad=args.skip_bad, limit=args.limit)
    print(report.summary(), file=sys.stderr)
    return examples


def _csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def _pct(estimate: dict) -> str:
    return f"{100 * estimate['value']:.1f}% [{100 * estimate['ci_low']:.1f}, {100 * estimate['ci_high']:.1f}]"


def _pts(estimate: dict) -> str:
    return f"{100 * estimate['value']:+.1f} points [{100 * estimate['ci_low']:+.1f}, {100 * estimate['ci_high']:+.1f}]"


# ---- Figures ---------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_head_grid(table: pd.DataFrame, column: str, title: str, path: Path) -> None:
    """Layer x head heatmap of one column of a per-head table."""
    plt = _pyplot()
    n_layers, n_heads = int(table["layer"].max()) + 1, int(table["head"].max()) + 1
    grid = table.sort_values(["layer", "head"])[column].to_numpy().reshape(n_layers, n_heads)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n_heads, 1.4 + 0.45 * n_layers))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def save_bars(frame: pd.DataFrame, group: str, title: str, path: Path) -> None:
    """Horizontal bars of value with CI whiskers, one panel per value of `group`."""
    plt = _pyplot()
    panels = list(dict.fromkeys(frame[group]))
    height = 0.5 + 0.42 * frame.groupby(group).size().max()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), height), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        rows = frame[frame[group] == panel].iloc[::-1]
        errors = np.vstack([rows["value"] - rows["ci_low"], rows["ci_high"] - rows["value"]])
        ax.barh(rows["name"], rows["value"], xerr=errors, color="#4c78a8", capsize=3)
        ax.set_xlim(0, 1)
        ax.set_title(str(panel), fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


# ---- coref -----------------------------------------------------------------------------------------

def run_coref(loaded, data: list[str], out: Path, args, started: float) -> list[str]:
    from probing.probes import coref_probe
    results, timings = {}, {}
    for name in data:
        t0 = time.time()
        kw = dict(n_folds=args.folds, n_boot=args.n_boot, seed=args.seed, batch_tokens=args.batch_tokens,
                  data=name, progress=True)
        if name == "gap":
            train, validation, test = (_load(split, args) for split in GAP_SPLITS)
            kw["data"] = "train gap-dev, tune C on gap-validation, test gap-test"
            result = coref_probe(loaded, train, test, validation, **kw)
        else:
            group_by = args.group_by or DEFAULT_GROUP_BY.get(name)
            result = coref_probe(loaded, [e for e in _load(name, args) if e.relation == "coreference"],
                                 group_by=group_by, **kw)
        timings[name] = round(time.time() - t0, 1)
        results[name] = result
        print(f"coref probe on {name}: accuracy {result.accuracy} ({timings[name]} s)", file=sys.stderr)
        _csv(out / f"probe_coref_{slug(name)}_weights.csv", result.head_weights)
        _csv(out / f"probe_coref_{slug(name)}_predictions.csv", result.predictions)
        save_head_grid(result.head_weights, "weight", f"coref probe weight per head ({name}), {loaded.name}\n"
                       "mean |coef| of pronoun->candidate and candidate->pronoun",
                       out / f"probe_coref_{slug(name)}_weights.png")
    payload = {"task": "coref", "model": loaded.name, "seconds": timings,
               "datasets": {name: r.to_dict() for name, r in results.items()}}
    accuracy = coref_accuracy_table(payload)
    _csv(out / "probe_coref_accuracy.csv", accuracy)
    save_bars(accuracy, "data", f"coreference probe vs baselines, {loaded.name}", out / "probe_coref_accuracy.png")
    write_json(out / "probe_coref.json", payload)
    write_text(out / "probe_coref.md", coref_markdown(payload))
    return expected_files("coref", data)


def coref_accuracy_table(payload: dict) -> pd.DataFrame:
    """One row per (dataset, probe or baseline): value and CI, the CSV behind probe_coref_accuracy.png."""
    rows = []
    for name, result in payload["datasets"].items():
        entries = [("probe", result["accuracy"])] + [(f"baseline: {k}", v) for k, v in result["baselines"].items()]
        entries.append(("control task (vs control labels)", result["control_accuracy"]))
        rows += [{"data": name, "name": label, **estimate} for label, estimate in entries]
    return pd.DataFrame(rows)


def coref_markdown(payload: dict) -> str:
    """The coreference probe's results in words, each number against its baseline and control."""
    lines = [f"# Attention-only coreference probe ({payload['model']})", "",
             "A logistic regression (standard scaling inside the pipeline) on the word-level attention "
             "pronoun->candidate and candidate->pronoun of every head (Clark et al. 2019) scores each candidate; "
             "the highest-scoring candidate is the prediction. 95% CIs resample whole groups (meta['group']).", ""]
    for name, r in payload["datasets"].items():
        b = r["baselines"]
        heads = sorted({f"{l}-{h}" for l, h in r["best_heads"]})
        lines += [f"## {name}", "", f"Scheme: {r['scheme']}. {r['n_test']} test examples, C = "
                  f"{', '.join(f'{c:g}' for c in r['C'])}. ({payload['seconds'][name]} s)", "",
                  "| | accuracy |", "|---|---|", f"| **probe** | **{_pct(r['accuracy'])}** |",
                  f"| chance (mean 1/#candidates) | {100 * b['chance']['value']:.1f}% |",
                  f"| nearest candidate | {_pct(b['nearest_candidate'])} |",
                  f"| first candidate | {_pct(b['first_candidate'])} |",
                  f"| best single head ({', '.join(heads)}; chosen on training data) | {_pct(b['best_single_head'])} |",
                  f"| control task (same probe, control labels) | {_pct(r['control_accuracy'])} |", ""]
        lines.append(_coref_verdict(r))
        lines += _c_sensitivity(r)
        lines += ["", "Top heads by probe weight: "
                  + ", ".join(f"{h['layer']}-{h['head']} ({h['weight']:.3f})" for h in r["top_heads_by_weight"])
                  + f". Here {r['weight_note']}.", "", f"![weights](probe_coref_{slug(name)}_weights.png)", ""]
    lines += ["Control task (Hewitt & Liang 2019): every example's answer is replaced by the candidate position that "
              "a seeded hash of its group picks, drawn from the gold positions' distribution, so the labels keep "
              "their distribution but say nothing about the antecedent. Because folds are grouped, a test group's "
              "control answers were never seen in training. A probe that reads only the candidates' positions "
              "from attention can still reach the share of the most frequent answer position on the control task "
              "(far above chance when the gold position is skewed, as in WinoBias); below chance, it shows the "
              "label imbalance between grouped folds. The real-label accuracy has to beat the control and the "
              "nearest/first-candidate baselines to show more than position.", "",
              "![accuracy](probe_coref_accuracy.png)", "",
              f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)


def _c_sensitivity(r: dict) -> list[str]:
    """How the chosen C compares with the others, and how much the test accuracy depends on C."""
    by_C = r.get("accuracy_by_C") or {}
    lines = []
    if "validation_accuracy" in by_C:
        lines += ["", "Validation accuracy by C (the choice): "
                  + ", ".join(f"C={c}: {100 * v:.1f}%" for c, v in by_C["validation_accuracy"].items()) + "."]
    test = by_C.get("test_accuracy_not_used_for_selection")
    if test:
        best_head = r["baselines"]["best_single_head"]["value"]
        low, high = min(test.values()), max(test.values())
        lines += [f"Sensitivity (test accuracy by C, never used to choose C): {100 * low:.1f}% to {100 * high:.1f}%; "
                  + ("above the best single head for every C." if low > best_head else
                     "**not** above the best single head for every C.")]
    return lines


def _coref_verdict(r: dict) -> str:
    """Plain words: does the probe beat the best single head, the positional baselines and the control?"""
    diff, b = r["probe_minus_best_head"], r["baselines"]
    if diff["ci_low"] > 0:
        head = f"The probe beats the best single head by {_pts(diff)}."
    elif diff["ci_high"] < 0:
        head = f"The probe is **worse** than the best single head ({_pts(diff)})."
    else:
        head = (f"The probe does **not** clearly beat the best single head ({_pts(diff)}; the CI includes 0): "
                "combining heads adds nothing measurable here.")
    best_positional = max(b["nearest_candidate"]["value"], b["first_candidate"]["value"], b["chance"]["value"])
    positional = ("It is above every positional baseline." if r["accuracy"]["ci_low"] > best_positional else
                  "It does **not** clearly beat the best positional baseline (nearest/first candidate, chance).")
    control = (f"Selectivity over the control task: {_pts(r['selectivity'])}."
               + ("" if r["selectivity"]["ci_low"] > 0 else " This is **not** clearly above 0."))
    return " ".join([head, positional, control])


# ---- negation --------------------------------------------------------------------------------------

def run_negation(loaded, data: list[str], out: Path, args, started: float) -> list[str]:
    from probing.probes import negation_probe
    examples = [e for name in data for e in _load(name, args) if e.relation == "negation"]
    result = negation_probe(loaded, examples, n_folds=args.folds, n_boot=args.n_boot, seed=args.seed,
                            batch_tokens=args.batch_tokens, data=" + ".join(data), progress=True)
    payload = {"task": "negation", "model": loaded.name, "seconds": round(time.time() - started, 1),
               "result": result.to_dict()}
    weights = result.head_weights
    scores = negation_score_table(payload["result"])
    _csv(out / "probe_negation_scores.csv", scores)
    _csv(out / "probe_negation_weights.csv", weights)
    _csv(out / "probe_negation_predictions.csv", result.predictions)
    save_bars(scores, "metric", f"negation cue probe vs controls, {loaded.name}", out / "probe_negation_scores.png")
    save_head_grid(weights, "weight", f"negation probe weight per head, {loaded.name}\n"
                   "mean |coef| of w->w+1 and w+1->w", out / "probe_negation_weights.png")
    save_rank_scatter(weights, result.rank_correlation, loaded.is_causal, out / "probe_negation_rank.png")
    write_json(out / "probe_negation.json", payload)
    write_text(out / "probe_negation.md", negation_markdown(payload))
    print(f"negation probe: accuracy {result.accuracy}, F1 {result.f1} ({payload['seconds']} s)", file=sys.stderr)
    return expected_files("negation", data)


def negation_score_table(r: dict) -> pd.DataFrame:
    """Accuracy and F1 of the probe, its controls and the majority baseline: the CSV behind the bar chart."""
    rows = [{"metric": "accuracy", "name": "majority (never a cue)", **r["majority_accuracy"]}]
    for metric in ("accuracy", "f1"):
        rows.append({"metric": metric, "name": "probe (attention)", **r[metric]})
        for control, label in (("positional", "positional control"), ("word_identity", "word-identity control")):
            rows.append({"metric": metric, "name": label, **r["controls"][control][metric]})
    return pd.DataFrame(rows)


def save_rank_scatter(weights: pd.DataFrame, correlation: dict, is_causal: bool, path: Path) -> None:
    """Probe coefficient (measured direction) against score_heads selectivity, one point per head."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    if "score_heads_selectivity" in weights and correlation:
        column = "coef_w+1->w" if is_causal else "coef_w->w+1"
        ax.scatter(weights["score_heads_selectivity"], weights[column], s=14)
        ax.set_xlabel("score_heads selectivity")
        ax.set_ylabel(f"probe {column} (scaled)")
        c = correlation["signed_coef"]
        ax.set_title(f"Spearman rho = {c['rho']:.2f} (p = {c['p_value']:.2g})", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no score_heads comparison", ha="center")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def negation_markdown(payload: dict) -> str:
    """The negation probe in words, with its controls, hard negatives and the head-ranking comparison."""
    r = payload["result"]
    c, s, hard = r["controls"], r["selectivity"], r["hard_pairs"]
    lines = [f"# Negation-cue probe on adjacent word pairs ({payload['model']})", "",
             f"Data: {r['data']}: {r['n_sentences']} sentences, {r['n_pairs']} adjacent word pairs (w, w+1), "
             f"{r['n_cues']} of them start at a negation cue. Features: the word-level attention w->w+1 and "
             f"w+1->w of every head; grouped {r['n_folds']}-fold CV by sentence pair (a negated sentence and its "
             f"control share a fold). 95% CIs resample whole sentence pairs. ({payload['seconds']} s)", "",
             "| | accuracy | F1 |", "|---|---|---|",
             f"| **probe (attention)** | **{_pct(r['accuracy'])}** | **{_pct(r['f1'])}** |",
             f"| majority (never a cue) | {_pct(r['majority_accuracy'])} | 0 |",
             f"| positional control (one-hot position, distance to end, length) | {_pct(c['positional']['accuracy'])} "
             f"| {_pct(c['positional']['f1'])} |",
             f"| word-identity control (hashed one-hot of w) | {_pct(c['word_identity']['accuracy'])} | "
             f"{_pct(c['word_identity']['f1'])} |", "",
             f"Selectivity against the positional control: accuracy {_pts(s['positional']['accuracy'])}, "
             f"F1 {_pts(s['positional']['f1'])}.",
             f"Selectivity against the word-identity control: accuracy {_pts(s['word_identity']['accuracy'])}, "
             f"F1 {_pts(s['word_identity']['f1'])}.", "", _identity_verdict(s["word_identity"]), ""]
    if hard:
        lines += ["**Hard negatives** (the cue vs the substitute adverb at the same position in its control "
                  "sentence):"]
        for key, label in (("probe_accuracy", "probe accuracy on cue and adverb pairs"),
                           ("word_identity_accuracy", "word-identity control on the same pairs"),
                           ("positional_accuracy", "positional control on the same pairs"),
                           ("probe_cue_outscores_adverb", "the probe scores the cue above its own adverb")):
            if key in hard:
                lines.append(f"- {label}: {_pct(hard[key])} (n = {hard[key]['n']})")
        lines.append("")
    rank = r["rank_correlation"]
    if rank:
        sc, ab = rank["signed_coef"], rank["abs_weight"]
        lines += [f"**Probe weights vs single-head ranking** ({rank['against']}, {rank['n_heads']} heads): Spearman "
                  f"rho = {sc['rho']:.2f} (p = {sc['p_value']:.2g}) for the {sc['weight']}; rho = {ab['rho']:.2f} "
                  f"(p = {ab['p_value']:.2g}) for the {ab['weight']}. "
                  + ("The probe leans on the heads that score_heads ranks high."
                     if sc["rho"] > 0.3 and sc["p_value"] < 0.05 else
                     "The probe's weights do **not** follow the single-head ranking closely: a linear probe "
                     "spreads weight over correlated heads, so a head's coefficient is not its own evidence."),
                  "", "![rank](probe_negation_rank.png)", ""]
    lines += ["![scores](probe_negation_scores.png)", "", "![weights](probe_negation_weights.png)", "",
              f"Head weights: {r['weight_note'][0].upper() + r['weight_note'][1:]}. "
              "A cue spanning several tokenizer words (\"didn ' t\") is labelled "
              "at its last word; pairs starting inside it are left out.", "", f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)


def _identity_verdict(selectivity: dict) -> str:
    """Plain words on the word-identity control, the one that matters most for a lexical cue."""
    acc, f1 = selectivity["accuracy"], selectivity["f1"]
    if f1["ci_low"] > 0 and acc["ci_low"] > 0:
        return "The attention probe beats the word-identity control on both accuracy and F1."
    return ("The attention probe does **not** beat a probe that sees only the word w itself (the selectivity CIs "
            "reach 0 or below): \"not\"/\"n't\" are recognisable from their spelling, so these attention features "
            "are not shown to carry anything about negation beyond the word's identity.")


# ---- layers ----------------------------------------------------------------------------------------

def run_layers(loaded, data: list[str], out: Path, args, started: float) -> list[str]:
    from probing.probes import layer_probe
    examples = [e for name in data for e in _load(name, args)]
    results, seconds = {}, {}
    for task in ("negation", "coreference"):
        if not any(e.relation == task for e in examples):
            continue
        t0 = time.time()
        results[task] = layer_probe(loaded, examples, task, n_folds=args.folds, n_boot=args.n_boot, seed=args.seed,
                                    batch_tokens=args.batch_tokens, group_by=args.group_by, progress=True)
        seconds[task] = round(time.time() - t0, 1)
        print(f"layer probe ({task}) done in {seconds[task]} s", file=sys.stderr)
    if not results:
        raise ValueError("the layer probe found neither negation nor coreference examples in --data")
    table = pd.concat([r.table.assign(task=task) for task, r in results.items()], ignore_index=True)
    _csv(out / "probe_layers.csv", table[["task"] + [c for c in table.columns if c != "task"]])
    save_layer_curves(results, loaded.name, out / "probe_layers.png")
    payload = {"task": "layers", "model": loaded.name, "data": data, "seconds": seconds,
               "results": {task: r.to_dict() for task, r in results.items()}}
    write_json(out / "probe_layers.json", payload)
    write_text(out / "probe_layers.md", layers_markdown(payload))
    return expected_files("layers", data)


def save_layer_curves(results: dict, model: str, path: Path) -> None:
    """Accuracy by layer with CI bands, the control task and the majority baseline; one panel per task."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.8), squeeze=False)
    for ax, (task, result) in zip(axes[0], results.items()):
        t = result.table
        for column, label, color in (("accuracy", "probe", "#4c78a8"), ("control_accuracy", "control task", "#e45756")):
            ax.plot(t["layer"], t[column], marker="o", color=color, label=label)
            ax.fill_between(t["layer"], t[f"{column}_ci_low"], t[f"{column}_ci_high"], color=color, alpha=0.2)
        ax.axhline(t["majority_baseline"].iloc[0], color="grey", ls="--", label="majority class")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("accuracy (grouped CV)")
        ax.set_title(f"{task}: {result.label}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"hidden state of the word after the source, {model}", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _row_estimate(row: dict, key: str) -> dict:
    """One per-layer column and its CI as an estimate dict."""
    return {"value": row[key], "ci_low": row[f"{key}_ci_low"], "ci_high": row[f"{key}_ci_high"]}


def layers_markdown(payload: dict) -> str:
    """The layer-wise curves in words: the best layer, layer 0, and the control."""
    lines = [f"# Layer-wise hidden-state probe ({payload['model']})", ""]
    for task, r in payload["results"].items():
        layers = r["layers"]
        best = max(layers, key=lambda row: row["accuracy"])
        first = layers[0]
        lines += [f"## {task}: {r['label']}", "",
                  f"{r['n_examples']} examples in {r['n_groups']} groups, grouped {r['n_folds']}-fold CV; classes "
                  f"{', '.join(r['classes'])}; majority-class accuracy {100 * first['majority_baseline']:.1f}%. "
                  f"({payload['seconds'][task]} s)", "",
                  "| layer | accuracy | control task | selectivity |", "|---|---|---|---|"]
        lines += [f"| {row['layer']} | {_pct(_row_estimate(row, 'accuracy'))} | "
                  f"{_pct(_row_estimate(row, 'control_accuracy'))} | {_pts(_row_estimate(row, 'selectivity'))} |"
                  for row in layers]
        lines += ["", f"Best layer: {best['layer']} ({_pct(_row_estimate(best, 'accuracy'))}). "
                  + (f"Already at layer 0 (embeddings) the probe reaches {_pct(_row_estimate(first, 'accuracy'))}, "
                     "well above the majority class: part of the signal is there before any attention (the word's own "
                     "embedding and position)." if first["accuracy_ci_low"] > first["majority_baseline"] + 0.05 else
                     "At layer 0 (embeddings) the probe is near the majority class: the information arrives through "
                     "the layers."), ""]
        if task == "coreference":
            lines += ["For the built-in set the antecedent's gender is also the pronoun's (he/she/they/it), so this "
                      "probe measures how far the pronoun's gender spreads to the next word, not coreference "
                      "resolution itself.", ""]
        if task == "negation":
            lines += ["The probed word is the same in the negated sentence and its control, so its embedding alone "
                      "cannot tell them apart; only its position can differ (a cue and its substitute adverb may "
                      "have different piece counts), which layer 0 would show through position embeddings.", ""]
        lines += [r["note"], ""]
    lines += ["![layers](probe_layers.png)", "", f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)
