"""The site map: where a forward pass can be read or changed, named once per architecture, and the one way to
do it (`intervene`). No other module of `probing` registers a module hook, swaps a module's forward or sets
a model's attention implementation (tests/test_hooks.py checks the source).

Sites (TransformerLens names; shapes as the functions see them), `Site(kind, layer)`:
- `z`  # [batch, pos, head, d_head]: each head's output, i.e. the input of the layer's attention output
  projection (BERT/MiniLM `attention.output.dense`, MPNet `attention.attn.o`, GPT-2 `attn.c_proj`, Gemma 3
  `self_attn.o_proj`), head h = columns [h*d_head, (h+1)*d_head). Reached by a forward pre-hook on the
  projection, found by shape and data flow, not by name (`head_layout`). Gemma 3 shares keys and values
  between query heads (GQA), but `z` is per query head, so every query head is its own unit here.
- `pattern`  # [batch, head, query_pos, key_pos]: each head's attention probabilities, after softmax, before
  they weight the values.
- `values`  # [batch, kv_head, pos, d_head]: the value projection's output per head (bias included), which
  norm-based attention needs; read-only.
- `layer_input`  # [batch, pos, d_model]: the hidden states entering a transformer layer (a forward pre-hook
  on the layer).

How `pattern` and `values` are reached depends on the attention module:
- modules that route attention through Transformers 5's `AttentionInterface` (BERT/MiniLM, GPT-2, Gemma 3,
  most hub models): `install` points the model's configs, once and for good, at the function that
  `probing.attention` registers here (`register_attention_function`; with no plan it is exactly eager). Inside
  `intervene` a context variable (`routed()`) holds the (attention module, kind, fn) triples that function
  applies: value readers see `value`, pattern edits run after the eager softmax and the output is recomputed
  as `pattern @ value`. Untouched heads are bit-identical to an eager run.
- modules that compute softmax inline (MPNet): `INLINE_ATTENTION`, the one table of their differences, names
  the submodule receiving the probabilities (a forward hook replaces its output) and the value projection (a
  forward hook reads it).

The fused read path (`probing.attention`'s `ReadPlan`) is the read-only fast path through the same function.

Every intervention is removed on exit, even on errors. Functions are `fn(tensor) -> tensor | None` (None:
leave it as it is, e.g. to cache it); they must not modify their input in place. They act only on forward
passes of the thread that entered the block: module hooks are wrapped by `_owner_only`, and the routed
triples live in a context variable, which each thread has its own of. No lock, no global edit table, no
configuration swapped per call.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from probing.models import LoadedModel

Z, PATTERN, VALUES, LAYER_INPUT = "z", "pattern", "values", "layer_input"
KINDS = (Z, PATTERN, VALUES, LAYER_INPUT)
# The name under which probing.attention's function is registered with Transformers' AttentionInterface.
ATTENTION_FUNCTION = "probing_reads"


@dataclass(frozen=True)
class InlineAttention:
    """An attention module that computes softmax inline (no AttentionInterface): the attribute names of the
    submodule that receives its probabilities (identity in eval mode), of its value projection, and of its
    per-head width."""
    probabilities: str
    values: str
    head_dim: str


# MPNet's differences, the only architecture-specific table: class name -> where its sites are.
INLINE_ATTENTION = {"MPNetSelfAttention": InlineAttention(probabilities="dropout", values="v",
                                                          head_dim="attention_head_size")}


@dataclass(frozen=True)
class Site:
    """One place in the forward pass: `kind` (one of KINDS) of transformer layer `layer`."""
    kind: str
    layer: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"site kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise ValueError(f"a site's layer must be an integer, got {self.layer!r}")


def _fresh_context(fn, *args, **kwargs):
    """fn(*args, **kwargs) with every context variable at its default: no plan, no routed edits (the
    architecture probes below must run plain eager forward passes whatever block their caller is in)."""
    return contextvars.Context().run(fn, *args, **kwargs)


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


def _tiny_forward(module: nn.Module) -> None:
    """One forward pass on four token ids (the probes of `head_layout`)."""
    with torch.inference_mode():
        module(input_ids=torch.tensor([[5, 6, 7, 8]], device=next(module.parameters()).device))


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
        _fresh_context(_tiny_forward, module)
    finally:
        for handle in handles:
            handle.remove()
    return called


def _layers_return_tuples(module: nn.Module, first_layer: nn.Module) -> bool:
    """Whether the model's layers return a tuple, from one tiny forward pass (eager path, no edits)."""
    seen = []
    handle = first_layer.register_forward_hook(_owner_only(lambda _m, _args, out: seen.append(isinstance(out, tuple))))
    try:
        _fresh_context(_tiny_forward, module)
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


