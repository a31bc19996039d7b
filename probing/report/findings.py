"""The findings page: what the committed reports found, across models, with the rule each claim rests on.

Pure: report folders in, markdown out. `findings_markdown(root)` reads every model folder under `root` (the
committed `reports/`: `reports/<model>/...`, one folder per model, each with a `summary.json` at its top) and
writes, model beside model:

- head scores: per dataset the best head, its main score with its 95% CI, the baseline it is tested against,
  its family-wise p, and how many heads (and which) beat the baseline under the design's test (crossed frame x
  predicate for built-in negation, its factors named; the frame-only and by-example counts beside), from
  `heads/<data>/summary.json` and `heads.csv`; for coreference, the headline heads against the strongest
  baseline that applies (`strongest_baseline_test`); for negation, who leads on "n't" under each source-piece
  rule and control set, and whether each headline head's lead is robust (`nt_robustness`);
- held-out confirmation: the heads chosen on an exploration set, tested unchanged on sets they were not chosen
  on, with the detectable difference of each test that did not reject and when the rules were fixed
  (`confirm/<data>/confirm.json`);
- patching: the behaviour gate, the named heads with their effect and their effect on the control pairs, the
  rows accounting (`rows`), the attention-vs-effect correlation with its head-permutation p and what it was
  computed on (`patching/<data>/summary.json`, `effects.csv`), the attribution screen's agreement with exact
  patching (`screen`), and head sets against random sets with Holm p, the detectable excess and k = 1 as a rank
  (`sets.csv`).

Wording rule: a test that does not reject says "not distinguishable from X with n units" and, where the file
records it, the difference it could have detected (80% power); the page never says a head "does not" do
something or a set is "no more than" random.

Every number on the page is read from those files; nothing is computed here but formatting, counting and
applying the stated thresholds (`probing.defaults.ALPHA`, `MIN_UNITS`) to recorded p-values and unit counts.
A step folder without its completion marker (a killed run) is left out and the page says so. A key the page
needs that a file lacks raises `FindingsError` naming the file and the key; keys the page does not need
(new ones the writers add) are ignored, and optional ones (`screen`, `norm_correlation`, `sets.csv`, and the
newer keys above, so a model folder mid-regeneration still makes a page) are shown only when present.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from probing.defaults import ALPHA, MIN_UNITS
from probing.outputs import is_complete
from probing.report.heads import detectable_difference

FINDINGS_FILE = "FINDINGS.md"
# Models in the order the page shows them (the default model first); others follow by name.
MODEL_ORDER = ("minilm", "mpnet", "gemma-270m")
# Datasets per relation, the primary evidence first; datasets not named here follow by name.
DATA_ORDER = ("gap-dev", "wsc273", "winogender", "winobias", "builtin-coref", "builtin-negation",
              "blimp-npi-licensing")
# Sets whose target is one fixed word, named for it: BLiMP's word after "not" is always "ever" (NPI licensing).
TARGET_NAMES = {"blimp-npi-licensing": "-> ever"}
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


def could_detect(detectable) -> str:
    """The power clause of a test that did not reject: the difference it would have found at 80% power, as the
    report records it (`detectable_difference*`), or nothing where the report records none."""
    if detectable is None or (isinstance(detectable, float) and math.isnan(detectable)):
        return ""
    return f" (could detect >= {fmt(float(detectable))})"


def verdict(p: float, units: int, rule: str, detectable: float | None = None) -> str:
    """The claim a p-value and a unit count allow, by the report's rules. A test that does not reject says what
    it could not tell apart and, where the report records it, the difference it could have detected; never
    that the head "does not" do something."""
    if units < MIN_UNITS:
        return f"descriptive (< {MIN_UNITS} units)"
    if p < ALPHA:
        return f"beats {rule}"
    return f"not distinguishable from {rule} with {units} units" + could_detect(detectable)


def short_factors(factors: str) -> str:
    """A summary's `factors` without its parenthesis: "70 frames x 38 predicates (crossed: ...)" -> "70 frames x
    38 predicates"."""
    return factors.split(" (", 1)[0].strip()


def units_text(part: dict, units: int) -> str:
    """The units cell: the count, and for a crossed design its two factors in words."""
    factors = str(part.get("factors", ""))
    if " x " in factors:
        return f"{short_factors(factors)} (crossed)"
    return f"{units}"


