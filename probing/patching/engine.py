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

from probing import hooks
from probing.models import LoadedModel, as_loaded
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
    layer: int
    head: int
    run: int          # the run the row starts from: 0 clean, 1 corrupt; its patches take the other run's values


SANITY_ROWS = 3      # own activations from clean, own activations from corrupt, clean embeddings in corrupt


def _plan(n_layers: int, n_heads: int, kinds) -> list[_Row]:
    """Every (kind, layer, head) row, then the sanity rows. Noising rows start from clean, denoising from
    corrupt; the own-run rows from each run; the embedding check from corrupt."""
    rows = [_Row(kind, layer, head, 1 if kind.endswith("denoising") else 0)
            for kind in kinds for layer in range(n_layers) for head in range(n_heads)]
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
            z_rows.setdefault(row.layer, []).append((local, row.head, z[row.layer][other, :, row.head]))
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


def _base_run(module, ids: torch.Tensor, readout: LogitReadout | None) -> _Base:
    with hooks.cache_z(module) as z, hooks.cache_pattern(module) as patterns, \
            hooks.cache_layer_inputs(module) as layer_inputs:
        output = run_readout(module, ids, readout)
    return _Base(output, z, patterns, layer_inputs)


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
               kinds, max_rows: int, readout: LogitReadout | None = None, all_positions: bool = False) -> dict:
    """The batched core: one base run of both texts (caching z, patterns and layer inputs), then every head's
    patched runs.

    Returns raw readout values v (embedding: <e(run), e(clean) - e(corrupt)>; logits: the logit difference):
    `values[kind]` [layers, heads] of the patched runs, `clean`/`corrupt` of the unpatched runs and the sanity
    runs' values; `readouts.normalise` turns them into effects."""
    started = time.perf_counter()
    layout = hooks.head_layout(module)
    ids = torch.tensor([clean_ids, corrupt_ids], device=next(module.parameters()).device)
    base = _base_run(module, ids, readout)
    value, base_values, distance = value_function(base.output, readout,
                                                  pooled_positions(clean_ids, corrupt_ids, all_positions))
    rows = _plan(layout.n_layers, layout.n_heads, kinds)
    values = _patched_values(module, ids, rows, base, source, max_rows, readout, value)
    n = layout.n_layers * layout.n_heads
    by_kind = {kind: values[i * n:(i + 1) * n].numpy().reshape(layout.n_layers, layout.n_heads)
               for i, kind in enumerate(kinds)}
    clean_patterns = torch.stack([base.patterns[l][0] for l in range(layout.n_layers)]).float()   # [L, H, q, k]
    source_pattern = clean_patterns[:, :, source].mean(2)                                        # [L, H, k]
    attention = source_pattern[:, :, target].sum(-1).numpy() if target else None
    reversed_ = bool(target) and min(target) > max(source) and not clean_patterns.triu(1).any()
    if reversed_:
        # A decoder cannot look ahead (all 0 above the diagonal): read the later word -> the source instead,
        # the direction the head scorer measures (negation: next word -> cue), not a row of zeros.
        attention = clean_patterns[:, :, target].mean(2)[:, :, source].sum(-1).numpy()
    return {"values": by_kind, "clean": float(base_values[0]), "corrupt": float(base_values[1]),
            "own_clean": float(values[-3]), "own_corrupt": float(values[-2]), "embedding": float(values[-1]),
            "distance": distance, "attention": attention, "attention_reversed": reversed_,
            "source_pattern": source_pattern.numpy(), "seconds": time.perf_counter() - started}


def run_pairs(loaded, pair_set: PairSet, kinds, max_rows, progress, lm=None,
              all_positions: bool = False) -> tuple[list, list, PairSet]:
    """Patch every usable pair (through `lm` with the logit readout when given; the embedding readout leaves the
    swapped pieces out unless `all_positions`); unusable ones join the skipped list with their reason. Effects
    are not normalised yet (see `readouts.normalise_all`)."""
    from tqdm import tqdm
    outs, kept, skipped = [], [], list(pair_set.skipped)
    for pair in tqdm(pair_set.pairs, disable=not progress, unit="pair", leave=False):
        ok, reason, info = usable(loaded, pair, check_answers=lm is not None)
        if not ok:
            skipped.append((pair.id, reason))
            continue
        readout = None if lm is None else LogitReadout(lm, info["answer_ids"], info["position"])
        outs.append(_patch_ids(loaded.model if lm is None else lm, *info["ids"], info["source"], info["target"],
                               kinds, max_rows, readout, all_positions))
        kept.append(pair)
    return outs, kept, PairSet(kept, skipped)


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

    @property
    def table(self) -> pd.DataFrame:
        return _table(self.effects, {} if self.attention is None else {"attention": self.attention})

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
                "attention_reversed": self.attention_reversed}


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
               max_rows: int = 512, answers: tuple[str, str] | None = None, all_positions: bool = False) -> PairPatch:
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
    this pair's clean - corrupt difference."""
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
    out = _patch_ids(module, pieces.clean_ids, pieces.corrupt_ids, source_pieces, target_pieces, kinds, max_rows,
                     readout, all_positions)
    scale = out["clean"] - out["corrupt"]
    if abs(scale) < 1e-9:
        raise ValueError("the two texts give the same readout: there is nothing to patch")
    effects, sanity = normalise(out, scale)
    return PairPatch(clean=clean_text, corrupt=corrupt_text, tokens=loaded.tokenizer.convert_ids_to_tokens(
                         pieces.clean_ids), source=source_pieces, swapped=pieces.swapped, target=target_pieces,
                     effects=effects, sanity=_pair_sanity(sanity, scale, readout is not None), distance=out["distance"],
                     attention=out["attention"], source_pattern=out["source_pattern"], seconds=out["seconds"],
                     readout="embedding" if readout is None else "logits",
                     attention_reversed=out["attention_reversed"])
