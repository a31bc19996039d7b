"""The Gradio demo: which attention heads link a pronoun to its noun, and "not" to the word it negates.

A thin layer: it lays out the page and turns `probing.demo.backend` results into components. No scoring happens
here. `python app.py` serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change that).

API (a contract; see `score_heads` and `head_view` below):
- `/score_heads` (text, relation, source, target, model) -> JSON with every head's word-level attention;
- `/head_view` (text, model, layer, head) -> the bertviz head view as a sandboxed iframe;
- `/patch_heads` (clean, corrupt, model, target) -> JSON with every head's patching effects and attention.
Bad input raises `gr.Error` with a message in words; the server keeps serving.

The page keeps its sentence, model, tab and head in its URL (`probing.demo.share_link`): a link reopens them.
"""
from __future__ import annotations

import html
import inspect
import logging
import os
import re
import typing

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # a demo that phones nobody

import gradio as gr  # noqa: E402

from probing.demo import backend  # noqa: E402
from probing.demo import guard  # noqa: E402
from probing.demo import downloads, glossary, patch_view, report_page, share_link  # noqa: E402
from probing.demo.candidates import antecedent_candidates, default_antecedent, offered  # noqa: E402
from probing.demo.heatmap import ARGMAX_MEANING, HEATMAP_CLICK_JS, SIGNIFICANT_MEANING  # noqa: E402
from probing.demo.model_menu import model_menu  # noqa: E402
from probing.models import DEFAULT_MODEL  # noqa: E402
from probing.views import word_shading_html  # noqa: E402

log = logging.getLogger("probing.app")
# Scoring, views and reports share CONCURRENCY forward passes (one concurrency group here, one semaphore in
# the guard); patching has its own lane (one job, a small queue of its own), so it never delays scoring.
# More requests wait in a bounded queue, at most a few per client address (`guard.cap_queue`).
CONCURRENCY = guard.CONCURRENCY
MODEL_GROUP = {"concurrency_limit": CONCURRENCY, "concurrency_id": "model"}
PATCH_GROUP = {"concurrency_limit": 1, "concurrency_id": guard.PATCH_GROUP_ID}
QUEUE_SIZE = int(os.environ.get("PROBING_QUEUE_SIZE", "64"))
# Gradio keeps every visitor's session (each page load or API client: a copy of the page's config and the
# last outputs, 0.3-1 MB here) until this many newer sessions push it out; its default of 10,000 would let
# memory grow by gigabytes on a public demo.
SESSION_CAPACITY = int(os.environ.get("PROBING_SESSION_CAPACITY", "500"))
RELATIONS = {"coreference": ("Coreference", "pronoun", "antecedent"),
             "negation": ("Negation", "cue (not / n't)", "next word")}
INTRO = """# Which attention heads do what?
Every token in a transformer scores every other token, and each **head** spreads its attention its own way.
Some heads learn relations: a pronoun looking at the noun it refers to, or *not* looking at the word it negates.
Pick a model, run a sentence, and see which heads do it, next to baselines and dataset-level scores."""
NEGATION_NOTE = ("*Causal models* (such as `gemma-270m`) read left to right: *not* cannot attend to a later word, "
                 "so for them the direction is reversed and the heatmap shows **next word → cue**.")
HEATMAP_PLACEHOLDER = '<p style="color:#777">Analyse a sentence to see every head here.</p>'
# Shares of the table's width (percentages, so a 420 px screen gets no sideways scroll).
TABLE_WIDTHS = {"coreference": ["12%", "20%", "20%", "20%", "28%"], "negation": ["9%", "19%", "18%", "18%", "18%", "18%"]}
# Table headers wrap between words only ("attention" was broken into "attentio|n"); on a narrow screen the
# table shrinks instead of scrolling sideways, its headers in a smaller type so that the longest word of a
# header ("difference", "attention") fits a column of a 420 px screen whole.
CSS = patch_view.TABLE_CSS + """
#coref-table th .header, #neg-table th .header {word-break: normal !important; overflow-wrap: normal !important}
@media (max-width: 520px) {
  #coref-table table *, #neg-table table * {font-size: 10.5px !important}
  #coref-table .cell-wrap, #neg-table .cell-wrap {padding: 3px 2px !important}
  #coref-table .cell-menu-button, #neg-table .cell-menu-button {display: none !important}
  #coref-table th .header, #neg-table th .header, #coref-table th .header *, #neg-table th .header * {
    font-size: 9px !important; line-height: 1.25 !important}
  #coref-table table, #neg-table table {table-layout: fixed; width: 100% !important; min-width: 0 !important}
}
.stale-note {border-left: 4px solid #f59e0b; padding-left: 8px}
/* On a narrow screen the report's heatmaps wrap to full-width rows (min_width), where Gradio's image frame
   collapses to 0 px tall: give the picture its own height from its width. */
@media (max-width: 640px) {
  #report-coref .image-container, #report-neg .image-container, #report-coref button, #report-neg button,
  #report-coref .image-frame, #report-neg .image-frame {height: auto !important; width: 100% !important}
  #report-coref img, #report-neg img {width: 100% !important; height: auto !important; min-height: 80px;
                                      object-fit: contain}  /* min-height: a lazy image of 0 px never loads */
}"""
STALE_NOTE = ("The sentence changed, so the heatmap, table and views of the previous sentence were cleared. "
              "Press **Analyse** for this one.")
CANDIDATES_LABEL = "Next: which word does the pronoun refer to?"
VIEW_PLACEHOLDER = '<p style="color:#777">Analyse a sentence to shade its words by the chosen head.</p>'
GLOSSARY = "\n\n".join([
    "## What the demo's numbers mean",
    "\n".join(f"- **{label}**: {meaning}" for label, meaning in glossary.COLUMN_MEANINGS.items()),
    f"- **Heatmap, {ARGMAX_MEANING.split(':')[0]}**: {ARGMAX_MEANING.split(': ', 1)[1]}.",
    f"- **Heatmap, {SIGNIFICANT_MEANING.split(':')[0]}**: {SIGNIFICANT_MEANING.split(': ', 1)[1]}.",
    f"- **Negation heatmap**: {glossary.METRIC_HELP} Signed numbers use a red-blue map with white at 0.",
    "- **Word shading**: each word's share of the chosen head's attention from the source word (darker: more; "
    "the exact value on hover), read as the table and heatmap read it: a source of several pieces from its "
    "last piece (\"n't\" from its \"t\"), each word the sum over its pieces, so a word's shade is the number "
    "the table gives it. The source is one outlined unit; what goes to special tokens such as [SEP] is given "
    "below the sentence."])
