"""The probe reports: Markdown in words, CSVs and figures for the coreference, negation and layer probes.

Each `write_*` takes the library's results and a folder, writes every file atomically and returns the file
names. The Markdown functions take the JSON payload (the results' `to_dict()`), so a report can be rebuilt
from `probe_*.json` alone. Every number stands beside its baseline and its control, and a probe that does not
beat its control is said to, in words.

Files per task:
- coref:    probe_coref.json, probe_coref.md, probe_coref_accuracy.{csv,png}, and per dataset
            probe_coref_<data>_weights.{csv,png} and probe_coref_<data>_predictions.csv;
- negation: probe_negation.json, probe_negation.md, probe_negation_scores.{csv,png},
            probe_negation_weights.{csv,png}, probe_negation_predictions.csv;
- layers:   probe_layers.json, probe_layers.md, probe_layers.{csv,png}.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from probing.outputs import atomic_write, safe_name, write_json, write_text

CAVEAT = ("A probe shows that information is linearly decodable from these features, not that the model uses "
          "it (Hewitt & Liang 2019; Belinkov 2022); compare every number with its baseline and control.")
CONTROL_TASK = ("Control task (Hewitt & Liang 2019), type-level: every word type gets a fixed random value (a "
                "seeded hash) and the control answer follows it, so a probe that can tell word types apart can "
                "memorise it: its *train* accuracy shows the probe's capacity to do so, its *test* accuracy how far "
                "that memory carries to held-out examples that share word types. selectivity = accuracy − "
                "control test accuracy (paired per example).")


def slug(name: str) -> str:
    """A file-name-safe version of a dataset name or path (a .jsonl file by its stem)."""
    return safe_name(Path(name).stem if name.endswith(".jsonl") else name)


def expected_files(task: str, data: list[str]) -> list[str]:
    """Every file the task writes, so an output folder can refuse to overwrite any of them."""
    if task == "coref":
        per_data = [f"probe_coref_{slug(d)}_{kind}" for d in data
                    for kind in ("weights.csv", "weights.png", "predictions.csv")]
        return ["probe_coref.json", "probe_coref.md", "probe_coref_accuracy.csv", "probe_coref_accuracy.png"] + per_data
    if task == "negation":
        return ["probe_negation.json", "probe_negation.md", "probe_negation_scores.csv", "probe_negation_scores.png",
                "probe_negation_weights.csv", "probe_negation_weights.png", "probe_negation_predictions.csv"]
    if task == "layers":
        return ["probe_layers.json", "probe_layers.md", "probe_layers.csv", "probe_layers.png"]
    raise ValueError(f"task must be coref, negation or layers, got {task!r}")


def _csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def pct(estimate: dict) -> str:
    """An estimate dict as a percentage with its CI."""
    if estimate is None or not np.isfinite(estimate["mean"]):
        return "n/a"
    if not np.isfinite(estimate["ci_low"]):
        return f"{100 * estimate['mean']:.1f}%"
    return f"{100 * estimate['mean']:.1f}% [{100 * estimate['ci_low']:.1f}, {100 * estimate['ci_high']:.1f}]"


def pts(estimate: dict) -> str:
    """A difference as points with its CI."""
    if estimate is None or not np.isfinite(estimate["mean"]):
        return "n/a"
    return f"{100 * estimate['mean']:+.1f} points [{100 * estimate['ci_low']:+.1f}, {100 * estimate['ci_high']:+.1f}]"


def _verdict(difference: dict, what: str) -> str:
    """Plain words on a difference: above 0, below 0, or not distinguishable from 0 (its CI includes 0)."""
    if difference is None or not np.isfinite(difference["mean"]):
        return f"{what}: not measurable here."
    if difference["ci_low"] > 0:
        return f"{what}: {pts(difference)}, above 0."
    if difference["ci_high"] < 0:
        return f"{what}: {pts(difference)}, **below** 0."
    return f"{what}: {pts(difference)}; **not** distinguishable from 0."


# ---- Figures ---------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def save_head_grid(table: pd.DataFrame, column: str, title: str, path: Path) -> None:
    """Layer x head heatmap of one column of a per-head table."""
    plt = _pyplot()
    n_layers, n_heads = int(table["layer"].max()) + 1, int(table["head"].max()) + 1
    grid = table.sort_values(["layer", "head"])[column].to_numpy().reshape(n_layers, n_heads)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n_heads, 1.4 + 0.45 * n_layers))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set(xlabel="head", ylabel="layer", xticks=range(n_heads), yticks=range(n_layers))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    _save(fig, path)


def save_bars(frame: pd.DataFrame, group: str, title: str, path: Path) -> None:
    """Horizontal bars of `mean` with CI whiskers (where there is one), one panel per value of `group`."""
    plt = _pyplot()
    panels = list(dict.fromkeys(frame[group]))
    height = 0.5 + 0.42 * frame.groupby(group).size().max()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), height), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        rows = frame[frame[group] == panel].iloc[::-1]
        low = (rows["mean"] - rows["ci_low"]).fillna(0).clip(lower=0)
        high = (rows["ci_high"] - rows["mean"]).fillna(0).clip(lower=0)
        colors = ["#e45756" if "control" in n else "#4c78a8" for n in rows["name"]]
        ax.barh(rows["name"], rows["mean"], xerr=np.vstack([low, high]), color=colors, capsize=3)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlim(min(-0.1, float(rows["ci_low"].min(skipna=True) or 0) - 0.05), 1.02)
        ax.set_title(str(panel), fontsize=9)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def save_layer_curves(payload: dict, path: Path) -> None:
    """Accuracy by layer with CI bands, the control task, the adverb-vs-adverb probe and the majority class."""
    plt = _pyplot()
    results = payload["results"]
    fig, axes = plt.subplots(1, len(results), figsize=(5.4 * len(results), 3.9), squeeze=False)
    for ax, (task, result) in zip(axes[0], results.items()):
        t = pd.DataFrame(result["layers"])
        curves = [("accuracy", "probe", "#4c78a8"), ("control_accuracy", "control task (test)", "#e45756")]
        if "adverb_swap_accuracy" in t:
            curves.append(("adverb_swap_accuracy", "adverb vs adverb (word swap)", "#54a24b"))
        for column, label, color in curves:
            ax.plot(t["layer"], t[column], marker="o", color=color, label=label)
            ax.fill_between(t["layer"], t[f"{column}_ci_low"], t[f"{column}_ci_high"], color=color, alpha=0.2)
        ax.plot(t["layer"], t["control_train_accuracy"], ls=":", color="#e45756", label="control task (train)")
        ax.axhline(t["majority_baseline"].iloc[0], color="grey", ls="--", label="majority class")
        ax.set(ylim=(0, 1.02), xlabel="layer (0 = embeddings)", ylabel="accuracy (grouped CV)")
        ax.set_title(f"{task}: {result['label']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"hidden state of the word after the source, {payload['model']}", fontsize=10)
    _save(fig, path)


# ---- coref -----------------------------------------------------------------------------------------

def write_coref_report(out: Path, results: dict, model: str, seconds: dict) -> list[str]:
    """Every coref file for results {dataset name: CorefProbeResult}; returns the file names."""
    out = Path(out)
    for name, result in results.items():
        _csv(out / f"probe_coref_{slug(name)}_weights.csv", result.head_weights)
        _csv(out / f"probe_coref_{slug(name)}_predictions.csv", result.predictions)
        save_head_grid(result.head_weights, "weight", f"coref probe weight per head ({name}), {model}\n"
                       "mean |coef| of pronoun->candidate and candidate->pronoun",
                       out / f"probe_coref_{slug(name)}_weights.png")
    payload = {"task": "coref", "model": model, "seconds": seconds,
               "datasets": {name: r.to_dict() for name, r in results.items()}}
    accuracy = pd.concat([r.table.assign(data=name) for name, r in results.items()], ignore_index=True)
    _csv(out / "probe_coref_accuracy.csv", accuracy[["data", "name", "mean", "ci_low", "ci_high"]])
    bars = accuracy[~accuracy["name"].str.startswith(("probe -", "selectivity"))]
    save_bars(bars, "data", f"coreference probe vs baselines and control, {model}", out / "probe_coref_accuracy.png")
    write_json(out / "probe_coref.json", payload)
    write_text(out / "probe_coref.md", coref_markdown(payload))
    return expected_files("coref", list(results))


def coref_markdown(payload: dict) -> str:
    """The coreference probe's results in words, each number against its baselines and its control."""
    lines = [f"# Attention-only coreference probe ({payload['model']})", "",
             "A logistic regression (standard scaling inside the pipeline) on the word-level attention "
             "pronoun->candidate and candidate->pronoun of every head (Clark et al. 2019) scores each candidate; "
             "the highest-scoring candidate is the prediction. Folds never split a sentence frame or a twin pair; "
             "95% CIs resample whole fold groups.", ""]
    for name, r in payload["datasets"].items():
        b = r["baselines"]
        heads = sorted({f"{l}-{h}" for l, h in r["best_heads"]})
        lines += [f"## {name}", "", f"Scheme: {r['scheme']}. {r['n_test']} test examples, C = "
                  f"{', '.join(f'{c:g}' for c in r['C'])}. ({payload['seconds'].get(name, '?')} s)", "",
                  "| | accuracy |", "|---|---|", f"| **probe** | **{pct(r['accuracy'])}** |",
                  f"| chance (mean 1/#candidates) | {pct(b['chance'])} |",
                  f"| nearest candidate | {pct(b['nearest_candidate'])} |",
                  f"| first candidate | {pct(b['first_candidate'])} |",
                  f"| best single head ({', '.join(heads)}; chosen on training data) | {pct(b['best_single_head'])} |"]
        if "agreement_rule" in b:
            lines.append(f"| agreement rule (pronoun gender/number/animacy alone; a guess where it does not decide) "
                         f"| {pct(b['agreement_rule'])} |")
        lines += [f"| control task, train (type-level, memorisable) | {100 * r['control_train_accuracy']:.1f}% |",
                  f"| control task, test | {pct(r['control_accuracy'])} |"]
        if r.get("twin_consistency"):
            meaning = ("the twins have opposite answers: 0 for a probe that ignores the flip word"
                       if r["twin_answers_differ"] else "the twins share the answer and differ in the pronoun's "
                       "gender: a probe blind to the stereotype is right on both or on neither")
            lines.append(f"| twin consistency: both twins right ({r['n_twin_pairs']} pairs; {meaning}) | "
                         f"{pct(r['twin_consistency'])} |")
        lines += ["", coref_verdict(r)]
        lines += _c_sensitivity(r)
        lines += ["", "Top heads by probe weight: "
                  + ", ".join(f"{h['layer']}-{h['head']} ({h['weight']:.3f})" for h in r["top_heads_by_weight"])
                  + f". Here {r['weight_note']}.", "", f"![weights](probe_coref_{slug(name)}_weights.png)", ""]
    lines += [CONTROL_TASK + " Coreference: the control answer is the candidate whose word type has the highest "
              "random value.", "", "![accuracy](probe_coref_accuracy.png)", "", f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)


