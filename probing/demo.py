"""What the demo's buttons do, as plain functions that return plain data (no Gradio in here).

`app.py` lays out the page and turns these results into components; the API endpoints call them too.
Every user-facing failure is raised as `DemoError` with a message in words.

Public-demo safety lives here and in `probing.models`: only allow-listed models load (`check_model_allowed`),
never with remote code; at most `MAX_LOADED` stay in memory; a model that failed to load is not retried for
`RETRY_FAILED_S` seconds (a hub id with no network costs half a minute of retries); the demo reads at most
`DEMO_MAX_TOKENS` tokens of a text, whatever the model's own limit, so one request cannot ask for gigabytes
of attention weights.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probing.examples import BUILTIN_SETS, Example, read_jsonl
from probing.explore import (MAX_TEXT_CHARS, InputError, SentenceScores, clean_text, control_characters,
                             find_negation_cues, find_pronouns, make_example, score_sentence, words_with_spans)
from probing.models import LoadedModel, ModelLoadError, check_model_allowed, load_model

REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"
DATASET_FOR = {"coreference": "builtin-coref", "negation": "builtin-negation"}
HEATMAP_METRICS = ("mean_attention", "next_word_baseline", "selectivity")
CACHE_DIR = Path(os.environ.get("PROBING_CACHE_DIR", Path.home() / ".cache" / "probing-reports"))
ABOUT = (Path(__file__).resolve().parent / "about.md").read_text(encoding="utf-8")
DOWNLOADS_DIR = Path(tempfile.gettempdir()) / "probing-downloads"
DEMO_MAX_TOKENS = int(os.environ.get("PROBING_DEMO_MAX_TOKENS", "512"))
RETRY_FAILED_S = float(os.environ.get("PROBING_RETRY_FAILED_S", "300"))
MAX_WORD_CHOICES = 400          # words offered in the target dropdown; others can be typed as start:end
HEAD_VIEW_TOKENS = 60
MODEL_VIEW_TOKENS = 40


log = logging.getLogger("probing.demo")


class DemoError(ValueError):
    """Anything the visitor should read in words: bad input, a model that may not or cannot load."""


_load_locks: dict[str, threading.Lock] = {}
_load_locks_guard = threading.Lock()
_failed: dict[str, tuple[float, str]] = {}


def get_model(name: str | None) -> LoadedModel:
    """An allowed, loaded model (capped at DEMO_MAX_TOKENS tokens), or DemoError in words.

    Concurrent requests for the same model wait for one load instead of loading it twice; a load that
    failed is remembered for RETRY_FAILED_S seconds and answered at once with the same message.
    """
    try:
        allowed = check_model_allowed(name)
    except ModelLoadError as err:
        raise DemoError(str(err)) from None
    with _load_locks_guard:
        lock = _load_locks.setdefault(allowed, threading.Lock())
    with lock:
        failed = _failed.get(allowed)
        if failed is not None and time.monotonic() - failed[0] < RETRY_FAILED_S:
            raise DemoError(failed[1])
        try:
            loaded = load_model(allowed)
        except ModelLoadError as err:
            _failed[allowed] = (time.monotonic(), str(err))
            raise DemoError(str(err)) from None
        except Exception as err:  # anything else a broken model folder throws: still words, app keeps serving
            log.exception("loading model %r failed", allowed)
            message = f"cannot load model {allowed!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            _failed[allowed] = (time.monotonic(), message)
            raise DemoError(message) from None
        _failed.pop(allowed, None)
    if loaded.max_length > DEMO_MAX_TOKENS:
        loaded = dataclasses.replace(loaded, max_length=DEMO_MAX_TOKENS)
    return loaded


def word_choices(text: str, relation: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Dropdown choices (label, "start:end") for the source (pronouns or cues) and for every word."""
    if not text or len(text) > MAX_TEXT_CHARS:
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


