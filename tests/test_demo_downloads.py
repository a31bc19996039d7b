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