def coref_verdict(r: dict) -> str:
    """Plain words: control, agreement rule, best single head and positional baselines."""
    parts = [_verdict(r["selectivity"], "Selectivity over the control task")
             + ("" if r["beats_control"] else " The probe does **not** beat its control task.")]
    if r.get("probe_minus_agreement"):
        parts.append(_verdict(r["probe_minus_agreement"], "Probe minus the agreement rule")
                     + ("" if r["probe_minus_agreement"]["ci_low"] > 0 else
                        " What the probe gets right here, pronoun agreement alone gets right too."))
    parts.append(_verdict(r["probe_minus_best_head"], "Probe minus the best single head"))
    b = r["baselines"]
    best_positional = max(b["nearest_candidate"]["mean"], b["first_candidate"]["mean"], b["chance"]["mean"])
    parts.append("It is above every positional baseline." if r["accuracy"]["ci_low"] > best_positional else
                 "It does **not** clearly beat the best positional baseline (nearest/first candidate, chance).")
    return " ".join(parts)


def _c_sensitivity(r: dict) -> list[str]:
    """How the chosen C compares with the others, and how much the test accuracy depends on C."""
    by_C = r.get("accuracy_by_C") or {}
    lines = []
    if "validation_accuracy" in by_C:
        lines += ["", "Validation accuracy by C (the choice): "
                  + ", ".join(f"C={c}: {100 * v:.1f}%" for c, v in by_C["validation_accuracy"].items()) + "."]
    test = by_C.get("test_accuracy_not_used_for_selection")
    if test:
        best_head = r["baselines"]["best_single_head"]["mean"]
        low, high = min(test.values()), max(test.values())
        lines += [f"Sensitivity (test accuracy by C, never used to choose C): {100 * low:.1f}% to {100 * high:.1f}%; "
                  + ("above the best single head for every C." if low > best_head else
                     "**not** above the best single head for every C.")]
    return lines