def _owner_only(fn: Callable, otherwise: Callable = lambda *args, **kwargs: None) -> Callable:
    """`fn` on the thread that installs it; `otherwise` (default: return None, which leaves a hook's tensor as
    it is) on any other thread, whose forward pass through the same modules must not be touched."""
    owner = threading.get_ident()

    def call(*args, **kwargs):
        return (fn if threading.get_ident() == owner else otherwise)(*args, **kwargs)
    return call


def check_layers(layers, n_layers: int) -> None:
    """ValueError naming the layers that do not exist."""
    bad = [layer for layer in layers if not (isinstance(layer, int) and 0 <= layer < n_layers)]
    if bad:
        raise ValueError(f"layers {bad} do not exist: this model has {n_layers} layers (0-{n_layers - 1})")


# ---- Sites reached through the registered attention function -----------------------------------------------

@dataclass(frozen=True)
class Routed:
    """The interventions the registered attention function applies: (attention module, kind, fn) in the
    order entered (nested `intervene` blocks append)."""
    entries: tuple[tuple[object, str, Callable], ...] = ()

    def has_pattern_edits(self, module) -> bool:
        return any(target is module and kind == PATTERN for target, kind, _fn in self.entries)

    def read_values(self, module, value: torch.Tensor) -> None:
        """Hand `value` [batch, kv_head, pos, d_head] to this module's value readers."""
        for target, kind, fn in self.entries:
            if target is module and kind == VALUES:
                _read_only(fn, value.detach())

    def edit_pattern(self, module, pattern: torch.Tensor) -> torch.Tensor:
        """The pattern after every edit of `module`; the same tensor object when nothing changed it."""
        new = pattern
        for target, kind, fn in self.entries:
            if target is module and kind == PATTERN:
                edited = fn(new)
                new = new if edited is None else edited.to(pattern.dtype)
        return new


_ROUTED: contextvars.ContextVar[Routed | None] = contextvars.ContextVar("probing_routed_sites", default=None)


def routed() -> Routed | None:
    """The interventions of the enclosing `intervene` blocks that the attention function applies (None: none)."""
    return _ROUTED.get()


def _read_only(fn: Callable, tensor: torch.Tensor) -> None:
    if fn(tensor) is not None:
        raise ValueError("a `values` site is read-only: its function must return None")


def register_attention_function(function: Callable, mask_function: Callable) -> None:
    """Register `function` (and the mask builder it needs) with Transformers as ATTENTION_FUNCTION."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    AttentionInterface.register(ATTENTION_FUNCTION, function)
    AttentionMaskInterface.register(ATTENTION_FUNCTION, mask_function)


_install_lock = threading.Lock()


def _configs(model) -> list:
    """Every distinct config object the model's modules read `_attn_implementation` from."""
    seen, out = set(), []
    for module in [model, *model.modules()]:
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation") and id(config) not in seen:
            seen.add(id(config))
            out.append(config)
    return out


def attention_implementation(model) -> str:
    """The attention implementation the model's (top) config names."""
    return as_module(model).config._attn_implementation


def set_implementation(model, name: str) -> None:
    """Point every config of the model at attention implementation `name` (the caller holds the reason)."""
    for config in _configs(as_module(model)):
        config._attn_implementation = name


def install(model) -> bool:
    """Point a model that runs eager attention at ATTENTION_FUNCTION, once and for good (with no plan it
    computes exactly what eager does). True when every config now names it; False when the model uses another
    implementation (then it is left as it is)."""
    with _install_lock:
        configs = _configs(as_module(model))
        if any(c._attn_implementation not in ("eager", ATTENTION_FUNCTION) for c in configs):
            return False
        for config in configs:
            if config._attn_implementation != ATTENTION_FUNCTION:
                # the internal field: the public setter also rewrites sub-configs and validates
                config._attn_implementation_internal = ATTENTION_FUNCTION
        return True


def _uses_interface(module: nn.Module) -> bool:
    source = sys.modules.get(type(module).__module__)
    return (hasattr(source, "ALL_ATTENTION_FUNCTIONS") and hasattr(source, "eager_attention_forward")
            and hasattr(module, "config"))


