"""Head-level interventions, apart from any experiment: read, ablate, cache and replace what one attention head
computes, through `probing.sites` (the site map and its one `intervene`).

- `z`  # [batch, pos, head, d_head]: each head's output, the input of the layer's attention output projection.
- `pattern`  # [batch, head, query_pos, key_pos]: each head's attention probabilities, after softmax, before
  they weight the values.
- the hidden states entering a layer (`replace_layer_input`, `cache_layer_inputs`, `start_at_layer`).

Every context manager removes what it installed on exit, even on errors. Edits are functions `fn(tensor) ->
tensor | None` (None: leave it as it is, e.g. to cache); they must not modify their input in place. Edits act
only on forward passes of the thread that entered the block (see `probing.sites`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from probing.defaults import ABLATION_MODE, ABLATION_MODES
from probing.sites import (LAYER_INPUT, PATTERN, Z, HeadLayout, Site, UnsupportedArchitectureError,  # noqa: F401
                           as_module, check_layers, head_layout, intervene, skip_layers)

MODES = ABLATION_MODES


def check_heads(heads, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """The heads as sorted (layer, head) pairs of ints; ValueError naming the first one that does not exist."""
    checked = []
    for item in heads:
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in item)):
            raise ValueError(f"a head must be a (layer, head) pair of integers, got {item!r}")
        layer, head = int(item[0]), int(item[1])
        if not 0 <= layer < n_layers:
            raise ValueError(f"head ({layer}, {head}): layer {layer} is out of range: this model has {n_layers} "
                             f"layers (0-{n_layers - 1})")
        if not 0 <= head < n_heads:
            raise ValueError(f"head ({layer}, {head}): head {head} is out of range: this model has {n_heads} "
                             f"heads per layer (0-{n_heads - 1})")
        if (layer, head) in checked:
            raise ValueError(f"head ({layer}, {head}) is listed twice")
        checked.append((layer, head))
    return sorted(checked)


# ---- z: each head's output -----------------------------------------------------------------------------

@contextlib.contextmanager
def edit_z(model, edits: dict[int, Callable[[torch.Tensor], torch.Tensor | None]]):
    """Inside the with-block, layer l's `z`  # [batch, pos, head, d_head] goes through `edits[l]` before the
    output projection; a function returning None leaves it unchanged (useful to read it)."""
    with intervene(model, {Site(Z, layer): fn for layer, fn in edits.items()}) as layout:
        yield layout


@contextlib.contextmanager
def cache_z(model, layers=None):
    """Yields a dict that the next forward pass fills with {layer: z  # [batch, pos, head, d_head]} (a copy)."""
    layout = head_layout(model)
    cache: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(z):
            cache[layer] = z.detach().clone()
        return fn

    with edit_z(model, {layer: keep(layer) for layer in (range(layout.n_layers) if layers is None else layers)}):
        yield cache


@contextlib.contextmanager
def ablate_heads(model, heads, mode: str = ABLATION_MODE, means: torch.Tensor | None = None):
    """Knock out `heads` ((layer, head) pairs) inside the with-block.

    zero ablation (default): the head's z is set to 0, as if it wrote nothing.
    mean ablation: it is set to `means[layer, head]`, a (layers, heads, d_head) tensor from `head_output_means`.
    `model` is a LoadedModel or any Transformers module holding the layers (an LM wrapping the same base works).
    """
    layout = head_layout(model)
    heads = check_heads(heads, layout.n_layers, layout.n_heads)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "mean":
        expected = (layout.n_layers, layout.n_heads, layout.head_dim)
        if means is None:
            raise ValueError("mean ablation needs `means`: compute them with head_output_means(model, texts)")
        if tuple(means.shape) != expected:
            raise ValueError(f"means has shape {tuple(means.shape)}; this model needs {expected}")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def knock_out(layer, layer_heads):
        def fn(z):
            z = z.clone()
            for head in layer_heads:
                z[:, :, head] = 0.0 if mode == "zero" else means[layer, head].to(z.device, z.dtype)
            return z
        return fn

    with edit_z(model, {layer: knock_out(layer, hs) for layer, hs in by_layer.items()}):
        yield heads


@dataclass(frozen=True)
class HeadPatch:
    """Batch row `rows[i]` gets `values[i]` as head `heads[i]`'s z (or pattern) in `layer`.
    values: [n, pos, d_head] for z; [n, query, key] for a whole pattern, [n, key] for one query row."""
    layer: int
    rows: torch.Tensor      # [n] long
    heads: torch.Tensor     # [n] long
    values: torch.Tensor
    query: torch.Tensor | None = None    # patterns only: [q] query positions; values then [n, q, key]


def _group_by_layer(patches: list[HeadPatch]) -> dict[int, list[HeadPatch]]:
    grouped: dict[int, list[HeadPatch]] = {}
    for patch in patches:
        grouped.setdefault(int(patch.layer), []).append(patch)
    return grouped


def _z_writer(patches: list[HeadPatch]):
    """fn(z) writing every patch's values [n, pos, d_head] at z[rows, :, heads]."""
    def fn(z):
        z = z.clone()
        for p in patches:
            z[p.rows.to(z.device), :, p.heads.to(z.device)] = p.values.to(z.device, z.dtype)
        return z
    return fn


@contextlib.contextmanager
def replace_z(model, patches):
    """Replace heads' z with given values inside the with-block.

    `patches`: a list of `HeadPatch` (row-wise, for batched patching: values [n, pos, d_head]), or a dict
    {(layer, head): value} with value [pos, d_head] or [batch, pos, d_head], applied to every row."""
    broadcast = isinstance(patches, dict)
    patches = _as_patches(model, patches)
    edits = {layer: (_broadcast_writer(group, True, None) if broadcast else _z_writer(group))
             for layer, group in _group_by_layer(patches).items()}
    with edit_z(model, edits):
        yield


def _as_patches(model, patches) -> list[HeadPatch]:
    """A {(layer, head): value} dict becomes HeadPatches for every row (resolved at run time by broadcasting)."""
    if not isinstance(patches, dict):
        return list(patches)
    layout = head_layout(model)
    check_heads(list(patches), layout.n_layers, layout.n_heads)
    return [_BroadcastPatch(layer=int(l), rows=None, heads=torch.tensor([int(h)]), values=v)
            for (l, h), v in patches.items()]


@dataclass(frozen=True)
class _BroadcastPatch(HeadPatch):
    """One head's value for every row of the batch (rows=None)."""


def _broadcast_writer(patches, is_z: bool, query: int | None):
    def fn(tensor):
        tensor = tensor.clone()
        for p in patches:
            head = int(p.heads[0])
            values = p.values.to(tensor.device, tensor.dtype)
            if is_z:
                tensor[:, :, head] = values
            elif query is None:
                tensor[:, head] = values
            else:
                tensor[:, head, query] = values
        return tensor
    return fn


# ---- pattern: each head's attention probabilities -----------------------------------------------------

@contextlib.contextmanager
def edit_pattern(model, edits: dict[int, Callable[[torch.Tensor], torch.Tensor | None]]):
    """Inside the with-block, layer l's `pattern`  # [batch, head, query_pos, key_pos] goes through `edits[l]`
    before it weights the values; None leaves it unchanged. Under GQA the pattern is per query head."""
    with intervene(model, {Site(PATTERN, layer): fn for layer, fn in edits.items()}) as layout:
        yield layout


@contextlib.contextmanager
def cache_pattern(model, layers=None):
    """Yields a dict that the next forward pass fills with {layer: pattern  # [batch, head, q, k]} (a copy)."""
    layout = head_layout(model)
    cache: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(pattern):
            cache[layer] = pattern.detach().clone()
        return fn

    with edit_pattern(model, {layer: keep(layer) for layer in (range(layout.n_layers) if layers is None else layers)}):
        yield cache


@contextlib.contextmanager
def replace_pattern(model, patches, query: int | None = None):
    """Replace heads' attention probabilities inside the with-block: the whole pattern (query=None; values
    [n, q, k]) or only query row `query` (values [n, k]). The heads' values stay the run's own.
    `patches`: HeadPatches (row-wise) or {(layer, head): value} applied to every row."""
    broadcast = isinstance(patches, dict)
    patches = _as_patches(model, patches)
    edits = {}
    for layer, group in _group_by_layer(patches).items():
        edits[layer] = (_broadcast_writer(group, False, query) if broadcast else _pattern_writer(group, query))
    with edit_pattern(model, edits):
        yield


def _pattern_writer(patches: list[HeadPatch], query: int | None):
    def fn(pattern):
        pattern = pattern.clone()
        for p in patches:
            rows, heads = p.rows.to(pattern.device), p.heads.to(pattern.device)
            values = p.values.to(pattern.device, pattern.dtype)
            if p.query is not None:
                positions = p.query.to(pattern.device)
                pattern[rows[:, None], heads[:, None], positions[None, :]] = values
            elif query is None:
                pattern[rows, heads] = values
            else:
                pattern[rows, heads, query] = values
        return pattern
    return fn


@contextlib.contextmanager
def replace_layer_input(model, layer: int, rows: torch.Tensor, values: torch.Tensor):
    """Batch rows `rows` get `values`  # [n, pos, d_model] as the hidden states entering `layer`."""
    def write(hidden):
        hidden = hidden.clone()
        hidden[rows.to(hidden.device)] = values.to(hidden.device, hidden.dtype)
        return hidden

    with intervene(model, {Site(LAYER_INPUT, layer): write}):
        yield


@contextlib.contextmanager
def cache_layer_inputs(model):
    """Yields a dict that the next forward pass fills with {layer: the hidden states entering it  # [batch, pos,
    d_model]} (a copy)."""
    layout = head_layout(model)
    cache: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(hidden):
            cache[layer] = hidden.detach().clone()
        return fn

    with intervene(model, {Site(LAYER_INPUT, layer): keep(layer) for layer in range(layout.n_layers)}):
        yield cache


@contextlib.contextmanager
def start_at_layer(model, layer: int, hidden: torch.Tensor):
    """Run the model from `layer` on: `hidden`  # [batch, pos, d_model] enters `layer`, and the layers before
    it pass their input through without computing anything (as a tuple where the layout says layers return
    tuples). Exact when `hidden` is what those layers give (patching: rows that edit layer l share the
    unpatched run's layers 0..l-1). Only the thread that entered the block is affected: another thread's
    forward pass runs every layer."""
    with skip_layers(model, layer), replace_layer_input(model, layer, torch.arange(hidden.shape[0]), hidden):
        yield