# ---- negation --------------------------------------------------------------------------------------

def write_negation_report(out: Path, result, seconds: float) -> list[str]:
    """Every negation file for a NegationProbeResult; returns the file names."""
    out = Path(out)
    payload = {"task": "negation", "model": result.model, "seconds": seconds, "result": result.to_dict()}
    _csv(out / "probe_negation_scores.csv", result.table)
    _csv(out / "probe_negation_weights.csv", result.head_weights)
    _csv(out / "probe_negation_predictions.csv", result.predictions)
    bars = result.table[result.table["name"].isin(["probe_top1", "chance", "positional_top1", "word_identity_top1",
                                                   "control_train_top1", "control_top1"])]
    save_bars(bars, "evaluation", f"negation cue probe: does the top pair of a sentence sit at its cue? "
              f"{result.model}", out / "probe_negation_scores.png")
    save_head_grid(result.head_weights, "weight", f"negation probe weight per head (trained on "
                   f"'{result.train_cue}'), {result.model}\nmean |coef| of w->w+1 and w+1->w",
                   out / "probe_negation_weights.png")
    write_json(out / "probe_negation.json", payload)
    write_text(out / "probe_negation.md", negation_markdown(payload))
    return expected_files("negation", [])


def negation_markdown(payload: dict) -> str:
    """Cue-type transfer in words: per evaluation the probe, its baselines and its control."""
    r = payload["result"]
    forms = ", ".join(f"\"{f}\": {n}" for f, n in r["cue_forms"].items())
    lines = [f"# Negation cue probe: cue-type transfer ({payload['model']})", "",
             f"Data: {r['data']} ({forms} negated sentences; their controls are hard negatives). The probe (the "
             f"attention w->w+1 and w+1->w of every head, for every adjacent word pair) is trained to find the cue "
             f"in \"{r['train_cue']}\" sentences and tested on sentences whose cue has another form. A probe that "
             "only knows the word \"not\" cannot find \"n't\": transfer asks whether the attention around a cue says "
             "it is a cue. Score: the share of negated sentences whose top-scoring pair starts at the cue (chance "
             "1/#pairs). 95% CIs resample sentence pairs. "
             f"({payload['seconds']} s)", "",
             "| evaluation | sentences | probe | chance | positional probe | word-identity probe | control (train) "
             "| control (test) | selectivity |", "|---|---|---|---|---|---|---|---|---|"]
    for name, e in r["results"].items():
        if e["n_sentences"] == 0:
            continue
        lines.append(f"| {name} | {e['n_sentences']} | **{pct(e['probe_top1'])}** | {pct(e['chance'])} | "
                     f"{pct(e['positional_top1'])} | {pct(e['word_identity_top1'])} | "
                     f"{100 * e['control_train_top1']:.1f}% | {pct(e['control_top1'])} | {pts(e['selectivity'])} |")
    lines.append("")
    for name, e in r["results"].items():
        if e["n_sentences"] == 0:
            continue
        words = [_verdict(e["selectivity"], "against its control task")
                 + ("" if e["beats_control"] else " The probe does **not** beat its control here."),
                 _verdict(e["probe_minus_positional"], "against the positional probe"),
                 _verdict(e["probe_minus_word_identity"], "against the word-identity probe")]
        if "cue_outscores_adverb" in e:
            words.append(f"The cue outscores the adverb that replaces it in its control sentence in "
                         f"{pct(e['cue_outscores_adverb'])} of pairs (chance 50%).")
        lines += [f"**{name}**: " + " ".join(words), ""]
    lines += [CONTROL_TASK + " Negation: in every sentence the control answer is the pair whose word w has the "
              "highest random value.", "",
              "The word-identity probe trained on \"not\" has never seen the last word of \"n't\" (\"t\"); what it "
              "gets on a new cue form it gets by elimination (every word it has seen is scored as a non-cue).", "",
              "![scores](probe_negation_scores.png)", "", "![weights](probe_negation_weights.png)", "",
              f"Head weights (trained on \"{r['train_cue']}\"): {r['weight_note']}. A cue spanning several tokenizer "
              "words (\"didn ' t\") is labelled at its last word; pairs starting inside it are left out.", "",
              f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)


