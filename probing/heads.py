"""Head scores: how strongly and how reliably each (layer, head) attends from a source word to a target word.

Per example and head we keep a few numbers, reduced on the batch in torch (never the whole dataset's
attention tensors):
- `attention`: word-level attention source -> target: read from the source's LAST piece (the one adjacent to
  what follows; `source_pieces="last"`, default) or averaged over its pieces (`"mean"`, Clark et al.), summed
  over the target's pieces. The same rule reads the attending word of every next-word-baseline pair.
  A span's pieces are those inside it (so "n't" is `'` + `t`, never its host); a coreference mention of
  several words is its last word (`mention="head"`, default) or all of it (`mention="span"`);
- `is_argmax`: the credit the target gets for the argmax among candidates: 1 when it alone gets the most attention,
  1/k when it ties (exactly) with k-1 others, else 0. Candidates are the example's `candidate_spans`, else
  every word holding no source or target piece, never special tokens;
- `nearest_choice`: the same credit for the candidate nearest the source (what a positional head picks);
- `norm_attention`: the norm-based score of Kobayashi et al. (2020) read the same way: sum over the target's
  pieces of ||alpha_st f(x_t)||, f(x_t) = v_t W_O (the head's value vector through its slice of the output
  projection), from the same source pieces, in the same forward pass (`probing.attention.measuring_norms`).
  MPNet, whose attention does not use the interface, gives its values through a hook on its value projection;
  NaN for an architecture that gives neither;
- `next_word_baseline` (negation): the mean, over the example's adjacent word pairs (w, w+1) that do not start
  in the cue's words, of word-level attention w -> w+1. The table's `next_word_baseline` is its mean over
  examples, and `above_baseline` is `mean_attention - next_word_baseline`.

Direction: a causal model cannot attend from "not" to a later word, so for causal models negation is read
backwards (next word -> cue, and w+1 -> w for the baseline). `HeadScores.direction` says which.

Tasks: examples with `candidate_spans` ("candidates") and examples where every word is a candidate
("all-words") are different tasks with different baselines; they are never averaged (`task` column).

`head_table` turns the per-example arrays into one row per task and head with cluster-bootstrap CIs (the unit
is `meta["group"]`, else the example), sign-flip tests against the baseline, Westfall-Young maxT `p_fwer`,
and for coreference the confound columns (agreement oracle, twins, pro-anti gap, nearest-candidate habit)
behind the `flags` column.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from probing.defaults import ALPHA, BATCH_TOKENS, MENTION, MIN_UNITS, N_BOOT, N_PERM, SEED, SOURCE_PIECES
from probing import stats
from probing.alignment import Layout, MENTION_RULES, check_source_pieces, source_weights
from probing.attention import PATH_NAMES, choose_path, read_layers
from probing.controls import adverb_strata, mean_over_adverbs
from probing.examples import Example
from probing.models import LoadedModel, as_loaded, direction_for
from probing.naive import first_content_hit
from probing.runner import encode_and_align, length_batches, pad_ids, release_freed_memory

TASK_ORDER = ("candidates", "all-words")


def task_of(example: Example) -> str:
    """"candidates" when the example names its candidates, else "all-words" (every word competes)."""
    return "candidates" if example.candidate_spans else "all-words"


@dataclass
class ExampleScores:
    """Per-example, per-head reductions (plain arrays a notebook user can inspect)."""
    ids: list[str]
    attention: np.ndarray        # [example, layer, head] source -> target word-level attention
    is_argmax: np.ndarray        # [example, layer, head] float: argmax credit of the target (1, 1/k on a k-way tie, 0)
    next_word_baseline: np.ndarray  # [example, layer, head] mean adjacent-pair attention (NaN where not computed)
    nearest_hit: np.ndarray      # [example] bool: the candidate nearest the source is the target
    first_hit: np.ndarray        # [example] bool: the first candidate in the text is the target
    n_candidates: np.ndarray     # [example]
    pairs: list[str] = field(default_factory=list)  # meta["pair"] per example ("" when unpaired)
    nearest_choice: np.ndarray | None = None         # [example, layer, head] argmax credit of the nearest candidate
    groups: list[str] = field(default_factory=list)  # meta["group"] per example, else its id
    tasks: list[str] = field(default_factory=list)   # task_of per example
    meta: list[dict] = field(default_factory=list)   # each example's meta (strata, twins, stereotypes)
    attention_path: str = ""     # which attention path produced the numbers (probing.attention.PATH_NAMES)
    norm_attention: np.ndarray | None = None   # [example, layer, head] sum_t ||alpha_st f(x_t)|| (NaN: not available)
    target_offset: np.ndarray | None = None    # [example] words from the source to the target (-3: 3 words before)
    first_content_hit: np.ndarray | None = None  # [example] coreference: the first-content-word rule picks the target

    ARRAYS = ("attention", "is_argmax", "next_word_baseline", "nearest_hit", "first_hit", "n_candidates",
              "nearest_choice", "norm_attention", "target_offset", "first_content_hit")
    LISTS = ("ids", "pairs", "groups", "tasks", "meta")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows) -> "ExampleScores":
        """The examples at the given row indices, in that order."""
        rows = list(rows)
        return ExampleScores(**{name: None if getattr(self, name) is None else getattr(self, name)[rows]
                                for name in self.ARRAYS},
                             **{name: [getattr(self, name)[r] for r in rows] for name in self.LISTS})

    @staticmethod
    def concat(parts: list["ExampleScores"]) -> "ExampleScores":
        """Join shards (batches or processes); exact, since every row is one example."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no scored examples to combine")
        return ExampleScores(**{name: None if any(getattr(p, name) is None for p in parts)
                                else np.concatenate([getattr(p, name) for p in parts])
                                for name in ExampleScores.ARRAYS},
                             **{name: [x for p in parts for x in getattr(p, name)] for name in ExampleScores.LISTS},
                             attention_path=" + ".join(dict.fromkeys(p.attention_path for p in parts)))


