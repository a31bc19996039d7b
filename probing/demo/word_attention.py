"""Word-level attention from one source word to every word of a sentence, for every head.

The demo's word-shading view reads it: the sentence with each word shaded by the chosen head's attention
*from* the source word. Words and the measure are the scorers' (`probing.heads`): a word is a run of
pieces with the same word id, and word-level attention is the mean over the source word's pieces of the
sum over the other word's pieces. Attention to special tokens ([CLS], [SEP]) belongs to no word; it is
returned separately so a view can say where the rest went.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probing.alignment import span_words, word_index


@dataclass
class WordAttention:
    """One sentence's words and the attention every head pays them from the source word."""
    words: list[str]                # the sentence's words, in order, as they appear in the text
    spans: list[tuple[int, int]]    # character span of each word
    source: int                     # index of the source word among `words`
    values: np.ndarray              # (layers, heads, words) word-level attention from the source word
    special: np.ndarray             # (layers, heads) attention from the source word to special tokens
    source_name: str = ""           # the source as a reader names it: “n't” (in “didn't”), not the piece “'”

    def to_dict(self) -> dict:
        return {"words": self.words, "spans": [list(s) for s in self.spans], "source": self.source,
                "values": np.round(self.values, 6).tolist(), "special": np.round(self.special, 6).tolist()}


def source_name(text: str, span: tuple[int, int]) -> str:
    """The source in words for a title: its own text, and the whole word it sits in when that is longer
    ("n't" of "didn't" is three pieces, "didn", "'" and "t", none of which is the cue a reader sees)."""
    start, end = span
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    own = text[span[0]:span[1]]
    whole = text[start:end].strip(".,;:!?\"()[]{}")
    return f"\u201c{own}\u201d" + (f" (in \u201c{whole}\u201d)" if whole and whole != own else "")


def word_attention(text: str, offsets: list[tuple[int, int]], word_ids: list[int | None], attention: np.ndarray,
                   source_span: tuple[int, int]) -> WordAttention:
    """Word-level attention from the word(s) under `source_span`, from one sentence's encoding and attention.

    attention: (layers, heads, pieces, pieces) for the encoded pieces (`offsets`, `word_ids` from the tokenizer).
    """
    attention = np.asarray(attention, dtype=np.float64)
    if attention.ndim != 4 or attention.shape[2] != len(offsets) or attention.shape[3] != len(offsets):
        raise ValueError(f"attention of shape {attention.shape} does not match {len(offsets)} pieces")
    words = word_index(word_ids, offsets, text)                      # (pieces,) word number, -1 for specials
    n_words = int(words.max()) + 1 if (words >= 0).any() else 0
    source_words = span_words(source_span, offsets, words)
    if not source_words:
        raise ValueError(f"no piece of the text lies under the source span {source_span[0]}:{source_span[1]}")
    spans = [(min(s for (s, e), w in zip(offsets, words) if w == i), max(e for (s, e), w in zip(offsets, words) if w == i))
             for i in range(n_words)]
    from_pieces = np.isin(words, source_words)                       # (pieces,) the source word's pieces
    rows = attention[:, :, from_pieces, :].mean(axis=2)              # (layers, heads, pieces)
    one_hot = (words[:, None] == np.arange(n_words)[None, :]).astype(np.float64)   # (pieces, words)
    return WordAttention(words=[text[s:e] for s, e in spans], spans=spans, source=source_words[0],
                         values=rows @ one_hot, special=rows[:, :, words < 0].sum(-1),
                         source_name=source_name(text, source_span))
