"""The Gradio demo: which attention heads link a pronoun to its noun, and "not" to the word it negates.

A thin layer: it lays out the page and turns `probing.demo` results into components. No scoring happens
here. `python app.py` serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change that).
"""
from __future__ import annotations

import logging
import os

import gradio as gr

from probing import demo as backend
from probing.models import DEFAULT_MODEL, allowed_models

log = logging.getLogger("probing.app")
RELATIONS = {"coreference": ("Coreference", "pronoun", "antecedent"),
             "negation": ("Negation", "cue (not / n't)", "next word")}
INTRO = """# Which attention heads do what?
Every token in a transformer scores every other token, and each **head** spreads its attention its own way.
Some heads learn relations: a pronoun looking at the noun it refers to, or *not* looking at the word it negates.
Pick a model, run a sentence, and see which heads do it, next to baselines and dataset-level scores."""


def _problem(err: Exception) -> str:
    """An error as words for the page; unexpected ones are logged in full on the server, never shown as a trace."""
    if isinstance(err, backend.DemoError):
        return f"**Problem:** {err}"
    log.exception("unexpected error")
    return f"**Something went wrong:** {type(err).__name__}. Try another sentence or model."


def _heads(model: str | None) -> list[str]:
    loaded = backend.get_model(model)
    return [f"{l}-{h}" for l in range(loaded.n_layers) for h in range(loaded.n_heads)]


def _head_view(text, model, head_label):
    layer, head = (int(x) for x in head_label.split("-"))
    view = backend.head_view(text, model, layer, head)
    return view.html, (f"*{view.note}*" if view.note else "")


def run_relation(relation, text, source, target, model, metric):
    """Analyse one sentence; returns message, heatmap, top table, head choice, head view, view note."""
    empty = ("", None, None, gr.update(), "", "")
    try:
        analysis = backend.analyse(text, relation, source, target, model)
        values = backend.heatmap_values(analysis.scores, metric)
        metric_name = metric if relation == "negation" else "attention"
        title = (f"{metric_name}: {analysis.scores.source!r} → {analysis.scores.target!r} "
                 f"({analysis.scores.direction})")
        figure = backend_heatmap(values, title, analysis.scores.is_argmax, metric_name)
        best = f"{analysis.best_layer}-{analysis.best_head}"
        view_html, view_note = _head_view(analysis.example.text, model, best)
        message = " ".join(analysis.notes) or (f"Best head for this sentence: **{best}** "
                                               "(red squares: heads whose argmax is the target).")
        return (message, figure, analysis.top_table, gr.update(choices=_heads(model), value=best),
                view_html, view_note)
    except Exception as err:  # every failure becomes words on the page
        return (_problem(err),) + empty[1:]


def backend_heatmap(values, title, marked, metric_name):
    from probing.figures import head_heatmap
    diverging = metric_name == "selectivity"
    return head_heatmap(values, title, marked, colorscale="RdBu_r" if diverging else "Viridis",
                        zmid=0.0 if diverging else None)


def update_choices(relation, text, source, target):
    """Refresh the word dropdowns when the text changes, keeping a still-valid selection."""
    try:
        sources, words = backend.word_choices(text or "", relation)
    except Exception:
        sources, words = [], []
    keep = lambda value, choices: value if value in [v for _, v in choices] else (choices[0][1] if choices else None)  # noqa: E731
    return gr.update(choices=sources, value=keep(source, sources)), gr.update(choices=words, value=keep(target, words))


def pick_head_from_table(text, model, table, evt: gr.SelectData):
    """Clicking a row of the top-heads table moves the head view to that head."""
    try:
        label = str(table.iloc[evt.index[0]]["head"])
        view_html, note = _head_view(text, model, label)
        return gr.update(value=label), view_html, note
    except Exception as err:
        return gr.update(), "", _problem(err)


def pick_head(text, model, label):
    try:
        return _head_view(text, model, label)
    except Exception as err:
        return "", _problem(err)


