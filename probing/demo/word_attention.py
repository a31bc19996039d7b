"""Word-level attention from one source word to every word of a sentence, for every head.

The demo's word-shading view reads it: the sentence with each word shaded by the chosen head's attention
*from* the source. Words and the measure are the scorers' (`probing.heads`, `probing.alignment`), so a word's
shade is the number the heatmap and the table show for it:
- the source is the pieces under its span (`alignment.span_pieces`, as `make_layout` takes them), read by the
  source-piece rule (`SOURCE_PIECES`, "last" unless told: a two-piece "n't" is read from its `t`);
- a word is a run of pieces with the same word id, and receives the sum over its pieces;
- the words that hold the source are shown as one unit: BERT's "didn't" is the words "didn", "'" and "t",
  and the cue "n't" is drawn as the one outlined unit "n't" (after "did"), never as a word "t" that draws
  attention.
Attention to special tokens ([CLS], [SEP]) belongs to no word; it is returned separately so a view can say
where the rest went.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probing.alignment import check_source_pieces, source_weights, span_pieces, word_index
from probing.defaults import SOURCE_PIECES


@dataclass
class WordAttention:
    """One sentence's words and the attention every head pays them from the source word."""
    words: list[str]                # the sentence's words, in order, as they appear in the text
    spans: list[tuple[int, int]]    # character span of each word
    source: int                     # index of the source word among `words`
    values: np.ndarray              # (layers, heads, words) word-level attention from the source word
    special: np.ndarray             # (layers, heads) attention from the source word to special tokens
    source_name: str = ""           # the source as a reader names it: “n't” (in “didn't”), not the piece “'”
    reading: str = ""               # how the source was read, for a legend: "from its last piece “t”" or ""

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


def reading_of(piece_texts: list[str], source_pieces: str) -> str:
    """The source-piece rule in words for a legend ("" for a one-piece source, where the rules agree)."""
    if len(piece_texts) < 2:
        return ""
    if source_pieces == "last":
        return f"from its last piece \u201c{piece_texts[-1]}\u201d"
    return "averaged over its pieces " + ", ".join(f"\u201c{p}\u201d" for p in piece_texts)


def reader_spans(spans: list[tuple[int, int]], source: int, source_span: tuple[int, int]) -> list[tuple[int, int]]:
    """Unit spans drawn as a reader sees the words: a source span that begins or ends inside a neighbouring
    unit takes those characters ("didn" + "'t" is drawn "did" + "n't" for the cue "n't"); values are unchanged,
    the neighbour keeps its pieces' attention. A neighbour is never cut to nothing."""
    spans = list(spans)
    start, end = spans[source]
    if source > 0 and spans[source - 1][0] < source_span[0] < start:
        spans[source - 1] = (spans[source - 1][0], source_span[0])
        start = source_span[0]
    if source + 1 < len(spans) and end < source_span[1] < spans[source + 1][1]:
        spans[source + 1] = (source_span[1], spans[source + 1][1])
        end = source_span[1]
    spans[source] = (start, end)
    return spans


def word_attention(text: str, offsets: list[tuple[int, int]], word_ids: list[int | None], attention: np.ndarray,
                   source_span: tuple[int, int], source_pieces: str = SOURCE_PIECES) -> WordAttention:
    """Word-level attention from the source under `source_span`, from one sentence's encoding and attention.

    attention: (layers, heads, pieces, pieces) for the encoded pieces (`offsets`, `word_ids` from the tokenizer);
    source_pieces: the scorer's rule for a source of several pieces ("last" or "mean").
    """
    check_source_pieces(source_pieces)
    attention = np.asarray(attention, dtype=np.float64)
    if attention.ndim != 4 or attention.shape[2] != len(offsets) or attention.shape[3] != len(offsets):
        raise ValueError(f"attention of shape {attention.shape} does not match {len(offsets)} pieces")
    words = word_index(word_ids, offsets, text)                      # (pieces,) word number, -1 for specials
    pieces = span_pieces(source_span, offsets, words)                # the source's pieces, as the scorer's layout
    if not pieces:
        raise ValueError(f"no piece of the text lies under the source span {source_span[0]}:{source_span[1]}")
    source_words = {int(words[i]) for i in pieces}
    # Display units (U of them): every word, with the words holding the source merged into one unit.
    unit_of_word: dict[int, int] = {}
    for word in sorted({int(w) for w in words if w >= 0}):
        merged = word in source_words and any(w in unit_of_word for w in source_words)
        unit_of_word[word] = unit_of_word[min(source_words)] if merged else len(set(unit_of_word.values()))
    units = np.array([unit_of_word.get(int(w), -1) for w in words])  # (pieces,) unit number, -1 for specials
    n_units = int(units.max()) + 1
    spans = [(min(s for (s, e), u in zip(offsets, units) if u == i), max(e for (s, e), u in zip(offsets, units) if u == i))
             for i in range(n_units)]
    spans = reader_spans(spans, unit_of_word[min(source_words)], source_span)
    weights = source_weights(len(pieces), source_pieces)             # (source pieces,) in text order
    rows = np.einsum("s,lhsp->lhp", weights, attention[:, :, sorted(pieces), :])   # (layers, heads, pieces)
    one_hot = (units[:, None] == np.arange(n_units)[None, :]).astype(np.float64)   # (pieces, units)
    return WordAttention(words=[text[s:e] for s, e in spans], spans=spans, source=unit_of_word[min(source_words)],
                         values=rows @ one_hot, special=rows[:, :, units < 0].sum(-1),
                         source_name=source_name(text, source_span),
                         reading=reading_of([text[offsets[i][0]:offsets[i][1]] for i in sorted(pieces)],
                                            source_pieces))