@dataclass
class HeadScores:
    """The result of `score_heads`: one row per task and head, plus the per-example arrays behind it."""
    model: str
    relation: str
    direction: str
    n_layers: int
    n_heads: int
    table: pd.DataFrame          # every task's rows, with a `task` column
    examples: ExampleScores
    controls: ExampleScores | None
    skipped: list[str]
    mention: str = MENTION
    source_pieces: str = SOURCE_PIECES  # how a source of several pieces is read (alignment.SOURCE_PIECE_RULES)
    resampling_unit: str = "example"
    tasks: dict = field(default_factory=dict)      # per task: counts, baselines, cross-fitted best head
    strata: pd.DataFrame | None = None             # head tables per stratum of meta[key] (`by`, `stratum`)
    attention_path: str = ""     # which attention path ran (fused reads, or eager output_attentions)

    @property
    def main_score(self) -> str:
        return main_score(self.relation, "paired_difference" in self.table)

    @property
    def primary_task(self) -> str:
        """The task with the most examples (the one a single ranking or heatmap shows first)."""
        counts = self.table.groupby("task")["n_examples"].first()
        return str(counts.idxmax())

    def task_table(self, task: str | None = None) -> pd.DataFrame:
        task = task or self.primary_task
        return self.table[self.table["task"] == task].reset_index(drop=True)

    def ranked(self, by: str | None = None, task: str | None = None) -> pd.DataFrame:
        """Every column of one task's table (default: the primary task), best head first by `by` (default: the
        main score)."""
        by = by or self.main_score
        table = self.task_table(task)
        if by not in table:
            raise ValueError(f"by={by!r} is not a column of the head table; columns: {', '.join(table.columns)}")
        return table.sort_values(by, ascending=False)

    def top(self, k: int = 5, by: str | None = None, task: str | None = None) -> pd.DataFrame:
        """The k best heads of one task by `by` (default: the main score), with the few columns a person reads
        first: the head, the score with its CI and corrected p-value, and the baselines it is read against.
        `ranked` (or `.table`) has every column."""
        ranked = self.ranked(by, task).head(k)
        columns = [c for c in dict.fromkeys(["layer", "head", by or self.main_score] + self._read_first())
                   if c in ranked]
        return ranked[columns].reset_index(drop=True)

    def _read_first(self) -> list[str]:
        key = self.main_score
        scored = [key, f"{key}_ci_low", f"{key}_ci_high"]
        if self.relation == "negation":
            return scored + ["paired_p_fwer", "p_fwer", "significant", "mean_attention", "control_attention",
                             "next_word_baseline", "above_baseline", "n_examples"]
        return scored + ["p_fwer", "significant", "mean_attention", "nearest_candidate_accuracy",
                         "agreement_oracle_accuracy", "flags", "n_examples"]

    def to_dict(self) -> dict:
        """Every number, JSON-ready: the settings, each task's counts and baselines, and one record per task
        and head (the per-example arrays stay in `examples` / `controls`)."""
        return {"model": self.model, "relation": self.relation, "direction": self.direction,
                "n_layers": self.n_layers, "n_heads": self.n_heads, "mention": self.mention,
                "source_pieces": self.source_pieces,
                "resampling_unit": self.resampling_unit, "attention_path": self.attention_path,
                "main_score": self.main_score, "n_skipped": len(self.skipped), "tasks": self.tasks,
                "heads": self.table.astype(object).where(self.table.notna(), None).to_dict("records")}


def main_score(relation: str, paired: bool = False) -> str:
    """The column that ranks heads: the paired difference for negation with controls, else above_baseline
    (mean attention minus the next-word baseline); accuracy for coreference."""
    if relation == "negation":
        return "paired_difference" if paired else "above_baseline"
    return "accuracy"


def oriented(example: Example, is_causal: bool) -> Example:
    """The example as measured: for a causal model, negation swaps source and target (next word -> cue)."""
    if example.relation == "negation" and is_causal:
        return replace(example, source_span=example.target_span, target_span=example.source_span,
                       candidate_spans=None)
    return example


def mention_rule(relation: str, mention: str) -> str:
    """The mention rule applied: coreference mentions follow `mention`; negation spans are always whole."""
    if mention not in MENTION_RULES:
        raise ValueError(f"mention must be one of {MENTION_RULES}, got {mention!r}")
    return mention if relation == "coreference" else "span"


def _piece_index(layouts: list[Layout], width: int) -> tuple[np.ndarray, np.ndarray]:
    """What a forward pass must know to read a batch: the source pieces [batch, source_piece] (padded with
    piece 0) and the word number of every piece [batch, pos] (-1 for specials and padding)."""
    n_source = max(len(l.source) for l in layouts)
    from_index = np.zeros((len(layouts), n_source), np.int64)
    words = np.full((len(layouts), width), -1, np.int64)
    for row, layout in enumerate(layouts):
        from_index[row, :len(layout.source)] = layout.source
        words[row, :layout.n_pieces] = layout.words
    return from_index, words


