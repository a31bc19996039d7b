"""Plain labels and one-line explanations for every number the demo shows (the About tab has the full ones).

The demo's heatmap, metric choice and top-heads table use these so that no raw column name
(`next_word_baseline`) and no unexplained number reaches a visitor. Also the heatmap of one analysed
sentence with its title, its colour legend and the heads that beat their baseline on the built-in set.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from probing.demo.explore import SentenceScores
from probing.demo.heatmap import heatmap_html

# The negation heatmap's choices: (label shown, metric), and what each metric's numbers mean.
METRIC_CHOICES = [("above baseline: attention minus the next-word baseline", "above_baseline"),
                  ("attention: cue → next word", "mean_attention"),
                  ("baseline: any word → the word after it", "next_word_baseline"),
                  ("paired difference on the built-in set (the main score)", "set_paired_difference")]
METRIC_HELP = ("Above baseline = the head's attention from the cue to the next word minus its baseline (its attention "
               "from any word to the word after it in this sentence). Above 0 (red): the head does more than "
               "look one word ahead.")
SIGNED_METRICS = ("above_baseline", "set_paired_difference")
# A sentence has no control twin of its own, so the paired difference (cue vs a control adverb in the same
# place) comes from the model's report on the built-in negation set: the same heads, scored over its frames.
SET_METRICS = {"set_paired_difference": "paired_difference"}
# The control example the legend and the heatmap cite: "actually" is the commonest control adverb of the built-in
# negation set (probing/examples/builtin/negation.jsonl, meta.adverb), and "The lawyer did actually sign ..." is
# one of its sentences (tests/test_demo_glossary.py counts both).
CONTROL_EXAMPLE = "did actually sign"

# Columns of the top-heads table: the demo's names -> plain labels, and a one-line meaning per label.
PLAIN_COLUMNS = {
    "attention": "sentence: attention",
    "above_baseline": "sentence: above baseline",
    "set: nearest-noun baseline": "set: nearest-noun baseline (same for every head)",
}
COLUMN_MEANINGS = {
    "head": "layer-head, both counted from 0. Click a row to show that head.",
    "sentence: attention": "this sentence: the share of the source word's attention that goes to the target word "
                           "(0 to 1; a source of several pieces is read from its last piece, \"n't\" from its "
                           "\"t\", as the command line reads it; the word shading uses the same number).",
    "sentence: above baseline": "this sentence: attention minus the head's next-word baseline; above 0, the head "
                             "prefers this pair to any word → the word after it.",
    "set: accuracy": "dataset (GAP where the report has it, else the built-in set): share of sentences in which the antecedent gets more of this head's attention "
                     "than every other candidate noun.",
    "set: mean attention": "dataset: the head's mean attention from source to target over all its sentences.",
    "set: nearest-noun baseline (same for every head)":
        "dataset: the accuracy of always picking the candidate nearest the pronoun. It does not depend on "
        "the head, so every row shows the same number: the bar a head's accuracy must clear.",
    "set: above baseline": "built-in set: mean attention cue → next word minus the next-word baseline; above 0 means "
                        "more than a positional habit.",
    "set: paired difference": "built-in set, the main negation score: attention from the cue to the next word "
                              f"minus attention from a control adverb in the same place (\"{CONTROL_EXAMPLE}\") to "
                              "the same word; above 0, the head looks from \"not\" more than from any word there.",
    "set: next-word baseline": "built-in set: the head's mean attention from any word to the word after it.",
}


def plain_table(table: pd.DataFrame) -> pd.DataFrame:
    """The top-heads table with plain column labels (the "head" column keeps its name: clicks read it)."""
    return table.rename(columns=PLAIN_COLUMNS)


def table_legend(table: pd.DataFrame) -> str:
    """One line per column of a plain table, as Markdown (column names in bold)."""
    return "\n".join(f"- **{column}**: {COLUMN_MEANINGS[column]}" for column in table.columns
                     if column in COLUMN_MEANINGS)


def heatmap_title(scores: SentenceScores, metric: str) -> str:
    """What the heatmap shows for this sentence, in words (user words are escaped by the HTML)."""
    source, target = repr(scores.source), repr(scores.target)
    if scores.relation == "coreference":
        return f"Attention from the pronoun {source} to {target}, every layer × head"
    arrow = f"{source} → {target}" if scores.direction == "cue->next_word" else f"{target} → {source}"
    if metric == "next_word_baseline":
        return ("Baseline: attention from each word to the word after it, averaged over this sentence's word "
                f"pairs (the pair starting at the cue {source} left out), every layer × head")
    if metric == "above_baseline":
        return f"Above baseline: attention {arrow} minus the next-word baseline, every layer × head"
    if metric == "set_paired_difference":
        return ("Paired difference on the built-in negation set: attention cue → next word minus a control adverb "
                "→ the same word, every layer × head (not this sentence)")
    return f"Attention {arrow}, every layer × head"


def value_meaning(relation: str, metric: str) -> str:
    """The one-line explanation printed under the heatmap."""
    if relation == "coreference" or metric == "mean_attention":
        return ("Each number: the share of the source word's attention that goes to the target word (0 to 1; "
                "read from the source's last piece, as the table and the word shading).")
    if metric == "next_word_baseline":
        return "Each number: how much this head looks one word ahead in general; the bar the cue must clear."
    if metric == "set_paired_difference":
        return ("Each number: the head's mean attention from not/n't to the next word minus its attention from a "
                f"control adverb in the same place (\"{CONTROL_EXAMPLE}\"), over the built-in set; red: the head "
                "singles out the cue. Grey n/a: no report for this model yet (Probing report tab).")
    return "Each number: attention from the cue to the next word minus this baseline. Red: above 0; blue: below."


def set_values(dataset: pd.DataFrame | None, column: str, shape: tuple[int, int]) -> np.ndarray:
    """(layers, heads) of one column of the model's table on the built-in set; NaN where it has none."""
    values = np.full(shape, np.nan)
    if dataset is None or column not in dataset:
        return values
    for layer, head, value in zip(dataset["layer"], dataset["head"], dataset[column]):
        if 0 <= layer < shape[0] and 0 <= head < shape[1]:
            values[int(layer), int(head)] = float(value)
    return values


