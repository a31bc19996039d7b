"""What the demo's buttons do, as plain functions that return plain data (no Gradio in here).

`app.py` lays out the page and turns these results into components; the API endpoints call them too.
Every user-facing failure is raised as `DemoError` with a message in words.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probing.examples import BUILTIN_SETS, Example, read_jsonl
from probing.explore import (MAX_TEXT_CHARS, InputError, SentenceScores, find_negation_cues, find_pronouns, make_example,
                             score_sentence, words_with_spans)
from probing.models import ModelLoadError, check_model_allowed, load_model

REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"
DATASET_FOR = {"coreference": "builtin-coref", "negation": "builtin-negation"}
HEATMAP_METRICS = ("mean_attention", "next_word_baseline", "selectivity")
CACHE_DIR = Path(os.environ.get("PROBING_CACHE_DIR", Path.home() / ".cache" / "probing-reports"))
ABOUT = (Path(__file__).resolve().parent / "about.md").read_text(encoding="utf-8")


class DemoError(ValueError):
    """Anything the visitor should read in words: bad input, a model that may not or cannot load."""


def get_model(name: str | None):
    """An allowed, loaded model, or DemoError in words."""
    try:
        return load_model(check_model_allowed(name))
    except ModelLoadError as err:
        raise DemoError(str(err)) from None


def word_choices(text: str, relation: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Dropdown choices (label, "start:end") for the source (pronouns or cues) and for every word."""
    sources = find_pronouns(text) if relation == "coreference" else find_negation_cues(text)
    words = [(w, s) for w, s in words_with_spans(text) if any(c.isalnum() for c in w)]
    label = lambda w, s: (f"{w}  ({s[0]}:{s[1]})", f"{s[0]}:{s[1]}")  # noqa: E731
    return [label(w, s) for w, s in sources], [label(w, s) for w, s in words]


