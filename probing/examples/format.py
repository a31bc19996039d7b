"""The example format: annotated sentences, their validation, and JSONL reading and writing.

One example is one sentence (or passage) with a source span and a target span, as character offsets
`[start, end)` into `text`:

    {"text": "The lawyer did not sign the contract.", "relation": "negation",
     "source_span": [15, 18], "target_span": [19, 23],
     "candidate_spans": [[4, 10], [28, 36]],      # optional
     "id": "...", "meta": {...}}                   # optional

Negation controls are ordinary rows whose `meta` says `{"role": "control", "pair": PAIR_ID}`; the negated
sentence they belong to says `{"role": "negated", "pair": PAIR_ID}`. Controls never count towards a head's
main score; they give `control_attention`.

This file is a contract: the loaders, the built-in sets, the CLI and the demo all go through it. It imports
nothing of the package, so every loader can build on it (`probing.examples` re-exports its names).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

RELATIONS = ("coreference", "negation")


class ExampleError(ValueError):
    """A row that breaks the example format; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Example:
    text: str
    relation: str
    source_span: tuple[int, int]
    target_span: tuple[int, int]
    candidate_spans: tuple[tuple[int, int], ...] | None = None
    id: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def source(self) -> str:
        return self.text[self.source_span[0]:self.source_span[1]]

    @property
    def target(self) -> str:
        return self.text[self.target_span[0]:self.target_span[1]]

    @property
    def role(self) -> str:
        """`negated`, `control`, or `""` for an unpaired example."""
        return str(self.meta.get("role", ""))

    @property
    def is_control(self) -> bool:
        return self.role == "control"

    def to_dict(self) -> dict:
        row = asdict(self)
        row["source_span"] = list(self.source_span)
        row["target_span"] = list(self.target_span)
        if self.candidate_spans is None:
            del row["candidate_spans"]
        else:
            row["candidate_spans"] = [list(s) for s in self.candidate_spans]
        return row


@dataclass
class LoadReport:
    """What a reader or loader did: how many records it made, and every skipped row with its reason."""
    source: str
    n_records: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        text = f"{self.source}: {self.n_records} records, {self.n_skipped} skipped"
        if self.skipped:
            reasons: dict[str, int] = {}
            for reason in self.skipped:
                key = reason.split(": ", 1)[-1]
                reasons[key] = reasons.get(key, 0) + 1
            text += " (" + "; ".join(f"{n}x {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) + ")"
        return text


class Examples(list):
    """A list of examples that also carries how they were loaded (`report`: a LoadReport).

    What `load_examples` returns: use it as the list it is; read `.report` for the counts and skip reasons."""

    def __init__(self, examples=(), report: LoadReport | None = None):
        super().__init__(examples)
        self.report = report


def _short(value, limit: int = 80) -> str:
    """A value quoted in a message, cut short (a bad row may hold megabytes)."""
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 100 else f"a {type(value).__name__} of {len(value):,} items"
    return text if len(text) <= limit else text[:limit] + "…"


