"""Our attention function: the layer's output from the fused SDPA kernel, and only the attention we read.

`output_attentions=True` returns every layer's full (B, H, T, T) pattern; the head scorer reads a few rows of
it (the source pieces') and a narrow band (each piece -> the next word's pieces). This module registers an
attention function with Transformers 5's `AttentionInterface` that, inside each layer:

1. computes the layer's output with the fused kernel (`torch.ops.aten._scaled_dot_product_flash_attention_for_cpu`,
   the kernel `F.scaled_dot_product_attention` itself runs on CPU), which also returns each row's
   log-sum-exp normaliser (lse);
2. from the same queries and keys (after rotary embeddings) computes the softmax of the source rows
   (B, H, S, T), and the band of probabilities P[t, t ± d] = exp(q_t·k_{t±d}·scale + mask - lse_t) for
   d = 1..D, as (B, H, T, D);
3. for `renormalize` (drop attention to special tokens), the band needs each row's normaliser over word
   columns only, computed exactly by a chunked log-sum-exp (a second pass over the keys, never T² at once).

Nothing of size T² per layer is kept: a layer leaves a `LayerRead` of S·T + T·D numbers per head.

The function is registered as `probing.sites.ATTENTION_FUNCTION` and is where `probing.sites` reaches the
`pattern` and `values` sites of interface-routed modules. Which path runs is chosen per call by one context
variable (thread-safe for the demo's server threads):
- no plan (anyone calling the model directly, `output_attentions=True`, the demo's views): the module's own
  eager function with the eager mask, exactly as if the model had been loaded with `attn_implementation="eager"`;
  with pattern edits from `probing.sites.intervene` (activation patching), each edit of this module's
  probabilities [batch, head, query_pos, key_pos] in the order entered, and the output recomputed as
  `pattern @ value` (values repeated per query head under GQA); untouched modules are bit-identical to eager;
- a `ReadPlan`: the fused kernel plus the reads above (the mask is built as for "sdpa"); read-only;
- a bare plan (`bare=True`): transformers' own `sdpa_attention_forward`, the reference "fused forward".

Norm-based attention (Kobayashi et al. 2020, "Attention is not only a weight"): `measuring_norms(grams, model)`
reads each layer's `values` site (on any path) and leaves ||f_h(x_t)|| per head and piece, where
f_h(x_t) = v_t^h W_O^h is the head's value vector (bias b_V included, as the module computed it) through its own
slice of the output projection; ||alpha_st f_h(x_t)|| = alpha_st ||f_h(x_t)|| since alpha >= 0, so the readers
multiply their attention weights by these norms. The norm is computed as sqrt(v G_h v^T) with
G_h = W_O^h (W_O^h)^T [d_head, d_head], made once per model: d_head^2 work per piece and head instead of
d_head * d_model (equal to the direct form to float32 rounding, ~1e-7 relative). Not asked for, it costs one
context-variable read per layer.

`probing.sites.install(model)` points a model's configs at this function once (no plan: exactly eager);
nothing swaps the config per call. Models whose attention modules do not go through `AttentionInterface`
(MPNet) are detected by a one-off probe (`supports_reads`) and keep the eager `output_attentions` path.
"""
from __future__ import annotations

import contextvars
import sys
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from probing.defaults import SOURCE_PIECES
from probing import sites
from probing.alignment import adjacent_from_band, band_width   # the band's arithmetic, shared with the eager path

IMPLEMENTATION = sites.ATTENTION_FUNCTION
FUSED, EAGER = "fused", "eager"
PATH_NAMES = {FUSED: "fused: SDPA kernel + source rows and adjacent-word band only",
              EAGER: "eager: output_attentions=True, full (B, H, T, T) patterns"}

# Rows of logits held at once by the chunked log-sum-exp: about 32 MB of float32 per chunk.
_LSE_CHUNK_CELLS = 1 << 23


class UnsupportedAttention(RuntimeError):
    """The layer needs something the fused reads do not reproduce (logit soft-capping, position bias, dropout)."""


class FusedPathUnavailable(UserWarning):
    """Said when "auto" falls back to the eager path because the model cannot use the fused reads."""