def metric_values(scores: SentenceScores, metric: str, dataset: pd.DataFrame | None = None) -> np.ndarray:
    """The (layers, heads) values a metric shows; coreference has only attention."""
    if scores.relation == "negation" and metric in SET_METRICS:
        return set_values(dataset, SET_METRICS[metric], scores.attention.shape)
    if scores.relation != "negation" or metric == "mean_attention":
        return scores.attention
    if metric == "next_word_baseline":
        return scores.next_word_baseline
    if metric == "above_baseline":
        return scores.attention - scores.next_word_baseline
    raise ValueError(f"Unknown heatmap metric {metric!r}; use one of {', '.join(m for _, m in METRIC_CHOICES)}.")


def significant_heads(dataset: pd.DataFrame | None, shape: tuple[int, int]) -> np.ndarray | None:
    """(layers, heads) bool: the heads the built-in set's corrected test found beating their baseline."""
    if dataset is None or "significant" not in dataset:
        return None
    marks = np.zeros(shape, bool)
    for layer, head, significant in zip(dataset["layer"], dataset["head"], dataset["significant"]):
        if 0 <= layer < shape[0] and 0 <= head < shape[1]:
            marks[layer, head] = str(significant).lower() == "true"
    return marks


def sentence_heatmap(scores: SentenceScores, metric: str, selected: tuple[int, int] | None = None,
                     dataset: pd.DataFrame | None = None) -> str:
    """The demo's clickable heatmap of one analysed sentence, titled and explained in words.

    `dataset` is the model's `heads.csv` on the built-in set (or None): its significant heads get a dot.
    """
    metric = metric if scores.relation == "negation" else "mean_attention"
    values = metric_values(scores, metric, dataset)
    sentence_metric = metric not in ("next_word_baseline", *SET_METRICS)
    return heatmap_html(values, heatmap_title(scores, metric), scores.is_argmax if sentence_metric else None, selected=selected, diverging=True if metric in SIGNED_METRICS else None,
                        significant=significant_heads(dataset, values.shape),
                        value_meaning=value_meaning(scores.relation, metric))