def gallery(relation: str, n: int = 12) -> list[Example]:
    """A varied handful of built-in examples (controls left out), for the examples gallery."""
    examples, _ = read_jsonl(BUILTIN_SETS[DATASET_FOR[relation]])
    main = [e for e in examples if not e.is_control]
    step = max(1, len(main) // n)
    return main[::step][:n]


@dataclass
class Analysis:
    """One sentence analysed: per-head scores, the dataset-level table beside them, and the best head."""
    scores: SentenceScores
    example: Example
    top_table: pd.DataFrame
    best_layer: int
    best_head: int
    notes: list[str]


def analyse(text: str, relation: str, source: str | None, target: str | None, model: str | None,
            top_k: int = 8) -> Analysis:
    """Score every head for the source -> target pair in one sentence; DemoError on bad input."""
    loaded = get_model(model)
    try:
        example = make_example(text, relation, source, target)
        scores = score_sentence(loaded, example)
    except InputError as err:
        raise DemoError(str(err)) from None
    ranking = scores.attention if relation == "coreference" else scores.attention - np.nan_to_num(scores.next_word)
    best_layer, best_head = np.unravel_index(int(np.argmax(ranking)), ranking.shape)
    notes = []
    if scores.truncated:
        notes.append(f"The text is longer than {loaded.name}'s limit of {loaded.max_length} tokens; "
                     "only the beginning was analysed.")
    if relation == "negation" and loaded.is_causal:
        notes.append(f"{loaded.name} is a causal (left-to-right) model: a word cannot attend to a later one, "
                     f"so this measures **{scores.target!r} → {scores.source!r}** (next word → cue).")
    return Analysis(scores=scores, example=example, top_table=top_heads_table(scores, loaded.name, top_k),
                    best_layer=int(best_layer), best_head=int(best_head), notes=notes)


def report_dir(model_name: str) -> Path:
    """Where a model's dataset-level results live: committed under reports/, else the on-disk cache."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name).strip("._") or "model"
    committed = REPORTS_DIR / safe
    return committed if committed.exists() else CACHE_DIR / safe


def dataset_table(model_name: str, relation: str) -> pd.DataFrame | None:
    """The `analysis heads` table on the built-in set for this model, or None if it was not computed yet."""
    path = report_dir(model_name) / "heads" / DATASET_FOR[relation] / "heads.csv"
    return pd.read_csv(path) if path.exists() else None


@dataclass
class ReportFiles:
    coref_heatmap: str
    negation_heatmap: str
    markdown: str
    downloads: list[str]


def report_files(model: str | None, progress=None) -> ReportFiles:
    """The dataset-level report for a model; computed once (and cached on disk) when it is missing."""
    from probing.reporting import run_heads
    loaded = get_model(model)
    folder = report_dir(loaded.name)
    for step, (relation, data) in enumerate(DATASET_FOR.items()):
        out = folder / "heads" / data
        if not (out / "heads.csv").exists():
            if progress is not None:
                progress((step, len(DATASET_FOR)), desc=f"scoring every head of {loaded.name} on {data}")
            run_heads(data, loaded.name, out)
    parts = []
    full = folder / "report.md"
    if full.exists():
        parts.append(full.read_text(encoding="utf-8"))
    for data in DATASET_FOR.values():
        text = (folder / "heads" / data / "report.md").read_text(encoding="utf-8")
        parts.append(re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text))   # the heatmaps are shown beside it
    downloads = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".csv", ".json"))
    return ReportFiles(coref_heatmap=str(folder / "heads" / "builtin-coref" / "heatmap.png"),
                       negation_heatmap=str(folder / "heads" / "builtin-negation" / "heatmap.png"),
                       markdown="\n\n---\n\n".join(parts), downloads=downloads)


def top_heads_table(scores: SentenceScores, model_name: str, k: int) -> pd.DataFrame:
    """This sentence's top k heads, beside each head's dataset-level scores on the built-in set."""
    sentence = pd.DataFrame(scores.heads())
    key = "selectivity" if scores.relation == "negation" else "attention"
    top = sentence.sort_values(key, ascending=False).head(k)
    table = pd.DataFrame({"head": [f"{l}-{h}" for l, h in zip(top["layer"], top["head"])],
                          "this sentence": top["attention"].round(3)})
    if scores.relation == "negation":
        table["this sentence: selectivity"] = top["selectivity"].round(3)
    dataset = dataset_table(model_name, scores.relation)
    if dataset is not None:
        indexed = dataset.set_index(["layer", "head"])
        pairs = list(zip(top["layer"], top["head"]))
        columns = (["selectivity", "mean_attention", "next_word_baseline"] if scores.relation == "negation"
                   else ["accuracy", "mean_attention", "nearest_candidate_accuracy"])
        for column in columns:
            table[f"dataset: {column}"] = [round(float(indexed.loc[p, column]), 3) for p in pairs]
    return table.reset_index(drop=True)


def heatmap_values(scores: SentenceScores, metric: str) -> np.ndarray:
    """The (layers, heads) array a heatmap shows: the attention, the next-word baseline, or their difference."""
    if metric == "mean_attention" or scores.relation != "negation":
        return scores.attention
    if metric == "next_word_baseline":
        return scores.next_word
    if metric == "selectivity":
        return scores.attention - scores.next_word
    raise DemoError(f"Unknown heatmap metric {metric!r}; use one of {', '.join(HEATMAP_METRICS)}.")


def head_view(text: str, model: str | None, layer=None, head=None, max_tokens: int = 60):
    """The bertviz head view of one sentence as a sandboxed iframe (a `views.ViewResult`)."""
    from probing.explore import clean_text
    from probing.runner import run_with_attention
    from probing.views import head_view_html
    loaded = get_model(model)
    try:
        text = clean_text(text)
        layer, head = _index("layer", layer, loaded.n_layers), _index("head", head, loaded.n_heads)
    except InputError as err:
        raise DemoError(str(err)) from None
    sentence = run_with_attention(loaded, text)
    return head_view_html(sentence.tokens, sentence.attention, layer=layer, head=head, max_tokens=max_tokens)


def model_view(text: str, model: str | None, layers: list[int] | None = None, max_tokens: int = 40):
    """The bertviz model view of one sentence (a subset of layers keeps the page light)."""
    from probing.explore import clean_text
    from probing.runner import run_with_attention
    from probing.views import model_view_html
    loaded = get_model(model)
    try:
        text = clean_text(text)
        layers = [_index("layer", l, loaded.n_layers) for l in layers] if layers else None
    except InputError as err:
        raise DemoError(str(err)) from None
    sentence = run_with_attention(loaded, text)
    return model_view_html(sentence.tokens, sentence.attention, layers=layers, max_tokens=max_tokens)


def _index(name: str, value, count: int) -> int | None:
    """An optional layer/head number checked against the model's size, with the valid range in the message."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise InputError(f"The {name} must be a whole number, got {value!r}.") from None
    if number != float(value) or not 0 <= number < count:
        raise InputError(f"The {name} {value} is out of range: this model has {count} {name}s (0-{count - 1}).")
    return number


def score_heads_api(text: str, relation: str, source: str, target: str, model: str) -> dict:
    """The `/score_heads` endpoint's JSON: the model, the direction, the tokens and every head's numbers."""
    from probing.runner import encode
    analysis = analyse(text, relation, source, target, model)
    loaded = get_model(model)
    encoded = encode(loaded, [analysis.example.text])[0]
    return {"model": loaded.name, "relation": relation, "direction": analysis.scores.direction,
            "source": analysis.scores.source, "target": analysis.scores.target,
            "tokens": loaded.tokenizer.convert_ids_to_tokens(encoded.input_ids),
            "truncated": analysis.scores.truncated, "notes": analysis.notes, "heads": analysis.scores.heads()}
