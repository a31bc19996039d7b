"""The current sentence's per-head table as CSV and JSON downloads, from any tab.

The files are made in the visitor's browser from `data:` links carried in the page (a few kB: one row per
head), so the server writes nothing per visitor and keeps no files to clean up. The JSON holds the sentence,
the model and every head's row; the CSV holds the rows, one per head, with the sentence and model repeated
in each row so the file stands on its own. A row has every column the page's table shows, under the same
name ("sentence: attention", "set: accuracy", ...), for every head, not only the ones the table lists.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import re

# The file names carry the model and the tab, never the visitor's text (it could hold anything).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(*parts: str) -> str:
    """A file name stem from the model and the tab: letters, digits, '.', '_' and '-' only, at most 80."""
    return _UNSAFE.sub("-", "-".join(p for p in parts if p)).strip("-.")[:80] or "heads"


def records(table) -> list[dict]:
    """A page table (DataFrame) as download rows: one dict per row under the page's column names, NaN as None
    (an empty CSV cell, JSON null)."""
    return [{key: (None if isinstance(value, float) and value != value else value) for key, value in row.items()}
            for row in table.astype(object).to_dict("records")]


def csv_text(rows: list[dict], context: dict) -> str:
    """One line per head: the context columns (sentence, model, ...) first, then the row's own columns."""
    columns = list(context) + [c for c in (rows[0] if rows else {}) if c not in context]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**context, **row})
    return out.getvalue()


def _data_link(payload: str, mime: str, filename: str, label: str) -> str:
    encoded = base64.b64encode(payload.encode("utf-8")).decode("ascii")
    return (f'<a class="dl-link" download="{html.escape(filename, quote=True)}" '
            f'href="data:{mime};charset=utf-8;base64,{encoded}">{html.escape(label)}</a>')


def links_html(rows: list[dict], context: dict, stem: str) -> str:
    """Two download links (CSV and JSON) for a table of per-head rows; empty when there is nothing to give."""
    if not rows:
        return ""
    stem = safe_stem(stem)
    document = json.dumps({**context, "heads": rows}, ensure_ascii=False, indent=1)
    return ('<div class="dl-row">Download this sentence\'s numbers for every head: '
            + _data_link(csv_text(rows, context), "text/csv", f"{stem}.csv", "CSV") + " · "
            + _data_link(document, "application/json", f"{stem}.json", "JSON") + "</div>")
