"""The demo's "Patching (causal)" tab, as plain functions (no Gradio in here).

A visitor gives a sentence and its minimal twin ("did not sign" / "did really sign", "she" / "he"); one call of
`probing.patching.patch_pair` patches every head between the two runs in one batch, and this file turns the
result into what the page shows: the chosen effect per head beside the clean run's attention from the swapped
word to a target word (two heatmaps), one point per head for the scatter of effect against attention with its
Spearman rank correlation, and a table of the top heads beside the committed dataset-level effects ("set:"
columns, from `reports/<model>/patching/builtin-negation/effects.csv`), which carry the CI and the corrected
test that one sentence cannot have.

Safety as in `backend`: every field goes through `guard` before a tokenizer sees it, the pair is capped at
`PATCH_MAX_TOKENS` pieces (every head's patched copy runs at once), the forward runs in patching's own lane
(`in_patch_lane`: one job at a time on its own lower-priority thread, never in scoring's slots), and
the library's ValueErrors become `DemoError` in words.
"""
from __future__ import annotations

import html
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probing.demo import backend
from probing.demo.candidates import antecedent_candidates
from probing.demo.explore import (MAX_TEXT_CHARS, PRONOUNS, clean_text, next_word_span, resolve_word,
                                  words_with_spans)
from probing.demo.guard import (DemoError, check_model_allowed, choice_field, in_patch_lane, shown, text_field,
                                word_field)
from probing.demo.downloads import records
from probing.demo.heatmap import heatmap_html
from probing.examples import BUILTIN_SETS, read_jsonl
from probing.models import LoadedModel
from probing.patching import TWIN_WORDS, NotAMinimalPair, PairPatch, patch_pair, suggest_twin
from probing.patching import minimal_pair as check_minimal_pair
from probing.outputs import is_complete

# Every head's patched copy of the pair runs in one batch: MiniLM's 72 heads x 2 effects = 147 rows of the
# sentence's length, so the pair's length, not the number of requests, sets the memory and time one request holds.
PATCH_MAX_TOKENS = int(os.environ.get("PROBING_PATCH_MAX_TOKENS", "64"))
KINDS = ("noising", "denoising")
KIND_MEANINGS = {
    "noising": "what the model loses when this head gets the twin's output (is the head necessary?)",
    "denoising": "what this head alone restores in the twin's run (is the head sufficient?)",
}
DATASET = "builtin-negation"          # the committed dataset-level patching results (negation pairs)
NEGATION_WORDS = ("not", "really")    # swaps whose pairs the dataset columns describe
TOP_K = 8
EFFECT_MEANING = ("1 = this head carries the whole clean-vs-twin difference of the sentence embedding, 0 = none of "
                  "it; below 0, patching it moves the embedding the other way.")
ATTENTION_MEANING = "The share of the swapped word's attention (clean sentence) that goes to the target word (0 to 1)."


@contextmanager
def worded_library():
    """The patching library's ValueErrors (not a minimal pair, nothing to patch) become DemoError in words."""
    try:
        yield
    except DemoError:
        raise
    except ValueError as err:
        text = str(err)
        raise DemoError(text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) from None


# ---- the pair: checked fields, swapped word, target -------------------------------------------------------

@dataclass
class CheckedPair:
    """A pair ready to patch: both texts, the swapped word's character span in each, the target's span in the
    clean text, the pieces that differ, and what the visitor should know about how they were chosen."""
    clean: str
    corrupt: str
    source_span: tuple[int, int]
    corrupt_span: tuple[int, int]
    target_span: tuple[int, int]
    differ: list[int]                     # the pieces that differ between the two texts
    notes: list[str] = field(default_factory=list)

    @property
    def swap(self) -> str:
        return f"{self.clean[slice(*self.source_span)]} -> {self.corrupt[slice(*self.corrupt_span)]}"


def known_swaps() -> str:
    return ", ".join(f"{a} → {b}" for a, b in TWIN_WORDS.items())


