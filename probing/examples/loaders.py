"""Loaders that turn the public datasets under the shared data root into validated `Example` records.

The project ships these loaders, never copies of the data. Every record is built through
`example_from_dict`, so it obeys the example contract (spans are `[start, end)` character offsets into
`text`). Each loader returns `(list[Example], LoadReport)`, and every data row that does not become a
record is listed in `report.skipped` as "<where>: <reason>" (for example "line 17: answer 'the trophy'
not found in text"); no row is dropped silently. Blank lines are not rows.

Two kinds of bad row, handled differently:

* **unusable by construction** - a well-formed row that cannot give a record under our conventions
  (a GAP row where neither or both names corefer, a string that is not at its offset or not in the
  text, an affixal CondaQA cue, a duplicate passage, a record that fails validation). These are always
  skipped and counted, whatever `skip_bad` says.
* **malformed** - a row that breaks the file's own documented format (not UTF-8, broken JSON, a missing
  column or field, an offset that is not an integer, a coref flag that is not TRUE/FALSE, unbalanced
  WinoBias brackets, a Winogender sentid that does not parse). With `skip_bad=False` (the default) the
  first one raises `ExampleError` naming the file and the line; with `skip_bad=True` it is skipped and
  counted like the others. A file that cannot be read at all (wrong header, broken XML) always raises.

Negation conventions: the source is the cue ("not"; "n't" - just those three characters - in
contractions) and the target is the next word after it. Negated records carry meta
`{"role": "negated", "pair": PAIR_ID}`; BLiMP's licensor paradigm also gives a control record
`{"role": "control", "pair": PAIR_ID}` whose source is the adverb that stands where "not" stood. NEG-136,
CondaQA and the BLiMP scope paradigm have no substitute adverb, so their negated records have no control.
Every record has `meta["group"]`, a key that keeps related rows (the pro/anti versions of one WinoBias
frame, one Winogender template, one Winograd schema pair, one minimal pair, one Wikipedia page) in the
same fold of a grouped cross-validation.

What could solve an example, and how examples pair up (the meta contract shared with the head tables):

* `meta["group"]`: the clustering unit (sentence frame, template, schema pair); absent = its own unit.
* `meta["twin"]`: shared by the two items that differ only in the word that flips the answer, with
  `meta["twin_role"]` "clean" or "corrupt". WinoBias: the pro/anti versions of a line (pro is clean; the
  pronoun's gender flips the stereotype; 2 type-2 test lines whose versions name different antecedents get no
  twin). Winogender: the two answers (occupation = clean, participant = corrupt) for one occupation,
  participant and pronoun gender. WSC273: a schema pair of exactly two (the first is clean; the triple and
  quadruple get none). BLiMP licensing: the negated sentence (clean) and its adverb control (corrupt).
* `meta["agreement_decides"]`: False for WinoBias and Winogender (both candidates are singular people with
  no gender of their own, so pronoun agreement cannot pick one).
* WinoBias: `meta["stereotype"]` "pro"/"anti" and `meta["type"]` "1"/"2"; Winogender: `meta["gender"]` (the
  pronoun's) and `meta["answer"]` ("occupation"/"participant").

Per-dataset choices, beyond each loader's one-line docstring:

* GAP: ids "gap-dev:development-1"; meta gender from the pronoun; group = the Wikipedia URL (several rows
  come from one page). Rows with neither or both names coreferent are unusable (about 10%). The spans of A
  and B are their head words (`mention_head`; the whole names stay in meta["mention_spans"]); a row whose A or
  B has no usable head (a coordination, a junk piece) is skipped with the reason.
* Head words (`mention_head`, GAP and WinoBias): the last word before a preposition, relative pronoun or
  comma ("a sack of potatoes" -> sack), a possessive 's stripped, "*" counted as a letter ("C*rdoba"); a
  coordination ("Sam and Amy") is skipped as "coordination", and a head that would be punctuation or a
  single leftover piece is skipped too.
* WinoBias: the text is the bracket-free sentence exactly as in the file (its tokenised "farmer 's" and
  odd typos are kept). Some lines bracket a second pronoun of the same entity; the first one is the
  source. Candidates: the bracketed occupation and the first other occupation from
  {female,male}_occupations.txt outside the brackets. group = "winobias:type1.dev:<sentence number>",
  shared by the pro and anti version of a line.
* Winogender: group = "occupation.participant.answer" from templates.tsv, so the "someone" variants share
  the template's group; meta gender is the sentid's (male/female/neutral).
* WSC273: a space before txt2 is dropped when txt2 starts with punctuation. An answer is looked up, case
  insensitively and allowing a plural -s/-es, as (1) the whole answer without its determiner, (2) its head
  noun (the last word before a preposition), (3) its last word, (4) its first word - first before the
  pronoun, then after it - and the best pair of non-overlapping spans wins; meta["match"] says which rule
  found each candidate. group pairs schemas 2k/2k+1, growing a pair while the next schema repeats its
  frame (a triple at 252-254, a quadruple at 267-270).
* BLiMP (`blimp-npi-licensing`, old name `blimp-negation`; `blimp-npi-scope`, old name
  `blimp-negation-scope`): the licensor set measures NPI licensing ("not" -> "ever" in every item, against
  ungrammatical controls like "probably ever"), not negation in general; the names say so.
* BLiMP scope: the bad sentence's "not" (in the wrong clause) is a genuine cue -> next word, so it is kept
  as a record with role "scope-bad" and no "pair"; filter on meta["role"] == "negated" for the licensing
  "not" only. It shares the good sentence's group.
* NEG-136: the text is the negated context completed with target_aff (as the brief asks), e.g. "A trout
  is not a fish."; there is no control (no substitute adverb).
* CondaQA: the file is JSON lines. A row is keyed by its original passage; every row after the first
  with the same passage is skipped as "duplicate passage". The cue is searched (whole word, case
  insensitive, a single-word cue may carry -s/-es/-ed/-d/-ing) inside the original sentence first, then in
  the whole passage. Affixal cues (un-, in-, im-, il-, ir-, dis-, non-, a-, -less; see is_affixal_cue)
  are skipped: their negation is inside the word, not a word before a target.
"""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from probing.lexicon import (FEMALE_PRONOUNS, MALE_PRONOUNS, NEGATION_CUE, NEUTRAL_PRONOUNS, PERSON_PRONOUNS,
                             strip_article)