def relation_tab(relation: str, model: gr.Dropdown) -> None:
    """One explorer tab (coreference or negation): inputs, gallery, heatmap, top heads, head view."""
    _, source_label, target_label = RELATIONS[relation]
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Sentence", lines=2, max_length=backend.MAX_TEXT_CHARS)
            with gr.Row():
                source = gr.Dropdown(label=source_label, choices=[], allow_custom_value=True)
                target = gr.Dropdown(label=target_label + ("" if relation == "coreference" else " (empty: the word after the cue)"),
                                     choices=[], allow_custom_value=True)
            metric = gr.Radio(list(backend.HEATMAP_METRICS), value="selectivity" if relation == "negation" else "mean_attention",
                              label="Heatmap shows", visible=relation == "negation")
            button = gr.Button("Analyse", variant="primary")
        with gr.Column(scale=2):
            gallery = backend.gallery(relation)
            gr.Examples([[e.text, f"{e.source_span[0]}:{e.source_span[1]}", f"{e.target_span[0]}:{e.target_span[1]}"]
                         for e in gallery], inputs=[text, source, target], label="Examples (gold words preselected)",
                        examples_per_page=6)
    message = gr.Markdown()
    with gr.Row():
        heatmap = gr.Plot(label="Layer × head")
        top_table = gr.Dataframe(label="Top heads for this sentence, with dataset-level scores (click a row)",
                                 interactive=False, wrap=True)
    head_choice = gr.Dropdown(label="Head shown below (layer-head)", choices=[], interactive=True)
    view_note = gr.Markdown()
    view = gr.HTML(label="bertviz head view")

    text.change(lambda *a: update_choices(relation, *a), [text, source, target], [source, target], queue=False)
    run = lambda *a: run_relation(relation, *a)  # noqa: E731
    outputs = [message, heatmap, top_table, head_choice, view, view_note]
    inputs = [text, source, target, model, metric]
    button.click(run, inputs, outputs, api_visibility="private")
    text.submit(run, inputs, outputs, api_visibility="private")
    metric.input(run, inputs, outputs, api_visibility="private")
    top_table.select(pick_head_from_table, [text, model, top_table], [head_choice, view, view_note],
                     api_visibility="private")
    head_choice.input(pick_head, [text, model, head_choice], [view, view_note], api_visibility="private")


def model_view_tab(model: gr.Dropdown) -> None:
    text = gr.Textbox(label="Sentence", value="The doctor called the nurse because she was late.")
    layers = gr.CheckboxGroup(choices=[str(i) for i in range(6)], value=[str(i) for i in range(6)],
                              label="Layers to show (fewer layers, lighter page)")
    button = gr.Button("Show model view", variant="primary")
    note = gr.Markdown()
    view = gr.HTML()

    def show(text, model, layers):
        try:
            result = backend.model_view(text, model, [int(l) for l in layers] or None)
            return result.html, (f"*{result.note}*" if result.note else "")
        except Exception as err:
            return "", _problem(err)

    def layer_choices(model):
        try:
            n = backend.get_model(model).n_layers
            return gr.update(choices=[str(i) for i in range(n)], value=[str(i) for i in range(min(n, 6))])
        except Exception:
            return gr.update()

    button.click(show, [text, model, layers], [view, note], api_visibility="private")
    model.change(layer_choices, model, layers, api_visibility="private")


def report_tab(model: gr.Dropdown) -> None:
    gr.Markdown("Dataset-level results on the built-in sets, from `python -m analysis heads`/`report`. "
                "For the default model they are precomputed; for another model, compute them once here.")
    button = gr.Button("Show / compute the report for the chosen model")
    status = gr.Markdown()
    with gr.Row():
        coref_image = gr.Image(label="Coreference: accuracy by head", type="filepath")
        neg_image = gr.Image(label="Negation: selectivity by head", type="filepath")
    report = gr.Markdown()
    files = gr.File(label="Download the CSV and JSON behind the figures", file_count="multiple")

    def show(model, progress=gr.Progress()):
        try:
            found = backend.report_files(model, progress=progress)
            return ("", found.coref_heatmap, found.negation_heatmap, found.markdown, found.downloads)
        except Exception as err:
            return (_problem(err), None, None, "", None)

    button.click(show, model, [status, coref_image, neg_image, report, files], api_visibility="private")


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Attention heads: coreference and negation") as demo:
        gr.Markdown(INTRO)
        model = gr.Dropdown(allowed_models(), value=DEFAULT_MODEL, label="Model",
                            info="Offline models installed here, then the hub allow-list.")
        with gr.Tabs():
            for relation, (title, _, _) in RELATIONS.items():
                with gr.Tab(title):
                    relation_tab(relation, model)
            with gr.Tab("Model view"):
                model_view_tab(model)
            with gr.Tab("Probing report"):
                report_tab(model)
            with gr.Tab("About"):
                gr.Markdown(backend.ABOUT)
        gr.api(score_heads, api_name="score_heads")
        gr.api(head_view, api_name="head_view")
    return demo


def score_heads(text: str, relation: str = "coreference", source: str = "", target: str = "", model: str = "") -> dict:
    """Word-level attention from source to target for every head. Words may be given as start:end offsets."""
    try:
        return backend.score_heads_api(text, relation, source, target, model or None)
    except backend.DemoError as err:
        raise gr.Error(str(err)) from None


def head_view(text: str, model: str = "", layer: int | None = None, head: int | None = None) -> str:
    """The self-contained HTML (a sandboxed iframe) of the bertviz head view for a sentence."""
    try:
        return backend.head_view(text, model or None, layer, head).html
    except backend.DemoError as err:
        raise gr.Error(str(err)) from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app = build_demo()
    # Two cores: two forward passes at a time; more requests wait in a bounded queue.
    app.queue(default_concurrency_limit=int(os.environ.get("PROBING_CONCURRENCY", "2")), max_size=64)
    app.launch()