API_HELP = """## API

The page's three endpoints can be called with `gradio_client` (`Client(url).predict(..., api_name=...)`):

- **`/score_heads`** `(text, relation, source, target, model)`: `relation` is `coreference` or `negation`;
  `source` and `target` are words of the text (each must occur once) or `start:end` character offsets; for
  negation the target may be empty (the word after the cue); an empty `model` is the default. Returns JSON:
  `model`, `direction`, `tokens` and `heads`, one `{layer, head, attention, is_argmax, ...}` per head
  (word-level attention as `probing.heads.score_examples` computes it, rounded to 6 decimals); negation rows
  add `next_word_baseline` and `above_baseline` (called `selectivity` before).
- **`/head_view`** `(text, model, layer, head)`: the bertviz head view as a sandboxed `<iframe>`; layer and
  head are optional.
- **`/patch_heads`** `(clean, corrupt, model, target)`: patches every head between a sentence and its minimal
  twin (one word swapped for a word of as many pieces; an empty `corrupt` gets the suggested twin, not ↔ really
  or he ↔ she; at most 64 pieces each). `target` is optional (a word, `start:end` or empty: the word after the
  swapped word, or the first noun for a pronoun). Returns JSON: `model`, `clean`, `corrupt`, `swap`, `readout`,
  `tokens`, `swapped` (the pieces that differ), `source` and `target` (`word`, `span`, `pieces`), `distance`,
  `sanity` (own-run patches give 0, the embedding patch 1), `correlation` (Spearman, attention vs each
  effect, over heads), `notes`, and `heads`, one `{layer, head, noising, denoising, attention}` per head
  (rounded to 6 decimals; 1 = the whole sentence-vs-twin difference of the sentence embedding, 0 = none).

Bad input gets an error with a message in words."""


def _escape(text: str) -> str:
    """User words inside a Markdown message are shown as text: no HTML, no Markdown (no image, no link)."""
    return guard.inert(text)


def _message(err: Exception) -> str:
    """An error in words: expected ones (bad input) logged in one line, others in full on the server only."""
    if isinstance(err, backend.DemoError):
        log.info("refused: %s", str(err)[:200])
        return str(err)
    log.error("unexpected error %s: %s", type(err).__name__, guard.shown(str(err), 200), exc_info=err)
    return f"Something went wrong ({type(err).__name__}). Try another sentence or model."


def _refused(err: Exception) -> gr.Error:
    """The error an event raises: the message in words, logged once by `_message` (Gradio prints no traceback)."""
    return gr.Error(_message(err), print_exception=False)


def _problem(err: Exception) -> str:
    """An error as words for the page, never a trace."""
    prefix = "**Problem:**" if isinstance(err, backend.DemoError) else "**Something went wrong:**"
    return f"{prefix} {_escape(_message(err))}"


def _note(text: str) -> str:
    return f"*{_escape(text)}*" if text else ""


# ---- the coreference and negation tabs -------------------------------------------------------------

def load_example(relation, index):
    """A gallery click: the sentence, with its gold words preselected in the dropdowns."""
    chosen = backend.gallery_example(relation, index)
    return (chosen.text, gr.update(choices=chosen.sources, value=chosen.source),
            gr.update(choices=chosen.words, value=chosen.target))


def update_choices(relation, text, source, target, link=None):
    """Refresh the word dropdowns when the text is edited, keeping a still-valid selection.

    `link`: the page's opened link (a `share_link.Link`); while the text is still the link's, its words win
    over the boxes' values, which this event may read from before the link filled them in."""
    sources, words = backend.word_choices(text or "", relation)
    if link is not None and getattr(link, "tab", "") == relation and getattr(link, "text", None) == text:
        source = _as_choice(link.source, sources) or source
        target = _as_choice(link.target, words) or target
    keep = lambda value, choices: value if value in [v for _, v in choices] else (choices[0][1] if choices else None)  # noqa: E731
    # The target is never guessed: it stays if still valid, else empty (negation: the word after the cue).
    target_value = target if target in [v for _, v in words] else None
    return gr.update(choices=sources, value=keep(source, sources)), gr.update(choices=words, value=target_value)


def _heatmap(state, selected):
    """The analysed sentence's heatmap, with the built-in set's significant heads dotted."""
    return glossary.sentence_heatmap(state["scores"], state["metric"], selected=selected,
                                     dataset=backend.dataset_table(state["model_name"], state["relation"]))


def _shading(state, layer, head):
    """The sentence's words shaded by one head's attention from the source word."""
    shading = state["shading"]
    source = shading.source_name or f"\u201c{shading.words[shading.source]}\u201d"
    reading = f", {shading.reading} as in the table and heatmap," if shading.reading else ""
    return word_shading_html(shading.words, shading.values[layer, head], shading.source,
                             title=f"Head {layer}-{head}: attention from {source}{reading} to each word",
                             special=float(shading.special[layer, head]), text=state["text"], spans=shading.spans)


def _view_note(layer, head, view) -> str:
    return (f"**Head view, layer {layer}, head {head}:** lines go from each token on the left to the tokens it "
            "attends to on the right (darker: more). Tokens are pieces: \"n't\" is two (' and t), and the table, "
            "heatmap and word shading read a source of several pieces from its last one (here: hover t). Pick "
            "another layer in the view, or click its colour boxes to add heads. " + _note(view.note))


def _show(state, layer, head, view=None):
    """Heatmap (head ringed), dropdown, head view, note and word shading for one head of the analysed
    sentence; `view` when the analysis already made it from its forward pass."""
    state = dict(state, selected=(layer, head))
    view = view or backend.head_view(state["text"], state["model"], layer, head)
    heatmap = _heatmap(state, (layer, head))
    return (heatmap, gr.update(value=f"{layer}-{head}"), view.html, _view_note(layer, head, view),
            _shading(state, layer, head), state)


def run_relation(relation, text, source, target, model, metric):
    """Analyse one sentence: message, heatmap, top-heads table, head choice, head view, view note, state."""
    try:
        target, defaulted = _target_or_default(relation, text, source, target)
        analysis = backend.analyse(text, relation, source, target, model)
        state = {"scores": analysis.scores, "text": analysis.example.text, "model": model,
                 "metric": metric, "relation": relation, "model_name": analysis.model,
                 "shading": analysis.shading, "typed": text}
        best = (analysis.best_layer, analysis.best_head)
        message = "\n\n".join([f"Best head for this sentence: **{best[0]}-{best[1]}**, shown in the views below. "
                                 "Red outline: the target gets more of that head's attention than any other word "
                                 "(special tokens such as [SEP] left out). Dot: the head beats its baseline on the "
                                 "dataset beside the table. Click any head to see it."]
                                + [f"**Note:** {_escape(n)}" for n in [defaulted] + analysis.notes if n])
        heatmap, _, view, note, words, state = _show(state, *best, view=analysis.view)
        choice = gr.update(choices=backend.head_labels(analysis.model), value=f"{best[0]}-{best[1]}")
        return message, heatmap, glossary.plain_table(analysis.top_table), choice, view, note, words, state
    except Exception as err:  # every failure becomes words on the page
        return (_problem(err), HEATMAP_PLACEHOLDER, glossary.plain_table(backend.empty_top_table(relation)),
                gr.update(choices=[], value=None), "", "", VIEW_PLACEHOLDER, None)