def _batch_tensors(layouts: list[Layout], width: int, cue_is_target: bool, source_pieces: str = SOURCE_PIECES):
    """Index tensors for one batch: source pieces and weights, candidate matrix, target and nearest candidate,
    words, pair masks."""
    n_rows = len(layouts)
    n_units = max(len(l.units) for l in layouts)
    n_words = max(int(l.words.max()) + 1 for l in layouts)
    # Filled in numpy (cheap element writes), handed to torch once.
    from_index, words = _piece_index(layouts, width)
    from_weights = np.zeros(from_index.shape, np.float32)
    to_matrix = np.zeros((n_rows, width, n_units), np.float32)
    unit_mask = np.zeros((n_rows, n_units), bool)
    pair_mask = np.zeros((n_rows, max(n_words - 1, 0)), np.float32)
    for row, layout in enumerate(layouts):
        from_weights[row, :len(layout.source)] = source_weights(len(layout.source), source_pieces)
        for c, pieces in enumerate(layout.units):
            to_matrix[row, pieces, c] = 1.0
        unit_mask[row, :len(layout.units)] = True
        pair_mask[row, :int(layout.words.max())] = 1.0        # pairs (w, w+1) that exist ...
        cue = layout.target_words if cue_is_target else layout.source_words
        pair_mask[row, [w for w in cue if w < pair_mask.shape[1]]] = 0.0   # ... except those starting in the cue
    targets = np.array([l.target for l in layouts])
    nearest = np.array([l.nearest for l in layouts])
    return tuple(torch.from_numpy(a) for a in (from_index, from_weights, to_matrix, unit_mask, targets, nearest,
                                               words, pair_mask))


