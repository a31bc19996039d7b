"""Candidate antecedents in a typed sentence: its names and the head nouns of its noun phrases.

The demo offers these as choices once a sentence is typed, so a visitor picks the word the pronoun refers
to instead of meeting "No antecedent was given". A small rule set, no tagger (none installs offline with
its model from the package registries):

- a *name* is a run of capitalised words that are not function words ("Laura", "Mary Smith"); a capital
  at the start of a sentence counts too unless the word is a known function word or sentence adverb;
- a *noun* is the word after a determiner ("the", "a", "his", ...), skipping adjectives from a short list or
  with an adjective ending ("the old doctor" -> "doctor"); when the next word reads as an agent noun
  ("the bank manager"), that word is the head instead.

It errs on the side of offering: a wrong candidate costs a visitor one glance, a missing one a dead end.
Pronouns, adjectives with nothing after them ("the best."), and the source word itself, are never offered.
Every word is still available as a target.

What the page offers for one pronoun (`offered`) is ranked: antecedents mostly come before their pronoun,
so the candidates before it (nearest first), then those after it (nearest first), at most `MAX_OFFERED` of
them (a 300-word paragraph holds about 60); `default_antecedent`, the nearest one before, is preselected so
that Enter analyses at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from probing.demo.explore import words_with_spans
from probing.lexicon import DETERMINERS, PRONOUNS

FUNCTION_WORDS = frozenset(
    "i you we me us my your our mine yours ours myself yourself ourselves yourselves "
    "the a an this that these those some every each no another any both all "
    "and or but nor so yet because although though while when whenever where after before since until unless "
    "if than as whether then there here also not never very too just only even still already "
    "of to in on at by for with from into onto about over under after between through during without within "
    "against among upon "
    "is am are was were be been being do does did done have has had having will would shall should can could "
    "may might must "
    "who whom whose which what why how "
    "yesterday today tomorrow tonight now later soon however therefore meanwhile finally suddenly "
    "hello hi yes oh well please thanks mr mrs ms dr".split()) | frozenset(PRONOUNS)
ADJECTIVES = frozenset(
    "old young new big small large little long short tall good bad great best worst first last next other "
    "same own whole entire happy sad angry tired busy late early rich poor kind nice famous local senior "
    "junior former head chief red blue green black white brown grey gray".split())
ADJECTIVE_ENDINGS = ("ous", "ful", "ive", "less", "able", "ible", "ical", "ish")
AGENT_ENDINGS = ("er", "or", "ist", "ian", "man", "woman", "ant", "ent")
_ALPHA = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


MAX_OFFERED = 8          # candidate buttons offered for one pronoun, the likeliest kept


@dataclass(frozen=True)
class Candidate:
    """One candidate antecedent: its text (one word or a multi-word name), character span and kind."""
    word: str
    span: tuple[int, int]
    kind: str            # "name" or "noun"


def antecedent_candidates(text: str, source_span: tuple[int, int] | None = None) -> list[Candidate]:
    """Names and determiner-phrase head nouns of `text`, in text order, minus the source word's span."""
    words = [(w, s) for w, s in words_with_spans(text or "")]
    found: dict[tuple[int, int], Candidate] = {}
    for candidate in _names(text, words) + _nouns(words):
        found.setdefault(candidate.span, candidate)
    overlaps = lambda span: (source_span is not None and span[0] < source_span[1]  # noqa: E731
                             and source_span[0] < span[1])
    return sorted((c for c in found.values() if not overlaps(c.span)), key=lambda c: c.span)


def ranked(text: str, source_span: tuple[int, int] | None) -> list[Candidate]:
    """The candidates for the pronoun at `source_span`, likeliest first: those before it, nearest first, then
    those after it, nearest first (text order when no pronoun is given)."""
    found = antecedent_candidates(text, source_span)
    if source_span is None:
        return found
    before = [c for c in found if c.span[1] <= source_span[0]]
    after = [c for c in found if c.span[0] >= source_span[1]]
    return before[::-1] + after


def offered(text: str, source_span: tuple[int, int] | None, limit: int = MAX_OFFERED) -> list[Candidate]:
    """The `limit` likeliest candidates (`ranked`), in text order, as the page lists them."""
    return sorted(ranked(text, source_span)[:limit], key=lambda c: c.span)


def default_antecedent(text: str, source_span: tuple[int, int] | None) -> Candidate | None:
    """The candidate preselected for a pronoun: the nearest noun or name before it, else the nearest after."""
    likeliest = ranked(text, source_span)
    return likeliest[0] if likeliest else None


def _is_word(word: str) -> bool:
    return bool(_ALPHA.fullmatch(word))


def _sentence_start(words: list[tuple[str, tuple[int, int]]], i: int) -> bool:
    """The word opens the text or follows end punctuation (or an opening quote after it)."""
    j = i - 1
    while j >= 0 and words[j][0] in ('"', "“", "'", "‘", "(", "["):
        j -= 1
    return j < 0 or words[j][0] in (".", "!", "?", ":", ";")


def _could_be_name(words, i: int) -> bool:
    word = words[i][0]
    if not (_is_word(word) and word[0].isupper()) or word.lower() in FUNCTION_WORDS:
        return False
    # At a sentence start a capital says nothing, so adverbs such as "Recently" are left out.
    return not (_sentence_start(words, i) and word.lower().endswith("ly"))


def _names(text: str, words) -> list[Candidate]:
    """Runs of capitalised non-function words, as one candidate per run ("Mary Smith")."""
    names, i = [], 0
    while i < len(words):
        if not _could_be_name(words, i):
            i += 1
            continue
        j = i
        # A run continues over the next capitalised word only when a single space separates them.
        while (j + 1 < len(words) and _could_be_name(words, j + 1) and not _sentence_start(words, j + 1)
               and text[words[j][1][1]:words[j + 1][1][0]] == " "):
            j += 1
        span = (words[i][1][0], words[j][1][1])
        names.append(Candidate(text[span[0]:span[1]], span, "name"))
        i = j + 1
    return names


def _is_adjective(word: str) -> bool:
    lower = word.lower()
    return lower in ADJECTIVES or (len(lower) > 5 and lower.endswith(ADJECTIVE_ENDINGS))


def _content(word: str) -> bool:
    return _is_word(word) and word.lower() not in FUNCTION_WORDS


def _nouns(words) -> list[Candidate]:
    """The head noun after each determiner: the first non-adjective, or a following agent noun."""
    nouns = []
    for i, (word, _) in enumerate(words):
        if word.lower() not in DETERMINERS:
            continue
        j = i + 1
        while j < len(words) and j - i <= 3 and _content(words[j][0]) and _is_adjective(words[j][0]) \
                and j + 1 < len(words) and _content(words[j + 1][0]):
            j += 1
        if j >= len(words) or not _content(words[j][0]) or words[j][0][0].isupper():
            continue    # nothing noun-like follows (capitalised words are names, found above)
        if _is_adjective(words[j][0]) or words[j][0].lower().endswith("ly"):
            continue    # "the best.", "a really": an adjective or adverb with no noun after it
        following = words[j + 1][0] if j + 1 < len(words) else ""
        if _content(following) and following.islower() and following.endswith(AGENT_ENDINGS) \
                and not following.endswith("ed"):
            j += 1
        nouns.append(Candidate(words[j][0], words[j][1], "noun"))
    return nouns