def gallery(relation: str, n: int = 12) -> list[Example]:
    """A varied handful of built-in examples (controls left out), for the examples gallery."""
    examples, _ = read_jsonl(BUILTIN_SETS[DATASET_FOR[relation]])
    main = [e for e in examples if not e.is_control]
    step = max(1, len(main) // n)
    return main[::step][:n]


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
    examples = gallery(relation)
    if not 0 <= int(index) < len(examples):
        raise DemoError(f"There is no example number {index}.")
    example = examples[int(index)]
    sources, words = word_choices(example.text, relation)
    source, target = choice(example.source, example.source_span)[1], choice(example.target, example.target_span)[1]
    if source not in [v for _, v in sources]:
        sources.append(choice(example.source, example.source_span))
    if target not in [v for _, v in words]:
        words.append(choice(example.target, example.target_span))
    return Selection(example.text, sources, words, source, target)


@dataclass
class Analysis:
    """One sentence analysed: per-head scores, the dataset-level table beside them, and the best head."""
    scores: SentenceScores
    example: Example
    top_table: pd.DataFrame
    best_layer: int
    best_head: int
    notes: list[str]
    model: str


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
    notes = text_notes(text, loaded, scores.truncated)
    if relation == "negation" and loaded.is_causal:
        notes.append(f"{loaded.name} is a causal (left-to-right) model: a word cannot attend to a later one, "
                     f"so this measures {scores.target!r} → {scores.source!r} (next word → cue).")
    if dataset_table(loaded.name, relation) is None:
        notes.append(f"No dataset-level scores for {loaded.name} yet, so the table's \"set\" columns are empty: "
                     "compute them in the Probing report tab.")
    return Analysis(scores=scores, example=example, top_table=top_heads_table(scores, loaded.name, top_k),
                    best_layer=int(best_layer), best_head=int(best_head), notes=notes, model=loaded.name)


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
    safe = _safe_name(model_name)
    committed = REPORTS_DIR / safe
    return committed if committed.exists() else CACHE_DIR / safe


def dataset_table(model_name: str, relation: str) -> pd.DataFrame | None:
    """The `analysis heads` table on the built-in set for this model, or None if it was not computed yet."""
    path = report_dir(model_name) / "heads" / DATASET_FOR[relation] / "heads.csv"
    return _read_table(str(path), path.stat().st_mtime) if path.exists() else None


_tables: dict[tuple[str, float], pd.DataFrame] = {}


def _read_table(path: str, mtime: float) -> pd.DataFrame:
    """heads.csv, read once per version of the file."""
    key = (path, mtime)
    if key not in _tables:
        _tables[key] = pd.read_csv(path)
    return _tables[key]


@dataclass
class ReportFiles:
    coref_heatmap: str | None
    negation_heatmap: str | None
    markdown: str
    downloads: list[str]
    folder: str


def report_files(model: str | None, progress=None, compute: bool = True) -> ReportFiles:
    """The dataset-level report for a model; computed once (and cached on disk) when missing and `compute`."""
    from probing.reporting import run_heads
    name = check_allowed_name(model)
    folder = report_dir(name)
    missing = [data for data in DATASET_FOR.values() if not (folder / "heads" / data / "heads.csv").exists()]
    if missing and not compute:
        raise DemoError(f"No dataset-level report for {name} yet. Press the button to compute it "
                        "(it scores every head on the built-in sets; this takes a while on a CPU).")
    if missing:
        loaded = get_model(name)
        for step, data in enumerate(missing):
            if progress is not None:
                progress((step, len(missing)), desc=f"scoring every head of {loaded.name} on {data}")
            run_heads(data, loaded.name, folder / "heads" / data)
    full = folder / "report.md"    # `analysis report` output: it already contains the head reports
    sources = [full] if full.exists() else [folder / "heads" / data / "report.md" for data in DATASET_FOR.values()]
    parts = [page_markdown(path.read_text(encoding="utf-8")) for path in sources if path.exists()]
    downloads = download_copies(folder, name)
    image = lambda data: (str(folder / "heads" / data / "heatmap.png")  # noqa: E731
                          if (folder / "heads" / data / "heatmap.png").exists() else None)
    return ReportFiles(coref_heatmap=image("builtin-coref"), negation_heatmap=image("builtin-negation"),
                       markdown="\n\n---\n\n".join(parts), downloads=downloads, folder=_shown_folder(folder))


def page_markdown(markdown: str) -> str:
    """A report's Markdown for the page: its figures and files are relative paths the server does not serve,
    so images are dropped (the heatmaps are shown beside it; the files are in the download list) and links
    to files become plain text. In-page anchors stay."""
    markdown = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", markdown)
    return re.sub(r"\[([^\]]*)\]\((?!#|https?:)[^)]*\)", r"\1", markdown)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _shown_folder(folder: Path) -> str:
    """Where a report lives, without the server's absolute paths."""
    root = REPORTS_DIR.parent
    return str(folder.relative_to(root)) if folder.is_relative_to(root) else f"the report cache ({folder.name})"


def download_copies(folder: Path, name: str) -> list[str]:
    """The report's CSV, JSON and Markdown files, copied under names that say which set they belong to.

    Both sets write `heads.csv`, `summary.json` and `report.md`; a download list of two `heads.csv` would not
    say which is which, so the copies are named `builtin-coref-heads.csv` and so on.
    """
    out = DOWNLOADS_DIR / _safe_name(name)
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".csv", ".json", ".md") or not path.is_file():
            continue
        parts = path.relative_to(folder).parts
        target = out / "-".join(parts[1:] if parts[0] == "heads" and len(parts) > 1 else parts)
        if not target.exists() or target.stat().st_mtime < path.stat().st_mtime:
            partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
            shutil.copy2(path, partial)
            os.replace(partial, target)
        copies.append(str(target))
    return copies


