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
    assert "mention: span" in text and "unit: example" in text


def test_claim_comes_from_the_corrected_test_with_enough_units(minilm):
    from probing.examples import load_examples
    examples = load_examples("builtin-coref")
    scores = score_heads(minilm, examples[:0] + [e for e in examples if e.candidate_spans][:60],
                         n_boot=50, n_perm=500, cluster=False)
    summary = build_summary(scores, "builtin-coref", LoadReport("b", 60))
    info = summary["tasks"]["candidates"]
    assert info["n_units"] == 60 and info["resampling_unit"] == "example"
    best = scores.top(1).iloc[0]
    verdict = "beats" if best["p_fwer"] < 0.05 else "does not reliably beat"
    assert info["claim"].startswith(f"The best head by accuracy, {best['layer']}-{best['head']}, {verdict}")


def test_signed_scores_use_a_diverging_scale_centred_on_zero():
    grid = np.array([[-0.1, 0.3], [0.05, 0.0]])
    cmap, norm = colour_scale("above_baseline", grid)
    assert cmap == "RdBu_r" and norm(0.0) == pytest.approx(0.5) and norm(-0.3) == pytest.approx(0.0)
    cmap, norm = colour_scale("accuracy", grid)
    assert cmap == "viridis" and norm(0.0) == 0.0 and norm(1.0) == 1.0