def twin_of(clean: str, corrupt: str) -> tuple[str, list[str]]:
    """The twin as given, or the suggested one (with a note saying so); DemoError when none can be suggested."""
    if corrupt is not None and corrupt.strip():
        return corrupt, []
    suggested = suggest_twin(clean)
    if suggested is None:
        raise DemoError("No twin was given and none can be suggested: the sentence has none of the words this demo "
                        f"knows how to swap ({known_swaps()}). Type a twin that changes one word for another of "
                        "as many pieces.")
    twin, swap = suggested
    return twin, [f"No twin was given; used the suggested twin ({swap}): {twin!r}"]


def _word_span(text: str, span: tuple[int, int]) -> tuple[int, int]:
    """The whole word(s) around a character span (a swapped piece may be part of a longer word)."""
    inside = [s for _, s in words_with_spans(text) if s[0] < span[1] and span[0] < s[1]]
    return (min(s[0] for s in inside), max(s[1] for s in inside)) if inside else span


def _encode(loaded: LoadedModel, text: str):
    # No truncation: the length is checked against PATCH_MAX_TOKENS, never silently cut.
    return loaded.tokenizer(text, return_offsets_mapping=True)


def minimal_pair(loaded: LoadedModel, clean: str, corrupt: str, model_rows: int) -> tuple[list[int], tuple, tuple]:
    """Check the pair as the tab needs it, in words: at most PATCH_MAX_TOKENS pieces each, then the library's
    minimal-pair check (as many pieces in both, differing in one word). Returns the differing pieces and the
    swapped word's span in each text."""
    lengths = {name: len(_encode(loaded, text)["input_ids"]) for name, text in (("sentence", clean), ("twin", corrupt))}
    longest = max(lengths, key=lengths.get)
    if lengths[longest] > PATCH_MAX_TOKENS:
        raise DemoError(f"The {longest} has {lengths[longest]:,} pieces; this tab patches pairs of at most "
                        f"{PATCH_MAX_TOKENS}, because every head's patched copy of the sentence runs at once "
                        f"({model_rows} copies for this model). Shorten both sentences.")
    try:
        pieces = check_minimal_pair(loaded, clean, corrupt, names=("sentence", "twin"))
    except NotAMinimalPair as err:
        raise DemoError(str(err)) from None
    differ = pieces.swapped
    source = _word_span(clean, (pieces.clean_offsets[differ[0]][0], pieces.clean_offsets[differ[-1]][1]))
    twin = _word_span(corrupt, (pieces.corrupt_offsets[differ[0]][0], pieces.corrupt_offsets[differ[-1]][1]))
    return differ, source, twin


def choose_target(clean: str, source: tuple[int, int], target: str) -> tuple[tuple[int, int], str]:
    """The target span and a note on how it was chosen: as given, else the first candidate noun for a pronoun,
    else the word right after the swapped word."""
    swapped = clean[slice(*source)]
    if target.strip():
        span = resolve_word(clean, target, "target")
        if span[0] < source[1] and source[0] < span[1]:
            raise DemoError("The target is the swapped word itself; pick another word of the sentence.")
        return span, f"Target: {clean[slice(*span)]!r}, as given."
    if swapped.lower() in PRONOUNS:
        candidates = antecedent_candidates(clean, source)
        if candidates:
            return candidates[0].span, (f"Target: {candidates[0].word!r}, the first noun or name in the sentence "
                                        "(none was given; type the word the pronoun refers to to change it).")
    try:
        span = next_word_span(clean, source)
    except ValueError:
        raise DemoError(f"No word follows {swapped!r}, so there is no default target: type the word whose "
                        "attention from it you want to see.") from None
    return span, f"Target: {clean[slice(*span)]!r}, the word right after {swapped!r} (none was given)."


