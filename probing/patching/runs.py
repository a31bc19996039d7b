"""The batched runs of one pair: which rows a pair's batch holds (one per kind and head, then the sanity
rows), how rows are grouped into chunks that start at a layer, the edits each chunk makes (head outputs `z`,
attention patterns), the unpatched base run whose caches the edits take their values from, and the clean run's
attention summaries. `engine` (exact patching) and `attribution` (first-order estimates) both build on these.

Shapes: z [batch, pos, head, d_head]; patterns [batch, head, q, k]; hidden states [batch, pos, d_model].
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from probing import attention as attention_function, hooks
from probing.patching.readouts import SHARED, LogitReadout, Pooling, run_readout, value_function
from probing.patching.results import CleanAttention, PairRun, SanityReadings

# ---- Which rows one pair's batch holds ------------------------------------------------------------------

@dataclass(frozen=True)
class PatchRow:
    kind: str         # one of KINDS, a path kind (DIRECT_KINDS), or a sanity row
    layer: int        # the layer the row edits (a set's: its first layer, where the row starts)
    head: int
    run: int          # the run the row starts from: 0 clean, 1 corrupt; its patches take the other run's values
    heads: tuple[tuple[int, int], ...] | None = None    # a head set's (layer, head)s patched together (z kinds)

    def patched(self) -> tuple[tuple[int, int], ...]:
        """The (layer, head)s whose z this row takes from the other run: its set, or its one head."""
        return self.heads if self.heads is not None else ((self.layer, self.head),)


# Path patching (Wang et al. 2022): the head takes the other run's z as in noising / denoising, while every
# later head's z stays at the row's own run's values; MLPs and layer norms are recomputed (Wang et al.'s
# convention: they are part of the path to the output), so the change reaches the readout without passing
# through any later attention head: the head's direct effect. Its total minus that is the effect through later
# heads (indirect).
DIRECT_KINDS = {"noising": "direct_noising", "denoising": "direct_denoising"}

SANITY_ROWS = 3      # own activations from clean, own activations from corrupt, clean embeddings in corrupt
OWN_CLEAN = PatchRow("sanity_own", -1, -1, 0)           # the clean run with its own z and patterns everywhere
OWN_CORRUPT = PatchRow("sanity_own", -1, -1, 1)         # the corrupt run likewise
EMBEDDING_CHECK = PatchRow("sanity_embeddings", -1, -1, 1)   # corrupt, from the clean run's layer-0 input


def all_heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Every (layer, head) of a model, layer by layer."""
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def plan_rows(n_layers: int, n_heads: int, kinds, heads=None) -> list[PatchRow]:
    """Every (kind, layer, head) row (only `heads` when given), then the sanity rows. Noising rows start from
    clean, denoising from corrupt; the own-run rows from each run; the embedding check from corrupt."""
    heads = all_heads(n_layers, n_heads) if heads is None else heads
    rows = [PatchRow(kind, layer, head, 1 if kind.endswith("denoising") else 0)
            for kind in kinds for layer, head in heads]
    return rows + [OWN_CLEAN, OWN_CORRUPT, EMBEDDING_CHECK]


def direct_rows(heads, kinds) -> list[PatchRow]:
    """One direct-path row per (kind, head) for kinds among noising / denoising, then the sanity rows."""
    bad = [k for k in kinds if k not in DIRECT_KINDS]
    if bad:
        raise ValueError(f"path patching takes the z kinds (noising, denoising), got {bad}")
    rows = [PatchRow(DIRECT_KINDS[kind], layer, head, 1 if kind == "denoising" else 0)
            for kind in kinds for layer, head in heads]
    return rows + [OWN_CLEAN, OWN_CORRUPT, EMBEDDING_CHECK]