def _target_or_default(relation, text, source, target) -> tuple[str | None, str]:
    """Coreference with no antecedent picked (Enter pressed before a choice arrived): the nearest noun or name
    before the pronoun, and a note that says so; anything else is passed on unchanged."""
    if relation != "coreference" or (isinstance(target, str) and target.strip()) or not isinstance(text, str) \
            or not text or len(text) > backend.MAX_TEXT_CHARS:
        return target, ""
    pronouns, _ = backend.word_choices(text, relation)
    pronoun = _span_of(source) or (_span_of(pronouns[0][1]) if pronouns and not source else None)
    nearest = default_antecedent(text, pronoun) if pronoun else None
    if nearest is None:
        return target, ""
    return (backend.choice(nearest.word, nearest.span)[1],
            f"No antecedent was picked, so the nearest noun or name before the pronoun, \u201c{nearest.word}\u201d, "
            "was used; pick another in the list above to change it.")


def _pick(state, layer, head):
    """Move the head view (and the heatmap's ring and the dropdown) to one head."""
    if not state:
        return gr.update(), gr.update(), gr.update(), "*Analyse a sentence first.*", gr.update(), state
    try:
        return _show(state, layer, head)
    except Exception as err:
        return gr.update(), gr.update(), gr.update(), _problem(err), gr.update(), state


def pick_from_heatmap(state, evt: gr.EventData):
    """A click on a heatmap cell: the JS sends {layer, head}."""
    data = getattr(evt, "_data", None) or {}
    try:
        layer, head = int(data["layer"]), int(data["head"])
    except (KeyError, TypeError, ValueError):
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), state
    return _pick(state, layer, head)


def pick_from_table(state, table, evt: gr.SelectData):
    """A click on a row of the top-heads table."""
    try:
        label = str(table.iloc[evt.index[0]]["head"])
        return _pick(state, *backend.parse_head(label))
    except Exception as err:
        return gr.update(), gr.update(), gr.update(), _problem(err), gr.update(), state


def pick_from_dropdown(state, label):
    try:
        return _pick(state, *backend.parse_head(label))
    except Exception as err:
        return gr.update(), gr.update(), gr.update(), _problem(err), gr.update(), state


def switch_metric(state, metric):
    """The negation heatmap between mean_attention, next_word_baseline and above_baseline (no new forward pass)."""
    if not state:
        return gr.update(), state
    try:
        metric = guard.choice_field(metric, "heatmap metric", backend.HEATMAP_METRICS)
    except backend.DemoError:
        return gr.update(), state
    state = dict(state, metric=metric)
    return _heatmap(state, state.get("selected")), state


def _span_of(value) -> tuple[int, int] | None:
    """The character span of a dropdown choice "word (start:end)" (None for anything else)."""
    found = re.search(r"\((\d+):(\d+)\)$", value) if isinstance(value, str) else None
    return (int(found[1]), int(found[2])) if found else None


def coreference_choices(text, source, target, link=None, keep_target=True):
    """Pronoun, antecedent and candidate choices for a typed sentence. The candidates are the nouns and names
    likeliest to be the pronoun's antecedent (`candidates.offered`); when no valid target is kept, the
    nearest one before the pronoun is preselected, so Enter analyses at once."""
    source_update, target_update = update_choices("coreference", text, source, target, link)
    fits = isinstance(text, str) and 0 < len(text) <= backend.MAX_TEXT_CHARS
    pronoun = _span_of(source_update["value"])
    found = offered(text, pronoun) if fits else []
    choices = [backend.choice(c.word, c.span) for c in found]
    value = target_update["value"] if keep_target else None
    if value is None and fits and (nearest := default_antecedent(text, pronoun)) is not None:
        value = backend.choice(nearest.word, nearest.span)[1]
    candidates = gr.update(choices=choices, value=value if value in [v for _, v in choices] else None,
                           visible=bool(choices))
    return source_update, gr.update(choices=target_update["choices"], value=value), candidates


def repick_for_pronoun(text, source, target):
    """Another pronoun picked: its own likeliest candidates, and its nearest one preselected unless the
    visitor chose a target that is not a candidate (a word of their own)."""
    own_choice = target and target not in [backend.choice(c.word, c.span)[1] for c in antecedent_candidates(text or "")]
    _, target_update, candidates = coreference_choices(text, source, target, keep_target=bool(own_choice))
    return target_update, candidates


def clear_stale(state, text):
    """Typing a new sentence clears the previous sentence's results, saying so (nothing to clear: no change)."""
    if not state or text == state.get("typed"):
        return (gr.update(),) * 8
    return (STALE_NOTE, HEATMAP_PLACEHOLDER, glossary.plain_table(backend.empty_top_table(state["relation"])),
            gr.update(choices=[], value=None), "", "", VIEW_PLACEHOLDER, None)


def relation_downloads(state) -> str:
    """CSV and JSON links for the analysed sentence's per-head numbers (nothing before an analysis)."""
    if not state:
        return ""
    scores = state["scores"]
    context = {"sentence": state["text"], "model": state["model_name"], "relation": scores.relation,
               "direction": scores.direction, "source": scores.source, "target": scores.target}
    # Every head, with the page table's columns under the page's names ("sentence: ...", "set: ...").
    table = glossary.plain_table(backend.top_heads_table(scores, state["model_name"], None, decimals=6))
    return downloads.links_html(downloads.records(table), context,
                                f"{state['model_name']}-{scores.relation}-heads")


def patch_downloads(view) -> str:
    """CSV and JSON links for the patched pair's per-head effects and attention."""
    if view is None:
        return ""
    data = view.to_dict()
    context = {"sentence": data["clean"], "twin": data["corrupt"], "model": data["model"], "swap": data["swap"],
               "target": data["target"]["word"]}
    return downloads.links_html(patch_view.download_rows(view), context, f"{data['model']}-patching-heads")