def argmax_credit(per_unit: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Credit of candidate `unit` for the argmax: 1 if it alone is the maximum, 1/k in an exact k-way tie, else 0.

    per_unit [batch, head, candidate] with -inf for missing candidates; unit [batch] -> [batch, head]."""
    at_max = per_unit == per_unit.max(-1, keepdim=True).values                    # [batch, head, candidate]
    chosen = at_max.gather(-1, unit[:, None, None].expand(-1, per_unit.shape[1], 1))[..., 0]
    return chosen.to(per_unit.dtype) / at_max.sum(-1).to(per_unit.dtype)


def reduce_candidates(per_unit: torch.Tensor, unit_mask, targets, nearest):
    """One layer's word-level attention to each candidate [batch, head, candidate] -> target attention, target credit and
    nearest-candidate credit, each [batch, head]."""
    per_unit = per_unit.masked_fill(~unit_mask[:, None, :], float("-inf"))
    on_target = per_unit.gather(-1, targets[:, None, None].expand(-1, per_unit.shape[1], 1))[..., 0]
    return on_target, argmax_credit(per_unit, targets), argmax_credit(per_unit, nearest)


def reduce_next_word_baseline(adjacent: torch.Tensor, pair_mask) -> torch.Tensor:
    """One layer's adjacent-pair attention [batch, head, word_pair] -> its mean over the pairs kept by pair_mask, [batch, head];
    NaN where no pair is kept."""
    n_pairs = pair_mask.sum(-1)
    summed = (adjacent * pair_mask[:, None, :]).sum(-1)
    return torch.where(n_pairs[:, None] > 0, summed / n_pairs.clamp_min(1)[:, None],
                       torch.full_like(summed, float("nan")))


def forward_reads(loaded: LoadedModel, layouts: list[Layout], input_ids: list, relation: str,
                  renormalize: bool = False, path: str = "eager", norms: bool = False):
    """One forward pass over a batch of encoded texts: per layer, the attention the scorer reads; with
    norms=True, (reads, per layer ||f_h(x_t)|| [batch, head, pos] or None where not available).

    path "fused": each layer leaves only its source rows and adjacent-word band (`probing.attention.LayerRead`);
    "eager": the full patterns from output_attentions (`FullLayer`, the reference). Both give the same reads;
    `score_attention` turns either into numbers. Renormalisation (attention to special tokens dropped) is done
    here, on the reads."""
    reverse = relation == "negation" and loaded.is_causal
    ids, mask = pad_ids(input_ids, loaded.tokenizer.pad_token_id)
    from_index, words = (torch.from_numpy(a).to(next(loaded.model.parameters()).device)
                         for a in _piece_index(layouts, ids.shape[1]))
    norm_grams = None
    if norms:
        from probing.attention import model_grams
        norm_grams = model_grams(loaded.model)
    return read_layers(loaded, ids, mask, from_index, words, path=path, band=relation == "negation",
                       reverse=reverse, renormalize=renormalize, norm_grams=norm_grams)


def _read_device(read) -> torch.device:
    tensor = getattr(read, "attention", None)
    if tensor is None:
        tensor = read.rows if read.rows is not None else read.band
    return tensor.device


def score_attention(layouts: list[Layout], reads: list, relation: str, reverse: bool = False,
                    source_pieces: str = SOURCE_PIECES, norms: list | None = None) -> dict[str, np.ndarray]:
    """Per-example, per-head numbers from one batch's attention reads: pure arithmetic, no model call.

    layouts: the batch's examples laid out on their pieces (`runner.encode_and_align`), in the reads' row
    order; reads: one per layer (`forward_reads`, or `FullLayer`s over attention already computed, as the
    demo does); reverse: negation read backwards (a causal model: next word -> cue); source_pieces: how a
    source of several pieces, and each attending word of the baseline, is read ("last" or "mean").
    Returns `attention`, `is_argmax`, `nearest_choice` and `next_word_baseline`, each [batch, layer, head];
    with `norms` (per layer ||f_h(x_t)|| [batch, head, pos], `forward_reads(norms=True)`) also `norm_attention`,
    the same reading of alpha_st ||f(x_t)||."""
    width = max(l.n_pieces for l in layouts)
    tensors = _batch_tensors(layouts, width, reverse, source_pieces)
    device = _read_device(reads[0])
    from_i, from_w, to_m, unit_mask, targets, nearest, words, pair_mask = (t.to(device) for t in tensors)
    out = {"attention": [], "is_argmax": [], "nearest_choice": [], "next_word_baseline": []}
    if norms is not None:
        out["norm_attention"] = [
            reduce_candidates(layer.weighted_by(norm).unit_attention(from_i, from_w, to_m), unit_mask, targets,
                              nearest)[0] for layer, norm in zip(reads, norms)]
    for layer in reads:
        per_unit = layer.unit_attention(from_i, from_w, to_m)                    # [batch, head, candidate]
        on_target, is_argmax, nearest_choice = reduce_candidates(per_unit, unit_mask, targets, nearest)
        out["attention"].append(on_target)
        out["is_argmax"].append(is_argmax)
        out["nearest_choice"].append(nearest_choice)
        out["next_word_baseline"].append(
            reduce_next_word_baseline(layer.adjacent_word_attention(words, reverse=reverse,
                                                                    source_pieces=source_pieces), pair_mask)
            if relation == "negation" else torch.full_like(on_target, float("nan")))
    return {name: torch.stack(values, 1).cpu().numpy() for name, values in out.items()}


def score_examples(loaded: LoadedModel, examples: list[Example], batch_tokens: int = BATCH_TOKENS,
                   renormalize: bool = False, progress: bool = False, mention: str = MENTION,
                   label: str = "examples", attention: str = "auto", source_pieces: str = SOURCE_PIECES,
                   norms: bool = True) -> tuple[ExampleScores, list[str]]:
    """Per-example head numbers for examples of one relation; returns them and the skip reasons.

    `mention` ("head" or "span") applies to coreference targets and candidates; `label` names the progress bar;
    `attention`: "auto" (the fused reads where the model supports them, else eager), "fused" or "eager";
    `source_pieces`: "last" or "mean" (see the module's docstring); `norms`: also the norm-based attention
    (`norm_attention`; False leaves it NaN and reads no value vectors, at no cost)."""
    check_source_pieces(source_pieces)
    if not examples:
        raise ValueError("no examples to score")
    path = choose_path(loaded, attention)
    relations = {e.relation for e in examples}
    if len(relations) != 1:
        raise ValueError(f"examples mix relations {sorted(relations)}; score one relation at a time")
    relation = relations.pop()
    measured = [oriented(e, loaded.is_causal) for e in examples]
    encoded, layouts, skipped = encode_and_align(loaded, measured, mention_rule(relation, mention))
    # Offsets and word ids are spent once the layouts exist; keep only compact piece ids.
    piece_ids = [np.asarray(e.input_ids, dtype=np.int32) for e in encoded]
    del encoded
    usable = [i for i, layout in enumerate(layouts) if layout is not None]
    if not usable:
        raise ValueError(f"none of the {len(examples)} examples could be aligned: {skipped[:3]}")
    batches = length_batches([len(piece_ids[i]) for i in usable], batch_tokens)
    shape = (len(usable), loaded.n_layers, loaded.n_heads)
    result = {name: np.zeros(shape, np.float32) for name in ("attention", "is_argmax", "nearest_choice",
                                                              "next_word_baseline")}
    result["norm_attention"] = np.full(shape, np.nan, np.float32)   # stays NaN where the norms are not available
    bar = _progress(len(usable), progress, label)
    for batch in batches:
        rows = [usable[i] for i in batch]
        batch_layouts = [layouts[r] for r in rows]
        if norms:
            reads, layer_norms = forward_reads(loaded, batch_layouts, [piece_ids[r] for r in rows], relation,
                                               renormalize, path, norms=True)
        else:
            reads, layer_norms = forward_reads(loaded, batch_layouts, [piece_ids[r] for r in rows], relation,
                                               renormalize, path), None
        reduced = score_attention(batch_layouts, reads, relation, reverse=relation == "negation" and loaded.is_causal,
                                  source_pieces=source_pieces, norms=layer_norms)
        del reads, layer_norms
        for name, values in reduced.items():
            result[name][batch] = values
        release_freed_memory()
        bar.update(len(batch))
    bar.close()
    kept_layouts = [layouts[i] for i in usable]
    kept = [measured[i] for i in usable]
    scores = ExampleScores(
        ids=[e.id for e in kept], **result,
        nearest_hit=np.array([l.nearest == l.target for l in kept_layouts]),
        first_hit=np.array([l.first == l.target for l in kept_layouts]),
        n_candidates=np.array([len(l.units) for l in kept_layouts]),
        target_offset=np.array([l.target_offset for l in kept_layouts]),
        first_content_hit=(np.array([first_content_hit(e, mention) for e in kept]) if relation == "coreference"
                           else None),
        pairs=[str(e.meta.get("pair", "")) for e in kept],
        groups=[str(e.meta.get("group", e.id)) for e in kept],
        tasks=[task_of(e) for e in kept],
        meta=[dict(e.meta) for e in kept], attention_path=PATH_NAMES[path])
    return scores, skipped


def _progress(total: int, enabled: bool, label: str = "examples"):
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="ex", leave=False, desc=label)


# ---- From per-example arrays to one row per head ---------------------------------------------------------

def _flat(values: np.ndarray) -> np.ndarray:
    """[example, layer, head] -> [example, layer*head] float64."""
    return values.reshape(len(values), -1).astype(np.float64)


class _Columns:
    """Adds mean / CI / test columns to one task's table with one resampling setting."""

    def __init__(self, table: pd.DataFrame, n_boot: int, n_perm: int, seed: int):
        self.table, self.n_boot, self.n_perm, self.seed = table, n_boot, n_perm, seed

    def mean_ci(self, name: str, values: np.ndarray, groups) -> None:
        self.table[name] = stats._nanmean_cols(values)
        self.table[f"{name}_ci_low"], self.table[f"{name}_ci_high"] = stats.bootstrap_ci(
            values, self.n_boot, seed=self.seed, groups=groups)

    def test(self, prefix: str, differences: np.ndarray, groups) -> None:
        """`{prefix}p_value` and `{prefix}p_fwer` of mean(differences) > 0 (NaN when there is nothing to test)."""
        if len(differences) == 0:
            self.table[f"{prefix}p_value"], self.table[f"{prefix}p_fwer"] = np.nan, np.nan
            return
        self.table[f"{prefix}p_value"], self.table[f"{prefix}p_fwer"] = stats.sign_flip_tests(
            differences, self.n_perm, seed=self.seed, groups=groups)


def positional_baseline(main: ExampleScores) -> tuple[np.ndarray, str, int | None]:
    """Coreference's relation-free positional baseline on one task's examples: (per example 1.0 where it picks
    the target, else 0.0; its name; the offset it uses, or None).

    candidates: the candidate nearest the source. all-words (every word competes): the nearest *word* is never
    the antecedent, so a nearest-word baseline would be 0 by construction and could not fail; instead the
    baseline is the best fixed-offset head, which always picks the word at the offset from the source (in
    words) where the target sits most often in these examples. The offset is chosen on the same examples, which
    favours the baseline (ties: the offset nearest the source, then the earlier one)."""
    all_words = bool(main.tasks) and all(t == "all-words" for t in main.tasks)
    if not all_words or main.target_offset is None:
        return main.nearest_hit.astype(np.float64), "nearest candidate", None
    values, counts = np.unique(main.target_offset, return_counts=True)
    best = int(min(zip(values, counts), key=lambda vc: (-vc[1], abs(vc[0]), vc[0]))[0])
    return (main.target_offset == best).astype(np.float64), f"best fixed offset ({best:+d} words)", best


def matched_controls(main: ExampleScores, controls: ExampleScores | None) -> tuple[list[int], list[int]]:
    """Rows of main and of controls that share meta["pair"] (a negated sentence and its control)."""
    if controls is None or not len(controls):
        return [], []
    by_pair = {p: i for i, p in enumerate(controls.pairs) if p}
    matched = [(i, by_pair[p]) for i, p in enumerate(main.pairs) if p in by_pair]
    return ([i for i, _ in matched], [j for _, j in matched]) if matched else ([], [])


def twin_pairs(main: ExampleScores) -> list[tuple[int, int]]:
    """Rows of the examples that share meta["twin"], as (clean, corrupt) pairs (exactly two members each)."""
    members: dict[str, list[int]] = {}
    for i, meta in enumerate(main.meta):
        if meta.get("twin") not in (None, ""):
            members.setdefault(str(meta["twin"]), []).append(i)
    pairs = []
    for rows in members.values():
        if len(rows) == 2:
            rows.sort(key=lambda r: main.meta[r].get("twin_role") != "clean")
            pairs.append((rows[0], rows[1]))
    return pairs


def _groups(main: ExampleScores, rows, cluster: bool):
    if not cluster:
        return None     # a second crossed factor (meta.predicate) widens the CIs to the two-way interval
    return stats.clusters([main.groups[r] for r in rows], [main.meta[r].get("predicate") for r in rows])


def _by_item(main: ExampleScores, rows, values: np.ndarray, cluster: bool):
    """values (len(rows), heads) averaged per item (meta.pair; unpaired rows are their own item), so an item
    with both cue forms ("not" and "n't") weighs the same in its frame as an item with one:
    (item values (items, heads), the resampling groups of the items)."""
    items = [main.pairs[r] or main.ids[r] for r in rows] if main.pairs else [main.ids[r] for r in rows]
    means, first = stats.item_means(values, items)
    return means, _groups(main, [rows[k] for k in first], cluster)


def factors_in_words(groups, n: int) -> str:
    """The resampling factors of a test, in words: "46 frames x 29 predicates" (crossed: meta.group x
    meta.predicate), "46 groups" (meta.group), or "255 examples" (no clusters)."""
    if groups is None:
        return f"{n} examples"
    if getattr(groups, "second", None) is not None:
        return (f"{stats.n_units(list(groups), n)} frames x {stats.n_units(groups.second, n)} predicates "
                "(crossed: meta.group x meta.predicate)")
    units = stats.n_units(groups, n)
    return f"{units} groups (meta.group)" if units < n else f"{n} examples"


def design_in_words(groups) -> str:
    """How the sign flips are drawn for these groups (see probing.stats)."""
    if getattr(groups, "second", None) is not None:
        return "crossed sign-flip: frame parts and predicate parts flip independently, maxT over heads"
    return "sign-flip, whole units flip together, maxT over heads"


def task_head_table(main: ExampleScores, relation: str, controls: ExampleScores | None = None, n_boot: int = N_BOOT,
                    n_perm: int = N_PERM, seed: int = SEED, cluster: bool = True) -> pd.DataFrame:
    """One task's table: one row per (layer, head) with scores, baselines, CIs and corrected tests."""
    n, n_layers, n_heads = main.attention.shape
    groups = _groups(main, range(n), cluster)
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                          "head": np.tile(np.arange(n_heads), n_layers), "n_examples": n,
                          "n_units": stats.n_units(groups, n)})
    cols = _Columns(table, n_boot, n_perm, seed)
    attention, is_argmax = _flat(main.attention), _flat(main.is_argmax)
    cols.mean_ci("mean_attention", attention, groups)
    cols.mean_ci("accuracy", is_argmax, groups)
    if relation == "negation":
        baseline = _flat(main.next_word_baseline)
        table["next_word_baseline"] = stats._nanmean_cols(baseline)
        cols.mean_ci("above_baseline", attention - baseline, groups)
        table["above_baseline"] = table["mean_attention"] - table["next_word_baseline"]
        above, item_groups = _by_item(main, list(range(n)), attention - baseline, cluster)
        cols.test("", above, item_groups)
        table["test"] = (f"{design_in_words(item_groups)}: attention > next_word_baseline (paired by example, "
                         f"cue forms averaged per item; {factors_in_words(item_groups, len(above))})")
        rows, control_rows = matched_controls(main, controls)
        if rows:
            table["control_attention"] = _flat(controls.attention)[control_rows].mean(0)
            # Per item (both cue forms averaged), so each item weighs the same in its frame.
            paired, pair_groups = _by_item(main, rows, attention[rows] - _flat(controls.attention)[control_rows],
                                           cluster)
            cols.mean_ci("paired_difference", paired, pair_groups)
            cols.test("paired_", paired, pair_groups)
            table["n_pairs"] = len(rows)
            table["n_items"] = len(paired)
            table["paired_test"] = (f"{design_in_words(pair_groups)}: cue -> next word > control adverb -> next word "
                                    f"(paired by item, cue forms averaged; {factors_in_words(pair_groups, len(paired))})")
    else:
        hit, _name, offset = positional_baseline(main)
        if offset is None:
            table["nearest_candidate_accuracy"] = main.nearest_hit.mean()
            column = "nearest_candidate_accuracy"
        else:
            table["best_offset"], table["best_offset_accuracy"] = offset, hit.mean()
            column = "best_offset_accuracy"
        table["first_candidate_accuracy"] = main.first_hit.mean()
        table["chance_accuracy"] = np.mean(1.0 / main.n_candidates)
        table["agreement_oracle_accuracy"] = agreement_oracle(main)
        cols.test("", is_argmax - hit[:, None], groups)
        table["test"] = f"sign-flip: accuracy > {column} (paired by example)"
        _confound_columns(cols, main, cluster)
    table["p_holm"] = stats.holm(table["p_value"].to_numpy())
    fwer = "paired_p_fwer" if "paired_p_fwer" in table else "p_fwer"
    table["significant"] = table[fwer] < ALPHA
    _norm_columns(cols, main, groups)
    return table