def counts_beside(part: dict) -> str:
    """How many heads the other resamplings would pass (`n_heads_p_fwer_below_0.05`: frames alone, examples as
    independent); they claim more than the design's test, so they are shown beside it, never instead."""
    counts = part.get("n_heads_p_fwer_below_0.05") or {}
    beside = [f"{label}: {counts[key]}" for key, label in (("frame_only", "frames alone"),
                                                          ("by_example", "examples as independent"))
              if key in counts]
    return f" ({'; '.join(beside)})" if beside else ""


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
        design = " under the crossed test" if " x " in str(part.get("factors", "")) else ""
        which = f"{count} of {n_heads}{design}"
        if beating:
            which += ": " + ", ".join(name for name, _ in beating[:5]) + (", …" if len(beating) > 5 else "")
        which += counts_beside(part)
        name = summary.get("data", folder.name)
        name = f"{name} ({TARGET_NAMES[name]})" if name in TARGET_NAMES else name
        data = f"{name} ({task})" if len(tasks) > 1 else name
        rows.append((relation, [data, model, units_text(part, units),
                                head_name(need(top, 'layer', where), need(top, 'head', where)),
                                f"{ranked_by} {fmt(score)} {fmt_ci(low, high)}",
                                fmt(number(crossfit, where, "best_head_cross_fitted")) if crossfit is not None else "n/a",
                                baseline_text(summary, task, part, top, where), fmt_p(p),
                                verdict(p, units, rule, part.get("detectable_difference_best_head")), which]))
    return rows


def strongest_rows(model: str, folder: Path) -> list[list[str]]:
    """Coreference: per task, the headline heads against the strongest baseline that applies
    (`strongest_baseline_test`, chosen on the exploration half); none where the summary has no such test (an
    older report, or negation)."""
    where = folder / "summary.json"
    summary = read_json(where)
    tasks = need(summary, "tasks", where)
    rows = []
    for task, part in tasks.items():
        test = part.get("strongest_baseline_test")
        if not test or "heads" not in test:     # none, or an older writer's (best head only, uncorrected)
            continue
        units = int(need(test, "n_units", where))
        unclear = f"not distinguishable with {units} units"
        small = f"descriptive (< {MIN_UNITS} units)"
        groups: dict[str, list[str]] = {"beat it": [], "below it (95% CI below 0)": [], unclear: [], small: []}
        for head in need(test, "heads", where):
            name = need(head, "head", where)
            p = number(need(head, "p_fwer", where), where, "p_fwer")
            high = number(need(head, "ci_high", where), where, "ci_high")
            text = (f"{name} ({fmt(number(need(head, 'difference', where), where, 'difference'), sign=True)}, "
                    f"p {fmt_p(p)}")
            if units < MIN_UNITS:
                groups[small].append(text + ")")
            elif p < ALPHA:
                groups["beat it"].append(text + ")")
            elif high < 0:
                groups["below it (95% CI below 0)"].append(text + ")")
            else:
                groups[unclear].append(
                    text + (f"; could detect >= {fmt(float(head['detectable_difference']))})"
                            if head.get("detectable_difference") is not None else ")"))
        best = f"{need(test, 'head', where)} {fmt(number(need(test, 'head_accuracy', where), where, 'head_accuracy'))}"
        difference = (f"{fmt(number(need(test, 'difference', where), where, 'difference'), sign=True)} "
                      f"{fmt_ci(number(need(test, 'ci_low', where), where, 'ci_low'), number(need(test, 'ci_high', where), where, 'ci_high'), sign=True)}")
        considered = ", ".join(name.split(" (")[0] for name in (test.get("baselines_considered") or {}))
        name = summary.get("data", folder.name)
        name = f"{name} ({TARGET_NAMES[name]})" if name in TARGET_NAMES else name
        data = f"{name} ({task})" if len(tasks) > 1 else name
        verdicts = "; ".join(f"{label}: {', '.join(heads)}" for label, heads in groups.items() if heads)
        rows.append([data, model,
                     f"{need(test, 'baseline', where)} {fmt(number(need(test, 'baseline_accuracy', where), where, 'baseline_accuracy'))}",
                     f"{need(test, 'chosen_on', where)}, among {considered}", f"{units}", best, difference,
                     verdicts])
    return rows


