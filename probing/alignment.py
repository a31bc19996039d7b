"""From character spans to word pieces, and from piece-level to word-level attention.

Conventions (Clark et al. 2019, `bpe_utils.py`):
- a *word* is a group of pieces with the same `word_ids()`; special tokens ([CLS], [SEP], BOS) belong to none;
- a character span selects the pieces whose characters lie inside it; only when none do, the pieces that
  overlap it ("n't" in "hasn't" is `'` + `t` for BERT, `'t` for GPT-2, never the host `hasn`);
- a mention of several words (`mention="head"`, the default for coreference) is represented by its last
  word's pieces, its head word for names and simple noun phrases (Clark et al. 2019); `mention="span"`
  keeps every selected piece (attention is then summed over the whole mention);
- word-level attention from unit S to unit T = the sum over T's pieces, read from S's pieces by the source-piece
  rule (`SOURCE_PIECE_RULES`): "mean" averages over S's pieces (Clark et al.), "last" reads S's last piece
  only, the one adjacent to what follows (a two-piece "n't" is read from its `t`, not from `'`).

Everything here is a small pure function over arrays, so it can be tested on hand-made tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probing.defaults import MENTION, MENTION_RULES, SOURCE_PIECES, SOURCE_PIECE_RULES


class AlignmentError(ValueError):
    """A span that maps to no piece of the tokenised text (for example, cut off by truncation)."""


def word_index(word_ids: list[int | None], offsets: list[tuple[int, int]], text: str) -> np.ndarray:
    """Word number of each piece, -1 for special and padding pieces; renumbered 0..W-1 in text order."""
    raw = [-1 if (w is None or e <= s) else w for w, (s, e) in zip(word_ids, offsets)]
    if sum(r >= 0 for r in raw) and len({r for r in raw if r >= 0}) == 1 and len(text.split()) > 1:
        # Some tokenizers (sentencepiece without a pre-tokenizer) report one word for the whole text:
        # fall back to white-space words, read from the character offsets.
        raw = _whitespace_words(offsets, text, raw)
    mapping: dict[int, int] = {}
    out = np.full(len(raw), -1, dtype=np.int64)
    for i, w in enumerate(raw):
        if w >= 0:
            out[i] = mapping.setdefault(w, len(mapping))
    return out


def _whitespace_words(offsets, text, raw) -> list[int]:
    """A new word starts at a piece whose text begins with, or follows, white space."""
    words, current = [], -1
    for (s, e), r in zip(offsets, raw):
        if r < 0:
            words.append(-1)
            continue
        if current < 0 or text[s:e][:1].isspace() or (s > 0 and text[s - 1].isspace()):
            current += 1
        words.append(current)
    return words




def check_source_pieces(source_pieces: str) -> str:
    if source_pieces not in SOURCE_PIECE_RULES:
        raise ValueError(f"source_pieces must be one of {SOURCE_PIECE_RULES}, got {source_pieces!r}")
    return source_pieces


def source_weights(n_pieces: int, source_pieces: str) -> np.ndarray:
    """The weight of each of a source's pieces (in text order): 1/n each ("mean"), or all on the last ("last")."""
    check_source_pieces(source_pieces)
    if source_pieces == "mean":
        return np.full(n_pieces, 1.0 / n_pieces)
    weights = np.zeros(n_pieces)
    weights[-1] = 1.0
    return weights


def span_pieces(span: tuple[int, int], offsets, words: np.ndarray) -> list[int]:
    """The pieces of the character span [start, end): those lying inside it, else those overlapping it."""
    start, end = span
    real = [i for i, w in enumerate(words) if w >= 0 and offsets[i][1] > offsets[i][0]]
    inside = [i for i in real if start <= offsets[i][0] and offsets[i][1] <= end]
    return inside or [i for i in real if offsets[i][0] < end and start < offsets[i][1]]


def span_words(span: tuple[int, int], offsets, words: np.ndarray) -> list[int]:
    """The words that hold the span's pieces (see `span_pieces`)."""
    return sorted({int(words[i]) for i in span_pieces(span, offsets, words)})


def mention_pieces(pieces: list[int], words: np.ndarray, mention: str) -> list[int]:
    """A mention's pieces under the mention rule: all of them ("span") or its last word's ("head")."""
    if mention == "span" or not pieces:
        return pieces
    last = max(int(words[i]) for i in pieces)
    return [i for i in pieces if words[i] == last]