from .format import Example, ExampleError, LoadReport, example_from_dict

DATA_ROOT_ENV = "PROBING_DATA_ROOT"

_WORD = r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*"
_NEXT_WORD = re.compile(r"\s+(" + _WORD + ")")


# --------------------------------------------------------------------------------------------------
# shared machinery


class _Unusable(Exception):
    """A well-formed row that cannot become a record under our conventions: always skipped and counted."""


class _Malformed(Exception):
    """A row that breaks the file's format: raises unless skip_bad, then skipped and counted."""


class _Builder:
    """Collects the records of one load, validates them and files every skipped row in the report."""

    def __init__(self, source: str, skip_bad: bool, limit: int | None):
        self.report = LoadReport(source=source)
        self.skip_bad = skip_bad
        self.limit = limit
        self.records: list[Example] = []

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.records) >= self.limit

    def add(self, *rows: dict) -> None:
        """Validate all the rows of one data row first, so a pair is added whole or not at all."""
        built = []
        for row in rows:
            try:
                built.append(example_from_dict(row))
            except ExampleError as err:
                raise _Unusable(f"invalid record {row.get('id', '')}: {err}") from None
        self.records.extend(built)

    def fail(self, path: Path, line_no: int | None, where: str, problem: Exception) -> None:
        if isinstance(problem, _Malformed) and not self.skip_bad:
            at = f"{path}:{line_no}" if line_no is not None else str(path)
            raise ExampleError(f"{at}: {problem} (pass skip_bad to skip malformed rows)") from None
        self.report.skipped.append(f"{where}: {problem}")

    def finish(self) -> tuple[list[Example], LoadReport]:
        if self.limit is not None:
            del self.records[self.limit:]
        self.report.n_records = len(self.records)
        return self.records, self.report