def checked_pair(loaded: LoadedModel, clean: str, corrupt: str, target: str) -> CheckedPair:
    """Texts cleaned, the twin suggested if missing, the pair checked and the target chosen, all in words."""
    with backend.worded():
        clean = clean_text(clean)
    corrupt, notes = twin_of(clean, corrupt)
    with backend.worded():
        corrupt = clean_text(corrupt)
        n_rows = loaded.n_layers * loaded.n_heads * len(KINDS) + 3
        differ, source, twin = minimal_pair(loaded, clean, corrupt, n_rows)
        target_span, target_note = choose_target(clean, source, target or "")
    return CheckedPair(clean, corrupt, source, twin, target_span, differ, notes + [target_note])


# ---- the view --------------------------------------------------------------------------------------------

@dataclass
class PatchView:
    """One pair patched: every head's effects and attention, the page's heatmaps, table and scatter, and notes."""
    model: str
    pair: CheckedPair
    result: PairPatch
    attention: np.ndarray               # [layers, heads] clean run: swapped word -> target word
    kind: str
    effect_html: str
    attention_html: str
    top_table: pd.DataFrame
    scatter: pd.DataFrame
    correlation: dict[str, float | None]   # Spearman rho of attention vs each effect, over heads
    notes: list[str]
    dataset: pd.DataFrame | None = None
    estimated: np.ndarray | None = None     # [layers, heads] True where an effect is still an estimate

    @property
    def source_word(self) -> str:
        return self.pair.clean[slice(*self.pair.source_span)]

    @property
    def target_word(self) -> str:
        return self.pair.clean[slice(*self.pair.target_span)]

    def to_dict(self) -> dict:
        """The `/patch_heads` answer: plain JSON, numbers rounded to 6 decimals, heads in (layer, head) order."""
        r = lambda x: None if x is None or not np.isfinite(x) else round(float(x), 6)  # noqa: E731
        n_layers, n_heads = self.attention.shape
        heads = [{"layer": l, "head": h, "noising": r(self.result.effects["noising"][l, h]),
                  "denoising": r(self.result.effects["denoising"][l, h]), "attention": r(self.attention[l, h])}
                 for l in range(n_layers) for h in range(n_heads)]
        return {"model": self.model, "clean": self.pair.clean, "corrupt": self.pair.corrupt, "swap": self.pair.swap,
                "readout": self.result.readout, "tokens": list(self.result.tokens),
                "swapped": list(self.result.swapped),
                "source": {"word": self.source_word, "span": list(self.pair.source_span),
                           "pieces": list(self.result.source)},
                "target": {"word": self.target_word, "span": list(self.pair.target_span),
                           "pieces": list(self.result.target)},
                "distance": r(self.result.distance), "sanity": {k: r(v) for k, v in self.result.sanity.items()},
                "correlation": {k: r(v) for k, v in self.correlation.items()},
                "seconds": r(self.result.seconds), "notes": list(self.notes), "heads": heads}


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""
    rx = pd.Series(np.ravel(x)).rank().to_numpy()
    ry = pd.Series(np.ravel(y)).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def dataset_effects(model_name: str) -> pd.DataFrame | None:
    """The committed (or cached) dataset-level patching effects on negation pairs, or None when not computed."""
    folder = backend.report_dir(model_name) / "patching" / DATASET
    if not is_complete(folder) or not (folder / "effects.csv").exists():
        return None
    try:
        return pd.read_csv(folder / "effects.csv")
    except (OSError, ValueError):
        return None


def significant_marks(dataset: pd.DataFrame | None, kind: str, shape: tuple[int, int]) -> np.ndarray | None:
    """(layers, heads) bool: heads whose dataset-level effect has p_fwer < 0.05."""
    column = f"{kind}_p_fwer"
    if dataset is None or column not in dataset:
        return None
    marks = np.zeros(shape, bool)
    for layer, head, p in zip(dataset["layer"], dataset["head"], dataset[column]):
        if 0 <= layer < shape[0] and 0 <= head < shape[1]:
            marks[int(layer), int(head)] = bool(p < 0.05)
    return marks


