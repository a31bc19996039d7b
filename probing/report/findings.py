"""The findings page: what the committed reports found, across models, with the rule each claim rests on.

Pure: report folders in, markdown out. `findings_markdown(root)` reads every model folder under `root` (the
committed `reports/`: `reports/<model>/...`, one folder per model, each with a `summary.json` at its top) and
writes, model beside model:

- head scores: per dataset the best head, its main score with its 95% CI, the baseline it is tested against,
  its family-wise p, and how many heads (and which) beat the baseline (`heads/<data>/summary.json`, `heads.csv`);
- held-out confirmation: the heads chosen on an exploration set, tested unchanged on sets they were not chosen
  on (`confirm/<data>/confirm.json`);
- patching: the behaviour gate, the named heads with their effect and their effect on the control pairs, the
  attention-vs-effect correlation (`patching/<data>/summary.json`, `effects.csv`), the attribution screen's
  agreement with exact patching (`screen`), and head sets against random sets (`sets.csv`).

Every number on the page is read from those files; nothing is computed here but formatting, counting and
applying the stated thresholds (`probing.defaults.ALPHA`, `MIN_UNITS`) to recorded p-values and unit counts.
A step folder without its completion marker (a killed run) is left out and the page says so. A key the page
needs that a file lacks raises `FindingsError` naming the file and the key; keys the page does not need
(new ones the writers add) are ignored, and optional ones (`screen`, `norm_correlation`, `sets.csv`) are shown
only when present.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from probing.defaults import ALPHA, MIN_UNITS
from probing.outputs import is_complete

FINDINGS_FILE = "FINDINGS.md"
# Models in the order the page shows them (the default model first); others follow by name.
MODEL_ORDER = ("minilm", "mpnet", "gemma-270m")
# Datasets per relation, the primary evidence first; datasets not named here follow by name.
DATA_ORDER = ("gap-dev", "wsc273", "winogender", "winobias", "builtin-coref", "builtin-negation",
              "blimp-npi-licensing")
KIND_NAMES = {"noising": "noising", "denoising": "denoising", "pattern_noising": "pattern noising",
              "pattern_denoising": "pattern denoising", "row_noising": "row noising",
              "row_denoising": "row denoising"}


class FindingsError(ValueError):
    """A report file lacks what the findings page needs (the message names the file and the key)."""


# ---- reading ------------------------------------------------------------------------------------------

def need(mapping: dict, key: str, where: Path | str):
    """mapping[key], or a worded FindingsError naming the file that lacks it."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise FindingsError(f"{where}: the findings page needs the key {key!r}, which this file does not have "
                            "(was it written by an older or newer report writer? regenerate the report)")
    return mapping[key]


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise FindingsError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise FindingsError(f"{path}: expected a JSON object")
    return data


def read_csv(path: Path) -> list[dict]:
    """Rows of a report CSV as dicts of strings (numbers are parsed where they are used)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def number(value, where: Path | str, key: str) -> float:
    """A recorded number (a CSV string or a JSON number) as a float; NaN when the file records none."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise FindingsError(f"{where}: {key} = {value!r} is not a number") from err


def model_folders(root: Path) -> list[Path]:
    """The model folders under root (each has a summary.json at its top), in MODEL_ORDER, then by name."""
    root = Path(root)
    if not root.is_dir():
        raise FindingsError(f"there is no reports folder at {root}")
    found = [p for p in root.iterdir() if p.is_dir() and (p / "summary.json").is_file()]
    return sorted(found, key=lambda p: (MODEL_ORDER.index(p.name) if p.name in MODEL_ORDER else len(MODEL_ORDER),
                                        p.name))


def _data_key(name: str) -> tuple:
    return (DATA_ORDER.index(name) if name in DATA_ORDER else len(DATA_ORDER), name)


def step_folders(model: Path, step: str, file: str, left_out: list[str]) -> list[Path]:
    """The complete folders of one step kind (`heads`, `confirm`, `patching`) that hold `file`; an incomplete
    one is recorded in left_out."""
    base = model / step
    folders = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: _data_key(p.name)) \
        if base.is_dir() else []
    kept = []
    for folder in folders:
        if not (folder / file).is_file():
            continue
        if is_complete(folder):
            kept.append(folder)
        else:
            left_out.append(f"{model.name}/{step}/{folder.name}")
    return kept


