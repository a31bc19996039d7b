"""A plain, independent re-implementation of the head scores, the way a notebook would do it.

One sentence at a time, the full attention turned into numpy, Python loops over words and heads
(Clark et al.'s word-level conversion). It shares no scoring code with `probing.heads`, so the tests use it
as the independent recomputation, and `analysis bench` times it as the "naive" way.
"""
from __future__ import annotations

import numpy as np
import torch

from probing.defaults import MENTION, SOURCE_PIECES


def words_of(word_ids, offsets) -> dict[int, list[int]]:
    """Word id -> its piece indices, skipping special tokens (no word id or an empty offset)."""
    groups: dict[int, list[int]] = {}
    for piece, (w, (s, e)) in enumerate(zip(word_ids, offsets)):
        if w is not None and e > s:
            groups.setdefault(w, []).append(piece)
    return groups


def word_attention_matrix(attention: np.ndarray, piece_groups: list[list[int]], source_pieces: str = SOURCE_PIECES
                          ) -> np.ndarray:
    """One head's [query_pos, key_pos] piece attention -> [group, group] group attention: sum over attended-to;
    the attending group is averaged over its pieces ("mean", Clark et al.'s `get_word_word_attention`) or read
    from its last piece ("last").

    Groups are lists of piece indices in text order; pieces in no group (special tokens) are dropped.
    """
    columns = np.stack([attention[:, group].sum(axis=-1) for group in piece_groups], axis=-1)   # [pos, group]
    if source_pieces == "last":
        return np.stack([columns[group[-1]] for group in piece_groups], axis=0)                 # [group, group]
    return np.stack([columns[group].mean(axis=0) for group in piece_groups], axis=0)            # [group, group]


def naive_example_scores(loaded, example, is_causal: bool | None = None, mention: str = MENTION,
                         source_pieces: str = SOURCE_PIECES) -> dict[str, np.ndarray]:
    """attention, is_argmax (argmax credit, 1/k on exact k-way ties) and next_word_baseline arrays of shape
    [layer, head].

    The rules, written out independently of `probing.alignment`: a span's pieces are those inside it, else
    those overlapping it; a coreference mention of several words is its last word's pieces (mention="head");
    a source of several pieces is read from its last piece (source_pieces="last") or their mean ("mean"), and
    so is the attending word of each next-word-baseline pair."""
    is_causal = loaded.is_causal if is_causal is None else is_causal
    src_span, tgt_span, candidates = example.source_span, example.target_span, example.candidate_spans
    reverse = example.relation == "negation" and is_causal
    if reverse:
        src_span, tgt_span, candidates = tgt_span, src_span, None
    if example.relation != "coreference":
        mention = "span"
    enc = loaded.tokenizer(example.text, return_offsets_mapping=True, truncation=True,
                           max_length=loaded.max_length, return_tensors="pt")
    offsets = [tuple(o) for o in enc["offset_mapping"][0].tolist()]
    groups = words_of(enc.word_ids(0), offsets)
    word_list = sorted(groups)
    word_of_piece = {p: k for k, w in enumerate(word_list) for p in groups[w]}

    def pieces(span, head_word=False):
        inside = [p for p in word_of_piece if span[0] <= offsets[p][0] and offsets[p][1] <= span[1]]
        chosen = inside or [p for p in word_of_piece if offsets[p][0] < span[1] and span[0] < offsets[p][1]]
        if head_word and chosen:
            last = max(word_of_piece[p] for p in chosen)
            chosen = [p for p in chosen if word_of_piece[p] == last]
        return sorted(chosen)

    src, tgt = pieces(src_span), pieces(tgt_span, mention == "head")
    if candidates:
        units = [pieces(c, mention == "head") for c in candidates]
        target_index = list(candidates).index(tuple(tgt_span))
    else:
        taken = {word_of_piece[p] for p in src + tgt}
        units = [tgt] + [groups[w] for k, w in enumerate(word_list) if k not in taken]
        target_index = 0
    with torch.no_grad():
        out = loaded.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_attentions=True)
    n_layers, n_heads = len(out.attentions), out.attentions[0].shape[1]
    result = {"attention": np.zeros((n_layers, n_heads)), "is_argmax": np.zeros((n_layers, n_heads)),
              "next_word_baseline": np.full((n_layers, n_heads), np.nan)}
    cue_words = {word_of_piece[p] for p in (tgt if reverse else src)}
    word_pieces = [groups[w] for w in word_list]
    for layer in range(n_layers):
        layer_attention = out.attentions[layer][0].numpy()
        for h in range(n_heads):
            matrix = layer_attention[h]
            # The sum over each unit's pieces, read from the source's last piece or averaged over its pieces.
            readers = src[-1:] if source_pieces == "last" else src
            scores = [float(np.mean([sum(matrix[i, j] for j in unit) for i in readers])) for unit in units]
            result["attention"][layer, h] = scores[target_index]
            best = max(scores)
            tied = [i for i, s in enumerate(scores) if s == best]
            result["is_argmax"][layer, h] = 1.0 / len(tied) if target_index in tied else 0.0
            if example.relation == "negation":
                # Clark et al.: convert the head's whole attention map to words, then read adjacent pairs.
                word_matrix = word_attention_matrix(matrix, word_pieces, source_pieces)
                pairs = [word_matrix[k + 1, k] if reverse else word_matrix[k, k + 1]
                         for k in range(len(word_list) - 1) if k not in cue_words]
                if pairs:
                    result["next_word_baseline"][layer, h] = float(np.mean(pairs))
    return result