def attention_modules(layer: nn.Module) -> tuple[list[nn.Module], nn.Module | None]:
    """(attention modules of this layer that call the interface, its inline-softmax attention module or None)."""
    interface, inline = [], None
    for sub in layer.modules():
        name = type(sub).__name__
        if name in INLINE_ATTENTION:
            inline = sub
        elif "attention" in name.lower() and _uses_interface(sub):
            interface.append(sub)
    return interface, inline


# ---- The one way to intervene ------------------------------------------------------------------------------

def _z_hook(layout: HeadLayout, fn: Callable):
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


def _layer_input_hook(fn: Callable):
    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        new = fn(hidden)
        if new is None:
            return None
        if args:
            return (new.to(hidden.dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new.to(hidden.dtype)}
    return hook


def _inline_hook(kind: str, spec: InlineAttention, attention_module: nn.Module, fn: Callable):
    """(submodule, forward hook) reaching `kind` of an inline-softmax attention module."""
    if kind == PATTERN:
        return getattr(attention_module, spec.probabilities), lambda _m, _args, output: fn(output)
    head_dim = getattr(attention_module, spec.head_dim)

    def read_values(_m, _args, output):            # [batch, pos, head*d_head] -> [batch, head, pos, d_head]
        _read_only(fn, output.detach().view(*output.shape[:-1], -1, head_dim).transpose(1, 2))
    return getattr(attention_module, spec.values), read_values


@contextlib.contextmanager
def intervene(model, edits: Mapping[Site, Callable[[torch.Tensor], torch.Tensor | None]]):
    """Inside the with-block, each site's tensor goes through its function (None: left as it is); yields the
    model's `HeadLayout`. Only this thread's forward passes are touched; everything is removed on exit."""
    module = as_module(model)
    layout = head_layout(module)
    for site in edits:
        if not isinstance(site, Site):
            raise ValueError(f"intervene takes {{Site: fn}}, got the key {site!r}")
    check_layers([site.layer for site in edits], layout.n_layers)
    handles, through_interface = [], []
    try:
        for site, fn in edits.items():
            if site.kind == Z:
                handles.append(layout.projections[site.layer].register_forward_pre_hook(
                    _owner_only(_z_hook(layout, fn))))
            elif site.kind == LAYER_INPUT:
                handles.append(layout.layers[site.layer].register_forward_pre_hook(
                    _owner_only(_layer_input_hook(fn)), with_kwargs=True))
            else:
                interface, inline = attention_modules(layout.layers[site.layer])
                if not interface and inline is None:
                    raise UnsupportedArchitectureError(
                        f"{type(module).__name__}: layer {site.layer}'s attention neither uses Transformers' "
                        f"AttentionInterface nor is in INLINE_ATTENTION; cannot reach its {site.kind}")
                through_interface += [(attention, site.kind, fn) for attention in interface]
                if inline is not None:
                    receiver, hook = _inline_hook(site.kind, INLINE_ATTENTION[type(inline).__name__], inline, fn)
                    handles.append(receiver.register_forward_hook(_owner_only(hook)))
        # Values are read where the function runs (a model loaded with another implementation leaves none);
        # pattern edits need it to run.
        if through_interface and not install(module) and any(k == PATTERN for _m, k, _fn in through_interface):
            raise UnsupportedArchitectureError(
                f"{type(module).__name__} runs a fused attention implementation; load it with "
                "attn_implementation='eager' to edit attention patterns")
        outer = _ROUTED.get()
        token = _ROUTED.set(Routed((outer.entries if outer else ()) + tuple(through_interface))) \
            if through_interface else None
        try:
            yield layout
        finally:
            if token is not None:
                _ROUTED.reset(token)
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def skip_layers(model, below: int):
    """Layers 0..below-1 pass their input through without computing anything (as a tuple where the layout
    says layers return tuples), on this thread's forward passes only."""
    layout = head_layout(model)
    check_layers([below], layout.n_layers)
    skipped = layout.layers[:below]

    def passthrough(*args, **kwargs):
        states = args[0] if args else kwargs["hidden_states"]
        return (states,) if layout.returns_tuple else states

    for module in skipped:
        # an instance attribute shadows the class's forward
        module.forward = _owner_only(passthrough, otherwise=module.forward)
    try:
        yield
    finally:
        for module in skipped:
            del module.forward
