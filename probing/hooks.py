"""Hook machinery, apart from any experiment: read, ablate, cache and replace what one attention head computes.

Two tensors per layer are reachable (TransformerLens names, shapes as the hooks see them):
- `z`  # [batch, pos, head, d_head]: each head's output, i.e. the input of the layer's attention output
  projection (BERT/MiniLM `attention.output.dense`, MPNet `attention.attn.o`, GPT-2 `attn.c_proj`, Gemma 3
  `self_attn.o_proj`), head h = columns [h*d_head, (h+1)*d_head). Gemma 3 shares keys and values between
  query heads (GQA), but `z` is per query head, so every query head is its own unit here.
- `pattern`  # [batch, head, query_pos, key_pos]: each head's attention probabilities, after softmax, before
  they weight the values.

How the hooks attach:
- `z`: a forward pre-hook on the output projection, found by shape and data flow, not by name (`head_layout`).
- `pattern`, models that route attention through Transformers 5's `AttentionInterface` (BERT/MiniLM, GPT-2,
  Gemma 3, most hub models): through `probing.attention`'s context variable. The model's configs name
  `probing.attention`'s function once and for good (`attention.install`: with no plan it is exactly eager);
  inside `edit_pattern` the context holds a `PatternEdits`, so that function runs the model's own eager
  attention, then this block's edits, and recomputes `pattern @ value` for edited modules. Untouched heads are
  bit-identical to an eager run.
- `pattern`, MPNet (its self-attention computes softmax inline, no interface): a forward hook on the
  self-attention's `dropout` module, which receives the probabilities (identity in eval mode), replaces its output.

Every context manager removes its hooks on exit, even on errors. Edits are functions `fn(tensor) -> tensor |
None` (None: leave it as it is, e.g. to cache); they must not modify their input in place. Edits act only on
forward passes of the thread that entered the block: module hooks are wrapped by one helper (`_owner_only`),
and pattern edits live in a context variable, which each thread has its own of. No lock, no global edit table,
no configuration swapped per call.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from probing.defaults import ABLATION_MODE, ABLATION_MODES
from probing import attention
from probing.models import LoadedModel

MODES = ABLATION_MODES
# Attention modules that compute softmax inline: the submodule that receives the probabilities.
PROBABILITY_MODULES = {"MPNetSelfAttention": "dropout"}


class UnsupportedArchitectureError(ValueError):
    """A model whose attention output projections cannot be located; the message says what was looked for."""


# ---- Where each layer's heads are concatenated --------------------------------------------------------

@dataclass(frozen=True)
class HeadLayout:
    """Head h of layer l is columns [h*head_dim, (h+1)*head_dim) of the input of `projections[l]`;
    `layers[l]` is the transformer layer holding it; `returns_tuple`: whether a layer returns a tuple (MPNet)
    or a tensor (BERT, GPT-2, Gemma 3 in Transformers 5), seen in a probe forward pass."""
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    projections: tuple[nn.Module, ...]
    names: tuple[str, ...]
    layers: tuple[nn.Module, ...] = ()
    returns_tuple: bool = False


_LAYOUTS: "weakref.WeakKeyDictionary[nn.Module, HeadLayout]" = weakref.WeakKeyDictionary()


def as_module(model) -> nn.Module:
    """The torch model behind a LoadedModel, or the module itself."""
    return model.model if isinstance(model, LoadedModel) else model


def _config_numbers(module: nn.Module) -> tuple[int, int, int, int]:
    """(layers, heads, head_dim, hidden size) from the model's (text) config."""
    config = getattr(module, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(f"{type(module).__name__} has no `config`: head hooks need a "
                                           "Transformers model")
    config = getattr(config, "text_config", None) or config
    try:
        n_layers, n_heads, hidden = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
    except AttributeError as err:
        raise UnsupportedArchitectureError(f"{type(module).__name__}: the config lacks {err.name!r}") from None
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    return n_layers, n_heads, head_dim, hidden


def _io_features(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a linear map: nn.Linear, or GPT-2's Conv1D (nx -> nf); None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if hasattr(module, "nx") and hasattr(module, "nf") and hasattr(module, "weight"):
        return module.nx, module.nf
    return None


def _attention_block(layer: nn.Module) -> nn.Module | None:
    """The outermost submodule of a layer whose class is an attention module (BertAttention, Gemma3Attention...)."""
    for name, sub in layer.named_modules():
        if name and "attention" in type(sub).__name__.lower():
            return sub
    return None


def _layer_list(module: nn.Module, n_layers: int) -> tuple[str, nn.ModuleList]:
    """The ModuleList of the model's n_layers transformer layers, each holding an attention block."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.ModuleList) and len(sub) == n_layers and all(
                _attention_block(layer) is not None for layer in sub):
            return name, sub
    raise UnsupportedArchitectureError(
        f"{type(module).__name__}: found no list of {n_layers} layers that each hold an attention module; "
        "this architecture is not supported by the head hooks")


def _probe_calls(module: nn.Module, blocks: list[nn.Module], candidates: list[list[nn.Module]]):
    """One tiny forward pass recording, per layer, the candidates that ran on something other than the block's
    input, in call order (q/k/v read the block's input; the output projection reads the heads' outputs)."""
    block_inputs: dict[int, torch.Tensor] = {}
    called: list[list[nn.Module]] = [[] for _ in blocks]
    handles = []

    def remember_block_input(index):
        def hook(_module, args, kwargs):
            first = args[0] if args else kwargs.get("hidden_states", next(
                (v for v in kwargs.values() if torch.is_tensor(v)), None))
            block_inputs[index] = first
        return hook

    def remember_call(index, candidate):
        def hook(_module, args):
            block_input = block_inputs.get(index)
            if block_input is None or args[0].data_ptr() != block_input.data_ptr():
                called[index].append(candidate)
        return hook

    try:
        for index, (block, layer_candidates) in enumerate(zip(blocks, candidates)):
            handles.append(block.register_forward_pre_hook(_owner_only(remember_block_input(index)),
                                                           with_kwargs=True))
            for candidate in layer_candidates:
                handles.append(candidate.register_forward_pre_hook(_owner_only(remember_call(index, candidate))))
        device = next(module.parameters()).device
        with torch.inference_mode():
            module(input_ids=torch.tensor([[5, 6, 7, 8]], device=device))
    finally:
        for handle in handles:
            handle.remove()
    return called


def _layers_return_tuples(module: nn.Module, first_layer: nn.Module) -> bool:
    """Whether the model's layers return a tuple, from one tiny forward pass (eager path, no edits)."""
    seen = []
    handle = first_layer.register_forward_hook(_owner_only(lambda _m, _args, out: seen.append(isinstance(out, tuple))))
    try:
        with attention.reading(None), torch.inference_mode():
            module(input_ids=torch.tensor([[5, 6, 7, 8]], device=next(module.parameters()).device))
    finally:
        handle.remove()
    if not seen:
        raise UnsupportedArchitectureError(f"{type(module).__name__}: a test forward pass did not run its first "
                                           "layer; this architecture is not supported")
    return seen[0]


def head_layout(model) -> HeadLayout:
    """Locate each layer's attention output projection: within the layer's attention block, the linear map
    from n_heads*head_dim to hidden_size that runs last and not on the block's own input. Cached per model."""
    module = as_module(model)
    if module in _LAYOUTS:
        return _LAYOUTS[module]
    n_layers, n_heads, head_dim, hidden = _config_numbers(module)
    _list_name, layers = _layer_list(module, n_layers)
    blocks = [_attention_block(layer) for layer in layers]
    names = {sub: name for name, sub in module.named_modules()}
    candidates = [[sub for sub in block.modules() if _io_features(sub) == (n_heads * head_dim, hidden)]
                  for block in blocks]
    for index, layer_candidates in enumerate(candidates):
        if not layer_candidates:
            raise UnsupportedArchitectureError(
                f"{type(module).__name__}: layer {index}'s attention block {names[blocks[index]]} has no linear "
                f"map from {n_heads}x{head_dim}={n_heads * head_dim} to {hidden} features (the output "
                "projection the head hooks use); this architecture is not supported")
    if any(len(c) > 1 for c in candidates):
        called = _probe_calls(module, blocks, candidates)
        for index, layer_called in enumerate(called):
            if not layer_called:
                raise UnsupportedArchitectureError(
                    f"{type(module).__name__}: in layer {index}, no {n_heads * head_dim}->{hidden} linear map ran "
                    "on the heads' outputs in a test forward pass; this architecture is not supported")
        projections = tuple(c[-1] for c in called)
    else:
        projections = tuple(c[0] for c in candidates)
    layout = HeadLayout(n_layers=n_layers, n_heads=n_heads, head_dim=head_dim, hidden_size=hidden,
                        projections=projections, names=tuple(names[p] for p in projections), layers=tuple(layers),
                        returns_tuple=_layers_return_tuples(module, layers[0]))
    _LAYOUTS[module] = layout
    return layout


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


def _check_layers(edits: dict, n_layers: int) -> None:
    bad = [layer for layer in edits if not (isinstance(layer, int) and 0 <= layer < n_layers)]
    if bad:
        raise ValueError(f"layers {bad} do not exist: this model has {n_layers} layers (0-{n_layers - 1})")


def _owner_only(fn: Callable, otherwise: Callable = lambda *args, **kwargs: None) -> Callable:
    """`fn` on the thread that installs it; `otherwise` (default: return None, which leaves a hook's tensor as
    it is) on any other thread, whose forward pass through the same modules must not be touched."""
    owner = threading.get_ident()

    def call(*args, **kwargs):
        return (fn if threading.get_ident() == owner else otherwise)(*args, **kwargs)
    return call


# ---- z: each head's output -----------------------------------------------------------------------------

@contextlib.contextmanager
def edit_z(model, edits: dict[int, Callable[[torch.Tensor], torch.Tensor | None]]):
    """Inside the with-block, layer l's `z`  # [batch, pos, head, d_head] goes through `edits[l]` before the
    output projection; a function returning None leaves it unchanged (useful to read it)."""
    layout = head_layout(model)
    _check_layers(edits, layout.n_layers)

    def hook_for(fn):
        def hook(_module, args):
            if not args:
                raise RuntimeError("the output projection was called without a positional input; cannot hook z")
            flat = args[0]
            z = flat.view(*flat.shape[:-1], layout.n_heads, layout.head_dim)
            new = fn(z)
            if new is None:
                return None
            return (new.reshape(flat.shape).to(flat.dtype), *args[1:])
        return hook

    handles = []
    try:
        for layer, fn in edits.items():
            handles.append(layout.projections[layer].register_forward_pre_hook(_owner_only(hook_for(fn))))
        yield layout
    finally:
        for handle in handles:
            handle.remove()


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

def _uses_interface(module: nn.Module) -> bool:
    source = sys.modules.get(type(module).__module__)
    return (hasattr(source, "ALL_ATTENTION_FUNCTIONS") and hasattr(source, "eager_attention_forward")
            and hasattr(module, "config"))


def _pattern_sites(layer: nn.Module) -> tuple[list[nn.Module], nn.Module | None]:
    """(attention modules of this layer that call the interface, the inline-softmax module's probability
    receiver or None)."""
    interface, receiver = [], None
    for sub in layer.modules():
        name = type(sub).__name__
        if name in PROBABILITY_MODULES:
            receiver = getattr(sub, PROBABILITY_MODULES[name])
        elif "attention" in name.lower() and _uses_interface(sub):
            interface.append(sub)
    return interface, receiver


def _pattern_edits(model, layout: HeadLayout, edits: dict) -> tuple[list, list]:
    """((attention module, fn) pairs for the context variable, (receiver, fn) pairs for forward hooks)."""
    through_interface, receivers = [], []
    for index, layer in enumerate(layout.layers):
        interface, receiver = _pattern_sites(layer)
        if not interface and receiver is None:
            raise UnsupportedArchitectureError(
                f"{type(as_module(model)).__name__}: layer {index}'s attention neither uses Transformers' "
                "AttentionInterface nor is a known inline-softmax module; cannot hook its pattern")
        if index in edits:
            through_interface += [(module, edits[index]) for module in interface]
            receivers += [(receiver, edits[index])] if receiver is not None else []
    if through_interface and not attention.install(as_module(model)):
        raise UnsupportedArchitectureError(
            f"{type(as_module(model)).__name__} runs a fused attention implementation; load it with "
            "attn_implementation='eager' to edit attention patterns")
    return through_interface, receivers


@contextlib.contextmanager
def edit_pattern(model, edits: dict[int, Callable[[torch.Tensor], torch.Tensor | None]]):
    """Inside the with-block, layer l's `pattern`  # [batch, head, query_pos, key_pos] goes through `edits[l]`
    before it weights the values; None leaves it unchanged. Under GQA the pattern is per query head."""
    layout = head_layout(model)
    _check_layers(edits, layout.n_layers)
    through_interface, receivers = _pattern_edits(model, layout, edits)
    handles = [receiver.register_forward_hook(_owner_only(lambda _m, _args, output, fn=fn: fn(output)))
               for receiver, fn in receivers]
    try:
        with attention.editing(through_interface):
            yield layout
    finally:
        for handle in handles:
            handle.remove()


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
    layout = head_layout(model)
    _check_layers({layer: None}, layout.n_layers)

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden = hidden.clone()
        hidden[rows.to(hidden.device)] = values.to(hidden.device, hidden.dtype)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = layout.layers[layer].register_forward_pre_hook(_owner_only(hook), with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def cache_layer_inputs(model):
    """Yields a dict that the next forward pass fills with {layer: the hidden states entering it  # [batch, pos,
    d_model]} (a copy)."""
    layout = head_layout(model)
    cache: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(_module, args, kwargs):
            cache[layer] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    handles = [block.register_forward_pre_hook(_owner_only(keep(layer)), with_kwargs=True)
               for layer, block in enumerate(layout.layers)]
    try:
        yield cache
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def start_at_layer(model, layer: int, hidden: torch.Tensor):
    """Run the model from `layer` on: `hidden`  # [batch, pos, d_model] enters `layer`, and the layers before
    it pass their input through without computing anything (as a tuple where the layout says layers return
    tuples). Exact when `hidden` is what those layers give (patching: rows that edit layer l share the
    unpatched run's layers 0..l-1). Only the thread that entered the block is affected: another thread's
    forward pass runs every layer."""
    layout = head_layout(model)
    _check_layers({layer: None}, layout.n_layers)
    skipped = layout.layers[:layer]

    def passthrough(*args, **kwargs):
        states = args[0] if args else kwargs["hidden_states"]
        return (states,) if layout.returns_tuple else states

    for module in skipped:
        # an instance attribute shadows the class's forward
        module.forward = _owner_only(passthrough, otherwise=module.forward)
    try:
        with replace_layer_input(model, layer, torch.arange(hidden.shape[0]), hidden):
            yield
    finally:
        for module in skipped:
            del module.forward
