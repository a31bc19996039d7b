"""Text to pieces and words (once), and the forward passes that return attention.

`encode_and_align` is the one place text becomes pieces and words: it tokenises every text once (fast
tokenizer, with offsets, `encode`) and lays out each example's spans on those pieces (`alignment.make_layout`).
Everything downstream (the dataset scorer, the demo's scores, shading and views) reads these arrays and never
tokenises again. `length_batches` groups encodings by length so that padding stays small;
`forward_attentions` runs one batch under `inference_mode`; `attend` is the single-sentence forward the demo
makes once per request.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probing.defaults import BATCH_TOKENS, MENTION
from probing.alignment import AlignmentError, Layout, make_layout
from probing.models import LoadedModel


@dataclass
class Encoded:
    """One tokenised text: piece ids, their character offsets and word ids."""
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    truncated: bool


def encode(loaded: LoadedModel, texts: list[str], chunk: int = 256) -> list[Encoded]:
    """Tokenise texts with the fast tokenizer, `chunk` at a time, truncated to the model's limit, with offsets
    and word ids (chunks bound the tokenizer's transient memory on big datasets)."""
    out = []
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        batch = loaded.tokenizer(part, truncation=True, max_length=loaded.max_length,
                                 return_offsets_mapping=True, return_overflowing_tokens=False)
        for i, text in enumerate(part):
            offsets = [tuple(o) for o in batch["offset_mapping"][i]]
            last_end = max((e for s, e in offsets), default=0)
            out.append(Encoded(input_ids=batch["input_ids"][i], offsets=offsets, word_ids=batch.word_ids(i),
                               truncated=bool(text[last_end:].strip())))
    return out


def encode_and_align(loaded: LoadedModel, examples, mention: str = MENTION
                     ) -> tuple[list[Encoded], list[Layout | None], list[str]]:
    """Encode every text once and lay out its spans under the mention rule (`alignment.MENTION_RULES`).

    Returns (encodings, layouts, skip reasons); a layout is None, with a reason "id: why", when a span maps
    to no piece (`AlignmentError`)."""
    encoded = encode(loaded, [e.text for e in examples])
    layouts, skipped = [], []
    for example, enc in zip(examples, encoded):
        try:
            layouts.append(make_layout(example.text, example.source_span, example.target_span,
                                       example.candidate_spans, enc.offsets, enc.word_ids, mention=mention))
        except AlignmentError as err:
            layouts.append(None)
            skipped.append(f"{example.id}: {err}")
    return encoded, layouts, skipped


def length_batches(lengths: list[int], batch_tokens: int = BATCH_TOKENS, max_batch: int = 64,
                   max_cells: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first).

    A batch holds at most `batch_tokens` padded pieces and at most `max_cells` attention cells per head
    (batch x width x width; default batch_tokens x 128), so the attention kept for one batch has the same
    bound whatever the longest text in the data: peak memory does not grow with the dataset.
    The long-document path: a text longer than `batch_tokens` (or than `max_cells` allows) starts a batch of
    its own and runs alone; on the fused attention path (`probing.attention`) such a text costs its forward
    pass plus a few rows and a band per layer, never a [pos, pos] pattern.
    """
    max_cells = max_cells or batch_tokens * 128
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]  # the first is the longest
        size = len(current) + 1
        if current and (size * width > batch_tokens or size * width * width > max_cells or size > max_batch):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_ids(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad piece ids into input_ids and attention_mask tensors, each [batch, pos]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


def forward_attentions(loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Per-layer attention weights, a tuple of [batch, head, query_pos, key_pos] tensors; raises if the model
    returns none."""
    device = next(loaded.model.parameters()).device
    with torch.inference_mode():
        out = loaded.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                           output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions or attentions[0] is None:
        raise RuntimeError(f"model {loaded.name!r} returned no attentions; load it with attn_implementation='eager'")
    return attentions


def _libc():
    import ctypes
    import ctypes.util
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS after a batch (glibc's malloc_trim).

    Attention tensors of every batch shape come and go; without this, glibc keeps the fragmented heap and a
    run's resident memory grows with the number of batches instead of staying at one batch's worth.
    """
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


@dataclass
class SentenceAttention:
    """One sentence's pieces and full attention, as plain arrays (the demo's view of a forward pass)."""
    text: str
    tokens: list[str]
    encoded: Encoded
    attention: np.ndarray  # [layer, head, query_pos, key_pos], float32


def attend(loaded: LoadedModel, text: str, encoded: Encoded) -> SentenceAttention:
    """One forward pass over a text already encoded: its tokens and its attention for every layer and head."""
    ids, mask = pad_ids([encoded.input_ids], loaded.tokenizer.pad_token_id)
    attentions = forward_attentions(loaded, ids, mask)
    stacked = torch.stack([a[0] for a in attentions]).float().cpu().numpy()
    tokens = loaded.tokenizer.convert_ids_to_tokens(encoded.input_ids)
    return SentenceAttention(text=text, tokens=tokens, encoded=encoded, attention=stacked)


def run_with_attention(loaded: LoadedModel, text: str) -> SentenceAttention:
    """Tokenise one text and return its tokens and its attention for every layer and head."""
    return attend(loaded, text, encode(loaded, [text])[0])