@dataclass
class Layout:
    """Where one example's source, candidates and word pairs sit among its pieces."""
    n_pieces: int
    words: np.ndarray            # [pos] word number per piece, -1 for specials/padding
    source: np.ndarray           # piece indices of the source unit
    units: list[np.ndarray]      # piece indices of each candidate unit; units[target] is the gold one
    target: int
    nearest: int                 # the candidate unit closest to the source (a positional baseline)
    first: int                   # the candidate unit that comes first in the text
    source_words: list[int]      # the words holding the source's pieces
    target_words: list[int]      # the words holding the target's pieces (after the mention rule)

    @property
    def target_offset(self) -> int:
        """Words from the source to the target, first word to first word (-3: three words before the source)."""
        return self.target_words[0] - self.source_words[0]


def make_layout(text, source_span, target_span, candidate_spans, offsets, word_ids,
                mention: str = MENTION) -> Layout:
    """Map an example's spans onto its pieces; raise AlignmentError when a span falls outside them.

    The source always keeps all its pieces; `mention` applies to the target and the candidates."""
    if mention not in MENTION_RULES:
        raise ValueError(f"mention must be one of {MENTION_RULES}, got {mention!r}")
    words = word_index(word_ids, offsets, text)
    source_pieces = span_pieces(source_span, offsets, words)
    target_pieces = mention_pieces(span_pieces(target_span, offsets, words), words, mention)
    if not source_pieces:
        raise AlignmentError(f"source span {list(source_span)} maps to no token (text truncated?)")
    if not target_pieces:
        raise AlignmentError(f"target span {list(target_span)} maps to no token (text truncated?)")
    if set(source_pieces) & set(target_pieces):
        raise AlignmentError("source and target share a token")
    source_words = sorted({int(words[i]) for i in source_pieces})
    target_words = sorted({int(words[i]) for i in target_pieces})
    if candidate_spans:
        units = [mention_pieces(span_pieces(c, offsets, words), words, mention) for c in candidate_spans]
        if any(not u for u in units):
            raise AlignmentError("a candidate span maps to no token (text truncated?)")
        if any(set(u) & set(source_pieces) for u in units):
            raise AlignmentError("a candidate shares a token with the source")
        target = list(candidate_spans).index(tuple(target_span))
    else:
        # Every word that holds neither source nor target pieces is a candidate; the target is one unit.
        pieces_of: dict[int, list[int]] = {}
        for piece, word in enumerate(words.tolist()):
            if word >= 0:
                pieces_of.setdefault(word, []).append(piece)
        taken = set(source_words) | set(target_words)
        units = [target_pieces] + [pieces_of[w] for w in sorted(pieces_of) if w not in taken]
        target = 0
    units = [np.array(sorted(u)) for u in units]
    source = np.array(sorted(source_pieces))
    gaps = [_gap(source, u) for u in units]
    starts = [int(u[0]) for u in units]
    return Layout(n_pieces=len(words), words=words, source=source, units=units, target=target,
                  nearest=int(np.argmin(gaps)), first=int(np.argmin(starts)),
                  source_words=source_words, target_words=target_words)


def _gap(a: np.ndarray, b: np.ndarray) -> int:
    """Pieces between two units (0 when adjacent); ties go to the earlier unit through argmin.

    Both hold piece indices in ascending order (words are runs of pieces, taken in text order)."""
    return int(max(b[0] - a[-1], a[0] - b[-1]))


# ---- Word-level attention on tensors -------------------------------------------------------------

def drop_special_columns(attention: torch.Tensor, is_word: torch.Tensor) -> torch.Tensor:
    """Zero attention to special/padding pieces and renormalise each row to sum to 1."""
    kept = attention * is_word[..., None, None, :].to(attention.dtype)
    return kept / kept.sum(-1, keepdim=True).clamp_min(1e-12)


def unit_attention(attention: torch.Tensor, from_index: torch.Tensor, from_weights: torch.Tensor,
                   to_matrix: torch.Tensor) -> torch.Tensor:
    """Mean over attending pieces, sum over attended-to pieces (a 0/1 matrix), for one source unit per row.

    attention [batch, head, query_pos, key_pos]; from_index [batch, source_piece] the source pieces, padded with any index; from_weights [batch, source_piece]
    1/|source| for real entries and 0 for padding; to_matrix [batch, pos, candidate] -> [batch, head, candidate].
    Only the source rows are read, so the cost is B*H*S*T rather than B*H*T*T.
    """
    batch, heads, n_pieces, _ = attention.shape
    index = from_index[:, None, :, None].expand(batch, heads, from_index.shape[1], n_pieces)
    rows = (attention.gather(2, index) * from_weights[:, None, :, None]).sum(2)       # [batch, head, pos]
    return torch.bmm(rows, to_matrix)