def relation_tab(relation: str, model: gr.Dropdown, link: gr.State | None = None) -> dict:
    """One explorer tab (coreference or negation): inputs, gallery, heatmap, top heads, head view."""
    _, source_label, target_label = RELATIONS[relation]
    key = "coref" if relation == "coreference" else "neg"
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            # lines=1: Enter analyses (Shift+Enter adds a line); the box still grows for a long sentence
            text = gr.Textbox(label="Sentence", lines=1, max_lines=8, elem_id=f"{key}-text",
                              placeholder="Type a sentence, or click an example on the right.",
                              info=f"At most {backend.MAX_TEXT_CHARS:,} characters (longer text is refused); "
                                   f"the model reads at most {backend.DEMO_MAX_TOKENS} tokens (longer text is "
                                   "truncated, with a note).")
            with gr.Row():
                source = gr.Dropdown(label=source_label, choices=[], allow_custom_value=True, elem_id=f"{key}-source",
                                     info="Found by a closed word list; or type a word or start:end.")
                target = gr.Dropdown(label=target_label, choices=[], allow_custom_value=True, elem_id=f"{key}-target",
                                     info=("Any word of the sentence, or start:end." if relation == "coreference"
                                           else "Leave empty for the word right after the cue."))
            candidates = gr.Radio([], value=None, label=CANDIDATES_LABEL, visible=False, elem_id=f"{key}-candidates",
                                  info="Nouns and names found by a few simple rules, the nearest ones to the "
                                       "pronoun; the nearest before it is preselected, so Enter analyses at once. "
                                       "Pick another, or choose any word in the box above.")
            button = gr.Button("Analyse", variant="primary", elem_id=f"{key}-run")
            if relation == "negation":
                gr.Markdown(NEGATION_NOTE)
        with gr.Column(scale=2):
            gallery = gr.Dataset(components=["textbox", "textbox", "textbox"],
                                 headers=["Sentence", source_label, target_label],
                                 samples=backend.gallery_rows(relation), type="index", samples_per_page=6,
                                 label="Examples (click one: gold words preselected)", elem_id=f"{key}-gallery")
    message = gr.Markdown(elem_id=f"{key}-message")
    state = gr.State(None)
    empty_table = glossary.plain_table(backend.empty_top_table(relation))
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            metric = gr.Radio(glossary.METRIC_CHOICES, value="above_baseline", label="Heatmap shows",
                              visible=relation == "negation", elem_id=f"{key}-metric", info=glossary.METRIC_HELP)
            heatmap = gr.HTML(HEATMAP_PLACEHOLDER, js_on_load=HEATMAP_CLICK_JS, label="Layer × head",
                              elem_id=f"{key}-heatmap", padding=True, container=True)
        with gr.Column(scale=5, min_width=300):
            table_links = gr.HTML("", elem_id=f"{key}-downloads", padding=False)
            top_table = gr.Dataframe(empty_table,
                                     label="Top heads for this sentence, beside their scores on a dataset: GAP for coreference where the report has it, else the built-in set (click a row)",
                                     interactive=False, wrap=True, elem_id=f"{key}-table",
                                     column_widths=TABLE_WIDTHS[relation])
            gr.Markdown("**What the columns mean**\n\n" + glossary.table_legend(empty_table),
                        elem_id=f"{key}-legend")
    head_choice = gr.Dropdown(label="Head shown in the views below (layer-head)", choices=[], interactive=True,
                              elem_id=f"{key}-head")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            words = gr.HTML(VIEW_PLACEHOLDER, label="Word shading", elem_id=f"{key}-words", padding=True,
                            container=True)
        with gr.Column(scale=3, min_width=300):
            view_note = gr.Markdown()
            view = gr.HTML(label="bertviz head view", js_on_load=None, elem_id=f"{key}-view")

    private = {"api_visibility": "private"}
    linked = [link] if link is not None else []     # the opened link, whose words the first fill keeps
    # .change, not .input: it also fires when the text is set by a paste or a script, so the word lists
    # never belong to another text.
    if relation == "coreference":
        text.change(coreference_choices, [text, source, target, *linked], [source, target, candidates], queue=False,
                    **private)
        source.input(repick_for_pronoun, [text, source, target], [target, candidates], queue=False, **private)
        candidates.input(lambda picked: picked, candidates, target, queue=False, **private)
    else:
        text.change(lambda *a: update_choices(relation, *a), [text, source, target, *linked], [source, target],
                    queue=False, **private)
    run = lambda *a: run_relation(relation, *a)  # noqa: E731
    outputs = [message, heatmap, top_table, head_choice, view, view_note, words, state]
    inputs = [text, source, target, model, metric]
    # Any new text (typed or pasted) clears the previous sentence's results. A gallery click empties the
    # state as it sets the text, so its own text change clears nothing and the analysis that follows stands.
    text.change(clear_stale, [state, text], outputs, queue=False, **private)
    # The address bar follows the analysis on screen: written after every run, a failed one included (its
    # sentence, no head), and after every head pick below.
    write_link = dict(fn=None, inputs=[text, source, target, model, head_choice], outputs=None,
                      js=share_link.write_js(relation, ["text", "source", "target", "model", "head"]), **private)
    gallery.click(lambda i: (*load_example(relation, i), None), gallery, [text, source, target, state], queue=False,
                  **private).then(run, inputs, outputs, **private, **MODEL_GROUP).then(**write_link)
    button.click(run, inputs, outputs, **private, **MODEL_GROUP).then(**write_link)
    text.submit(run, inputs, outputs, **private, **MODEL_GROUP).then(**write_link)
    picked = [heatmap, head_choice, view, view_note, words, state]
    state.change(relation_downloads, state, table_links, queue=False, **private)
    head_choice.change(**write_link)
    metric.input(switch_metric, [state, metric], [heatmap, state], queue=False, **private)
    heatmap.click(pick_from_heatmap, state, picked, **private, **MODEL_GROUP)
    top_table.select(pick_from_table, [state, top_table], picked, **private, **MODEL_GROUP)
    head_choice.input(pick_from_dropdown, [state, head_choice], picked, **private, **MODEL_GROUP)
    return {"fill": [text, source, target], "inputs": [model, metric], "outputs": outputs}


# ---- the patching tab ------------------------------------------------------------------------------

PATCH_KINDS = [(f"{kind}: {meaning}", kind) for kind, meaning in patch_view.KIND_MEANINGS.items()]
PATCH_LEGEND = f"""**How to read this.** The left map is *causal*: for each head, the model is run again with only that
head's output swapped between the sentence and its twin. {patch_view.EFFECT_MEANING} The right map is where
the head *looks*: the share of the swapped word's attention that goes to the target word. A head can look hard
at the target and matter little (bright on the right, white on the left), or the reverse; the scatter puts one
against the other, one point per head.

**Why the "set:" columns.** One sentence gives one number per head, with no CI and no test. The "set:" columns
are the same effect over all the negation pairs of the built-in set, with a 95% bootstrap CI and a test corrected
over all heads at once (p_fwer): only they support a claim that a head matters.

{chr(10).join(f"- **{column}**: {meaning}" for column, meaning in patch_view.TABLE_MEANINGS.items())}"""
PATCH_PLACEHOLDER = '<p style="color:#777">Patch a pair to see every head here.</p>'
PATCH_HEAD_CELL = "#patch-effect button.hh-selected"      # the head ringed in the patching maps
PATCH_STALE_NOTE = ("The sentence or its twin changed, so the previous pair's maps, scatter and table were cleared. "
                    "Press **Patch every head** for this pair.")


