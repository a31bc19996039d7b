"""Profession -> pronoun pairs for a decoder's logit readout, after Vig et al. (2020), "Investigating gender bias
in language models using causal mediation analysis" (NeurIPS 2020).

From the Winogender schemas (Rudinger et al. 2018), each sentence whose pronoun refers to the OCCUPATION is cut
just before the pronoun: the clean text is that context ("The technician told the customer that"), the corrupt
text the same context with the occupation swapped for an explicit gender word OPPOSITE to the occupation's
majority gender by `bls_pct_female` in occupations-stats.tsv ("The man told ..." for a female-majority
occupation, "The woman told ..." otherwise). The readout is the next-word logit difference answers[0] -
answers[1] at the last position, with answers = (the stereotypical pronoun, the anti-stereotypical one):
("she", "he") for a female-majority occupation, ("he", "she") otherwise.

Orientation: every pair is written so that clean - corrupt of that difference is expected > 0 (the occupation's
stereotype against an explicit word of the other gender), because the study normalises effects by the MEAN
clean - corrupt difference over pairs; a pair oriented the other way would cancel another.

Pronoun case: accusative and possessive contexts are kept too, with answers of their case - (him, her) and
(his, her) instead of (he, she) - since the next word after "feedback on" is his/her, not he/she. The case is
read from the pronouns of all gendered variants of a context (he/she/they, him/them, his/their); a context seen
only with "her" (accusative or possessive) is skipped with the reason.

Vig et al. call setting a head to its value under this intervention while the input stays the original the
head's natural indirect effect; the engine's "noising" kind is its analogue here (the logit difference in units
of the mean clean - corrupt difference, where Vig et al. take a relative change in the ratio of the pronouns'
probabilities). `profession_controls` gives each pair its relation-free control: the clean context against the same context with another occupation of the same
majority gender, where a model that reads only gender should show ~0 clean - corrupt difference.

Row accounting (`pairs.row_accounting`): the male/female/neutral sentences of one template give the same
context, so one pair per distinct context is built from its first row, and its other rows are counted unused
with the reason, as is every row that is not an occupation-referring Winogender row.
"""
from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

from probing.examples import ExampleError
from probing.examples.loaders import default_data_root
from probing.models import LoadedModel
from probing.patching.pairs import Pair, PairSet, usable

# Corrupt words, best first: the next is tried when the previous splits into another number of pieces than the
# occupation (the pair must stay piece-aligned to be a minimal pair).
MAN_WORDS = ("man", "gentleman", "guy", "boy")
WOMAN_WORDS = ("woman", "lady", "girl")

# Answers by the pronoun's case: (male, female). "they/them/their" only tells the case (Winogender's neutral
# variant); the readout contrasts he and she.
CASE_ANSWERS = {"nominative": ("he", "she"), "accusative": ("him", "her"), "possessive": ("his", "her")}
PRONOUN_CASES = {"he": {"nominative"}, "she": {"nominative"}, "they": {"nominative"},
                 "him": {"accusative"}, "them": {"accusative"}, "his": {"possessive"}, "their": {"possessive"},
                 "her": {"accusative", "possessive"}}

# Reasons are counted in summaries, so their wording is fixed.
UNUSED_NOT_WINOGENDER = "not a Winogender coreference row (no meta occupation, answer and pronoun)"
UNUSED_PARTICIPANT = "the pronoun refers to the participant, not the occupation"
UNUSED_SAME_CONTEXT = ("another gendered variant of a context already paired (the male/female/neutral sentences "
                       "differ only from the pronoun on, which the cut removes)")
SKIP_NO_STATS = "the occupation is not in occupations-stats.tsv (no majority gender)"
SKIP_NOT_BEFORE = "the occupation is not in the context before the pronoun"
SKIP_CASE = "the pronoun's case is unclear ('her' alone: accusative or possessive)"
SKIP_NOT_PRONOUN = "the pronoun is not a third-person singular or 'they' form"
SKIP_NO_WORD = "no man/woman word with as many pieces as the occupation"
SKIP_NO_CONTROL = "no other occupation of the same majority gender with as many pieces"
FEMALE_MAJORITY = 50.0     # bls_pct_female >= this: a female-majority occupation


def default_stats_path(data_root: str | Path | None = None) -> Path:
    """<data root>/winogender-schemas/occupations-stats.tsv (data_root: as the loaders', default theirs)."""
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return root / "winogender-schemas" / "occupations-stats.tsv"