# ---- What one forward pass should read ----------------------------------------------------------------------

@dataclass
class LayerRead:
    """What one layer leaves behind: the source rows and the adjacent band of its attention probabilities."""
    rows: torch.Tensor | None      # (B, H, S, T) softmax rows of the source pieces (renormalised if asked)
    band: torch.Tensor | None      # (B, H, T, D) P[t, t + step*(d+1)], 0 outside the text (renormalised if asked)
    step: int = 1                  # +1: band to later pieces; -1: to earlier pieces (a decoder's reversed reading)

    def unit_attention(self, from_index, from_weights: torch.Tensor, to_matrix: torch.Tensor) -> torch.Tensor:
        """As `alignment.unit_attention` on the full pattern: mean over source pieces, sum over unit pieces."""
        rows = (self.rows * from_weights[:, None, :, None]).sum(2)                    # (B, H, T)
        return torch.bmm(rows, to_matrix)

    def adjacent_word_attention(self, words: torch.Tensor, reverse: bool = False,
                                source_pieces: str = SOURCE_PIECES) -> torch.Tensor:
        """As `alignment.adjacent_word_attention` on the full pattern, from the band alone: (B, H, W-1)."""
        return adjacent_from_band(self.band, words, reverse, source_pieces)

    def weighted_by(self, norms: torch.Tensor) -> "LayerRead":
        """The source rows as norms alpha_st ||f(x_t)|| (norms [B, H, T], `transformed_norms`); no band."""
        return LayerRead(rows=self.rows * norms[:, :, None, :self.rows.shape[-1]].to(self.rows.device),
                         band=None, step=self.step)


@dataclass
class FullLayer:
    """The reference: one layer's whole (B, H, T, T) pattern from `output_attentions` (renormalised if asked)."""
    attention: torch.Tensor

    def unit_attention(self, from_index, from_weights, to_matrix) -> torch.Tensor:
        from probing.alignment import unit_attention
        return unit_attention(self.attention, from_index, from_weights, to_matrix)

    def adjacent_word_attention(self, words, reverse: bool = False, source_pieces: str = SOURCE_PIECES) -> torch.Tensor:
        from probing.alignment import adjacent_word_attention
        return adjacent_word_attention(self.attention, words, reverse=reverse, source_pieces=source_pieces)

    def weighted_by(self, norms: torch.Tensor) -> "FullLayer":
        """The pattern as norms alpha_st ||f(x_t)|| (norms [B, H, T], `transformed_norms`)."""
        keys = self.attention.shape[-1]
        return FullLayer(self.attention * norms[:, :, None, :keys].to(self.attention.device))


