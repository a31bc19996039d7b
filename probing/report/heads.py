"""Head-score reports: the summary, the heatmap PNG, the Markdown and the strata table that `analysis heads` and
the demo write. Claims in the Markdown come from the maxT-corrected tests only, never with fewer than
`probing.heads.MIN_UNITS` resampling units.

Every file is written atomically (see `probing.outputs`).
"""
from __future__ import annotations

import re

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from probing.defaults import BATCH_TOKENS, MENTION, N_BOOT, N_PERM, SEED, SOURCE_PIECES
from probing.outputs import atomic_write, write_json, write_text

HEAD_FILES = ["heads.csv", "summary.json", "heatmap.png", "report.md", "strata.csv"]
CAVEAT = ("Attention weights show where a head looks, not why the model decides what it decides "
          "(Jain & Wallace 2019; Wiegreffe & Pinter 2019): a high score is a lead for ablation and "
          "probing, not an explanation.")


POWER = 0.80   # the power at which a non-rejecting test's detectable difference is stated


def detectable_difference(ci_low: float, ci_high: float, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true difference a test with this 95% CI would detect with probability `power`:
    MDE ~ (z_{1-alpha/2} + z_{power}) * SE, with SE = the 95% CI's half-width / z_{0.975} (the resampling CI read
    as a normal interval). It ignores the correction over heads, so it is a lower bound on what a family-wise
    test could detect. NaN when the CI is not finite."""
    z = NormalDist().inv_cdf
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return float("nan")
    se = (ci_high - ci_low) / 2 / z(0.975)
    return float((z(1 - alpha / 2) + z(power)) * se)


def not_shown(against: str, n_units: int, mde: float) -> str:
    """Power-aware wording for a test that does not reject: what it could have told apart, never "no effect"."""
    text = f"is not distinguishable from {against} with {n_units} units"
    if np.isfinite(mde):
        text += (f" (at {POWER:.0%} power the test could detect a difference of about {mde:.3f}: "
                 "(z_0.975 + z_0.80) x SE from the 95% CI half-width, before the correction over heads)")
    return text


SOURCE_PIECES_RULE = {
    "last": "a source of several pieces (the cue, the control adverb, the pronoun, each word of the next-word "
            "baseline) is read from its last piece, the one adjacent to what follows; targets are summed over "
            "their pieces",
    "mean": "a source of several pieces is averaged over its pieces (Clark et al. 2019); targets are summed "
            "over their pieces",
}


def run_heads(model, data: str, out: Path, relation: str | None = None, data_root=None,
              skip_bad: bool = False, limit: int | None = None, renormalize: bool = False,
              batch_tokens: int = BATCH_TOKENS, n_boot: int = N_BOOT, n_perm: int = N_PERM, progress: bool = False,
              device: str | None = None, dtype: str | None = None, parallel: bool = False,
              mention: str = MENTION, by: list[str] | None = None, source_pieces: str = SOURCE_PIECES) -> dict:
    """Load the data, score every head, write the head files to `out`; return the summary.

    model: a LoadedModel, or a name / path to load (on `device` with `dtype`); data: a built-in set's name, a
    JSONL path or a dataset's name. parallel=True (inside `accelerate launch`) shards the scoring; only the main
    process writes files.
    """
    import sys
    from probing.examples import load_examples
    from probing.heads import score_heads
    from probing.models import as_loaded
    examples = load_examples(data, data_root=data_root, skip_bad=skip_bad, limit=limit)
    load_report = examples.report
    if progress:
        print(load_report.summary(), file=sys.stderr)
    if parallel:
        from probing.parallel import is_main_process, process_device
        device = device or str(process_device())
    scores = score_heads(as_loaded(model, device=device, dtype=dtype), examples, relation=relation,
                         batch_tokens=batch_tokens, renormalize=renormalize, n_boot=n_boot, n_perm=n_perm,
                         progress=progress, parallel=parallel, mention=mention, by=by, source_pieces=source_pieces)
    summary = build_summary(scores, data, load_report, renormalize=renormalize)
    if scores.relation == "negation":
        # The same heads under the other source-piece rule, so a reader sees what the rule changes (issue: a
        # two-piece "n't" averaged against a one-piece control adverb).
        other_rule = "mean" if source_pieces == "last" else "last"
        other = score_heads(as_loaded(model, device=device, dtype=dtype), examples, relation=relation,
                            batch_tokens=batch_tokens, renormalize=renormalize, n_boot=n_boot, n_perm=n_perm,
                            parallel=parallel, mention=mention, source_pieces=other_rule)
        summary["source_pieces_side_by_side"] = rules_side_by_side(scores, other)
        if data in CLITIC_CONTROLS:
            # The second control set for "n't" (affirmative clitics split the same way), under both rules.
            clitics = load_examples(CLITIC_CONTROLS[data], data_root=data_root, limit=limit)
            by_clitic = {result.source_pieces: result for result in (
                score_heads(as_loaded(model, device=device, dtype=dtype), clitics, relation=relation,
                            batch_tokens=batch_tokens, renormalize=renormalize, n_boot=n_boot, n_perm=n_perm,
                            parallel=parallel, mention=mention, source_pieces=rule)
                for rule in (source_pieces, other_rule))}
            leaders = nt_leaders({source_pieces: scores, other_rule: other}, by_clitic)
            headline = [f"{h['layer']}-{h['head']}" for h in summary["top_heads"]]
            summary["nt_robustness"] = {"leaders": leaders, "heads": nt_robustness(leaders, headline),
                                        "control_sets": {"adverbs": data, "clitics": CLITIC_CONTROLS[data]},
                                        "rules_not_run": NOT_RUN_RULES}
    if not parallel or is_main_process():
        Path(out).mkdir(parents=True, exist_ok=True)
        write_outputs(Path(out), scores, summary)
    return summary


def _head_records(table, columns) -> list[dict]:
    return table[[c for c in columns if c in table]].to_dict(orient="records")


def _top_by_cue_form(scores, k: int) -> dict[str, list[dict]]:
    """The top k heads by the main score, over all items and per cue form ("not", "n't") where the data has it."""
    key, fwer = scores.main_score, ("paired_p_fwer" if scores.main_score == "paired_difference" else "p_fwer")
    columns = ["layer", "head", key, f"{key}_ci_low", f"{key}_ci_high", fwer, "mean_attention"]
    parts = {"all": scores.task_table()}
    if scores.strata is not None:
        cue = scores.strata[(scores.strata["by"] == "cue_form") & (scores.strata["task"] == scores.primary_task)]
        parts.update({str(form): part for form, part in cue.groupby("stratum", sort=False)})
    return {name: _head_records(part.sort_values([key, "layer", "head"], ascending=[False, True, True]).head(k),
                                columns) for name, part in parts.items()}


def rules_side_by_side(scores, other, k: int = 5) -> dict:
    """Top heads under both source-piece rules (`scores` is the run's own rule), per cue form."""
    return {"main_score": scores.main_score, "rules": {
        rule: _top_by_cue_form(result, k) for rule, result in ((scores.source_pieces, scores),
                                                               (other.source_pieces, other))}}


# Sets with a second control set for "n't" (the affirmative clitics of probing.examples.build_builtin).
CLITIC_CONTROLS = {"builtin-negation": "builtin-negation-clitics"}
# Source-piece rules a reviewer may ask for that the scorer does not have (probing.alignment.SOURCE_PIECE_RULES).
NOT_RUN_RULES = {"max": "not implemented in the scorer: reading a source from its piece with the highest "
                        "attention is not one of the source-piece rules, so it is not in this table"}


def _leader(table, key: str = "paired_difference") -> dict:
    """The head with the highest `key` in a task table, with its score and the runner-up's."""
    ranked = table.sort_values([key, "layer", "head"], ascending=[False, True, True])
    best, second = ranked.iloc[0], ranked.iloc[1] if len(ranked) > 1 else ranked.iloc[0]
    fwer = "paired_p_fwer" if key == "paired_difference" else "p_fwer"
    return {"head": f"{int(best['layer'])}-{int(best['head'])}", "score": float(best[key]),
            "p_fwer": float(best[fwer]), "runner_up": f"{int(second['layer'])}-{int(second['head'])}",
            "margin": float(best[key] - second[key])}


def nt_leaders(adverb_runs: dict, clitic_runs: dict) -> dict:
    """Who leads on "n't" for each (source-piece rule, control set): "rule / adverbs" is the cue_form = n't
    stratum of the main set (each n't sentence against its item's mean control adverb), "rule / clitics" the
    clitic set (each n't sentence against its affirmative clitic). {label: `_leader` record}."""
    out = {}
    for rule, scores in adverb_runs.items():
        strata = scores.strata
        nt = None if strata is None else strata[(strata["by"] == "cue_form") & (strata["stratum"] == "n't")
                                                & (strata["task"] == scores.primary_task)]
        if nt is not None and len(nt):
            out[f"{rule} / adverbs"] = _leader(nt, scores.main_score)
    for rule, scores in clitic_runs.items():
        out[f"{rule} / clitics"] = _leader(scores.task_table(), scores.main_score)
    return out


def nt_robustness(leaders: dict, heads: list[str]) -> list[dict]:
    """Per headline head: under which (rule / control set) it leads on "n't", and the verdict: "leads under
    every rule and control", "never leads", or which rule or control decides it (the combinations where it
    does not lead, with their leaders)."""
    rows = []
    for head in heads:
        leads = [label for label, rec in leaders.items() if rec["head"] == head]
        lost = [f"{label}: {rec['head']}" for label, rec in leaders.items() if rec["head"] != head]
        if leaders and len(leads) == len(leaders):
            verdict = "leads under every rule and control set"
        elif not leads:
            verdict = "leads under no rule and control set"
        else:
            deciders = [f"the {name} ({', '.join(sorted(won))} only)" for position, name in
                        ((0, "rule"), (1, "control set")) if (won := _decides(leads, list(leaders), position))]
            verdict = ("leads only under " + ", ".join(leads) + "; decided by "
                       + (" and ".join(deciders) if deciders else "the combination") + "; elsewhere " + "; ".join(lost))
        weak = [f"{label} (p_fwer {leaders[label]['p_fwer']:.2g})" for label in leads
                if leaders[label].get("p_fwer", 0.0) >= 0.05]
        if weak:    # leading the ranking is not beating the control there
            verdict += "; its lead over the control is not significant under " + ", ".join(weak)
        rows.append({"head": head, "leads_under": leads, "verdict": verdict})
    return rows


def _decides(leads: list[str], labels: list[str], position: int) -> set[str]:
    """The values of one dimension of the "rule / control set" labels (position 0: rule, 1: control set) that
    alone say where a head leads: it leads exactly in the labels with those values and not in the others.
    Empty when that dimension does not decide it."""
    values = {label.split(" / ")[position] for label in labels}
    won = {label.split(" / ")[position] for label in leads}
    decided = set(leads) == {label for label in labels if label.split(" / ")[position] in won}
    return won if len(values) > 1 and won and won != values and decided else set()


def _nt_robustness_rows(robust: dict) -> list[str]:
    lines = ["## Who leads on \"n't\": every rule and control set", "",
             "A head leads a cue form only if it leads against every control set and under every source-piece "
             "rule. Control sets: the mean over the item's control adverbs (main set) and the affirmative clitic "
             "split the same way as \"n't\" (`'d`, `'ll`, `'ve`, `'re`, `'s`: " + robust["control_sets"]["clitics"]
             + "). Rules not run: " + "; ".join(f"{k}: {v}" for k, v in robust["rules_not_run"].items()) + ".", "",
             "| rule / control set | leader on n't | paired difference | p_fwer | runner-up (margin) |",
             "|---|---|---|---|---|"]
    for label, rec in robust["leaders"].items():
        lines.append(f"| {label} | {rec['head']} | {rec['score']:.3f} | {rec['p_fwer']:.2g} | "
                     f"{rec['runner_up']} ({rec['margin']:+.3f}) |")
    lines += ["", "| headline head | robust lead on n't |", "|---|---|"]
    lines += [f"| {row['head']} | {row['verdict']} |" for row in robust["heads"]]
    return lines + [""]


def _side_by_side_rows(side: dict) -> list[str]:
    key = side["main_score"]
    fwer = "paired_p_fwer" if key == "paired_difference" else "p_fwer"
    rules = list(side["rules"])
    lines = ["## The source-piece rule, side by side", "",
             f"Top 5 heads by `{key}` when a source of several pieces (\"n't\" is `'` + `t`) is read from its "
             "last piece, beside Clark et al.'s average over its pieces. One-piece sources (\"not\") are the same "
             "under both rules, so only the n't rows can differ much.", "",
             "| items | " + " | ".join(f"{rule} rule" for rule in rules) + " |", "|---|" + "---|" * len(rules)]
    for part in side["rules"][rules[0]]:
        cells = []
        for rule in rules:
            rows = side["rules"][rule].get(part, [])
            cells.append(", ".join(f"{r['layer']}-{r['head']} ({r[key]:.3f}, p_fwer {r[fwer]:.2g})" for r in rows))
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return lines + [""]


def build_summary(scores, data_name: str, load_report, renormalize: bool = False, k: int = 5) -> dict:
    """The facts a reader needs to trust the table: model, data, counts, direction, the mention rule, the
    resampling unit and its count, and per task the top heads, baselines, cross-fitted best head and claims."""
    from probing.heads import ALPHA
    key = scores.main_score
    primary = scores.primary_task
    columns = list(dict.fromkeys(["layer", "head", key, f"{key}_ci_low", f"{key}_ci_high", "mean_attention",
                                  "accuracy", "above_baseline", "next_word_baseline", "control_attention",
                                  "paired_difference", "p_value", "p_fwer", "paired_p_fwer", "p_holm",
                                  "twin_consistency", "pro_anti_gap", "flags"]))
    tasks = {}
    for task, info in scores.tasks.items():
        table = scores.task_table(task)
        tasks[task] = {**info, "baselines": task_baselines(scores.relation, table),
                       "top_heads": _head_records(scores.ranked(task=task).head(k), columns),
                       "n_significant_heads_fwer": int(table["significant"].sum()),
                       "claim": claim(scores, task),
                       "detectable_difference_best_head": _finite_or_none(best_head_detectable(scores, task)),
                       "detectable_difference_rule": "(z_0.975 + z_0.80) x SE, SE = 95% CI half-width / 1.96; "
                                                     "before the correction over heads"}
        test = strongest_baseline_test(scores, task)
        if test is not None:
            tasks[task]["strongest_baseline_test"] = test
            tasks[task]["headline"] = headline(test)
    summary = {
        "model": scores.model, "data": data_name, "relation": scores.relation, "direction": scores.direction,
        "layers": scores.n_layers, "heads": scores.n_heads, "mention": scores.mention,
        "source_pieces": scores.source_pieces, "source_pieces_rule": SOURCE_PIECES_RULE[scores.source_pieces],
        "resampling_unit": scores.resampling_unit,
        "n_units": scores.tasks[primary]["n_units"],
        "factors": scores.tasks[primary].get("factors", f"{scores.tasks[primary]['n_units']} units"),
        "n_examples": len(scores.examples), "n_controls": len(scores.controls) if scores.controls else 0,
        "n_skipped_alignment": len(scores.skipped), "skipped_alignment": scores.skipped[:50],
        "n_skipped_loading": load_report.n_skipped, "skipped_loading": load_report.skipped[:50],
        "ranked_by": key, "renormalized_without_special_tokens": renormalize,
        "primary_task": primary,
        "top_heads": _head_records(scores.ranked().head(k), columns),
        "top_heads_by_mean_attention": _head_records(scores.ranked(by="mean_attention").head(k), columns),
        "n_significant_heads_holm": int((scores.task_table()["p_holm"] < ALPHA).sum()),
        "n_significant_heads_fwer": int(scores.task_table()["significant"].sum()),
        "significance": (f"`significant` = the main score's Westfall-Young maxT p_fwer < {ALPHA} "
                         f"({'paired_p_fwer' if key == 'paired_difference' else 'p_fwer'})"),
        "test": str(scores.table["test"].iloc[0]),
        "baselines": task_baselines(scores.relation, scores.task_table()),
        "tasks": tasks,
        "ci": ci_rule(scores),
    }
    if scores.strata is not None:
        summary["strata"] = {f"{by}={stratum}|{task}": _head_records(
            part.sort_values(key if key in part else "accuracy", ascending=False).head(k), columns)
            for (by, stratum, task), part in scores.strata.groupby(["by", "stratum", "task"], sort=False)}
    return summary


def ci_rule(scores) -> str:
    """How the CIs were made: a one-way cluster bootstrap, or (examples crossed by a second factor,
    meta.predicate) the wider of that and the two-way Cameron-Gelbach-Miller interval (probing.stats)."""
    if any("predicate" in m for m in scores.examples.meta):
        return ("95% CI: the wider of the cluster bootstrap over meta.group and the two-way (meta.group x "
                "meta.predicate) Cameron-Gelbach-Miller interval, per head")
    return "95% CI: percentile bootstrap over the resampling units"


def task_baselines(relation: str, table) -> dict:
    """The positional (and agreement) baselines of one task's table."""
    if relation == "negation":
        return {"next_word_baseline_mean_over_heads": float(table["next_word_baseline"].mean()),
                "next_word_baseline_max_over_heads": float(table["next_word_baseline"].max())}
    names = ("nearest_candidate_accuracy", "best_offset_accuracy", "first_candidate_accuracy", "chance_accuracy",
             "agreement_oracle_accuracy")
    return {name: float(table[name].iloc[0]) for name in names if name in table and not np.isnan(table[name].iloc[0])}


def oracle_credit(meta: dict, n_candidates: int) -> float:
    """What pronoun agreement alone scores on one example: 1 where it decides, chance 1/k where it does not,
    NaN where the example does not say."""
    if "agreement_decides" not in meta:
        return float("nan")
    return 1.0 if meta["agreement_decides"] else 1.0 / n_candidates


SUBJECT_ALL_WORDS = ("without a part-of-speech tagger (none is installed) the head of the first noun phrase cannot be "
                     "told from an adjective before it (\"The young woman\"); the subject rule runs only where the "
                     "data names its noun candidates (the first one)")
PARALLELISM = ("GAP ships no parses, and a word-order stand-in for subject/object position was not validated "
               "against parses")


def fixed_rule_baselines(sub) -> dict[str, np.ndarray]:
    """The fixed-rule, head-like baselines of one task's examples, each [example] credit (1.0 where the rule
    picks the antecedent) scored like a head on the same items: the positional one (`heads.positional_baseline`:
    the nearest candidate, or the best fixed offset on all-words), "first content word" (`naive.first_content_hit`)
    and, where the data names candidates, "the subject (first noun candidate)". In a fixed order (ties keep the
    earlier)."""
    from probing.heads import positional_baseline
    positional, positional_name, _offset = positional_baseline(sub)
    rules = {positional_name: positional.astype(np.float64)}
    if sub.first_content_hit is not None:
        rules["first content word"] = sub.first_content_hit.astype(np.float64)
    if all(t == "candidates" for t in sub.tasks):
        rules["the subject (first noun candidate)"] = sub.first_hit.astype(np.float64)
    return rules


def choice_rows(sub) -> tuple[np.ndarray, str]:
    """The rows the strongest baseline is chosen on: the exploration half (meta.split == "explore") where the
    set has one, else every row; and that choice in words."""
    explore = np.array([m.get("split") == "explore" for m in sub.meta], bool)
    if explore.any():
        return explore, f"the exploration half ({int(explore.sum())} of {len(sub)} examples)"
    return np.ones(len(sub), bool), f"all {len(sub)} examples (the set has no exploration half)"


def strongest_baseline_test(scores, task: str, n_perm: int = N_PERM, n_boot: int = N_BOOT, seed: int = SEED,
                            k: int = 5) -> dict | None:
    """Coreference: every headline head (the task's top k by accuracy) against the strongest baseline that
    applies, paired by example.

    The candidates are the fixed rules (`fixed_rule_baselines`) and the agreement oracle (where the data says
    whether agreement decides; then only on those examples). The strongest is the one with the highest accuracy
    on `choice_rows` (the exploration half where there is one); the oracle replaces the best fixed rule when it
    beats it on the examples it covers. Test: head credit - baseline credit per example, one-sided sign-flip
    clustered by meta.group with Westfall-Young maxT over all heads of the task (the correction of the table's
    positional test). Returns the best head's numbers at the top level (head, accuracies, difference with its
    cluster-bootstrap CI, p_value, p_fwer, detectable_difference) and every headline head under "heads"; None
    for negation."""
    from probing import stats
    if scores.relation != "coreference":
        return None
    rows = [i for i, t in enumerate(scores.examples.tasks) if t == task]
    sub = scores.examples.subset(rows)
    table = scores.task_table(task)
    top = table.sort_values("accuracy", ascending=False).head(k)
    columns = [int(r["layer"]) * scores.n_heads + int(r["head"]) for _, r in top.iterrows()]
    credit = sub.is_argmax.reshape(len(sub), -1).astype(np.float64)        # [example, layer*head]
    choose, chosen_on = choice_rows(sub)
    rules = fixed_rule_baselines(sub)
    considered = {name: float(hit[choose].mean()) for name, hit in rules.items()}
    name = max(considered, key=lambda n: considered[n])       # max keeps the first of equals (fixed order)
    baseline_all, keep = rules[name], np.arange(len(sub))
    oracle = np.array([oracle_credit(m, n) for m, n in zip(sub.meta, sub.n_candidates)])
    said = ~np.isnan(oracle)
    if (said & choose).any():
        considered["agreement oracle (where the data says whether agreement decides)"] = float(
            oracle[said & choose].mean())
        if oracle[said & choose].mean() > rules[name][said & choose].mean():
            name, baseline_all, keep = "agreement oracle", oracle, np.flatnonzero(said)
    baseline = baseline_all[keep]
    differences = credit[keep] - baseline[:, None]                           # [pair, layer*head]
    groups = [sub.groups[i] for i in keep]
    p_value, p_fwer = stats.sign_flip_tests(differences, n_perm, seed=seed, groups=groups)
    low, high = stats.bootstrap_ci(differences[:, columns], n_boot, seed=seed, groups=groups)
    n_units = stats.n_units(groups, len(keep))
    heads = [{"head": f"{c // scores.n_heads}-{c % scores.n_heads}", "head_accuracy": float(credit[keep, c].mean()),
              "difference": float(differences[:, c].mean()), "ci_low": float(low[j]), "ci_high": float(high[j]),
              "p_value": float(p_value[c]), "p_fwer": float(p_fwer[c]),
              "detectable_difference": detectable_difference(float(low[j]), float(high[j]))}
             for j, c in enumerate(columns)]
    return {**heads[0], "baseline": name, "baseline_accuracy": float(baseline.mean()),
            "baselines_considered": considered, "chosen_on": chosen_on, "heads": heads,
            "n_pairs": int(len(keep)), "n_units": n_units,
            "not_run": {**({} if "the subject (first noun candidate)" in rules else
                           {"the subject (first noun phrase) on all-words": SUBJECT_ALL_WORDS}),
                        "GAP's syntactic parallelism (Webster et al. 2018)": PARALLELISM},
            "test": "one-sided sign-flip, head credit - baseline credit per example, clustered by meta.group, "
                    "Westfall-Young maxT over all heads of the task (p_fwer); the headline heads are the in-sample "
                    "best, so even p_fwer is optimistic for them (see --confirm)"}


def headline(test: dict) -> str:
    """The best head against its strongest baseline, in one sentence that says whether the corrected test passed
    (and, where it did not, what it could have detected)."""
    from probing.heads import ALPHA
    verdict = ("beats it" if test.get("p_fwer", test["p_value"]) < ALPHA else
               "falls below it (95% CI below 0)" if test["ci_high"] < 0 else
               not_shown("it", test["n_units"], test.get("detectable_difference", float("nan"))))
    return (f"Against the strongest baseline that applies (chosen on {test.get('chosen_on', 'these examples')}), "
            f"the {test['baseline']} ({test['baseline_accuracy']:.3f}), {test['head']} ({test['head_accuracy']:.3f}) "
            f"{verdict}: paired difference {test['difference']:.3f} [{test['ci_low']:.3f}, {test['ci_high']:.3f}], "
            f"p_fwer = {test.get('p_fwer', test['p_value']):.2g} over {test['n_pairs']} paired examples.")


def strongest_baseline_rows(test: dict) -> list[str]:
    """The Markdown table of every headline head against the strongest baseline, with the baselines weighed."""
    from probing.heads import ALPHA
    weighed = ", ".join(f"{name} {acc:.3f}" for name, acc in test["baselines_considered"].items())
    lines = [f"Headline heads against the strongest baseline, **{test['baseline']}** "
             f"({test['baseline_accuracy']:.3f} on the {test['n_pairs']} tested examples), chosen on "
             f"{test['chosen_on']} among: {weighed}. {test['test']}.", "",
             "| head | accuracy | baseline | difference [95% CI] | p | p_fwer | verdict |", "|---|---|---|---|---|---|---|"]
    for h in test["heads"]:
        verdict = ("beats it" if h["p_fwer"] < ALPHA else "below it (95% CI below 0)" if h["ci_high"] < 0 else
                   f"not distinguishable with {test['n_units']} units (detectable at 80% power: about "
                   f"{h['detectable_difference']:.3f})")
        lines.append(f"| {h['head']} | {h['head_accuracy']:.3f} | {test['baseline_accuracy']:.3f} | "
                     f"{h['difference']:+.3f} [{h['ci_low']:+.3f}, {h['ci_high']:+.3f}] | {h['p_value']:.2g} | "
                     f"{h['p_fwer']:.2g} | {verdict} |")
    return lines + ["", "Detectable differences: (z_0.975 + z_0.80) x SE from the 95% CI half-width, before the "
                    "correction over heads."] + [f"- Not run, {name}: {why}." for name, why in test["not_run"].items()] + [""]


def best_head_detectable(scores, task: str) -> float:
    """The detectable difference (`detectable_difference`) of the task's best head's main score against its
    baseline or control; NaN for coreference accuracy, whose table CI is of the accuracy, not of the difference
    (its paired difference is in `strongest_baseline_test`)."""
    key = scores.main_score
    if key == "accuracy":
        return float("nan")
    best = scores.ranked(task=task).iloc[0]
    return detectable_difference(float(best[f"{key}_ci_low"]), float(best[f"{key}_ci_high"]))


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a missing number is null."""
    return float(value) if np.isfinite(value) else None


def claim(scores, task: str) -> str:
    """What the corrected test lets one say about the best head of a task, in one sentence."""
    from probing.heads import ALPHA, MIN_UNITS
    info = scores.tasks[task]
    if info["n_units"] < MIN_UNITS:
        return (f"Only {info['n_units']} independent units ({info['resampling_unit']}): too few to claim "
                "anything; the numbers are descriptive.")
    key = scores.main_score
    best = scores.ranked(task=task).iloc[0]
    fwer = "paired_p_fwer" if key == "paired_difference" else "p_fwer"
    positional = ("the best fixed-offset baseline" if "best_offset_accuracy" in scores.task_table(task)
                  and not scores.task_table(task)["best_offset_accuracy"].isna().all()
                  else "the nearest-candidate baseline")
    against = {"paired_difference": "its control adverb", "above_baseline": "the next-word baseline",
               "accuracy": positional}[key]
    verdict = f"beats {against}" if best[fwer] < ALPHA else not_shown(against, info["n_units"],
                                                                       best_head_detectable(scores, task))
    return (f"The best head by {key}, {best['layer']}-{best['head']}, {verdict} "
            f"({fwer} = {best[fwer]:.2g}, family-wise over all {len(scores.task_table(task))} heads); "
            f"{int(scores.task_table(task)['significant'].sum())} heads do.")


def write_outputs(out: Path, scores, summary: dict) -> None:
    """heads.csv, summary.json, heatmap.png, report.md and strata.csv; each atomic.

    strata.csv is always written so a result folder always has the same files; where the data has no meta
    to stratify by, it holds the header alone."""
    atomic_write(out / "heads.csv", lambda tmp: scores.table.to_csv(tmp, index=False, float_format="%.6g"))
    write_json(out / "summary.json", summary)
    for task, name in heatmap_files(scores).items():      # one panel per image: heatmap.png is the main task
        atomic_write(out / name, lambda tmp, task=task: save_heatmap(scores, tmp, task=task))
    write_text(out / "report.md", heads_markdown(scores, summary))
    strata = scores.strata if scores.strata is not None else pd.DataFrame(columns=["by", "stratum", *scores.table.columns])
    atomic_write(out / "strata.csv", lambda tmp: strata.to_csv(tmp, index=False, float_format="%.6g"))


SIGNED = ("above_baseline", "paired_difference", "pro_anti_gap")


def colour_scale(key: str, grid: np.ndarray):
    """(colour map, norm): diverging and centred on 0 for signed scores, so a negative head never looks
    "warm"; sequential from 0 to 1 for accuracies."""
    from matplotlib.colors import Normalize, TwoSlopeNorm
    if key in SIGNED:
        bound = max(float(np.nanmax(np.abs(grid))), 1e-9)
        return "RdBu_r", TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    return "viridis", Normalize(vmin=0.0, vmax=1.0)


def heatmap_files(scores) -> dict[str, str]:
    """task -> image file: the main task (`primary_task`) in heatmap.png, each other task in its own
    heatmap-<task>.png, so every picture is one panel, legible at a phone's width."""
    tasks = [scores.primary_task] + [t for t in scores.tasks if t != scores.primary_task]
    return {task: "heatmap.png" if i == 0 else f"heatmap-{re.sub(r'[^A-Za-z0-9_-]+', '-', task)}.png"
            for i, task in enumerate(tasks)}


def save_heatmap(scores, path, k: int = 5, task: str | None = None) -> None:
    """Layer x head heatmap of the main score for one task (the main task by default): a diverging map centred
    on 0 for signed scores, the top k heads outlined, heads significant after maxT correction marked with a dot.
    One panel, about 6 inches wide for 12 heads, in type large enough to read at half size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key = scores.main_score
    task = task or scores.primary_task
    fig, axes = plt.subplots(1, 1, squeeze=False,
                             figsize=(1.6 + 0.38 * scores.n_heads, 1.5 + 0.38 * scores.n_layers))
    for ax in axes[0]:
        table = scores.task_table(task)
        grid = table[key].to_numpy().reshape(scores.n_layers, scores.n_heads)
        cmap, norm = colour_scale(key, grid)
        image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
        significant = table["significant"].to_numpy().reshape(scores.n_layers, scores.n_heads)
        layers, heads = np.nonzero(significant)
        ax.scatter(heads, layers, s=18, c="black", edgecolors="white", linewidths=0.8, marker="o")
        for _, row in scores.ranked(task=task).head(k).iterrows():
            ax.add_patch(plt.Rectangle((row["head"] - 0.5, row["layer"] - 0.5), 1, 1, fill=False, ec="gold", lw=2))
        ax.set_xlabel("head", fontsize=10)
        ax.set_ylabel("layer", fontsize=10)
        ax.set_xticks(range(scores.n_heads))
        ax.set_yticks(range(scores.n_layers))
        ax.tick_params(labelsize=9)
        ax.set_title(f"{key}, task {task}\n{scores.model} ({scores.direction}); top {k} outlined, "
                     f"dot = significant (maxT)", fontsize=10)
        fig.colorbar(image, ax=ax).ax.tick_params(labelsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _ci(row, key) -> str:
    return f"{row[key]:.3f} [{row[f'{key}_ci_low']:.3f}, {row[f'{key}_ci_high']:.3f}]"


def _maybe(row, key, ci=False) -> str:
    if key not in row or row[key] != row[key]:
        return "n/a"
    return _ci(row, key) if ci and f"{key}_ci_low" in row else f"{row[key]:.3g}"


def _negation_rows(scores, table, k=5) -> list[str]:
    paired = "paired_difference" in table
    lines = ["| head | " + ("paired_difference | paired p_fwer | " if paired else "") +
             "above_baseline | p_fwer | mean_attention | next_word_baseline | control_attention |",
             "|---|" + ("---|---|" if paired else "") + "---|---|---|---|---|"]
    for _, row in table.sort_values(scores.main_score, ascending=False).head(k).iterrows():
        lines.append(f"| {row['layer']}-{row['head']} | " +
                     (f"{_ci(row, 'paired_difference')} | {row['paired_p_fwer']:.2g} | " if paired else "") +
                     f"{_ci(row, 'above_baseline')} | {row['p_fwer']:.2g} | {_ci(row, 'mean_attention')} | "
                     f"{row['next_word_baseline']:.3f} | {_maybe(row, 'control_attention')} |")
    return lines


def flag_text(row) -> str:
    """A head's flags, each with the significant test it rests on; where the agreement flag's twin half is a
    non-significant test (absence of evidence, not evidence), it says so: "not tested enough (n pairs)"."""
    from probing.heads import ALPHA
    parts = []
    for flag in [f for f in str(row.get("flags", "") or "").split(";") if f]:
        if flag == "agreement":
            twin = row.get("twin_p_fwer", float("nan"))
            twins = (f"twins: not tested enough ({int(row['n_twin_pairs'])} pairs)"
                     if twin == twin and twin >= ALPHA and "n_twin_pairs" in row else "")
            parts.append(f"agreement (where agreement decides: p_fwer {row['agreement_decided_p_fwer']:.2g}"
                         + (f"; {twins}" if twins else "") + ")")
        elif flag == "nearest":
            parts.append(f"nearest (p_fwer {row['nearest_p_fwer']:.2g})")
        elif flag == "stereotype":
            parts.append(f"stereotype (p_fwer {row['pro_anti_p_fwer']:.2g})")
        else:
            parts.append(flag)
    return "; ".join(parts) or "-"


def _coref_rows(scores, table, k=5) -> list[str]:
    lines = ["| head | accuracy | mean_attention | p_fwer (vs positional) | twin_consistency | pro_anti_gap | flags |",
             "|---|---|---|---|---|---|---|"]
    for _, row in table.sort_values("accuracy", ascending=False).head(k).iterrows():
        lines.append(f"| {row['layer']}-{row['head']} | {_ci(row, 'accuracy')} | {_ci(row, 'mean_attention')} | "
                     f"{row['p_fwer']:.2g} | {_maybe(row, 'twin_consistency', True)} | "
                     f"{_maybe(row, 'pro_anti_gap', True)} | {flag_text(row)} |")
    return lines


def heads_markdown(scores, summary: dict) -> str:
    """Per task: the top heads against their baselines, the claim the corrected test allows, the strata and the
    caveat."""
    from probing.heads import MIN_UNITS
    n_perm_floor = next(iter(summary["tasks"].values()))["p_value_floor"]
    lines = [f"# Head scores: {summary['relation']} on {summary['data']}", "",
             f"Model `{summary['model']}` ({summary['layers']} layers x {summary['heads']} heads), "
             f"{summary['n_examples']} examples ({summary['n_skipped_alignment'] + summary['n_skipped_loading']} "
             f"skipped), direction measured: **{summary['direction']}**. Heads are 0-indexed. "
             f"Mention rule: **{summary['mention']}** "
             + ("(a multi-word mention is its last word). " if summary["mention"] == "head" else
                "(cue and next word are used whole). " if summary["relation"] == "negation" else
                "(attention summed over the whole mention). ")
             + f"Source pieces: **{summary.get('source_pieces', 'mean')}**: "
             f"{SOURCE_PIECES_RULE[summary.get('source_pieces', 'mean')]}. "
             + f"Resampling units: **{summary.get('factors', summary['resampling_unit'])}**.", "",
             "95% cluster-bootstrap CIs in brackets. p values: one-sided sign-flip tests (whole units flip "
             "together; where examples cross frames and predicates, the frame parts and the predicate parts of "
             "the data flip independently, a crossed sign-flip); `p_fwer` is the Westfall-Young maxT step-down adjustment over all heads of the task "
             f"(floor {n_perm_floor:.1g}). Ties for the maximum give 1/k credit. Claims come from `p_fwer` only. "
             f"{summary.get('ci', '')}.", ""]
    if scores.relation == "negation":
        lines += ["`paired_difference` = attention cue -> next word minus attention control adverb -> the same "
                  "next word in the same sentence: the main score where controls exist. `above_baseline` = "
                  "`mean_attention` - `next_word_baseline` (any word -> its next word): how far the cue's "
                  "attention to the next word rises above that positional baseline.", ""]
    else:
        lines += ["`accuracy` = share of examples where the antecedent gets the most attention from the pronoun "
                  "among the candidates; `p_fwer` tests it against the positional baseline: on the candidates "
                  "task the candidate nearest the pronoun, on the all-words task (every word competes, so the "
                  "nearest word is never the antecedent) the best fixed-offset head, which always picks the word "
                  "at the offset where the antecedent sits most often in the set (`best_offset`, chosen on the "
                  "same examples, so it favours the baseline). `flags`: *agreement* (above chance where pronoun agreement decides, not "
                  "on twins), *nearest* (picks the nearest candidate beyond chance where it is wrong), "
                  "*stereotype* (pro - anti gap above 0), each from a maxT-corrected test.", ""]
    for task, info in summary["tasks"].items():
        table = scores.task_table(task)
        lines += [f"## Task: {task} ({info['n_examples']} examples, {info['n_units']} units"
                  + (f": {info['factors']}" if "factors" in info else "") + ")", ""]
        lines += ["Baselines: " + ", ".join(f"{k} {v:.3f}" for k, v in info["baselines"].items()) + ".", ""]
        lines += _negation_rows(scores, table) if scores.relation == "negation" else _coref_rows(scores, table)
        cross = info["best_head_cross_fitted"]
        lines += ["", f"Best head in sample: {info['best_head_in_sample']['head']} "
                  f"({info['best_head_in_sample']['score']:.3f}); cross-fitted (chosen on one half of the units, "
                  f"scored on the other): {cross['score']:.3f}.",
                  significance_counts(info), "", f"**{info['claim']}**", ""]
        if "headline" in info:
            lines += [f"**{info['headline']}**", ""]
        if "strongest_baseline_test" in info and "heads" in info["strongest_baseline_test"]:
            lines += strongest_baseline_rows(info["strongest_baseline_test"])
    if scores.relation == "negation":
        best_raw = scores.ranked(by="mean_attention").iloc[0]
        best = scores.ranked().iloc[0]
        lines += [f"The head with the highest raw `mean_attention` is {best_raw['layer']}-{best_raw['head']} "
                  f"({best_raw['mean_attention']:.3f}, any word's next word {best_raw['next_word_baseline']:.3f}); "
                  f"the best by {scores.main_score} is {best['layer']}-{best['head']}.", ""]
    if "source_pieces_side_by_side" in summary:
        lines += _side_by_side_rows(summary["source_pieces_side_by_side"])
    if "nt_robustness" in summary:
        lines += _nt_robustness_rows(summary["nt_robustness"])
    if scores.strata is not None:
        lines += ["## Strata", "", "Each stratum has its own tests; top 3 heads by the main score.", "",
                  "| stratum | task | examples | units | top heads |", "|---|---|---|---|---|"]
        key = scores.main_score
        for (by, stratum, task), part in scores.strata.groupby(["by", "stratum", "task"], sort=False):
            top = part.sort_values(key, ascending=False).head(3)
            fwer = "paired_p_fwer" if key == "paired_difference" else "p_fwer"
            heads = ", ".join(f"{r['layer']}-{r['head']} ({r[key]:.3f}, p_fwer {r[fwer]:.2g})"
                              for _, r in top.iterrows())
            units = int(part["n_units"].iloc[0])
            few = " (too few units to claim anything)" if units < MIN_UNITS else ""
            lines.append(f"| {by} = {stratum} | {task} | {int(part['n_examples'].iloc[0])} | {units}{few} | {heads} |")
        lines.append("")
    lines += [f"![heatmap, task {task}]({name})" for task, name in heatmap_files(scores).items()]
    lines += ["", f"*Caveat.* {CAVEAT}", ""]
    return "\n".join(lines)


def significance_counts(info: dict, bold: str = "**") -> str:
    """One task's count of heads with p_fwer < 0.05, in words: under the design's test (named with its
    factors), and what resampling frames alone, or examples as if independent, would have claimed."""
    counts = info["n_heads_p_fwer_below_0.05"]
    factors = info.get("factors", f"{info['n_units']} units")
    parts = []
    if "clustered" in counts:
        parts.append(f"{bold}{counts['clustered']}{bold} under the {info.get('test_design', 'clustered sign-flip')} "
                     f"({factors})")
    if "frame_only" in counts:
        parts.append(f"{counts['frame_only']} if frames alone were resampled (ignoring the predicates)")
    if "by_example" in counts:
        parts.append(f"{counts['by_example']} if examples were independent")
    return "Heads with p_fwer < 0.05: " + "; ".join(parts) + "."


def summary_text(summary: dict) -> str:
    """A short summary for stdout, one block per task."""
    key = summary["ranked_by"]
    lines = [f"{summary['model']} | {summary['data']} | {summary['relation']} ({summary['direction']}) | "
             f"{summary['n_examples']} examples | mention: {summary['mention']} | "
             f"source pieces: {summary.get('source_pieces', 'mean')} | units: "
             f"{summary.get('factors', summary['resampling_unit'])}",
             f"source-piece rule: {SOURCE_PIECES_RULE[summary.get('source_pieces', 'mean')]}"]
    for task, info in summary["tasks"].items():
        tops = ", ".join(f"{h['layer']}-{h['head']} ({h[key]:.3f})" for h in info["top_heads"])
        lines += [f"[{task}] {info['n_examples']} examples, {info.get('factors', str(info['n_units']) + ' units')}; "
                  f"top heads by {key}: {tops}",
                  f"[{task}] {significance_counts(info, bold='')}",
                  f"[{task}] baselines: " + ", ".join(f"{k}={v:.3f}" for k, v in info["baselines"].items()),
                  f"[{task}] {info['claim']}"]
        if "headline" in info:
            lines.append(f"[{task}] {info['headline']}")
    return "\n".join(lines)
