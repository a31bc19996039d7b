"""The Gradio demo: which attention heads link a pronoun to its noun, and "not" to the word it negates.

A thin layer: it lays out the page and turns `probing.demo` results into components. No scoring happens
here. `python app.py` serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change that).

API (a contract; see `score_heads` and `head_view` below):
- `/score_heads` (text, relation, source, target, model) -> JSON with every head's word-level attention;
- `/head_view` (text, model, layer, head) -> the bertviz head view as a sandboxed iframe.
Bad input raises `gr.Error` with a message in words; the server keeps serving.
"""
from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # a demo that phones nobody

import gradio as gr  # noqa: E402

from probing import demo as backend  # noqa: E402
from probing import demo_guard as guard  # noqa: E402
from probing.demo_guard import allowed_models  # noqa: E402
from probing.figures import HEATMAP_CLICK_JS  # noqa: E402
from probing.models import DEFAULT_MODEL  # noqa: E402

log = logging.getLogger("probing.app")
# Forward passes run at once, all events and endpoints together (one concurrency group here, and one
# semaphore in the backend); more requests wait in a bounded queue, at most a few per client session.
CONCURRENCY = guard.CONCURRENCY
MODEL_GROUP = {"concurrency_limit": CONCURRENCY, "concurrency_id": "model"}
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
TABLE_WIDTHS = {"coreference": [60, 100, 100, 110, 130], "negation": [60, 100, 112, 112, 100, 120]}
# Table headers wrap between words only ("attention" was broken into "attentio|n").
CSS = "#coref-table th .header, #neg-table th .header {word-break: normal !important; overflow-wrap: normal !important}"
API_HELP = """## API

The page's two endpoints can be called with `gradio_client` (`Client(url).predict(..., api_name=...)`):

- **`/score_heads`** `(text, relation, source, target, model)`: `relation` is `coreference` or `negation`;
  `source` and `target` are words of the text (each must occur once) or `start:end` character offsets; for
  negation the target may be empty (the word after the cue); an empty `model` is the default. Returns JSON:
  `model`, `direction`, `tokens` and `heads`, one `{layer, head, attention, is_argmax, ...}` per head
  (word-level attention as `probing.heads.score_examples` computes it, rounded to 6 decimals).
- **`/head_view`** `(text, model, layer, head)`: the bertviz head view as a sandboxed `<iframe>`; layer and
  head are optional.

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


def update_choices(relation, text, source, target):
    """Refresh the word dropdowns when the text is edited, keeping a still-valid selection."""
    sources, words = backend.word_choices(text or "", relation)
    keep = lambda value, choices: value if value in [v for _, v in choices] else (choices[0][1] if choices else None)  # noqa: E731
    # The target is never guessed: it stays if still valid, else empty (negation: the word after the cue).
    target_value = target if target in [v for _, v in words] else None
    return gr.update(choices=sources, value=keep(source, sources)), gr.update(choices=words, value=target_value)


def _view_note(layer, head, view) -> str:
    return (f"**Head view, layer {layer}, head {head}:** lines go from each token on the left to the tokens it "
            "attends to on the right (darker: more). Pick another layer in the view, or click its colour boxes "
            "to add heads. " + _note(view.note))


def _show(state, layer, head, view=None):
    """Heatmap (with the head ringed), dropdown, head view and note for one head of the analysed sentence;
    `view` when the analysis already made it from its forward pass."""
    state = dict(state, selected=(layer, head))
    view = view or backend.head_view(state["text"], state["model"], layer, head)
    heatmap = backend.head_heatmap(state["scores"], state["metric"], selected=(layer, head))
    return heatmap, gr.update(value=f"{layer}-{head}"), view.html, _view_note(layer, head, view), state


def run_relation(relation, text, source, target, model, metric):
    """Analyse one sentence: message, heatmap, top-heads table, head choice, head view, view note, state."""
    try:
        analysis = backend.analyse(text, relation, source, target, model)
        state = {"scores": analysis.scores, "text": analysis.example.text, "model": analysis.model,
                 "metric": metric, "relation": relation}
        best = (analysis.best_layer, analysis.best_head)
        message = "\n\n".join([f"Best head for this sentence: **{best[0]}-{best[1]}**, opened in the head view "
                                 "below. Red outline: heads whose strongest attention goes to the target. Click any "
                                 "head to see it."] + [f"**Note:** {_escape(n)}" for n in analysis.notes])
        heatmap, _, view, note, state = _show(state, *best, view=analysis.view)
        choice = gr.update(choices=backend.head_labels(analysis.model), value=f"{best[0]}-{best[1]}")
        return message, heatmap, analysis.top_table, choice, view, note, state
    except Exception as err:  # every failure becomes words on the page
        return (_problem(err), HEATMAP_PLACEHOLDER, backend.empty_top_table(relation),
                gr.update(choices=[], value=None), "", "", None)


def _pick(state, layer, head):
    """Move the head view (and the heatmap's ring and the dropdown) to one head."""
    if not state:
        return gr.update(), gr.update(), gr.update(), "*Analyse a sentence first.*", state
    try:
        return _show(state, layer, head)
    except Exception as err:
        return gr.update(), gr.update(), gr.update(), _problem(err), state


def pick_from_heatmap(state, evt: gr.EventData):
    """A click on a heatmap cell: the JS sends {layer, head}."""
    data = getattr(evt, "_data", None) or {}
    try:
        layer, head = int(data["layer"]), int(data["head"])
    except (KeyError, TypeError, ValueError):
        return gr.update(), gr.update(), gr.update(), gr.update(), state
    return _pick(state, layer, head)


def pick_from_table(state, table, evt: gr.SelectData):
    """A click on a row of the top-heads table."""
    try:
        label = str(table.iloc[evt.index[0]]["head"])
        return _pick(state, *backend.parse_head(label))
    except Exception as err:
        return gr.update(), gr.update(), gr.update(), _problem(err), state


def pick_from_dropdown(state, label):
    try:
        return _pick(state, *backend.parse_head(label))
    except Exception as err:
        return gr.update(), gr.update(), gr.update(), _problem(err), state


def switch_metric(state, metric):
    """The negation heatmap between mean_attention, next_word_baseline and selectivity (no new forward pass)."""
    if not state:
        return gr.update(), state
    state = dict(state, metric=metric)
    return backend.head_heatmap(state["scores"], metric, selected=state.get("selected")), state


def relation_tab(relation: str, model: gr.Dropdown) -> None:
    """One explorer tab (coreference or negation): inputs, gallery, heatmap, top heads, head view."""
    _, source_label, target_label = RELATIONS[relation]
    key = "coref" if relation == "coreference" else "neg"
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            text = gr.Textbox(label="Sentence", lines=2, max_lines=8, elem_id=f"{key}-text",
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
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=380):
            metric = gr.Radio(list(backend.HEATMAP_METRICS), value="selectivity", label="Heatmap shows",
                              visible=relation == "negation", elem_id=f"{key}-metric",
                              info="selectivity = mean_attention − next_word_baseline")
            heatmap = gr.HTML(HEATMAP_PLACEHOLDER, js_on_load=HEATMAP_CLICK_JS, label="Layer × head",
                              elem_id=f"{key}-heatmap", padding=True, container=True)
        with gr.Column(scale=5, min_width=400):
            top_table = gr.Dataframe(backend.empty_top_table(relation),
                                     label="Top heads for this sentence, beside their scores on the built-in set (click a row)",
                                     interactive=False, wrap=True, elem_id=f"{key}-table",
                                     column_widths=TABLE_WIDTHS[relation])
    head_choice = gr.Dropdown(label="Head shown in the head view (layer-head)", choices=[], interactive=True,
                              elem_id=f"{key}-head")
    view_note = gr.Markdown()
    view = gr.HTML(label="bertviz head view", js_on_load=None, elem_id=f"{key}-view")

    private = {"api_visibility": "private"}
    # .change, not .input: it also fires when the text is set by a paste or a script, so the word lists
    # never belong to another text.
    text.change(lambda *a: update_choices(relation, *a), [text, source, target], [source, target],
                queue=False, **private)
    run = lambda *a: run_relation(relation, *a)  # noqa: E731
    outputs = [message, heatmap, top_table, head_choice, view, view_note, state]
    inputs = [text, source, target, model, metric]
    gallery.click(lambda i: load_example(relation, i), gallery, [text, source, target], queue=False,
                  **private).then(run, inputs, outputs, **private, **MODEL_GROUP)
    button.click(run, inputs, outputs, **private, **MODEL_GROUP)
    text.submit(run, inputs, outputs, **private, **MODEL_GROUP)
    picked = [heatmap, head_choice, view, view_note, state]
    metric.input(switch_metric, [state, metric], [heatmap, state], queue=False, **private)
    heatmap.click(pick_from_heatmap, state, picked, **private, **MODEL_GROUP)
    top_table.select(pick_from_table, [state, top_table], picked, **private, **MODEL_GROUP)
    head_choice.input(pick_from_dropdown, [state, head_choice], picked, **private, **MODEL_GROUP)


# ---- the other tabs ---------------------------------------------------------------------------------

def model_view_tab(model: gr.Dropdown) -> None:
    gr.Markdown("Every head of the chosen layers at once (bertviz's model view). Click a thumbnail to enlarge it.")
    text = gr.Textbox(label="Sentence", value="The doctor called the nurse because she was late.", elem_id="mv-text")
    layers = gr.CheckboxGroup(choices=[str(i) for i in range(6)], value=[str(i) for i in range(6)],
                              label="Layers to show (fewer layers, lighter page)", elem_id="mv-layers")
    button = gr.Button("Show model view", variant="primary", elem_id="mv-run")
    note = gr.Markdown()
    view = gr.HTML(js_on_load=None, elem_id="mv-view")

    def show(text, model, layers):
        try:
            result = backend.model_view(text, model, [int(l) for l in layers] or None)
            return result.html, _note(result.note)
        except Exception as err:
            return "", _problem(err)

    def layer_choices(model):
        try:
            n = backend.get_model(model).n_layers
            return gr.update(choices=[str(i) for i in range(n)], value=[str(i) for i in range(min(n, 6))])
        except Exception:
            return gr.update()

    button.click(show, [text, model, layers], [view, note], api_visibility="private", **MODEL_GROUP)
    text.submit(show, [text, model, layers], [view, note], api_visibility="private", **MODEL_GROUP)
    model.change(layer_choices, model, layers, api_visibility="private", **MODEL_GROUP)


def report_tab(model: gr.Dropdown, tab: gr.Tab) -> None:
    gr.Markdown("Dataset-level results on the built-in sets, from `python -m analysis heads`. "
                "For the default model they are committed under `reports/`; for another model, compute them "
                "once with the button (it scores every head on both sets, which takes a while on a CPU).")
    status = gr.Markdown(elem_id="report-status")
    with gr.Row():
        coref_image = gr.Image(label="Coreference: accuracy by head", type="filepath", interactive=False,
                               show_label=False, buttons=["download", "fullscreen"], elem_id="report-coref")
        neg_image = gr.Image(label="Negation: selectivity by head", type="filepath", interactive=False,
                             show_label=False, buttons=["download", "fullscreen"], elem_id="report-neg")
    files = gr.File(label="Download the CSV, JSON and Markdown behind the figures", file_count="multiple",
                    interactive=False, elem_id="report-files")
    button = gr.Button("Compute the report for the chosen model", elem_id="report-run")
    report = gr.Markdown(elem_id="report-text")

    def show(model, compute, progress=gr.Progress()):
        try:
            found = backend.report_files(model, progress=progress, compute=compute)
            return (f"Report for **{_escape(model or DEFAULT_MODEL)}** (from {_escape(found.folder)}).",
                    found.coref_heatmap, found.negation_heatmap, found.markdown, found.downloads)
        except Exception as err:
            return (_problem(err), None, None, "", None)

    outputs = [status, coref_image, neg_image, report, files]
    # Showing a report that exists is cheap; computing one is not, so it gets a single worker.
    button.click(lambda m: show(m, True), model, outputs, api_visibility="private", **MODEL_GROUP)
    tab.select(lambda m: show(m, False), model, outputs, api_visibility="private")


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Attention heads: coreference and negation") as demo:
        gr.Markdown(INTRO)
        model = gr.Dropdown(allowed_models(), value=DEFAULT_MODEL, label="Model", elem_id="model",
                            info="Offline models installed here first; hub ids after them load only with network "
                                 "access.")
        with gr.Tabs():
            for relation, (title, _, _) in RELATIONS.items():
                with gr.Tab(title, id=relation):
                    relation_tab(relation, model)
            with gr.Tab("Model view", id="model-view"):
                model_view_tab(model)
            with gr.Tab("Probing report", id="report") as report:
                report_tab(model, report)
            with gr.Tab("About", id="about"):
                gr.Markdown(backend.ABOUT + "\n\n" + API_HELP)
        gr.api(score_heads, api_name="score_heads", **MODEL_GROUP)
        gr.api(head_view, api_name="head_view", **MODEL_GROUP)
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
        raise gr.Error(_message(err)) from None


def head_view(text: str, model: str = "", layer: int | None = None, head: int | None = None) -> str:
    """The bertviz head view of a sentence as a sandboxed iframe (HTML), opened on layer/head when given."""
    try:
        return backend.head_view(text, model or None, layer, head).html
    except Exception as err:
        raise gr.Error(_message(err)) from None


def launch_settings() -> dict:
    """`launch` keywords: where to serve, which folders may be served, and the request limits.

    Bodies over `MAX_BODY_BYTES` and every upload are refused by the `BodyLimit` middleware before they are
    read (the app has no upload component); `max_file_size` is a second guard on the upload route.
    """
    from starlette.middleware import Middleware
    return dict(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                allowed_paths=[str(backend.REPORTS_DIR), str(backend.CACHE_DIR), str(backend.downloads_dir())],
                show_error=False, state_session_capacity=SESSION_CAPACITY, css=CSS, max_file_size="1kb",
                app_kwargs={"middleware": [Middleware(guard.BodyLimit, max_bytes=guard.MAX_BODY_BYTES)]})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = build_demo()
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    guard.cap_waiting_per_session(app._queue)      # one client cannot fill the shared queue
    backend.get_model(None)                        # the default model is loaded before anyone asks
    app.launch(**launch_settings())


if __name__ == "__main__":
    main()