def sanity_readings(rows: list[PatchRow], values: torch.Tensor) -> SanityReadings:
    """The sanity runs' values [rows] -> their named readings, each row found by what it is (not by position)."""
    index = {row: i for i, row in enumerate(rows) if row.kind.startswith("sanity")}
    return SanityReadings(own_clean=float(values[index[OWN_CLEAN]]), own_corrupt=float(values[index[OWN_CORRUPT]]),
                          embedding=float(values[index[EMBEDDING_CHECK]]))


def _chunks(rows: list[PatchRow], max_rows: int) -> list[tuple[int, list[int]]]:
    """(the layer the rows start at, row indices): the patch rows grouped by the layer they edit, at most
    `max_rows` at once; the sanity rows run whole (from layer 0) as their own small batch (the own-pattern row
    edits every layer's pattern)."""
    by_layer: dict[int, list[int]] = {}
    sanity = [index for index, row in enumerate(rows) if row.kind.startswith("sanity")]
    for index, row in enumerate(rows):
        if not row.kind.startswith("sanity"):
            by_layer.setdefault(row.layer, []).append(index)
    chunks = [(layer, indices[start:start + max_rows]) for layer, indices in by_layer.items()
              for start in range(0, len(indices), max_rows)]
    return chunks + [(0, sanity)]


# ---- The edits of one chunk -----------------------------------------------------------------------------

def _as_patch(layer: int, items: list, query=None) -> hooks.HeadPatch:
    """(batch row, head, value) triples of one layer as one HeadPatch."""
    return hooks.HeadPatch(layer=layer, rows=torch.tensor([i[0] for i in items]),
                           heads=torch.tensor([i[1] for i in items]), values=torch.stack([i[2] for i in items]),
                           query=query)


def _chunk_patches(rows: list[PatchRow], z: dict, patterns: dict, source: torch.Tensor, n_layers: int, n_heads: int):
    """(z patches, pattern patches) for one chunk of rows: z [2, pos, head, d_head] and patterns [2, head, q, k]
    per layer are the unpatched runs'; pattern patches are whole patterns or the source word's query rows; a
    direct-path row also freezes every later head's z at its own run's."""
    z_rows: dict[int, list] = {}
    pattern_rows: dict[tuple[int, bool], list] = {}      # (layer, source rows only) -> items
    for local, row in enumerate(rows):
        other = 1 - row.run
        if row.kind in ("noising", "denoising"):
            for layer, head in row.patched():
                z_rows.setdefault(layer, []).append((local, head, z[layer][other, :, head]))
        elif row.kind in DIRECT_KINDS.values():
            z_rows.setdefault(row.layer, []).append((local, row.head, z[row.layer][other, :, row.head]))
            for layer in range(row.layer + 1, n_layers):      # later heads frozen at the row's own run
                z_rows.setdefault(layer, []).extend((local, head, z[layer][row.run, :, head])
                                                    for head in range(n_heads))
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
class BaseRun:
    """The unpatched run of (clean, corrupt): its readout output and what it left in the caches."""
    output: torch.Tensor
    z: dict[int, torch.Tensor]                 # layer -> [2, pos, head, d_head]
    patterns: dict[int, torch.Tensor]          # layer -> [2, head, q, k]
    layer_inputs: dict[int, torch.Tensor]      # layer -> the hidden states entering it  # [2, pos, d_model]
    norms: list[torch.Tensor] | None = None    # per layer ||f_h(x_t)|| [2, head, pos]; None: not available


def base_run(module, ids: torch.Tensor, readout: LogitReadout | None) -> BaseRun:
    """The unpatched run of ids [2, pos] (clean, corrupt), caching z, patterns, layer inputs and value norms."""
    grams = attention_function.head_output_grams(hooks.head_layout(module))
    with hooks.cache_z(module) as z, hooks.cache_pattern(module) as patterns, \
            hooks.cache_layer_inputs(module) as layer_inputs, attention_function.measuring_norms(grams, module) as norms:
        output = run_readout(module, ids, readout)
    return BaseRun(output, z, patterns, layer_inputs, norms.norms if len(norms.norms) == len(grams) else None)


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


