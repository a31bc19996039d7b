"""The findings page: generated from the committed reports (the committed page is what the generator writes),
every number on it read from them, the claim rules applied to recorded numbers, and a worded error when a
report lacks a key the page needs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from analysis.__main__ import main
from probing import defaults
from probing.report.findings import FINDINGS_FILE, FindingsError, findings_markdown, readout_label, write_findings
from tests.report_numbers import REPORTS, strip_code, unrecorded_heads, unrecorded_values

STEPS = ("heads/builtin-negation", "confirm/builtin-negation", "patching/builtin-negation")


def test_the_committed_findings_page_is_what_the_generator_writes_from_the_committed_reports():
    committed = (REPORTS / FINDINGS_FILE).read_text(encoding="utf-8")
    assert committed == findings_markdown(REPORTS), \
        "reports/FINDINGS.md is stale: regenerate it with `python -m analysis report --findings-only`"


def test_every_number_and_head_on_the_page_comes_from_the_reports():
    page = findings_markdown(REPORTS)
    text = strip_code(page)
    assert unrecorded_values(text) == []
    assert unrecorded_heads(text) == []
    for model in ("minilm", "mpnet", "gemma-270m"):
        if (REPORTS / model / "summary.json").is_file():
            assert f"[{model}]({model}/report.md)" in page


def _toy(tmp_path: Path, edit=None, steps=STEPS) -> Path:
    """A one-model reports folder made of MiniLM's committed steps (the negation steps by default); `edit(step,
    data)` may change a step's JSON before it is written."""
    root = tmp_path / "reports"
    model = root / "toy"
    model.mkdir(parents=True)
    (model / "summary.json").write_text("{}")
    for step in steps:
        source, target = REPORTS / "minilm" / step, model / step
        target.mkdir(parents=True)
        for path in source.iterdir():
            if path.suffix in (".json", ".csv"):
                shutil.copy(path, target / path.name)
        (target / ".done.json").write_text("{}")
        if edit:
            name = "confirm.json" if step.startswith("confirm") else "summary.json"
            data = json.loads((target / name).read_text())
            edit(step, data)
            (target / name).write_text(json.dumps(data))
    return root


def _row(page: str, *cells: str) -> str:
    """The one table row whose first cells are these."""
    start = "| " + " | ".join(cells) + " |"
    rows = [line for line in page.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, rows)
    return rows[0]


def _confirm_file() -> dict:
    return json.loads((REPORTS / "minilm" / "confirm" / "builtin-negation" / "confirm.json").read_text())


def test_the_claim_rules_are_applied_to_the_recorded_numbers(tmp_path):
    """Units, Holm and the gate decide, whatever a file's own verdict says; a test that does not reject says what it
    could have detected."""
    half, outside = "builtin-negation (confirmation half)", "blimp-npi-scope (-> ever)"

    def edit(step, data):
        if step.startswith("heads"):
            data["tasks"]["all-words"]["n_units"] = defaults.MIN_UNITS - 1
        if step.startswith("confirm"):
            first = {}
            for row in data["confirmation"]:
                if row["set"] == half:      # an old or wrong file: the unit rule still holds
                    row.update(n_units=defaults.MIN_UNITS - 1, confirmed=True, p_holm=0.001)
                if row["set"] == outside:   # the first head confirmed, the others not, with their power
                    is_first = first.setdefault(outside, row["head_name"]) == row["head_name"]
                    row.update(n_units=1000, confirmed=is_first, p_holm=0.001 if is_first else 0.5,
                               detectable_difference=0.0123)
        if step.startswith("patching"):
            data["gate"].update(passed=False, relation_minus_control_ci=[-0.5, 0.25])
    page = findings_markdown(_toy(tmp_path, edit))
    assert f"descriptive (< {defaults.MIN_UNITS} units)" in _row(page, "builtin-negation", "toy")
    confirm = _confirm_file()
    chosen = ("toy", confirm["exploration_set"], ", ".join(confirm["chosen_heads"]))
    first, second = confirm["chosen_heads"][:2]
    # columns from the right: descriptive, not confirmed, confirmed
    cells = _row(page, *chosen, half).split("|")
    assert f"{first} (" in cells[-2] and cells[-3].strip() == cells[-4].strip() == "none"
    cells = _row(page, *chosen, outside).split("|")
    assert cells[-4].strip().startswith(f"{first} (") and "p 0.001)" in cells[-4]
    assert f"{second} (" in cells[-3] and "p 0.5; could detect >= 0.012)" in cells[-3]
    assert "not confirmed (not distinguishable)" in page
    patching = json.loads((REPORTS / "minilm" / "patching" / "builtin-negation" / "summary.json").read_text())
    step = ("toy", "builtin-negation", readout_label(patching), str(patching["n_pairs"]),
            patching.get("method", "exact"))
    gate = _row(page, *step).split("|")
    assert "fails: nothing named (not distinguishable from the control swap with" in gate[7]
    # its power: (z_0.975 + z_0.80) x the CI's half-width / z_0.975 = 2.80 x 0.375 / 1.96 = 0.536
    assert "units (could detect >= 0.536))" in gate[7]
    assert gate[8].strip() == gate[9].strip() == "none"
    below = findings_markdown(_toy(tmp_path / "below", lambda step, data: data["gate"].update(
        passed=False, relation_minus_control_ci=[-0.5, -0.25]) if step.startswith("patching") else None))
    assert "fails: nothing named (below the control swap)" in _row(below, *step)


def test_a_head_that_does_not_beat_its_control_is_said_with_its_power_and_the_crossed_design(tmp_path):
    def edit(step, data):
        if step.startswith("heads"):
            task = data["tasks"]["all-words"]
            task["top_heads"][0]["paired_p_fwer"] = 0.2
            task.update(n_units=70, detectable_difference_best_head=0.0456,
                        factors="70 frames x 38 predicates (crossed: meta.group x meta.predicate)",
                        n_significant_heads_fwer=21,
                        **{"n_heads_p_fwer_below_0.05": {"clustered": 21, "frame_only": 36, "by_example": 37}})
    page = findings_markdown(_toy(tmp_path, edit))
    row = _row(page, "builtin-negation", "toy", "70 frames x 38 predicates (crossed)")
    assert "| not distinguishable from its control with 70 units (could detect >= 0.046) |" in row
    assert "21 of 72 under the crossed test" in row and "(frames alone: 36; examples as independent: 37)" in row
    assert "does not beat" not in page and "no more than" not in page
    plain = findings_markdown(_toy(tmp_path / "plain", lambda step, data: data["tasks"]["all-words"]["top_heads"][0]
                                   .update(paired_p_fwer=0.2) if step.startswith("heads") else None))
    assert "not distinguishable from its control with" in _row(plain, "builtin-negation", "toy")


def test_the_nt_robustness_verdicts_follow_the_rule(tmp_path):
    """A head's lead on "n't" is robust only when it leads under every rule and control set; a lead whose test
    does not reject says so."""
    leaders = {label: {"head": head, "score": 0.25, "p_fwer": p, "runner_up": "2-8", "margin": 0.0234}
               for label, head, p in (("last / adverbs", "1-8", 0.0001), ("mean / adverbs", "1-8", 0.0001),
                                      ("last / clitics", "1-8", 0.0001), ("mean / clitics", "1-7", 0.12))}
    heads = [{"head": "1-8", "leads_under": list(leaders)[:3], "verdict": "(the writer's words)"},
             {"head": "1-7", "leads_under": ["mean / clitics"], "verdict": "(the writer's words)"},
             {"head": "2-8", "leads_under": [], "verdict": "(the writer's words)"}]

    def edit(step, data):
        if step.startswith("heads"):
            data["nt_robustness"] = {"leaders": leaders, "heads": heads}
    page = findings_markdown(_toy(tmp_path, edit))
    assert "| toy | builtin-negation | mean / clitics | 1-7 | 0.250 | 0.12 | not distinguishable from its control |" in page
    assert _row(page, "toy", "builtin-negation", "1-8").endswith("| no: leads under 3 of 4 |")
    assert _row(page, "toy", "builtin-negation", "1-7").endswith(
        "no: leads under 1 of 4; its lead is not distinguishable from the control under mean / clitics (p 0.12) |")
    assert _row(page, "toy", "builtin-negation", "2-8").endswith("| none | no: leads under none of 4 |")
    heads[0]["leads_under"] = list(leaders)
    page = findings_markdown(_toy(tmp_path / "all", edit))
    assert "| yes: leads under every rule and control set; its lead is not distinguishable from the control under " \
           "mean / clitics (p 0.12) |" in _row(page, "toy", "builtin-negation", "1-8")


def test_coreference_heads_are_tested_against_the_strongest_named_baseline(tmp_path):
    def head(name, difference, low, high, p, detectable):
        return {"head": name, "head_accuracy": 0.876, "difference": difference, "ci_low": low, "ci_high": high,
                "p_value": p, "p_fwer": p, "detectable_difference": detectable}
    heads = [head("1-3", 0.1, 0.05, 0.15, 0.01, 0.03), head("2-4", -0.049, -0.08, -0.02, 1.0, 0.04),
             head("4-5", -0.013, -0.029, 0.0, 1.0, 0.0205)]
    test = {**heads[0], "baseline": "agreement oracle", "baseline_accuracy": 0.889,
            "baselines_considered": {"nearest candidate": 0.5, "agreement oracle (where the data says)": 0.889},
            "chosen_on": "the exploration half (118 of 226 examples)", "heads": heads, "n_pairs": 226, "n_units": 61}

    def edit(step, data):
        data["tasks"]["candidates"]["strongest_baseline_test"] = test
        data["tasks"]["all-words"].pop("strongest_baseline_test", None)
    page = findings_markdown(_toy(tmp_path, edit, steps=("heads/builtin-coref",)))
    row = _row(page, "builtin-coref (candidates)", "toy", "agreement oracle 0.889")
    assert "the exploration half (118 of 226 examples), among nearest candidate, agreement oracle | 61 | 1-3 0.876" in row
    assert "beat it: 1-3 (+0.100, p 0.01); below it (95% CI below 0): 2-4 (-0.049, p 1); not distinguishable with " \
           "61 units: 4-5 (-0.013, p 1; could detect >= 0.021)" in row
    test.pop("heads")       # an older writer's test (the best head only, uncorrected) is not shown as the new one
    page = findings_markdown(_toy(tmp_path / "old", edit, steps=("heads/builtin-coref",)))
    assert "agreement oracle 0.889" not in page


def test_a_passing_gate_names_heads_with_their_control_effects(tmp_path):
    root = _toy(tmp_path, lambda step, data: data["gate"].update(passed=True) if step.startswith("patching") else None)
    folder = root / "toy" / "patching" / "builtin-negation"
    summary = json.loads((folder / "summary.json").read_text())
    with (folder / "effects.csv").open() as handle:
        effects = {f"{r['layer']}-{r['head']}": r for r in csv.DictReader(handle)}
    page = findings_markdown(root)
    row = _row(page, "toy", "builtin-negation", readout_label(summary), str(summary["n_pairs"]),
               summary.get("method", "exact"))
    assert f"passes ({summary['gate']['n_units']} units)" in row
    for kind in ("noising", "denoising"):
        for layer, head in summary["named"].get(kind, [])[:3]:
            effect = effects[f"{layer}-{head}"]
            assert (f"{layer}-{head} {float(effect[kind]):.3f} (control {float(effect['control_' + kind]):.3f})"
                    in row)


SETS_CSV = """kind,selection,k,layer,heads,effect,ci_low,ci_high,n_pairs,ranks_in_layer,random_mean,random_low,\
random_median,random_high,detectable,p_random,n_random,n_random_distinct,random_is_chosen,test,p_holm
noising,attention,1,,1-8,0.02,0.014,0.027,132,1-8:2/12,0.0015,-0.0077,0.001,0.02,0.011,0.08,1000,12,83,rank,
noising,attention,3,,1-7 1-8 2-8,0.021,0.012,0.032,132,1-7:1/12 1-8:2/12 2-8:4/12,0.0157,-0.0079,0.015,0.049,\
0.0234,0.34,1000,998,0,random sets,0.68
noising,effect,3,,3-6 3-7 5-9,0.66,0.62,0.7,132,3-6:1/12 3-7:2/12 5-9:1/12,0.115,0.05,0.11,0.2,0.07,0.000999,1000,\
1000,0,random sets,0.003996
noising,layer,12,5,,0.7,0.6,0.8,132,,,,,,,,,,,,
""".replace("\\\n", "")


def test_head_sets_correlations_and_rows_are_read_by_their_rules(tmp_path):
    """Head sets: k = 1 a rank, k > 1 by Holm with the detectable excess, never "no more than random";
    correlations with their permutation p and what they were computed on; every data row accounted for."""
    def edit(step, data):
        if step.startswith("patching"):
            for kind, p in (("noising", 0.0123), ("denoising", 0.31)):
                data["correlation"][kind].update(p_permutation=p, n_perm=1000, effects="exact effects", n_heads=72)
            data["rows"] = {"rows": 300, "patched": 264, "not_patched": {"in a pair that was skipped: no control": 36}}
    root = _toy(tmp_path, edit)
    (root / "toy" / "patching" / "builtin-negation" / "sets.csv").write_text(SETS_CSV)
    page = findings_markdown(root)
    assert _row(page, "toy", "builtin-negation", "noising", "attention", "1").endswith(
        "| 1-8 (2/12) | 0.020 [0.014, 0.027] | 0.001 [-0.008, 0.020] | 0.08 (of 1000) | n/a | a rank, not a test |")
    assert _row(page, "toy", "builtin-negation", "noising", "attention", "3").endswith(
        "| 0.68 | not distinguishable from random sets (could detect >= 0.023 over the random median) |")
    assert _row(page, "toy", "builtin-negation", "noising", "effect", "3").endswith(
        "| 3-6 (1/12), 3-7 (2/12), 5-9 (1/12) | 0.660 [0.620, 0.700] | 0.110 [0.050, 0.200] | 0.001 (of 1000) | "
        "0.004 | above random sets |")
    assert "| toy | builtin-negation | noising | layer |" not in page and "no more than" not in page
    assert "Head sets were not run" not in page
    (root / "toy" / "patching" / "builtin-negation" / "sets.csv").unlink()     # a model whose report has no sets
    assert ("## 4. Heads together: head sets against random sets\n\n**Head sets were not run** for toy: no patching "
            "step in its report used `analysis patch --sets`, so no report here has any.") in findings_markdown(root)
    few = SETS_CSV.replace(",1000,", ",100,")       # 2 comparisons, 100 random sets: Holm can still reach 0.05
    (root / "toy" / "patching" / "builtin-negation" / "sets.csv").write_text(few)
    assert "comparisons cannot fall below" not in findings_markdown(root)
    # 2 comparisons, 20 random sets: p_random >= 1/21, so p_holm >= 2/21 even for a set beyond every random one
    few = SETS_CSV.replace(",1000,", ",20,").replace("0.000999", "0.047619").replace("0.003996", "0.095238")
    (root / "toy" / "patching" / "builtin-negation" / "sets.csv").write_text(few)
    assert _row(findings_markdown(root), "toy", "builtin-negation", "noising", "effect", "3").endswith(
        "| 0.048 (of 20) | 0.095 | not distinguishable from random sets: with 20 random sets, Holm over 2 "
        "comparisons cannot fall below 0.05 |")
    row = _row(page, "toy", "builtin-negation", "exact effects")
    assert ", p 0.012: the permutation test rejects 0 but the bootstrap CI holds it; not claimed |" in row   # CI [-0.11, +0.41]
    assert ", p 0.31: not distinguishable from 0 with 72 heads |" in row
    # the two tests disagree (p below ALPHA, the CI across 0): said so, and not claimed
    from probing.report.findings import correlation_text
    both = {"correlation": {"noising": {"spearman": 0.18, "ci_low": -0.02, "ci_high": 0.32, "p_permutation": 0.033,
                                        "n_heads": 144}}}
    assert correlation_text(both, "correlation", "noising") == (
        "+0.18 [-0.02, +0.32], p 0.033: the permutation test rejects 0 but the bootstrap CI holds it; not claimed")
    both["correlation"]["noising"]["ci_low"] = 0.01
    assert correlation_text(both, "correlation", "noising") == "+0.18 [+0.01, +0.32], p 0.033"
    assert "| toy | builtin-negation | 300 | 264 | 36 | in a pair that was skipped: no control: 36 |" in page


def test_heads_are_read_in_every_form_a_summary_writes_them(tmp_path):
    """[layer, head], {"layer", "head", "effect"} and "L-H" give the same page; anything else is said in words."""
    def as_strings_and_dicts(step, data):
        if step.startswith("patching"):
            data["named"] = {k: [f"{l}-{h}" for l, h in v] for k, v in data["named"].items()}
            data["top"] = {k: [{"layer": l, "head": h, "effect": e} for l, h, e in v] for k, v in data["top"].items()}
    assert findings_markdown(_toy(tmp_path / "a", as_strings_and_dicts)) == findings_markdown(_toy(tmp_path / "b"))
    root = _toy(tmp_path / "c", lambda step, data: data["named"].update(noising=[[5]]) if step.startswith("patching")
                else None)
    with pytest.raises(FindingsError, match=r"cannot read a head from \[5\]"):
        findings_markdown(root)


def test_a_missing_key_is_an_error_that_names_the_file_and_the_key(tmp_path):
    root = _toy(tmp_path, lambda step, data: data.pop("gate", None) if step.startswith("patching") else None)
    with pytest.raises(FindingsError, match=r"patching/builtin-negation/summary.json.*'gate'"):
        findings_markdown(root)
    assert main(["report", "--findings-only", "--out", str(root)]) == 2
    assert not (root / FINDINGS_FILE).exists()


def test_an_incomplete_step_is_left_out_and_said(tmp_path):
    root = _toy(tmp_path)
    (root / "toy" / "patching" / "builtin-negation" / ".done.json").unlink()
    page = findings_markdown(root)
    assert "Left out (no completion marker, e.g. a killed run): toy/patching/builtin-negation." in page
    assert "No patching in these reports." in page


def test_findings_only_writes_the_page_and_runs_no_model(tmp_path, capsys):
    root = _toy(tmp_path)
    assert main(["report", "--findings-only", "--out", str(root)]) == 0
    assert (root / FINDINGS_FILE).read_text(encoding="utf-8") == findings_markdown(root)
    assert f"wrote {root / FINDINGS_FILE}" in capsys.readouterr().out
    assert write_findings(root, tmp_path / "elsewhere.md").read_text(encoding="utf-8") == findings_markdown(root)
    empty = tmp_path / "no-models"
    empty.mkdir()
    with pytest.raises(FindingsError, match="no model reports"):
        findings_markdown(empty)


def test_each_step_says_its_readout_and_the_traced_heads_say_where_their_effect_goes(tmp_path):
    path_row = {"kind": "noising", "layer": 5, "head": 9, "total": 0.61, "total_ci_low": 0.55, "total_ci_high": 0.67,
                "direct": 0.61, "direct_ci_low": 0.55, "direct_ci_high": 0.67, "indirect": 0.0,
                "indirect_ci_low": 0.0, "indirect_ci_high": 0.0,
                "where": "last layer: no later head, so all of its effect is direct by definition"}

    def edit(step, data):
        if step.startswith("patching"):
            data["readout"] = "sentence: the model's normalised output (...), projected on clean - corrupt"
            data["gate"].update(passed=True)
            data["named"]["noising"] = [[5, 9]]
            data["paths"] = {"rows": [path_row], "n_pairs": 204, "units": "68 frames x 38 predicates (crossed)"}
    page = findings_markdown(_toy(tmp_path, edit))
    row = _row(page, "toy", "builtin-negation", "normalised output", "noising", "5-9", "yes")
    assert "+0.610 [+0.550, +0.670]" in row and row.endswith("direct by definition |")
    assert readout_label({"readout": "logit difference target_neg - target_aff"}) == "next-word logits"
    assert readout_label({"readout": "embedding: final hidden states averaged over every position, ..."}) == \
        "embedding (every piece)"
