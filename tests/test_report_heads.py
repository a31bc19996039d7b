"""Head reports: the summary records the mention rule and the resampling unit, claims come from corrected
tests (and never from fewer than 30 units), tasks are reported separately, signed heatmaps diverge at 0."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import COREF_EXAMPLES, NEGATION_EXAMPLES
from probing.examples import LoadReport
from probing.heads import score_heads
from probing.report.heads import HEAD_FILES, build_summary, colour_scale, summary_text, write_outputs


def test_small_negation_report_refuses_to_claim(minilm, tmp_path):
    scores = score_heads(minilm, NEGATION_EXAMPLES, n_boot=50, n_perm=200)
    summary = build_summary(scores, "tiny", LoadReport("tiny", 5))
    assert summary["mention"] == "span" and summary["resampling_unit"] == "example"
    assert summary["n_units"] == 2          # the main score (paired difference) has 2 matched pairs
    assert summary["ranked_by"] == "paired_difference"
    assert "too few to claim anything" in summary["tasks"]["all-words"]["claim"]
    write_outputs(tmp_path, scores, summary)
    assert all((tmp_path / name).exists() for name in HEAD_FILES)
    assert len(pd.read_csv(tmp_path / "strata.csv")) == 0   # no meta to stratify by: the header alone
    report = (tmp_path / "report.md").read_text()
    assert "too few to claim anything" in report and "beats" not in report
    table = pd.read_csv(tmp_path / "heads.csv")
    assert {"task", "p_fwer", "paired_p_fwer", "paired_difference", "n_units"} <= set(table.columns)
    assert json.loads((tmp_path / "summary.json").read_text())["mention"] == "span"
    # The source-piece rule is stated in the summary, its text and the report.
    assert summary["source_pieces"] == scores.source_pieces == "last"
    assert "read from its last piece" in summary["source_pieces_rule"] and "Source pieces: **last**" in report
    assert "source-piece rule: a source of several pieces" in summary_text(summary)
    mean = build_summary(score_heads(minilm, NEGATION_EXAMPLES, n_boot=50, n_perm=200, source_pieces="mean"),
                         "tiny", LoadReport("tiny", 5))
    assert mean["source_pieces"] == "mean" and "Clark et al." in mean["source_pieces_rule"]


def test_coreference_summary_names_mention_and_tasks(minilm):
    scores = score_heads(minilm, COREF_EXAMPLES, n_boot=20, n_perm=100, mention="span")
    summary = build_summary(scores, "tiny", LoadReport("tiny", 3))
    assert summary["mention"] == "span"
    assert set(summary["tasks"]) == set(scores.table["task"])
    assert "flags" in scores.table and "agreement_oracle_accuracy" in scores.table
    text = summary_text(summary)
    assert "mention: span" in text and f"units: {summary['factors']}" in text and summary["factors"].endswith("examples")


def test_claim_comes_from_the_corrected_test_with_enough_units(minilm):
    from probing.examples import load_examples
    examples = load_examples("builtin-coref")
    scores = score_heads(minilm, examples[:0] + [e for e in examples if e.candidate_spans][:60],
                         n_boot=50, n_perm=500, cluster=False)
    summary = build_summary(scores, "builtin-coref", LoadReport("b", 60))
    info = summary["tasks"]["candidates"]
    assert info["n_units"] == 60 and info["resampling_unit"] == "example"
    best = scores.top(1).iloc[0]
    verdict = "beats" if best["p_fwer"] < 0.05 else "is not distinguishable from"
    assert info["claim"].startswith(f"The best head by accuracy, {best['layer']}-{best['head']}, {verdict}")


def test_signed_scores_use_a_diverging_scale_centred_on_zero():
    grid = np.array([[-0.1, 0.3], [0.05, 0.0]])
    cmap, norm = colour_scale("above_baseline", grid)
    assert cmap == "RdBu_r" and norm(0.0) == pytest.approx(0.5) and norm(-0.3) == pytest.approx(0.0)
    cmap, norm = colour_scale("accuracy", grid)
    assert cmap == "viridis" and norm(0.0) == 0.0 and norm(1.0) == 1.0


# ---- Coreference: the best head against the strongest baseline; flags cite significant tests only ----------

def _coref_scores(head_credit, agreement_decides, nearest_hit):
    from probing.heads import ExampleScores, HeadScores, head_table
    credit = np.asarray(head_credit, float)[:, None, :]
    n = len(credit)
    metas = [{"agreement_decides": bool(a)} for a in agreement_decides]
    main = ExampleScores(ids=[f"e{i}" for i in range(n)], attention=credit.copy(), is_argmax=credit,
                         next_word_baseline=np.full(credit.shape, np.nan), nearest_hit=np.asarray(nearest_hit, bool),
                         first_hit=np.asarray(nearest_hit, bool), n_candidates=np.full(n, 2), pairs=[""] * n,
                         nearest_choice=np.zeros_like(credit), groups=[f"g{i}" for i in range(n)],
                         tasks=["candidates"] * n, meta=metas)
    table = head_table(main, "coreference", n_boot=100, n_perm=2000)
    return HeadScores(model="toy", relation="coreference", direction="pronoun -> antecedent", n_layers=1,
                      n_heads=credit.shape[2], table=table, examples=main, controls=None, skipped=[])


def test_the_headline_tests_the_best_head_against_the_agreement_oracle_paired_by_example():
    from probing.report.heads import headline, strongest_baseline_test
    # 40 examples: agreement decides 30 (oracle 1) and not 10 (oracle 1/2): oracle accuracy 0.875;
    # the nearest candidate is right on half (0.5). Head 0 is always right; head 1 only where agreement decides.
    decides = np.arange(40) < 30
    credits = np.stack([np.ones(40), decides.astype(float)], 1)
    test = strongest_baseline_test(_coref_scores(credits, decides, np.arange(40) % 2 == 0), "candidates",
                                   n_perm=2000, n_boot=200)
    assert test["baseline"] == "agreement oracle" and test["head"] == "0-0"
    assert test["baseline_accuracy"] == pytest.approx(0.875) and test["head_accuracy"] == 1.0
    assert test["difference"] == pytest.approx(0.125) and test["n_pairs"] == 40
    assert test["p_value"] < 0.01 and "beats" in headline(test)
    # Without agreement information the nearest candidate is the baseline
    no_info = _coref_scores(credits, decides, np.arange(40) % 2 == 0)
    no_info.examples.meta = [{} for _ in range(40)]
    test = strongest_baseline_test(no_info, "candidates", n_perm=2000, n_boot=200)
    assert test["baseline"] == "nearest candidate" and test["baseline_accuracy"] == 0.5


def test_a_head_no_better_than_the_oracle_does_not_beat_it():
    from probing.report.heads import headline, strongest_baseline_test
    decides = np.ones(40, bool)
    credits = np.stack([np.ones(40), np.zeros(40)], 1)           # oracle 1.0 everywhere; head 0 ties it
    test = strongest_baseline_test(_coref_scores(credits, decides, np.zeros(40, bool)), "candidates", n_perm=500)
    assert test["difference"] == 0 and test["p_value"] == 1.0
    # Power-aware wording: not "does not beat" but what the test could tell apart with its units
    assert "is not distinguishable from it with 40 units" in headline(test) and "does not" not in headline(test)
    assert test["detectable_difference"] == 0 and "could detect a difference of about 0.000" in headline(test)


def test_detectable_difference_is_the_80_percent_power_mde_from_the_ci_half_width():
    from probing.report.heads import detectable_difference, not_shown
    # SE = 0.1 / 1.959964; MDE = (1.959964 + 0.841621) x SE
    assert detectable_difference(0.1, 0.3) == pytest.approx(0.2801585 / 1.959964, rel=1e-5)
    assert np.isnan(detectable_difference(np.nan, 0.3))
    assert not_shown("its control", 34, np.nan) == "is not distinguishable from its control with 34 units"


def test_flags_cite_their_tests_and_a_non_significant_twin_test_says_not_tested_enough():
    from probing.report.heads import flag_text
    row = {"flags": "agreement;nearest", "agreement_decided_p_fwer": 0.001, "twin_p_fwer": 0.31,
           "n_twin_pairs": 25, "nearest_p_fwer": 0.012}
    text = flag_text(row)
    assert "agreement (where agreement decides: p_fwer 0.001; twins: not tested enough (25 pairs))" in text
    assert "nearest (p_fwer 0.012)" in text
    assert flag_text({"flags": ""}) == "-"


def test_the_ci_rule_says_when_the_two_way_interval_applies():
    from types import SimpleNamespace
    from probing.report.heads import ci_rule
    crossed = SimpleNamespace(examples=SimpleNamespace(meta=[{"predicate": "verb-sign", "group": "f01"}]))
    assert "two-way" in ci_rule(crossed) and "Cameron-Gelbach-Miller" in ci_rule(crossed)
    plain = SimpleNamespace(examples=SimpleNamespace(meta=[{"group": "g"}]))
    assert "two-way" not in ci_rule(plain)


def test_negation_report_shows_both_source_piece_rules_and_they_differ_only_on_nt(minilm, tmp_path):
    """A hand-made "n't" item (two pieces) against "not" items (one piece): the two rules agree on "not" rows
    and disagree on the "n't" row; the report writes both columns."""
    from probing.report.heads import heads_markdown, rules_side_by_side
    last = score_heads(minilm, NEGATION_EXAMPLES, n_boot=20, n_perm=50, source_pieces="last")
    mean = score_heads(minilm, NEGATION_EXAMPLES, n_boot=20, n_perm=50, source_pieces="mean")
    side = rules_side_by_side(last, mean)
    assert list(side["rules"]) == ["last", "mean"] and "all" in side["rules"]["last"]
    nt = [e.id for e in NEGATION_EXAMPLES if "n't" in e.text]
    at = {e: i for i, e in enumerate(last.examples.ids)}
    one_piece = [at[e.id] for e in NEGATION_EXAMPLES if e.id in at and e.id not in nt]
    assert np.array_equal(last.examples.attention[one_piece], mean.examples.attention[one_piece])
    assert not np.allclose(last.examples.attention[at[nt[0]]], mean.examples.attention[at[nt[0]]])
    summary = build_summary(last, "hand-made", LoadReport(source="hand-made", n_records=len(NEGATION_EXAMPLES)))
    summary["source_pieces_side_by_side"] = side
    text = heads_markdown(last, summary)
    assert "## The source-piece rule, side by side" in text and "| items | last rule | mean rule |" in text


def test_significance_counts_name_the_factors_and_the_frame_only_count():
    from probing.report.heads import significance_counts
    info = {"n_units": 46, "factors": "46 frames x 29 predicates (crossed: meta.group x meta.predicate)",
            "test_design": "crossed sign-flip: frame parts and predicate parts flip independently, maxT over heads",
            "n_heads_p_fwer_below_0.05": {"clustered": 21, "frame_only": 30, "by_example": 38}}
    text = significance_counts(info)
    assert text.startswith("Heads with p_fwer < 0.05: **21** under the crossed sign-flip")
    assert "(46 frames x 29 predicates" in text and "30 if frames alone" in text and "38 if examples" in text
    plain = significance_counts({"n_units": 40, "n_heads_p_fwer_below_0.05": {"by_example": 3}}, bold="")
    assert plain == "Heads with p_fwer < 0.05: 3 if examples were independent."


def test_a_head_leads_on_nt_only_if_it_leads_under_every_rule_and_control_set():
    from probing.report.heads import nt_robustness
    leaders = {"last / adverbs": {"head": "1-8"}, "last / clitics": {"head": "2-8"},
               "mean / adverbs": {"head": "2-8"}, "mean / clitics": {"head": "2-8"}}
    rows = {r["head"]: r for r in nt_robustness(leaders, ["1-8", "2-8", "3-1"])}
    assert rows["1-8"]["leads_under"] == ["last / adverbs"]
    assert rows["1-8"]["verdict"].startswith("leads only under last / adverbs; decided by the combination")
    assert "last / clitics: 2-8" in rows["1-8"]["verdict"]
    assert rows["3-1"]["verdict"] == "leads under no rule and control set"
    everywhere = {label: {"head": "2-8"} for label in leaders}
    assert nt_robustness(everywhere, ["2-8"])[0]["verdict"] == "leads under every rule and control set"
    by_control = {"last / adverbs": {"head": "1-8"}, "last / clitics": {"head": "2-8"},
                  "mean / adverbs": {"head": "1-8"}, "mean / clitics": {"head": "2-8"}}
    assert "decided by the control set (adverbs only)" in nt_robustness(by_control, ["1-8"])[0]["verdict"]
    by_rule = {"last / adverbs": {"head": "1-7"}, "last / clitics": {"head": "1-7"},
               "mean / adverbs": {"head": "2-8"}, "mean / clitics": {"head": "2-8"}}
    assert "decided by the rule (last only)" in nt_robustness(by_rule, ["1-7"])[0]["verdict"]
    by_rule["last / clitics"]["p_fwer"] = 0.12
    assert nt_robustness(by_rule, ["1-7"])[0]["verdict"].endswith(
        "; its lead over the control is not significant under last / clitics (p_fwer 0.12)")


def test_nt_leaders_read_the_nt_stratum_and_the_clitic_set():
    from types import SimpleNamespace
    from probing.report.heads import _nt_robustness_rows, nt_leaders

    def table(scores, **extra):
        return pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "paired_difference": scores,
                             "paired_p_fwer": [0.01, 0.02, 0.5], "task": "all-words", **extra})
    strata = pd.concat([table([0.1, 0.5, 0.2], by="cue_form", stratum="n't"),
                        table([0.9, 0.1, 0.0], by="cue_form", stratum="not")], ignore_index=True)
    adverbs = SimpleNamespace(strata=strata, primary_task="all-words", main_score="paired_difference")
    clitics = SimpleNamespace(task_table=lambda: table([0.3, 0.1, 0.35]), main_score="paired_difference")
    leaders = nt_leaders({"last": adverbs}, {"last": clitics})
    assert leaders["last / adverbs"]["head"] == "0-1" and leaders["last / adverbs"]["margin"] == pytest.approx(0.3)
    assert leaders["last / clitics"]["head"] == "1-0" and leaders["last / clitics"]["runner_up"] == "0-0"
    text = "\n".join(_nt_robustness_rows({"leaders": leaders, "heads": [], "rules_not_run": {"max": "absent"},
                                          "control_sets": {"clitics": "builtin-negation-clitics"}}))
    assert "| last / clitics | 1-0 | 0.350 | 0.5 | 0-0 (+0.050) |" in text and "max: absent" in text


@pytest.mark.slow
def test_run_heads_on_builtin_negation_scores_the_clitic_controls_under_both_rules(minilm, tmp_path):
    from probing.report.heads import run_heads
    summary = run_heads(minilm, "builtin-negation", tmp_path / "out", limit=40, n_boot=20, n_perm=200)
    robust = summary["nt_robustness"]
    assert set(robust["leaders"]) == {"last / adverbs", "mean / adverbs", "last / clitics", "mean / clitics"}
    assert [row["head"] for row in robust["heads"]] == [f"{h['layer']}-{h['head']}" for h in summary["top_heads"]]
    assert "## Who leads on \"n't\"" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_each_task_gets_its_own_one_panel_heatmap(minilm, tmp_path):
    """Two tasks, two pictures: the main task in heatmap.png, the other in heatmap-<task>.png (two panels in
    one image were unreadable at a phone's width), each named in report.md."""
    import matplotlib.image
    from probing.report.heads import heatmap_files
    scores = score_heads(minilm, COREF_EXAMPLES, n_boot=20, n_perm=100, mention="span")
    files = heatmap_files(scores)
    assert len(set(scores.table["task"])) == 2 and list(files.values())[0] == "heatmap.png"
    assert list(files)[0] == scores.primary_task and len(set(files.values())) == 2
    write_outputs(tmp_path, scores, build_summary(scores, "tiny", LoadReport("tiny", 3)))
    report = (tmp_path / "report.md").read_text()
    for task, name in files.items():
        height, width = matplotlib.image.imread(tmp_path / name).shape[:2]
        assert width < 1.8 * height, f"{name} is {width}x{height}: more than one panel?"
        assert f"![heatmap, task {task}]({name})" in report