def _scatter(view):
    """The scatter with one colour key per layer of this model (the legend lists them all)."""
    return gr.ScatterPlot(value=view.scatter, color_map=patch_view.layer_colours(view.attention.shape[0]))


def _patch_outputs(view, selected=None):
    """The page's parts of a patched pair: heatmaps, scatter, correlation line, table (HTML: it fits 420 px)."""
    if selected is not None:
        view = patch_view.render(view, view.kind, selected)
    return (view.effect_html, view.attention_html, _scatter(view),
            patch_view.correlation_line(view.correlation[view.kind], view.kind),
            patch_view.table_html(view.top_table, view.kind))


def run_patching(clean, twin, target, model, kind):
    """Patch every head, in two answers: first every effect estimated by attribution patching (one forward and
    one backward pass, at once), then the top heads patched exactly. Each answer: message, twin (the suggested
    one when empty), heatmaps, scatter, correlation, table, head line, state."""
    try:
        view = patch_view.patch_pair_view(clean, twin, target, model, kind, method="attribution")
        yield _patching_answer(view, "estimated every head by attribution patching; exact values for the top "
                                     "heads follow")
        view = patch_view.confirm_top_heads(view)
        yield _patching_answer(view, "the top heads patched exactly, the rest estimated")
    except Exception as err:
        yield (_problem(err), gr.update(), PATCH_PLACEHOLDER, PATCH_PLACEHOLDER, None, "",
               patch_view.table_html(patch_view.empty_top_table(), "noising"), "", None)


def _patching_answer(view, how: str):
    message = "\n\n".join([f"Patched **{_escape(view.pair.swap)}** with {_escape(view.model)}: "
                            f"{len(view.result.tokens)} pieces, {how} ({view.result.seconds:.2f} s). Click a head "
                            f"in either map for its numbers."]
                           + [f"**Note:** {_escape(n)}" for n in view.notes])
    return (message, view.pair.corrupt, *_patch_outputs(view), "", view)


def switch_patch_kind(view, kind):
    """Noising <-> denoising on the patched pair (no new forward pass)."""
    if view is None:
        return (gr.update(),) * 5 + (view,)
    try:
        view = patch_view.render(view, kind)
    except backend.DemoError:
        return (gr.update(),) * 5 + (view,)
    return (*_patch_outputs(view), view)


def pick_patch_head(view, evt: gr.EventData):
    """A click on either map: that head ringed in both, and its numbers in words."""
    data = getattr(evt, "_data", None) or {}
    try:
        layer, head = int(data["layer"]), int(data["head"])
        line = patch_view.head_line(view, layer, head)
        effect, attention, *_ = _patch_outputs(view, (layer, head))
        return effect, attention, _escape(line)
    except (KeyError, TypeError, ValueError, AttributeError):
        return gr.update(), gr.update(), gr.update()


def clear_patched(view):
    """Typing in the sentence or twin box clears the previous pair's maps, so they never stand beside another
    pair's text."""
    if view is None:
        return (gr.update(),) * 7 + (None,)
    return (PATCH_STALE_NOTE, PATCH_PLACEHOLDER, PATCH_PLACEHOLDER, None, "",
            patch_view.table_html(patch_view.empty_top_table(view.kind), view.kind), "", None)


def gallery_fill(index):
    """A gallery click: the pair and its target, and which sentence that target was filled for."""
    clean, twin, target = patch_view.gallery_pair(index)
    return clean, twin, target, None, clean


def forget_filled_target(text, filled_for):
    """Typing a new sentence after a gallery pair empties the target the gallery filled in (it belongs to the
    gallery's sentence: "sign" would make the next pair fail). A target the visitor typed is left alone."""
    if filled_for is not None and text != filled_for:
        return "", None
    return gr.update(), filled_for


def suggest_twin(clean):
    try:
        twin, note = patch_view.suggest(clean)
        return twin, _note(note)
    except Exception as err:
        return gr.update(), _problem(err)


