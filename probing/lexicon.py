"""The closed word lists and word rules every floor shares: pronouns, articles and determiners, the negation cue.

Ground floor: imports nothing from `probing`. The loaders, the feature builder, the demo's cue and pronoun
finders and its candidate picker all read these lists from here, so a word added here is added everywhere.
"""
from __future__ import annotations

import re

MALE_PRONOUNS = frozenset({"he", "him", "his", "himself"})
FEMALE_PRONOUNS = frozenset({"she", "her", "hers", "herself"})
NEUTRAL_PRONOUNS = frozenset({"they", "them", "their", "theirs", "themself", "themselves"})
# The pronouns that refer to people: the ones the coreference datasets mark.
PERSON_PRONOUNS = MALE_PRONOUNS | FEMALE_PRONOUNS | NEUTRAL_PRONOUNS
PRONOUNS = PERSON_PRONOUNS | frozenset({"it", "its", "itself"})   # every third-person personal pronoun

# The articles a mention or candidate loses in front ("the doctor" -> "doctor").
ARTICLES = ("the", "a", "an")
# Every word that opens a noun phrase (the demo's candidate picker takes the noun after one).
DETERMINERS = frozenset(
    "the a an this that these those his her their its my your our some every each no another either neither "
    "any both several many few".split())

# A negation cue: the word "not", or the "n't" of a contraction (straight or curly apostrophe), never inside a
# word. The one definition: the loaders and the demo's cue finder use it.
NEGATION_CUE = re.compile(r"(?<![\w'’])not(?!\w)|(?<=[A-Za-z])n['’]t(?!\w)", re.IGNORECASE)


def strip_article(phrase: str) -> str:
    """The phrase without a leading article, white space collapsed, case kept ("The doctor" -> "doctor");
    a lone article stays."""
    words = phrase.split()
    if len(words) > 1 and words[0].lower() in ARTICLES:
        words = words[1:]
    return " ".join(words)


def word_type(text: str) -> str:
    """A candidate's word type: lowercased, leading article dropped ("The doctor" -> "doctor")."""
    return strip_article(text).lower()
