"""CD-SCO (the *SEM 2012 Conan Doyle negation corpus) as negation examples: each "not" / "n't" cue -> its
annotated negated event, with distance-matched offset controls.

The corpus (Morante & Daelemans 2012; the data of the *SEM 2012 shared task, Morante & Blanco 2012) marks, for
every negation instance of a sentence, its cue, its scope and its negated event. This module reads the gold
files from the shared data root (`<data root>/cd-sco/`, never copied into the project: the distribution states
no licence, so it is used for evaluation only and cited) and makes one `Example` per "not" or "n't" cue whose
negated event is annotated: source = the cue token, target = the token holding the negated event, relation
"negation". It asks whether a head attends from the cue to the word that is negated, which is not always the
next word: the event is often further right ("is not my *intention*") or before the cue, where the modal is the
event ("we *can* not leave").

Parts (`PARTS`): "cd-sco-dev" (The Adventure of Wisteria Lodge) is for choosing heads; "cd-sco-test" (the two
gold test stories, The Cardboard Box and The Red Circle) is for confirming the chosen heads, never for choosing.
The training file (The Hound of the Baskervilles) is not loaded.

Format (tab-separated, one token a line, a blank line after each sentence): chapter, sentence number, token
number, word, lemma, POS, parse fragment, then either "***" (no negation) or 3 columns per negation instance k:
cue, scope, negated event; "_" = not part of it, anything else = the token (or the part of it) that is.

Choices, beyond what the functions' docstrings say:

* **Text.** The tokens joined by single spaces, except that no space goes before "n't" (`ca` `n't` -> "can't",
  `do` `n't` -> "don't"), before closing punctuation (, . ; : ! ? ) ] } and the closing quotes '' ' ’ ”) or
  before a clitic ('s 'll 've 're 'm 'd, straight or curly). The corpus's PTB quotes (`` and '') are kept as
  they are. A "word" (for `event_offset` and the controls) is a space-separated word of this text, so
  punctuation glued to a token belongs to its word ("go." is one word) and a free-standing `` or -- is a word
  of its own.
* **Which cues.** A negation instance is a candidate when its cue is exactly one whole token reading "not" or
  "n't" (case-insensitive, ’ read as '). Every other cue ("no", "never", affixes, "neither ... nor", "not ...
  not") is no example at all: it is counted in `counts()["other_cues"]`, not listed as a skip.
* **Skipped candidates** (always, each listed in `.report.skipped` as "<file>:<line>: <reason>", line = the
  cue's line): no negated event annotated (about 40% of these cues: modal, conditional, interrogative
  contexts); the event spread over several tokens (2 in dev + test: a particle verb, a numeral phrase;
  its first token would often be the wrong word, so it is skipped rather than guessed); the event inside the
  cue's own orthographic word (`ca` + `n't` with the event on "ca": one word "can't" for the model, so there is
  no distance to attend over).
* **Event inside a token.** When the event column holds part of a token, the target is the whole token; meta
  `event_part` then holds the annotated part.
* **Malformed lines** (too few columns, a token number out of sequence, "***" with more columns, negation
  columns not 3 per instance, a column count or chapter/sentence that changes inside a sentence, a word that
  is empty or holds white space, not UTF-8) make their whole sentence unreadable: `ExampleError` naming the
  file and line, or with `skip_bad` the sentence is skipped and listed with that reason. A record that fails
  `example_from_dict` is always skipped and listed (the loaders' "unusable by construction").
* **Ids and meta.** id "cdsco-<chapter>-<sentence>-c<k>" (k = the instance's 0-based column group); meta
  `role` "negated", `pair` = the id, `group` "<chapter>-<sentence>" (the sentence is the clustering unit: its
  cues share it), `story`, `cue` and `cue_form` ("not"/"n't"), `event` (the event token), `event_offset` (the
  signed distance in words from the cue's word to the event's word, + after), `direction` ("after"/"before"),
  `file`, `line`, `part`.
* **Offset controls** (`offset_controls`): see its docstring. A control's source is a whole alphabetic word
  (never a word with an apostrophe such as "don't", never a negation word), even for an "n't" item whose source
  is the three characters of the cue.

`counts(examples)` gives the plain-data counts for a report; `load_cdsco(...).report.summary()` prints them.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from probing.examples.format import Example, ExampleError, Examples, LoadReport, example_from_dict
from probing.examples.loaders import default_data_root

FOLDER = "cd-sco"
PARTS = {
    "cd-sco-dev": ("SEM-2012-SharedTask-CD-SCO-dev-09032012.txt",),
    "cd-sco-test": ("SEM-2012-SharedTask-CD-SCO-test-cardboard-GOLD.txt",
                    "SEM-2012-SharedTask-CD-SCO-test-circle-GOLD.txt"),
}
SOURCE = ("*SEM 2012 Shared Task, CD-SCO (ConanDoyle-neg), official release of May 9, 2012, as kept in "
          "https://github.com/joey234/negation-focused-pretraining (data/starsem-st-2012-data/cd-sco/corpus)")
LICENCE = ("no licence stated by the distribution (texts from Project Gutenberg); evaluation only; cite it; never "
           "copied into the project")
CITATION = ("R. Morante and W. Daelemans (2012). ConanDoyle-neg: Annotation of negation in Conan Doyle stories. "
            "LREC 2012. -- R. Morante and E. Blanco (2012). *SEM 2012 Shared Task: Resolving the Scope and Focus "
            "of Negation. *SEM 2012.")

CUE_FORMS = ("not", "n't")
DIRECTIONS = ("after", "before")
SKIP_NO_EVENT = "no negated event annotated"
SKIP_SEVERAL_TOKENS = "negated event spread over several tokens"
SKIP_INSIDE_CUE_WORD = "negated event inside the cue's own word"

# Tokens written with no space before them: closing punctuation and quotes (PTB '' and ', and their curly
# forms), "n't" and the clitics, so that the model reads "can't", "Holmes's", "go." as ordinary text.
_CLOSING = frozenset({",", ".", ";", ":", "!", "?", ")", "]", "}", "''", "'", "\u2019", "\u201d"})
_CLITIC = re.compile(r"['\u2019](?:s|ll|ve|re|m|d)", re.IGNORECASE)
# Words never used as a control's source: another cue there would carry a real negation relation.
_NEGATION_WORDS = frozenset({"not", "no", "never", "nothing", "none", "nobody", "nowhere", "nor", "neither",
                             "without", "cannot", "nay"})
_EDGE_PUNCT = re.compile(r"\W*(.*?)\W*", re.DOTALL)      # a word's letters inside its glued punctuation


def _norm(word: str) -> str:
    return word.lower().replace("\u2019", "'")


def _glued(word: str) -> bool:
    """Is the token written with no space before it?"""
    return word in _CLOSING or _norm(word) == "n't" or bool(_CLITIC.fullmatch(word))


# --------------------------------------------------------------------------------------------------
# the report


@dataclass
class CdscoReport(LoadReport):
    """A LoadReport that also carries the loader's counts (plain data, see `counts`); its summary prints them."""
    counts: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts
        if not c:
            return super().summary()
        forms = c.get("not_cues", {})
        n_not, n_nt = forms.get("not", 0), forms.get("n't", 0)
        text = (f"{super().summary()}; {c.get('cues', 0)} cues read, {n_not + n_nt} of them not/n't "
                f"(not {n_not}, n't {n_nt}), "
                f"{c.get('with_event', 0)} with an event; {c.get('examples', 0)} examples "
                f"({c.get('after', 0)} after the cue, {c.get('before', 0)} before)")
        if "controls" in c:
            text += (f"; {c['controls']} offset controls ({c.get('items_without_controls', 0)} examples have none; "
                     f"kept)")
        return text


