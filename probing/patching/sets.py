"""Head sets, for compensation: patching heads together, against layer-matched random sets of the same size.

Single-head patching cannot show that a head is unused: other heads can make up for it (backup heads, Wang et
al. 2022). So `patch_head_sets` patches together, on every usable pair,
(a) the top-k heads by attention score, (b) the top-k heads by single-head effect (of the same kind), and (c)
each whole layer; and compares (a) and (b) with `n_random` random sets of k heads drawn from the same layers
(as many heads per layer as the chosen set has), for noising and denoising alike.

Per set: the mean effect over pairs with a cluster-bootstrap 95% CI over pairs; against the random sets
(`random_set_test`): their mean, median and 2.5-97.5% range, p = (1 + b) / (1 + n) with b the random sets whose
mean effect is at least as large (each distinct set is patched once, so a draw that is the chosen set itself ties
with it by identity, not by float rounding), Holm's correction over every k > 1 comparison (`p_holm`), and the
excess the test could have detected (`detectable`: the random means' 95th percentile minus their median). k = 1
is a rank, not a test: its random sets are the other heads of its layer, so every chosen head's rank within its
layer by its single-head effect is given (`ranks_in_layer`). The attention sets rank heads by the heads table's
headline score (the caller's `attention_scores`); the top-k by effect are chosen on the same pairs they are
measured on, so their comparison is in-sample (it favours them).

Effects are read as in `engine.py` (noising = 1 - m(clean run with the set's z from the corrupt run),
denoising = m(corrupt run with the set's z from the clean run)), with the same readout and normalisation as the
single-head study.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probing.defaults import N_BOOT, N_RANDOM, SEED
from probing import hooks, stats
from probing.models import as_loaded
from probing.patching.engine import patch_set_ids
from probing.patching.pairs import usable
from probing.patching.readouts import SHARED, LogitReadout, Pooling, normalise_all, pooling_for
import probing.patching.units as design
from probing.patching.results import PairRun
from probing.patching.engine import sanity_summary
from probing.patching.study import PatchingResult, pairs_to_run, patch_heads

SET_KINDS = ("noising", "denoising")


def _ranking_score(attention_scores, table: pd.DataFrame, n_layers: int, n_heads: int):
    """(the per-head score that ranks heads for the "top-k by attention" sets, in table order [layers*heads],
    its name), or (None, "") when there is none: a heads table (`attrs["score"]` names its column), a
    [layers, heads] array, or by default the patched pairs' mean attention source -> target."""
    if attention_scores is None:
        if "attention" in table:
            return table["attention"].to_numpy(), "mean attention source -> target in the clean texts"
        return None, ""
    if isinstance(attention_scores, pd.DataFrame):
        score = attention_scores.attrs.get("score")
        if score not in attention_scores:
            raise ValueError("attention_scores as a table needs attrs['score'] naming one of its columns")
        ordered = attention_scores.set_index(["layer", "head"]).reindex(
            list(zip(table["layer"], table["head"])))[score].to_numpy()
        if np.isnan(ordered).any():
            raise ValueError(f"attention_scores lacks some heads of this {n_layers}x{n_heads} model")
        return ordered, score
    values = np.asarray(attention_scores, dtype=np.float64)
    if values.shape != (n_layers, n_heads):
        raise ValueError(f"attention_scores must have shape ({n_layers}, {n_heads}), got {values.shape}")
    return values.reshape(-1), "given"


@dataclass
class HeadSetResult:
    """`table`: one row per (kind, selection, k) set: its heads, mean effect with CI, and (attention / effect
    selections) each head's rank in its layer, the random sets' mean, median and 2.5-97.5% range, p_random =
    (1 + b) / (1 + n), p_holm (k > 1) and `detectable` (see the module docstring)."""
    model: str
    relation: str
    readout: str
    n_pairs: int
    attention_score: str
    n_random: int
    table: pd.DataFrame
    sanity: dict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return stats.strict_json({"model": self.model, "relation": self.relation, "readout": self.readout,
                                  "n_pairs": self.n_pairs, "attention_score": self.attention_score,
                                  "n_random": self.n_random, "sanity": self.sanity, "notes": self.notes,
                                  "sets": self.table.astype(object).where(self.table.notna(), None).to_dict("records")})