def band_width(words: torch.Tensor) -> int:
    """D = twice the largest number of pieces in a word: a word plus its neighbour, at most."""
    valid = words[words >= 0]
    if valid.numel() == 0:
        return 0
    one_hot = torch.nn.functional.one_hot(words.clamp_min(0), int(words.max()) + 1) * (words >= 0)[..., None]
    return int(2 * one_hot.sum(1).max())


def adjacent_word_attention(attention: torch.Tensor, words: torch.Tensor, reverse: bool = False,
                            source_pieces: str = SOURCE_PIECES) -> torch.Tensor:
    """Word-level attention from each word w to word w+1 (reverse: from w+1 to w), as [batch, head, word_pair].

    Entry w holds the pair (w, w+1) in both directions. The attending word is read by `source_pieces` (mean
    over its pieces, or its last piece), the attended-to word is summed over its pieces; pairs that do not
    exist are 0. Words are runs of pieces, so the next word's pieces lie within a
    narrow band beside each piece: only that band of the attention matrix is read (then `adjacent_from_band`).
    """
    batch, heads, n_pieces, _ = attention.shape
    width = band_width(words)
    step = -1 if reverse else 1
    columns = torch.arange(n_pieces, device=words.device)[:, None] + step * torch.arange(1, width + 1, device=words.device)
    columns = columns.clamp(0, n_pieces - 1)                                           # [pos, band]
    band = attention.gather(3, columns.view(1, 1, n_pieces, width).expand(batch, heads, n_pieces, width))
    return adjacent_from_band(band, words, reverse, source_pieces)


def adjacent_from_band(band: torch.Tensor, words: torch.Tensor, reverse: bool = False,
                       source_pieces: str = SOURCE_PIECES) -> torch.Tensor:
    """Word-level attention w -> w+1 (reverse: w+1 -> w), [batch, head, word_pair], from the band of the attention pattern
    beside each piece: band[b, h, t, d-1] is the attention from piece t to piece t + step*d (step -1 when
    reverse), d = 1..D. Entries outside the sequence are never read. The fused path reads this band without
    the full pattern (`probing.attention`); `adjacent_word_attention` gathers it from the full pattern."""
    n_words = int(words.max()) + 1 if words.numel() else 0
    batch, heads, n_pieces, width = band.shape
    if n_words < 2:
        return band.new_zeros(batch, heads, 0)
    step = -1 if reverse else 1
    one_hot = torch.nn.functional.one_hot(words.clamp_min(0), n_words).to(band.dtype)
    one_hot = one_hot * (words >= 0)[..., None].to(band.dtype)                          # [batch, pos, word]
    pieces_per_word = one_hot.sum(1)                                                  # [batch, word]
    columns = torch.arange(n_pieces, device=words.device)[:, None] + step * torch.arange(1, width + 1, device=words.device)
    inside = (columns >= 0) & (columns < n_pieces)                                    # [pos, band]
    columns = columns.clamp(0, n_pieces - 1)
    column_word = words.gather(1, columns.reshape(1, -1).expand(batch, -1)).view(batch, n_pieces, width)
    in_next = inside & (words[:, :, None] >= 0) & (column_word == words[:, :, None] + step)   # [batch, pos, band]
    per_piece = (band * in_next[:, None].to(band.dtype)).sum(-1)                      # [batch, head, pos]
    if check_source_pieces(source_pieces) == "last":
        # Keep each word's last piece only: the piece whose successor belongs to another word (or to none).
        following = torch.cat([words[:, 1:], words.new_full((batch, 1), -1)], 1)
        one_hot = one_hot * (following != words)[..., None].to(band.dtype)
        per_word = torch.bmm(per_piece, one_hot)
    else:
        per_word = torch.bmm(per_piece, one_hot) / pieces_per_word.clamp_min(1)[:, None]
    # For w -> w+1 the attending word is w (entries 0..W-2); for w+1 -> w it is w+1 (entries 1..W-1).
    return per_word[..., 1:] if reverse else per_word[..., :-1]