def _reasons(skipped: list[str]) -> dict[str, int]:
    """Skip reasons ("<file>:<line>: <reason>") counted by reason, most frequent first."""
    found: dict[str, int] = {}
    for entry in skipped:
        reason = entry.split(": ", 1)[-1]
        found[reason] = found.get(reason, 0) + 1
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def _list_counts(examples: list[Example], controls_built: bool = False) -> dict:
    """The counts that follow the list itself (so they stay right after limit, by_direction or controls);
    the control counts appear when the list holds controls or they were built (and none came)."""
    items = [e for e in examples if not e.is_control]
    controls = [e for e in examples if e.is_control]
    out = {"examples": len(items),
           "after": sum(e.meta.get("direction") == "after" for e in items),
           "before": sum(e.meta.get("direction") == "before" for e in items),
           "examples_by_cue": {form: sum(e.meta.get("cue") == form for e in items) for form in CUE_FORMS}}
    if controls or controls_built:
        paired = {e.meta.get("pair") for e in controls}
        out["controls"] = len(controls)
        out["items_without_controls"] = sum(e.meta.get("pair") not in paired for e in items)
    return out


def counts(examples: list[Example]) -> dict:
    """Plain-data counts for a report: what was read (files, sentences, cues, "not"/"n't" cues, those with an
    event, other cues, skipped by reason) and what the list holds (examples, after/before, by cue form, and
    offset controls with the items that got none, when controls are present or were built)."""
    report = getattr(examples, "report", None)
    out = copy.deepcopy(getattr(report, "counts", None) or {})
    if report is not None:
        out["skipped"] = _reasons(report.skipped)
    out.update(_list_counts(examples, controls_built="controls" in out))
    return out


