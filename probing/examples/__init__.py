"""Annotated examples: where they come from. `load_examples` takes a built-in set's name, a JSONL path or a real
dataset's name (`probing.examples.loaders`) and returns validated `Example`s: a list (`Examples`) whose
`.report` is the `LoadReport` (counts, every skipped row and why).

The format itself (the `Example` type, its validation, JSONL reading and writing) lives in
`probing.examples.format` and is re-exported here; `loaders` and `build_builtin` build on it.
"""
from __future__ import annotations

import os
from pathlib import Path

from probing.examples.format import (MAX_LINE_BYTES, RELATIONS, Example, ExampleError, Examples, LoadReport,
                                     example_from_dict, find_span, jsonl_line, read_jsonl, write_jsonl)

__all__ = ["BUILTIN_DIR", "BUILTIN_SETS", "MAX_LINE_BYTES", "RELATIONS", "Example", "ExampleError", "Examples",
           "LoadReport",
           "example_from_dict", "find_span", "jsonl_line", "load_examples", "read_jsonl", "write_jsonl"]

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_SETS = {
    "builtin-coref": BUILTIN_DIR / "coreference.jsonl",
    "builtin-negation": BUILTIN_DIR / "negation.jsonl",
}


def load_examples(name_or_path: str, data_root: str | os.PathLike | None = None, skip_bad: bool = False,
                  limit: int | None = None) -> Examples:
    """Examples from a built-in set name, a JSONL path, or a real dataset's name (read under data_root); the
    returned list's `.report` says how many were read and why any were skipped."""
    if name_or_path in BUILTIN_SETS:
        examples, report = read_jsonl(BUILTIN_SETS[name_or_path], skip_bad=skip_bad)
        report.source = name_or_path
    elif name_or_path.endswith(".jsonl") or Path(name_or_path).is_file():
        examples, report = read_jsonl(name_or_path, skip_bad=skip_bad)
    else:
        from probing.examples.loaders import DATASETS, load_dataset
        if name_or_path not in DATASETS:
            raise ExampleError(f"unknown dataset {name_or_path!r} (and not a file); known datasets: "
                               f"{', '.join(list(BUILTIN_SETS) + [d for d in DATASETS if d not in BUILTIN_SETS])}")
        return Examples(*load_dataset(name_or_path, data_root=data_root, skip_bad=skip_bad, limit=limit))
    if limit is not None:
        examples = _limit_keeping_pairs(examples, limit)
        report.n_records = len(examples)
    return Examples(examples, report)


def _limit_keeping_pairs(examples: list[Example], limit: int) -> list[Example]:
    """The first `limit` non-control examples, plus the controls paired with them."""
    main = [e for e in examples if not e.is_control][:limit]
    pairs = {e.meta.get("pair") for e in main if e.meta.get("pair")}
    return main + [e for e in examples if e.is_control and e.meta.get("pair") in pairs]