def nt_rows(model: str, folder: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Negation: who leads on "n't" under each (source-piece rule / control set), and per headline head whether
    its lead is robust (`nt_robustness`); ([], []) where the summary has none."""
    where = folder / "summary.json"
    robust = read_json(where).get("nt_robustness")
    if not robust:
        return [], []
    leaders = need(robust, "leaders", where)
    data = folder.name
    leader_rows = []
    for label, rec in leaders.items():
        p = number(need(rec, "p_fwer", where), where, "p_fwer")
        leader_rows.append([model, data, label, need(rec, "head", where),
                            fmt(number(need(rec, "score", where), where, "score")), fmt_p(p),
                            "beats its control" if p < ALPHA else "not distinguishable from its control",
                            f"{need(rec, 'runner_up', where)} ({fmt(number(need(rec, 'margin', where), where, 'margin'), sign=True)})"])
    head_rows_ = []
    for row in need(robust, "heads", where):
        leads = list(need(row, "leads_under", where))
        if leads and len(leads) == len(leaders):
            reading = "yes: leads under every rule and control set"
        elif not leads:
            reading = f"no: leads under none of {len(leaders)}"
        else:
            reading = f"no: leads under {len(leads)} of {len(leaders)}"
        weak = [f"{label} (p {fmt_p(number(leaders[label]['p_fwer'], where, 'p_fwer'))})" for label in leads
                if label in leaders and number(leaders[label]["p_fwer"], where, "p_fwer") >= ALPHA]
        if weak:
            reading += "; its lead is not distinguishable from the control under " + ", ".join(weak)
        head_rows_.append([model, data, need(row, "head", where), ", ".join(leads) or "none", reading])
    return leader_rows, head_rows_


RELATION_NOTES = {
    "coreference": "The score is **accuracy**: how often the head gives the pronoun's antecedent more attention than "
                   "every other candidate. The table's baseline is always picking the noun nearest the pronoun, or, "
                   "where every word competes (*all-words*), always picking the word at the distance from the "
                   "pronoun where the antecedent most often sits (the best fixed offset). Where pronoun agreement "
                   "(gender, number) alone could decide, what agreement alone gets is shown beside it: a head no "
                   "better than that may only be doing agreement. The second table tests the headline heads "
                   "against the **strongest** baseline that applies, named there.",
    "negation": "The score is the **paired difference**: attention from the cue (*not*, *n't*) to the next word "
                "minus attention from the control word in the same place to the same word (in the built-in set, "
                "the mean over the item's control adverbs that fit the slot: *did not sign* vs *did actually "
                "sign*). The cue and its control sit at the same position before the same word, so a head that "
                "merely looks one word ahead scores 0. A decoder cannot look ahead, so there attention is read the "
                "other way, from the next word to the cue. In the built-in set each item (a frame with one "
                "predicate, its cue forms averaged) counts once, and the test is **crossed**: the same predicates "
                "recur across frames, so frame parts and predicate parts flip independently and a head must beat "
                "its control across new frames and new predicates alike. The counts with frames alone and with "
                "examples as independent are shown beside it; they claim more than the design allows.",
}

HEAD_HEADER = ["data (task)", "model", "units", "best head", "main score [95% CI]", "cross-fitted",
               "baseline it is tested against", "p (family-wise)", "verdict", "heads that beat it (best first)"]
STRONGEST_HEADER = ["data (task)", "model", "strongest baseline (accuracy)", "chosen on", "units",
                    "best head (accuracy)", "best head − baseline [95% CI]", "headline heads (top 5) by verdict "
                    "(difference, p family-wise)"]
NT_LEADER_HEADER = ["model", "data", "rule / control set", "leader on n't", "paired difference", "p (family-wise)",
                    "against its control", "runner-up (margin)"]
NT_HEAD_HEADER = ["model", "data", "headline head", "leads on n't under", "robust?"]


def head_section(models: list[Path], left_out: list[str]) -> list[str]:
    by_relation: dict[str, list[tuple[str, list[str]]]] = {}
    strongest: list[tuple[str, list[str]]] = []
    leaders, robust = [], []
    for model in models:
        for folder in step_folders(model, "heads", "summary.json", left_out):
            for relation, row in head_rows(model.name, folder):
                by_relation.setdefault(relation, []).append((folder.name, row))
            strongest += [(folder.name, row) for row in strongest_rows(model.name, folder)]
            lead, heads = nt_rows(model.name, folder)
            leaders += lead
            robust += heads
    lines = ["## 1. Where the heads look: head scores against their baselines", "",
             "Each row is one model on one dataset: the head whose attention best follows the relation, its "
             "main score with a 95% confidence interval, and the simplest explanation that could fake it (the "
             "baseline). *The rule:* a head **beats its baseline** only when a one-sided sign-flip test, "
             f"corrected over all heads at once (Westfall–Young maxT), gives p < {ALPHA}; with fewer than "
             f"{MIN_UNITS} independent units (templates, frames or documents) the numbers are **descriptive** and "
             "claim nothing. A test that does not reject says the head is **not distinguishable** from its "
             "baseline with that many units and, where the report records it, the difference it could have "
             "detected (at 80% power: (z_0.975 + z_0.80) × SE from the 95% CI's half-width, before the "
             "correction over heads, so a lower bound); it never says the head does not do it. The best of many "
             "heads is optimistic, so the *cross-fitted* score chooses the head on one half of the units and "
             "measures it on the other. The last column lists every head that beats the baseline (up to five; "
             "the count is over all heads). Attention shows where a head looks, not whether the model uses it: "
             "sections 3 and 4 ask that.", ""]
    for relation in sorted(by_relation):
        rows = sorted(by_relation[relation], key=lambda item: (_data_key(item[0]), ))
        lines += [f"### {relation.capitalize()}", "", RELATION_NOTES.get(relation, ""), ""] \
            + table(HEAD_HEADER, [row for _, row in rows]) + [""]
        if relation == "coreference" and strongest:
            lines += ["**Against the strongest baseline.** The positional baseline is not the only simple rule a "
                      "head could be following. Each fixed rule that applies (the nearest noun or the best fixed "
                      "offset, the first content word, the subject where the data names its candidates) and, where "
                      "the data says whether agreement decides, the agreement oracle is scored on the exploration "
                      "half (on all examples where the set has no halves; the *chosen on* column says which); the "
                      "strongest there is the baseline, and each of the five headline heads is tested against it "
                      "on every example (head minus baseline per example, one-sided sign-flip clustered by the "
                      "set's units, maxT over all heads). The headline heads are the in-sample best, so even this "
                      "p is optimistic for them.", ""]
            lines += table(STRONGEST_HEADER, [row for _, row in sorted(strongest, key=lambda i: _data_key(i[0]))])
            lines += [""]
        if relation == "negation" and leaders:
            lines += ["**Who leads on *n't*.** *n't* is two pieces (`n` + `'t`), so how it is read matters. The "
                      "leader on the *n't* items is found under each source-piece rule (its last piece, or the "
                      "mean over its pieces) and against each control set (the item's control adverbs, or an "
                      "affirmative clitic split the same way: *'d*, *'ll*, *'ve*, *'re*, *'s*). *The rule:* a "
                      "headline head's lead on *n't* is **robust** only when it leads under every rule and every "
                      "control set.", ""]
            lines += table(NT_LEADER_HEADER, leaders) + [""] + table(NT_HEAD_HEADER, robust) + [""]
    if not by_relation:
        lines += ["No head scores in these reports.", ""]
    return lines


# ---- held-out confirmation ----------------------------------------------------------------------------

def confirm_rows(model: str, folder: Path) -> list[list[str]]:
    where = folder / "confirm.json"
    result = read_json(where)
    chosen = need(result, "chosen_heads", where)
    exploration = result.get("exploration_set", folder.name)
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
            text = f"{need(row, 'head_name', where)} ({fmt(estimate)}, p {fmt_p(p)}"
            # The file's own verdict decides; the unit rule is applied again so an old file cannot overclaim.
            if need(row, "confirmed", where) and units >= MIN_UNITS:
                groups["confirmed"].append(text + ")")
            elif units < MIN_UNITS:
                groups["descriptive"].append(text + ")")
            else:
                # not rejected: what the test could have detected, where the file records it
                detectable = row.get("detectable_difference")
                groups["not confirmed"].append(
                    text + (f"; could detect >= {fmt(float(detectable))})" if detectable is not None else ")"))
        score = heads[0].get("score", result.get("main_score", ""))
        units = int(need(heads[0], "n_units", where))
        rows.append([model, exploration, ", ".join(chosen), name, f"{units}", score,
                     "; ".join(groups["confirmed"]) or "none",
                     "; ".join(groups["not confirmed"]) or "none", "; ".join(groups["descriptive"]) or "none"])
    return rows


def rules_fixed_notes(folders: list[Path]) -> list[str]:
    """One line per distinct `rules_fixed` sentence of the confirmation files (when the analysis rules were
    fixed relative to the held-out data), naming the models and exploration sets it is recorded for."""
    said: dict[str, list[str]] = {}
    for folder in folders:
        note = read_json(folder / "confirm.json").get("rules_fixed")
        if note:
            said.setdefault(str(note), []).append(f"{folder.parent.parent.name}/{folder.name}")
    return [f"- *When the rules were fixed* ({', '.join(where)}): {note}" for note, where in said.items()]


def confirm_section(models: list[Path], left_out: list[str]) -> list[str]:
    folders = [(model, folder) for model in models
               for folder in step_folders(model, "confirm", "confirm.json", left_out)]
    rows = [row for model, folder in folders for row in confirm_rows(model.name, folder)]
    lines = ["## 2. Do the heads hold on data they were not chosen on? Held-out confirmation", "",
             "Heads are chosen on an exploration set (at most five, each beating its baseline there) and tested, "
             "unchanged, on sets they were not chosen on: the other half of the built-in set and an outside set. "
             "The built-in halves are fixed in the data: negation is split by host word and by predicate (no host "
             "word and no predicate in both halves), coreference by template. "
             f"*The rule:* a chosen head is **confirmed** on a set when its test there, Holm-corrected over the "
             f"chosen heads, gives p < {ALPHA} **and** the set has at least {MIN_UNITS} independent units; below "
             f"{MIN_UNITS} units the result is **descriptive**, whatever its p. A head not confirmed is not "
             "distinguishable from its baseline there with that many units; where the file records it, the "
             "difference its test could have detected at 80% power is given (before Holm; accuracy rows have "
             "none). Sets without control adverbs are scored by attention above the next-word baseline. Each "
             "head is shown with its score on that set and its Holm p.", ""]
    if rows:
        lines += table(["model", "chosen on", "chosen heads", "tested on", "units", "score", "confirmed",
                        "not confirmed (not distinguishable)", "descriptive"], rows)
        notes = rules_fixed_notes([folder for _, folder in folders])
        if notes:
            lines += [""] + notes
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
    if passed:
        return numbers, f"passes ({units} units)", True
    # not rejected: a CI below 0 says the control swap moves the readout more; otherwise the two are not told apart
    below = math.isfinite(number(high, where, "ci")) and number(high, where, "ci") < 0
    # a gate that is not rejected states its power: the difference its CI could have told from 0
    power = could_detect(detectable_difference(number(low, where, "ci"), number(high, where, "ci")))
    return numbers, ("fails: nothing named (" + ("below the control swap" if below else
                     f"not distinguishable from the control swap with {units} units{power}") + ")"), False


def correlation_text(summary: dict, key: str, kind: str) -> str:
    """One correlation: rho [95% CI], and where the file has it the within-layer head-permutation p; a p at or
    above ALPHA says the correlation is not distinguishable from 0 with the heads compared, and a p below ALPHA
    whose bootstrap CI still holds 0 says the two tests disagree, so nothing is claimed."""
    part = (summary.get(key) or {}).get(kind)
    if not part or "spearman" not in part:
        return "n/a"
    text = f"{fmt(part['spearman'], 2, True)} {fmt_ci(part.get('ci_low'), part.get('ci_high'), 2, True)}"
    p = part.get("p_permutation")
    if p is None or not math.isfinite(float(p)):
        return text
    text += f", p {fmt_p(float(p))}"
    if float(p) >= ALPHA:
        text += f": not distinguishable from 0 with {part.get('n_heads', '?')} heads"
    elif _holds_zero(part.get("ci_low"), part.get("ci_high")):
        text += ": the permutation test rejects 0 but the bootstrap CI holds it; not claimed"
    return text


def _holds_zero(low, high) -> bool:
    try:
        return float(low) <= 0 <= float(high)
    except (TypeError, ValueError):
        return False


def effects_label(summary: dict) -> str:
    """What the correlations were computed on ("exact effects", or "on estimates ..." where a screen made
    them), as the file labels them; "n/a" where the file does not say."""
    labels = {part.get("effects") for key in ("correlation", "norm_correlation")
              for part in (summary.get(key) or {}).values() if isinstance(part, dict) and part.get("effects")}
    return "; ".join(sorted(labels)) or "n/a"


READOUT_LABELS = (("embedding", "embedding (pieces both share)"), ("sentence", "normalised output"),
                  ("probe", "negation direction (probe)"), ("logit", "next-word logits"))


def readout_label(summary: dict) -> str:
    """The readout a step's effects rest on, in two or three words, from the step's own description."""
    text = str(summary.get("readout", ""))
    if text.startswith("embedding") and "every position" in text:
        return "embedding (every piece)"
    return next((label for prefix, label in READOUT_LABELS if text.startswith(prefix)), text or "n/a")


def path_rows(model: str, folder: Path) -> list[list[str]]:
    """Direct and indirect effects of the heads a step traced (its named heads and its top 3 per kind), each
    marked named or not; none where the step predates path patching."""
    where = folder / "summary.json"
    summary = read_json(where)
    paths = summary.get("paths") or {}
    gate_numbers, _verdict, may_name = gate_text(need(summary, "gate", where), where)
    named = need(summary, "named", where) if may_name else {}
    rows = []
    for row in paths.get("rows") or []:
        name = head_name(need(row, "layer", where), need(row, "head", where))
        is_named = any(as_head(item, where)[0] == name for item in named.get(row.get("kind"), []))
        cell = lambda key: (f"{fmt(number(need(row, key, where), where, key), sign=True)} "      # noqa: E731
                            f"{fmt_ci(number(row.get(key + '_ci_low'), where, key), number(row.get(key + '_ci_high'), where, key), sign=True)}")
        rows.append([model, summary.get("data", folder.name), readout_label(summary), row.get("kind", "?"), name,
                     "yes" if is_named else "no", cell("total"), cell("direct"), cell("indirect"),
                     str(row.get("where", "n/a"))])
    return rows


def patching_rows(model: str, folder: Path) -> tuple[list[str], list[str], list[str] | None]:
    """(the gate-and-names row, the attention-vs-effect row, the rows-accounting row or None where the file
    predates it) of one patching step."""
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
    gate_row = [model, data, readout_label(summary), f"{need(summary, 'n_pairs', where)}", method, gate_numbers,
                gate_verdict,
                named_text(named.get("noising", []), "noising", effects, folder / "effects.csv"),
                named_text(named.get("denoising", []), "denoising", effects, folder / "effects.csv"),
                largest_text, ", ".join(others) or "none"]
    correlation_row = [model, data, effects_label(summary), correlation_text(summary, "correlation", "noising"),
                       correlation_text(summary, "norm_correlation", "noising"),
                       correlation_text(summary, "correlation", "denoising"),
                       correlation_text(summary, "norm_correlation", "denoising")]
    rows = summary.get("rows")
    accounting = None
    if rows:
        unused = need(rows, "not_patched", where)
        accounting = [model, data, f"{need(rows, 'rows', where)}", f"{need(rows, 'patched', where)}",
                      f"{sum(unused.values())}",
                      "; ".join(f"{reason}: {count}" for reason, count in unused.items()) or "none"]
    return gate_row, correlation_row, accounting


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


def ranks_text(ranks: str) -> str:
    """sets.csv's `ranks_in_layer` ("1-7:1/12 1-8:2/12") as "1-7 (1/12), 1-8 (2/12)": each chosen head's rank
    within its layer by its single-head effect."""
    parts = []
    for item in ranks.split():
        head, _, rank = item.partition(":")
        parts.append(f"{head} ({rank})" if rank else head)
    return ", ".join(parts)


def holm_floor_reached(n_random: int, n_tests: int) -> bool:
    """Whether Holm over n_tests comparisons can never fall below ALPHA with n_random random sets: the smallest
    p_random is 1 / (1 + n_random), and Holm multiplies the smallest p by the number of comparisons."""
    return n_tests / (1 + n_random) >= ALPHA


def set_reading(row: dict, path: Path, n_tests: int) -> str:
    """A chosen set's reading by the sets rule: k = 1 is a rank within its layer, not a test; a larger set is
    above random sets when its Holm p (over the file's n_tests comparisons) < ALPHA, else not distinguishable
    from them, with the excess over the random median the test could have detected, or, where the number of
    random sets makes Holm unable to reach ALPHA at all, that; never "no more than random"."""
    if row.get("test") == "rank":
        return "a rank, not a test"
    p_holm = number(row.get("p_holm"), path, "p_holm")
    if math.isnan(p_holm):
        return "no Holm p in this file (written before the rule): p_random uncorrected"
    if p_holm < ALPHA:
        return "above random sets"
    n_random = row.get("n_random") or ""
    if n_random.isdigit() and holm_floor_reached(int(n_random), n_tests):
        return (f"not distinguishable from random sets: with {n_random} random sets, Holm over {n_tests} "
                f"comparisons cannot fall below {ALPHA}")
    detectable = number(row.get("detectable"), path, "detectable")
    return "not distinguishable from random sets" + (
        f" (could detect >= {fmt(detectable)} over the random median)" if not math.isnan(detectable) else "")


def sets_rows(model: str, folder: Path) -> list[list[str]]:
    """Head sets chosen by attention or by effect against layer-matched random sets (whole layers left out)."""
    path = folder / "sets.csv"
    if not path.is_file():
        return []
    rows = []
    table_rows = read_csv(path)
    n_tests = sum(row.get("test") == "random sets" for row in table_rows)     # the comparisons Holm is over
    for row in table_rows:
        for key in ("kind", "selection", "k", "heads", "effect", "ci_low", "ci_high", "random_mean", "p_random"):
            if key not in row:
                raise FindingsError(f"{path}: the findings page needs the column {key!r}")
        if row["selection"] == "layer":
            continue
        n_random = row.get("n_random") or "?"
        heads = ranks_text(row["ranks_in_layer"]) if row.get("ranks_in_layer") else ", ".join(row["heads"].split())
        if row.get("random_median"):
            random = (f"{fmt(number(row['random_median'], path, 'random_median'))} "
                      f"{fmt_ci(number(row.get('random_low'), path, 'random_low'), number(row.get('random_high'), path, 'random_high'))}")
        else:
            random = f"mean {fmt(number(row['random_mean'], path, 'random_mean'))}"
        p_holm = number(row.get("p_holm"), path, "p_holm")
        rows.append([model, row["kind"], row["selection"], row["k"], heads,
                     f"{fmt(number(row['effect'], path, 'effect'))} "
                     f"{fmt_ci(number(row['ci_low'], path, 'ci_low'), number(row['ci_high'], path, 'ci_high'))}",
                     random, f"{fmt_p(number(row['p_random'], path, 'p_random'))} (of {n_random})",
                     fmt_p(p_holm) if not math.isnan(p_holm) else "n/a", set_reading(row, path, n_tests)])
    return rows


def patching_section(models: list[Path], left_out: list[str]) -> list[str]:
    gates, correlations, accounting, screens, sets, paths = [], [], [], [], [], []
    without_sets = []          # models with patching steps but no head sets in any of them
    for model in models:
        folders = step_folders(model, "patching", "summary.json", left_out)
        if folders and not any((folder / "sets.csv").is_file() for folder in folders):
            without_sets.append(model.name)
        for folder in folders:
            gate_row, correlation_row, rows_row = patching_rows(model.name, folder)
            gates.append(gate_row)
            correlations.append(correlation_row)
            if rows_row:
                accounting.append(rows_row)
            screens += screen_rows(model.name, folder)
            paths += path_rows(model.name, folder)
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
             f"patched and over the kinds run (maxT p < {ALPHA} / kinds) **and** beats its own effect on the control "
             "pairs (corrected alike), **and** its mean effect is at least 0.02 (2% of the difference). Each named "
             "head is shown with its effect and its effect on the control pairs. A head not named has shown no "
             "single-head effect with this readout; it may still be used, because other heads can compensate "
             "(section 4).", "",
             "**Readouts.** An effect is a share of what the swap does to a *readout*, and a head can matter for "
             "one readout and not another, so each step names its readout, with its own gate: the *embedding* "
             "(the final states averaged over the pieces both sentences share, projected on the pair's own "
             "clean − corrupt direction), the encoder's *normalised output* (what a sentence-embedding model "
             "returns: the mean over every piece, scaled to length 1), a *negation direction* (the weights of a "
             "linear probe trained to tell CD-SCO sentences with a negation cue from those without, disjoint from "
             "the patched pairs), and for a decoder its *next-word logits* (NEG-136: the logit of the negated "
             "ending minus the affirmative one; Winogender: the stereotypical pronoun minus the other, after Vig et "
             "al. 2020).", ""]
    if not gates:
        return lines + ["No patching in these reports.", ""]
    lines += table(["model", "pairs from", "readout", "pairs", "method", "gate: relation swap vs control swap",
                    "gate", "named, noising (effect)", "named, denoising (effect)",
                    "largest single-head noising effect", "named in other kinds (count)"], gates) + [""]
    if accounting:
        lines += ["**Rows of the data.** Every row the step read is either patched (a row of a usable pair) or "
                  "counted unused with its reason; the two add up to all rows.", ""]
        lines += table(["model", "pairs from", "rows read", "patched", "unused", "unused, by reason"],
                       accounting) + [""]
    lines += ["**Attention against effect.** Does a head that attends more from the swapped word matter more? "
              "Spearman correlation between each head's attention and its effect, ranked within each layer "
              "(effects grow with depth), with a 95% CI from a two-level bootstrap (pairs, then the heads within "
              "each layer); the norm-based attention (the weight times the size of what the head moves, "
              "Kobayashi et al. 2020) beside it. *The rule:* p is two-sided, from shuffling the attention "
              f"scores among the heads of each layer; at p >= {ALPHA} the correlation is **not distinguishable "
              "from 0** with the heads compared, and it is claimed only where p < "
              f"{ALPHA} and the CI excludes 0 as well. Where the screen made the effects, the correlation is over "
              "first-order **estimates**, not exact effects (the column says which).", ""]
    lines += table(["model", "pairs from", "effects", "noising: attention", "noising: norm-based",
                    "denoising: attention", "denoising: norm-based"], correlations) + [""]
    if paths:
        lines += ["**Where a head's effect goes: direct and indirect (path patching).** For each named head and "
                  "the top 3 per kind, the *direct* effect is the same patch with every later attention head "
                  "frozen at its own run's value, so the change reaches the readout without passing through a "
                  "later head (MLPs and layer norms recomputed, as Wang et al. 2022 do); the *indirect* effect is "
                  "the rest, what later heads make of it. A head whose effect is all direct **carries** something "
                  "to the output (a head that copies the cue into every position would); an indirect effect is "
                  "**used by later heads**. *The rule:* each part's sign is tested by clustered sign flips with "
                  "maxT over every head, part and sign of the step; a part whose corrected p is at or above "
                  f"{ALPHA} is not distinguishable from 0. A head of the last layer has no later head, so its effect "
                  "is direct by definition.", ""]
        lines += table(["model", "pairs from", "readout", "kind", "head", "named", "total [95% CI]",
                        "direct [95% CI]", "indirect [95% CI]", "where the effect goes"], paths) + [""]
    if screens:
        lines += ["**The attribution screen.** Where a step was screened, a first-order estimate (one forward and "
                  "one backward pass) picked the heads to patch exactly, on the same pairs it then tested (an "
                  "in-sample choice of the maxT family); only exact patching names heads. How far the "
                  "estimate agreed with exact patching on the heads patched exactly (rank correlation, how many "
                  "of exact's top 5 were in the estimate's top 10, and which it missed):", ""]
        lines += table(["model", "pairs from", "kind", "heads patched exactly", "Spearman", "exact top 5 in estimate's "
                        "top 10", "missed by the estimate"], screens) + [""]
    if sets or without_sets:
        lines += ["## 4. Heads together: head sets against random sets", ""]
    if without_sets:
        covered = "the table below covers only the other models" if sets else "no report here has any"
        reports = "its report" if len(without_sets) == 1 else "their reports"
        lines += [f"**Head sets were not run** for {', '.join(without_sets)}: no patching step in {reports} used "
                  f"`analysis patch --sets`, so {covered}.", ""]
    if sets:
        lines += ["Single heads can hide a shared effect, so the top k heads by attention score and the top k by "
                  "single-head effect are patched together and compared with random sets of k heads from the "
                  "same layers (as many per layer as the chosen set). *The rules:* p_random = (1 + b) / (1 + n), "
                  "with b the random sets whose effect is at least the chosen set's; a set of k > 1 heads is "
                  f"**above random sets** when its Holm p (over every k > 1 comparison of the step) is below "
                  f"{ALPHA}, and otherwise **not distinguishable from random sets**, with the excess over the "
                  "random sets' median the test could have detected (their 95th percentile minus their median); "
                  "not being told apart from random sets is not evidence that the set matters as little as they do. With k = 1 the random sets "
                  "are the other heads of its layer, so k = 1 is a **rank**, not a test: each chosen head is "
                  "shown with its rank in its layer by single-head effect. Sets chosen by effect were chosen on "
                  "the same pairs, which favours them. (`sets.csv` also patches each whole layer.)", ""]
        lines += table(["model", "pairs from", "kind", "chosen by", "k", "heads (rank in layer)", "effect [95% CI]",
                        "random sets: median [2.5%, 97.5%]", "p_random (of n)", "p_holm", "reading"], sets) + [""]
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