def _raw_lines(path: Path) -> list[tuple[int, bytes]]:
    """The non-blank lines of a file as (1-based line number, raw bytes)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ExampleError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return [(i, line.rstrip(b"\r")) for i, line in enumerate(raw.split(b"\n"), start=1) if line.strip()]


def _text_lines(path: Path) -> list[str]:
    """The non-blank lines of a small auxiliary file, which must be UTF-8 throughout."""
    lines = []
    for line_no, raw in _raw_lines(path):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ExampleError(f"{path}:{line_no}: the line is not UTF-8") from None
    return lines


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Malformed(f"the line is not UTF-8 ({err.reason} at byte {err.start})") from None


def _tsv(raw_lines: list[tuple[int, bytes]], path: Path, expected: list[str] | None = None):
    """Split a TSV into its header and (line number, raw bytes) data rows; a bad header always raises."""
    if not raw_lines:
        raise ExampleError(f"{path}: the file is empty")
    line_no, raw = raw_lines[0]
    try:
        header = raw.decode("utf-8").split("\t")
    except UnicodeDecodeError:
        raise ExampleError(f"{path}:{line_no}: the header line is not UTF-8") from None
    if expected is not None and header[:len(expected)] != expected:
        raise ExampleError(f"{path}:{line_no}: expected the header columns {expected}, got {header}")
    return header, raw_lines[1:]


def _cells(raw: bytes, n: int) -> list[str]:
    cells = _decode(raw).split("\t")
    if len(cells) != n:
        raise _Malformed(f"expected {n} tab-separated columns, got {len(cells)}")
    return cells


def _int(value: str, name: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise _Malformed(f"{name} {value!r} is not an integer") from None


def _word(text: str, pattern: str, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """The first case-insensitive whole-word match of a regex pattern in text[start:end], or None."""
    found = re.compile(r"(?<![\w'])(?:" + pattern + r")(?!\w)", re.IGNORECASE).search(
        text, start, len(text) if end is None else end)
    return found.span() if found else None


def _phrase(words: str) -> str:
    """A regex for a literal phrase, with any white space between its words."""
    return r"\s+".join(re.escape(w) for w in words.split())


def _next_word(text: str, end: int) -> tuple[int, int] | None:
    """The span of the word right after position `end` (white space between, no punctuation), or None."""
    found = _NEXT_WORD.match(text, end)
    return found.span(1) if found else None


def _gender(pronoun: str) -> str:
    word = pronoun.lower()
    if word in MALE_PRONOUNS:
        return "male"
    if word in FEMALE_PRONOUNS:
        return "female"
    if word in NEUTRAL_PRONOUNS:
        return "neutral"
    return "unknown"


def _negated(text: str, cue: tuple[int, int], example_id: str, meta: dict) -> dict:
    """A negated record: source the cue, target the next word after it."""
    target = _next_word(text, cue[1])
    if target is None:
        raise _Unusable(f"the cue {text[cue[0]:cue[1]]!r} is not followed by a word")
    return {"text": text, "relation": "negation", "source_span": list(cue), "target_span": list(target),
            "id": example_id, "meta": {"role": "negated", **meta}}


# --------------------------------------------------------------------------------------------------
# mention head words

# Word lists for the head rule (kept here until probing.lexicon holds the shared lists).
HEAD_PREPOSITIONS = frozenset({
    "of", "in", "on", "at", "to", "for", "from", "with", "by", "about", "under", "over", "into", "onto",
    "between", "among", "against", "during", "without", "within", "through", "across", "behind", "beyond",
    "near", "after", "before", "since", "until", "like", "as", "via", "per"})
RELATIVE_PRONOUNS = frozenset({"who", "whom", "whose", "which", "that", "where", "when"})
COORDINATORS = frozenset({"and", "or", "&", "nor"})
# A word of a mention: letters or digits, with "*" counted as a letter (GAP writes "*" for non-ASCII
# letters: "C*rdoba"), joined by inner apostrophes or hyphens ("O'Brien", "Jean-Paul"); "&" is kept as a word
# so that a coordination can be seen.
_MENTION_WORD = re.compile(r"(?:[^\W_]|\*)+(?:['\u2019-](?:[^\W_]|\*)+)*|&|[,(]")
_REGNAL = re.compile(r"(?:[IVX]{1,4})$")      # "Edward I", "Charles V": the name before the numeral is the head
_POSSESSIVE = re.compile(r"['\u2019]s?$", re.IGNORECASE)


def mention_head(text: str, span: tuple[int, int]) -> tuple[tuple[int, int] | None, str]:
    """The head word of the mention text[span]: (its span, "") or (None, the reason it has no usable head).

    The head of a mention of several words is its last word before the first preposition, relative pronoun
    comma or parenthesis ("a sack of potatoes" -> sack, "the man who left" -> man, "Smith, the baker" -> Smith),
    and not a regnal numeral ("Edward I of England" -> Edward); a
    possessive 's (or a bare ') is stripped ("Tina's" -> Tina); "*" inside a word counts as a letter. A
    coordination ("Sam and Amy") has no single head; a head that is punctuation, or a single character left
    over from a longer mention, is refused."""
    start, end = span
    tokens = [(m.group(), m.start() + start) for m in _MENTION_WORD.finditer(text[start:end])]
    words = [(w, at) for w, at in tokens if w not in ",("]
    kept = []
    for w, at in tokens:
        if kept and (w in ",(" or w.lower() in HEAD_PREPOSITIONS or w.lower() in RELATIVE_PRONOUNS):
            break
        if w not in ",(":
            kept.append((w, at))
    # a coordination before any modifier ("Sam and Amy"; not "Emma of Waldeck and Pyrmont", whose head is Emma)
    if any(w.lower() in COORDINATORS for w, _ in kept[1:-1]):
        return None, f"coordination {text[start:end]!r} (no single head)"
    if len(kept) > 1 and _REGNAL.match(kept[-1][0]):
        kept.pop()
    if not kept:
        return None, f"no word in {text[start:end]!r}"
    word, at = kept[-1]
    stripped = _POSSESSIVE.sub("", word) if len(word) > 2 else word
    if not any(ch.isalnum() for ch in stripped):
        return None, f"the head of {text[start:end]!r} would be the non-word {stripped!r}"
    if len(stripped) == 1 and len(words) > 1:
        return None, f"the head of {text[start:end]!r} would be the single piece {stripped!r}"
    return (at, at + len(stripped)), ""


def _head_or_skip(text: str, span, label: str) -> list[int]:
    head, reason = mention_head(text, tuple(span))
    if head is None:
        raise _Unusable(f"{label} mention skipped: {reason}")
    return list(head)


# --------------------------------------------------------------------------------------------------
# coreference

GAP_COLUMNS = ["ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref",
               "B", "B-offset", "B-coref", "URL"]


def _gap_row(raw: bytes, name: str, line_no: int) -> dict:
    (row_id, text, pronoun, p_off, a, a_off, a_coref, b_name, b_off, b_coref, url) = _cells(raw, len(GAP_COLUMNS))
    spans = {}
    for label, string, offset in (("pronoun", pronoun, p_off), ("A", a, a_off), ("B", b_name, b_off)):
        start = _int(offset, f"{label} offset")
        if not string or text[start:start + len(string)] != string:
            raise _Unusable(f"{label} {string!r} is not at offset {start} "
                            f"(the text there reads {text[start:start + len(string)]!r})")
        spans[label] = [start, start + len(string)]
    flags = []
    for label, value in (("A-coref", a_coref), ("B-coref", b_coref)):
        if value.strip().upper() not in ("TRUE", "FALSE"):
            raise _Malformed(f"{label} must be TRUE or FALSE, got {value!r}")
        flags.append(value.strip().upper() == "TRUE")
    if flags == [False, False]:
        raise _Unusable("neither A nor B corefers with the pronoun")
    if flags == [True, True]:
        raise _Unusable("both A and B are marked as coreferent")
    answer = "A" if flags[0] else "B"
    heads = {label: _head_or_skip(text, spans[label], label) for label in ("A", "B")}
    return {"text": text, "relation": "coreference", "source_span": spans["pronoun"],
            "target_span": heads[answer], "candidate_spans": [heads["A"], heads["B"]], "id": f"{name}:{row_id}",
            "meta": {"split": row_id.rsplit("-", 1)[0], "gender": _gender(pronoun), "pronoun": pronoun,
                     "answer": answer, "A": a, "B": b_name, "url": url, "group": url or row_id, "line": line_no,
                     "mention_spans": {"A": spans["A"], "B": spans["B"]}}}


def load_gap(path: Path, *, name: str = "gap", skip_bad: bool = False,
             limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """GAP: source the pronoun at Pronoun-offset, candidates A and B, target the TRUE one (else skipped)."""
    b = _Builder(f"{name} ({path})", skip_bad, limit)
    _, rows = _tsv(_raw_lines(path), path, GAP_COLUMNS)
    for line_no, raw in rows:
        if b.full:
            break
        try:
            b.add(_gap_row(raw, name, line_no))
        except (_Unusable, _Malformed) as problem:
            b.fail(path, line_no, f"line {line_no}", problem)
    return b.finish()


_WINOBIAS_LINE = re.compile(r"^\s*(\d+)\s+(.*?)\s*$")


def _winobias_occupations(folder: Path) -> list[str]:
    words = {w.strip() for f in ("female_occupations.txt", "male_occupations.txt")
             for w in _text_lines(folder / f) if w.strip()}
    return sorted(words, key=lambda w: (-len(w), w))  # "construction worker" before "worker"


def _unbracket(sentence: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove the [brackets] and return the clean text with each bracketed mention's span in it."""
    out, spans, start = [], [], None
    for char in sentence:
        if char == "[":
            if start is not None:
                raise _Malformed("nested '[' in the sentence")
            start = len(out)
        elif char == "]":
            if start is None:
                raise _Malformed("']' without a matching '['")
            spans.append((start, len(out)))
            start = None
        else:
            out.append(char)
    if start is not None:
        raise _Malformed("'[' without a matching ']'")
    return "".join(out), spans


