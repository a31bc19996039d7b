"""`probing.demo.glossary`: the plain labels and legend of the top-heads table, the heatmap's titles and metrics,
and the significant heads read from the committed MiniLM table."""
import collections
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from probing.demo import backend as demo
from probing.demo.glossary import (COLUMN_MEANINGS, CONTROL_EXAMPLE, heatmap_title, metric_values, plain_table,
                                   sentence_heatmap, significant_heads, table_legend, value_meaning)

NEGATION = "The lawyer did not sign the contract."


def test_negation_heatmap_switches_metric():
    scores = demo.analyse(NEGATION, "negation", "not", "", None).scores
    np.testing.assert_allclose(metric_values(scores, "above_baseline"), scores.attention - scores.next_word_baseline)
    np.testing.assert_array_equal(metric_values(scores, "next_word_baseline"), scores.next_word_baseline)
    titles = {metric: heatmap_title(scores, metric) for metric in demo.HEATMAP_METRICS}
    assert len(set(titles.values())) == 4
    for metric, title in titles.items():
        assert html.escape(title) in sentence_heatmap(scores, metric)
    with pytest.raises(ValueError, match=r"Unknown heatmap metric 'bogus'"):
        metric_values(scores, "bogus")


def test_the_negation_heatmap_offers_the_main_score_from_the_built_in_set():
    """The paired difference needs a control twin, so the heatmap shows the built-in set's, per head, from the
    committed report: the numbers of heads.csv, red-blue around 0, and n/a without a report."""
    scores = demo.analyse(NEGATION, "negation", "not", "", None).scores
    table = demo.dataset_table("minilm", "negation")
    values = metric_values(scores, "set_paired_difference", table)
    for _, row in table.iterrows():
        assert values[int(row["layer"]), int(row["head"])] == pytest.approx(float(row["paired_difference"]))
    assert np.nanargmax(values) == 2 * 12 + 8                     # 2-8 leads the main score (README)
    page = sentence_heatmap(scores, "set_paired_difference", dataset=table)
    assert "Paired difference on the built-in negation set" in page
    assert not re.search(r"<button[^>]*hh-argmax", page)          # argmax outlines belong to the sentence
    assert np.isnan(metric_values(scores, "set_paired_difference", None)).all()


def test_significant_heads_come_from_the_committed_minilm_table():
    from probing.demo.backend import dataset_table
    table = dataset_table("minilm", "coreference")
    marks = significant_heads(table, (6, 12))
    # GAP-dev beside coreference sentences (the committed report has it): 38 heads beat the nearest-candidate
    # baseline after maxT correction, the best of them 4-10 and 3-1.
    assert marks.sum() == int(table["significant"].astype(str).str.lower().eq("true").sum()) == 38
    assert marks[4, 10] and marks[3, 1]
    assert significant_heads(None, (6, 12)) is None


def test_plain_table_labels_each_have_a_meaning():
    from probing.demo.backend import empty_top_table
    for relation in ("coreference", "negation"):
        table = plain_table(empty_top_table(relation))
        assert "head" in table.columns and not any(c in ("attention", "above_baseline") for c in table.columns)
        legend = table_legend(table)
        assert legend.count("\n") + 1 == len(table.columns) == sum(c in COLUMN_MEANINGS for c in table.columns)
    assert "every row shows the same number" in table_legend(plain_table(empty_top_table("coreference")))


def test_negation_titles_say_what_each_metric_shows():
    from probing.demo import backend as demo
    scores = demo.analyse("The lawyer did not sign the contract.", "negation", "not", "", None).scores
    assert heatmap_title(scores, "mean_attention") == "Attention 'not' → 'sign', every layer × head"
    baseline = heatmap_title(scores, "next_word_baseline")
    assert "'sign'" not in baseline and baseline.startswith("Baseline: attention from each word to the word after")
    grid = sentence_heatmap(scores, "above_baseline", selected=(1, 7), dataset=demo.dataset_table("minilm", "negation"))
    assert "0 (white)" in grid and re.search(r'class="hh-cell[^"]*hh-significant', grid) and "minus this baseline. Red: above 0" in grid
    assert "hh-cell hh-argmax" not in sentence_heatmap(scores, "next_word_baseline")     # the baseline has no target


def test_the_control_example_is_the_built_in_sets_commonest_adverb_in_one_of_its_sentences():
    """The legend cites a control sentence the data has, with the adverb the data uses most (not "really")."""
    path = Path(__file__).resolve().parent.parent / "probing" / "examples" / "builtin" / "negation.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    adverbs = collections.Counter(r["meta"]["adverb"] for r in rows if r["meta"].get("role") == "control")
    commonest = adverbs.most_common(1)[0][0]
    _host, adverb, _verb = CONTROL_EXAMPLE.split()
    assert adverb == commonest
    assert any(f" {CONTROL_EXAMPLE} " in r["text"] for r in rows if r["meta"].get("role") == "control")
    assert f'("{CONTROL_EXAMPLE}")' in COLUMN_MEANINGS["set: paired difference"]
    assert f'("{CONTROL_EXAMPLE}")' in value_meaning("negation", "set_paired_difference")
