"""A plain, independent re-implementation of the head scores, the way a notebook would do it.

One sentence at a time, the full attention turned into numpy, Python loops over words and heads
(Clark et al.'s word-level conversion). It shares no scoring code with `probing.heads`, so the tests use it
as the independent recomputation, and `analysis bench` times it as the "naive" way.
"""
from __future__ import annotations

import numpy as np
import torch


def words_of(word_ids, offsets) -> dict[int, list[int]]:
    """Word id -> its piece indices, skipping special tokens (no word id or an empty offset)."""
    groups: dict[int, list[int]] = {}
    for piece, (w, (s, e)) in enumerate(zip(word_ids, offsets)):
        if w is not None and e > s:
            groups.setdefault(w, []).append(piece)
    return groups


def word_attention_matrix(attention: np.ndarray, piece_groups: list[list[int]]) -> np.ndarray:
    """One head's (T, T) piece attention -> (G, G) group attention: sum over attended-to, mean over attending.

    Clark et al.'s `get_word_word_attention` ("mean" mode), with groups given as lists of piece indices;
    pieces in no group (special tokens) are dropped.
    """
    columns = np.stack([attention[:, group].sum(axis=-1) for group in piece_groups], axis=-1)   # (T, G)
    return np.stack([columns[group].mean(axis=0) for group in piece_groups], axis=0)            # (G, G)


def naive_example_scores(loaded, example, is_causal: bool | None = None) -> dict[str, np.ndarray]:
    """attention, hit and next_word arrays of shape (layers, heads) for one example."""
    is_causal = loaded.is_causal if is_causal is None else is_causal
    src_span, tgt_span, candidates = example.source_span, example.target_span, example.candidate_spans
    reverse = example.relation == "negation" and is_causal
    if reverse:
        src_span, tgt_span, candidates = tgt_span, src_span, None
    enc = loaded.tokenizer(example.text, return_offsets_mapping=True, truncation=True,
                           max_length=loaded.max_length, return_tensors="pt")
    offsets = [tuple(o) for o in enc["offset_mapping"][0].tolist()]
    groups = words_of(enc.word_ids(0), offsets)
    word_list = sorted(groups)

    def overlapping(span):
        return [k for k, w in enumerate(word_list)
                if any(offsets[p][0] < span[1] and span[0] < offsets[p][1] for p in groups[w])]

    src, tgt = overlapping(src_span), overlapping(tgt_span)
    if candidates:
        units = [overlapping(c) for c in candidates]
        target_index = list(candidates).index(tuple(tgt_span))
    else:
        units = [tgt] + [[k] for k in range(len(word_list)) if k not in src and k not in tgt]
        target_index = 0
    with torch.no_grad():
        out = loaded.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_attentions=True)
    n_layers, n_heads = len(out.attentions), out.attentions[0].shape[1]
    result = {"attention": np.zeros((n_layers, n_heads)), "hit": np.zeros((n_layers, n_heads), bool),
              "next_word": np.full((n_layers, n_heads), np.nan)}
    cue = tgt if reverse else src
    word_pieces = [groups[w] for w in word_list]
    sizes = np.array([len(p) for p in word_pieces], dtype=float)
    for layer in range(n_layers):
        layer_attention = out.attentions[layer][0].numpy()
        for h in range(n_heads):
            # Clark et al.: convert the head's whole attention map to words, then read what is needed.
            word_matrix = word_attention_matrix(layer_attention[h], word_pieces)
            # A source of several words: mean over all its pieces = piece-weighted mean of its word rows.
            row = (sizes[src, None] * word_matrix[src]).sum(0) / sizes[src].sum()
            scores = [sum(row[k] for k in unit) for unit in units]
            result["attention"][layer, h] = scores[target_index]
            result["hit"][layer, h] = all(scores[target_index] > s for i, s in enumerate(scores) if i != target_index)
            if example.relation == "negation":
                pairs = [word_matrix[k + 1, k] if reverse else word_matrix[k, k + 1]
                         for k in range(len(word_list) - 1) if k not in cue]
                if pairs:
                    result["next_word"][layer, h] = float(np.mean(pairs))
    return result
