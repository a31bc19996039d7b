"""One sentence at a time: find pronouns and negation cues, resolve the words a user names, score every head.

This is what the demo and its `/score_heads` API call. The numbers come from `probing.heads.score_examples`,
the same code that scores datasets, so a sentence's scores in the demo equal the library's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from probing.examples import Example, ExampleError
from probing.heads import direction_for, score_examples
from probing.models import LoadedModel

PRONOUNS = ("he", "she", "it", "they", "him", "her", "them", "his", "hers", "its", "their", "theirs",
            "himself", "herself", "itself", "themselves")
MAX_TEXT_CHARS = 5000     # longer input is refused in words before it reaches the tokenizer
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_CUE = re.compile(r"(?i)(?<!\w)not(?!\w)|n't(?!\w)|(?<=\w)n’t(?!\w)")


class InputError(ValueError):
    """Input the demo or API cannot use; the message says what is wrong in words."""


def clean_text(text: str | None) -> str:
    """Refuse empty or oversized text; replace control characters (NUL included) with spaces."""
    if text is None or not str(text).strip():
        raise InputError("The sentence is empty: type a sentence or pick an example.")
    text = str(text)
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"The text has {len(text):,} characters; the limit here is {MAX_TEXT_CHARS:,}.")
    # Same length, so character offsets the user gave stay valid.
    return "".join(" " if (ord(c) < 32 and c not in "\t\n") or ord(c) == 127 else c for c in text)


def words_with_spans(text: str) -> list[tuple[str, tuple[int, int]]]:
    """Words and punctuation marks of the text with their character spans (the demo's dropdown choices)."""
    return [(m.group(), m.span()) for m in _WORD.finditer(text)]


def find_pronouns(text: str) -> list[tuple[str, tuple[int, int]]]:
    """Closed-class personal and possessive pronouns, with spans."""
    return [(w, s) for w, s in words_with_spans(text) if w.lower() in PRONOUNS]


def find_negation_cues(text: str) -> list[tuple[str, tuple[int, int]]]:
    """"not" and the "n't" of contractions, with spans."""
    return [(m.group(), m.span()) for m in _CUE.finditer(text)]


def next_word_span(text: str, cue_span: tuple[int, int]) -> tuple[int, int]:
    """The word right after the cue (punctuation does not count as a word here)."""
    for word, span in words_with_spans(text[cue_span[1]:]):
        if re.match(r"\w", word):
            return (span[0] + cue_span[1], span[1] + cue_span[1])
    raise InputError(f"No word follows {text[cue_span[0]:cue_span[1]]!r} at {cue_span[0]}:{cue_span[1]}.")


def resolve_word(text: str, word: str | None, role: str) -> tuple[int, int]:
    """A word given as text (must occur exactly once) or as `start:end` offsets, as a span."""
    word = (word or "").strip()
    if not word:
        raise InputError(f"No {role} word was given.")
    offsets = re.fullmatch(r"(-?\d+)\s*:\s*(-?\d+)", word)
    if offsets:
        start, end = int(offsets.group(1)), int(offsets.group(2))
        if not 0 <= start < end <= len(text):
            raise InputError(f"The {role} span {start}:{end} is out of range or reversed for a text of "
                             f"{len(text)} characters.")
        if not text[start:end].strip():
            raise InputError(f"The {role} span {start}:{end} covers only white space.")
        return (start, end)
    pattern = re.escape(word) if not re.match(r"\w", word[0]) else r"(?<!\w)" + re.escape(word) + r"(?!\w)"
    matches = [m.span() for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
    if not matches:
        raise InputError(f"The {role} word {word!r} does not occur in the sentence.")
    if len(matches) > 1:
        where = ", ".join(f"{s}:{e}" for s, e in matches)
        raise InputError(f"The {role} word {word!r} occurs {len(matches)} times ({where}); "
                         "give it as start:end offsets.")
    return matches[0]


def make_example(text: str, relation: str, source: str | None, target: str | None = None) -> Example:
    """An Example from a sentence and the words a user named; negation's target defaults to the next word."""
    if relation not in ("coreference", "negation"):
        raise InputError(f"Unknown relation {relation!r}: use 'coreference' or 'negation'.")
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
    attention: np.ndarray      # (L, H) source -> target (or next word -> cue for causal negation)
    is_argmax: np.ndarray      # (L, H) bool: the target wins among the other words
    next_word: np.ndarray      # (L, H) mean adjacent-pair attention (negation), NaN otherwise
    truncated: bool

    def heads(self) -> list[dict]:
        """One dict per head, in (layer, head) order, with plain floats (JSON-ready)."""
        rows = []
        for layer in range(self.attention.shape[0]):
            for head in range(self.attention.shape[1]):
                row = {"layer": layer, "head": head, "attention": round(float(self.attention[layer, head]), 6),
                       "is_argmax": bool(self.is_argmax[layer, head])}
                if self.relation == "negation":
                    baseline = float(self.next_word[layer, head])
                    row["next_word_baseline"] = None if np.isnan(baseline) else round(baseline, 6)
                    row["selectivity"] = None if np.isnan(baseline) else round(float(self.attention[layer, head]) - baseline, 6)
                rows.append(row)
        return rows


def score_sentence(loaded: LoadedModel, example: Example) -> SentenceScores:
    """Score every head on one example with the dataset scorer; a span lost to truncation is an InputError."""
    try:
        scores, skipped = score_examples(loaded, [example])
    except ValueError as err:
        raise InputError(f"Cannot score this sentence with {loaded.name}: {err}") from None
    from probing.runner import encode
    truncated = encode(loaded, [example.text])[0].truncated
    return SentenceScores(model=loaded.name, relation=example.relation,
                          direction=direction_for(example.relation, loaded.is_causal),
                          source=example.source, target=example.target, attention=scores.attention[0],
                          is_argmax=scores.hit[0], next_word=scores.next_word[0], truncated=truncated)