# ---- layers ----------------------------------------------------------------------------------------

def write_layers_report(out: Path, results: dict, model: str, data: list[str], seconds: dict) -> list[str]:
    """Every layer-probe file for results {task: LayerProbeResult}; returns the file names."""
    out = Path(out)
    table = pd.concat([r.table.assign(task=task) for task, r in results.items()], ignore_index=True)
    _csv(out / "probe_layers.csv", table[["task"] + [c for c in table.columns if c != "task"]])
    payload = {"task": "layers", "model": model, "data": data, "seconds": seconds,
               "results": {task: r.to_dict() for task, r in results.items()}}
    save_layer_curves(payload, out / "probe_layers.png")
    write_json(out / "probe_layers.json", payload)
    write_text(out / "probe_layers.md", layers_markdown(payload))
    return expected_files("layers", data)


def _row(row: dict, key: str) -> dict:
    return {"mean": row[key], "ci_low": row[f"{key}_ci_low"], "ci_high": row[f"{key}_ci_high"]}


def layers_markdown(payload: dict) -> str:
    """The layer-wise curves in words: per layer the probe, its control and (negation) the word swap."""
    lines = [f"# Layer-wise hidden-state probe ({payload['model']})", ""]
    for task, r in payload["results"].items():
        layers = r["layers"]
        swap = "adverb_swap_accuracy" in layers[0]
        lines += [f"## {task}: {r['label']}", "",
                  f"{r['n_examples']} examples in {r['n_groups']} groups, grouped {r['n_folds']}-fold CV; classes "
                  f"{', '.join(r['classes'])}; majority class {100 * layers[0]['majority_baseline']:.1f}%. "
                  f"({payload['seconds'].get(task, '?')} s)", ""]
        header = "| layer | accuracy | control train | control test | selectivity |"
        if swap:
            header += " adverb vs adverb | negation − swap |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for row in layers:
            line = (f"| {row['layer']} | {pct(_row(row, 'accuracy'))} | {100 * row['control_train_accuracy']:.1f}% | "
                    f"{pct(_row(row, 'control_accuracy'))} | {pts(_row(row, 'selectivity'))} |")
            if swap:
                line += f" {pct(_row(row, 'adverb_swap_accuracy'))} | {pts(_row(row, 'negation_minus_swap'))} |"
            lines.append(line)
        failing = [str(row["layer"]) for row in layers if not row["beats_control"]]
        best = max(layers, key=lambda row: row["accuracy"])
        lines += ["", f"Best layer: {best['layer']} ({pct(_row(best, 'accuracy'))}). "
                  + (f"The probe does **not** beat its control task at layer(s) {', '.join(failing)}."
                     if failing else "The probe beats its control task at every layer.")]
        if swap:
            beaten = [str(row["layer"]) for row in layers if row["negation_beats_swap"]]
            lines += ["", f"Adverb vs adverb: {r['adverb_swap']}. Any word swap changes the next word's state; "
                      "what negation adds is the negated-vs-control accuracy minus the swap accuracy. "
                      + (f"Negation is decodable beyond a word swap at layer(s) {', '.join(beaten)}."
                         if beaten else "At **no** layer is negation decodable beyond an adverb swap.")]
        if task == "coreference":
            lines += ["", "For the built-in set the antecedent's gender is also the pronoun's (he/she/they/it), so "
                      "this probe measures how far the pronoun's gender spreads to the next word, not coreference "
                      "resolution itself."]
        lines += ["", r["note"], ""]
    lines += ["![layers](probe_layers.png)", "", f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)