def top_table(effects: dict[str, np.ndarray], attention: np.ndarray, kind: str,
              dataset: pd.DataFrame | None, k: int | None = TOP_K, norm_attention: np.ndarray | None = None,
              decimals: int = 3, set_kinds: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The k heads with the largest chosen effect on this pair, with both effects, the attention and its
    norm-based counterpart (empty where the model gives none), beside the dataset-level effect of the same kind
    with its 95% CI and whether its corrected p_fwer is below 0.05.

    k=None: every head, in (layer, head) order; `set_kinds`: the kinds whose "set:" columns are added (the
    chosen kind alone by default; the downloads carry both)."""
    n_heads = attention.shape[1]
    order = (np.arange(attention.size) if k is None
             else np.argsort(-effects[kind], axis=None, kind="stable")[:k])
    pairs = [(int(i) // n_heads, int(i) % n_heads) for i in order]
    table = pd.DataFrame({"head": [f"{l}-{h}" for l, h in pairs],
                          "noising": [round(float(effects["noising"][p]), decimals) for p in pairs],
                          "denoising": [round(float(effects["denoising"][p]), decimals) for p in pairs],
                          "attention": [round(float(attention[p]), decimals) for p in pairs],
                          "norm attention": [None if norm_attention is None
                                             else round(float(norm_attention[p]), decimals) for p in pairs]})
    indexed = dataset.set_index(["layer", "head"]) if dataset is not None else None
    for shown in set_kinds or (kind,):
        has = lambda p: indexed is not None and p in indexed.index and shown in indexed  # noqa: E731
        table[f"set: {shown}"] = [round(float(indexed.loc[p, shown]), decimals) if has(p) else None for p in pairs]
        table[f"set: {shown} 95% CI"] = [
            f"{indexed.loc[p, f'{shown}_ci_low']:.{decimals}f} to {indexed.loc[p, f'{shown}_ci_high']:.{decimals}f}"
            if has(p) else None for p in pairs]
        table[f"set: {shown} p_fwer < 0.05"] = [("yes" if indexed.loc[p, f"{shown}_p_fwer"] < 0.05 else "no")
                                                if has(p) else None for p in pairs]
    return table


def download_rows(view: "PatchView") -> list[dict]:
    """Every head of the patched pair with every column the page's table shows, named as the page names them
    (the "set:" columns of both effect kinds), in (layer, head) order, numbers to 6 decimals; empty cells None."""
    table = top_table(view.result.effects, view.attention, view.kind, view.dataset, k=None,
                      norm_attention=view.result.norm_attention, decimals=6, set_kinds=("noising", "denoising"))
    return records(table)


def empty_top_table(kind: str = "noising") -> pd.DataFrame:
    return pd.DataFrame(columns=["head", "noising", "denoising", "attention", "norm attention", f"set: {kind}",
                                 f"set: {kind} 95% CI", f"set: {kind} p_fwer < 0.05"])


# A narrow screen shows the four columns a reader needs first; the others go to a details line under each row.
NARROW_COLUMNS = ("head", "this pair", "attention", "set")
TABLE_CSS = """.pt-table {width: 100%; border-collapse: collapse; font-size: 14px; table-layout: auto}
.pt-table th, .pt-table td {padding: 4px 6px; border-bottom: 1px solid #e5e7eb; text-align: right;
  word-break: normal; overflow-wrap: normal; hyphens: none}
.pt-table th {font-weight: 600; vertical-align: bottom; white-space: normal}
.pt-table th:first-child, .pt-table td:first-child {text-align: left}
.pt-table .pt-ci {display: block; color: #666; font-size: 12px; white-space: nowrap}
.pt-table tr.pt-details td {display: none}
@media (max-width: 640px) {
  .pt-table {font-size: 13px}
  .pt-table .pt-wide {display: none}
  .pt-table tr.pt-main td {border-bottom: 0}
  .pt-table tr.pt-details td {display: table-cell; text-align: left; color: #555; font-size: 12px; padding-top: 0}
}"""


def _cell(value, decimals: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{decimals}f}" if isinstance(value, (float, np.floating)) else html.escape(str(value))


def table_html(table: pd.DataFrame, kind: str) -> str:
    """The top-heads table as the page shows it: on a wide screen every column, on a narrow one (CSS `pt-wide`
    hidden) head, this pair's effect, attention and the set's effect with its CI, and a details line under each
    row with the rest, so nothing scrolls sideways and no header breaks inside a word. Every value is escaped."""
    kind = choice_field(kind, "effect", KINDS)
    other = "denoising" if kind == "noising" else "noising"
    ci, passed = f"set: {kind} 95% CI", f"set: {kind} p_fwer < 0.05"
    header = (f"<tr><th>head</th><th>this pair: {kind}</th><th>attention</th><th class=\"pt-wide\">norm "
              f"attention</th><th class=\"pt-wide\">this pair: {other}</th><th>set: {kind} <span class=\"pt-ci\">"
              f"95% CI</span></th><th class=\"pt-wide\">set: p_fwer &lt; 0.05</th></tr>")
    rows = []
    for _, row in table.iterrows():
        interval = row.get(ci)
        rows.append(
            f"<tr class=\"pt-main\"><td>{_cell(row['head'])}</td><td>{_cell(row[kind])}</td>"
            f"<td>{_cell(row['attention'])}</td><td class=\"pt-wide\">{_cell(row.get('norm attention'))}</td>"
            f"<td class=\"pt-wide\">{_cell(row[other])}</td>"
            f"<td>{_cell(row.get(f'set: {kind}'))}<span class=\"pt-ci\">{_cell(interval)}</span></td>"
            f"<td class=\"pt-wide\">{_cell(row.get(passed))}</td></tr>"
            f"<tr class=\"pt-details\"><td colspan=\"7\">{other} {_cell(row[other])} · norm attention "
            f"{_cell(row.get('norm attention'))} · set p_fwer &lt; 0.05: {_cell(row.get(passed))}</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="7" style="color:#777">Patch a pair to list its top heads.</td></tr>')
    return f'<table class="pt-table"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'


def scatter_frame(effects: np.ndarray, attention: np.ndarray) -> pd.DataFrame:
    """One row per head: its label, layer (as text, for a colour legend with one key per layer; short, so
    the keys fit a narrow screen), attention and effect."""
    n_layers, n_heads = attention.shape
    return pd.DataFrame({"head": [f"{l}-{h}" for l in range(n_layers) for h in range(n_heads)],
                         "layer": [str(l) for l in range(n_layers) for _ in range(n_heads)],
                         "attention": attention.reshape(-1).astype(float).round(4),
                         "effect": effects.reshape(-1).astype(float).round(4)})


# The scatter's layer keys: twelve hues a reader tells apart (Tableau 10, then black and maroon), ordered so the
# first six (MiniLM's layers) differ most: no two blues or two oranges, as Okabe-Ito's sky blue beside its blue
# and vermillion beside its orange did. Cycled for deeper models.
LAYER_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#000000", "#9c755f", "#edc948",
                 "#ff9da7", "#76b7b2", "#bab0ac", "#8c0d3a")


def layer_colours(n_layers: int) -> dict[str, str]:
    """The scatter's colour per layer label ("0", "1", ...), so its legend shows a key for each layer."""
    return {str(l): LAYER_PALETTE[l % len(LAYER_PALETTE)] for l in range(n_layers)}


def correlation_line(rho: float | None, kind: str) -> str:
    if rho is None:
        return f"Rank correlation of attention and {kind} over the heads: undefined (one side is constant)."
    return (f"Rank correlation (Spearman) of attention and {kind} over all heads of this pair: **{rho:+.2f}**. "
            "Effects grow with depth, so this mixes layers; one pair has no CI. The Probing report ranks heads "
            "within each layer over all pairs, with its CI.")


PATCH_HINT = "Click a head to ring it in both maps and read its numbers below them; hover for its exact value."


def render(view: PatchView, kind: str, selected: tuple[int, int] | None = None) -> PatchView:
    """The page's parts for one effect kind (no model call): heatmaps, table, scatter, correlation."""
    kind = choice_field(kind or "noising", "effect", KINDS)
    effects, pair = view.result.effects, view.pair
    swap = pair.swap.replace(" -> ", " → ")
    effect_html = heatmap_html(
        effects[kind], f"{kind.capitalize()} effect of each head, {swap} (1 = the whole difference)",
        selected=selected, diverging=True, significant=significant_marks(view.dataset, kind, effects[kind].shape),
        value_meaning=f"{kind.capitalize()}: {KIND_MEANINGS[kind]}. {EFFECT_MEANING}"
                      + (" Dot: the head's dataset-level effect has p_fwer < 0.05." if view.dataset is not None else ""),
        hint=PATCH_HINT)
    # A decoder cannot look ahead: its attention to a later target is read the other way (see PairPatch).
    words = (view.target_word, view.source_word) if view.result.attention_reversed else \
        (view.source_word, view.target_word)
    attention_html = heatmap_html(
        view.attention, f"Attention {words[0]!r} → {words[1]!r} in the sentence, every layer × head",
        selected=selected, diverging=False, value_meaning=ATTENTION_MEANING, hint=PATCH_HINT)
    view.kind, view.effect_html, view.attention_html = kind, effect_html, attention_html
    view.top_table = top_table(effects, view.attention, kind, view.dataset,
                               norm_attention=view.result.norm_attention)
    view.scatter = scatter_frame(effects[kind], view.attention)
    return view


def checked_request(clean, corrupt, target, model, kind) -> tuple[str | None, str, str, str, str]:
    """Every field checked for type and length before any tokenizer or regex sees it."""
    return (text_field(clean, MAX_TEXT_CHARS), text_field(corrupt, MAX_TEXT_CHARS) or "",
            word_field(target, "target"), check_model_allowed(model),
            choice_field(kind if kind is not None else "noising", "effect", KINDS))


def patch_pair_view(clean: str, corrupt: str | None, target: str | None, model: str | None,
                    kind: str = "noising", method: str = "exact") -> PatchView:
    """Patch every head between a sentence and its twin (both effects), and lay the result out for the page.
    method "attribution": the quick first answer, every effect a first-order estimate (one forward and one
    backward pass); `confirm_top_heads` then patches the top heads exactly."""
    clean, corrupt, target, name, kind = checked_request(clean, corrupt, target, model, kind)
    loaded = backend.get_model(name)
    pair = checked_pair(loaded, clean, corrupt, target)
    # patching's lane: one job at a time, on its own lower-priority thread; scoring keeps its slots (the hooks
    # act on the lane thread's passes only)
    with worded_library():
        # attention: the clean run's, from the swapped word (mean over its pieces) to the target (sum over its)
        result = in_patch_lane(lambda: patch_pair(loaded, pair.clean, pair.corrupt, source=pair.source_span,
                                                  target=pair.target_span, kinds=KINDS, method=method,
                                                  check=method == "exact"))
    attention = result.attention
    correlation = {k: spearman(attention, result.effects[k]) for k in KINDS}
    dataset = dataset_effects(loaded.name)
    notes = backend.text_notes(clean, loaded, False) + pair.notes
    notes.append(f"Readout: the sentence embedding (mean of the final hidden states); the sentence's and the twin's "
                 f"are {result.distance:.3f} apart, and every effect is a share of that difference.")
    if dataset is None:
        notes.append(f"No dataset-level patching results for {loaded.name} yet, so the table's \"set\" columns are "
                     "empty (`python -m analysis patch --data builtin-negation` computes them).")
    elif pair.clean[slice(*pair.source_span)].lower() not in NEGATION_WORDS:
        notes.append(f"The \"set\" columns are the heads' effects on negation pairs (not ↔ really, {DATASET}); "
                     f"this pair swaps {pair.swap}, so compare with care.")
    worst = 0.0 if result.sanity["passed"] is None else max(  # None: checked by the exact confirmation
        result.sanity["own_noising_max_abs"], result.sanity["own_denoising_max_abs"],
        abs(result.sanity["embedding_denoising"] - 1))
    if worst > 1e-4:
        notes.append(f"Sanity check off by {worst:.2g} (patching a run with its own activations should change "
                     "nothing): treat these numbers with care.")
    if method == "attribution":
        notes.append("First answer: every effect is a first-order estimate (attribution patching); exact values "
                     f"replace the estimates of the top {CONFIRMED_HEADS} heads per effect once they are patched, "
                     "and the sanity checks run with them.")
    view = PatchView(model=loaded.name, pair=pair, result=result, attention=attention, kind=kind, effect_html="",
                     attention_html="", top_table=empty_top_table(kind), scatter=pd.DataFrame(),
                     correlation=correlation, notes=notes, dataset=dataset)
    return render(view, kind)


CONFIRMED_HEADS = 10       # heads per effect patched exactly after the first (estimated) answer


def confirm_top_heads(view: PatchView, k: int = CONFIRMED_HEADS) -> PatchView:
    """The first answer's top k heads per effect (by estimate) patched exactly: their effects become exact,
    the rest stay estimates (`view.estimated` marks them), and a note says how far estimate and exact were."""
    if view.result.method != "attribution":
        return view
    effects = view.result.effects
    flat = set()
    for kind in KINDS:
        flat.update(int(i) for i in np.argsort(-effects[kind], axis=None, kind="stable")[:k])
    n_heads = view.attention.shape[1]
    heads = [divmod(i, n_heads) for i in sorted(flat)]
    loaded = backend.get_model(view.model)
    with worded_library():
        exact = in_patch_lane(lambda: patch_pair(loaded, view.pair.clean, view.pair.corrupt,
                                                 source=view.pair.source_span, target=view.pair.target_span,
                                                 kinds=KINDS, heads=heads))
    where = tuple(np.array(heads).T)
    merged = {kind: effects[kind].copy() for kind in KINDS}
    gaps = []
    for kind in KINDS:
        merged[kind][where] = exact.effects[kind][where]
        gaps.append(float(np.max(np.abs(effects[kind][where] - exact.effects[kind][where]))))
    estimated = np.ones_like(view.attention, dtype=bool)
    estimated[where] = False
    result = PairPatch(**{**view.result.__dict__, "effects": merged, "method": "exact for the top heads",
                          "seconds": view.result.seconds + exact.seconds, "sanity": exact.sanity})
    notes = [n for n in view.notes if not n.startswith("First answer:")]
    notes.append(f"Exact patching of the {len(heads)} top heads by estimate replaced their estimates (largest "
                 f"change {max(gaps):.3f}); the other heads' effects are still first-order estimates.")
    if not exact.sanity["passed"]:
        notes.append("Sanity check failed (patching a run with its own activations should change nothing): "
                     "treat these numbers with care.")
    confirmed = PatchView(**{**view.__dict__, "result": result, "notes": notes, "estimated": estimated})
    return render(confirmed, view.kind)


def patch_heads_api(clean: str, corrupt: str, model: str | None, target: str | None) -> dict:
    """The `/patch_heads` endpoint's JSON (see `PatchView.to_dict`)."""
    return patch_pair_view(clean, corrupt, target, model).to_dict()


# ---- the gallery -----------------------------------------------------------------------------------------

def _target_label(text: str, span: tuple[int, int]) -> str:
    """The target as the box takes it: the word when it occurs once, else `word (start:end)`."""
    word = text[slice(*span)]
    once = len(re.findall(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text, flags=re.IGNORECASE)) == 1
    return word if once else backend.choice(word, span)[1]


def gallery_pairs(n_negation: int = 4, n_pronoun: int = 3) -> list[list[str]]:
    """A few minimal pairs: negated built-in sentences with their "really" controls, and he/she pairs made from
    built-in coreference sentences (the twin swaps the pronoun), each with its gold target."""
    rows, _ = read_jsonl(BUILTIN_SETS["builtin-negation"])
    controls = {e.meta.get("pair"): e for e in rows if e.role == "control" and e.meta.get("adverb") == "really"}
    negation = [[e.text, controls[e.meta["pair"]].text, _target_label(e.text, e.target_span)] for e in rows
                if e.role == "negated" and e.meta.get("cue_form") == "not" and e.meta.get("pair") in controls]
    coref, _ = read_jsonl(BUILTIN_SETS["builtin-coref"])
    pronoun = []
    for e in coref:
        suggested = suggest_twin(e.text)
        if e.source.lower() in ("he", "she") and suggested is not None and suggested[1].split(" -> ")[0] == e.source:
            pronoun.append([e.text, suggested[0], _target_label(e.text, e.target_span)])
    pick = lambda items, n: items[::max(1, len(items) // n)][:n]  # noqa: E731
    return pick(negation, n_negation) + pick(pronoun, n_pronoun)


def gallery_pair(index) -> list[str]:
    pairs = gallery_pairs()
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(pairs):
        raise DemoError(f"There is no example number {index if isinstance(index, int) else shown(str(index))}.")
    return pairs[index]


def suggest(clean) -> tuple[str, str]:
    """The "Suggest twin" button: (twin, note in words); DemoError when nothing can be swapped."""
    with backend.worded():
        clean = clean_text(text_field(clean, MAX_TEXT_CHARS))
    twin, notes = twin_of(clean, "")
    return twin, notes[0].replace("No twin was given; used the suggested twin", "Suggested twin")


def head_line(view: PatchView, layer: int, head: int) -> str:
    """One head's numbers on this pair, in words (a heatmap click)."""
    n_layers, n_heads = view.attention.shape
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise DemoError(f"There is no head {layer}-{head} in {view.model} ({n_layers} layers × {n_heads} heads).")
    effects = view.result.effects
    line = (f"Head {layer}-{head}: noising {effects['noising'][layer, head]:+.3f}, denoising "
            f"{effects['denoising'][layer, head]:+.3f}, attention {view.source_word!r} → {view.target_word!r} "
            f"{view.attention[layer, head]:.3f}.")
    if view.dataset is not None:
        row = view.dataset[(view.dataset["layer"] == layer) & (view.dataset["head"] == head)]
        if len(row):
            r = row.iloc[0]
            line += (f" On the negation pairs of {DATASET}: {view.kind} {r[view.kind]:+.3f} "
                     f"(95% CI {r[f'{view.kind}_ci_low']:.3f} to {r[f'{view.kind}_ci_high']:.3f}, "
                     f"p_fwer {r[f'{view.kind}_p_fwer']:.3g}).")
    return line


TABLE_MEANINGS = {
    "head": "layer-head, both counted from 0.",
    "noising": "this pair: the share of the sentence-vs-twin difference lost when this head gets the twin's output "
               "(1 = all of it, 0 = none).",
    "denoising": "this pair: the share restored when the twin's run gets this head from the sentence.",
    "attention": "this pair: the share of the swapped word's attention that goes to the target word (0 to 1).",
    "norm attention": "this pair: the same attention weighted by the size of what the head moves from the target "
                      "word (the attention times the length of its value vector through the head's output "
                      "projection; Kobayashi et al. 2020). Empty for a model whose attention we cannot read this way.",
    "set: …": "the same effect averaged over the negation pairs of the built-in set, with its 95% bootstrap CI and "
              "whether the test corrected over all heads (p_fwer) finds it above 0. One sentence has no CI and no "
              "test: only these columns support a claim about a head.",
}