def load_winobias(folder: Path, *, name: str = "winobias", skip_bad: bool = False,
                  limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """WinoBias: unbracketed; source the 1st bracketed pronoun, target the bracketed occupation, + the other."""
    b = _Builder(f"{name} ({folder})", skip_bad, limit)
    occupations = _winobias_occupations(folder)
    occupation_pattern = "|".join(_phrase(o) for o in occupations)
    for type_ in (1, 2):
        for split in ("dev", "test"):
            for stereotype in ("pro", "anti"):
                path = folder / f"{stereotype}_stereotyped_type{type_}.txt.{split}"
                for line_no, raw in _raw_lines(path):
                    if b.full:
                        return b.finish()
                    try:
                        b.add(_winobias_row(_decode(raw), occupation_pattern, name, stereotype, type_, split,
                                            line_no))
                    except (_Unusable, _Malformed) as problem:
                        b.fail(path, line_no, f"{path.name} line {line_no}", problem)
    _keep_true_twins(b.records)
    return b.finish()


def _keep_true_twins(records: list[Example]) -> None:
    """Drop meta twin/twin_role where the two versions of a line are no minimal pair: not exactly two
    records, or a different antecedent or candidates (2 WinoBias type-2 test lines)."""
    members: dict[str, list[Example]] = {}
    for e in records:
        if e.meta.get("twin"):
            members.setdefault(e.meta["twin"], []).append(e)
    for pair in members.values():
        same = len(pair) == 2 and len({(e.target.lower(), tuple(e.text[a:z].lower() for a, z in e.candidate_spans))
                                       for e in pair}) == 1
        if not same:
            for e in pair:
                e.meta.pop("twin", None)
                e.meta.pop("twin_role", None)


def _winobias_row(line: str, occupation_pattern: str, name: str, stereotype: str, type_: int, split: str,
                  line_no: int) -> dict:
    parsed = _WINOBIAS_LINE.match(line)
    if parsed is None:
        raise _Malformed("the line does not start with a sentence number")
    number, sentence = parsed.groups()
    text, mentions = _unbracket(sentence)
    if len(mentions) < 2:
        raise _Malformed(f"expected at least two [bracketed] mentions, found {len(mentions)}")
    pronouns = [m for m in mentions if text[m[0]:m[1]].strip().lower() in PERSON_PRONOUNS]
    nouns = [m for m in mentions if m not in pronouns]
    if not pronouns:
        raise _Unusable("no bracketed mention is a pronoun")
    if len(nouns) != 1:
        raise _Unusable(f"expected one bracketed antecedent, found {len(nouns)}")
    pronoun = pronouns[0]
    start, end = nouns[0]
    phrase = text[start:end]
    core = strip_article(phrase)
    antecedent = tuple(_head_or_skip(text, (start, end), "antecedent"))
    other, search_from = None, 0
    while other is None:
        found = _word(text, occupation_pattern, search_from)
        if found is None:
            raise _Unusable(f"the other occupation (besides {core!r}) is not found in the text")
        if not any(found[0] < m[1] and m[0] < found[1] for m in mentions):
            other = found
        search_from = found[1]
    candidates = sorted([list(antecedent), _head_or_skip(text, other, "other occupation")])
    return {"text": text, "relation": "coreference", "source_span": list(pronoun),
            "target_span": list(antecedent), "candidate_spans": candidates,
            "id": f"{name}:{stereotype}.type{type_}.{split}:{number}",
            "meta": {"stereotype": stereotype, "type": str(type_), "split": split,
                     "group": f"{name}:type{type_}.{split}:{number}",
                     "twin": f"{name}:type{type_}.{split}:{number}",
                     "twin_role": "clean" if stereotype == "pro" else "corrupt", "agreement_decides": False,
                     "gender": _gender(text[slice(*pronoun)]),
                     "pronoun": text[slice(*pronoun)], "occupation": core,
                     "other_occupation": text[slice(*other)], "n_pronoun_mentions": len(pronouns),
                     "line": line_no}}


_WINOGENDER_ANSWERS = {"0": "occupation", "1": "participant"}


def _winogender_row(raw: bytes, participants: dict, name: str, line_no: int) -> dict:
    sentid, text = _cells(raw, 2)
    parts = sentid.split(".")
    if (len(parts) != 5 or parts[2] not in _WINOGENDER_ANSWERS or parts[4] != "txt"
            or parts[3] not in ("male", "female", "neutral")):
        raise _Malformed(f"sentid {sentid!r} is not occupation.participant.answer.gender.txt")
    occupation, participant, answer, gender, _ = parts
    occ_span, part_span = _word(text, _phrase(occupation)), _word(text, _phrase(participant))
    for role, word, span in (("occupation", occupation, occ_span), ("participant", participant, part_span)):
        if span is None:
            raise _Unusable(f"{role} {word!r} not found in the sentence")
    found = [m.span() for m in re.finditer(r"[A-Za-z]+", text) if m.group().lower() in PERSON_PRONOUNS]
    if len(found) != 1:
        raise _Unusable(f"expected one pronoun in the sentence, found {len(found)}")
    pronoun = text[slice(*found[0])]
    template = f"{occupation}.{participants.get((occupation, answer), participant)}.{answer}"
    return {"text": text, "relation": "coreference", "source_span": list(found[0]),
            "target_span": list(occ_span if answer == "0" else part_span),
            "candidate_spans": [list(occ_span), list(part_span)], "id": f"{name}:{sentid.removesuffix('.txt')}",
            "meta": {"group": template, "answer": _WINOGENDER_ANSWERS[answer], "gender": gender,
                     "twin": f"{name}:{occupation}.{participant}.{gender}",
                     "twin_role": "clean" if answer == "0" else "corrupt", "agreement_decides": False,
                     "pronoun_gender": _gender(pronoun), "pronoun": pronoun, "occupation": occupation,
                     "participant": participant, "someone": participant == "someone", "line": line_no}}


def load_winogender(folder: Path, *, name: str = "winogender", skip_bad: bool = False,
                    limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """Winogender: source the pronoun, candidates occupation and participant, target the gold one."""
    b = _Builder(f"{name} ({folder})", skip_bad, limit)
    # templates.tsv: occupation, participant, answer, sentence -> the participant a "someone" sentence replaced
    participants = {(c[0], c[2]): c[1] for c in (line.split("\t") for line in _text_lines(folder / "templates.tsv"))
                    if len(c) == 4}
    path = folder / "all_sentences.tsv"
    _, rows = _tsv(_raw_lines(path), path, ["sentid", "sentence"])
    for line_no, raw in rows:
        if b.full:
            break
        try:
            b.add(_winogender_row(raw, participants, name, line_no))
        except (_Unusable, _Malformed) as problem:
            b.fail(path, line_no, f"line {line_no}", problem)
    return b.finish()


_PREPOSITIONS = frozenset({"of", "in", "on", "under", "with", "from", "at", "to", "for", "by", "and"})


def _answer_variants(answer: str) -> list[tuple[str, str]]:
    """Ways to look for a WSC answer in the text, best first: exact (no determiner), head noun, last, first word."""
    core = strip_article(answer)
    words = core.split()
    head_words = []
    for word in words:
        if word.lower() in _PREPOSITIONS and head_words:
            break
        head_words.append(word)
    variants = [("exact", core), ("head", head_words[-1]), ("last word", words[-1]), ("first word", words[0])]
    seen, out = set(), []
    for how, phrase in variants:
        if phrase.lower() not in seen:
            seen.add(phrase.lower())
            out.append((how, phrase))
    return out


def _answer_spans(text: str, answer: str, pronoun: tuple[int, int]) -> list[tuple[tuple[int, int], str]]:
    """Every place the answer may be, best first: by variant, then before the pronoun, then after it."""
    out = []
    for how, phrase in _answer_variants(answer):
        pattern = _phrase(phrase) + r"(?:s|es)?"
        for region, (lo, hi) in (("before", (0, pronoun[0])), ("after", (pronoun[1], len(text)))):
            start = lo
            while (span := _word(text, pattern, start, hi)) is not None:
                out.append((span, how))
                start = span[1]
    return out


def _wsc_groups(texts: list[tuple[str, ...]]) -> list[int]:
    """Schemas go in pairs (2k, 2k+1); a pair grows into a triple or more while the next schema repeats its
    frame (the same txt1 or txt2 of 3+ words, or the same full text): WSC273 has a triple at 252-254 and a
    quadruple at 267-270, after which the 2k/2k+1 rule would be off by one."""
    def same_frame(a, b_):
        return ((a[0] == b_[0] and len(a[0].split()) >= 3) or (a[2] == b_[2] and len(a[2].split()) >= 3)
                or " ".join(a) == " ".join(b_))
    groups, members, group = [], [], -1
    for i, t in enumerate(texts):
        if not members or (len(members) >= 2 and not any(same_frame(t, texts[j]) for j in members)):
            group, members = group + 1, []
        members.append(i)
        groups.append(group)
    return groups


def _wsc_twin_roles(groups: list[int]) -> list[str | None]:
    """Twin roles of schemas in a group of exactly two (the first is "clean"); None in triples and larger
    groups, whose members do not form one minimal pair."""
    sizes = {g: groups.count(g) for g in set(groups)}
    roles, seen = [], set()
    for g in groups:
        roles.append(None if sizes[g] != 2 else ("corrupt" if g in seen else "clean"))
        seen.add(g)
    return roles


def _wsc_schemas(path: Path) -> list[tuple[int | None, ET.Element]]:
    """The first 273 <schema> elements with the line each starts on; broken XML always raises."""
    try:
        content = path.read_bytes().decode("iso-8859-1")
    except OSError as err:
        raise ExampleError(f"{path}: cannot read the file ({err.strerror or err})") from None
    content = re.sub(r"^\s*<\?xml[^>]*\?>", "", content)  # its encoding declaration is already applied
    try:
        root = ET.fromstring(content)
    except ET.ParseError as err:
        raise ExampleError(f"{path}:{err.position[0]}: not well-formed XML ({err})") from None
    lines = [content.count("\n", 0, m.start()) + 1 for m in re.finditer(r"<schema\b", content)]
    schemas = root.findall("schema")[:273]
    return [(lines[i] if i < len(lines) else None, schema) for i, schema in enumerate(schemas)]


def _wsc_parts(schema: ET.Element) -> tuple[str, str, str]:
    """txt1, pron and txt2 with white space normalised ("" where missing)."""
    node = schema.find("text")
    return tuple(" ".join((getattr(node.find(k) if node is not None else None, "text", "") or "").split())
                 for k in ("txt1", "pron", "txt2"))


def _wsc_row(schema: ET.Element, index: int, group: int, name: str, line_no: int | None,
             twin_role: str | None = None) -> dict:
    txt1, pron, txt2 = _wsc_parts(schema)
    node = schema.find("text")
    if node is None or any(node.find(k) is None for k in ("txt1", "pron", "txt2")):
        raise _Malformed("the schema lacks text/txt1, text/pron or text/txt2")
    answers = [" ".join((a.text or "").split()).rstrip(" ,;:") for a in schema.findall("answers/answer")]
    if len(answers) != 2 or not all(answers) or not pron:
        raise _Malformed("the schema needs a pronoun and exactly two non-empty answers")
    raw_letter = " ".join((getattr(schema.find("correctAnswer"), "text", "") or "").split())
    letter = raw_letter.rstrip(". ").upper()
    if letter not in ("A", "B"):
        raise _Malformed(f"correctAnswer {raw_letter!r} is not A or B")
    text = (txt1 + " " if txt1 else "") + pron
    pronoun = (len(text) - len(pron), len(text))
    if txt2:
        text += ("" if txt2[0] in ".,;:!?" else " ") + txt2   # "punished them ." -> "punished them."
    options = [_answer_spans(text, a, pronoun) for a in answers]
    for answer, found in zip(answers, options):
        if not found:
            raise _Unusable(f"answer {answer!r} not found in text")
    pairs = [(ia + ib, ia, sa, sb) for ia, sa in enumerate(options[0]) for ib, sb in enumerate(options[1])
             if not (sa[0][0] < sb[0][1] and sb[0][0] < sa[0][1])]
    if not pairs:
        raise _Unusable(f"answers {answers[0]!r} and {answers[1]!r} only match the same words")
    (span_a, how_a), (span_b, how_b) = min(pairs)[2:]
    return {"text": text, "relation": "coreference", "source_span": list(pronoun),
            "target_span": list(span_a if letter == "A" else span_b),
            "candidate_spans": [list(span_a), list(span_b)], "id": f"{name}:{index}",
            "meta": {"schema": index, "group": f"{name}:pair{group}", "answer": letter, "answers": answers,
                     "match": [how_a, how_b], "pronoun": pron, "gender": _gender(pron), "line": line_no,
                     **({"twin": f"{name}:pair{group}", "twin_role": twin_role} if twin_role else {})}}


def load_wsc273(path: Path, *, name: str = "wsc273", skip_bad: bool = False,
                limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """WSC273: txt1 pron txt2 normalised; source the pronoun, candidates the answers found in the text."""
    b = _Builder(f"{name} ({path})", skip_bad, limit)
    schemas = _wsc_schemas(path)
    groups = _wsc_groups([tuple(p.lower() for p in _wsc_parts(s)) for _, s in schemas])
    roles = _wsc_twin_roles(groups)
    for index, (line_no, schema) in enumerate(schemas):
        if b.full:
            break
        try:
            b.add(_wsc_row(schema, index, groups[index], name, line_no, roles[index]))
        except (_Unusable, _Malformed) as problem:
            b.fail(path, line_no, f"schema {index}" + (f" (line {line_no})" if line_no else ""), problem)
    return b.finish()


# --------------------------------------------------------------------------------------------------
# negation


def _jsonl_row(raw: bytes, fields: tuple[str, ...]) -> dict:
    try:
        row = json.loads(_decode(raw))
    except json.JSONDecodeError as err:
        raise _Malformed(f"malformed JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise _Malformed("nested too deeply to be a row") from None
    except ValueError as err:      # an integer of more than 4,300 digits (Python's int_max_str_digits)
        raise _Malformed(f"a number in the row is too long to read ({str(err).split(';')[0]})") from None
    if not isinstance(row, dict):
        raise _Malformed("the line is not a JSON object")
    missing = [f for f in fields if f not in row]
    if missing:
        raise _Malformed(f"missing field(s) {', '.join(missing)}")
    return row


def _tokens(sentence: str) -> list[tuple[int, int]]:
    """Word spans: each white-space token without its surrounding punctuation."""
    spans = []
    for token in re.finditer(r"\S+", sentence):
        word = re.search(_WORD, token.group())
        if word:
            spans.append((token.start() + word.start(), token.start() + word.end()))
    return spans


def _load_blimp(path: Path, name: str, skip_bad: bool, limit: int | None, pair_records) -> tuple[list[Example], LoadReport]:
    """Shared BLiMP loop: each JSONL pair becomes the records `pair_records(good, bad, pair_id, row, line_no)` gives."""
    b = _Builder(f"{name} ({path})", skip_bad, limit)
    for line_no, raw in _raw_lines(path):
        if b.full:
            break
        try:
            row = _jsonl_row(raw, ("sentence_good", "sentence_bad", "pairID"))
            b.add(*pair_records(row["sentence_good"], row["sentence_bad"], str(row["pairID"]), row, line_no))
        except (_Unusable, _Malformed) as problem:
            b.fail(path, line_no, f"line {line_no}", problem)
    return b.finish()


def load_blimp_licensor(path: Path, *, name: str = "blimp-npi-licensing", skip_bad: bool = False,
                        limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """BLiMP NPI licensing: good -> negated ("not" -> "ever"), bad -> control (its adverb -> "ever"), one pair.

    What it measures: NPI licensing (`not -> ever`), not negation in general: "ever" follows the cue in every
    item and the controls ("probably ever") are ungrammatical, so cue-vs-control is confounded with
    grammaticality. twin = the pair; the negated (grammatical) sentence is "clean", the control "corrupt".
    """
    def pair_records(good, bad, pair_id, row, line_no):
        good_words, bad_words = _tokens(good), _tokens(bad)
        good_text = [good[s:e] for s, e in good_words]
        bad_text = [bad[s:e] for s, e in bad_words]
        diff = [i for i, (g, w) in enumerate(zip(good_text, bad_text)) if g != w]
        if len(good_text) != len(bad_text) or len(diff) != 1:
            raise _Unusable("the good and bad sentences do not differ in exactly one word")
        i = diff[0]
        if good_text[i].lower() != "not" or i + 1 >= len(good_text):
            raise _Unusable(f"the word replaced is {good_text[i]!r}, not a 'not' followed by a word")
        pair = f"blimp-licensor:{pair_id}"
        meta = {"pair": pair, "group": pair, "twin": pair, "paradigm": row.get("UID", ""), "pair_id": pair_id,
                "adverb": bad_text[i], "line": line_no}
        negated = _negated(good, good_words[i], f"{name}:{pair_id}:negated", {**meta, "twin_role": "clean"})
        control = {"text": bad, "relation": "negation", "source_span": list(bad_words[i]),
                   "target_span": list(bad_words[i + 1]), "id": f"{name}:{pair_id}:control",
                   "meta": {**meta, "role": "control", "twin_role": "corrupt"}}
        return negated, control
    return _load_blimp(path, name, skip_bad, limit, pair_records)


def load_blimp_scope(path: Path, *, name: str = "blimp-npi-scope", skip_bad: bool = False,
                     limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """BLiMP NPI scope: good -> negated (the "not" right before "ever"); bad -> role "scope-bad" ("not" -> next word).

    Both sentences have a real "not"; only the good one's licenses "ever" (in its scope), so good vs bad
    contrasts NPI scope with the cue form and the word "ever" held fixed.
    """
    def pair_records(good, bad, pair_id, row, line_no):
        licensing = re.search(r"(?<![\w'])not(?=\s+ever\b)", good, re.IGNORECASE)
        if licensing is None:
            raise _Unusable("no 'not' immediately before 'ever' in the good sentence")
        bad_cue = _word(bad, "not")
        if bad_cue is None:
            raise _Unusable("no 'not' in the bad sentence")
        pair = f"blimp-scope:{pair_id}"
        meta = {"group": pair, "paradigm": row.get("UID", ""), "pair_id": pair_id, "line": line_no}
        negated = _negated(good, licensing.span(), f"{name}:{pair_id}:good", {**meta, "pair": pair})
        scope_bad = _negated(bad, bad_cue, f"{name}:{pair_id}:bad", meta)
        scope_bad["meta"]["role"] = "scope-bad"
        return negated, scope_bad
    return _load_blimp(path, name, skip_bad, limit, pair_records)


def _resolve_article(context: str, target: str) -> str:
    article = "an" if target[:1].lower() in "aeiou" else "a"
    return context.replace("(a|an)", article)


def load_neg136(path: Path, *, name: str = "neg136", skip_bad: bool = False,
                limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """NEG-136: context_neg (article resolved) + target_aff + "."; source "not"/"n't", target the next word."""
    b = _Builder(f"{name} ({path})", skip_bad, limit)
    header, rows = _tsv(_raw_lines(path), path, ["item", "context_aff", "context_neg", "target_aff", "target_neg"])
    for line_no, raw in rows:
        if b.full:
            break
        try:
            row = dict(zip(header, _cells(raw, len(header))))
            item, target_aff = row["item"].strip(), row["target_aff"].strip()
            if not target_aff:
                raise _Malformed("target_aff is empty")
            context_aff = _resolve_article(row["context_aff"].strip(), target_aff)
            context_neg = _resolve_article(row["context_neg"].strip(), target_aff)
            text = f"{context_neg} {target_aff}."
            cue = NEGATION_CUE.search(context_neg)
            if cue is None:
                raise _Unusable("no 'not' or \"n't\" in context_neg")
            pair = f"{name}:{item}"
            meta = {"pair": pair, "group": pair, "item": item, "context_aff": context_aff,
                    "context_neg": context_neg, "target_aff": target_aff, "target_neg": row["target_neg"].strip(),
                    "licensing": row.get("licensing", "").strip() or None, "cue": cue.group(), "line": line_no}
            b.add(_negated(text, cue.span(), pair, meta))
        except (_Unusable, _Malformed) as problem:
            b.fail(path, line_no, f"line {line_no}", problem)
    return b.finish()


_AFFIX_EXCEPTIONS = frozenset({"unless", "until", "under", "into", "instead", "inside", "indeed", "imagine",
                               "nevertheless", "regardless", "doubtless"})


def is_affixal_cue(cue: str) -> bool:
    """A one-word cue whose negation is a prefix (un-, in-, im-, il-, ir-, dis-, non-, a-) or the suffix -less."""
    word = cue.strip().lower()
    if " " in word or word in _AFFIX_EXCEPTIONS:
        return False
    return bool(re.fullmatch(r"(?:un|in|im|il|ir|dis|non)-?[a-z]{3,}|a(?:sexual|typical|moral|political|symmetric\w*)"
                             r"|[a-z]{3,}less(?:ly|ness)?", word))


def load_condaqa(path: Path, *, name: str = "condaqa", skip_bad: bool = False,
                 limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """CondaQA: one negated record per original passage; source the cue word, target the next word."""
    b = _Builder(f"{name} ({path})", skip_bad, limit)
    seen: set[str] = set()
    for line_no, raw in _raw_lines(path):
        if b.full:
            break
        try:
            row = _jsonl_row(raw, ("original passage", "original cue", "PassageID"))
            passage, cue = row["original passage"], str(row["original cue"]).strip()
            if not isinstance(passage, str) or not passage.strip():
                raise _Malformed("original passage is empty")
            if passage in seen:
                raise _Unusable("duplicate passage")
            seen.add(passage)
            if not cue:
                raise _Malformed("original cue is empty")
            if is_affixal_cue(cue):
                raise _Unusable(f"the cue {cue!r} is an affix inside a word, not a word before its target")
            if cue.lower() == "n't":
                pattern = r"(?<=[A-Za-z])n't(?!\w)"
            else:
                pattern = _phrase(cue) + (r"(?:s|es|ed|d|ing)?" if " " not in cue else "")
            sentence = str(row.get("original sentence", "") or "")
            at = passage.find(sentence) if sentence.strip() else -1
            span, located = None, "passage"
            if at >= 0:
                span = _word(passage, pattern, at, at + len(sentence))
                located = "original sentence"
            if span is None:
                span, located = _word(passage, pattern), "passage"
            if span is None:
                raise _Unusable(f"cue {cue!r} not found in the passage")
            pid = str(row["PassageID"])
            b.add(_negated(passage, span, f"{name}:{pid}",
                           {"pair": f"{name}:{pid}", "group": f"{name}:{pid}", "passage_id": pid, "cue": cue,
                            "cue_text": passage[span[0]:span[1]], "cue_located_in": located, "line": line_no}))
        except (_Unusable, _Malformed) as problem:
            b.fail(path, line_no, f"line {line_no}", problem)
    return b.finish()


# --------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    relation: str
    description: str
    loader: Callable[..., tuple[list[Example], LoadReport]]
    path: str                      # relative to the data root: a file, or a folder holding `files`
    licence: str
    public_source: str
    files: tuple[str, ...] = field(default=())   # files needed inside a folder `path`


_WINOBIAS_FILES = tuple(f"{s}_stereotyped_type{t}.txt.{split}" for t in (1, 2) for split in ("dev", "test")
                        for s in ("pro", "anti")) + ("female_occupations.txt", "male_occupations.txt")


_GAP_SOURCE = "https://github.com/google-research-datasets/gap-coreference"


def _info(name, relation, description, loader, path, licence, source, files=()) -> DatasetInfo:
    return DatasetInfo(name, relation, description, partial(loader, name=name), path, licence, source, files)


DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    _info("gap-dev", "coreference", "GAP development split: Wikipedia pronoun -> name (2000 rows)", load_gap,
          "gap-coreference/gap-development.tsv", "Apache-2.0", _GAP_SOURCE),
    _info("gap-test", "coreference", "GAP test split: Wikipedia pronoun -> name (2000 rows)", load_gap,
          "gap-coreference/gap-test.tsv", "Apache-2.0", _GAP_SOURCE),
    _info("gap-validation", "coreference", "GAP validation split: Wikipedia pronoun -> name (454 rows)", load_gap,
          "gap-coreference/gap-validation.tsv", "Apache-2.0", _GAP_SOURCE),
    _info("winobias", "coreference", "WinoBias: pronoun -> occupation, pro/anti-stereotyped, types 1 and 2",
          load_winobias, "winobias", "MIT", "https://github.com/uclanlp/corefBias", _WINOBIAS_FILES),
    _info("winogender", "coreference", "Winogender schemas: pronoun -> occupation or participant",
          load_winogender, "winogender-schemas", "MIT", "https://github.com/rudinger/winogender-schemas",
          ("all_sentences.tsv", "templates.tsv")),
    _info("wsc273", "coreference", "Winograd Schema Challenge, first 273 schemas: pronoun -> antecedent",
          load_wsc273, "wsc273/WSCollection.xml", "CC BY 4.0", "https://github.com/cglez/winograd"),
    _info("blimp-npi-licensing", "negation", "BLiMP sentential_negation_npi_licensor_present: NPI licensing "
          "('not' -> 'ever'), with ungrammatical adverb controls ('probably ever'); not negation in general",
          load_blimp_licensor, "blimp-negation/sentential_negation_npi_licensor_present.jsonl", "CC BY 4.0",
          "https://github.com/alexwarstadt/blimp"),
    _info("blimp-npi-scope", "negation", "BLiMP sentential_negation_npi_scope: the 'not' licensing 'ever', plus "
          "an out-of-scope 'not' (NPI scope)",
          load_blimp_scope, "blimp-negation/sentential_negation_npi_scope.jsonl", "CC BY 4.0",
          "https://github.com/alexwarstadt/blimp"),
    _info("neg136-simp", "negation", "NEG-136-SIMP (Fischler et al. 1983): 'X is not a Y.'", load_neg136,
          "neg-136/NEG-136-SIMP.tsv", "MIT", "https://github.com/aetting/lm-diagnostics"),
    _info("neg136-nat", "negation", "NEG-136-NAT (Nieuwland & Kuperberg 2008): natural negated contexts",
          load_neg136, "neg-136/NEG-136-NAT.tsv", "MIT", "https://github.com/aetting/lm-diagnostics"),
    _info("condaqa", "negation", "CondaQA dev: Wikipedia passages with a negation cue (one per passage)",
          load_condaqa, "condaqa/condaqa_dev.json", "Apache-2.0", "https://github.com/AbhilashaRavichander/CondaQA"),
)}




# Old names, kept working: "blimp-negation" measured NPI licensing all along, and is now named for it.
ALIASES = {"blimp-negation": "blimp-npi-licensing", "blimp-negation-scope": "blimp-npi-scope"}
DATASETS.update({alias: DATASETS[name] for alias, name in ALIASES.items()})  # same loader, canonical ids


def default_data_root() -> Path:
    """$PROBING_DATA_ROOT if set; in a repository checkout (or an editable install of one), ../shared/data next
    to the repository root. An installed copy has no such neighbour, and a folder guessed inside
    site-packages would only fail later with a confusing path, so it asks for the data root instead."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    repository = Path(__file__).resolve().parents[2]
    if (repository / "pyproject.toml").is_file():   # the checkout's root; site-packages has none
        return repository.parent / "shared" / "data"
    raise ExampleError(f"no data root: this copy of probing is installed as a package, so it cannot guess where "
                       f"the real datasets are; set the {DATA_ROOT_ENV} environment variable or pass "
                       f"data_root= (--data-root on the command line) to the folder that holds them")


def load_dataset(name: str, data_root: str | os.PathLike | None = None, skip_bad: bool = False,
                 limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """Load a named dataset from the data root as validated examples, with a report of every skipped row.

    `limit` keeps the first `limit` records and stops reading once it has them (so the report covers only
    the rows read, and the last negated/control pair may be cut in half)."""
    info = DATASETS.get(name)
    if info is None:
        raise ExampleError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ExampleError(f"limit must be a positive integer, got {limit!r}")
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    how = (f"set the data root with --data-root or the {DATA_ROOT_ENV} environment variable; {info.name} "
           f"comes from {info.public_source} ({info.licence}), as {info.path} under the data root")
    if not root.is_dir():
        raise ExampleError(f"dataset {name!r}: the data root {root} does not exist; {how}")
    path = root / info.path
    needed = [path / f for f in info.files] if info.files else [path]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise ExampleError(f"dataset {name!r}: missing {', '.join(str(p) for p in missing)} under the data root "
                           f"{root}; {how}")
    examples, report = info.loader(path, skip_bad=skip_bad, limit=limit)
    if not examples:
        raise ExampleError(f"dataset {name!r}: no records ({report.summary()})")
    return examples, report