def check_allowed_name(model: str | None) -> str:
    """The allow-listed model name, or DemoError (nothing is loaded)."""
    try:
        return check_model_allowed(model)
    except ModelLoadError as err:
        raise DemoError(str(err)) from None


DATASET_COLUMNS = {
    "coreference": {"accuracy": "set: accuracy", "mean_attention": "set: mean attention",
                    "nearest_candidate_accuracy": "set: nearest-noun baseline"},
    "negation": {"selectivity": "set: selectivity", "mean_attention": "set: mean attention",
                 "next_word_baseline": "set: next-word baseline"},
}


def top_heads_table(scores: SentenceScores, model_name: str, k: int) -> pd.DataFrame:
    """This sentence's top k heads, beside each head's dataset-level scores on the built-in set ("set: ...")."""
    sentence = pd.DataFrame(scores.heads())
    key = "selectivity" if scores.relation == "negation" else "attention"
    top = sentence.sort_values(key, ascending=False, na_position="last").head(k)
    table = pd.DataFrame({"head": [f"{l}-{h}" for l, h in zip(top["layer"], top["head"])],
                          "attention": top["attention"].round(3)})
    if scores.relation == "negation":
        table["selectivity"] = top["selectivity"].round(3)
    dataset = dataset_table(model_name, scores.relation)
    indexed = dataset.set_index(["layer", "head"]) if dataset is not None else None
    pairs = list(zip(top["layer"], top["head"]))
    for column, shown in DATASET_COLUMNS[scores.relation].items():   # None: not computed for this model yet
        table[shown] = [round(float(indexed.loc[p, column]), 3)
                        if indexed is not None and column in indexed and p in indexed.index else None
                        for p in pairs]
    return table.reset_index(drop=True)


def empty_top_table(relation: str) -> pd.DataFrame:
    """The table's columns before anything was analysed."""
    columns = ["head", "attention"] + (["selectivity"] if relation == "negation" else [])
    return pd.DataFrame(columns=columns + list(DATASET_COLUMNS[relation].values()))


def heatmap_values(scores: SentenceScores, metric: str) -> np.ndarray:
    """The (layers, heads) array a heatmap shows: the attention, the next-word baseline, or their difference."""
    if metric == "mean_attention" or scores.relation != "negation":
        return scores.attention
    if metric == "next_word_baseline":
        return scores.next_word
    if metric == "selectivity":
        return scores.attention - scores.next_word
    raise DemoError(f"Unknown heatmap metric {metric!r}; use one of {', '.join(HEATMAP_METRICS)}.")


def heatmap_title(scores: SentenceScores, metric: str) -> str:
    """What the heatmap shows, in words (the source and target are user text; the HTML escapes them)."""
    name = metric if scores.relation == "negation" else "attention"
    return f"{name}: {scores.source!r} → {scores.target!r} ({scores.direction}), layer × head"


