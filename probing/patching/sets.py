"""Head sets, for compensation: patching heads together, against layer-matched random sets of the same size.

Single-head patching cannot show that a head is unused: other heads can make up for it (backup heads, Wang et
al. 2022). So `patch_head_sets` patches together, on every usable pair,
(a) the top-k heads by attention score, (b) the top-k heads by single-head effect (of the same kind), and (c)
each whole layer; and compares (a) and (b) with `n_random` random sets of k heads drawn from the same layers
(as many heads per layer as the chosen set has), for noising and denoising alike.

Per set: the mean effect over pairs with a cluster-bootstrap 95% CI over pairs; against the random sets: their
mean, their 2.5-97.5% range, and the empirical p-value = the share of random sets whose mean effect is at least
as large. The top-k by effect are chosen on the same pairs they are measured on, so their comparison is
in-sample (it favours them); the attention sets are chosen without looking at any effect.

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
from probing.patching.readouts import LogitReadout, normalise_all
from probing.patching.study import PatchingResult, _pairs_to_run, _sanity, patch_heads

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
    selections) the random sets' mean, 2.5-97.5% range and the empirical p-value."""
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


def _run_kind(loaded, pairs_info, lm, kind: str, head_sets, max_rows: int, all_positions: bool = False) -> list[dict]:
    """Every pair's raw set values for one kind (see `engine.patch_set_ids`), read out as the single-head
    study reads (the embedding over the pieces both texts share unless `all_positions`)."""
    outs = []
    for info in pairs_info:
        readout = None if lm is None else LogitReadout(lm, info["answer_ids"], info["position"])
        outs.append(patch_set_ids(loaded.model if lm is None else lm, *info["ids"], head_sets, (kind,), max_rows,
                                  readout, all_positions=all_positions))
    return outs


def _set_rows(kind: str, sets: list[dict], per_pair: np.ndarray, groups, n_boot: int, seed: int) -> list[dict]:
    """per_pair [pairs, all sets in patching order: each set then its random sets] -> one row per set."""
    rows, column = [], 0
    for item in sets:
        effect = per_pair[:, column]
        low, high = stats.bootstrap_ci(effect[:, None], n_boot, seed=seed, groups=groups)
        row = {"kind": kind, "selection": item["selection"], "k": item["k"], "layer": item.get("layer", np.nan),
               "heads": _label(item["heads"]), "effect": float(effect.mean()), "ci_low": float(low[0]),
               "ci_high": float(high[0]), "n_pairs": len(effect)}
        n = len(item["random"])
        if n:
            random_means = per_pair[:, column + 1:column + 1 + n].mean(0)
            row.update(random_mean=float(random_means.mean()), random_low=float(np.quantile(random_means, 0.025)),
                       random_high=float(np.quantile(random_means, 0.975)),
                       p_random=float(np.mean(random_means >= effect.mean())), n_random=n)
        rows.append(row)
        column += 1 + n
    return rows


def patch_head_sets(model, examples, *, k=(1, 3, 5), n_random: int = N_RANDOM, seed: int = SEED,
                    result: PatchingResult | None = None, attention_scores=None, readout: str = "auto",
                    n_boot: int = N_BOOT, max_pairs: int | None = None, max_rows: int = 512,
                    progress: bool = False) -> HeadSetResult:
    """Patch head sets together on the usable pairs of `examples` (see the module docstring).

    result: the single-head study on the same examples (`patch_heads`), whose effects rank heads for (b) and
    whose pairs are used; computed here (noising and denoising only) when not given. attention_scores: as for
    `patch_heads` (a heads table with attrs["score"], or a [layers, heads] array); default: the single-head
    study's clean-run attention source -> target."""
    ks = tuple(k)
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
                             progress=progress)
    if result.method == "attribution":
        raise ValueError("head sets rank heads by their exact single-head effects; the result has estimates only "
                         "(method='attribution'): use method='exact' or 'screen'")
    missing = [kind for kind in SET_KINDS if kind not in result.table]
    if missing:
        raise ValueError(f"the single-head result lacks {missing}: run patch_heads with noising and denoising")
    score, score_name = _ranking_score(attention_scores, result.table, layout.n_layers, layout.n_heads)
    if score is None:
        raise ValueError("no attention score to rank heads by: the pairs have no target word; pass attention_scores")
    pair_set, lm, readout_text = _pairs_to_run(loaded, examples, readout, max_pairs)
    kept = set(result.pair_ids)
    pairs, infos = [], []
    for pair in pair_set.pairs:
        if pair.id in kept:
            ok, _reason, info = usable(loaded, pair, check_answers=lm is not None)
            if ok:
                pairs.append(pair)
                infos.append(info)
    groups = [p.group or p.id for p in pairs]
    # A screened result has exact effects only for the heads it patched (NaN elsewhere): the effect sets are
    # chosen among those, which include the screen's top heads by estimate.
    effects = {kind: np.nan_to_num(result.table[kind].to_numpy(), nan=-np.inf) for kind in SET_KINDS}
    screened = int(np.isfinite(effects["noising"]).sum())
    plans = _plan_sets(score, effects, ks, layout.n_layers, layout.n_heads, n_random, seed)
    rows, sanity_outs = [], []
    for kind, sets in plans.items():
        head_sets = [s for item in sets for s in [item["heads"], *item["random"]]]
        outs = _run_kind(loaded, infos, lm, kind, head_sets, max_rows, readout == "all-positions")
        scale = normalise_all(outs, per_pair_scale=lm is None)
        sanity_outs += outs
        per_pair = np.stack([o["effects"][kind] for o in outs])                  # [pairs, sets]
        rows += _set_rows(kind, sets, per_pair, groups, n_boot, seed)
    notes = [f"readout: {readout_text}",
             f"attention sets: the top-k heads by {score_name}; effect sets: the top-k by the single-head effect "
             "of the same kind, chosen on these same pairs (in-sample: the comparison favours them)"
             + (f"; among the {screened} heads the screen patched exactly" if result.method == "screen" else ""),
             f"random sets: {n_random} per chosen set, as many heads in each layer as the chosen set (seed {seed}); "
             "p_random = share of random sets whose mean effect is at least the chosen set's (a random set can be "
             "the chosen set itself: with k = 1 it is one head of the same layer, so p_random cannot fall much "
             f"below 1/{layout.n_heads})"]
    return HeadSetResult(model=loaded.name, relation=result.relation, readout=readout_text, n_pairs=len(pairs),
                         attention_score=score_name, n_random=n_random, table=pd.DataFrame(rows),
                         sanity=_sanity(sanity_outs, scale, lm is not None), notes=notes)
