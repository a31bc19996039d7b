"""Test helper: the numbers and head ids the committed reports hold, and the ones a markdown text states.

Whether a report "holds" a stated decimal cannot be asked of the whole reports at once: they record so many
values that almost every three-decimal number between 0 and 1 occurs somewhere. So a decimal counts as held
only in context: the sentence (or table row) that states it names a head, and one value recorded *for that
head* (in a JSON object with its layer and head, a `[layer, head, value]` list, or a CSV row of that head or
of a head set holding it), written with as many decimals as the text uses, gives the same digits (signs
ignored; "87.6%" is 0.876 as a percentage). A decimal in a sentence that names no head is held by nothing:
the README and the About tab state findings only on the generated findings page.

`recorded_values` (every decimal anywhere in the reports) is the weaker check kept for the generated findings
page, whose numbers are read from the reports by construction.
"""
from __future__ import annotations

import csv
import json
import math
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
MAX_DECIMALS = 5

# a decimal not part of a version (3.11.2) or a word (python3.11); an optional trailing % makes it a percentage
DECIMAL = re.compile(r"(?<![\w.])[-+−]?(\d+\.\d+)(?![\w]|\.\d)(%?)")
HEAD_ID = re.compile(r"(?<![\w.-])(\d{1,2})-(\d{1,2})(?![\w.-]|\.\d)")
# sentences, clauses after a semicolon, paragraphs and table rows
SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n\s*\n|\n(?=\|)")
PER_HEAD_CSVS = ("heads.csv", "effects.csv", "sets.csv")    # per-example and per-stratum CSVs are left out


def _floats(values) -> list[float]:
    out = []
    for value in values:
        if isinstance(value, float) and math.isfinite(value):
            out.append(abs(value))
        elif isinstance(value, str) and value and any(c in value for c in ".eE"):
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                out.append(abs(number))
    return out


def _walk(value, by_head: dict[str, list[float]], everything: list[float]) -> None:
    """Collect every float (everything) and the floats recorded for each head (by_head)."""
    if isinstance(value, bool):
        return
    if isinstance(value, float):
        everything.extend(_floats([value]))
    elif isinstance(value, dict):
        layer, head = value.get("layer"), value.get("head")
        if isinstance(layer, int) and isinstance(head, int) and not isinstance(layer, bool):
            by_head.setdefault(f"{layer}-{head}", []).extend(_floats(value.values()))
        if isinstance(value.get("head"), str) and HEAD_ID.fullmatch(value["head"]):   # {"head": "2-8", "score": ...}
            by_head.setdefault(value["head"], []).extend(_floats(value.values()))
        if isinstance(value.get("head_name"), str):
            by_head.setdefault(value["head_name"], []).extend(_floats(value.values()))
        for item in value.values():
            _walk(item, by_head, everything)
    elif isinstance(value, list):
        if len(value) in (2, 3) and all(isinstance(v, int) and not isinstance(v, bool) for v in value[:2]):
            by_head.setdefault(f"{value[0]}-{value[1]}", []).extend(_floats(value[2:]))  # [layer, head(, value)]
        for item in value:
            _walk(item, by_head, everything)
    elif isinstance(value, str) and HEAD_ID.fullmatch(value.strip()):
        by_head.setdefault(value.strip(), [])


@lru_cache(maxsize=4)
def recorded(root: Path = REPORTS) -> tuple[dict[str, tuple[float, ...]], frozenset[str], frozenset[str]]:
    """(the values recorded per head id, the heads the reports name, every decimal anywhere written with
    1..MAX_DECIMALS digits). Named: in a JSON summary (top, chosen, named heads) or a head set; a row of a
    per-head table, which has every head, names none."""
    by_head: dict[str, list[float]] = {}
    everything: list[float] = []
    for path in sorted(Path(root).rglob("*.json")):
        _walk(json.loads(path.read_text(encoding="utf-8")), by_head, everything)
    named = set(by_head)
    for path in sorted(Path(root).rglob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                values = _floats(row.values())
                everything.extend(values)
                if path.name not in PER_HEAD_CSVS:
                    continue
                heads = (row.get("heads") or "").split()
                named.update(heads)
                if row.get("layer", "").isdigit() and row.get("head", "").isdigit():
                    heads.append(f"{int(row['layer'])}-{int(row['head'])}")
                for head in heads:
                    by_head.setdefault(head, []).extend(values)
    decimals = {f"{v:.{d}f}" for v in set(everything) for d in range(1, MAX_DECIMALS + 1)}
    return {h: tuple(sorted(set(v))) for h, v in by_head.items()}, frozenset(named), frozenset(decimals)


def _written(value: float, digits: str, percent: bool) -> bool:
    decimals = len(digits.split(".")[1])
    return f"{(100 * value if percent else value):.{decimals}f}" == digits


def unheld_numbers(text: str, allowed: dict[str, str] | None = None, root: Path = REPORTS) -> list[str]:
    """Every decimal the text states (outside `allowed`) that no value recorded for a head named in the same
    sentence gives."""
    by_head, _, _ = recorded(root)
    allowed = allowed or {}
    found = []
    for sentence in SENTENCE.split(text):
        heads = {f"{int(m.group(1))}-{int(m.group(2))}" for m in HEAD_ID.finditer(sentence)}
        values = [v for head in heads for v in by_head.get(head, ())]
        for match in DECIMAL.finditer(sentence):
            digits, percent = match.group(1), bool(match.group(2))
            if digits in allowed or any(_written(v, digits, percent) for v in values):
                continue
            found.append(match.group(0))
    return found


def unrecorded_heads(text: str, root: Path = REPORTS) -> list[str]:
    """Every layer-head id the text states that no report names."""
    _, named, _ = recorded(root)
    return [m.group(0) for m in HEAD_ID.finditer(text) if f"{int(m.group(1))}-{int(m.group(2))}" not in named]


def unrecorded_values(text: str, root: Path = REPORTS) -> list[str]:
    """Every decimal the text states that occurs nowhere in the reports (the weak check, see the docstring)."""
    _, _, decimals = recorded(root)
    return [m.group(0) for m in DECIMAL.finditer(text) if not m.group(2) and m.group(1) not in decimals]


def strip_code(markdown: str) -> str:
    """The text without fenced code blocks, inline code and HTML comments (commands, not statements)."""
    markdown = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)
    markdown = re.sub(r"<!--.*?-->", " ", markdown, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", " ", markdown)
