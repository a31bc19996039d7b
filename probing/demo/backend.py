"""What the demo's buttons do, as plain functions that return plain data (no Gradio in here).

`app.py` lays out the page and turns these results into components; the API endpoints call them too.
Every user-facing failure is raised as `DemoError` with a message in words.

Public-demo safety is `probing.demo.guard`'s: every field is checked for type and length before anything
else sees it, only allow-listed models load (never with remote code) and they load in the background, all
forward passes share one global limit. Here, the demo reads at most `DEMO_MAX_TOKENS` tokens of a text,
whatever the model's own limit, so one request cannot ask for gigabytes of attention weights; and one
analysis makes ONE forward pass, whose attention feeds the scores, the heatmap and the head view.
"""
from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probing.examples import BUILTIN_SETS, Example, read_jsonl
from probing.demo.explore import (MAX_TEXT_CHARS, InputError, SentenceScores, clean_text, control_characters,
                             find_negation_cues, find_pronouns, make_example, prepare, sentence_scores,
                             words_with_spans)
from probing.demo.guard import (DemoError, ModelGate, allowed_models, check_model_allowed, choice_field,  # noqa: F401
                                 forward_slot, layers_field, number_field, shown, text_field, word_field)
from probing.defaults import SOURCE_PIECES
from probing.demo.model_menu import refuse_if_offline
from probing.models import LoadedModel
from probing.demo.word_attention import WordAttention, word_attention
from probing.outputs import COMMITTED_REPORTS, OutputBusyError, is_complete, safe_name, write_complete
from probing.runner import Encoded, SentenceAttention, attend, encode

# The demo, not the library, decides where reports live: the checkout's committed reports/ folder.
REPORTS_DIR = Path(os.environ.get("PROBING_REPORTS_DIR", COMMITTED_REPORTS))
DATASET_FOR = {"coreference": "builtin-coref", "negation": "builtin-negation"}
# The dataset beside a sentence's scores ("set:" columns, heatmap dots): for coreference GAP where the report
# has it, since most built-in items are solved by pronoun agreement alone; else the built-in set.
SET_COLUMNS_FROM = {"coreference": ("gap-dev", "builtin-coref"), "negation": ("builtin-negation",)}
HEATMAP_METRICS = ("mean_attention", "next_word_baseline", "above_baseline", "set_paired_difference")
CACHE_DIR = Path(os.environ.get("PROBING_CACHE_DIR", Path.home() / ".cache" / "probing-reports"))
ABOUT = (Path(__file__).resolve().parent / "about.md").read_text(encoding="utf-8")
DEMO_MAX_TOKENS = int(os.environ.get("PROBING_DEMO_MAX_TOKENS", "512"))
RELATIONS = ("coreference", "negation")
MAX_WORD_CHOICES = 400          # words offered in the target dropdown; others can be typed as start:end
HEAD_VIEW_TOKENS = 60
MODEL_VIEW_TOKENS = 40


log = logging.getLogger("probing.demo.backend")


GATE = ModelGate()


def get_model(name: str | None) -> LoadedModel:
    """An allowed, loaded model (capped at DEMO_MAX_TOKENS tokens), or DemoError in words.

    The load runs in the background (`ModelGate`): a request waits a few seconds at most, then hears that
    the model is still loading; a failed load is answered at once with its message for a while.
    """
    name = check_model_allowed(name)
    refuse_if_offline(name)                  # a hub model with the hub unreachable at start: refused at once
    loaded = GATE.get(name)
    if loaded.max_length > DEMO_MAX_TOKENS:
        loaded = dataclasses.replace(loaded, max_length=DEMO_MAX_TOKENS)
    return loaded



@contextmanager
def worded():
    """Input errors from the library (`InputError`) become the demo's `DemoError`: shown in words, logged in
    one line."""
    try:
        yield
    except InputError as err:
        raise DemoError(str(err)) from None