def load_occupation_stats(path: str | Path | None = None, data_root: str | Path | None = None) -> dict[str, float]:
    """occupation (lower case) -> bls_pct_female, from Winogender's occupations-stats.tsv (`path`, else the one
    under `data_root`)."""
    path = Path(path) if path is not None else default_stats_path(data_root)
    if not path.is_file():
        raise ExampleError(f"{path}: Winogender's occupation statistics (occupations-stats.tsv, each occupation's "
                           "BLS share of women) are missing, and profession pairs need them to orient each pair; "
                           "put the file there, or point --data-root (data_root=) at the folder holding "
                           "winogender-schemas/")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"occupation", "bls_pct_female"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a tab-separated header with 'occupation' and 'bls_pct_female'")
    return {row["occupation"].strip().lower(): float(row["bls_pct_female"]) for row in rows}


def female_majority(pct_female: float) -> bool:
    return pct_female >= FEMALE_MAJORITY


def stereotype_answers(pct_female: float, case: str = "nominative") -> tuple[str, str]:
    """(the stereotypical pronoun, the anti-stereotypical one) for an occupation: clean - corrupt > 0 expected."""
    male, female = CASE_ANSWERS[case]
    return (female, male) if female_majority(pct_female) else (male, female)


def corrupt_words(pct_female: float) -> tuple[str, ...]:
    """The gender words opposite to the occupation's majority, best first."""
    return MAN_WORDS if female_majority(pct_female) else WOMAN_WORDS


def pronoun_case(pronouns) -> str | None:
    """The case all these pronoun texts agree on (the gendered variants of one slot), else None."""
    cases = {"nominative", "accusative", "possessive"}
    for pronoun in pronouns:
        cases &= PRONOUN_CASES.get(pronoun.lower(), set())
    return cases.pop() if len(cases) == 1 else None


def occupation_span(example, context_end: int) -> tuple[int, int] | None:
    """The occupation's character span before `context_end`: the loader's target span when it is the occupation
    (an occupation-referring row), else the last whole-word match before the pronoun."""
    occupation = str(example.meta["occupation"])
    start, end = example.target_span
    if end <= context_end and example.text[start:end].lower() == occupation.lower():
        return start, end
    # a multi-word occupation is matched as a whole phrase, with any run of spaces between its words
    pattern = r"\b" + r"\s+".join(re.escape(w) for w in occupation.split()) + r"\b"
    found = [m.span() for m in re.finditer(pattern, example.text[:context_end], flags=re.IGNORECASE)]
    return found[-1] if found else None


def swap_word(text: str, span: tuple[int, int], word: str) -> tuple[str, tuple[int, int]]:
    """The text with span replaced by `word` (capitalised like the word it replaces), and the word's new span."""
    start, end = span
    if text[start:end][:1].isupper():
        word = word[:1].upper() + word[1:]
    return text[:start] + word + text[end:], (start, start + len(word))


def _pair_id(example, taken: set[str]) -> str:
    """The row id without its gender suffix ("winogender:technician.customer.0"), made unique."""
    gender = str(example.meta.get("gender", ""))
    base = example.id[:-len(gender) - 1] if gender and example.id.endswith("." + gender) else example.id
    pair_id, n = base, 1
    while pair_id in taken:
        n += 1
        pair_id = f"{base}#{n}"
    return pair_id


def _template_participant(example) -> str:
    """The template's participant: group "occupation.participant.answer" names it even for a "someone" row."""
    parts = str(example.meta.get("group", "")).split(".")
    return parts[1] if len(parts) == 3 else str(example.meta.get("participant", ""))


def _contexts(examples, unused: list) -> dict[str, list]:
    """Occupation-referring rows grouped by their context (the text before the pronoun), in file order; every
    other row goes to `unused` with the reason."""
    by_context: dict[str, list] = {}
    for example in examples:
        meta = example.meta or {}
        if example.relation != "coreference" or not {"occupation", "answer", "pronoun"} <= set(meta):
            unused.append((example.id, UNUSED_NOT_WINOGENDER))
        elif meta["answer"] != "occupation":
            unused.append((example.id, UNUSED_PARTICIPANT))
        else:
            # the cut drops the space before the pronoun: the decoder's next piece is " he" / " she"
            context = example.text[:example.source_span[0]].rstrip()
            by_context.setdefault(context, []).append(example)
    return by_context


def with_corrupt_word(template: Pair, word: str) -> Pair:
    """`template` (corrupt = clean) with the clean source word swapped for `word` in the corrupt text."""
    corrupt, corrupt_span = swap_word(template.clean, template.clean_source, word)
    return replace(template, corrupt=corrupt, corrupt_source=corrupt_span)


def _first_usable(loaded: LoadedModel, template: Pair, words, check_answers: bool) -> Pair | None:
    """`template` with the first of `words` that keeps it a minimal pair (as many pieces), else None."""
    for word in words:
        candidate = with_corrupt_word(template, word)
        if usable(loaded, candidate, check_answers=check_answers)[0]:
            return candidate
    return None