def patching_tab(model: gr.Dropdown) -> dict:
    """A sentence and its minimal twin: every head's patching effect beside its attention, and their scatter."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            clean = gr.Textbox(label="Sentence", lines=1, max_lines=6, elem_id="patch-text",
                               placeholder="Type a sentence with not, he or she, or click a pair on the right.",
                               info=f"Sentence and twin: at most {patch_view.PATCH_MAX_TOKENS} pieces each, "
                                    "because every head's patched copy of the sentence runs at once.")
            with gr.Row(equal_height=True):
                twin = gr.Textbox(label="Twin: the same sentence with one word swapped", lines=1, max_lines=6,
                                  scale=4, elem_id="patch-twin",
                                  info="Empty: the suggested twin (not ↔ really, he ↔ she) is used.")
                suggest = gr.Button("Suggest twin", scale=1, min_width=110, elem_id="patch-suggest")
            target = gr.Textbox(label="Target word (optional)", elem_id="patch-target",
                                info="Where the attention map looks to from the swapped word: a word of the sentence "
                                     "or start:end. Empty: the word after \"not\", or the first noun for a pronoun.")
            kind = gr.Radio(PATCH_KINDS, value="noising", label="Effect shown", elem_id="patch-kind",
                            info="Both are computed in one run; switching shows the other at once.")
            button = gr.Button("Patch every head", variant="primary", elem_id="patch-run")
        with gr.Column(scale=2):
            gallery = gr.Dataset(components=["textbox", "textbox", "textbox"], headers=["Sentence", "Twin", "Target"],
                                 samples=patch_view.gallery_pairs(), type="index", samples_per_page=7,
                                 label="Example pairs (click one to patch it)", elem_id="patch-gallery")
    message = gr.Markdown(elem_id="patch-message")
    state = gr.State(None)
    filled_for = gr.State(None)     # the sentence a gallery click filled the target for
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            effect_map = gr.HTML(PATCH_PLACEHOLDER, js_on_load=HEATMAP_CLICK_JS, label="Patching effect",
                                 elem_id="patch-effect", padding=True, container=True)
        with gr.Column(min_width=300):
            attention_map = gr.HTML(PATCH_PLACEHOLDER, js_on_load=HEATMAP_CLICK_JS, label="Attention",
                                    elem_id="patch-attention", padding=True, container=True)
    head_note = gr.Markdown(elem_id="patch-head")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            # The title as Markdown, not the plot's label: with a label Gradio cuts the colour legend off below.
            gr.Markdown("**Effect against attention**, one point per head, coloured by layer")
            scatter = gr.ScatterPlot(x="attention", y="effect", color="layer", tooltip=["head", "attention", "effect"],
                                     x_title="attention: swapped word → target", y_title="patching effect",
                                     color_title="layer", show_label=False, x_axis_format=".2f",
                                     y_axis_format=".2f", height=340, elem_id="patch-scatter")
            correlation = gr.Markdown(elem_id="patch-correlation")
        with gr.Column(scale=5, min_width=300):
            gr.Markdown("**Top heads on this pair** (by the effect shown), beside the same effect over the built-in "
                        "negation pairs (\"set\")")
            table = gr.HTML(patch_view.table_html(patch_view.empty_top_table(), "noising"), elem_id="patch-table",
                            padding=False)
            table_links = gr.HTML("", elem_id="patch-downloads", padding=False)
    gr.Markdown(PATCH_LEGEND, elem_id="patch-legend")

    private = {"api_visibility": "private"}
    inputs = [clean, twin, target, model, kind]
    outputs = [message, twin, effect_map, attention_map, scatter, correlation, table, head_note, state]
    gallery.click(gallery_fill, gallery, [clean, twin, target, state, filled_for], queue=False,
                  **private).then(run_patching, inputs, outputs, **private, **PATCH_GROUP)
    # .change, not .input: a pasted or script-filled sentence counts too; the gallery's own fill sets the
    # sentence and `filled_for` together, so it clears nothing.
    clean.change(forget_filled_target, [clean, filled_for], [target, filled_for], queue=False, **private)
    state.change(patch_downloads, state, table_links, queue=False, **private)
    # The address bar follows the patched pair and the head ringed in its maps (read from the page).
    table_links.change(None, [clean, twin, target, model], None, **private, js=PATCH_LINK_JS)
    button.click(run_patching, inputs, outputs, **private, **PATCH_GROUP)
    clean.submit(run_patching, inputs, outputs, **private, **PATCH_GROUP)
    twin.submit(run_patching, inputs, outputs, **private, **PATCH_GROUP)
    suggest.click(suggest_twin, clean, [twin, message], queue=False, **private)
    # .input, not .change: a run or a gallery click that fills the twin box must not clear its own results
    for box in (clean, twin):
        box.input(clear_patched, state, [message, effect_map, attention_map, scatter, correlation, table, head_note,
                                         state], queue=False, **private)
    kind.input(switch_patch_kind, [state, kind], [effect_map, attention_map, scatter, correlation, table, state],
               queue=False, **private)
    for heatmap in (effect_map, attention_map):
        heatmap.click(pick_patch_head, state, [effect_map, attention_map, head_note], queue=False,
                      **private).then(None, [clean, twin, target, model], None, **private, js=PATCH_LINK_JS)
    return {"fill": [clean, twin, target], "inputs": [model], "outputs": outputs}


# ---- the other tabs ---------------------------------------------------------------------------------

def show_model_view(text, model, layers, heads):
    """The model view of the chosen layers and heads (none ticked: all)."""
    try:
        result = backend.model_view(text, model, [int(l) for l in layers] or None,
                                    heads=[int(h) for h in heads] or None)
        return result.html, _note(result.note)
    except Exception as err:
        return "", _problem(err)


def model_view_tab(model: gr.Dropdown) -> dict:
    gr.Markdown("Every head of the chosen layers at once (bertviz's model view). Click a thumbnail to enlarge it. "
                "On a narrow screen, pick a few heads at a time: fewer heads get wider thumbnails.")
    text = gr.Textbox(label="Sentence", value="The doctor called the nurse because she was late.", elem_id="mv-text",
                      lines=1, max_lines=1, info="Enter shows the view.")
    layers = gr.CheckboxGroup(choices=[str(i) for i in range(6)], value=[str(i) for i in range(6)],
                              label="Layers to show (fewer layers, lighter page)", elem_id="mv-layers")
    heads = gr.CheckboxGroup(choices=[str(i) for i in range(12)], value=[str(i) for i in range(12)],
                             label="Heads to show (none ticked: all)", elem_id="mv-heads")
    button = gr.Button("Show model view", variant="primary", elem_id="mv-run")
    note = gr.Markdown()
    view = gr.HTML(js_on_load=None, elem_id="mv-view")

    def layer_choices(model):
        try:
            loaded = backend.get_model(model)
            n, n_heads = loaded.n_layers, loaded.n_heads
            return (gr.update(choices=[str(i) for i in range(n)], value=[str(i) for i in range(min(n, 6))]),
                    gr.update(choices=[str(i) for i in range(n_heads)], value=[str(i) for i in range(n_heads)]))
        except Exception:
            return gr.update(), gr.update()

    button.click(show_model_view, [text, model, layers, heads], [view, note], api_visibility="private", **MODEL_GROUP)
    text.submit(show_model_view, [text, model, layers, heads], [view, note], api_visibility="private", **MODEL_GROUP)
    model.change(layer_choices, model, [layers, heads], api_visibility="private", **MODEL_GROUP)
    view.change(None, [text, model], None, api_visibility="private",
                js=share_link.write_js("model-view", ["text", "model"]))
    return {"fill": [text], "inputs": [model, layers, heads], "outputs": [view, note]}


def report_tab(model: gr.Dropdown, tab: gr.Tab) -> None:
    gr.Markdown("Dataset-level results on the built-in sets, from `python -m analysis heads` / `analysis report`. "
                "For the default model they are committed under `reports/`; for another model, compute them "
                "once with the button (it scores every head on both sets, which takes a while on a CPU).")
    # The committed reports do not change while the demo runs: the cross-model page is made once, here.
    with gr.Accordion("Findings across models: every committed model side by side, with the rule each claim "
                      "rests on (reports/FINDINGS.md)", open=False, elem_id="report-findings"):
        gr.Markdown(report_page.findings_page(backend.REPORTS_DIR), elem_id="report-findings-text")
    status = gr.Markdown(elem_id="report-status")
    findings = gr.Markdown(elem_id="report-summary")
    with gr.Row():
        # min_width: on a narrow screen each heatmap takes its own full-width row instead of a thumbnail
        coref_image = gr.Image(label="Coreference: accuracy by head", type="filepath", interactive=False, min_width=360,
                               show_label=False, buttons=["download", "fullscreen"], elem_id="report-coref")
        neg_image = gr.Image(label="Negation: paired difference by head", type="filepath", interactive=False, min_width=360,
                             show_label=False, buttons=["download", "fullscreen"], elem_id="report-neg")
        # The built-in coreference set's second task (every word of the sentence competes), its own panel.
        coref_all_image = gr.Image(label="Coreference, every word competing: accuracy by head", type="filepath",
                                   interactive=False, min_width=360, show_label=False,
                                   buttons=["download", "fullscreen"], elem_id="report-coref-all-words")
    with gr.Accordion("The full report: every dataset, probe and ablation, with tables", open=False,
                      elem_id="report-detail"):
        report = gr.Markdown(elem_id="report-text")
    # Links, not a file component: a gr.File shows a "Remove this file" button even when read-only.
    files = gr.HTML("", elem_id="report-files", padding=False)
    button = gr.Button("Compute the report for the chosen model", elem_id="report-run")

    def show(model, compute, progress=gr.Progress()):
        try:
            found = backend.report_files(model, progress=progress, compute=compute)
            name = backend.check_allowed_name(model)
            folder = backend.report_dir(name)
            downloads = report_page.report_downloads(folder, backend.downloads_dir() / "archives",
                                                     report_page.safe_name(name))
            return (f"Report for **{_escape(model or DEFAULT_MODEL)}** (from {_escape(found.folder)}).",
                    report_page.findings_markdown(folder, _escape(name)), found.coref_heatmap,
                    found.negation_heatmap, found.coref_all_words_heatmap, found.markdown,
                    report_page.downloads_html(downloads))
        except Exception as err:
            return (_problem(err), "", None, None, None, "", "")

    outputs = [status, findings, coref_image, neg_image, coref_all_image, report, files]
    # Showing a report that exists is cheap; computing one is not, so it gets a single worker.
    button.click(lambda m: show(m, True), model, outputs, api_visibility="private", **MODEL_GROUP)
    tab.select(lambda m: show(m, False), model, outputs, api_visibility="private")


# ---- the shareable link ------------------------------------------------------------------------------

def _as_choice(word, choices):
    """A linked word as the dropdown holds it ("Laura (18:23)"), when it names one choice; else as given."""
    if not word:
        return None
    same = [value for label, value in choices if value == word or label.rsplit(" (", 1)[0] == word]
    return same[0] if len(same) == 1 else word


def open_link(raw, choices):
    """A page load: the link's checked values into the page (note, model, tab, each tab's boxes, the link)."""
    link = share_link.parse_link(raw, choices)
    fills = []
    for tab in ("coreference", "negation"):
        if link.tab != tab:
            fills += [gr.update()] * 3
            continue
        sources, words = backend.word_choices(link.text, tab)
        fills += [link.text, gr.update(choices=sources, value=_as_choice(link.source, sources)),
                  gr.update(choices=words, value=_as_choice(link.target, words))]
    mine = link.tab == "patching"
    fills += [link.text if mine else gr.update(), link.twin if mine else gr.update(),
              link.target if mine else gr.update()]
    fills += [link.text if link.tab == "model-view" and link.text else gr.update()]
    note = f"*{_escape(link.problem)}*" if link.problem else ""
    return (note, link.model or gr.update(), gr.Tabs(selected=link.tab) if link.tab else gr.update(),
            link, *fills)


def _source_of(relation, link):
    """The link's source word, else the sentence's first pronoun (coreference) or cue (negation)."""
    if link.source:
        return link.source
    sources, _ = backend.word_choices(link.text, relation)
    return sources[0][1] if sources else ""


def run_linked_relation(relation, link, model, metric):
    """The linked sentence analysed on its tab, and the linked head shown (nothing for another tab)."""
    if link is None or link.tab != relation or not link.text:
        return (gr.update(),) * 8
    outputs = run_relation(relation, link.text, _source_of(relation, link), link.target, model, metric)
    state = outputs[-1]
    if state and link.head is not None:
        picked = _pick(state, *link.head)          # (heatmap, dropdown, view, note, words, state)
        if picked[-1] is not state:                 # shown (a new state): the dropdown keeps its choices
            label = f"{link.head[0]}-{link.head[1]}"
            choice = gr.update(choices=backend.head_labels(state["model_name"]), value=label)
            message = outputs[0].replace(", shown in the views below.", f"; the link's head **{label}** is shown "
                                         "in the views below.", 1)
            outputs = (message, picked[0], outputs[2], choice, *picked[2:])
        else:                                       # no such head: the best head stays, and the note says why
            outputs = (*outputs[:5], picked[3], *outputs[6:])
    return outputs


PATCH_LINK_JS = share_link.write_js("patching", ["text", "twin", "target", "model"], head_cell=PATCH_HEAD_CELL)
# After a linked pair: written only when the link's head is ringed (any other link's tab keeps its own URL).
LINKED_PATCH_JS = share_link.write_js("patching", ["text", "twin", "target", "model"], head_cell=PATCH_HEAD_CELL,
                                      only_with_head=True)


def run_linked_patching(link, model):
    """The linked pair patched, then the link's head ringed in both maps with its numbers (when it has one)."""
    if link is None or link.tab != "patching" or not link.text:
        yield (gr.update(),) * 9
        return
    answer = None
    for answer in run_patching(link.text, link.twin, link.target, model, "noising"):
        yield answer
    view = answer[-1] if answer else None
    if view is not None and link.head is not None:
        try:
            line = patch_view.head_line(view, *link.head)
            effect, attention, *_ = _patch_outputs(view, link.head)
        except (backend.DemoError, IndexError, KeyError, ValueError):
            line = (f"The link's head {link.head[0]}-{link.head[1]} is not a head of {view.model}, so none is "
                    "picked; click a head in either map.")
            effect, attention = answer[2], answer[3]
        yield (*answer[:2], effect, attention, *answer[4:7], _escape(line), view)