# ---- formatting ---------------------------------------------------------------------------------------

def fmt(x: float, digits: int = 3, sign: bool = False) -> str:
    """A recorded number to `digits` decimals ("n/a" when not defined)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_ci(low: float, high: float, digits: int = 3, sign: bool = False) -> str:
    return f"[{fmt(low, digits, sign)}, {fmt(high, digits, sign)}]"


def fmt_p(p: float) -> str:
    """A p-value to two significant digits (the sign-flip tests' floor is 1/(flips + 1))."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}"


def head_name(layer, head) -> str:
    return f"{int(layer)}-{int(head)}"


def as_head(item, where: Path | str) -> tuple[str, float | None]:
    """A head as a summary records it: [layer, head], [layer, head, value], {"layer", "head"(, "effect")} or
    "L-H"; returns ("L-H", the value or None). Anything else is a worded FindingsError."""
    try:
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            return head_name(item[0], item[1]), (float(item[2]) if len(item) > 2 else None)
        if isinstance(item, dict) and {"layer", "head"} <= item.keys():
            value = next((item[k] for k in ("effect", "value", "mean") if k in item), None)
            return head_name(item["layer"], item["head"]), (float(value) if value is not None else None)
        if isinstance(item, str) and len(item.split("-")) == 2:
            return head_name(*item.split("-")), None
    except (TypeError, ValueError):
        pass
    raise FindingsError(f"{where}: cannot read a head from {item!r} (expected [layer, head] or \"L-H\")")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table (pipes inside cells escaped)."""
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


# ---- head scores --------------------------------------------------------------------------------------

def main_p_key(ranked_by: str) -> str:
    """The family-wise p of the main score: the paired test for negation with controls, else p_fwer."""
    return "paired_p_fwer" if ranked_by == "paired_difference" else "p_fwer"


def baseline_text(summary: dict, task: str, part: dict, top: dict, where: Path) -> str:
    """What the main score is tested against, with its recorded value."""
    ranked_by = summary["ranked_by"]
    baselines = part.get("baselines") or summary.get("baselines") or {}
    if ranked_by == "paired_difference":
        return (f"its control word in the same place: attention {fmt(number(need(top, 'control_attention', where), where, 'control_attention'))} "
                f"(the cue's {fmt(number(need(top, 'mean_attention', where), where, 'mean_attention'))})")
    if ranked_by == "above_baseline":
        return f"any word to the next: {fmt(number(need(top, 'next_word_baseline', where), where, 'next_word_baseline'))}"
    if task == "all-words":
        text = f"best fixed offset: {fmt(number(need(baselines, 'best_offset_accuracy', where), where, 'best_offset_accuracy'))}"
    else:
        text = (f"nearest noun: "
                f"{fmt(number(need(baselines, 'nearest_candidate_accuracy', where), where, 'nearest_candidate_accuracy'))}")
    if "agreement_oracle_accuracy" in baselines:
        text += f"; agreement alone: {fmt(number(baselines['agreement_oracle_accuracy'], where, 'agreement_oracle_accuracy'))}"
    return text


def verdict(p: float, units: int, rule: str) -> str:
    """The claim a p-value and a unit count allow, by the report's rules."""
    if units < MIN_UNITS:
        return f"descriptive (< {MIN_UNITS} units)"
    return f"beats {rule}" if p < ALPHA else f"does not beat {rule}"


def beating_heads(csv_path: Path, task: str, ranked_by: str) -> list[tuple[str, float]] | None:
    """The heads of one task marked `significant` in heads.csv, best first by the main score (None when the
    file is absent)."""
    if not csv_path.is_file():
        return None
    rows = [r for r in read_csv(csv_path) if r.get("task", task) == task]
    for key in ("significant", "layer", "head", ranked_by):
        if rows and key not in rows[0]:
            raise FindingsError(f"{csv_path}: the findings page needs the column {key!r}")
    chosen = [(head_name(r["layer"], r["head"]), number(r[ranked_by], csv_path, ranked_by))
              for r in rows if r["significant"].strip().lower() == "true"]
    return sorted(chosen, key=lambda item: -item[1])


def head_rows(model: str, folder: Path) -> list[tuple[str, list[str]]]:
    """One row per task of one heads step: (relation, cells)."""
    where = folder / "summary.json"
    summary = read_json(where)
    relation = need(summary, "relation", where)
    ranked_by = need(summary, "ranked_by", where)
    n_heads = int(need(summary, "layers", where)) * int(need(summary, "heads", where))
    tasks = need(summary, "tasks", where)
    rule = {"paired_difference": "its control", "above_baseline": "the next-word baseline"}.get(
        ranked_by, "the positional baseline")
    rows = []
    for task, part in tasks.items():
        top_heads = need(part, "top_heads", f"{where} (task {task})")
        if not top_heads:
            continue
        top = top_heads[0]
        p_key = main_p_key(ranked_by)
        score = number(need(top, ranked_by, where), where, ranked_by)
        low = number(need(top, f"{ranked_by}_ci_low", where), where, f"{ranked_by}_ci_low")
        high = number(need(top, f"{ranked_by}_ci_high", where), where, f"{ranked_by}_ci_high")
        p = number(need(top, p_key, where), where, p_key)
        units = int(need(part, "n_units", f"{where} (task {task})"))
        crossfit = (part.get("best_head_cross_fitted") or {}).get("score")
        beating = beating_heads(folder / "heads.csv", task, ranked_by)
        count = int(need(part, "n_significant_heads_fwer", f"{where} (task {task})"))
        if beating is None:
            which = f"{count} of {n_heads}"
        else:
            shown = ", ".join(name for name, _ in beating[:5]) + (", …" if len(beating) > 5 else "")
            which = f"{count} of {n_heads}" + (f": {shown}" if beating else "")
        data = f"{summary.get('data', folder.name)} ({task})" if len(tasks) > 1 else summary.get("data", folder.name)
        rows.append((relation, [data, model, f"{units}", head_name(need(top, 'layer', where), need(top, 'head', where)),
                                f"{ranked_by} {fmt(score)} {fmt_ci(low, high)}",
                                fmt(number(crossfit, where, "best_head_cross_fitted")) if crossfit is not None else "n/a",
                                baseline_text(summary, task, part, top, where), fmt_p(p),
                                verdict(p, units, rule), which]))
    return rows


RELATION_NOTES = {
    "coreference": "The score is **accuracy**: how often the head gives the pronoun's antecedent more attention than "
                   "every other candidate. Its baseline is always picking the noun nearest the pronoun, or, where "
                   "every word competes (*all-words*), always picking the word at the distance from the pronoun "
                   "where the antecedent most often sits (the best fixed offset). Where pronoun agreement (gender, "
                   "number) alone could decide, what agreement alone gets is shown beside it: a head no better "
                   "than that may only be doing agreement.",
    "negation": "The score is the **paired difference**: attention from the cue (*not*, *n't*) to the next word "
                "minus attention from the control word in the same place to the same word (in the built-in set, "
                "the mean over every adverb that fits the slot: *did not sign* vs *did actually sign*). The cue "
                "and its control sit at the same position before the same word, so a head that merely looks one "
                "word ahead scores 0. A decoder cannot look ahead, so there attention is read the other way, from "
                "the next word to the cue.",
}

HEAD_HEADER = ["data (task)", "model", "units", "best head", "main score [95% CI]", "cross-fitted",
               "baseline it is tested against", "p (family-wise)", "verdict", "heads that beat it (best first)"]


def head_section(models: list[Path], left_out: list[str]) -> list[str]:
    by_relation: dict[str, list[tuple[str, list[str]]]] = {}
    for model in models:
        for folder in step_folders(model, "heads", "summary.json", left_out):
            for relation, row in head_rows(model.name, folder):
                by_relation.setdefault(relation, []).append((folder.name, row))
    lines = ["## 1. Where the heads look: head scores against their baselines", "",
             "Each row is one model on one dataset: the head whose attention best follows the relation, its "
             "main score with a 95% confidence interval, and the simplest explanation that could fake it (the "
             "baseline). *The rule:* a head **beats its baseline** only when a one-sided sign-flip test, "
             f"corrected over all heads at once (Westfall–Young maxT), gives p < {ALPHA}; with fewer than "
             f"{MIN_UNITS} independent units (templates, frames or documents) the numbers are **descriptive** and "
             "claim nothing. The best of many heads is optimistic, so the *cross-fitted* score chooses the head on "
             "one half of the units and measures it on the other. The last column lists every head that beats "
             "the baseline (up to five; the count is over all heads). Attention shows where a head looks, not "
             "whether the model uses it: sections 3 and 4 ask that.", ""]
    for relation in sorted(by_relation):
        rows = sorted(by_relation[relation], key=lambda item: (_data_key(item[0]), ))
        lines += [f"### {relation.capitalize()}", "", RELATION_NOTES.get(relation, ""), ""] \
            + table(HEAD_HEADER, [row for _, row in rows]) + [""]
    if not by_relation:
        lines += ["No head scores in these reports.", ""]
    return lines


# ---- held-out confirmation ----------------------------------------------------------------------------

def confirm_rows(model: str, folder: Path) -> list[list[str]]:
    where = folder / "confirm.json"
    result = read_json(where)
    chosen = need(result, "chosen_heads", where)
    exploration = folder.name
    by_set: dict[str, list[dict]] = {}
    for row in need(result, "confirmation", where):
        by_set.setdefault(need(row, "set", where), []).append(row)
    rows = []
    for name, heads in by_set.items():
        groups = {"confirmed": [], "descriptive": [], "not confirmed": []}
        for row in heads:
            estimate = number(need(row, "estimate", where), where, "estimate")
            p = number(need(row, "p_holm", where), where, "p_holm")
            units = int(need(row, "n_units", where))
            text = f"{need(row, 'head_name', where)} ({fmt(estimate)}, p {fmt_p(p)})"
            # The file's own verdict decides; the unit rule is applied again so an old file cannot overclaim.
            if need(row, "confirmed", where) and units >= MIN_UNITS:
                groups["confirmed"].append(text)
            elif units < MIN_UNITS:
                groups["descriptive"].append(text)
            else:
                groups["not confirmed"].append(text)
        score = heads[0].get("score", result.get("main_score", ""))
        units = int(need(heads[0], "n_units", where))
        rows.append([model, exploration, ", ".join(chosen), name, f"{units}", score,
                     "; ".join(groups["confirmed"]) or "none",
                     "; ".join(groups["not confirmed"]) or "none", "; ".join(groups["descriptive"]) or "none"])
    return rows


def confirm_section(models: list[Path], left_out: list[str]) -> list[str]:
    rows = [row for model in models for folder in step_folders(model, "confirm", "confirm.json", left_out)
            for row in confirm_rows(model.name, folder)]
    lines = ["## 2. Do the heads hold on data they were not chosen on? Held-out confirmation", "",
             "Heads are chosen on an exploration set (at most five, each beating its baseline there) and tested, "
             "unchanged, on sets they were not chosen on: the other half of the built-in set and an outside set. "
             f"*The rule:* a chosen head is **confirmed** on a set when its test there, Holm-corrected over the "
             f"chosen heads, gives p < {ALPHA} **and** the set has at least {MIN_UNITS} independent units; below "
             f"{MIN_UNITS} units the result is **descriptive**, whatever its p. Sets without control adverbs are "
             "scored by attention above the next-word baseline. Each head is shown with its score on that set "
             "and its Holm p.", ""]
    if rows:
        lines += table(["model", "chosen on", "chosen heads", "tested on", "units", "score", "confirmed",
                        "not confirmed", "descriptive"], rows)
    else:
        lines += ["No held-out confirmation in these reports."]
    return lines + [""]


# ---- patching -----------------------------------------------------------------------------------------

def effects_by_head(path: Path) -> dict[str, dict]:
    """effects.csv's rows by head ("L-H"); none when the step wrote no such file."""
    if not path.is_file():
        return {}
    rows = read_csv(path)
    if rows and not {"layer", "head"} <= rows[0].keys():
        raise FindingsError(f"{path}: the findings page needs the columns 'layer' and 'head'")
    return {head_name(r["layer"], r["head"]): r for r in rows}


def named_text(named: list, kind: str, effects: dict[str, dict], where: Path) -> str:
    """The named heads of one kind with their effect and their effect on the control pairs."""
    parts = []
    for item in named:
        name, _ = as_head(item, where)
        row = effects.get(name)
        if row is None or kind not in row:
            parts.append(name)
            continue
        text = f"{name} {fmt(number(row[kind], where, kind))}"
        if f"control_{kind}" in row:
            text += f" (control {fmt(number(row[f'control_{kind}'], where, f'control_{kind}'))})"
        parts.append(text)
    return ", ".join(parts) or "none"


def gate_text(gate: dict, where: Path) -> tuple[str, str, bool]:
    """The gate's numbers, its verdict, and whether heads may be named (it passed, on enough units)."""
    units = int(need(gate, "n_units", where))
    if "relation_minus_control" in gate:
        low, high = need(gate, "relation_minus_control_ci", where)
        numbers = (f"{fmt(number(gate['relation_minus_control'], where, 'relation_minus_control'))} "
                   f"{fmt_ci(number(low, where, 'ci'), number(high, where, 'ci'))} beyond the control swap "
                   f"({fmt(number(need(gate, 'clean_minus_corrupt', where), where, 'clean_minus_corrupt'))} vs "
                   f"{fmt(number(need(gate, 'control_mean', where), where, 'control_mean'))})")
    else:
        low, high = need(gate, "ci", where)
        numbers = (f"{fmt(number(need(gate, 'clean_minus_corrupt', where), where, 'clean_minus_corrupt'))} "
                   f"{fmt_ci(number(low, where, 'ci'), number(high, where, 'ci'))} (no control pairs)")
    if gate.get("too_few") or units < MIN_UNITS:
        return numbers, f"too few units ({units} < {MIN_UNITS}): nothing named", False
    passed = bool(need(gate, "passed", where))
    return numbers, ("passes" if passed else "fails: nothing named") + f" ({units} units)", passed


def correlation_text(summary: dict, key: str, kind: str) -> str:
    part = (summary.get(key) or {}).get(kind)
    if not part or "spearman" not in part:
        return "n/a"
    return f"{fmt(part['spearman'], 2, True)} {fmt_ci(part.get('ci_low'), part.get('ci_high'), 2, True)}"


def patching_rows(model: str, folder: Path) -> tuple[list[str], list[str]]:
    """(the gate-and-names row, the attention-vs-effect row) of one patching step."""
    where = folder / "summary.json"
    summary = read_json(where)
    gate_numbers, gate_verdict, may_name = gate_text(need(summary, "gate", where), where)
    # The rule, applied again: no head is named behind a gate that failed, whatever the file lists.
    named = need(summary, "named", where) if may_name else {}
    effects = effects_by_head(folder / "effects.csv")
    top = need(summary, "top", where)
    largest = top.get("noising") or []
    largest_text = "n/a"
    if largest:
        name, effect = as_head(largest[0], where)
        control = effects.get(name, {}).get("control_noising")
        largest_text = f"{name} {fmt(number(effect, where, 'top'))}" + (
            f" (control {fmt(number(control, where, 'control_noising'))})" if control not in (None, "") else "")
    others = [f"{KIND_NAMES.get(kind, kind)} {len(heads)}" for kind, heads in named.items()
              if kind not in ("noising", "denoising")]
    method = summary.get("method", "exact")
    data = f"{summary.get('data', folder.name)}"
    gate_row = [model, data, f"{need(summary, 'n_pairs', where)}", method, gate_numbers, gate_verdict,
                named_text(named.get("noising", []), "noising", effects, folder / "effects.csv"),
                named_text(named.get("denoising", []), "denoising", effects, folder / "effects.csv"),
                largest_text, ", ".join(others) or "none"]
    correlation_row = [model, data, correlation_text(summary, "correlation", "noising"),
                       correlation_text(summary, "norm_correlation", "noising"),
                       correlation_text(summary, "correlation", "denoising"),
                       correlation_text(summary, "norm_correlation", "denoising")]
    return gate_row, correlation_row


def screen_rows(model: str, folder: Path) -> list[list[str]]:
    """The attribution screen against exact patching, per kind (none when the step patched exactly)."""
    summary = read_json(folder / "summary.json")
    screen = summary.get("screen") or {}
    if not screen.get("by_kind"):
        return []
    exact = len(screen.get("heads_patched_exactly") or [])
    total = int(summary.get("n_layers", 0)) * int(summary.get("n_heads", 0))
    rows = []
    for kind, part in screen["by_kind"].items():
        missed = ", ".join(as_head(item, folder / "summary.json")[0]
                           for item in part.get("missed_by_estimate") or []) or "none"
        rows.append([model, summary.get("data", folder.name), KIND_NAMES.get(kind, kind), f"{exact} of {total}",
                     fmt(part.get("spearman"), 2), f"{part.get('top5_in_top10', 'n/a')} of 5", missed])
    return rows


def sets_rows(model: str, folder: Path) -> list[list[str]]:
    """Head sets chosen by attention or by effect against layer-matched random sets (whole layers left out)."""
    path = folder / "sets.csv"
    if not path.is_file():
        return []
    rows = []
    for row in read_csv(path):
        for key in ("kind", "selection", "k", "heads", "effect", "ci_low", "ci_high", "random_mean", "p_random"):
            if key not in row:
                raise FindingsError(f"{path}: the findings page needs the column {key!r}")
        if row["selection"] == "layer":
            continue
        n_random = row.get("n_random") or "?"
        rows.append([model, row["kind"], row["selection"], row["k"], row["heads"],
                     f"{fmt(number(row['effect'], path, 'effect'))} "
                     f"{fmt_ci(number(row['ci_low'], path, 'ci_low'), number(row['ci_high'], path, 'ci_high'))}",
                     fmt(number(row["random_mean"], path, "random_mean")),
                     f"{fmt_p(number(row['p_random'], path, 'p_random'))} (of {n_random})"])
    return rows


def patching_section(models: list[Path], left_out: list[str]) -> list[str]:
    gates, correlations, screens, sets = [], [], [], []
    for model in models:
        for folder in step_folders(model, "patching", "summary.json", left_out):
            gate_row, correlation_row = patching_rows(model.name, folder)
            gates.append(gate_row)
            correlations.append(correlation_row)
            screens += screen_rows(model.name, folder)
            sets += [[row[0], folder.name, *row[1:]] for row in sets_rows(model.name, folder)]
    lines = ["## 3. Does the model use the heads? Activation patching", "",
             "Each pair is two sentences that differ in one word (negation: *not* ↔ an adverb; WSC273: the word "
             "that flips the pronoun's referent). Patching one head's output from the other sentence and reading "
             "how much of the sentences' difference goes (*noising*) or comes back (*denoising*) asks whether the "
             "model uses that head: 1 is the whole difference, 0 none. Every pair has a relation-free **control "
             "pair** (an adverb ↔ another adverb; a synonym for the word that flips the referent). *The rules:* "
             "first the **gate**: the relation swap must move the model's readout more than the control swap "
             f"(paired by item, clustered CI above 0, at least {MIN_UNITS} units); if it does not, no head is named. "
             "Then a head is **named** only when its effect is significant after correction over all heads "
             f"patched (maxT p < {ALPHA}) **and** beats its own effect on the control pairs (also corrected). Each named head "
             "is shown with its effect and its effect on the control pairs. A head not named has shown no "
             "single-head effect with this readout; it may still be used, because other heads can compensate "
             "(section 4).", ""]
    if not gates:
        return lines + ["No patching in these reports.", ""]
    lines += table(["model", "pairs from", "pairs", "method", "gate: relation swap vs control swap",
                    "gate", "named, noising (effect)", "named, denoising (effect)",
                    "largest single-head noising effect", "named in other kinds (count)"], gates) + [""]
    lines += ["**Attention against effect.** Does a head that attends more from the swapped word matter more? "
              "Spearman correlation between each head's attention and its effect, ranked within each layer "
              "(effects grow with depth), with a 95% CI that resamples pairs; the norm-based attention (the "
              "weight times the size of what the head moves, Kobayashi et al. 2020) beside it. A CI that "
              "contains 0 means attention does not predict the effect.", ""]
    lines += table(["model", "pairs from", "noising: attention", "noising: norm-based", "denoising: attention",
                    "denoising: norm-based"], correlations) + [""]
    if screens:
        lines += ["**The attribution screen.** For the larger models a first-order estimate (one forward and one "
                  "backward pass) picks the heads to patch exactly; only exact patching names heads. How far the "
                  "estimate agreed with exact patching on the heads patched exactly (rank correlation, how many "
                  "of exact's top 5 were in the estimate's top 10, and which it missed):", ""]
        lines += table(["model", "pairs from", "kind", "heads patched exactly", "Spearman", "exact top 5 in estimate's "
                        "top 10", "missed by the estimate"], screens) + [""]
    if sets:
        lines += ["## 4. Heads together: head sets against random sets", "",
                  "Single heads can hide a shared effect, so the top k heads by attention score and the top k by "
                  "single-head effect are patched together and compared with random sets of k heads from the "
                  "same layers. *The rule:* `p_random` is the share of random sets whose effect is at least the "
                  "chosen set's (with k = 1 a random set can be the chosen head itself, so it cannot fall far); it "
                  "is not corrected over the comparisons in this table, and sets chosen by effect were chosen on "
                  "the same pairs, which favours them. (`sets.csv` also patches each whole layer.)",
                  ""]
        lines += table(["model", "pairs from", "kind", "chosen by", "k", "heads", "effect [95% CI]",
                        "random sets' mean", "p_random"], sets) + [""]
    return lines


# ---- probes and ablation ------------------------------------------------------------------------------

def interval(part: dict, where: Path, key: str, sign: bool = False) -> str:
    """A recorded {mean, ci_low, ci_high} as "mean [low, high]"."""
    value = need(part, key, where)
    return (f"{fmt(number(need(value, 'mean', where), where, key), sign=sign)} "
            f"{fmt_ci(number(value.get('ci_low'), where, key), number(value.get('ci_high'), where, key), sign=sign)}")


def coref_probe_rows(model: str, path: Path) -> list[list[str]]:
    rows = []
    for data, part in need(read_json(path), "datasets", path).items():
        baselines = need(part, "baselines", path)
        agreement = interval(baselines, path, "agreement_rule") if "agreement_rule" in baselines else "n/a"
        rows.append([model, data, interval(part, path, "accuracy"), interval(baselines, path, "best_single_head"),
                     interval(baselines, path, "nearest_candidate"), agreement,
                     interval(part, path, "probe_minus_best_head", sign=True),
                     "yes" if need(part, "beats_control", path) else "no"])
    return rows


def negation_probe_rows(model: str, path: Path) -> list[list[str]]:
    result = need(read_json(path), "result", path)
    rows = []
    for name, part in need(result, "results", path).items():
        rows.append([model, name, interval(part, path, "probe_top1"), interval(part, path, "positional_top1"),
                     interval(part, path, "word_identity_top1"), interval(part, path, "control_top1"),
                     "yes" if need(part, "beats_control", path) else "no"])
    return rows


def ablation_rows(model: str, path: Path) -> list[list[str]]:
    rows = []
    for row in need(read_json(path), "results", path):
        p = row.get("p_vs_random")
        # the report's own verdict on the CI, in its words ("no reliable change (the CI includes 0)", ...)
        said = str(row.get("verdict", ""))
        said = (said.split("): ", 1)[1].split(". ")[0] if "): " in said else said).rstrip(".")
        rows.append([model, need(row, "head_set", path), need(row, "heads", path), need(row, "measure", path),
                     f"{fmt(number(need(row, 'effect', path), path, 'effect'), 4, True)} "
                     f"{fmt_ci(number(row.get('effect_ci_low'), path, 'ci'), number(row.get('effect_ci_high'), path, 'ci'), 4, True)}",
                     f"{fmt_p(number(p, path, 'p_vs_random'))} (of {row.get('n_random', '?')})" if p is not None
                     else "not compared", said or "n/a"])
    return rows


def probe_section(models: list[Path], left_out: list[str]) -> list[str]:
    coref, negation, ablation = [], [], []
    for model in models:
        for folder, file, rows, reader in (("probe/coref", "probe_coref.json", coref, coref_probe_rows),
                                           ("probe/negation", "probe_negation.json", negation, negation_probe_rows),
                                           ("ablation", "ablation.json", ablation, ablation_rows)):
            path = model / folder / file
            if not path.is_file():
                continue
            if not is_complete(path.parent):
                left_out.append(f"{model.name}/{folder}")
                continue
            rows += reader(model.name, path)
    if not (coref or negation or ablation):
        return []
    lines = ["## 5. Probes and ablation", "",
             "A **probe** is a small classifier trained on the attention patterns. *The rule:* a probe counts only "
             "when it beats a **control task** (Hewitt & Liang 2019: the same probe trained on random labels per "
             "word type, which it can only memorise), and is compared with the simplest rules and the best single "
             "head; every score is on held-out folds, with 95% CIs.", ""]
    if coref:
        lines += ["**Coreference probe** (accuracy picking the antecedent):", ""]
        lines += table(["model", "data", "probe", "best single head", "nearest noun", "agreement alone",
                        "probe − best head", "beats its control task"], coref) + [""]
    if negation:
        lines += ["**Negation probe** (trained on *not*: how often it ranks the cue first; the transfer row asks "
                  "whether it finds *n't* without having seen it):", ""]
        lines += table(["model", "test", "probe", "position alone", "word identity alone", "control task",
                        "beats its control task"], negation) + [""]
    if ablation:
        lines += ["**Ablation** (secondary to patching): the top heads, chosen on one half of each built-in set, "
                  "are knocked out (set to zero) on the other half. *The rule:* an effect counts when its 95% CI "
                  "excludes 0 in the damaging direction and it beats layer-matched random head sets "
                  "(`p_vs_random`: the share of random sets at least as damaging). Zeroed activations are off the "
                  "model's usual inputs, so this is a rough check.", ""]
        lines += table(["model", "head set", "heads", "measure", "effect [95% CI]", "p_vs_random", "the report's verdict"],
                       ablation) + [""]
    return lines


# ---- the page -----------------------------------------------------------------------------------------

def findings_markdown(root: Path) -> str:
    """The findings page for every model folder under root (the committed `reports/`)."""
    root = Path(root)
    models = model_folders(root)
    if not models:
        raise FindingsError(f"{root}: no model reports here (a model's folder has a summary.json at its top)")
    left_out: list[str] = []
    body = (head_section(models, left_out) + confirm_section(models, left_out) + patching_section(models, left_out)
            + probe_section(models, left_out))
    lines = ["# Findings", "",
             "<!-- Generated by `python -m analysis report --findings-only` from the committed reports; do not "
             "edit by hand. -->", "",
             "What the committed reports found, model beside model: "
             + ", ".join(f"[{m.name}]({m.name}/report.md)" for m in models)
             + ". Every number below is read from a file under `reports/<model>/`; the rule each claim rests on "
               "is stated with its table. How each number is made is on the methods page "
               "([docs/methods.md](../docs/methods.md)).", "",
             "Heads are named layer-head, both counted from 0 (`2-8` is head 8 of layer 2). A 95% CI is a "
             "range made by a procedure that catches the true value in 95% of repeated samples; where examples "
             "share a template or frame, whole templates are resampled together, since they are not "
             "independent.", ""]
    if left_out:
        lines += [f"> Left out (no completion marker, e.g. a killed run): {', '.join(sorted(left_out))}.", ""]
    return "\n".join(lines + body).rstrip() + "\n"


def write_findings(root: Path, path: Path | None = None) -> Path:
    """Write the findings page for root to path (default root/FINDINGS.md); returns the path."""
    from probing.outputs import write_text
    path = Path(path) if path is not None else Path(root) / FINDINGS_FILE
    write_text(path, findings_markdown(root))
    return path
