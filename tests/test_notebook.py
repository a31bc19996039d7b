"""Notebooks: `probing.views.head_view/model_view` return a View that displays itself (the sandboxed iframe with the
libraries inlined), and notebooks/quickstart.ipynb runs top to bottom offline under nbclient."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from probing import views
from probing.models import load_model

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
SENTENCE = "The lawyer did not sign the contract."
LIBRARY_MARKERS = ("jQuery v2.2.4", 'version="5.7.0"', "RequireJS 2.3.6", "requirejs(['jquery', 'd3']")
# The head that leads MiniLM's committed negation report by paired difference (the README names it too): the
# notebook computes it afresh, so the two must agree.
_REPORTED = pd.read_csv(ROOT / "reports" / "minilm" / "heads" / "builtin-negation" / "heads.csv")
_REPORTED = _REPORTED[_REPORTED["task"] == "all-words"].sort_values("paired_difference", ascending=False).iloc[0]
REPORTED_BEST = (int(_REPORTED["layer"]), int(_REPORTED["head"]))
REMOTE = re.compile(r"https?://|<script[^>]*\bsrc\s*=|//cdn", re.I)


def params(document: str) -> dict:
    """The params JSON given to bertviz's script."""
    start = document.index("const params = ") + len("const params = ")
    return json.JSONDecoder().raw_decode(document, start)[0]


def srcdoc(iframe: str) -> str:
    """The page inside the iframe, unescaped."""
    return html.unescape(re.fullmatch(r'<iframe [^>]*srcdoc="([^"]*)"></iframe>', iframe).group(1))


def assert_offline_view(iframe: str, *, opens_on: str | None = None) -> None:
    assert iframe.startswith('<iframe sandbox="allow-scripts" ') and "allow-same-origin" not in iframe
    page = srcdoc(iframe)
    assert all(marker in page for marker in LIBRARY_MARKERS)
    assert not REMOTE.search(iframe) and not REMOTE.search(page)
    if opens_on:
        assert opens_on in page


def test_head_view_displays_itself_and_still_reads_as_html():
    view = views.head_view(None, SENTENCE, layer=1, head=7)
    assert isinstance(view, views.ViewResult)
    assert view._repr_html_() == view.html == str(view)
    assert_offline_view(view._repr_html_(), opens_on='"layer":1,"heads":[7]')
    assert view.n_tokens_shown == view.n_tokens_total == 10 and not view.truncated and view.note == ""
    same_model = views.head_view(load_model("minilm"), SENTENCE, layer=1, head=7)   # the model given, not named
    assert params(same_model.document)["attention"] == params(view.document)["attention"]


def test_model_view_displays_itself_with_the_chosen_layers():
    view = views.model_view("minilm", SENTENCE, layers=[2, 0])
    assert_offline_view(view._repr_html_(), opens_on='"include_layers":[0,2]')


@pytest.mark.parametrize("call, message", [
    (lambda: views.head_view(None, "   "), "text must be a non-empty string"),
    (lambda: views.head_view(None, None), "text must be a non-empty string"),
    (lambda: views.head_view(None, SENTENCE, layer=6), r"layer 6 is out of range: this model has 6 layers \(0-5\)"),
    (lambda: views.model_view(None, SENTENCE, layers=[]), "layers is empty"),
])
def test_bad_arguments_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_truncation_is_noted():
    long_text = " ".join(["word"] * 70)
    view = views.head_view(None, long_text, max_tokens=60)
    assert view.truncated and view.n_tokens_total == 72 and view.note.startswith("Showing the first 60 of 72 tokens")


@pytest.mark.slow
def test_quickstart_notebook_runs_offline_and_shows_the_inlined_views(tmp_path, monkeypatch):
    """Run as after the README's set-up: from the notebooks folder, with nothing of the checkout on PYTHONPATH
    and no `pip install -e .` (its first cell finds the repository root); only HTML for the views."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")     # any attempt to reach the hub fails the notebook
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(cell.get("outputs", []) == [] for cell in notebook.cells), "commit the notebook without outputs"
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    printed = "".join(o.get("text", "") for cell in outputs for o in cell if o.output_type == "stream")
    assert f"probing from {ROOT / 'probing'}" in printed
    assert "builtin-negation: 1515 records, 0 skipped" in printed and "cue->next_word" in printed
    best = re.search(r"head (\d+)-(\d+)", printed)
    assert best and tuple(map(int, best.groups())) == REPORTED_BEST  # the committed report's leading head
    # The table: the columns the text describes, sorted by the main score as the text says.
    table = next(o["data"] for o in outputs[2] if o.output_type == "execute_result")["text/html"]
    assert "paired_difference_ci_low" in table and "paired_p_fwer" in table and "p_holm" not in table
    values = [float(v) for v in re.findall(r"<tr>\s*<th>\d+</th>\s*<td>[\d.]+</td>\s*<td>[\d.]+</td>\s*<td>(-?[\d.]+)</td>",
                                           table)]
    assert len(values) == 5 and values == sorted(values, reverse=True)
    text = " ".join("".join(c.source) for c in notebook.cells if c.cell_type == "markdown")
    assert "p_holm" not in text and "sorted by `paired_difference`" in text
    # The views: HTML only (display_data with text/html), never their markup printed as text.
    displayed = [o for cell in outputs[3:] for o in cell if o.output_type == "display_data"]
    assert len(displayed) == 2 and all(set(o["data"]) >= {"text/html"} for o in displayed)
    assert "<iframe" not in printed
    # No warnings: no IPython "Consider using IPython.display.IFrame", no tqdm "IProgress not found".
    stderr = "".join(o.get("text", "") for cell in outputs for o in cell
                     if o.output_type == "stream" and o.get("name") == "stderr")
    assert "Warning" not in stderr and "IFrame" not in stderr and "IProgress" not in stderr, stderr[-2000:]
    # p-values in scientific notation, never rounded to 0.0.
    p_values = re.findall(r"<td>(\d\.\de-\d\d)</td>", table)
    assert len(p_values) == 5, table
    layer, head = REPORTED_BEST
    assert_offline_view(displayed[0]["data"]["text/html"], opens_on=f'"layer":{layer},"heads":[{head}]')
    assert_offline_view(displayed[1]["data"]["text/html"], opens_on=f'"include_layers":[{layer}]')
    size = len(nbformat.writes(notebook))
    assert size < 3_000_000, f"the executed notebook is {size:,} bytes"