def run_linked_model_view(link, model, layers, heads):
    if link is None or link.tab != "model-view" or not link.text:
        return gr.update(), gr.update()
    return show_model_view(link.text, model, layers, heads)


def resolved(fn):
    """`fn` with its annotations as types, not strings, for `gr.api`: it reads the return annotation as written,
    and under `from __future__ import annotations` that is the string "dict", which the API page lists as Any."""
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    fn.__signature__ = signature.replace(parameters=parameters,
                                         return_annotation=hints.get("return", signature.return_annotation))
    return fn


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Attention heads: coreference and negation") as demo:
        gr.Markdown(INTRO)
        menu = model_menu()
        model = gr.Dropdown(menu.choices, value=DEFAULT_MODEL, label="Model", elem_id="model",
                            allow_custom_value=menu.allow_typed, info=menu.note)
        link_note = gr.Markdown(elem_id="link-note")
        raw_link = gr.Textbox(visible=False)      # the page's URL values as JSON, filled by share_link.READ_JS
        link = gr.State(None)
        parts = {}
        # "wrap": on a narrow screen every tab stays in view on two rows (the default "menu" hid four of the
        # six behind "⋯" at 420 px).
        with gr.Tabs(overflow_behavior="wrap") as tabs:
            for relation, (title, _, _) in RELATIONS.items():
                with gr.Tab(title, id=relation):
                    parts[relation] = relation_tab(relation, model, link)
            with gr.Tab("Patching (causal)", id="patching"):
                parts["patching"] = patching_tab(model)
            with gr.Tab("Model view", id="model-view"):
                parts["model-view"] = model_view_tab(model)
            with gr.Tab("Probing report", id="report") as report:
                report_tab(model, report)
            with gr.Tab("About", id="about"):
                gr.Markdown(backend.ABOUT + "\n\n" + GLOSSARY + "\n\n" + API_HELP)
        # No URL write on a tab's select: Gradio fires it for the first tab as the page opens, which would
        # overwrite the link before READ_JS reads it. Each tab writes its tab with its results instead.
        fills = [box for key in ("coreference", "negation", "patching", "model-view") for box in parts[key]["fill"]]
        private = {"api_visibility": "private"}
        opened = demo.load(lambda raw: open_link(raw, menu.choices), raw_link,
                           [link_note, model, tabs, link, *fills], js=share_link.READ_JS, queue=False, **private)
        for relation in RELATIONS:
            opened = opened.then(lambda l, m, metric, r=relation: run_linked_relation(r, l, m, metric),
                                 [link, *parts[relation]["inputs"]], parts[relation]["outputs"], **private,
                                 **MODEL_GROUP)
        opened = opened.then(run_linked_patching, [link, *parts["patching"]["inputs"]], parts["patching"]["outputs"],
                             **private, **MODEL_GROUP).then(None, parts["patching"]["fill"] + [model], None,
                                                            js=LINKED_PATCH_JS, **private)
        opened.then(run_linked_model_view, [link, *parts["model-view"]["inputs"]], parts["model-view"]["outputs"],
                    **private, **MODEL_GROUP)
        gr.api(resolved(score_heads), api_name="score_heads", **MODEL_GROUP)
        gr.api(resolved(head_view), api_name="head_view", **MODEL_GROUP)
        gr.api(resolved(patch_heads), api_name="patch_heads", **PATCH_GROUP)
    return demo