def _norm_columns(cols: _Columns, main: ExampleScores, groups) -> None:
    """`norm_attention` with its CI, last (every other column keeps its place and value); NaN when the model's
    attention gives no value-vector norms (neither our attention function nor a known inline module), said
    in `norm_attention_note`."""
    norm = main.norm_attention
    if norm is None or np.isnan(norm).all():
        for name in ("norm_attention", "norm_attention_ci_low", "norm_attention_ci_high"):
            cols.table[name] = np.nan
        cols.table["norm_attention_note"] = ("not available: this model's attention goes neither through the "
                                             "registered attention function nor through a known inline "
                                             "attention module, where the value vectors are read")
        return
    cols.mean_ci("norm_attention", _flat(norm), groups)


def agreement_oracle(main: ExampleScores) -> float:
    """What pronoun agreement alone scores: 1 where it decides (meta agreement_decides), chance 1/k where it
    does not; NaN when no example says."""
    said = [i for i, m in enumerate(main.meta) if "agreement_decides" in m]
    if not said:
        return float("nan")
    return float(np.mean([1.0 if main.meta[i]["agreement_decides"] else 1.0 / main.n_candidates[i] for i in said]))


def _confound_columns(cols: _Columns, main: ExampleScores, cluster: bool) -> None:
    """Twin consistency, pro-anti gap and the tests behind the agreement / nearest / stereotype flags."""
    table = cols.table
    is_argmax = _flat(main.is_argmax)
    chance = 1.0 / main.n_candidates[:, None]
    # nearest: where the nearest candidate is wrong, does the head still pick it more often than chance?
    wrong_nearest = np.flatnonzero(~main.nearest_hit)
    if main.nearest_choice is not None and len(wrong_nearest):
        choice = _flat(main.nearest_choice)[wrong_nearest]
        table["nearest_choice_rate"] = choice.mean(0)
        cols.test("nearest_", choice - chance[wrong_nearest], _groups(main, wrong_nearest, cluster))
    # agreement: right where agreement decides, yet not above chance on twins (where it cannot decide).
    decided = np.flatnonzero([bool(m.get("agreement_decides", False)) for m in main.meta])
    pairs = twin_pairs(main)
    twin_rows = np.array(sorted({r for p in pairs for r in p}), dtype=int)
    if len(decided):
        table["agreement_decided_accuracy"] = is_argmax[decided].mean(0)
        cols.test("agreement_decided_", is_argmax[decided] - chance[decided], _groups(main, decided, cluster))
    if len(twin_rows):
        table["twin_accuracy"] = is_argmax[twin_rows].mean(0)
        cols.test("twin_", is_argmax[twin_rows] - chance[twin_rows], _groups(main, twin_rows, cluster))
        both = np.stack([is_argmax[a] * is_argmax[b] for a, b in pairs])   # [pair, layer*head]: right on both twins
        cols.mean_ci("twin_consistency", both, _groups(main, [a for a, _ in pairs], cluster))
        table["n_twin_pairs"] = len(pairs)
    _pro_anti_columns(cols, main, pairs, cluster)
    table["flags"] = head_flags(table)


