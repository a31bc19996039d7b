"""A plain, independent re-implementation of the head scores, the way a notebook would do it.

One sentence at a time, the full attention turned into numpy, Python loops over words and heads
(Clark et al.'s word-level conversion). It shares no scoring code with `probing.heads`, so the tests use it
as the independent recomputation, and `analysis bench` times it as the "naive" way.

It also holds the fixed-rule coreference baselines a reviewer would compute from the words alone ("attend to the
first content word"), scored like a head on the same items (`first_content_hit`).
"""
from __future__ import annotations

import re

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


# --- Fixed-rule coreference baselines a reviewer would use (issue 28 item 5) ---------------------------------
# Words that do not head a noun phrase a pronoun could refer back to: determiners, pronouns (the subject "We" of
# "We found the bird ... it" is not the antecedent), quantifier pronouns, prepositions, conjunctions and
# subordinators, auxiliaries and a few sentence adverbs. Lower-cased.
FUNCTION_WORDS = frozenset(
    "the a an this that these those his her their its my your our some every each no another either neither any "
    "both several many few all i me we us you he him she her it they them myself ourselves yourself himself "
    "herself itself themselves everyone everybody nobody noone someone somebody anyone anybody everything "
    "nothing something anything who whom whose which what "
    "in on at to of for from with without by about after before during until since into onto over under "
    "across through between among against near behind beside above below up down out off upon "
    "and or but so because although though while when whenever if unless as than then once where whereas "
    "is am are was were be been being has have had do does did will would shall should can could may might must "
    "not n't also just still even only very too really quite".split())

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")   # a word: letters/digits, with inner apostrophes ("O'Neill")


def text_words(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of the words of a text, in order (punctuation is not a word)."""
    return [m.span() for m in WORD.finditer(text)]


def first_content_word(text: str, skip: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The span of the sentence's first word that is not a function word (`FUNCTION_WORDS`), leaving out the
    `skip` span (the pronoun itself); None when every word is a function word."""
    for start, end in text_words(text):
        if skip is not None and skip[0] <= start < skip[1]:
            continue
        if text[start:end].lower() not in FUNCTION_WORDS:
            return start, end
    return None


def first_content_hit(example, mention: str = MENTION) -> float:
    """1.0 where the fixed rule "attend to the first content word" picks the antecedent, scored like a head's
    argmax credit on the same item, else 0.0.

    all-words (every word competes): the rule's word must be the target unit: the target's last word under
    mention="head", any word inside the target span under "span". candidates: the rule picks the first candidate
    that ends after the first content word starts (the candidate holding it, else the next one), and is right
    when that candidate is the target."""
    chosen = first_content_word(example.text, example.source_span)
    if chosen is None:
        return 0.0
    target = tuple(example.target_span)
    if example.candidate_spans:
        picked = next((tuple(c) for c in sorted(example.candidate_spans) if c[1] > chosen[0]), None)
        return float(picked == target)
    inside = [w for w in text_words(example.text) if target[0] <= w[0] and w[1] <= target[1]]
    if not inside:
        return 0.0
    return float(chosen == inside[-1] if mention == "head" else chosen in inside)