# ---- the API ----------------------------------------------------------------------------------------

def score_heads(text: str, relation: str = "coreference", source: str = "", target: str = "", model: str = "") -> dict:
    """Word-level attention from source to target for every head of the model.

    Words are given as text (it must occur once) or as start:end character offsets; for negation the
    target may be empty (the word after the cue). An empty model means the default. Returns
    {"model", "direction", "tokens", "heads": [{"layer", "head", "attention", "is_argmax", ...}], ...}.
    """
    try:
        return backend.score_heads_api(text, relation, source, target, model or None)
    except Exception as err:   # every failure, expected or not, answers in words (never {"error": null})
        raise _refused(err) from None


def head_view(text: str, model: str = "", layer: int | None = None, head: int | None = None) -> str:
    """The bertviz head view of a sentence as a sandboxed iframe (HTML), opened on layer/head when given."""
    try:
        return backend.head_view(text, model or None, layer, head).html
    except Exception as err:
        raise _refused(err) from None


def patch_heads(clean: str, corrupt: str = "", model: str = "", target: str = "") -> dict:
    """Every head's patching effects (noising, denoising) between a sentence and its minimal twin, beside the
    clean run's attention from the swapped word to the target.

    An empty corrupt text gets the suggested twin (not <-> really, he <-> she); an empty target is the word after
    the swapped word (a pronoun: the first noun). Returns {"model", "tokens", "swapped", "source", "target",
    "sanity", "correlation", "heads": [{"layer", "head", "noising", "denoising", "attention"}], ...}.
    """
    try:
        return patch_view.patch_heads_api(clean, corrupt, model or None, target)
    except Exception as err:
        raise _refused(err) from None


def launch_settings() -> dict:
    """`launch` keywords: where to serve, which folders may be served, and the request limits.

    Every request passes `guard.RouteGate` first (installed around the whole app by `guard.server_timeouts`:
    per-address caps on page events run outside the queue, on event streams and on open requests; streams
    closed after their lifetime; every failure answered in words), then the `BodyLimit`: bodies over
    `MAX_BODY_BYTES`, every upload and unencodable JSON are refused before any route reads them (the app has
    no upload component); `max_file_size` is a second guard on the upload route. A query string too long to
    be a link of this demo is answered by `share_link.LongLinkRedirect` before anything parses it.
    """
    from starlette.middleware import Middleware
    return dict(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                allowed_paths=[str(backend.REPORTS_DIR), str(backend.CACHE_DIR), str(backend.downloads_dir())],
                show_error=False, state_session_capacity=SESSION_CAPACITY, css=CSS, max_file_size="1kb",
                app_kwargs={"middleware": [Middleware(share_link.LongLinkRedirect),
                                           Middleware(guard.BodyLimit, max_bytes=guard.MAX_BODY_BYTES)]})


def worded_refusals(app: gr.Blocks) -> None:
    """Every event and endpoint answers a failure in words and logs it in one line.

    Gradio runs every call (queued or not) through `process_api`; wrapped here, an exception other than
    `gr.Error` (a bad value sent to one of the page's own events, too few inputs) no longer reaches the
    client as `{"error": null}`, and a refusal (Gradio's own "not in the list of choices" included) is one
    log line instead of a printed traceback."""
    original = app.process_api

    async def process_api(*args, **kwargs):
        try:
            return await original(*args, **kwargs)
        except gr.Error as err:
            if err.print_exception:               # Gradio's own refusal (ours are worded already): echoed
                log.info("refused: %s", guard.shown(str(err.message), 200))   # values shown as text
                err.message = guard.printable(html.escape(str(err.message), quote=False))
                err.print_exception = False
            raise
        except backend.DemoError as err:
            raise _refused(err) from None
        except Exception as err:
            first = (str(err).splitlines() or [""])[0]
            log.warning("refused a request that failed in Gradio or an event: %s: %s", type(err).__name__,
                        guard.shown(first, 200))
            detail = guard.printable(html.escape(first[:200].rstrip('.'), quote=False))
            raise gr.Error(f"This request could not be processed ({type(err).__name__}: {detail}).",
                           print_exception=False) from None

    app.process_api = process_api


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    guard.limit_malloc_arenas()                    # before any server thread allocates: memory stays flat
    guard.trim_memory_every()                      # and freed pages go back to the OS
    app = build_demo()
    worded_refusals(app)
    # api_open=False: /run/<api> and /api/<api> refuse queued functions whether or not this is a Space
    # (Gradio opens them off a Space), so every model run goes through the queue and its per-address cap.
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE, api_open=False)
    try:
        guard.check_gradio_internals(app)          # the limits below stand on these: refuse to start without them
    except guard.GradioInternalsError as err:
        log.error("%s", err)
        raise SystemExit(f"app.py: {err}") from None
    if guard.proxy_warning():
        log.warning("%s", guard.proxy_warning())
    guard.cap_queue(app._queue)                    # per client address, and patching's own small queue
    backend.get_model(None)                        # the default model is loaded before anyone asks
    with guard.server_timeouts():                  # slow or idle connections are closed
        app.launch(**launch_settings())


if __name__ == "__main__":
    main()
