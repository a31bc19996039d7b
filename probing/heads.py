"""Head scores: how strongly and how reliably each (layer, head) attends from a source word to a target word.

Per example and head we keep three numbers, reduced on the batch in torch (never the whole dataset's
attention tensors):
- `attention`: word-level attention source -> target (mean over source pieces, sum over target pieces);
- `hit`: the target gets strictly more attention than every other candidate (ties are misses). Candidates
  are the example's `candidate_spans`, else every word except the source's, never special tokens;
- `next_word` (negation): the mean, over the example's adjacent word pairs (w, w+1) that do not start in
  the cue, of word-level attention w -> w+1. The dataset's `next_word_baseline` is the mean over examples.

Direction: a causal model cannot attend from "not" to a later word, so for causal models negation is read
backwards (next word -> cue, and w+1 -> w for the baseline). `HeadScores.direction` says which.

`head_table` turns the per-example arrays into one row per head with CIs, a paired test against the
baseline and Holm-corrected p-values.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from probing import stats
from probing.alignment import Layout
from probing.attention import PATH_NAMES, choose_path, read_layers
from probing.examples import Example
from probing.models import LoadedModel
from probing.runner import encode_and_align, length_batches, pad_ids, release_freed_memory


@dataclass
class ExampleScores:
    """Per-example, per-head reductions (plain arrays a notebook user can inspect)."""
    ids: list[str]
    attention: np.ndarray        # (N, L, H) source -> target word-level attention
    hit: np.ndarray              # (N, L, H) bool: target wins the argmax among candidates
    next_word: np.ndarray        # (N, L, H) mean adjacent-pair attention (NaN where not computed)
    nearest_hit: np.ndarray      # (N,) bool: the candidate nearest the source is the target
    first_hit: np.ndarray        # (N,) bool: the first candidate in the text is the target
    n_candidates: np.ndarray     # (N,)
    pairs: list[str] = field(default_factory=list)  # meta["pair"] per example ("" when unpaired)
    attention_path: str = ""     # which attention path produced the numbers (probing.attention.PATH_NAMES)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def concat(parts: list["ExampleScores"]) -> "ExampleScores":
        """Join shards (batches or processes); exact, since every row is one example."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no scored examples to combine")
        return ExampleScores(
            ids=[i for p in parts for i in p.ids],
            **{name: np.concatenate([getattr(p, name) for p in parts])
               for name in ("attention", "hit", "next_word", "nearest_hit", "first_hit", "n_candidates")},
            pairs=[x for p in parts for x in p.pairs],
            attention_path=" + ".join(dict.fromkeys(p.attention_path for p in parts)))