# --------------------------------------------------------------------------------------------------
# reading


class _Malformed(Exception):
    """A line that breaks the file's format; args: (line number, problem)."""


@dataclass(frozen=True)
class _Token:
    line: int
    word: str
    negation: tuple[str, ...]      # the columns from the 8th on: "***", or cue, scope, event per instance


@dataclass(frozen=True)
class _Sentence:
    chapter: str
    number: str
    tokens: tuple[_Token, ...]

    @property
    def n_instances(self) -> int:
        first = self.tokens[0].negation
        return 0 if first == ("***",) else len(first) // 3


def files(part: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The gold files of a part ("cd-sco-dev" or "cd-sco-test") under the data root (default
    `default_data_root()`), in reading order; they need not exist."""
    if part not in PARTS:
        raise ExampleError(f"unknown CD-SCO part {part!r}; the parts are {', '.join(PARTS)} (dev for choosing "
                           f"heads, test for confirming them)")
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return [root / FOLDER / name for name in PARTS[part]]


def _blocks(path: Path) -> list[list[tuple[int, bytes]]]:
    """The sentences of a file as lists of (1-based line number, raw line), split at blank lines."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ExampleError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    blocks, current = [], []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if line.strip():
            current.append((line_no, line))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _parse(block: list[tuple[int, bytes]]) -> _Sentence:
    """One sentence's lines as a _Sentence; the first problem raises _Malformed(line, problem)."""
    tokens: list[_Token] = []
    chapter = number = None
    width = None
    for line_no, raw in block:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Malformed(line_no, f"the line is not UTF-8 ({err.reason} at byte {err.start})") from None
        cols = line.split("\t")
        if len(cols) < 8:
            raise _Malformed(line_no, f"expected at least 8 tab-separated columns, got {len(cols)}")
        if chapter is None:
            chapter, number, width = cols[0], cols[1], len(cols)
            if not chapter.strip() or not number.strip().isdigit():
                raise _Malformed(line_no, f"chapter {chapter!r} / sentence number {number!r} is not usable")
        elif (cols[0], cols[1]) != (chapter, number):
            raise _Malformed(line_no, f"chapter/sentence {cols[0]!r} {cols[1]!r} changes inside a sentence "
                                      f"(no blank line after {chapter!r} {number!r})")
        if cols[2].strip() != str(len(tokens)):
            raise _Malformed(line_no, f"token number {cols[2]!r}, expected {len(tokens)}")
        word = cols[3]
        if not word or any(ch.isspace() for ch in word):
            raise _Malformed(line_no, f"the word {word!r} is empty or holds white space")
        negation = tuple(cols[7:])
        if "***" in negation and negation != ("***",):
            raise _Malformed(line_no, "'***' (no negation) together with negation columns")
        if negation != ("***",) and len(negation) % 3:
            raise _Malformed(line_no, f"{len(negation)} negation columns, not 3 per negation instance")
        if len(cols) != width:
            raise _Malformed(line_no, f"{len(cols)} columns where the sentence's first line has {width}")
        tokens.append(_Token(line_no, word, negation))
    return _Sentence(chapter, number, tuple(tokens))


def _detokenise(words: list[str]) -> tuple[str, list[tuple[int, int]], list[int]]:
    """The text, each token's character span, and each token's word index (its space-separated word)."""
    text, spans, word_of, w = "", [], [], 0
    for i, word in enumerate(words):
        if i and not _glued(word):
            text += " "
            w += 1
        spans.append((len(text), len(text) + len(word)))
        word_of.append(w)
        text += word
    return text, spans, word_of


def _story(chapter: str) -> str:
    return chapter.rstrip("0123456789") or chapter


def _sentence_examples(sentence: _Sentence, path: Path, part: str, tally: dict, skip) -> list[dict]:
    """The candidate rows of one sentence (in instance order), counting every cue in `tally`; skip(line,
    reason) files a skipped candidate."""
    words = [t.word for t in sentence.tokens]
    text, spans, word_of = _detokenise(words)
    group = f"{sentence.chapter}-{sentence.number}"
    rows = []
    for k in range(sentence.n_instances):
        tally["cues"] += 1
        cue = [i for i, t in enumerate(sentence.tokens) if t.negation[3 * k] != "_"]
        event = [i for i, t in enumerate(sentence.tokens) if t.negation[3 * k + 2] != "_"]
        form = _norm(sentence.tokens[cue[0]].negation[3 * k]) if len(cue) == 1 else ""
        if form not in CUE_FORMS or form != _norm(words[cue[0]]):
            tally["other_cues"] += 1
            continue
        c = cue[0]
        tally["not_cues"][form] += 1
        line = sentence.tokens[c].line
        if not event:
            skip(line, SKIP_NO_EVENT)
            continue
        tally["with_event"] += 1
        if len(event) > 1:
            skip(line, SKIP_SEVERAL_TOKENS)
            continue
        e = event[0]
        if word_of[e] == word_of[c]:
            skip(line, SKIP_INSIDE_CUE_WORD)
            continue
        offset = word_of[e] - word_of[c]
        example_id = f"cdsco-{group}-c{k}"
        meta = {"role": "negated", "pair": example_id, "group": group, "story": _story(sentence.chapter),
                "cue": form, "cue_form": form, "event": words[e], "event_offset": offset,
                "direction": "after" if offset > 0 else "before", "file": path.name, "line": line, "part": part}
        annotated = sentence.tokens[e].negation[3 * k + 2]
        if annotated != words[e]:
            meta["event_part"] = annotated
        rows.append({"text": text, "relation": "negation", "source_span": list(spans[c]),
                     "target_span": list(spans[e]), "id": example_id, "meta": meta})
    return rows


def load_cdsco(part: str, data_root: str | os.PathLike | None = None, skip_bad: bool = False,
               limit: int | None = None) -> Examples:
    """The "not"/"n't" cue -> negated event examples of a part, validated, with `.report` (a CdscoReport:
    every skipped candidate or malformed sentence as "<file>:<line>: <reason>", and the counts).

    skip_bad: skip a malformed sentence (listed with its reason) instead of raising ExampleError naming the file
    and line. limit: the first `limit` examples; reading stops after the sentence that holds the last one, so
    the reading counts cover the sentences read. Raises ExampleError when a file is missing or no example
    results."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ExampleError(f"limit must be a whole number of at least 1, got {limit!r}")
    paths = files(part, data_root)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ExampleError(f"{part}: missing {', '.join(map(str, missing))}; put the CD-SCO gold files in "
                           f"{FOLDER}/ under the data root (set it with the PROBING_DATA_ROOT environment variable "
                           f"or data_root=); source: {SOURCE}; licence: {LICENCE}")
    report = CdscoReport(source=f"{part} ({paths[0].parent})")
    tally = {"files": [p.name for p in paths], "sentences": 0, "sentences_with_negation": 0, "cues": 0,
             "other_cues": 0, "not_cues": {form: 0 for form in CUE_FORMS}, "with_event": 0}
    examples: list[Example] = []
    for path in paths:
        if limit is not None and len(examples) >= limit:
            break

        def skip(line, reason, path=path):
            report.skipped.append(f"{path.name}:{line}: {reason}")
        for block in _blocks(path):
            if limit is not None and len(examples) >= limit:
                break
            try:
                sentence = _parse(block)
            except _Malformed as problem:
                line, reason = problem.args
                if not skip_bad:
                    raise ExampleError(f"{path}:{line}: {reason} (pass skip_bad to skip malformed sentences)") \
                        from None
                skip(line, f"{reason}; its sentence is skipped")
                continue
            tally["sentences"] += 1
            tally["sentences_with_negation"] += sentence.n_instances > 0
            for row in _sentence_examples(sentence, path, part, tally, skip):
                if limit is not None and len(examples) >= limit:
                    break                    # the last sentence's later cues were counted but not kept
                try:
                    examples.append(example_from_dict(row))
                except ExampleError as err:
                    skip(row["meta"]["line"], f"invalid record {row['id']}: {err}")
    report.n_records = len(examples)
    report.counts = {**tally, **_list_counts(examples)}
    if not examples:
        raise ExampleError(f"{part}: no examples ({report.summary()})")
    return Examples(examples, report)


# --------------------------------------------------------------------------------------------------
# offset controls


def _words(text: str) -> list[tuple[int, int]]:
    """The spans of the space-separated words of text."""
    spans, at = [], 0
    for word in text.split(" "):
        spans.append((at, at + len(word)))
        at += len(word) + 1
    return spans


def _core(text: str, span: tuple[int, int]) -> tuple[int, int] | None:
    """The word's letters without the punctuation glued to either end, when that is alphabetic (so no
    apostrophe, hyphen or digit), else None."""
    match = _EDGE_PUNCT.fullmatch(text, span[0], span[1])
    core = match.group(1)
    if not core.isalpha():
        return None
    return match.span(1)


def _word_index(text: str, position: int) -> int:
    return text.count(" ", 0, position)


def offset_controls(example: Example, max_controls: int = 8) -> list[Example]:
    """Relation-free controls of the same shape as one cue example: same sentence, source another word w,
    target the word at the same signed word offset from w as the event is from the cue.

    A control asks "does the head attend this far, this way, from any word?": a distance-matched baseline for
    the cue -> event attention. w is a space-separated word of the text that is not the cue's word, not the
    event's word, not a negation word (another cue would carry a real relation), and alphabetic once the
    punctuation glued to it is set aside (so "don't", "Holmes's", "--" are never used); the target word must be
    alphabetic in the same way and not the cue's or the event's word. Spans are those letters ("go" of "go.").
    Deterministic: all valid w left to right, then, when there are more than max_controls, max_controls of
    them evenly spaced (positions k * n // max_controls). Each control: role "control", the item's pair and
    group, control_set "offset", control_note such as "offset +2 from 'the'", id "<item id>-off<i>" (i from 0).
    """
    if isinstance(max_controls, bool) or not isinstance(max_controls, int) or max_controls < 1:
        raise ExampleError(f"max_controls must be a whole number of at least 1, got {max_controls!r}")
    text = example.text
    words = _words(text)
    cue_word = _word_index(text, example.source_span[0])
    event_word = _word_index(text, example.target_span[0])
    offset = event_word - cue_word
    if offset == 0:
        return []
    cores = [_core(text, span) for span in words]
    taken = {cue_word, event_word}
    pairs = []
    for i, source in enumerate(cores):
        j = i + offset
        if i in taken or source is None or _norm(text[source[0]:source[1]]) in _NEGATION_WORDS:
            continue
        if not 0 <= j < len(words) or j in taken or cores[j] is None:
            continue
        pairs.append((source, cores[j]))
    if len(pairs) > max_controls:
        pairs = [pairs[k * len(pairs) // max_controls] for k in range(max_controls)]
    meta = example.meta or {}
    pair = meta.get("pair") or example.id
    controls = []
    for n, (source, target) in enumerate(pairs):
        word = text[source[0]:source[1]]
        row = {"text": text, "relation": example.relation, "source_span": list(source),
               "target_span": list(target), "id": f"{example.id}-off{n}",
               "meta": {"role": "control", "pair": pair, "group": meta.get("group", pair), "control_set": "offset",
                        "control_note": f"offset {offset:+d} from {word!r}", "control_word": word,
                        "event_offset": offset, "direction": "after" if offset > 0 else "before",
                        **{k: meta[k] for k in ("story", "cue", "cue_form", "file", "line", "part") if k in meta}}}
        controls.append(example_from_dict(row))
    return controls


def with_offset_controls(examples: list[Example], max_controls: int = 8) -> Examples:
    """The items (controls already in `examples` are dropped), each followed by its offset controls. An item
    that gets no control (a short sentence, or no alphabetic word at that offset) is kept; the report's counts
    say how many (`items_without_controls`)."""
    items = [e for e in examples if not e.is_control]
    out: list[Example] = []
    for item in items:
        out.append(item)
        out.extend(offset_controls(item, max_controls))
    return Examples(out, _derived_report(examples, out, " + offset controls", controls_built=True))


def by_direction(examples: list[Example], direction: str) -> Examples:
    """The items whose event lies `direction` ("after" or "before") of the cue, with their controls (by pair)."""
    if direction not in DIRECTIONS:
        raise ExampleError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    pairs = {e.meta.get("pair") for e in examples if not e.is_control and e.meta.get("direction") == direction}
    kept = [e for e in examples if e.meta.get("pair") in pairs]
    return Examples(kept, _derived_report(examples, kept, f", event {direction} the cue"))


def _derived_report(examples: list[Example], kept: list[Example], note: str,
                    controls_built: bool = False) -> CdscoReport:
    """The loader's report for a derived list: same reading counts and skips, list counts recomputed."""
    report = getattr(examples, "report", None)
    base = report if isinstance(report, LoadReport) else LoadReport(source="cd-sco examples")
    reading = dict(getattr(base, "counts", None) or {})
    listed = _list_counts(kept, controls_built=controls_built or "controls" in reading)
    return CdscoReport(source=base.source + note, n_records=len(kept), skipped=list(base.skipped),
                       counts={**reading, **listed})


__all__ = ["CITATION", "CUE_FORMS", "CdscoReport", "DIRECTIONS", "FOLDER", "LICENCE", "PARTS", "SKIP_INSIDE_CUE_WORD",
           "SKIP_NO_EVENT", "SKIP_SEVERAL_TOKENS", "SOURCE", "by_direction", "counts", "files", "load_cdsco",
           "offset_controls", "with_offset_controls"]