def _start(module, layer: int, chunk: list[PatchRow], base: BaseRun):
    """How a chunk's batch enters the model: from `layer` on with the unpatched hidden states there, or whole
    (layer 0), where the embedding check's rows get the clean run's hidden states entering layer 0."""
    if layer > 0:
        return hooks.start_at_layer(module, layer, base.layer_inputs[layer][[r.run for r in chunk]])
    embed_rows = [i for i, r in enumerate(chunk) if r.kind == "sanity_embeddings"]
    return hooks.replace_layer_input(module, 0, torch.tensor(embed_rows, dtype=torch.long),
                                     base.layer_inputs[0][0].expand(len(embed_rows), -1, -1))


def patched_values(module, ids, rows: list[PatchRow], base: BaseRun, source: list[int], max_rows: int,
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


@dataclass
class PairRows:
    """One pair's unpatched base run and every planned row patched from it."""
    values: torch.Tensor          # [rows] raw readout values (float64), in `rows`' order
    base: BaseRun
    base_values: np.ndarray       # [2] the unpatched clean and corrupt runs' values
    distance: float               # the pair's clean - corrupt distance (see `readouts.value_function`)


def run_pair_rows(module, clean_ids: list[int], corrupt_ids: list[int], rows: list[PatchRow], source: list[int],
                  max_rows: int, readout: LogitReadout | None, pooling: Pooling = SHARED) -> PairRows:
    """The batched core every exact run shares: one base run of (clean, corrupt) caching what the rows take,
    the value function it defines, then every row's patched value."""
    ids = torch.tensor([clean_ids, corrupt_ids], device=next(module.parameters()).device)
    base = base_run(module, ids, readout)
    value, base_values, distance = value_function(base.output, readout, pooling, clean_ids, corrupt_ids)
    values = patched_values(module, ids, rows, base, source, max_rows, readout, value)
    return PairRows(values, base, base_values, distance)


def run_flat_rows(module, clean_ids: list[int], corrupt_ids: list[int], rows: list[PatchRow], n: int, kinds,
                  max_rows: int, readout: LogitReadout | None, pooling: Pooling = SHARED) -> PairRun:
    """`run_pair_rows` for rows planned as `n` per kind, kind by kind, then the sanity rows (head sets, direct
    paths): `values[kind]` [n] raw readout values; `readouts.normalise` turns them into effects."""
    started = time.perf_counter()
    run = run_pair_rows(module, clean_ids, corrupt_ids, rows, [], max_rows, readout, pooling)
    return PairRun(values={kind: run.values[i * n:(i + 1) * n].numpy() for i, kind in enumerate(kinds)},
                   clean=float(run.base_values[0]), corrupt=float(run.base_values[1]),
                   sanity_readings=sanity_readings(rows, run.values), distance=run.distance,
                   seconds=time.perf_counter() - started)


def clean_attention(base: BaseRun, source: list[int], target: list[int], n_layers: int) -> CleanAttention:
    """The clean run's attention from the source word (to the target, and to every piece)."""
    clean_patterns = torch.stack([base.patterns[l][0] for l in range(n_layers)]).float()   # [L, H, q, k]
    source_pattern = clean_patterns[:, :, source].mean(2)                                        # [L, H, k]
    attention, reversed_ = _source_to_target(clean_patterns, source, target)
    norm_attention = None
    if getattr(base, "norms", None) is not None and target:
        # Kobayashi et al.'s alpha_st ||f(x_t)||, read exactly as the weights are (same pieces, same direction)
        clean_norms = torch.stack([n[0] for n in base.norms]).cpu()                               # [L, H, k]
        norm_attention, _ = _source_to_target(clean_patterns * clean_norms[:, :, None, :], source, target)
    return CleanAttention(attention=attention, attention_reversed=reversed_, norm_attention=norm_attention,
                          source_pattern=source_pattern.numpy())
