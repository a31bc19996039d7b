"""The batched patching engine: every head's patched runs of one pair, in one batch, and `patch_pair`.

Head output `z[l, h]`: head h's slice of the input to layer l's attention output projection (`probing.hooks`).
Effects of head (l, h) on a pair: noising = 1 - m(clean run with z[l, h] from the corrupt run at every
position) (necessity); denoising = m(corrupt run with z[l, h] from the clean run) (sufficiency). The pattern
variants swap only the head's attention probabilities (its values stay the run's own): the whole pattern
(`pattern_*`), or only the source word's query rows (`row_*`: where the head looks *from* "not" / the pronoun).

Sanity checks in every pair: patching each run with its own z (all heads) and own patterns gives exactly 0;
patching the hidden states entering the first layer from the other run gives denoising 1 +- 1e-5.

The two texts have the same number of pieces, so there is no padding, and batch row r carries its own edit
(`probing.hooks.HeadPatch`). A row that edits layer l starts at layer l from the unpatched run's hidden states
there (the layers before l would compute exactly those: about half the work saved).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from probing import attention as attention_function, hooks
from probing.models import as_loaded
from probing.patching.pairs import Pair, PairSet, _span_pieces, minimal_pair, usable
from probing.patching.readouts import (LogitReadout, language_model, normalise, pooled_positions, run_readout,
                                       value_function)

KINDS = ("noising", "denoising", "pattern_noising", "pattern_denoising", "row_noising", "row_denoising")
SANITY_TOLERANCE = 1e-5
LOGIT_SANITY_TOLERANCE = 1e-3    # in logits: see study.patch_heads


def check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    return kinds


# ---- Which rows one pair's batch holds ------------------------------------------------------------------

@dataclass(frozen=True)
class _Row:
    kind: str         # one of KINDS, or a sanity row
    layer: int        # the layer the row edits (a set's: its first layer, where the row starts)
    head: int
    run: int          # the run the row starts from: 0 clean, 1 corrupt; its patches take the other run's values
    heads: tuple[tuple[int, int], ...] | None = None    # a head set's (layer, head)s patched together (z kinds)

    def patched(self) -> tuple[tuple[int, int], ...]:
        """The (layer, head)s whose z this row takes from the other run: its set, or its one head."""
        return self.heads if self.heads is not None else ((self.layer, self.head),)


SANITY_ROWS = 3      # own activations from clean, own activations from corrupt, clean embeddings in corrupt


def _all_heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def _plan(n_layers: int, n_heads: int, kinds, heads=None) -> list[_Row]:
    """Every (kind, layer, head) row (only `heads` when given), then the sanity rows. Noising rows start from
    clean, denoising from corrupt; the own-run rows from each run; the embedding check from corrupt."""
    heads = _all_heads(n_layers, n_heads) if heads is None else heads
    rows = [_Row(kind, layer, head, 1 if kind.endswith("denoising") else 0)
            for kind in kinds for layer, head in heads]
    return rows + [_Row("sanity_own", -1, -1, 0), _Row("sanity_own", -1, -1, 1),
                   _Row("sanity_embeddings", -1, -1, 1)]


def _chunks(rows: list[_Row], max_rows: int) -> list[tuple[int, list[int]]]:
    """(the layer the rows start at, row indices): the patch rows grouped by the layer they edit, at most
    `max_rows` at once; the sanity rows run whole (from layer 0) as their own small batch (the own-pattern row
    edits every layer's pattern)."""
    by_layer: dict[int, list[int]] = {}
    for index, row in enumerate(rows[:-SANITY_ROWS]):
        by_layer.setdefault(row.layer, []).append(index)
    chunks = [(layer, indices[start:start + max_rows]) for layer, indices in by_layer.items()
              for start in range(0, len(indices), max_rows)]
    return chunks + [(0, list(range(len(rows) - SANITY_ROWS, len(rows))))]


# ---- The edits of one chunk -----------------------------------------------------------------------------

def _as_patch(layer: int, items: list, query=None) -> hooks.HeadPatch:
    """(batch row, head, value) triples of one layer as one HeadPatch."""
    return hooks.HeadPatch(layer=layer, rows=torch.tensor([i[0] for i in items]),
                           heads=torch.tensor([i[1] for i in items]), values=torch.stack([i[2] for i in items]),
                           query=query)


def _chunk_patches(rows: list[_Row], z: dict, patterns: dict, source: torch.Tensor, n_layers: int, n_heads: int):
    """(z patches, pattern patches) for one chunk of rows: z [2, pos, head, d_head] and patterns [2, head, q, k]
    per layer are the unpatched runs'; pattern patches are whole patterns or the source word's query rows."""
    z_rows: dict[int, list] = {}
    pattern_rows: dict[tuple[int, bool], list] = {}      # (layer, source rows only) -> items
    for local, row in enumerate(rows):
        other = 1 - row.run
        if row.kind in ("noising", "denoising"):
            for layer, head in row.patched():
                z_rows.setdefault(layer, []).append((local, head, z[layer][other, :, head]))
        elif row.kind in ("pattern_noising", "pattern_denoising"):
            pattern_rows.setdefault((row.layer, False), []).append(
                (local, row.head, patterns[row.layer][other, row.head]))
        elif row.kind in ("row_noising", "row_denoising"):
            pattern_rows.setdefault((row.layer, True), []).append(
                (local, row.head, patterns[row.layer][other, row.head][source]))
        elif row.kind == "sanity_own":
            # every head of every layer gets the run's own z and own pattern
            for layer in range(n_layers):
                for head in range(n_heads):
                    z_rows.setdefault(layer, []).append((local, head, z[layer][row.run, :, head]))
                    pattern_rows.setdefault((layer, False), []).append((local, head, patterns[layer][row.run, head]))
    z_patches = [_as_patch(layer, items) for layer, items in z_rows.items()]
    pattern_patches = [_as_patch(layer, items, source if only_source else None)
                       for (layer, only_source), items in pattern_rows.items()]
    return z_patches, pattern_patches


# ---- One pair -------------------------------------------------------------------------------------------

@dataclass
class _Base:
    """The unpatched run of (clean, corrupt): its readout output and what it left in the caches."""
    output: torch.Tensor
    z: dict[int, torch.Tensor]                 # layer -> [2, pos, head, d_head]
    patterns: dict[int, torch.Tensor]          # layer -> [2, head, q, k]
    layer_inputs: dict[int, torch.Tensor]      # layer -> the hidden states entering it  # [2, pos, d_model]
    norms: list[torch.Tensor] | None = None    # per layer ||f_h(x_t)|| [2, head, pos]; None: not available


def _base_run(module, ids: torch.Tensor, readout: LogitReadout | None) -> _Base:
    weights = attention_function.head_output_weights(hooks.head_layout(module))
    with hooks.cache_z(module) as z, hooks.cache_pattern(module) as patterns, \
            hooks.cache_layer_inputs(module) as layer_inputs, attention_function.measuring_norms(weights, module) as norms:
        output = run_readout(module, ids, readout)
    return _Base(output, z, patterns, layer_inputs, norms.norms if len(norms.norms) == len(weights) else None)


def _source_to_target(patterns: torch.Tensor, source: list[int], target: list[int]) -> tuple[np.ndarray | None, bool]:
    """(the clean run's source -> target reading of `patterns` [layer, head, q, k] (mean over the source's
    pieces, sum over the target's), [layers, heads] or None without a target; whether it was read backwards)."""
    source_pattern = patterns[:, :, source].mean(2)                                              # [L, H, k]
    reading = source_pattern[:, :, target].sum(-1).numpy() if target else None
    reversed_ = bool(target) and min(target) > max(source) and not patterns.triu(1).any()
    if reversed_:
        # A decoder cannot look ahead (all 0 above the diagonal): read the later word -> the source instead,
        # the direction the head scorer measures (negation: next word -> cue), not a row of zeros.
        reading = patterns[:, :, target].mean(2)[:, :, source].sum(-1).numpy()
    return reading, reversed_


def _start(module, layer: int, chunk: list[_Row], base: _Base):
    """How a chunk's batch enters the model: from `layer` on with the unpatched hidden states there, or whole
    (layer 0), where the embedding check's rows get the clean run's hidden states entering layer 0."""
    if layer > 0:
        return hooks.start_at_layer(module, layer, base.layer_inputs[layer][[r.run for r in chunk]])
    embed_rows = [i for i, r in enumerate(chunk) if r.kind == "sanity_embeddings"]
    return hooks.replace_layer_input(module, 0, torch.tensor(embed_rows, dtype=torch.long),
                                     base.layer_inputs[0][0].expand(len(embed_rows), -1, -1))


def _patched_values(module, ids, rows: list[_Row], base: _Base, source: list[int], max_rows: int,
                    readout: LogitReadout | None, value) -> torch.Tensor:
    """Every row's readout value [rows] (float64), chunk by chunk."""
    layout = hooks.head_layout(module)
    source_t = torch.tensor(source)
    values = torch.empty(len(rows), dtype=torch.float64)
    for layer, indices in _chunks(rows, max_rows):
        chunk = [rows[i] for i in indices]
        z_patches, pattern_patches = _chunk_patches(chunk, base.z, base.patterns, source_t,
                                                    layout.n_layers, layout.n_heads)
        with hooks.replace_z(module, z_patches), hooks.replace_pattern(module, pattern_patches), \
                _start(module, layer, chunk, base):
            values[indices] = value(run_readout(module, ids[[r.run for r in chunk]], readout)).cpu()
    return values


def _patch_ids(module, clean_ids: list[int], corrupt_ids: list[int], source: list[int], target: list[int],
               kinds, max_rows: int, readout: LogitReadout | None = None, heads=None,
               all_positions: bool = False) -> dict:
    """The batched core: one base run of both texts (caching z, patterns and layer inputs), then every head's
    patched runs.

    Returns raw readout values v (embedding: <e(run), e(clean) - e(corrupt)>; logits: the logit difference):
    `values[kind]` [layers, heads] of the patched runs, `clean`/`corrupt` of the unpatched runs and the sanity
    runs' values; `readouts.normalise` turns them into effects. heads: only these (layer, head)s are patched
    (the screen's confirmation); the others' values are NaN."""
    started = time.perf_counter()
    layout = hooks.head_layout(module)
    ids = torch.tensor([clean_ids, corrupt_ids], device=next(module.parameters()).device)
    base = _base_run(module, ids, readout)
    value, base_values, distance = value_function(base.output, readout,
                                                  pooled_positions(clean_ids, corrupt_ids, all_positions))
    heads = _all_heads(layout.n_layers, layout.n_heads) if heads is None else list(heads)
    rows = _plan(layout.n_layers, layout.n_heads, kinds, heads)
    values = _patched_values(module, ids, rows, base, source, max_rows, readout, value)
    n, where = len(heads), tuple(np.array(heads, dtype=int).reshape(-1, 2).T)
    by_kind = {}
    for i, kind in enumerate(kinds):
        by_kind[kind] = np.full((layout.n_layers, layout.n_heads), np.nan)
        by_kind[kind][where] = values[i * n:(i + 1) * n].numpy()
    return {"values": by_kind, "clean": float(base_values[0]), "corrupt": float(base_values[1]),
            "own_clean": float(values[-3]), "own_corrupt": float(values[-2]), "embedding": float(values[-1]),
            "distance": distance, **_summaries(base, source, target, layout.n_layers),
            "seconds": time.perf_counter() - started, "method": "exact"}


def _layout_size(module) -> tuple[int, int]:
    layout = hooks.head_layout(module)
    return layout.n_layers, layout.n_heads


def _summaries(base: _Base, source: list[int], target: list[int], n_layers: int) -> dict:
    """The clean run's attention from the source word (to the target, and to every piece)."""
    clean_patterns = torch.stack([base.patterns[l][0] for l in range(n_layers)]).float()   # [L, H, q, k]
    source_pattern = clean_patterns[:, :, source].mean(2)                                        # [L, H, k]
    attention, reversed_ = _source_to_target(clean_patterns, source, target)
    norm_attention = None
    if getattr(base, "norms", None) is not None and target:
        # Kobayashi et al.'s alpha_st ||f(x_t)||, read exactly as the weights are (same pieces, same direction)
        clean_norms = torch.stack([n[0] for n in base.norms]).cpu()                               # [L, H, k]
        norm_attention, _ = _source_to_target(clean_patterns * clean_norms[:, :, None, :], source, target)
    return {"attention": attention, "attention_reversed": reversed_, "norm_attention": norm_attention,
            "source_pattern": source_pattern.numpy()}


def set_rows(head_sets, kinds=("noising", "denoising")) -> list[_Row]:
    """One row per (kind, head set), then the sanity rows: a set's heads take the other run's z together, in one
    row that starts at the set's first layer. Only the z kinds (noising, denoising)."""
    bad = [k for k in kinds if k not in ("noising", "denoising")]
    if bad or not head_sets or any(not heads for heads in head_sets):
        raise ValueError(f"head sets patch z only (noising, denoising), and each set needs a head; got kinds "
                         f"{list(kinds)} and {len(head_sets)} sets")
    rows = [_Row(kind, min(layer for layer, _ in heads), -1, 1 if kind == "denoising" else 0, tuple(heads))
            for kind in kinds for heads in head_sets]
    return rows + _plan(0, 0, ())


def patch_set_ids(module, clean_ids: list[int], corrupt_ids: list[int], head_sets, kinds=("noising", "denoising"),
                  max_rows: int = 512, readout: LogitReadout | None = None, all_positions: bool = False) -> dict:
    """As `_patch_ids`, with one row per head set: `values[kind]` [sets] of the runs where every head of a set
    takes the other run's z at once (sets: lists of (layer, head)); `readouts.normalise` turns them into
    effects, and a one-head set gives exactly that head's single-head number."""
    started = time.perf_counter()
    layout = hooks.head_layout(module)
    head_sets = [tuple(hooks.check_heads(heads, layout.n_layers, layout.n_heads)) for heads in head_sets]
    ids = torch.tensor([clean_ids, corrupt_ids], device=next(module.parameters()).device)
    base = _base_run(module, ids, readout)
    value, base_values, distance = value_function(base.output, readout,
                                                  pooled_positions(clean_ids, corrupt_ids, all_positions))
    rows = set_rows(head_sets, kinds)
    values = _patched_values(module, ids, rows, base, [], max_rows, readout, value)
    n = len(head_sets)
    return {"values": {kind: values[i * n:(i + 1) * n].numpy() for i, kind in enumerate(kinds)},
            "clean": float(base_values[0]), "corrupt": float(base_values[1]),
            "own_clean": float(values[-3]), "own_corrupt": float(values[-2]), "embedding": float(values[-1]),
            "distance": distance, "seconds": time.perf_counter() - started}


def run_pairs(loaded, pair_set: PairSet, kinds, max_rows, progress, lm=None,
              method: str = "exact", heads=None, all_positions: bool = False) -> tuple[list, list, PairSet]:
    """Patch every usable pair (through `lm` with the logit readout when given; the embedding readout leaves the
    swapped pieces out unless `all_positions`), exactly or (method "attribution") by the first-order estimate
    of `attribution.py`; unusable ones join the skipped list with their reason. Effects are not normalised yet
    (see `readouts.normalise_all`). heads: patch only these (layer, head)s exactly (others NaN)."""
    from probing.parallel import launched_in_parallel, map_shards
    if not launched_in_parallel():
        outs, kept, skipped = _run_shard(loaded, pair_set.pairs, kinds, max_rows, progress, lm, method, heads,
                                              all_positions)
        return outs, kept, PairSet(kept, list(pair_set.skipped) + skipped)
    # Under `accelerate launch`: each process patches its contiguous shard of pairs; every process gets all
    # shards back in rank order, i.e. the original order, so everything downstream sees one process's lists.
    parts = map_shards(lambda shard, show: _run_shard(loaded, shard, kinds, max_rows, show, lm, method, heads,
                                                        all_positions),
                       pair_set.pairs, progress)
    outs = [o for part in parts for o in part[0]]
    kept = [p for part in parts for p in part[1]]
    skipped = [s for part in parts for s in part[2]]
    return outs, kept, PairSet(kept, list(pair_set.skipped) + skipped)


def _run_shard(loaded, pairs: list[Pair], kinds, max_rows, progress, lm, method, heads, all_positions):
    """(outputs, kept pairs, skipped (id, reason)) of `pairs` in this process."""
    from tqdm import tqdm
    from probing.patching.attribution import attribute_ids
    patch_ids = attribute_ids if method == "attribution" else (
        lambda *args, **kwargs: _patch_ids(*args, **kwargs, heads=heads))
    outs, kept, skipped = [], [], []
    for pair in tqdm(pairs, disable=not progress, unit="pair", leave=False):
        ok, reason, info = usable(loaded, pair, check_answers=lm is not None)
        if not ok:
            skipped.append((pair.id, reason))
            continue
        readout = None if lm is None else LogitReadout(lm, info["answer_ids"], info["position"])
        outs.append(patch_ids(loaded.model if lm is None else lm, *info["ids"], info["source"], info["target"],
                              kinds, max_rows, readout, all_positions=all_positions))
        kept.append(pair)
    return outs, kept, skipped


# ---- patch_pair: one pair, the demo's call --------------------------------------------------------------

def _table(effects: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per head: layer, head, then each [layers, heads] array flattened."""
    n_layers, n_heads = next(iter(effects.values())).shape
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                          "head": np.tile(np.arange(n_heads), n_layers)})
    for name, values in {**effects, **extra}.items():
        table[name] = values.reshape(-1)
    return table


@dataclass
class PairPatch:
    """Every head's effects on one pair. effects[kind]: [layers, heads]; attention: the clean run's attention
    from the source word (mean over its pieces) to the target word (sum over its pieces), [layers, heads], or
    None without a target (`attention_reversed`: a decoder's later target read target -> source);
    norm_attention: the same reading of Kobayashi et al.'s alpha ||f(x)|| (None where the model gives no value norms);
    source_pattern: from the source word to every piece, [layers, heads, pieces].
    `sanity` holds the two checks' numbers and `passed` (both within their tolerance)."""
    clean: str
    corrupt: str
    tokens: list[str]
    source: list[int]                      # the source word's pieces (default: the swapped word's)
    swapped: list[int]                     # the pieces where the two texts differ
    target: list[int]                      # the target word's pieces ([] without a target)
    effects: dict[str, np.ndarray]         # kind -> [layers, heads]
    sanity: dict
    distance: float
    attention: np.ndarray | None
    source_pattern: np.ndarray
    seconds: float
    readout: str = "embedding"
    attention_reversed: bool = False
    norm_attention: np.ndarray | None = None   # [layers, heads] the same reading of alpha ||f(x)|| (None: not available)
    method: str = "exact"                  # "attribution": effects are first-order estimates (attribution.py)

    @property
    def table(self) -> pd.DataFrame:
        extra = {} if self.attention is None else {"attention": self.attention}
        if self.norm_attention is not None:
            extra["norm_attention"] = self.norm_attention
        return _table(self.effects, extra)

    def top(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The k heads with the largest effect `by` (default: the first kind): layer, head, that effect, and the
        attention when there is a target."""
        by = by or next(iter(self.effects))
        if by not in self.effects:
            raise ValueError(f"by must be one of {list(self.effects)}, got {by!r}")
        columns = ["layer", "head", by] + (["attention"] if self.attention is not None else [])
        ranked = self.table.sort_values([by, "layer", "head"], ascending=[False, True, True])
        return ranked[columns].head(k).reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"clean": self.clean, "corrupt": self.corrupt, "tokens": self.tokens, "source": self.source,
                "swapped": self.swapped, "target": self.target, "distance": self.distance,
                "sanity": self.sanity, "seconds": self.seconds, "readout": self.readout,
                "effects": {k: v.tolist() for k, v in self.effects.items()},
                "attention": None if self.attention is None else self.attention.tolist(),
                "norm_attention": None if self.norm_attention is None else self.norm_attention.tolist(),
                "attention_reversed": self.attention_reversed, "method": self.method}


def _span_field(value, name: str, text: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(v, int) for v in value)
            or not 0 <= value[0] < value[1] <= len(text)):
        raise ValueError(f"{name} must be a (start, end) character span inside the clean text, got {value!r}")
    return tuple(value)


def _spans_as_pieces(offsets, source, target, swapped) -> tuple[list[int], list[int]]:
    """(source pieces: the span's, default the swapped word's; target pieces, [] without a target)."""
    source_pieces = swapped if source is None else sorted(_span_pieces(offsets, source))
    target_pieces = [] if target is None else sorted(_span_pieces(offsets, target))
    for name, span, pieces in (("source", source, source_pieces), ("target", target, target_pieces)):
        if span is not None and not pieces:
            raise ValueError(f"the {name} span covers no piece the model reads (past the token limit?)")
    return source_pieces, target_pieces


def _logit_readout(loaded, clean_text, corrupt_text, offsets, swapped, answers, relation):
    """(the LM, its LogitReadout) for a pair with answers; ValueError in words when it cannot have one."""
    if len(answers) != 2 or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError(f"answers must be two non-empty words, got {answers!r}")
    word = (offsets[swapped[0]][0], offsets[swapped[-1]][1])
    pair = Pair(id="pair", relation=relation or "", clean=clean_text, corrupt=corrupt_text,
                clean_source=word, corrupt_source=word, answers=tuple(answers))
    ok, reason, info = usable(loaded, pair)
    if not ok:
        raise ValueError(reason)
    lm = language_model(loaded)
    return lm, LogitReadout(lm, info["answer_ids"], info["position"])


def _pair_sanity(sanity: dict, scale: float, logits: bool) -> dict:
    """The pair's sanity numbers with `passed`: own activations give 0 and the first layer's input gives
    denoising 1, within SANITY_TOLERANCE in units of the pair's clean - corrupt difference (embedding), or
    within LOGIT_SANITY_TOLERANCE in logits (float32 logits of a large vocabulary differ by ~1e-5 between batch
    sizes, and a weak model's difference can be small)."""
    error = max(sanity["own_noising_max_abs"], sanity["own_denoising_max_abs"],
                abs(sanity["embedding_denoising"] - 1))
    if logits:
        error, tolerance = error * abs(scale), LOGIT_SANITY_TOLERANCE
    else:
        tolerance = SANITY_TOLERANCE
    return {**sanity, "max_error" + ("_logits" if logits else ""): float(error), "tolerance": tolerance,
            "passed": bool(error <= tolerance)}


def patch_pair(model, clean_text: str, corrupt_text: str, *, source: tuple[int, int] | None = None,
               target: tuple[int, int] | None = None, relation: str | None = None, kinds=KINDS,
               max_rows: int = 512, answers: tuple[str, str] | None = None, method: str = "exact",
               heads=None, check: bool = True, all_positions: bool = False) -> PairPatch:
    """Every head's patching effects for one clean/corrupt pair (the demo's call). The swapped word is found
    from the tokens: the pieces that differ, which must lie in one word. ValueError when the pair is not a
    minimal pair (`pairs.minimal_pair`).

    source, target: (start, end) character spans in the clean text. The source word is where the `row_*`
    patches and the attention are read from (default: the swapped word); with a target, `attention` is the
    clean run's attention from the source word (mean over its pieces) to the target (sum over its pieces); a
    decoder reads a later target the other way (target -> source: it cannot look ahead).
    answers=None: the embedding readout (the final states averaged over the pieces the two texts share, or over
    every piece with all_positions=True). answers=(clean answer, corrupt answer): the logit difference between
    their first pieces at the last position (decoders) or at the text's mask token (masked LMs), normalised by
    this pair's clean - corrupt difference.
    method: "exact" (every head's patched runs) or "attribution" (first-order estimates from one forward and
    one backward pass, `attribution.py`: a screen, not evidence). heads: with method "exact", patch only
    these (layer, head)s (the others' effects are NaN): the demo confirms its screen's top heads this way.
    check=False (method "attribution" only): skip the sanity runs; `sanity` is then {"passed": None}."""
    from probing.patching.attribution import attribute_ids, check_method
    check_method(method, ("exact", "attribution"))
    loaded = as_loaded(model)
    kinds = check_kinds(kinds)
    for name, text in (("clean", clean_text), ("corrupt", corrupt_text)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {name} text is empty")
    source, target = _span_field(source, "source", clean_text), _span_field(target, "target", clean_text)
    pieces = minimal_pair(loaded, clean_text, corrupt_text)
    source_pieces, target_pieces = _spans_as_pieces(pieces.clean_offsets, source, target, pieces.swapped)
    module, readout = loaded.model, None
    if answers is not None:
        module, readout = _logit_readout(loaded, clean_text, corrupt_text, pieces.clean_offsets, pieces.swapped,
                                         answers, relation)
    if method == "attribution":
        out = attribute_ids(module, pieces.clean_ids, pieces.corrupt_ids, source_pieces, target_pieces, kinds,
                            max_rows, readout, check, all_positions=all_positions)
    else:
        heads = None if heads is None else hooks.check_heads(heads, *_layout_size(module))
        out = _patch_ids(module, pieces.clean_ids, pieces.corrupt_ids, source_pieces, target_pieces, kinds,
                         max_rows, readout, heads, all_positions)
    scale = out["clean"] - out["corrupt"]
    if abs(scale) < 1e-9:
        raise ValueError("the two texts give the same readout: there is nothing to patch")
    effects, sanity = normalise(out, scale)
    return PairPatch(clean=clean_text, corrupt=corrupt_text, tokens=loaded.tokenizer.convert_ids_to_tokens(
                         pieces.clean_ids), source=source_pieces, swapped=pieces.swapped, target=target_pieces,
                     effects=effects, distance=out["distance"],
                     sanity=_pair_sanity(sanity, scale, readout is not None) if check or method == "exact"
                     else {"passed": None},
                     attention=out["attention"], source_pattern=out["source_pattern"], seconds=out["seconds"],
                     readout="embedding" if readout is None else "logits",
                     attention_reversed=out["attention_reversed"], norm_attention=out["norm_attention"],
                     method=method)
