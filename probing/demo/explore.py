"""One sentence at a time: find pronouns and negation cues, resolve the words a user names, score every head.

This is what the demo and its `/score_heads` API call. A request is encoded and laid out once (`prepare`,
through `runner.encode_and_align`), the demo runs one forward pass (`runner.attend`), and its numbers come from
`probing.heads.score_attention`, the arithmetic that scores datasets, so a sentence's scores in the demo equal
the library's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from probing.examples import Example
from probing.demo.guard import shown
from probing.lexicon import NEGATION_CUE, PRONOUNS
from probing.alignment import Layout
from probing.attention import FullLayer
from probing.heads import oriented, score_attention
from probing.models import LoadedModel, direction_for
from probing.runner import Encoded, SentenceAttention, encode_and_align

MAX_TEXT_CHARS = 5000     # longer input is refused in words before it reaches the tokenizer
EMPTY_MESSAGE = "The sentence is empty: type a sentence or pick an example."
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


class InputError(ValueError):
    """Input the demo or API cannot use; the message says what is wrong in words."""


def control_characters(text: str) -> int:
    """How many control characters (NUL included; tab and newline excepted) the text holds."""
    return sum(1 for c in text if _is_control(c))


def _is_control(char: str) -> bool:
    return (ord(char) < 32 and char not in "\t\n") or 127 <= ord(char) < 160


def clean_text(text: str | None) -> str:
    """Refuse empty or oversized text; replace control characters (NUL included) with spaces.

    The replacement keeps the length, so character offsets the user gave stay valid; text that is only
    white space and control characters counts as empty.
    """
    if text is None:
        raise InputError(EMPTY_MESSAGE)
    if not isinstance(text, str):
        raise InputError(f"The text must be a string, got {type(text).__name__}.")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"The text has {len(text):,} characters; the limit here is {MAX_TEXT_CHARS:,}. "
                         "It was refused, not cut: shorten it and try again.")
    cleaned = "".join(" " if _is_control(c) else c for c in text)
    if not cleaned.strip():
        raise InputError(EMPTY_MESSAGE)
    return cleaned


def words_with_spans(text: str) -> list[tuple[str, tuple[int, int]]]:
    """Words and punctuation marks of the text with their character spans (the demo's dropdown choices)."""
    return [(m.group(), m.span()) for m in _WORD.finditer(text)]


def find_pronouns(text: str) -> list[tuple[str, tuple[int, int]]]:
    """Closed-class personal and possessive pronouns, with spans."""
    return [(w, s) for w, s in words_with_spans(text) if w.lower() in PRONOUNS]


def find_negation_cues(text: str) -> list[tuple[str, tuple[int, int]]]:
    """"not" and the "n't" of contractions, with spans."""
    return [(m.group(), m.span()) for m in NEGATION_CUE.finditer(text)]


def next_word_span(text: str, cue_span: tuple[int, int]) -> tuple[int, int]:
    """The word right after the cue (punctuation does not count as a word here)."""
    for word, span in words_with_spans(text[cue_span[1]:]):
        if re.match(r"\w", word):
            return (span[0] + cue_span[1], span[1] + cue_span[1])
    raise InputError(f"No word follows {text[cue_span[0]:cue_span[1]]!r} at {cue_span[0]}:{cue_span[1]}.")


MAX_SPAN_DIGITS = 9       # a character offset of a text of at most MAX_TEXT_CHARS never needs more


def _whole_number(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit()


def parse_offsets(word: str, role: str) -> tuple[int, int] | None:
    """`start:end` as two ints, or None when the word is not of that form (parsed by hand: no backtracking)."""
    left, sep, right = word.partition(":")
    left, right = left.strip(), right.strip()
    if not sep or not _whole_number(left) or not _whole_number(right):
        return None
    if max(len(left), len(right)) > MAX_SPAN_DIGITS + 1:
        raise InputError(f"The {role} span numbers have more than {MAX_SPAN_DIGITS} digits; "
                         "give character offsets of this text.")
    return int(left), int(right)


def parse_labelled(word: str, role: str) -> tuple[str, tuple[int, int]] | None:
    """`word (start:end)`, as the demo's dropdowns write it, split into the word and its offsets, or None."""
    if not word.endswith(")"):
        return None
    opening = word.rfind("(")
    label = word[:opening].rstrip() if opening > 0 else ""
    offsets = parse_offsets(word[opening + 1:-1], role) if label else None
    return (label, offsets) if offsets is not None else None


def resolve_word(text: str, word: str | None, role: str) -> tuple[int, int]:
    """A word given as text (must occur exactly once), as `start:end` offsets, or as `word (start:end)`.

    Every form is parsed in time linear in the word's length (the demo caps words at a few hundred
    characters before they get here; a backtracking regex on a long word froze the whole server).
    """
    word = (word or "").strip()
    if not word:
        raise InputError(f"No {role} word was given.")
    labelled = parse_labelled(word, role)
    if labelled:   # "she (32:35)": the word must still be there
        label, (start, end) = labelled
        span = resolve_word(text, f"{start}:{end}", role)
        if text[span[0]:span[1]] != label:
            raise InputError(f"The {role} {shown(label)} is not at {span[0]}:{span[1]} in this sentence "
                             f"(that is {shown(text[span[0]:span[1]])}); the text changed. Pick the word again.")
        return span
    offsets = parse_offsets(word, role)
    if offsets:
        start, end = offsets
        if not 0 <= start < end <= len(text):
            raise InputError(f"The {role} span {start}:{end} is out of range or reversed for a text of "
                             f"{len(text)} characters.")
        if not text[start:end].strip():
            raise InputError(f"The {role} span {start}:{end} covers only white space.")
        return (start, end)
    pattern = re.escape(word) if not re.match(r"\w", word[0]) else r"(?<!\w)" + re.escape(word) + r"(?!\w)"
    matches = [m.span() for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
    if not matches:
        raise InputError(f"The {role} word {shown(word)} does not occur in the sentence.")
    if len(matches) > 1:
        where = ", ".join(f"{s}:{e}" for s, e in matches[:10]) + (", ..." if len(matches) > 10 else "")
        raise InputError(f"The {role} word {shown(word)} occurs {len(matches)} times ({where}); "
                         "give it as start:end offsets.")
    return matches[0]


def make_example(text: str, relation: str, source: str | None, target: str | None = None) -> Example:
    """An Example from a sentence and the words a user named; negation's target defaults to the next word."""
    if relation not in ("coreference", "negation"):
        raise InputError(f"Unknown relation {shown(str(relation))}: use 'coreference' or 'negation'.")
    text = clean_text(text)
    if relation == "negation":
        cues = find_negation_cues(text)
        if not (source or "").strip():
            if not cues:
                raise InputError("The sentence has no 'not' or 'n't'. Try an example such as "
                                 "\"The lawyer did not sign the contract.\"")
            source_span = cues[0][1]
        elif source.strip().lower() in ("n't", "n’t") and len(cues) == 1:
            source_span = cues[0][1]
        else:
            source_span = resolve_word(text, source, "source")
        target_span = resolve_word(text, target, "target") if (target or "").strip() else next_word_span(text, source_span)
    else:
        if not (source or "").strip():
            pronouns = find_pronouns(text)
            if not pronouns:
                raise InputError("The sentence has no pronoun (he, she, it, they, ...). Try an example such as "
                                 "\"The doctor called the nurse because she was late.\"")
            raise InputError("Pick the pronoun: " + ", ".join(f"{w} ({s}:{e})" for w, (s, e) in pronouns))
        source_span = resolve_word(text, source, "source")
        if not (target or "").strip():
            raise InputError("No antecedent was given: pick the word the pronoun refers to "
                             "(or give it as start:end).")
        target_span = resolve_word(text, target, "target")
    if source_span[0] < target_span[1] and target_span[0] < source_span[1]:
        raise InputError("The source and target words overlap; pick two different words.")
    return Example(text=text, relation=relation, source_span=source_span, target_span=target_span, id="input")


@dataclass
class SentenceScores:
    """Per-head word-level attention for one sentence, as the demo and the API report it."""
    model: str
    relation: str
    direction: str
    source: str
    target: str
    attention: np.ndarray      # [layer, head] source -> target (or next word -> cue for causal negation)
    is_argmax: np.ndarray      # [layer, head] argmax credit of the target among the other words (1, 1/k on a tie)
    next_word_baseline: np.ndarray  # [layer, head] mean adjacent-pair attention (negation), NaN otherwise
    truncated: bool

    def heads(self) -> list[dict]:
        """One dict per head, in (layer, head) order, with plain floats (JSON-ready)."""
        rows = []
        for layer in range(self.attention.shape[0]):
            for head in range(self.attention.shape[1]):
                row = {"layer": layer, "head": head, "attention": round(float(self.attention[layer, head]), 6),
                       "is_argmax": bool(self.is_argmax[layer, head])}
                if self.relation == "negation":
                    baseline = float(self.next_word_baseline[layer, head])
                    row["next_word_baseline"] = None if np.isnan(baseline) else round(baseline, 6)
                    above = float(self.attention[layer, head]) - baseline
                    row["above_baseline"] = None if np.isnan(baseline) else round(above, 6)
                rows.append(row)
        return rows


@dataclass
class Prepared:
    """One sentence ready for its forward pass: the example as measured, its pieces and its layout."""
    example: Example           # as the user named it
    measured: Example          # as measured (a causal model reads negation backwards: next word -> cue)
    encoded: Encoded           # the text's pieces, offsets and word ids (the request's only tokenisation)
    layout: Layout             # the example's spans on those pieces


def prepare(loaded: LoadedModel, example: Example) -> Prepared:
    """Encode and lay out one example once (`runner.encode_and_align`); a span lost to truncation or that the
    tokenizer cannot separate is an InputError, raised before any forward pass."""
    measured = oriented(example, loaded.is_causal)
    # whole spans (the layout default is the coreference-mention rule, probing.defaults)
    (encoded,), (layout,), skipped = encode_and_align(loaded, [measured], mention="span")
    read_up_to = max((e for s, e in encoded.offsets), default=0)
    for role, (start, end) in (("source", example.source_span), ("target", example.target_span)):
        if start >= read_up_to:
            raise InputError(f"The {role} word {example.text[start:end]!r} at {start}:{end} lies beyond the first "
                             f"{loaded.max_length} tokens that {loaded.name} reads, so the text was truncated "
                             "before it. Shorten the text or move the words closer to its start.")
    if layout is None:
        reason = skipped[0].partition(": ")[2]
        raise InputError(f"{loaded.name}'s tokenizer cannot separate these words: {reason}. "
                         "Pick two words further apart.")
    return Prepared(example=example, measured=measured, encoded=encoded, layout=layout)


def sentence_scores(loaded: LoadedModel, prepared: Prepared, sentence: SentenceAttention) -> SentenceScores:
    """Every head's numbers for one prepared sentence, from the attention of the forward pass already made
    (`runner.attend`): the dataset scorer's arithmetic (`heads.score_attention`) on the full patterns."""
    example = prepared.example
    reads = [FullLayer(torch.from_numpy(layer)[None]) for layer in sentence.attention]   # [1, head, pos, pos]
    values = score_attention([prepared.layout], reads, example.relation,
                             reverse=example.relation == "negation" and loaded.is_causal)
    return SentenceScores(model=loaded.name, relation=example.relation,
                          direction=direction_for(example.relation, loaded.is_causal),
                          source=example.source, target=example.target, attention=values["attention"][0],
                          is_argmax=values["is_argmax"][0], next_word_baseline=values["next_word_baseline"][0],
                          truncated=prepared.encoded.truncated)