def forward(loaded: LoadedModel, text: str, encoded: Encoded | None = None) -> SentenceAttention:
    """The one forward pass of a request (under the global limit): the sentence's pieces and attention as
    arrays, for the scores, the shading and the views. `encoded`: the text's encoding when the request has
    already made it (an analysis, through `explore.prepare`), so it is never tokenised twice."""
    encoded = encoded or encode(loaded, [text])[0]
    with forward_slot():
        return attend(loaded, text, encoded)


def word_choices(text: str, relation: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Dropdown choices (label, "start:end") for the source (pronouns or cues) and for every word; none for
    text that is not a string within the length limit."""
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT_CHARS or relation not in RELATIONS:
        return [], []
    sources = find_pronouns(text) if relation == "coreference" else find_negation_cues(text)
    words = [(w, s) for w, s in words_with_spans(text) if any(c.isalnum() for c in w)][:MAX_WORD_CHOICES]
    return [choice(w, s) for w, s in sources], [choice(w, s) for w, s in words]


def choice(word: str, span: tuple[int, int]) -> tuple[str, str]:
    """A dropdown choice for a word: "word (start:end)" as label and value.

    The value keeps the word, so a choice left over from an earlier text is caught (`resolve_word` checks
    that the word is still at those offsets) instead of silently naming another word.
    """
    label = f"{word} ({span[0]}:{span[1]})"
    return (label, label)


# The examples every explanation of attention starts from lead the gallery, whatever the built-in set's size.
FEATURED = {"coreference": ("The uncle thanked Laura because she had helped with the move.",),
            "negation": ("The lawyer did not sign the contract.",)}


def gallery(relation: str, n: int = 12) -> list[Example]:
    """The featured examples, then a varied handful of built-in examples (controls left out), for the gallery."""
    examples, _ = read_jsonl(BUILTIN_SETS[DATASET_FOR[relation]])
    main = [e for e in examples if not e.is_control]
    featured = [e for text in FEATURED.get(relation, ()) for e in main if e.text == text]
    rest = [e for e in main if e not in featured]
    step = max(1, len(rest) // max(1, n - len(featured)))
    return (featured + rest[::step])[:n]


def gallery_rows(relation: str) -> list[list[str]]:
    """The gallery as the page shows it: sentence, source word, target word."""
    return [[e.text, e.source, e.target] for e in gallery(relation)]


@dataclass
class Selection:
    """A gallery example as the page's inputs take it: the text, dropdown choices and the gold words."""
    text: str
    sources: list[tuple[str, str]]
    words: list[tuple[str, str]]
    source: str
    target: str


def gallery_example(relation: str, index: int) -> Selection:
    """The index-th gallery example, with its gold words preselected in the dropdowns."""
    relation = choice_field(relation, "relation", RELATIONS)
    examples = gallery(relation)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(examples):
        raise DemoError(f"There is no example number {index if isinstance(index, int) else shown(str(index))}.")
    example = examples[int(index)]
    sources, words = word_choices(example.text, relation)
    source, target = choice(example.source, example.source_span)[1], choice(example.target, example.target_span)[1]
    if source not in [v for _, v in sources]:
        sources.append(choice(example.source, example.source_span))
    if target not in [v for _, v in words]:
        words.append(choice(example.target, example.target_span))
    return Selection(example.text, sources, words, source, target)


@dataclass
class View:
    """A bertviz view for the page: the iframe and a note on how the text was read (may be empty)."""
    html: str
    note: str


@dataclass
class Analysis:
    """One sentence analysed: per-head scores, the dataset-level table beside them, the best head, the
    head view opened on it and the word shading from the source word, all from one forward pass."""
    scores: SentenceScores
    example: Example
    top_table: pd.DataFrame
    best_layer: int
    best_head: int
    notes: list[str]
    model: str
    tokens: list[str]
    view: View
    shading: WordAttention


def checked_request(text, relation, source, target, model) -> tuple[str | None, str, str, str, str]:
    """Every field of an analysis request checked for type and length, before any regex or model sees it."""
    relation = choice_field(relation if relation is not None else "coreference", "relation", RELATIONS)
    return (text_field(text, MAX_TEXT_CHARS), relation, word_field(source, "source"),
            word_field(target, "target"), check_model_allowed(model))


def analyse(text: str, relation: str, source: str | None, target: str | None, model: str | None,
            top_k: int = 8) -> Analysis:
    """Score every head for the source -> target pair in one sentence; DemoError on bad input."""
    text, relation, source, target, name = checked_request(text, relation, source, target, model)
    with worded():
        example = make_example(text, relation, source, target)
    loaded = get_model(name)
    with worded():
        prepared = prepare(loaded, example)          # encoded and laid out once, checked before the forward
    sentence = forward(loaded, example.text, prepared.encoded)
    scores = sentence_scores(loaded, prepared, sentence)
    ranking = (scores.attention if relation == "coreference"
               else scores.attention - np.nan_to_num(scores.next_word_baseline))
    best_layer, best_head = (int(i) for i in np.unravel_index(int(np.argmax(ranking)), ranking.shape))
    notes = text_notes(text, loaded, scores.truncated)
    if relation == "negation" and loaded.is_causal:
        notes.append(f"{loaded.name} is a causal (left-to-right) model: a word cannot attend to a later one, "
                     f"so this measures {scores.target!r} → {scores.source!r} (next word → cue).")
    if dataset_table(loaded.name, relation) is None:
        notes.append(f"No dataset-level scores for {loaded.name} yet, so the table's \"set\" columns are empty: "
                     "compute them in the Probing report tab.")
    view = _head_view_of(sentence, loaded, text, best_layer, best_head)
    # From the source as measured (a causal model's negation: the next word), read by the scorer's rule.
    shading = word_attention(example.text, sentence.encoded.offsets, sentence.encoded.word_ids,
                             sentence.attention, prepared.measured.source_span, source_pieces=SOURCE_PIECES)
    return Analysis(scores=scores, example=example, top_table=top_heads_table(scores, loaded.name, top_k),
                    best_layer=best_layer, best_head=best_head, notes=notes, model=loaded.name,
                    tokens=sentence.tokens, view=view, shading=shading)


def text_notes(text: str, loaded: LoadedModel, truncated: bool) -> list[str]:
    """What the visitor should know about how the text was read: control characters, truncation."""
    notes = []
    n_control = control_characters(text or "")
    if n_control:
        notes.append(f"{n_control} control character{'s were' if n_control > 1 else ' was'} (such as NUL) "
                     "replaced by spaces.")
    if truncated:
        notes.append(f"The text is longer than the {loaded.max_length} tokens this demo reads with {loaded.name}; "
                     "it was truncated and only the beginning was analysed.")
    return notes


def report_dir(model_name: str) -> Path:
    """Where a model's dataset-level results live: committed under reports/, else the on-disk cache."""
    safe = safe_name(model_name)
    committed = REPORTS_DIR / safe
    return committed if committed.exists() else CACHE_DIR / safe


def heads_folder(model_name: str, data: str) -> Path:
    return report_dir(model_name) / "heads" / data


def dataset_name(model_name: str, relation: str) -> str | None:
    """Which dataset's head table stands beside a sentence: the first of SET_COLUMNS_FROM with a complete
    result for this model (a folder is trusted only when its completion marker says so), else None."""
    return next((data for data in SET_COLUMNS_FROM[relation] if is_complete(heads_folder(model_name, data))), None)


def dataset_table(model_name: str, relation: str) -> pd.DataFrame | None:
    """The `analysis heads` table (its main task) beside a sentence's scores, or None if no complete result
    exists: GAP for coreference where the report has it, else the built-in set."""
    data = dataset_name(model_name, relation)
    if data is None:
        return None
    path = heads_folder(model_name, data) / "heads.csv"
    try:
        table = _read_table(str(path), path.stat().st_mtime)
    except OSError:
        return None
    return primary_task(table)


def primary_task(table: pd.DataFrame) -> pd.DataFrame:
    """One row per head: a head table holds one block per task (sentences with named candidates, sentences
    where every word competes), which are never averaged; the demo shows the task with the most examples."""
    if "task" not in table or table["task"].nunique() <= 1:
        return table
    sizes = table.groupby("task")["n_examples"].first()
    return table[table["task"] == sizes.idxmax()].reset_index(drop=True)


_tables: dict[tuple[str, float], pd.DataFrame] = {}
MAX_TABLES = 16


def _read_table(path: str, mtime: float) -> pd.DataFrame:
    """heads.csv, read once per version of the file (a bounded memory of versions)."""
    key = (path, mtime)
    if key not in _tables:
        while len(_tables) >= MAX_TABLES:
            _tables.pop(next(iter(_tables)))
        # Tables written before `selectivity` was renamed `above_baseline` are read under the new name.
        _tables[key] = pd.read_csv(path).rename(columns=lambda c: c.replace("selectivity", "above_baseline"))
    return _tables[key]


@dataclass
class ReportFiles:
    coref_heatmap: str | None             # candidates task: the antecedent among the named noun candidates
    negation_heatmap: str | None
    markdown: str
    folder: str
    coref_all_words_heatmap: str | None = None   # all-words task: every word of the sentence competes


def report_files(model: str | None, progress=None, compute: bool = True) -> ReportFiles:
    """The dataset-level report for a model; computed once (and cached on disk) when missing and `compute`."""
    from probing.report.heads import HEAD_FILES, run_heads
    name = check_allowed_name(model)
    folder = report_dir(name)
    missing = [data for data in DATASET_FOR.values() if not is_complete(folder / "heads" / data)]
    if missing and not compute:
        raise DemoError(f"No dataset-level report for {name} yet. Press the button to compute it "
                        "(it scores every head on the built-in sets; this takes a while on a CPU).")
    if missing:
        loaded = get_model(name)
        for step, data in enumerate(missing):
            if progress is not None:
                progress((step, len(missing)), desc=f"scoring every head of {loaded.name} on {data}")
            try:
                write_complete(folder / "heads" / data, HEAD_FILES,
                               lambda staging, data=data: run_heads(loaded.name, data, staging))
            except OutputBusyError:   # another visitor's request is computing this very report now
                raise DemoError(f"The report for {name} is being computed for another visitor right now; "
                                "try again in a minute.") from None
    full = folder / "report.md"    # `analysis report` output: it already contains the head reports
    sources = [full] if full.exists() else [folder / "heads" / data / "report.md" for data in DATASET_FOR.values()]
    parts = [page_markdown(path.read_text(encoding="utf-8")) for path in sources if path.exists()]
    def image(data, file="heatmap.png"):
        path = folder / "heads" / data / file
        return str(path) if path.exists() else None
    return ReportFiles(coref_heatmap=image("builtin-coref"), negation_heatmap=image("builtin-negation"),
                       markdown="\n\n---\n\n".join(parts), folder=_shown_folder(folder),
                       coref_all_words_heatmap=image("builtin-coref", "heatmap-all-words.png"))


def page_markdown(markdown: str) -> str:
    """A report's Markdown for the page: its figures and files are relative paths the server does not serve,
    so images are dropped (the heatmaps are shown beside it; the files are in the download list) and links
    to files become plain text. In-page anchors stay."""
    markdown = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", markdown)
    return re.sub(r"\[([^\]]*)\]\((?!#|https?:)[^)]*\)", r"\1", markdown)


def _shown_folder(folder: Path) -> str:
    """Where a report lives, without the server's absolute paths."""
    root = REPORTS_DIR.parent
    return str(folder.relative_to(root)) if folder.is_relative_to(root) else f"the report cache ({folder.name})"


_downloads: Path | None = None
_downloads_guard = threading.Lock()


def downloads_dir() -> Path:
    """The app's own private folder for download copies: made by `mkdtemp` (random name, mode 0700, owned by
    this process), never a fixed name in the shared temp folder that another local user could replace by a
    symlink; removed when the process exits."""
    global _downloads
    with _downloads_guard:
        if _downloads is None or not _downloads.is_dir():
            _downloads = Path(tempfile.mkdtemp(prefix="probing-downloads-"))
            atexit.register(shutil.rmtree, _downloads, True)
        return _downloads


def check_allowed_name(model: str | None) -> str:
    """The allow-listed model name, or DemoError (nothing is loaded)."""
    return check_model_allowed(model)


DATASET_COLUMNS = {
    "coreference": {"accuracy": "set: accuracy", "mean_attention": "set: mean attention",
                    "nearest_candidate_accuracy": "set: nearest-noun baseline"},
    "negation": {"paired_difference": "set: paired difference", "above_baseline": "set: above baseline",
                 "next_word_baseline": "set: next-word baseline"},
}


def top_heads_table(scores: SentenceScores, model_name: str, k: int | None, decimals: int = 3) -> pd.DataFrame:
    """This sentence's top k heads, beside each head's dataset-level scores on the built-in set ("set: ...").
    k=None: every head, in (layer, head) order (the downloads)."""
    sentence = pd.DataFrame(scores.heads())
    key = "above_baseline" if scores.relation == "negation" else "attention"
    top = sentence if k is None else sentence.sort_values(key, ascending=False, na_position="last").head(k)
    table = pd.DataFrame({"head": [f"{l}-{h}" for l, h in zip(top["layer"], top["head"])],
                          "attention": pd.to_numeric(top["attention"]).round(decimals)})
    if scores.relation == "negation":
        # None (no next-word baseline: a two-word text has no other adjacent pair) stays empty, not a crash.
        table["above_baseline"] = pd.to_numeric(top["above_baseline"], errors="coerce").astype(float).round(decimals)
    dataset = dataset_table(model_name, scores.relation)
    indexed = dataset.set_index(["layer", "head"]) if dataset is not None else None
    pairs = list(zip(top["layer"], top["head"]))
    for column, label in DATASET_COLUMNS[scores.relation].items():   # None: not computed for this model yet
        table[label] = [round(float(indexed.loc[p, column]), decimals)
                        if indexed is not None and column in indexed and p in indexed.index else None
                        for p in pairs]
    return table.reset_index(drop=True)


def empty_top_table(relation: str) -> pd.DataFrame:
    """The table's columns before anything was analysed."""
    columns = ["head", "attention"] + (["above_baseline"] if relation == "negation" else [])
    return pd.DataFrame(columns=columns + list(DATASET_COLUMNS[relation].values()))


def parse_head(label) -> tuple[int, int]:
    """A "layer-head" label (the dropdown's and the table's) as two ints."""
    label = "" if label is None else label
    if not isinstance(label, str) or len(label) > 40:
        raise DemoError(f"Pick a head as layer-head, such as 1-3 (got {shown(label)}).")
    match = re.fullmatch(r"\s*(\d{1,6})\s*-\s*(\d{1,6})\s*", label)
    if not match:
        raise DemoError(f"Pick a head as layer-head, such as 1-3 (got {shown(label)}).")
    return int(match.group(1)), int(match.group(2))


def head_labels(model: str | None) -> list[str]:
    """Every head of a model as "layer-head"."""
    loaded = get_model(model)
    return [f"{l}-{h}" for l in range(loaded.n_layers) for h in range(loaded.n_heads)]


def _head_view_of(sentence: SentenceAttention, loaded: LoadedModel, text: str, layer, head,
                  max_tokens: int = HEAD_VIEW_TOKENS) -> View:
    """The head view of a forward pass already made (no model call)."""
    from probing.views import head_view_html
    result = head_view_html(sentence.tokens, sentence.attention, layer=layer, head=head, max_tokens=max_tokens)
    notes = text_notes(text, loaded, sentence.encoded.truncated) + ([result.note] if result.note else [])
    return View(result.html, " ".join(notes))


def head_view(text: str, model: str | None, layer=None, head=None, max_tokens: int = HEAD_VIEW_TOKENS) -> View:
    """The bertviz head view of one sentence as a sandboxed iframe, opened on `layer` with `head` selected."""
    text, name = text_field(text, MAX_TEXT_CHARS), check_model_allowed(model)
    layer, head = number_field(layer, "layer"), number_field(head, "head")
    with worded():
        cleaned = clean_text(text)
    loaded = get_model(name)
    with worded():
        layer, head = _index("layer", layer, loaded.n_layers), _index("head", head, loaded.n_heads)
    sentence = forward(loaded, cleaned)
    return _head_view_of(sentence, loaded, text, layer, head, max_tokens)


def model_view(text: str, model: str | None, layers: list[int] | None = None,
               max_tokens: int = MODEL_VIEW_TOKENS, heads: list[int] | None = None) -> View:
    """The bertviz model view of one sentence (a subset of layers keeps the page light; a subset of heads
    gives wider thumbnails, for a narrow screen)."""
    from probing.views import model_view_html
    text, name, layers = text_field(text, MAX_TEXT_CHARS), check_model_allowed(model), layers_field(layers)
    heads = layers_field(heads)          # the same shape of field: a short list of small numbers
    with worded():
        cleaned = clean_text(text)
    loaded = get_model(name)
    with worded():
        layers = [_index("layer", l, loaded.n_layers) for l in layers] if layers else None
        heads = [_index("head", h, loaded.n_heads) for h in heads] if heads else None
    sentence = forward(loaded, cleaned)
    result = model_view_html(sentence.tokens, sentence.attention, layers=layers, max_tokens=max_tokens,
                             heads=heads)
    notes = text_notes(text, loaded, sentence.encoded.truncated) + ([result.note] if result.note else [])
    return View(result.html, " ".join(notes))


def _quoted(value) -> str:
    return shown(value) if isinstance(value, str) else repr(value)


def _index(name: str, value, count: int) -> int | None:
    """An optional layer/head number checked against the model's size, with the valid range in the message."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InputError(f"The {name} must be a whole number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"The {name} must be a whole number, got {_quoted(value)}.") from None
    if not number.is_integer():
        raise InputError(f"The {name} must be a whole number, got {_quoted(value)}.")
    if not 0 <= number < count:
        raise InputError(f"The {name} {int(number)} is out of range: this model has {count} {name}s "
                         f"(0-{count - 1}).")
    return int(number)


def score_heads_api(text: str, relation: str, source: str, target: str, model: str | None) -> dict:
    """The `/score_heads` endpoint's JSON: the model, the direction, the tokens and every head's numbers.

    `heads` holds one row per head in (layer, head) order; `attention` (and, for negation,
    `next_word_baseline` and `above_baseline` = attention minus that baseline) are
    `probing.heads.score_examples`'s numbers rounded to 6 decimals.
    """
    analysis = analyse(text, relation, source, target, model)
    return {"model": analysis.model, "relation": analysis.scores.relation, "direction": analysis.scores.direction,
            "source": analysis.scores.source, "target": analysis.scores.target,
            "source_span": list(analysis.example.source_span), "target_span": list(analysis.example.target_span),
            "tokens": analysis.tokens, "truncated": analysis.scores.truncated, "notes": analysis.notes,
            "best_head": {"layer": analysis.best_layer, "head": analysis.best_head},
            "heads": analysis.scores.heads()}
