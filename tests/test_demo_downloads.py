"""The per-sentence downloads (`probing.demo.downloads`): the files hold every head with the sentence, names
are safe, and nothing the visitor typed reaches the page unescaped."""
import base64
import csv
import io
import json
import re

from probing.demo import downloads


def _decoded(link_html: str, kind: str) -> tuple[str, str]:
    match = re.search(rf'download="([^"]+\.{kind})" href="data:[^;]+;charset=utf-8;base64,([A-Za-z0-9+/=]+)"',
                      link_html)
    return match.group(1), base64.b64decode(match.group(2)).decode("utf-8")


def test_downloads_hold_every_head_with_the_sentence_and_safe_names():
    rows = [{"layer": l, "head": h, "attention": 0.1 * h} for l in range(2) for h in range(3)]
    context = {"sentence": 'He said "<b>hi</b>", then left.', "model": "minilm"}
    page = downloads.links_html(rows, context, "minilm/../coreference heads")
    assert "<b>" not in page
    name, text = _decoded(page, "csv")
    assert name == "minilm-..-coreference-heads.csv" and "/" not in name
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 6 and table[0]["sentence"] == context["sentence"] and table[5]["head"] == "2"
    name, text = _decoded(page, "json")
    assert json.loads(text) == {**context, "heads": rows}
    assert downloads.links_html([], context, "x") == ""


def test_the_sentence_downloads_carry_every_column_the_page_shows_named_the_same():
    """The negation tab's files: every head (72), each with the table's columns under the page's names,
    the "set:" columns included, and the numbers the page shows (to more decimals)."""
    import app
    from probing.demo import backend, glossary
    analysis = backend.analyse("The lawyer didn't sign the contract.", "negation", "n't", "sign", None)
    state = {"scores": analysis.scores, "text": analysis.example.text, "model_name": analysis.model}
    page = app.relation_downloads(state)
    _, text = _decoded(page, "csv")
    table = list(csv.DictReader(io.StringIO(text)))
    shown = list(glossary.plain_table(backend.empty_top_table("negation")).columns)
    assert any(c.startswith("set: ") for c in shown) and set(shown) <= set(table[0])
    assert len(table) == 72 and [row["head"] for row in table[:2]] == ["0-0", "0-1"]
    on_page = glossary.plain_table(analysis.top_table).set_index("head")
    row = next(r for r in table if r["head"] == "1-8")
    for column in shown[1:]:
        if column in on_page and on_page.loc["1-8", column] == on_page.loc["1-8", column]:   # not NaN
            assert round(float(row[column]), 3) == on_page.loc["1-8", column], column
    _, document = _decoded(page, "json")
    assert set(shown) <= set(json.loads(document)["heads"][0])
