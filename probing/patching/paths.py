"""Direct and indirect effects of a few heads (path patching): does a head change the readout itself, or through
the layers after it?

A head's total effect is its noising (or denoising) effect (`engine.py`). Its *direct* effect is the same patch
with every later attention head's z frozen at the row's own run's values, so the change reaches the readout
without passing through any later head: Wang et al. 2022's path patching of the path head -> readout, with
their convention that MLPs and layer norms are recomputed (part of the path to the output); Goldowsky-Dill et
al. 2023 ("Localizing model behavior with path patching") define the general form. Its *indirect* effect is
total - direct: what flows through later heads. Both are per pair, in the total's units (same pairs, same
scale), so they add up. A head of the last layer has no later head: its effect is all direct by definition,
and the table says so instead of testing it.

How to read them: a head whose effect is all direct moves the readout by what it (and the MLPs after it) write
there: a head that copies the cue word into every position "carries" the cue to the output; a head whose effect
is indirect is read by later heads, which is what "computing something others use" needs. Neither says what a
head computes; both say where its effect goes.

Tests: per pair, direct and indirect (= total - direct) go through one sign-flip maxT family over both signs
of both parts of every head listed (so "direct > 0", "direct < 0", "indirect > 0", "indirect < 0" are all
corrected together), clustered as the study's tests are.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from probing import hooks, stats
from probing.defaults import ALPHA, N_BOOT, N_PERM, SEED
import probing.patching.units as design
from probing.patching.engine import sanity_summary
from probing.patching.pairs import usable
from probing.patching.readouts import SHARED, LogitReadout, Pooling, normalise
from probing.patching.results import PairRun
from probing.patching.runs import DIRECT_KINDS, direct_rows, run_flat_rows

PATH_KINDS = tuple(DIRECT_KINDS)       # noising, denoising: path patching patches z
TOP_PER_KIND = 3                       # besides the named heads, the top heads by total effect get their paths


def direct_ids(module, clean_ids: list[int], corrupt_ids: list[int], heads, kinds=PATH_KINDS, max_rows: int = 512,
               readout: LogitReadout | None = None, pooling: Pooling = SHARED) -> PairRun:
    """One pair's direct-path runs: `values[kind]` [len(heads)] (raw readout values, as `engine.patch_ids`'s),
    for kinds among noising / denoising; `readouts.normalise` turns them into effects."""
    layout = hooks.head_layout(module)
    heads = hooks.check_heads(heads, layout.n_layers, layout.n_heads)
    return run_flat_rows(module, clean_ids, corrupt_ids, direct_rows(heads, kinds), len(heads), kinds, max_rows,
                         readout, pooling)


def heads_to_trace(named: dict, table: pd.DataFrame, kinds, top: int = TOP_PER_KIND) -> list[tuple[int, int]]:
    """The heads whose paths are traced: every named head, and the `top` heads by mean total effect per kind
    (so the largest effects get their paths whether or not they were named), sorted."""
    chosen = {tuple(h) for kind in kinds for h in named.get(kind, [])}
    for kind in kinds:
        ranked = table.dropna(subset=[kind]).sort_values([kind, "layer", "head"], ascending=[False, True, True])
        chosen.update((int(r.layer), int(r.head)) for r in ranked.head(top).itertuples())
    return sorted(chosen)


@dataclass
class PathResult:
    """Direct and indirect effects. `table`: one row per (kind, head): total, direct, indirect (= total -
    direct), each with its CI, the p_fwer of each sign of each part, and `where` in words; `per_pair[kind]`:
    the direct effects [pairs, heads]. Plain data a notebook can inspect."""
    heads: list[tuple[int, int]]
    table: pd.DataFrame
    per_pair: dict[str, np.ndarray]
    n_pairs: int
    units: str
    seconds: float
    sanity: dict          # the direct-path runs' own sanity checks (`engine.sanity_summary`)

    def to_dict(self) -> dict:
        return stats.strict_json({"heads": [list(h) for h in self.heads], "n_pairs": self.n_pairs,
                                  "units": self.units, "seconds": self.seconds, "sanity": self.sanity,
                                  "rows": self.table.to_dict(orient="records")})


def where_it_goes(direct_p: tuple[float, float], indirect_p: tuple[float, float], alpha: float) -> str:
    """In words, from the corrected p-values of (part > 0, part < 0) for each part."""
    direct, indirect = min(direct_p) < alpha, min(indirect_p) < alpha
    if direct and indirect:
        return "both: directly and through later heads"
    if direct:
        return "direct: it moves the readout itself (what later heads add is not distinguishable from 0)"
    if indirect:
        return "indirect: through later heads (its direct part is not distinguishable from 0)"
    return "neither part distinguishable from 0"


def path_table(total: dict[str, np.ndarray], direct: dict[str, np.ndarray], heads, groups, n_boot: int,
               n_perm: int, seed: int, alpha: float = ALPHA, n_layers: int | None = None) -> pd.DataFrame:
    """total[kind], direct[kind]: per-pair effects [pairs, heads] (same pairs, same units). One maxT family
    over every (kind, head, part, sign) of the heads before the last layer. A head of the last layer
    (`n_layers` - 1) has no later head, so its effect is all direct by definition: direct = its total and
    indirect = 0 exactly (what the runs give up to rounding), with no test, and it stays out of the family (its
    rounding-sized "indirect" would otherwise be tested and cost the other heads power)."""
    kinds = list(direct)
    last = np.array([n_layers is not None and layer == n_layers - 1 for layer, _ in heads], dtype=bool)
    direct = {kind: np.where(last, total[kind], direct[kind]) for kind in kinds}
    parts = {kind: {"direct": direct[kind], "indirect": total[kind] - direct[kind]} for kind in kinds}
    p_fwer = np.full((len(kinds), 2, 2, len(heads)), np.nan)      # kind, part, sign, head
    if (~last).any():
        columns = [sign * parts[kind][part][:, ~last] for kind in kinds for part in ("direct", "indirect")
                   for sign in (1, -1)]
        tested = stats.sign_flip_tests(np.concatenate(columns, axis=1), n_perm, seed, groups=groups)[1]
        p_fwer[..., ~last] = tested.reshape(len(kinds), 2, 2, int((~last).sum()))
    rows = []
    for k, kind in enumerate(kinds):
        cis = {name: design.ci(values, n_boot, seed, groups) for name, values in
               (("total", total[kind]), *parts[kind].items())}
        for i, (layer, head) in enumerate(heads):
            row = {"kind": kind, "layer": layer, "head": head}
            for name, values in (("total", total[kind]), *parts[kind].items()):
                row[name] = float(values[:, i].mean())
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = float(cis[name][0][i]), float(cis[name][1][i])
            for j, part in enumerate(("direct", "indirect")):
                row[f"{part}_p_fwer_positive"] = float(p_fwer[k, j, 0, i])
                row[f"{part}_p_fwer_negative"] = float(p_fwer[k, j, 1, i])
            row["where"] = ("last layer: no later head, so all of its effect is direct by definition" if last[i]
                            else where_it_goes(tuple(p_fwer[k, 0, :, i]), tuple(p_fwer[k, 1, :, i]), alpha))
            rows.append(row)
    return pd.DataFrame(rows)


def trace_paths(loaded, kept, per_pair_total: dict[str, np.ndarray], heads, *, lm, pooling: Pooling, scale,
                groups, n_boot: int = N_BOOT, n_perm: int = N_PERM, seed: int = SEED, alpha: float = ALPHA,
                max_rows: int = 512, n_heads: int, n_layers: int | None = None) -> PathResult:
    """Direct effects of `heads` on the study's kept pairs, in the study's units (`scale`: the common scale,
    or None for each pair's own difference), beside the totals `per_pair_total[kind]` [pairs, layers*heads]."""
    started = time.perf_counter()
    kinds = [kind for kind in PATH_KINDS if kind in per_pair_total]
    columns = [layer * n_heads + head for layer, head in heads]
    direct, outs = {kind: [] for kind in kinds}, []
    for pair in kept:
        ok, reason, info = usable(loaded, pair, check_answers=lm is not None)
        if not ok:       # the study kept it, so this cannot happen unless the pair changed
            raise RuntimeError(f"pair {pair.id} was patched but is not usable for path patching: {reason}")
        readout = None if lm is None else LogitReadout(lm, info["answer_ids"], info["position"])
        out = direct_ids(loaded.model if lm is None else lm, *info["ids"], heads, kinds, max_rows, readout, pooling)
        out.effects, out.sanity = normalise(out, out.difference if scale is None else scale)
        outs.append(out)
        for kind in kinds:
            direct[kind].append(out.effects[kind])
    direct = {kind: np.stack(values) for kind, values in direct.items()}
    total = {kind: per_pair_total[kind][:, columns] for kind in kinds}
    table = path_table(total, direct, heads, groups, n_boot, n_perm, seed, alpha, n_layers)
    return PathResult(heads=list(heads), table=table, per_pair=direct, n_pairs=len(kept),
                      units=design.in_words(groups, len(kept)), seconds=round(time.perf_counter() - started, 1),
                      sanity=sanity_summary(outs, scale, lm is not None))