def head_heatmap(scores: SentenceScores, metric: str, selected: tuple[int, int] | None = None) -> str:
    """The demo's clickable heatmap (HTML) of one analysed sentence."""
    from probing.figures import heatmap_html
    metric = metric if scores.relation == "negation" else "mean_attention"
    return heatmap_html(heatmap_values(scores, metric), heatmap_title(scores, metric), scores.is_argmax,
                        selected=selected, diverging=metric == "selectivity")


def parse_head(label) -> tuple[int, int]:
    """A "layer-head" label (the dropdown's and the table's) as two ints."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(label or ""))
    if not match:
        raise DemoError(f"Pick a head as layer-head, such as 1-3 (got {label!r}).")
    return int(match.group(1)), int(match.group(2))


def head_labels(model: str | None) -> list[str]:
    """Every head of a model as "layer-head"."""
    loaded = get_model(model)
    return [f"{l}-{h}" for l in range(loaded.n_layers) for h in range(loaded.n_heads)]


@dataclass
class View:
    """A bertviz view for the page: the iframe and a note on how the text was read (may be empty)."""
    html: str
    note: str


def head_view(text: str, model: str | None, layer=None, head=None, max_tokens: int = HEAD_VIEW_TOKENS) -> View:
    """The bertviz head view of one sentence as a sandboxed iframe, opened on `layer` with `head` selected."""
    from probing.runner import run_with_attention
    from probing.views import head_view_html
    loaded = get_model(model)
    try:
        cleaned = clean_text(text)
        layer, head = _index("layer", layer, loaded.n_layers), _index("head", head, loaded.n_heads)
    except InputError as err:
        raise DemoError(str(err)) from None
    sentence = run_with_attention(loaded, cleaned)
    result = head_view_html(sentence.tokens, sentence.attention, layer=layer, head=head, max_tokens=max_tokens)
    notes = text_notes(text, loaded, sentence.encoded.truncated) + ([result.note] if result.note else [])
    return View(result.html, " ".join(notes))


def model_view(text: str, model: str | None, layers: list[int] | None = None,
               max_tokens: int = MODEL_VIEW_TOKENS) -> View:
    """The bertviz model view of one sentence (a subset of layers keeps the page light)."""
    from probing.runner import run_with_attention
    from probing.views import model_view_html
    loaded = get_model(model)
    try:
        cleaned = clean_text(text)
        layers = [_index("layer", l, loaded.n_layers) for l in layers] if layers else None
    except InputError as err:
        raise DemoError(str(err)) from None
    sentence = run_with_attention(loaded, cleaned)
    result = model_view_html(sentence.tokens, sentence.attention, layers=layers, max_tokens=max_tokens)
    notes = text_notes(text, loaded, sentence.encoded.truncated) + ([result.note] if result.note else [])
    return View(result.html, " ".join(notes))


def _index(name: str, value, count: int) -> int | None:
    """An optional layer/head number checked against the model's size, with the valid range in the message."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InputError(f"The {name} must be a whole number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {name} must be a whole number, got {value!r}.") from None
    if not number.is_integer():
        raise InputError(f"The {name} must be a whole number, got {value!r}.")
    if not 0 <= number < count:
        raise InputError(f"The {name} {int(number)} is out of range: this model has {count} {name}s "
                         f"(0-{count - 1}).")
    return int(number)


def score_heads_api(text: str, relation: str, source: str, target: str, model: str | None) -> dict:
    """The `/score_heads` endpoint's JSON: the model, the direction, the tokens and every head's numbers.

    `heads` holds one row per head in (layer, head) order; `attention` (and, for negation,
    `next_word_baseline` and `selectivity`) are `probing.heads.score_examples`'s numbers rounded to 6 decimals.
    """
    from probing.runner import encode
    analysis = analyse(text, relation, source, target, model)
    loaded = get_model(model)
    encoded = encode(loaded, [analysis.example.text])[0]
    return {"model": loaded.name, "relation": relation, "direction": analysis.scores.direction,
            "source": analysis.scores.source, "target": analysis.scores.target,
            "source_span": list(analysis.example.source_span), "target_span": list(analysis.example.target_span),
            "tokens": loaded.tokenizer.convert_ids_to_tokens(encoded.input_ids),
            "truncated": analysis.scores.truncated, "notes": analysis.notes,
            "best_head": {"layer": analysis.best_layer, "head": analysis.best_head},
            "heads": analysis.scores.heads()}