def _pro_anti_columns(cols: _Columns, main: ExampleScores, pairs, cluster: bool) -> None:
    """pro - anti accuracy gap: paired over twins (pro, anti) where the data links them, else unpaired."""
    side = np.array([str(m.get("stereotype", "")) for m in main.meta])
    if not ((side == "pro").any() and (side == "anti").any()):
        return
    is_argmax, table = _flat(main.is_argmax), cols.table
    linked = [(a, b) if side[a] == "pro" else (b, a) for a, b in pairs if {side[a], side[b]} == {"pro", "anti"}]
    if linked:
        gaps = np.stack([is_argmax[p] - is_argmax[q] for p, q in linked])
        groups = _groups(main, [p for p, _ in linked], cluster)
        cols.mean_ci("pro_anti_gap", gaps, groups)
        cols.test("pro_anti_", gaps, groups)
        table["n_pro_anti_pairs"] = len(linked)
        return
    # Unpaired: the gap of the two means, a cluster bootstrap CI, and a label-permutation test (within groups).
    rows = np.flatnonzero(np.isin(side, ["pro", "anti"]))
    groups = _groups(main, rows, cluster)
    table["pro_anti_gap"] = is_argmax[side == "pro"].mean(0) - is_argmax[side == "anti"].mean(0)
    table["pro_anti_gap_ci_low"], table["pro_anti_gap_ci_high"] = stats.gap_bootstrap_ci(
        is_argmax[rows], side[rows] == "pro", cols.n_boot, seed=cols.seed, groups=groups)
    table["pro_anti_p_value"], table["pro_anti_p_fwer"] = stats.label_permutation_tests(
        is_argmax[rows], side[rows] == "pro", cols.n_perm, seed=cols.seed, groups=groups)
    table["n_pro_anti_pairs"] = 0


