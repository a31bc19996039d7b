"""Several controls per negated item: their mean as the item's control, and per-adverb strata.

The built-in negation set gives each (frame, predicate) item every control adverb that fits its slot ("did
really sign", "did actually sign", ...), all sharing the item's `meta.pair`. One adverb alone is confounded with
the host it happens to sit after (an earlier design gave "actually" mostly to some hosts, "probably" to others),
so the control score of an item is the **mean over its adverbs**: `mean_over_adverbs` collapses the controls of
one pair into one row whose numbers are the means, and the usual pairing (one control per `meta.pair`) does the
rest. `adverb_strata` keeps the per-adverb view: a head table per adverb, each negated sentence paired with that
adverb's control alone, in the same long format as the other strata (`by` = "adverb").

Data with at most one control per pair passes through `mean_over_adverbs` unchanged (the same object).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

PER_ROW_ARRAYS = ("attention", "is_argmax", "next_word_baseline", "nearest_choice",
                  "norm_attention")   # (N, L, H), averaged
FIRST_OF_ITEM = ("nearest_hit", "first_hit", "n_candidates", "target_offset")        # (N,), the same per item


def control_members(pairs: list[str]) -> dict[str, list[int]]:
    """Row indices of each pair id, in order of first appearance; rows without a pair ("") are left out."""
    members: dict[str, list[int]] = {}
    for row, pair in enumerate(pairs):
        if pair:
            members.setdefault(pair, []).append(row)
    return members


def mean_rows(values: np.ndarray, members: list[list[int]]) -> np.ndarray:
    """values (N, ...) -> (len(members), ...): the NaN-ignoring mean over each member list's rows."""
    out = np.empty((len(members), *values.shape[1:]), dtype=values.dtype)
    for i, rows in enumerate(members):
        block = values[rows].astype(np.float64)
        finite = ~np.isnan(block)
        counts = finite.sum(0)
        with np.errstate(invalid="ignore"):
            out[i] = np.where(counts > 0, np.where(finite, block, 0.0).sum(0) / np.maximum(counts, 1), np.nan)
    return out


def mean_over_adverbs(controls):
    """The controls (an `ExampleScores`, or None) with each pair's rows replaced by one row of their means.

    The merged row keeps the first member's id, group and task; its meta lists the adverbs averaged
    (`adverbs`, `n_adverbs`) instead of one `adverb`. Unpaired rows are kept as they are."""
    if controls is None or not len(controls):
        return controls
    by_pair = control_members(controls.pairs)
    if all(len(rows) == 1 for rows in by_pair.values()):
        return controls
    paired = {r for rows in by_pair.values() for r in rows}
    members = list(by_pair.values()) + [[r] for r in range(len(controls)) if r not in paired]
    firsts = [rows[0] for rows in members]
    merged = {name: mean_rows(getattr(controls, name), members)
              for name in PER_ROW_ARRAYS if getattr(controls, name) is not None}
    merged.update({name: getattr(controls, name)[firsts] for name in FIRST_OF_ITEM
                   if getattr(controls, name) is not None})
    meta = []
    for rows in members:
        first = {k: v for k, v in controls.meta[rows[0]].items() if k not in ("adverb", "control_note")}
        adverbs = [controls.meta[r].get("adverb") for r in rows]
        meta.append({**first, "adverbs": [a for a in adverbs if a], "n_adverbs": len(rows)})
    lists = {name: [getattr(controls, name)[r] for r in firsts] for name in ("ids", "pairs", "groups", "tasks")}
    return replace(controls, **merged, **lists, meta=meta)


def adverb_strata(main, controls, relation: str, table_of, **table_options):
    """Per adverb: `table_of(main rows that have this adverb's control, relation, those controls, **options)`,
    stacked with `by` = "adverb" and `stratum` = the adverb in front; None when no control names an adverb or
    every pair has a single control (then the ordinary tables already are per adverb).

    `table_of` is `probing.heads.head_table` (passed in, so this module does not import the scorer)."""
    import pandas as pd
    if controls is None or not len(controls) or relation != "negation":
        return None
    if all(len(rows) == 1 for rows in control_members(controls.pairs).values()):
        return None
    adverbs = [str(m.get("adverb", "")) for m in controls.meta]
    tables = []
    for adverb in sorted({a for a in adverbs if a}):
        rows = [r for r, a in enumerate(adverbs) if a == adverb]
        chosen = controls.subset(rows)
        kept = set(chosen.pairs)
        main_rows = [i for i, p in enumerate(main.pairs) if p in kept]
        if not main_rows:
            continue
        table = table_of(main.subset(main_rows), relation, chosen, **table_options)
        table.insert(0, "stratum", adverb)
        table.insert(0, "by", "adverb")
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else None


def balanced_controls(examples: list) -> list:
    """Examples with as many controls per item (`meta.pair`) as it has negated sentences, for a classifier that
    tells negated from control sentences: all controls of an item would make "control" the majority class
    (4 to 7 per item against 1 or 2). Which adverbs are kept rotates from item to item, so each adverb keeps its
    share; items with one control per negated sentence, and rows without a pair, are kept as they are."""
    negated: dict[str, int] = {}
    for e in examples:
        if e.role == "negated" and e.meta.get("pair"):
            negated[e.meta["pair"]] = negated.get(e.meta["pair"], 0) + 1
    controls: dict[str, list] = {}
    for e in examples:
        if e.role == "control" and e.meta.get("pair"):
            controls.setdefault(e.meta["pair"], []).append(e)
    keep = set()
    for item, (pair, rows) in enumerate(controls.items()):
        want = negated.get(pair, len(rows))
        keep |= {id(rows[(item + k) % len(rows)]) for k in range(min(want, len(rows)))}
    return [e for e in examples if e.role != "control" or not e.meta.get("pair") or id(e) in keep]