def top_heads(score: np.ndarray, k: int, n_heads: int) -> list[tuple[int, int]]:
    """The k heads with the largest score [layers*heads] (ties: the earlier head), as (layer, head)."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[:k]
    return sorted((int(i) // n_heads, int(i) % n_heads) for i in order)


def layer_matched_sets(heads: list[tuple[int, int]], n_heads: int, n_random: int,
                       rng: np.random.Generator) -> list[list[tuple[int, int]]]:
    """`n_random` random sets with as many heads in each layer as `heads` has, drawn without replacement within
    each layer (a draw may equal `heads` itself: it is part of the null)."""
    per_layer: dict[int, int] = {}
    for layer, _ in heads:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    return [sorted((layer, int(h)) for layer, count in per_layer.items()
                   for h in rng.choice(n_heads, size=count, replace=False)) for _ in range(n_random)]


def _label(heads) -> str:
    return " ".join(f"{layer}-{head}" for layer, head in heads)


def _plan_sets(score: np.ndarray, effects: dict[str, np.ndarray], ks, n_layers: int, n_heads: int, n_random: int,
               seed: int) -> dict[str, list[dict]]:
    """Per kind, the sets to patch: dicts with selection, k, heads and (attention / effect) their random sets."""
    rng = np.random.default_rng(seed)
    plans = {}
    for kind in SET_KINDS:
        sets = []
        for selection, values in (("attention", score), ("effect", effects[kind])):
            for k in ks:
                chosen = top_heads(values, k, n_heads)
                sets.append({"selection": selection, "k": k, "heads": chosen,
                             "random": layer_matched_sets(chosen, n_heads, n_random, rng)})
        sets += [{"selection": "layer", "k": n_heads, "heads": [(layer, h) for h in range(n_heads)], "random": [],
                  "layer": layer} for layer in range(n_layers)]
        plans[kind] = sets
    return plans


def distinct_sets(sets: list[dict]) -> tuple[list[tuple], list[tuple[int, list[int]]]]:
    """(every distinct head set once, in first-seen order; per planned set the column of its chosen set and the
    columns of its random sets). A set is its sorted (layer, head)s: a random draw equal to the chosen set (or to
    another draw) is the same set, patched once, so a tie with the chosen set is decided by identity, never by
    the float rounding of two separate runs; and small layer-matched families (k = 1: the layer's heads) cost no
    more than their distinct sets."""
    column: dict[tuple, int] = {}
    index = lambda heads: column.setdefault(tuple(sorted(heads)), len(column))     # noqa: E731
    layout = [(index(item["heads"]), [index(r) for r in item["random"]]) for item in sets]
    return list(column), layout


def _run_kind(loaded, pairs_info, lm, kind: str, head_sets, max_rows: int, pooling: Pooling = SHARED) -> list[PairRun]:
    """Every pair's raw set values for one kind (see `engine.patch_set_ids`), read out as the single-head
    study reads (`pooling`: how a readout without an LM head pools the final states)."""
    outs = []
    for info in pairs_info:
        readout = None if lm is None else LogitReadout(lm, info["answer_ids"], info["position"])
        outs.append(patch_set_ids(loaded.model if lm is None else lm, *info["ids"], head_sets, (kind,), max_rows,
                                  readout, pooling=pooling))
    return outs


def rank_in_layer(single: np.ndarray, layer: int, head: int, n_heads: int) -> int:
    """The head's rank (1 = largest) among its layer's heads by the single-head effect [layers*heads]; ties
    share the better rank."""
    values = single[layer * n_heads:(layer + 1) * n_heads]
    return int(1 + np.sum(values > values[head]))


def random_set_test(chosen: int, random: list[int], means: np.ndarray) -> dict:
    """The chosen set (column `chosen` of `means`, the mean effect per distinct set) against its random sets:
    p = (1 + b) / (1 + n) with b the random sets at least as large (a draw that is the chosen set itself counts,
    by identity); the random means' 2.5, 50, 95 and 97.5 percentiles; `detectable`: 95th percentile - median, the
    excess over the random sets' median that reaches the one-sided 5% level before correction."""
    random_means = means[random]
    b = int(sum(1 for column, value in zip(random, random_means) if column == chosen or value >= means[chosen]))
    q = np.quantile(random_means, [0.025, 0.5, 0.95, 0.975])
    return {"random_mean": float(random_means.mean()), "random_low": float(q[0]), "random_median": float(q[1]),
            "random_high": float(q[3]), "detectable": float(q[2] - q[1]), "p_random": (1 + b) / (1 + len(random)),
            "n_random": len(random), "n_random_distinct": len(set(random)),
            "random_is_chosen": int(sum(column == chosen for column in random))}


def _set_rows(kind: str, sets: list[dict], layout, per_pair: np.ndarray, single: np.ndarray, n_heads: int,
              groups, n_boot: int, seed: int) -> list[dict]:
    """per_pair [pairs, distinct sets] -> one row per planned set: its effect with a CI, each head's rank within
    its layer by the single-head effect `single` [layers*heads], and (k > 1) the random-set test; k = 1 is a rank
    within the layer (its layer-matched random sets are the layer's other heads), not a test."""
    rows, means = [], per_pair.mean(0)
    for item, (chosen, random) in zip(sets, layout):
        effect = per_pair[:, chosen]
        low, high = stats.bootstrap_ci(effect[:, None], n_boot, seed=seed, groups=groups)
        row = {"kind": kind, "selection": item["selection"], "k": item["k"], "layer": item.get("layer", np.nan),
               "heads": _label(item["heads"]), "effect": float(effect.mean()), "ci_low": float(low[0]),
               "ci_high": float(high[0]), "n_pairs": len(effect)}
        if random:
            row["ranks_in_layer"] = " ".join(f"{l}-{h}:{rank_in_layer(single, l, h, n_heads)}/{n_heads}"
                                             for l, h in item["heads"])
            row.update(random_set_test(chosen, random, means))
            row["test"] = "rank" if item["k"] == 1 else "random sets"
        rows.append(row)
    return rows


def holm_over_sets(table: pd.DataFrame) -> pd.DataFrame:
    """p_holm: Holm's correction over every random-set test in the table (k > 1, both kinds and selections);
    NaN for k = 1 (a rank, not a test) and for whole layers."""
    table = table.copy()
    tested = (table.get("test") == "random sets") if "test" in table else pd.Series(False, index=table.index)
    table["p_holm"] = np.nan
    if tested.any():
        table.loc[tested, "p_holm"] = stats.holm(table.loc[tested, "p_random"].to_numpy())
    return table


def patch_head_sets(model, examples, *, k=(1, 3, 5), n_random: int = N_RANDOM, seed: int = SEED,
                    result: PatchingResult | None = None, attention_scores=None, readout: str = "auto",
                    n_boot: int = N_BOOT, max_pairs: int | None = None, max_rows: int = 512,
                    progress: bool = False, direction=None, data_root=None) -> HeadSetResult:
    """Patch head sets together on the usable pairs of `examples` (see the module docstring).

    result: the single-head study on the same examples (`patch_heads`), whose effects rank heads for (b) and
    whose pairs are used; computed here (noising and denoising only) when not given. attention_scores: as for
    `patch_heads` (a heads table with attrs["score"], or a [layers, heads] array); default: the single-head
    study's clean-run attention source -> target. direction: the probe readout's negation direction ([d_model],
    or a `direction.Direction`).
    data_root: as `patch_heads`'."""
    ks = tuple(k)
    # a direction.Direction (its source names it) or a bare vector [d_model]
    pooling = pooling_for(readout, getattr(direction, "vector", direction), getattr(direction, "source", ""))
    if not ks or any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1 for v in ks):
        raise ValueError(f"k must be positive whole numbers (set sizes), got {list(ks)}")
    if not isinstance(n_random, int) or isinstance(n_random, bool) or n_random < 1:
        raise ValueError(f"n_random must be a positive whole number, got {n_random!r}")
    loaded = as_loaded(model)
    layout = hooks.head_layout(loaded)
    if max(ks) > layout.n_heads * layout.n_layers:
        raise ValueError(f"k={max(ks)} is more heads than this model has ({layout.n_layers * layout.n_heads})")
    if result is None:
        result = patch_heads(loaded, examples, kinds=SET_KINDS, readout=readout, attention_scores=attention_scores,
                             n_boot=n_boot, n_perm=1000, seed=seed, max_pairs=max_pairs, max_rows=max_rows,
                             progress=progress, direction=direction, data_root=data_root)
    if result.method == "attribution":
        raise ValueError("head sets rank heads by their exact single-head effects; the result has estimates only "
                         "(method='attribution'): use method='exact' or 'screen'")
    missing = [kind for kind in SET_KINDS if kind not in result.table]
    if missing:
        raise ValueError(f"the single-head result lacks {missing}: run patch_heads with noising and denoising")
    score, score_name = _ranking_score(attention_scores, result.table, layout.n_layers, layout.n_heads)
    if score is None:
        raise ValueError("no attention score to rank heads by: the pairs have no target word; pass attention_scores")
    pair_set, lm, readout_text = pairs_to_run(loaded, examples, readout, max_pairs, pooling, data_root)
    kept = set(result.pair_ids)
    pairs, infos = [], []
    for pair in pair_set.pairs:
        if pair.id in kept:
            ok, _reason, info = usable(loaded, pair, check_answers=lm is not None)
            if ok:
                pairs.append(pair)
                infos.append(info)
    groups = design.pair_units(pairs)     # frames, crossed with predicates where every pair has one
    # A screened result has exact effects only for the heads it patched (NaN elsewhere): the effect sets are
    # chosen among those, which include the screen's top heads by estimate.
    effects = {kind: np.nan_to_num(result.table[kind].to_numpy(), nan=-np.inf) for kind in SET_KINDS}
    screened = int(np.isfinite(effects["noising"]).sum())
    plans = _plan_sets(score, effects, ks, layout.n_layers, layout.n_heads, n_random, seed)
    rows, sanity_outs, n_distinct = [], [], {}
    for kind, sets in plans.items():
        head_sets, layout_of_sets = distinct_sets(sets)
        n_distinct[kind] = len(head_sets)
        outs = _run_kind(loaded, infos, lm, kind, [list(h) for h in head_sets], max_rows, pooling)
        scale = normalise_all(outs, per_pair_scale=lm is None and pooling.per_pair_scale)
        sanity_outs += outs
        per_pair = np.stack([o.effects[kind] for o in outs])                  # [pairs, distinct sets]
        rows += _set_rows(kind, sets, layout_of_sets, per_pair, result.table[kind].to_numpy(), layout.n_heads,
                          groups, n_boot, seed)
    notes = [f"readout: {readout_text}",
             f"attention sets: the top-k heads by {score_name}; effect sets: the top-k by the single-head effect "
             "of the same kind, chosen on these same pairs (in-sample: the comparison favours them)"
             + (f"; among the {screened} heads the screen patched exactly" if result.method == "screen" else ""),
             f"random sets: {n_random} per chosen set, as many heads in each layer as the chosen set (seed {seed}); "
             "each distinct set is patched once (distinct sets patched: "
             + ", ".join(f"{kind} {n}" for kind, n in n_distinct.items()) + "); p_random = (1 + b) / (1 + n), b = "
             "the random sets whose mean effect is at least the chosen set's (a draw that is the chosen set itself "
             "counts, by identity); p_holm: Holm over every k > 1 comparison in the table",
             f"k = 1 is a rank, not a test: its layer-matched random sets are the {layout.n_heads} heads of its "
             "layer, so p_random is about its rank / heads (ranks_in_layer); ranks_in_layer gives every chosen "
             "head's rank within its layer by its single-head effect of the same kind",
             "detectable: the 95th percentile of the random sets' mean effects minus their median, the excess over "
             "the median a chosen set needs to reach the one-sided 5% level before Holm; a set not rejected is "
             "not distinguishable from random sets (it could detect an excess >= detectable), which does not "
             "show it is no more than random"]
    return HeadSetResult(model=loaded.name, relation=result.relation, readout=readout_text, n_pairs=len(pairs),
                         attention_score=score_name, n_random=n_random, table=holm_over_sets(pd.DataFrame(rows)),
                         sanity=sanity_summary(sanity_outs, scale, lm is not None), notes=notes)