def head_flags(table: pd.DataFrame) -> list[str]:
    """`agreement`, `nearest`, `stereotype` (";"-joined) from the corrected tests, never from point values.

    - nearest: where the nearest candidate is wrong, the head picks it more often than chance (p_fwer < .05);
    - agreement: above chance where agreement decides (p_fwer < .05) and not above chance on twins;
    - stereotype: pro - anti accuracy gap above 0 (p_fwer < .05)."""
    def passes(column):
        return table[column].to_numpy() < ALPHA if column in table else np.zeros(len(table), bool)
    nearest = passes("nearest_p_fwer")
    agreement = passes("agreement_decided_p_fwer") & ("twin_p_fwer" in table) & ~passes("twin_p_fwer")
    stereotype = passes("pro_anti_p_fwer")
    return [";".join(name for name, on in (("agreement", a), ("nearest", n), ("stereotype", s)) if on)
            for a, n, s in zip(agreement, nearest, stereotype)]


def head_table(main: ExampleScores, relation: str, controls: ExampleScores | None = None,
               n_boot: int = N_BOOT, n_perm: int = N_PERM, seed: int = SEED, cluster: bool = True) -> pd.DataFrame:
    """Every task's table (see `task_head_table`), stacked with a `task` column; tasks are never averaged."""
    tables = []
    for task in _tasks(main):
        rows = [i for i, t in enumerate(main.tasks) if t == task]
        table = task_head_table(main.subset(rows), relation, controls, n_boot, n_perm, seed, cluster)
        table.insert(0, "task", task)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _tasks(main: ExampleScores) -> list[str]:
    present = set(main.tasks)
    if len(main.tasks) != len(main):
        raise ValueError("every scored example needs its task (see task_of)")
    return [t for t in TASK_ORDER if t in present] + sorted(present - set(TASK_ORDER))


def main_values(main: ExampleScores, relation: str, controls: ExampleScores | None):
    """The per-example (or per-pair) values behind the main score, and their rows in main: (values, rows)."""
    attention = _flat(main.attention)
    if relation == "negation":
        rows, control_rows = matched_controls(main, controls)
        if rows:
            return attention[rows] - _flat(controls.attention)[control_rows], rows
        return attention - _flat(main.next_word_baseline), list(range(len(main)))
    return _flat(main.is_argmax), list(range(len(main)))


def task_summaries(main: ExampleScores, relation: str, controls: ExampleScores | None = None,
                   n_perm: int = N_PERM, seed: int = SEED, cluster: bool = True) -> dict:
    """Per task: counts, resampling units, the cross-fitted best head, and how many heads pass p_fwer < .05
    under each resampling: "clustered" (the design's test: crossed frame x predicate where examples carry
    meta.predicate, else whole meta.group units), "frame_only" (meta.group alone; present only where the
    design is crossed, to show what ignoring the predicates claims) and "by_example" (examples as independent).
    Negation values are averaged per item first (both cue forms of an item count once in its frame)."""
    n_layers, n_heads = main.attention.shape[1:]
    out = {}
    for task in _tasks(main):
        sub = main.subset([i for i, t in enumerate(main.tasks) if t == task])
        values, rows = main_values(sub, relation, controls)
        if relation == "negation":      # the values are differences already; one row per item
            values, design = _by_item(sub, rows, values, True)
            differences = values
        else:                           # accuracy against the positional baseline, per example
            design = _groups(sub, rows, True)
            differences = values - positional_baseline(sub)[0][rows, None]
        groups = list(design)
        best = stats.cross_fitted_best(values, groups if cluster else None, seed=seed)
        name = lambda i: f"{i // n_heads}-{i % n_heads}"  # noqa: E731
        counts = {}
        crossed = getattr(design, "second", None) is not None
        for label, grouping in (("clustered", design), ("frame_only", groups), ("by_example", None)):
            if (label != "by_example" and not cluster) or (label == "frame_only" and not crossed):
                continue
            _, p_fwer = stats.sign_flip_tests(differences, n_perm, seed=seed, groups=grouping)
            counts[label] = int((p_fwer < ALPHA).sum())
        out[task] = {
            "n_examples": len(sub), "n_scored_units": len(differences),
            "n_units": stats.n_units(groups if cluster else None, len(differences)),
            "factors": factors_in_words(design if cluster else None, len(differences)),
            "test_design": design_in_words(design if cluster else None),
            "resampling_unit": "meta.group" if cluster and any(g != i for g, i in zip(sub.groups, sub.ids))
            else "example",
            "best_head_in_sample": {"head": name(best["in_sample_best"]), "score": best["in_sample_score"]},
            "best_head_cross_fitted": {"score": best["score"], "chosen_on_each_half": [name(c) for c in best["chosen"]]},
            "n_heads_p_fwer_below_0.05": counts,
            "p_value_floor": 1.0 / (n_perm + 1),
        }
    return out


