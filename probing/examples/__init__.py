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
           "example_from_dict", "find_span", "first_keeping_partners", "jsonl_line", "load_examples", "read_jsonl",
           "write_jsonl"]

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_SETS = {
    "builtin-coref": BUILTIN_DIR / "coreference.jsonl",
    "builtin-negation": BUILTIN_DIR / "negation.jsonl",
    "builtin-negation-clitics": BUILTIN_DIR / "negation-clitics.jsonl",   # "n't" vs affirmative clitics
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
        # the first `limit` sentences (controls not counted), then the controls of their pairs (meta.pair)
        examples = first_keeping_partners(examples, limit, is_partner=lambda e: e.is_control,
                                          partner_key=lambda e: e.meta.get("pair"))
        report.n_records = len(examples)
    return Examples(examples, report)


def first_keeping_partners(examples: list[Example], limit: int | None, unit=None, is_partner=None,
                           partner_key=None) -> list[Example]:
    """The first `limit` units of `examples`, each kept whole, then the partners of what was kept: the one rule
    behind every `--limit` (load_examples, `analysis ablate`, `analysis patch`). None keeps everything.

    unit(example) -> key: the examples sharing a key form one unit (a pair, a group), counted once and never cut;
    None: every example is its own unit. is_partner(example) -> bool: examples that are not counted themselves
    but follow a kept example (a control sentence); partner_key(example) -> key (None or empty: no partner) ties a
    partner to the kept examples with the same key. Returns the kept units' examples in their order, then
    their partners in theirs. A `limit` below 1 is refused (a slice would silently drop the last examples).
    """
    if limit is None:
        return list(examples)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ExampleError(f"limit must be a whole number of at least 1, got {limit!r}")
    counted = [e for e in examples if is_partner is None or not is_partner(e)]
    keys = [unit(e) if unit is not None else position for position, e in enumerate(counted)]
    kept_units = set(list(dict.fromkeys(keys))[:limit])
    kept = [e for e, key in zip(counted, keys) if key in kept_units]
    if is_partner is None or partner_key is None:
        return kept
    joined = {key for key in map(partner_key, kept) if key}          # an empty key ties nothing
    return kept + [e for e in examples if is_partner(e) and partner_key(e) in joined]