def _span(value, name: str, n_chars: int) -> tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ExampleError(f"{name} must be a list of two integers [start, end), got {_short(value)}")
    start, end = value
    if not 0 <= start < end <= n_chars:
        raise ExampleError(f"{name} {list(value)} is out of range or empty for a text of {n_chars} characters")
    return (start, end)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def example_from_dict(row: dict) -> Example:
    """Validate one parsed row and return it as an Example; raise ExampleError naming the problem."""
    if not isinstance(row, dict):
        raise ExampleError(f"a row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("text", "relation", "source_span", "target_span") if k not in row]
    if missing:
        raise ExampleError(f"missing field(s) {', '.join(missing)}")
    text = row["text"]
    if not isinstance(text, str) or not text.strip():
        raise ExampleError("text must be a non-empty string")
    relation = row["relation"]
    if relation not in RELATIONS:
        raise ExampleError(f"relation must be one of {RELATIONS}, got {_short(relation)}")
    source = _span(row["source_span"], "source_span", len(text))
    target = _span(row["target_span"], "target_span", len(text))
    if _overlaps(source, target):
        raise ExampleError(f"source_span {list(source)} and target_span {list(target)} overlap")
    for name, span in (("source_span", source), ("target_span", target)):
        if not text[span[0]:span[1]].strip():
            raise ExampleError(f"{name} {list(span)} covers only white space")
    candidates = row.get("candidate_spans")
    if candidates is not None:
        if not isinstance(candidates, list) or len(candidates) < 2:
            raise ExampleError("candidate_spans must be a list of at least two spans")
        candidates = tuple(_span(c, f"candidate_spans[{i}]", len(text)) for i, c in enumerate(candidates))
        if target not in candidates:
            raise ExampleError(f"target_span {list(target)} is not among candidate_spans")
        if any(_overlaps(c, source) for c in candidates):
            raise ExampleError("a candidate span overlaps the source span")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise ExampleError("meta must be a JSON object")
    return Example(text=text, relation=relation, source_span=source, target_span=target,
                   candidate_spans=candidates, id=str(row.get("id", "")), meta=meta)


MAX_LINE_BYTES = 1_000_000       # one example per line; a longer line is a bad row, never parsed
# Characters that str.splitlines() and some editors take as line breaks but JSON allows raw inside strings:
# written escaped, so every line of our own files is one row for any reader.
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def _parse_row(line: str) -> dict:
    """One JSON row; malformed or too deeply nested JSON, or a number too long to convert, is an ExampleError
    naming the problem (so --skip-bad counts it like any other bad row)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ExampleError(f"malformed JSON ({err.msg}: column {err.colno})") from None
    except RecursionError:
        raise ExampleError("nested too deeply to be an example row") from None
    except ValueError as err:      # Python refuses integers of more than 4,300 digits (int_max_str_digits)
        raise ExampleError(f"a number in the row is too long to read ({str(err).split(';')[0]})") from None


def read_jsonl(path: str | os.PathLike, skip_bad: bool = False) -> tuple[list[Example], LoadReport]:
    """Read and validate a JSONL file of examples. A bad row raises ExampleError, or is counted when skip_bad.

    Rows are split on "\n" only (a raw U+2028 or U+0085 inside a JSON string is part of the string) and read
    one at a time, so memory follows the longest line, which is capped at MAX_LINE_BYTES.
    """
    path = Path(path)
    report = LoadReport(source=str(path))
    examples = []
    try:
        handle = path.open("rb")
    except OSError as err:
        raise ExampleError(f"{path}: cannot read the file ({err.strerror or err})") from None
    with handle:
        for line_no, raw in enumerate(_lines(handle), start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]                                       # a UTF-8 byte-order mark
            try:
                if len(raw) > MAX_LINE_BYTES:
                    raise ExampleError(f"the line has {len(raw):,} bytes; the limit is {MAX_LINE_BYTES:,}")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ExampleError(f"the file is not UTF-8 ({err.reason} at byte {err.start} of the line)") \
                        from None
                if not line.strip():
                    continue
                example = example_from_dict(_parse_row(line))
                if not example.id:
                    example = Example(**{**example.__dict__, "id": f"{path.stem}:{line_no}"})
                examples.append(example)
            except ExampleError as err:
                if not skip_bad or "not UTF-8" in str(err):
                    raise ExampleError(f"{path}:{line_no}: {err}") from None
                report.skipped.append(f"line {line_no}: {err}")
    if not examples:
        raise ExampleError(f"{path}: no valid examples in the file"
                           + (f" ({report.n_skipped} bad rows skipped)" if report.skipped else ""))
    report.n_records = len(examples)
    return examples, report


def _lines(handle, chunk: int = 1 << 16):
    """Byte lines split on b"\n" only (and a trailing "\r" dropped); a line longer than MAX_LINE_BYTES is
    yielded cut just past the limit, so it is refused without being held whole."""
    buffer = b""
    skipping = False
    while True:
        block = handle.read(chunk)
        if not block:
            break
        buffer += block
        start = 0       # lines are cut at an offset and the buffer trimmed once per block: linear time even
        while True:     # for a block of nothing but "\n" (re-slicing the buffer per line was quadratic)
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line, start = buffer[start:end], end + 1
            if skipping:
                skipping = False
                continue
            yield line.rstrip(b"\r")
        buffer = buffer[start:]
        if len(buffer) > MAX_LINE_BYTES and not skipping:
            yield buffer[:MAX_LINE_BYTES + 1]        # refused by length; the rest of the line is skipped
            buffer, skipping = b"", True
        elif skipping:
            buffer = b""
    if buffer and not skipping:
        yield buffer.rstrip(b"\r")


def jsonl_line(example: Example) -> str:
    """One example as a JSONL line, with U+2028, U+2029 and U+0085 escaped."""
    line = json.dumps(example.to_dict(), ensure_ascii=False)
    for char, escaped in _LINE_BREAKS.items():
        line = line.replace(char, escaped)
    return line + "\n"


def write_jsonl(examples: Iterable[Example], path: str | os.PathLike) -> None:
    """Write examples as JSONL, atomically (temporary file, then rename), with the umask's permissions."""
    from probing.outputs import atomic_write

    def _write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            for example in examples:
                handle.write(jsonl_line(example))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, _write)


def find_span(text: str, word: str, start: int = 0) -> tuple[int, int]:
    """The first whole-word occurrence of `word` in `text` at or after `start`, as a character span."""
    import re
    match = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)").search(text, start)
    if match is None:
        raise ExampleError(f"{word!r} does not occur as a word in {text!r}")
    return match.span()