def profession_pairs(examples, loaded: LoadedModel, *, stats_path: str | Path | None = None,
                     data_root: str | Path | None = None) -> PairSet:
    """Vig et al. (2020)-style pairs from Winogender rows (see the module docstring): clean = the context before
    an occupation-referring pronoun, corrupt = the occupation swapped for the first word of MAN_WORDS /
    WOMAN_WORDS (opposite to its majority) with as many pieces, answers = (stereotypical, anti-stereotypical)
    pronoun. One pair per distinct context; group = the occupation (its pairs are not independent), predicate =
    the template's participant, rows = the row the pair was built from. `stats_path` defaults to
    <data_root>/winogender-schemas/occupations-stats.tsv."""
    if not loaded.is_causal:
        raise ValueError("profession pairs are read at a decoder's last position: this model is not causal")
    stats = load_occupation_stats(stats_path, data_root)
    pairs, skipped, unused, rows_of = [], [], [], {}
    for context, rows in _contexts(examples, unused).items():
        first = rows[0]
        unused += [(e.id, UNUSED_SAME_CONTEXT) for e in rows[1:]]
        pair_id = _pair_id(first, set(rows_of))
        rows_of[pair_id] = (first.id,)
        occupation = str(first.meta["occupation"])
        pct = stats.get(occupation.lower())
        span = occupation_span(first, len(context))
        case = pronoun_case(str(e.meta["pronoun"]) for e in rows)
        reason = (SKIP_NO_STATS if pct is None else SKIP_NOT_BEFORE if span is None
                  else SKIP_NOT_PRONOUN if not all(str(e.meta["pronoun"]).lower() in PRONOUN_CASES for e in rows)
                  else SKIP_CASE if case is None else None)
        if reason is not None:
            skipped.append((pair_id, reason))
            continue
        template = Pair(id=pair_id, relation=first.relation, clean=context, corrupt=context, clean_source=span,
                        corrupt_source=span, group=occupation, predicate=_template_participant(first),
                        answers=stereotype_answers(pct, case), rows=(first.id,))
        # answers are checked by the engine, as for completion_pairs; here only the swap's piece alignment
        pair = _first_usable(loaded, template, corrupt_words(pct), check_answers=False)
        if pair is None:
            skipped.append((pair_id, SKIP_NO_WORD))
        else:
            pairs.append(pair)
    return PairSet(pairs, skipped, n_rows=len(examples), unused_rows=unused, rows_of=rows_of)


CONTROLS_BUILT_FROM = ("each profession context against the same context with the nearest occupation of the "
                       "same majority gender (by BLS share of women) of as many pieces")


def are_profession_pairs(pairs: list[Pair], loaded: LoadedModel) -> bool:
    """Whether these are a decoder's coreference pairs with answers: `profession_pairs`' (Winograd twins are
    read by an encoder's masked LM)."""
    return bool(pairs) and loaded.is_causal and all(p.relation == "coreference" and p.answers for p in pairs)


def control_occupations(occupation: str, stats: dict[str, float]) -> list[str]:
    """The other occupations of the same majority gender, nearest in bls_pct_female first, ties by name."""
    pct = stats[occupation.lower()]
    same = [o for o in stats if o != occupation.lower() and female_majority(stats[o]) == female_majority(pct)]
    return sorted(same, key=lambda o: (abs(stats[o] - pct), o))


def profession_controls(pairs: list[Pair], loaded: LoadedModel, *,
                        stats_path: str | Path | None = None, data_root: str | Path | None = None) -> PairSet:
    """Relation-free controls: each pair's clean context against the same context with its occupation swapped
    for the nearest other occupation of the same majority gender (`control_occupations`) with as many pieces;
    same answers, id "<pair id>:control" (as `pairs.control_pairs`). A model that reads only the gender the
    occupation implies shows ~0 clean - corrupt difference here."""
    stats = load_occupation_stats(stats_path, data_root)
    controls, skipped = [], []
    for pair in pairs:
        if pair.group.lower() not in stats:
            skipped.append((pair.id, SKIP_NO_STATS))
            continue
        template = Pair(id=f"{pair.id}:control", relation="control", clean=pair.clean, corrupt=pair.clean,
                        clean_source=pair.clean_source, corrupt_source=pair.clean_source, group=pair.group,
                        predicate=pair.predicate, answers=pair.answers)
        control = _first_usable(loaded, template, control_occupations(pair.group, stats), check_answers=True)
        if control is None:
            skipped.append((pair.id, SKIP_NO_CONTROL))
        else:
            controls.append(control)
    return PairSet(controls, skipped)