def strata_table(main: ExampleScores, relation: str, keys: list[str], controls: ExampleScores | None = None,
                 n_boot: int = N_BOOT, n_perm: int = N_PERM, seed: int = SEED, cluster: bool = True) -> pd.DataFrame | None:
    """Head tables for each value of meta[key], for each key (columns `by` and `stratum` in front).

    Examples without the key are left out of that key's strata; each stratum has its own corrected tests."""
    tables = []
    for key in keys:
        values = [m.get(key) for m in main.meta]
        for value in sorted({str(v) for v in values if v is not None}):
            rows = [i for i, v in enumerate(values) if v is not None and str(v) == value]
            table = head_table(main.subset(rows), relation, controls, n_boot, n_perm, seed, cluster)
            table.insert(0, "stratum", value)
            table.insert(0, "by", key)
            tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else None


DEFAULT_STRATA = ("cue_form", "next_is_predicate", "category", "stereotype", "type")


def score_examples_parallel(loaded: LoadedModel, examples: list[Example], batch_tokens: int = BATCH_TOKENS,
                            renormalize: bool = False, progress: bool = False, mention: str = MENTION,
                            label: str = "examples", source_pieces: str = SOURCE_PIECES) -> tuple[ExampleScores, list[str]]:
    """`score_examples` over this process's shard of an `accelerate launch` run, gathered from every process in
    rank order (the original order); the same return value, exactly, since every row is one example."""
    from probing.parallel import map_shards
    parts = map_shards(lambda shard, show: score_examples(loaded, shard, batch_tokens, renormalize, show,
                                                          mention=mention, label=label, source_pieces=source_pieces),
                       examples, progress)
    scores = ExampleScores.concat([p[0] for p in parts])
    skipped = [reason for p in parts for reason in p[1]]
    return scores, skipped


def score_heads(model: str | LoadedModel | None, examples: list[Example], *, relation: str | None = None,
                batch_tokens: int = BATCH_TOKENS, renormalize: bool = False, n_boot: int = N_BOOT,
                n_perm: int = N_PERM, seed: int = SEED, progress: bool = False, parallel: bool = False,
                mention: str = MENTION, by: list[str] | None = None, cluster: bool = True,
                source_pieces: str = SOURCE_PIECES) -> HeadScores:
    """Score every head on examples of one relation; controls (meta role "control") feed the control columns.

    mention: "head" (a multi-word coreference mention is its last word) or "span" (the whole mention).
    source_pieces: "last" (a source of several pieces is read from its last piece) or "mean" (averaged).
    by: meta keys to stratify by, besides the default ones present in the data (cue form, whether the next
    word is the negated predicate, category, stereotype, type). cluster=False resamples examples even where
    they carry `meta.group`. parallel=True splits the examples across the processes of an `accelerate launch`
    run; every process gets the same, exactly combined result.
    """
    # Every option is checked before the model loads or runs: a typo costs a message, not a scoring run.
    _check_options(batch_tokens=batch_tokens, n_boot=n_boot, n_perm=n_perm, seed=seed)
    mention_rule("coreference", mention)
    check_source_pieces(source_pieces)
    if relation is not None:
        examples = [e for e in examples if e.relation == relation]
        if not examples:
            raise ValueError(f"no examples of relation {relation!r}")
    relation = relation or _single_relation(examples)
    main_examples = [e for e in examples if not e.is_control]
    control_examples = [e for e in examples if e.is_control]
    if not main_examples:
        raise ValueError("every example is a control; nothing to score")
    missing = [k for k in by or [] if not any(k in e.meta for e in main_examples)]
    if missing:
        raise ValueError(f"--by {', '.join(missing)}: no example's meta has this key")
    loaded = as_loaded(model)
    score = score_examples_parallel if parallel else score_examples
    main, skipped = score(loaded, main_examples, batch_tokens, renormalize, progress, mention=mention,
                          label="examples", source_pieces=source_pieces)
    controls = None
    if control_examples:
        controls, control_skipped = score(loaded, control_examples, batch_tokens, renormalize, progress,
                                          mention=mention, label="controls", source_pieces=source_pieces)
        skipped += control_skipped
    by_adverb = adverb_strata(main, controls, relation, head_table, n_boot=n_boot, n_perm=n_perm, seed=seed,
                              cluster=cluster)
    controls = mean_over_adverbs(controls)     # several controls per item: their mean is the item's control
    table = head_table(main, relation, controls, n_boot=n_boot, n_perm=n_perm, seed=seed, cluster=cluster)
    keys = list(dict.fromkeys([k for k in DEFAULT_STRATA if any(k in m for m in main.meta)] + list(by or [])))
    strata = strata_table(main, relation, keys, controls, n_boot=n_boot, n_perm=n_perm, seed=seed, cluster=cluster)
    strata = strata if by_adverb is None else pd.concat([s for s in (strata, by_adverb) if s is not None],
                                                      ignore_index=True)
    tasks = task_summaries(main, relation, controls, n_perm=n_perm, seed=seed, cluster=cluster)
    unit = "meta.group" if any(t["resampling_unit"] == "meta.group" for t in tasks.values()) else "example"
    return HeadScores(model=loaded.name, relation=relation, direction=direction_for(relation, loaded.is_causal),
                      n_layers=loaded.n_layers, n_heads=loaded.n_heads, table=table, examples=main,
                      controls=controls, skipped=skipped, mention=mention_rule(relation, mention),
                      source_pieces=source_pieces,
                      resampling_unit=unit, tasks=tasks, strata=strata, attention_path=main.attention_path)


def _check_options(**counts: int) -> None:
    """batch_tokens, n_boot, n_perm must be positive whole numbers, seed a whole number (bool is refused)."""
    for name, value in counts.items():
        whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not whole or (name != "seed" and value < 1):
            raise ValueError(f"{name} must be a {'whole' if name == 'seed' else 'positive whole'} number, "
                             f"got {value!r}")


def _single_relation(examples: list[Example]) -> str:
    relations = sorted({e.relation for e in examples})
    if len(relations) != 1:
        raise ValueError(f"examples mix relations {relations}; pass relation=")
    return relations[0]