@dataclass
class ReadPlan:
    """What the attention function reads during one forward pass, and where it leaves it."""
    source_index: torch.Tensor | None = None   # (B, S) piece rows to read in full (padded with any valid index)
    band_width: int = 0                        # D: columns read beside each piece (0: no band)
    step: int = 1                              # +1 or -1: which side the band lies on
    is_word: torch.Tensor | None = None        # (B, T) bool; given = renormalise over word columns only
    bare: bool = False                         # only the fused output, nothing read (the benchmark's floor)
    layers: list[LayerRead] = field(default_factory=list)
    _masks: dict = field(default_factory=dict)  # id(bool mask) -> (mask, additive float mask), per forward

    def additive(self, mask: torch.Tensor | None, dtype) -> torch.Tensor | None:
        """The float mask (0 / -inf) the kernel takes; converted once per forward, not once per layer."""
        if mask is None or mask.dtype != torch.bool:
            return None if mask is None else mask.to(dtype)
        cached = self._masks.get(id(mask))
        if cached is None or cached[0] is not mask:
            cached = (mask, torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf")))
            self._masks[id(mask)] = cached
        return cached[1]


_PLAN: contextvars.ContextVar[ReadPlan | None] = contextvars.ContextVar("probing_read_plan", default=None)


@dataclass
class NormPlan:
    """Per layer, each head's output Gram matrix W_O^h (W_O^h)^T, [head, d_head, d_head] (`head_output_grams`);
    the forward pass leaves, per layer, ||f_h(x_t)|| as [batch, head, pos] (float32; a layer's first call)."""
    grams: list[torch.Tensor]
    by_layer: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def norms(self) -> list[torch.Tensor]:
        """The norms of layers 0, 1, ... as far as they were seen."""
        out = []
        while len(out) in self.by_layer:
            out.append(self.by_layer[len(out)])
        return out

    def reader(self, layer: int) -> Callable[[torch.Tensor], None]:
        """fn(value [batch, kv_head, pos, d_head]) leaving layer `layer`'s norms (the `values` site's reader)."""
        def read(value):
            if layer not in self.by_layer:
                self.by_layer[layer] = transformed_norms(value, self.grams[layer])
        return read


@contextmanager
def measuring_norms(grams: list[torch.Tensor], model):
    """Inside this block (this thread's forward passes only) every layer of `model` leaves its value-vector
    norms ||v_t^h W_O^h|| in the yielded `NormPlan` (see the module docstring), through the `values` site."""
    plan = NormPlan(list(grams))
    with sites.intervene(model, {sites.Site(sites.VALUES, layer): plan.reader(layer) for layer in range(len(grams))}):
        yield plan


def transformed_norms(value: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """||f_h(x_t)|| = ||v_t^h W_O^h|| = sqrt(v_t^h G_h (v_t^h)^T): value [batch, kv_head, pos, d_head] (under GQA
    query head h reads kv head h // repeat), gram [head, d_head, d_head] (`head_output_grams`) ->
    [batch, head, pos] float32."""
    repeat = gram.shape[0] // value.shape[1]
    value = value.repeat_interleave(repeat, dim=1) if repeat > 1 else value
    value = value.float()
    squared = (torch.einsum("bhtd,hde->bhte", value, gram.to(value.device)) * value).sum(-1)
    return squared.clamp_min(0).sqrt()          # G_h is positive semi-definite; the clamp only meets rounding


def head_output_grams(layout) -> list[torch.Tensor]:
    """Per layer, G_h = W_O^h (W_O^h)^T [head, d_head, d_head] in float32, W_O split by head from a
    `probing.hooks.HeadLayout` (its output projections: nn.Linear weight [d_model, head*d_head], or GPT-2's
    Conv1D weight [head*d_head, d_model])."""
    grams = []
    for projection in layout.projections:
        weight = projection.weight.detach().float()
        if isinstance(projection, torch.nn.Linear):
            weight = weight.t()
        per_head = weight.reshape(layout.n_heads, layout.head_dim, layout.hidden_size)   # [head, d_head, d_model]
        grams.append(torch.einsum("hdo,heo->hde", per_head, per_head))
    return grams


_GRAMS: "weakref.WeakKeyDictionary[torch.nn.Module, list[torch.Tensor]]" = weakref.WeakKeyDictionary()


def model_grams(model) -> list[torch.Tensor]:
    """`head_output_grams` of a model's head layout, made once per model (the library never changes weights),
    not once per batch."""
    grams = _GRAMS.get(model)
    if grams is None:
        grams = _GRAMS[model] = head_output_grams(sites.head_layout(model))
    return grams


@contextmanager
def reading(plan: ReadPlan | None):
    """Run the model's forward passes inside this block with `plan` (this thread/context only; None: eager)."""
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


# ---- The registered functions ----------------------------------------------------------------------------

def _mask_function(*args, **kwargs):
    """Masks as "sdpa" builds them under a plan (boolean, or None when causal/bidirectional), else as "eager"."""
    from transformers.masking_utils import eager_mask, sdpa_mask
    return (sdpa_mask if isinstance(_PLAN.get(), ReadPlan) else eager_mask)(*args, **kwargs)


def _eager_function(module):
    """The eager attention function of the module's own modelling file (its exact reference math)."""
    function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if function is None:
        raise UnsupportedAttention(f"{type(module).__name__} has no eager_attention_forward")
    return function


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """The function registered as `IMPLEMENTATION`; query (B, H, T, d), key/value (B, H_kv, T, d)."""
    routed = sites.routed()             # interventions of enclosing `sites.intervene` blocks (None: none)
    if routed is not None:
        routed.read_values(module, value)
    plan = _PLAN.get()
    if plan is None:
        if getattr(module, "reorder_and_upcast_attn", False):      # GPT-2's optional upcast path
            output, pattern = module._upcast_and_reordered_attn(query, key, value, attention_mask)
        else:
            if is_causal is not None:
                kwargs["is_causal"] = is_causal
            output, pattern = _eager_function(module)(module, query, key, value, attention_mask, dropout=dropout,
                                                      scaling=scaling, **kwargs)
        if routed is None:
            return output, pattern
        return _edited(module, routed, output, pattern, value)
    if routed is not None and routed.has_pattern_edits(module):
        raise UnsupportedAttention("attention-pattern edits run on the eager path, not inside fused reads")
    if plan.bare:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if dropout or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None \
            or getattr(module, "reorder_and_upcast_attn", False):
        raise UnsupportedAttention(f"{type(module).__name__}: soft-capping, position bias, dropout or "
                                   "upcast-and-reorder are not reproduced by the fused reads")
    layer = len(plan.layers)
    output, read = _fused_layer(module, plan, layer, query, key, value, attention_mask, scaling, is_causal)
    plan.layers.append(read)
    return output, None


def _edited(module, routed: sites.Routed, output, pattern, value):
    """(output [batch, pos, head, d_head], pattern) after this module's edits: untouched, the eager output
    itself; edited, `pattern @ value` (under GQA query head h reads key/value head h // repeat)."""
    new = routed.edit_pattern(module, pattern)
    if new is pattern:
        return output, pattern
    repeat = new.shape[1] // value.shape[1]
    value = value.repeat_interleave(repeat, dim=1) if repeat > 1 else value
    return torch.matmul(new, value).transpose(1, 2).contiguous(), new


sites.register_attention_function(attention_forward, _mask_function)


# ---- One layer ----------------------------------------------------------------------------------------

def _fused_layer(module, plan: ReadPlan, layer: int, query, key, value, attention_mask, scaling, is_causal):
    """The layer's output (B, T, H, d) and its LayerRead."""
    from transformers.integrations.sdpa_attention import repeat_kv
    n_rep = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    n_pieces = query.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    causal = n_pieces > 1 and attention_mask is None and \
        (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    additive = plan.additive(attention_mask, query.dtype)          # (B|1, 1, T, T) or None
    if additive is not None:
        additive = additive[..., :n_pieces, :key.shape[2]]
    output, lse = fused_attention(query, key, value, additive, causal, scale)
    rows = band = None
    if plan.source_index is not None:
        rows = source_rows(query, key, plan.source_index, additive, causal, scale)
        if plan.is_word is not None:
            rows = _drop_special(rows, plan.is_word)
    if plan.band_width > 0:
        if plan.is_word is not None:       # the normaliser over word columns only
            lse = row_logsumexp(query, key, additive, causal, scale, plan.is_word)
        band = band_probabilities(query, key, lse, additive, causal, scale, plan.band_width, plan.step,
                                  plan.is_word)
    return output.transpose(1, 2).contiguous(), LayerRead(rows=rows, band=band, step=plan.step)


def fused_attention(query, key, value, additive, causal: bool, scale: float):
    """(output (B, H, T, d), lse (B, H, T)) from one fused kernel call; on other devices, SDPA plus a chunked lse."""
    if query.device.type == "cpu":
        output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, causal, attn_mask=additive, scale=scale)
        return output, lse
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=additive,
                                                              is_causal=causal, scale=scale)
    return output, row_logsumexp(query, key, additive, causal, scale)


def _mask_block(additive, causal: bool, start: int, stop: int, n_keys: int, device, dtype) -> torch.Tensor:
    """The additive mask for query rows start..stop-1: (B|1, 1, rows, T), 0 or -inf."""
    if additive is not None:
        return additive[:, :, start:stop, :].to(dtype)
    block = torch.zeros(1, 1, stop - start, n_keys, dtype=dtype, device=device)
    if causal:
        later = torch.arange(n_keys, device=device)[None, :] > torch.arange(start, stop, device=device)[:, None]
        block = block.masked_fill(later, float("-inf"))
    return block


def row_logsumexp(query, key, additive, causal: bool, scale: float, is_word: torch.Tensor | None = None):
    """log Σ_c exp(q_t·k_c·scale + mask_tc) for every row t, over word columns only when is_word is given.

    Computed in blocks of rows so that at most `_LSE_CHUNK_CELLS` logits exist at once: (B, H, T), float32.
    """
    batch, heads, n_pieces, _ = query.shape
    n_keys = key.shape[2]
    chunk = max(1, _LSE_CHUNK_CELLS // max(1, batch * heads * n_keys))
    word_columns = None
    if is_word is not None:
        word_columns = torch.zeros(is_word.shape, dtype=torch.float32, device=query.device)
        word_columns = word_columns.masked_fill(~is_word, float("-inf"))[:, None, None, :]   # (B, 1, 1, T)
    out = []
    for start in range(0, n_pieces, chunk):
        stop = min(start + chunk, n_pieces)
        logits = torch.matmul(query[:, :, start:stop], key.transpose(2, 3)).float() * scale
        logits = logits + _mask_block(additive, causal, start, stop, n_keys, query.device, torch.float32)
        if word_columns is not None:
            logits = logits + word_columns
        out.append(torch.logsumexp(logits, dim=-1))
    return torch.cat(out, dim=2)


def source_rows(query, key, source_index, additive, causal: bool, scale: float) -> torch.Tensor:
    """Softmax rows of the source pieces, (B, H, S, T), as eager computes them (matmul·scale + mask, softmax)."""
    batch, heads, _, head_dim = query.shape
    n_keys = key.shape[2]
    picked = query.gather(2, source_index[:, None, :, None].expand(batch, heads, -1, head_dim))  # (B, H, S, d)
    logits = torch.matmul(picked, key.transpose(2, 3)) * scale                                  # (B, H, S, T)
    if additive is not None:
        mask_rows = additive.expand(batch, -1, -1, -1).gather(
            2, source_index[:, None, :, None].expand(batch, 1, -1, n_keys))
        logits = logits + mask_rows
    elif causal:
        later = torch.arange(n_keys, device=query.device)[None, None, None, :] > source_index[:, None, :, None]
        logits = logits.masked_fill(later, float("-inf"))
    return torch.softmax(logits.float(), dim=-1)


def band_logits(query, key, width: int, step: int, block: int = 64) -> torch.Tensor:
    """q_t·k_{t + step*d} for d = 1..width, as (B, H, T, width) (0 where t + step*d is outside the text).

    Rows go in blocks of `block`; each block meets only the keys within `width` of it, so the cost is
    B·H·T·(block + 2·width)·d, never T² (a text of at most `block` pieces is one plain matmul).
    """
    batch, heads, n_pieces, head_dim = query.shape
    if n_pieces <= block:
        # One block holds the whole text: the same (T x d) @ (d x (T + 2w)) product as the one window below,
        # bit for bit, with the zero-padded keys read through a transposed view: no padded copy of q and no
        # 5-d window (the fixed cost that dominated short texts). Outside the text it meets the zero keys: 0.
        key = torch.nn.functional.pad(key, (0, 0, width, width))                   # key[j] = k[j - width]
        logits = torch.matmul(query, key.transpose(2, 3))                          # (B, H, T, T + 2w)
        where = (torch.arange(n_pieces, device=query.device)[:, None] + width
                 + step * torch.arange(1, width + 1, device=query.device)[None, :])
        return logits.gather(3, where.expand(batch, heads, n_pieces, width))
    rows = min(block, n_pieces)
    n_blocks = -(-n_pieces // rows)
    padded = n_blocks * rows
    query = torch.nn.functional.pad(query, (0, 0, 0, padded - n_pieces))
    key = torch.nn.functional.pad(key, (0, 0, width, padded - n_pieces + width))      # key[j] = k[j - width]
    windows = key.unfold(2, rows + 2 * width, rows)                            # (B, H, n_blocks, d, rows+2w)
    logits = torch.matmul(query.view(batch, heads, n_blocks, rows, head_dim), windows)
    # Row r of block b is piece t = b*rows + r; piece t + step*d sits at window position r + width + step*d.
    where = (torch.arange(rows, device=query.device)[:, None] + width
             + step * torch.arange(1, width + 1, device=query.device)[None, :])
    band = logits.gather(4, where.expand(batch, heads, n_blocks, rows, width))
    return band.reshape(batch, heads, padded, width)[:, :, :n_pieces]


def band_probabilities(query, key, lse, additive, causal: bool, scale: float, width: int, step: int,
                       is_word: torch.Tensor | None = None) -> torch.Tensor:
    """P[t, t + step*d] for d = 1..width as (B, H, T, width): exp(logit + mask - lse_t); 0 outside the text,
    where masked, and (is_word given) on non-word columns."""
    batch, heads, n_pieces, _ = query.shape
    columns = torch.arange(n_pieces, device=query.device)[:, None] + \
        step * torch.arange(1, width + 1, device=query.device)                     # (T, D)
    allowed = (columns >= 0) & (columns < n_pieces)
    columns = columns.clamp(0, n_pieces - 1)
    logits = band_logits(query, key, width, step).float() * scale                  # (B, H, T, D)
    if additive is not None:
        logits = logits + additive.expand(batch, -1, -1, -1).gather(
            3, columns.expand(batch, 1, n_pieces, width)).float()
    elif causal and step > 0:
        allowed = torch.zeros_like(allowed)
    allowed = allowed & torch.isfinite(logits) & torch.isfinite(lse)[..., None]
    if is_word is not None:
        allowed = allowed & is_word.gather(1, columns.view(1, -1).expand(batch, -1)).view(batch, 1, n_pieces, width)
    return torch.where(allowed, torch.exp(logits - lse[..., None]), 0.0)


def band_from_full(attention: torch.Tensor, width: int, step: int) -> torch.Tensor:
    """The same band read out of a full (B, H, T, T) pattern (the probe and tests)."""
    batch, heads, n_pieces, _ = attention.shape
    columns = torch.arange(n_pieces, device=attention.device)[:, None] + \
        step * torch.arange(1, width + 1, device=attention.device)
    inside = (columns >= 0) & (columns < n_pieces)
    values = attention.gather(3, columns.clamp(0, n_pieces - 1).expand(batch, heads, -1, -1))
    return torch.where(inside, values, 0.0).float()


def _drop_special(attention: torch.Tensor, is_word: torch.Tensor) -> torch.Tensor:
    """Zero special/padding columns and renormalise each row (as `alignment.drop_special_columns`)."""
    from probing.alignment import drop_special_columns
    return drop_special_columns(attention, is_word)


# ---- Installing on a model, and deciding which path a model takes -------------------------------------------

_lock = threading.Lock()
_support: "weakref.WeakKeyDictionary[object, bool]" = weakref.WeakKeyDictionary()


def supports_reads(loaded) -> bool:
    """Whether the fused reads serve this model: installs our function once, and keeps it only if a probe
    forward reaches every layer through it and matches eager `output_attentions` on a short text."""
    model = loaded.model
    with _lock:
        if model in _support:
            return _support[model]
        previous = model.config._attn_implementation
        if previous not in ("eager", IMPLEMENTATION):
            _support[model] = False
            return False
        sites.set_implementation(model, IMPLEMENTATION)
        try:
            ok = _probe(loaded)
        except Exception:          # any failure in the probe means: keep the reference path
            ok = False
        if not ok:
            sites.set_implementation(model, previous)
        _support[model] = ok
        return ok


def _probe(loaded) -> bool:
    """One short text: our rows and band against eager's full pattern, to 1e-4, on every layer."""
    encoded = loaded.tokenizer(["The doctor did not call the nurse because she was very late."], return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    n_pieces = ids.shape[1]
    source = torch.tensor([[n_pieces // 2, n_pieces - 2]])
    for step in (1, -1):
        layers = read_forward(loaded, ids, mask, source_index=source, band_width=4, step=step)
        full = _eager_forward(loaded, ids, mask)
        if len(layers) != loaded.n_layers or len(full) != loaded.n_layers:
            return False
        for read, attention in zip(layers, full):
            attention = attention.float().cpu()
            rows = attention[:, :, source[0]]
            if not torch.allclose(read.rows.cpu(), rows, atol=1e-4) or \
                    not torch.allclose(read.band.cpu(), band_from_full(attention, 4, step), atol=1e-4):
                return False
    return True


def _device(loaded):
    return next(loaded.model.parameters()).device


def _eager_forward(loaded, input_ids, attention_mask):
    with torch.inference_mode():
        out = loaded.model(input_ids=input_ids.to(_device(loaded)),
                           attention_mask=attention_mask.to(_device(loaded)), output_attentions=True)
    return out.attentions


def read_forward(loaded, input_ids, attention_mask, *, source_index=None, band_width: int = 0, step: int = 1,
                 is_word=None) -> list[LayerRead]:
    """One forward pass through the fused path; returns one LayerRead per layer (the model must support it)."""
    device = _device(loaded)
    plan = ReadPlan(source_index=None if source_index is None else source_index.to(device),
                    band_width=band_width, step=step, is_word=None if is_word is None else is_word.to(device))
    with reading(plan), torch.inference_mode():
        loaded.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
    if len(plan.layers) != loaded.n_layers:
        raise RuntimeError(f"model {loaded.name!r}: the fused reads saw {len(plan.layers)} of "
                           f"{loaded.n_layers} layers")
    return plan.layers


def bare_forward(loaded, input_ids, attention_mask) -> None:
    """The bare batched forward with transformers' SDPA function and no attentions (the benchmark's floor)."""
    if not supports_reads(loaded):
        raise UnsupportedAttention(f"model {loaded.name!r} does not route attention through AttentionInterface")
    device = _device(loaded)
    with reading(ReadPlan(bare=True)), torch.inference_mode():
        loaded.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))


def choose_path(loaded, path: str = "auto") -> str:
    """"auto": fused where the model supports it, else eager; "fused" insists (error if unsupported)."""
    if path not in ("auto", FUSED, EAGER):
        raise ValueError(f"attention path {path!r} is not one of auto, fused, eager")
    if path == EAGER:
        return EAGER
    supported = supports_reads(loaded)
    if path == FUSED and not supported:
        raise UnsupportedAttention(f"model {loaded.name!r} does not route attention through Transformers' "
                                   "AttentionInterface; use the eager path")
    if not supported:      # said, not silent: the eager path holds every layer's full pattern (slower, more memory)
        import warnings
        warnings.warn(f"model {loaded.name!r} cannot use the fused attention reads (its attention does not go "
                      "through Transformers' AttentionInterface, or the reads did not match its eager patterns); "
                      "falling back to the eager path (output_attentions)", FusedPathUnavailable, stacklevel=3)
    return FUSED if supported else EAGER


def read_layers(loaded, input_ids, attention_mask, source_index, words, *, path: str, band: bool,
                reverse: bool, renormalize: bool, norm_grams: list[torch.Tensor] | None = None):
    """Per-layer attention reads for one batch: LayerRead (fused) or FullLayer (eager), both offering
    `.unit_attention(from_index, from_weights, to_matrix)`, `.adjacent_word_attention(words, reverse)` and
    `.weighted_by(norms)`. With `norm_grams` (`head_output_grams`), returns (reads, norms): per layer
    ||f_h(x_t)|| [B, H, T] from the same forward pass (MPNet: from a hook on its value projection), or None when
    they were not seen on every layer."""
    is_word = words >= 0
    from contextlib import nullcontext
    with (measuring_norms(norm_grams, loaded.model) if norm_grams else nullcontext()) as norm_plan:
        if path == EAGER:
            from probing.runner import forward_attentions
            full = forward_attentions(loaded, input_ids, attention_mask)
            reads = [FullLayer(_drop_special(a.float(), is_word.to(a.device)) if renormalize else a.float())
                     for a in full]
        else:
            reads = read_forward(loaded, input_ids, attention_mask, source_index=source_index,
                                 band_width=band_width(words) if band else 0, step=-1 if reverse else 1,
                                 is_word=is_word if renormalize else None)
    if norm_grams is None:
        return reads
    seen = norm_plan.norms if norm_plan is not None else []
    return reads, (seen if len(seen) == len(reads) else None)