@dataclass
class HeadScores:
    """The result of `score_heads`: one row per head, plus the per-example arrays behind it."""
    model: str
    relation: str
    direction: str
    n_layers: int
    n_heads: int
    table: pd.DataFrame
    examples: ExampleScores
    controls: ExampleScores | None
    skipped: list[str]
    attention_path: str = ""     # which attention path ran (fused reads, or eager output_attentions)

    def top(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The k best heads by `by` (default: selectivity for negation, accuracy for coreference)."""
        return self.table.sort_values(by or main_score(self.relation), ascending=False).head(k)


def main_score(relation: str) -> str:
    """The column that ranks heads: selectivity for negation, accuracy for coreference."""
    return "selectivity" if relation == "negation" else "accuracy"


def direction_for(relation: str, is_causal: bool) -> str:
    """Human-readable direction of the measured relation."""
    if relation == "negation":
        return "next_word->cue" if is_causal else "cue->next_word"
    return "pronoun->antecedent"


def oriented(example: Example, is_causal: bool) -> Example:
    """The example as measured: for a causal model, negation swaps source and target (next word -> cue)."""
    if example.relation == "negation" and is_causal:
        return replace(example, source_span=example.target_span, target_span=example.source_span,
                       candidate_spans=None)
    return example


def _batch_tensors(layouts: list[Layout], width: int, cue_is_target: bool):
    """Index tensors for one batch: source pieces and weights, candidate matrix, targets, words, pair masks."""
    n_rows = len(layouts)
    n_units = max(len(l.units) for l in layouts)
    n_source = max(len(l.source) for l in layouts)
    n_words = max(int(l.words.max()) + 1 for l in layouts)
    # Filled in numpy (cheap element writes), handed to torch once.
    from_index = np.zeros((n_rows, n_source), np.int64)
    from_weights = np.zeros((n_rows, n_source), np.float32)
    to_matrix = np.zeros((n_rows, width, n_units), np.float32)
    unit_mask = np.zeros((n_rows, n_units), bool)
    words = np.full((n_rows, width), -1, np.int64)
    pair_mask = np.zeros((n_rows, max(n_words - 1, 0)), np.float32)
    for row, layout in enumerate(layouts):
        from_index[row, :len(layout.source)] = layout.source
        from_weights[row, :len(layout.source)] = 1.0 / len(layout.source)
        for c, pieces in enumerate(layout.units):
            to_matrix[row, pieces, c] = 1.0
        unit_mask[row, :len(layout.units)] = True
        words[row, :layout.n_pieces] = layout.words
        pair_mask[row, :int(layout.words.max())] = 1.0        # pairs (w, w+1) that exist ...
        cue = layout.target_words if cue_is_target else layout.source_words
        pair_mask[row, [w for w in cue if w < pair_mask.shape[1]]] = 0.0   # ... except those starting in the cue
    targets = np.array([l.target for l in layouts])
    return tuple(torch.from_numpy(a) for a in (from_index, from_weights, to_matrix, unit_mask, targets, words, pair_mask))


def _score_batch(loaded: LoadedModel, layouts, input_ids, relation, renormalize,
                 path: str = "eager") -> dict[str, np.ndarray]:
    """Forward one batch and reduce it to per-example, per-head numbers.

    path "fused": each layer leaves only its source rows and adjacent-word band (`probing.attention`);
    "eager": the full patterns from output_attentions (the reference). Both give the same reads."""
    reverse = relation == "negation" and loaded.is_causal
    ids, mask = pad_ids(input_ids, loaded.tokenizer.pad_token_id)
    tensors = _batch_tensors(layouts, ids.shape[1], reverse)
    device = next(loaded.model.parameters()).device
    from_i, from_w, to_m, unit_mask, targets, words, pair_mask = (t.to(device) for t in tensors)
    layers = read_layers(loaded, ids, mask, from_i, words, path=path, band=relation == "negation",
                         reverse=reverse, renormalize=renormalize)
    n_pairs = pair_mask.sum(-1)
    att, hit, nxt = [], [], []
    for layer in layers:
        per_unit = layer.unit_attention(from_i, from_w, to_m)                # (B, H, C)
        per_unit = per_unit.masked_fill(~unit_mask[:, None, :], float("-inf"))
        on_target = per_unit.gather(-1, targets[:, None, None].expand(-1, per_unit.shape[1], 1))[..., 0]
        others = per_unit.scatter(-1, targets[:, None, None].expand(-1, per_unit.shape[1], 1), float("-inf"))
        att.append(on_target)
        hit.append(on_target > others.max(-1).values)
        if relation == "negation":
            adjacent = layer.adjacent_word_attention(words, reverse=reverse)       # (B, H, W-1)
            summed = (adjacent * pair_mask[:, None, :]).sum(-1)
            nxt.append(torch.where(n_pairs[:, None] > 0, summed / n_pairs.clamp_min(1)[:, None],
                                   torch.full_like(summed, float("nan"))))
        else:
            nxt.append(torch.full_like(on_target, float("nan")))
    return {"attention": torch.stack(att, 1).cpu().numpy(), "hit": torch.stack(hit, 1).cpu().numpy(),
            "next_word": torch.stack(nxt, 1).cpu().numpy()}


def score_examples(loaded: LoadedModel, examples: list[Example], batch_tokens: int = 4096,
                   renormalize: bool = False, progress: bool = False,
                   attention: str = "auto") -> tuple[ExampleScores, list[str]]:
    """Per-example head numbers for examples of one relation; returns them and the skip reasons.

    attention: "auto" (the fused reads where the model supports them, else eager), "fused" or "eager"."""
    if not examples:
        raise ValueError("no examples to score")
    path = choose_path(loaded, attention)
    relations = {e.relation for e in examples}
    if len(relations) != 1:
        raise ValueError(f"examples mix relations {sorted(relations)}; score one relation at a time")
    relation = relations.pop()
    measured = [oriented(e, loaded.is_causal) for e in examples]
    encoded, layouts, skipped = encode_and_align(loaded, measured)
    # Offsets and word ids are spent once the layouts exist; keep only compact piece ids.
    piece_ids = [np.asarray(e.input_ids, dtype=np.int32) for e in encoded]
    del encoded
    usable = [i for i, layout in enumerate(layouts) if layout is not None]
    if not usable:
        raise ValueError(f"none of the {len(examples)} examples could be aligned: {skipped[:3]}")
    batches = length_batches([len(piece_ids[i]) for i in usable], batch_tokens)
    shape = (len(usable), loaded.n_layers, loaded.n_heads)
    result = {"attention": np.zeros(shape, np.float32), "hit": np.zeros(shape, bool),
              "next_word": np.zeros(shape, np.float32)}
    bar = _progress(len(usable), progress)
    for batch in batches:
        rows = [usable[i] for i in batch]
        reduced = _score_batch(loaded, [layouts[r] for r in rows], [piece_ids[r] for r in rows],
                               relation, renormalize, path)
        for name, values in reduced.items():
            result[name][batch] = values
        release_freed_memory()
        bar.update(len(batch))
    bar.close()
    kept_layouts = [layouts[i] for i in usable]
    scores = ExampleScores(
        ids=[measured[i].id for i in usable], **result,
        nearest_hit=np.array([l.nearest == l.target for l in kept_layouts]),
        first_hit=np.array([l.first == l.target for l in kept_layouts]),
        n_candidates=np.array([len(l.units) for l in kept_layouts]),
        pairs=[str(measured[i].meta.get("pair", "")) for i in usable], attention_path=PATH_NAMES[path])
    return scores, skipped


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="ex", leave=False)


def head_table(main: ExampleScores, relation: str, controls: ExampleScores | None = None,
               n_boot: int = 1000, n_perm: int = 10000, seed: int = 0) -> pd.DataFrame:
    """One row per (layer, head): scores, baselines, bootstrap 95% CIs, paired test, Holm-adjusted p."""
    n, n_layers, n_heads = main.attention.shape
    flat = lambda a: a.reshape(len(a), n_layers * n_heads).astype(np.float64)  # noqa: E731
    attention, hit = flat(main.attention), flat(main.hit)
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                          "head": np.tile(np.arange(n_heads), n_layers), "n_examples": n})
    table["mean_attention"] = attention.mean(0)
    table["mean_attention_ci_low"], table["mean_attention_ci_high"] = stats.bootstrap_ci(attention, n_boot, seed=seed)
    table["accuracy"] = hit.mean(0)
    table["accuracy_ci_low"], table["accuracy_ci_high"] = stats.bootstrap_ci(hit, n_boot, seed=seed)
    if relation == "negation":
        next_word = flat(main.next_word)
        table["next_word_baseline"] = stats._nanmean_cols(next_word)
        difference = attention - next_word
        table["selectivity"] = table["mean_attention"] - table["next_word_baseline"]
        table["selectivity_ci_low"], table["selectivity_ci_high"] = stats.bootstrap_ci(difference, n_boot, seed=seed)
        if controls is not None and len(controls):
            _add_control_columns(table, main, controls, flat, n_boot, seed)
        table["p_value"] = stats.sign_flip_pvalue(difference, n_perm, seed=seed)
        table["test"] = "sign-flip: attention > next_word_baseline (paired by example)"
    else:
        table["nearest_candidate_accuracy"] = main.nearest_hit.mean()
        table["first_candidate_accuracy"] = main.first_hit.mean()
        table["chance_accuracy"] = np.mean(1.0 / main.n_candidates)
        difference = hit - main.nearest_hit[:, None].astype(np.float64)
        table["p_value"] = stats.sign_flip_pvalue(difference, n_perm, seed=seed)
        table["test"] = "sign-flip: accuracy > nearest_candidate_accuracy (paired by example)"
    table["p_holm"] = stats.holm(table["p_value"].to_numpy())
    table["significant"] = table["p_holm"] < 0.05
    return table


def _add_control_columns(table, main: ExampleScores, controls: ExampleScores, flat, n_boot, seed) -> None:
    """control_attention (substitute adverb -> next word) and the paired negated-minus-control difference."""
    control_attention = flat(controls.attention)
    table["control_attention"] = control_attention.mean(0)
    by_pair = {p: i for i, p in enumerate(controls.pairs) if p}
    matched = [(i, by_pair[p]) for i, p in enumerate(main.pairs) if p in by_pair]
    if matched:
        rows, ctl_rows = map(list, zip(*matched))
        paired = flat(main.attention)[rows] - control_attention[ctl_rows]
        table["paired_difference"] = paired.mean(0)
        table["paired_difference_ci_low"], table["paired_difference_ci_high"] = stats.bootstrap_ci(paired, n_boot, seed=seed)
        table["n_pairs"] = len(matched)


def score_heads(model: str | LoadedModel | None, examples: list[Example], relation: str | None = None,
                batch_tokens: int = 4096, renormalize: bool = False, n_boot: int = 1000,
                n_perm: int = 10000, seed: int = 0, progress: bool = False, parallel: bool = False) -> HeadScores:
    """Score every head on examples of one relation; controls (meta role "control") feed the control columns.

    parallel=True splits the examples across the processes of an `accelerate launch` run; every process
    gets the same, exactly combined result.
    """
    from probing.models import load_model
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if parallel:
        from probing.parallel import score_examples_parallel as score
    else:
        score = score_examples
    if relation is not None:
        examples = [e for e in examples if e.relation == relation]
        if not examples:
            raise ValueError(f"no examples of relation {relation!r}")
    relation = relation or _single_relation(examples)
    main_examples = [e for e in examples if not e.is_control]
    control_examples = [e for e in examples if e.is_control]
    if not main_examples:
        raise ValueError("every example is a control; nothing to score")
    main, skipped = score(loaded, main_examples, batch_tokens, renormalize, progress)
    controls = None
    if control_examples:
        controls, control_skipped = score(loaded, control_examples, batch_tokens, renormalize, progress)
        skipped += control_skipped
    table = head_table(main, relation, controls, n_boot=n_boot, n_perm=n_perm, seed=seed)
    return HeadScores(model=loaded.name, relation=relation, direction=direction_for(relation, loaded.is_causal),
                      n_layers=loaded.n_layers, n_heads=loaded.n_heads, table=table, examples=main,
                      controls=controls, skipped=skipped, attention_path=main.attention_path)


def _single_relation(examples: list[Example]) -> str:
    relations = sorted({e.relation for e in examples})
    if len(relations) != 1:
        raise ValueError(f"examples mix relations {relations}; pass relation=")
    return relations[0]
