"""Minimal pairs for patching: what a pair is, where pairs come from (paired rows, twins, NEG-136 completions,
masked twins, adverb controls), and the one check that two texts are a minimal pair (`minimal_pair`), used by
`patch_pair`, `usable` and the demo's patching tab.

A minimal pair: both texts have the same number of pieces and differ in one word's pieces alone (the source
word itself, "not" <-> "really", he <-> she, or for Winograd-style twins another word, "too wide" <-> "too
narrow", with the source (the pronoun) at the same pieces in both). Other pairs are skipped with the reason.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from probing.models import LoadedModel

# Control adverbs: one is swapped for the next of the same length in pieces (the built-in controls use these).
ADVERBS = ("really", "actually", "also", "certainly", "probably", "still", "already", "indeed", "surely")
TWIN_WORDS = {"not": "really", "really": "not", "he": "she", "she": "he", "him": "her", "his": "her",
              "her": "his", "himself": "herself", "herself": "himself"}
NEGATION_SWAPS = {"not": "really", "really": "not"}      # what a negation sentence is about: its cue


@dataclass(frozen=True)
class Pair:
    """A clean and a corrupt text that differ only in the swapped word; spans are character offsets."""
    id: str
    relation: str
    clean: str
    corrupt: str
    clean_source: tuple[int, int]          # the source word in the clean text ("not", the pronoun)
    corrupt_source: tuple[int, int]
    clean_target: tuple[int, int] | None = None   # what the source word should attend to (attention score)
    corrupt_target: tuple[int, int] | None = None  # the same in the corrupt text (twins: the other referent)
    group: str = ""                        # resampling unit (defaults to the pair id)
    predicate: str | None = None           # the second, crossed factor (built-in negation: meta.predicate)
    answers: tuple[str, str] | None = None  # LM readout: (the answer the clean text favours, the corrupt's)
    rows: tuple[str, ...] = ()             # the ids of the data rows the pair is made of (row accounting)


@dataclass
class PairSet:
    """The usable pairs, and for every skipped pair its id and reason. Row accounting (`row_accounting`):
    `n_rows` data rows were read; `unused_rows` (row id, reason) never became part of a pair; `rows_of` gives
    the data rows of every pair, kept or skipped."""
    pairs: list[Pair]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_rows: int | None = None              # None: the pairs were not read from data rows (built controls)
    unused_rows: list[tuple[str, str]] = field(default_factory=list)
    rows_of: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def with_pairs(self, pairs: list[Pair], skipped: list[tuple[str, str]]) -> "PairSet":
        """The same rows' accounting with other kept pairs and skipped list (after a filter or a run)."""
        return PairSet(pairs, skipped, self.n_rows, self.unused_rows, self.rows_of)

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _id, reason in self.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


# ---- The one minimal-pair check -------------------------------------------------------------------------

@dataclass(frozen=True)
class PiecePair:
    """Both texts as pieces: ids, character offsets, and the pieces where they differ."""
    clean_ids: list[int]
    corrupt_ids: list[int]
    clean_offsets: list[tuple[int, int]]
    corrupt_offsets: list[tuple[int, int]]
    swapped: list[int]


class NotAMinimalPair(ValueError):
    """Why two texts are not a minimal pair, in words; `kind` is "lengths", "identical" or "words", and
    `pieces` the two encodings (None only for "lengths")."""

    def __init__(self, kind: str, message: str, pieces: PiecePair | None):
        super().__init__(message)
        self.kind, self.pieces = kind, pieces


def _pieces(loaded: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoded = loaded.tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=loaded.max_length)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def span_pieces(offsets, span) -> set[int]:
    """The pieces (by index into `offsets`, (start, end) per piece) that overlap the character span."""
    return {i for i, (s, e) in enumerate(offsets) if e > s and s < span[1] and span[0] < e}


def _word_of_pieces(loaded: LoadedModel, text: str, pieces) -> int | None:
    """The index of the one word (the tokenizer's pre-tokenised words) that holds all `pieces`, else None."""
    word_ids = loaded.tokenizer(text, truncation=True, max_length=loaded.max_length).word_ids()
    words = {word_ids[i] for i in pieces}
    return words.pop() if len(words) == 1 and None not in words else None


def minimal_pair(loaded: LoadedModel, clean: str, corrupt: str, *, within: tuple[int, int] | None = None,
                 names: tuple[str, str] = ("clean text", "corrupt text")) -> PiecePair:
    """The two texts as pieces if they are a minimal pair: as many pieces, differing somewhere, and only in one
    word's pieces (the tokenizer's words; pieces inside the clean text's character span `within`, the source
    word, also count as one word). Raises NotAMinimalPair, worded with `names` ("sentence", "twin")."""
    clean_ids, clean_offsets = _pieces(loaded, clean)
    corrupt_ids, corrupt_offsets = _pieces(loaded, corrupt)
    if len(clean_ids) != len(corrupt_ids):
        raise NotAMinimalPair("lengths", f"The {names[0]} has {len(clean_ids)} pieces and the {names[1]} "
                              f"{len(corrupt_ids)}: patching needs a twin that swaps one word for a word of as "
                              "many pieces (such as not ↔ really, he ↔ she).", None)
    swapped = [i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b]
    pieces = PiecePair(clean_ids, corrupt_ids, clean_offsets, corrupt_offsets, swapped)
    if not swapped:
        raise NotAMinimalPair("identical", f"The {names[0]} and the {names[1]} are the same to the model: change "
                              "one word.", pieces)
    in_source = within is not None and set(swapped) <= span_pieces(clean_offsets, within)
    if not in_source and _word_of_pieces(loaded, clean, swapped) is None:
        shown = [text[offsets[swapped[0]][0]:offsets[swapped[-1]][1]]
                 for text, offsets in ((clean, clean_offsets), (corrupt, corrupt_offsets))]
        raise NotAMinimalPair("words", f"The {names[0]} and the {names[1]} differ in more than one word "
                              f"({shown[0]!r} vs {shown[1]!r}): patching needs a minimal pair that swaps a single "
                              "word.", pieces)
    return pieces


def _answer_ids(loaded: LoadedModel, answers: tuple[str, str]) -> tuple[int, int]:
    """Each answer's first piece as the model would write it next: after a space for a decoder."""
    prefix = " " if loaded.is_causal else ""
    return tuple(loaded.tokenizer(prefix + word, add_special_tokens=False)["input_ids"][0] for word in answers)


def _readout_position(loaded: LoadedModel, clean_ids: list[int]) -> int | None:
    """Where a logit readout reads: a decoder's last piece, a masked LM's mask (None when there is none)."""
    if loaded.is_causal:
        return len(clean_ids) - 1
    mask = loaded.tokenizer.mask_token_id
    return clean_ids.index(mask) if mask in clean_ids else None


def usable(loaded: LoadedModel, pair: Pair, check_answers: bool = True) -> tuple[bool, str, dict]:
    """(usable, reason if not, token info): `minimal_pair`, with the source word at the same pieces in both.

    Info: `ids` (clean, corrupt), `swapped` (the differing pieces), `source` (the source word's pieces: the query
    rows of the `row_*` patches), `target`; with answers, also `answer_ids` and the readout `position`.
    The reasons are counted in summaries, so their wording is fixed."""
    several_words = False
    try:
        pieces = minimal_pair(loaded, pair.clean, pair.corrupt, within=pair.clean_source)
    except NotAMinimalPair as err:
        if err.kind == "lengths":
            clean_word, corrupt_word = pair.clean[slice(*pair.clean_source)], pair.corrupt[slice(*pair.corrupt_source)]
            hint = " (a contraction)" if "'" in clean_word or "’" in clean_word else ""
            return False, f"different number of pieces: {clean_word!r} vs {corrupt_word!r}{hint}", {}
        if err.kind == "identical":
            return False, "the two texts tokenise identically", {}
        pieces, several_words = err.pieces, True
    source = span_pieces(pieces.clean_offsets, pair.clean_source)
    if source != span_pieces(pieces.corrupt_offsets, pair.corrupt_source):
        return False, "the source word sits at different pieces in the two texts", {}
    if several_words:
        return False, "the texts differ in more than one word", {}
    target = sorted(span_pieces(pieces.clean_offsets, pair.clean_target)) if pair.clean_target else []
    info = {"ids": (pieces.clean_ids, pieces.corrupt_ids), "swapped": pieces.swapped, "source": sorted(source),
            "target": target}
    if pair.answers is not None and check_answers:
        answer_ids = _answer_ids(loaded, pair.answers)
        if answer_ids[0] == answer_ids[1]:
            return False, "the two answers start with the same piece", {}
        position = _readout_position(loaded, pieces.clean_ids)
        if position is None:
            return False, "no mask token in the text: a masked LM has nowhere to read the answer", {}
        info.update(answer_ids=answer_ids, position=position)
    return True, "", info


def _coarse_reason(reason: str) -> str:
    """Reasons counted in summaries: the kind of problem, without the words."""
    if reason.startswith("different number of pieces"):
        return ("different number of pieces (a contraction)" if "contraction" in reason
                else "different number of pieces (the swapped words split differently)")
    return reason


def coarse_counts(skipped: list[tuple[str, str]]) -> dict[str, int]:
    """How many skipped (id, reason) pairs per coarse reason (the reason with its pair-specific details cut)."""
    counts: dict[str, int] = {}
    for _id, reason in skipped:
        counts[_coarse_reason(reason)] = counts.get(_coarse_reason(reason), 0) + 1
    return counts


# ---- Where pairs come from ------------------------------------------------------------------------------

def _pair_from(clean, corrupt, pair_id: str) -> Pair:
    return Pair(id=pair_id, relation=clean.relation, clean=clean.text, corrupt=corrupt.text,
                clean_source=tuple(clean.source_span), corrupt_source=tuple(corrupt.source_span),
                clean_target=tuple(clean.target_span), corrupt_target=tuple(corrupt.target_span),
                group=str(clean.meta.get("group", clean.meta.get("template", pair_id))),
                predicate=None if clean.meta.get("predicate") is None else str(clean.meta["predicate"]))


UNUSED_CONTRACTION = "the item's n't form: the item is patched with its 'not' form (n't changes the piece count)"
UNUSED_CONTROL = "another adverb control of an item already paired (one pair per item: its last control row)"
UNUSED_TWIN_ROW = "a second row with the same meta.twin and twin_role (the last one is used)"
UNUSED_UNPAIRED = "in no pairing scheme (neither meta.twin with twin_role nor a negation meta.pair with a role)"


def _one_pair_per_item(role: str, candidates: list) -> tuple[object, list]:
    """(the row an item's pair uses for `role`, the item's other rows of that role). Negation's clean side: the
    last row with the full cue "not" (its n't form changes the piece count, so it could not be a minimal pair
    with an adverb), else the last negated row; every other side: the last row. One pair per item keeps the run
    time of patching; the rows not used are counted, with the reason, by `row_accounting`."""
    full_cue = [e for e in candidates if (e.meta or {}).get("cue_form", "not") == "not"]
    chosen = (full_cue or candidates)[-1] if role == "negated" else candidates[-1]
    return chosen, [e for e in candidates if e is not chosen]


def collect_pairs(examples) -> PairSet:
    """Clean/corrupt pairs from `meta.pair` (negation: negated = clean, control = corrupt) and from `meta.twin`
    with `meta.twin_role`: one pair per item (`_one_pair_per_item`); incomplete pairs are skipped with the
    reason, and every row no pair uses is listed in `unused_rows` with why."""
    by_pair: dict[str, dict[str, list]] = {}
    unused: list[tuple[str, str]] = []
    for example in examples:
        meta = example.meta or {}
        if "twin" in meta:
            role = str(meta.get("twin_role", ""))
            if role not in ("clean", "corrupt"):
                raise ValueError(f"example {example.id!r}: meta.twin_role must be 'clean' or 'corrupt', got {role!r}")
            by_pair.setdefault(f"twin:{meta['twin']}", {}).setdefault(role, []).append(example)
        elif "pair" in meta and example.relation == "negation" and example.role in ("negated", "control"):
            by_pair.setdefault(str(meta["pair"]), {}).setdefault(example.role, []).append(example)
        else:
            unused.append((example.id, UNUSED_UNPAIRED))
    pairs, skipped, rows_of = [], [], {}
    for pair_id, by_role in by_pair.items():
        chosen = {}
        for role, candidates in by_role.items():
            chosen[role], others = _one_pair_per_item(role, candidates)
            reason = {"negated": UNUSED_CONTRACTION, "control": UNUSED_CONTROL}.get(role, UNUSED_TWIN_ROW)
            unused += [(e.id, reason if role != "negated" or (e.meta or {}).get("cue_form") == "n't"
                        else "another negated row of an item already paired (one pair per item)") for e in others]
        clean, corrupt = (chosen.get("clean", chosen.get("negated")), chosen.get("corrupt", chosen.get("control")))
        rows_of[pair_id] = tuple(e.id for e in (clean, corrupt) if e is not None)
        if clean is None or corrupt is None:
            roles = sorted(chosen)
            skipped.append((pair_id, f"incomplete pair: has only {', '.join(roles)}"))
        else:
            pairs.append(replace(_pair_from(clean, corrupt, pair_id), rows=rows_of[pair_id]))
    return PairSet(pairs, skipped, n_rows=len(examples), unused_rows=unused, rows_of=rows_of)


def row_accounting(pair_set: PairSet, kept: list[Pair]) -> dict | None:
    """Every data row either patched or counted with its reason: {"rows": all rows read, "patched": rows of the
    kept pairs, "not_patched": {reason: rows}}; patched + sum(not_patched) == rows (checked). None when the
    pairs were not read from data rows."""
    if pair_set.n_rows is None:
        return None
    patched = sum(len(p.rows) for p in kept)
    not_patched: dict[str, int] = {}
    for _row, reason in pair_set.unused_rows:
        not_patched[reason] = not_patched.get(reason, 0) + 1
    for pair_id, reason in pair_set.skipped:
        key = f"in a pair that was skipped: {_coarse_reason(reason)}"
        not_patched[key] = not_patched.get(key, 0) + len(pair_set.rows_of.get(pair_id, ()))
    if patched + sum(not_patched.values()) != pair_set.n_rows:
        raise RuntimeError(f"row accounting does not add up: {patched} patched + {sum(not_patched.values())} "
                           f"counted unused != {pair_set.n_rows} rows")
    return {"rows": pair_set.n_rows, "patched": patched, "not_patched": not_patched}


_IRREGULAR_NT = {"ca": "can", "wo": "will", "sha": "shall", "ai": "is"}    # the stem before "n't"


def expand_contraction(context: str) -> str | None:
    """The context with its first "n't" written out ("isn't very" -> "is not very", "can't" -> "can not",
    "won't" -> "will not"), or None when it has none. An adverb can then swap "not" piece for piece, which no
    word can do for "isn't" (NEG-136-NAT's cues are contractions)."""
    match = re.search(r"\b(\w+?)n['’]t\b", context)
    if match is None:
        return None
    stem = match.group(1)
    return context[:match.start()] + _IRREGULAR_NT.get(stem.lower(), stem) + " not" + context[match.end():]


def completion_pairs(examples, loaded: LoadedModel, masked: bool) -> PairSet:
    """NEG-136-style pairs for a language-model readout, from negated rows whose meta has `context_neg`,
    `target_aff` and `target_neg`: clean = the negated context ("A trout is not a"), corrupt = the same with the
    cue swapped for the first adverb of as many pieces ("A trout is really a"); the answers are (target_neg,
    target_aff), so a model that reads "not" favours the first after the clean context. A masked LM reads a
    mask after the context ("A trout is not a [MASK]."); a decoder reads its last position. A contracted cue
    is written out first ("isn't" -> "is not", `expand_contraction`): the clean text is then the expanded one."""
    mask = loaded.tokenizer.mask_token if masked else None
    if masked and mask is None:
        raise ValueError("this tokenizer has no mask token: a masked-LM readout is impossible")
    pairs, skipped, unused, rows_of = [], [], [], {}
    for example in examples:
        meta = example.meta or {}
        if example.relation != "negation" or not {"context_neg", "target_aff", "target_neg"} <= set(meta):
            unused.append((example.id, "no NEG-136-style context_neg, target_aff and target_neg"))
            continue
        pair_id, context = str(meta.get("pair", example.id)), str(meta["context_neg"])
        if pair_id in rows_of:
            unused.append((example.id, "a second row of an item already paired (one pair per item)"))
            continue
        rows_of[pair_id] = (example.id,)
        cue = re.search(r"\bnot\b", context)
        if cue is None and (expanded := expand_contraction(context)) is not None:
            context = expanded
            cue = re.search(r"\bnot\b", context)
        if cue is None:
            skipped.append((pair_id, "no 'not' in the context"))
            continue
        suffix = f" {mask}." if masked else ""
        clean = context + suffix
        for adverb in ADVERBS:
            corrupt = context[:cue.start()] + adverb + context[cue.end():] + suffix
            pair = Pair(id=pair_id, relation="negation", clean=clean, corrupt=corrupt, clean_source=cue.span(),
                        corrupt_source=(cue.start(), cue.start() + len(adverb)), group=pair_id,
                        answers=(str(meta["target_neg"]), str(meta["target_aff"])), rows=(example.id,))
            if usable(loaded, pair, check_answers=False)[0]:
                pairs.append(pair)
                break
        else:
            skipped.append((pair_id, "no adverb with as many pieces as 'not'"))
    return PairSet(pairs, skipped, n_rows=len(examples), unused_rows=unused, rows_of=rows_of)


def _masked_twin(example, mask: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """(the text with its pronoun replaced by the mask, the mask's span, the target's span shifted to match)."""
    start, end = example.source_span
    text = example.text[:start] + mask + example.text[end:]
    shift = len(mask) - (end - start)
    target = tuple(example.target_span)
    target = target if target[1] <= start else (target[0] + shift, target[1] + shift)
    return text, (start, start + len(mask)), target


def masked_twin_pairs(examples, loaded: LoadedModel) -> PairSet:
    """Coreference twins for a masked LM's logit readout (Kocijan et al. 2019): in both twins the pronoun
    becomes the mask token, and the readout is the logit of the clean twin's antecedent minus the corrupt
    twin's (first pieces) at the mask. "The box would not fit through the door because [MASK] was too wide /
    narrow": a model that resolves the pronoun favours "box" after "wide". Twins whose answers are the same
    word (WinoBias pro/anti keep the referent and swap its gender) or that differ only in the pronoun (masked
    away) are skipped with the reason."""
    mask = loaded.tokenizer.mask_token
    if mask is None:
        raise ValueError("this tokenizer has no mask token: a masked-LM readout is impossible")
    twins = collect_pairs([e for e in examples if e.relation == "coreference"])
    unused = [(e.id, "not a coreference row") for e in examples if e.relation != "coreference"]
    by_id = {}
    for example in examples:
        if "twin" in (example.meta or {}):
            by_id[(f"twin:{example.meta['twin']}", example.meta.get("twin_role"))] = example
    pairs, skipped = [], list(twins.skipped)
    for twin in twins.pairs:
        clean, corrupt = by_id[(twin.id, "clean")], by_id[(twin.id, "corrupt")]
        answers = (clean.target, corrupt.target)
        if answers[0].lower() == answers[1].lower():
            skipped.append((twin.id, "both twins have the same answer: no contrast for a logit readout"))
            continue
        masked = [_masked_twin(example, mask) for example in (clean, corrupt)]
        if masked[0][0] == masked[1][0]:
            skipped.append((twin.id, "the twins differ only in the pronoun, which the masked-LM readout masks"))
            continue
        pairs.append(Pair(id=twin.id, relation="coreference", clean=masked[0][0], corrupt=masked[1][0],
                          clean_source=masked[0][1], corrupt_source=masked[1][1], clean_target=masked[0][2],
                          group=twin.group, answers=answers, rows=twin.rows))
    return PairSet(pairs, skipped, n_rows=len(examples), unused_rows=twins.unused_rows + unused,
                   rows_of=twins.rows_of)


def control_pairs(pairs: list[Pair], loaded: LoadedModel) -> PairSet:
    """Adverb <-> adverb pairs built from the negation pairs' corrupt (adverb) texts: the adverb is swapped for
    the next one in ADVERBS that keeps the pair usable, so the relation does not change but a word does."""
    controls, skipped = [], []
    for pair in pairs:
        start, end = pair.corrupt_source
        adverb = pair.corrupt[start:end]
        if adverb.lower() not in ADVERBS:
            skipped.append((pair.id, f"the corrupt word {adverb!r} is not a known adverb"))
            continue
        index = ADVERBS.index(adverb.lower())
        for other in ADVERBS[index + 1:] + ADVERBS[:index]:
            text = pair.corrupt[:start] + other + pair.corrupt[end:]
            candidate = Pair(id=f"{pair.id}:control", relation="control", clean=pair.corrupt, corrupt=text,
                             clean_source=(start, end), corrupt_source=(start, start + len(other)),
                             clean_target=None, group=pair.group, predicate=pair.predicate, answers=pair.answers)
            if usable(loaded, candidate)[0]:
                controls.append(candidate)
                break
        else:
            skipped.append((pair.id, "no other adverb with the same number of pieces"))
    return PairSet(controls, skipped)


TWIN_CONTROLS = Path(__file__).resolve().parent.parent / "examples" / "builtin" / "wsc273_controls.jsonl"


def load_twin_controls(path=TWIN_CONTROLS) -> dict[str, tuple[str, str]]:
    """The hand-written twin controls: twin id ("wsc273:pair1") -> (the clean twin's special word, a word that
    keeps the referent: "large" -> "big"). The file's first line is its provenance, not a control."""
    controls = {}
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line) if line.strip() else {}
        if "twin" in row:
            if not (isinstance(row.get("word"), str) and isinstance(row.get("control"), str)):
                raise ValueError(f"{path}, line {line_no}: a twin control needs 'word' and 'control' strings")
            controls[str(row["twin"])] = (row["word"], row["control"])
    return controls


def _word_at(text: str, start: int, end: int) -> tuple[int, int]:
    """The whole word around the characters start..end (a swapped piece can be part of a word; a
    SentencePiece piece such as Gemma's " better" carries the space before its word, which is not the word)."""
    while start < end and text[start].isspace():
        start += 1
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return start, end


def _twin_control(pair: Pair, loaded: LoadedModel, control: tuple[str, str]) -> tuple[Pair | None, str]:
    """(the control pair: the clean twin, and the clean twin with its special word swapped for one that keeps
    the referent; or None and why not)."""
    try:
        pieces = minimal_pair(loaded, pair.clean, pair.corrupt, within=pair.clean_source)
    except NotAMinimalPair:
        return None, "the twins are not a minimal pair"
    start, end = _word_at(pair.clean, pieces.clean_offsets[pieces.swapped[0]][0],
                          pieces.clean_offsets[pieces.swapped[-1]][1])
    word, other = control
    if pair.clean[start:end].lower() != word.lower():
        return None, f"the control's word {word!r} is not the twins' special word {pair.clean[start:end]!r}"
    if pair.clean[start:end][0].isupper():
        other = other[0].upper() + other[1:]
    text = pair.clean[:start] + other + pair.clean[end:]
    shift = len(other) - (end - start) if start < pair.clean_source[0] else 0
    candidate = Pair(id=f"{pair.id}:control", relation="control", clean=pair.clean, corrupt=text,
                     clean_source=pair.clean_source,
                     corrupt_source=(pair.clean_source[0] + shift, pair.clean_source[1] + shift),
                     clean_target=pair.clean_target, group=pair.group, predicate=pair.predicate, answers=pair.answers)
    ok, reason, _info = usable(loaded, candidate)
    return (candidate, "") if ok else (None, f"control pair unusable: {reason}")


def twin_control_pairs(pairs: list[Pair], loaded: LoadedModel, controls: dict | None = None) -> PairSet:
    """Relation-free controls for Winograd-style twins: per twin pair, the clean twin against the same text with
    its special word swapped for one that does not flip the referent ("too large" <-> "too big"), from the
    hand-written `wsc273_controls.jsonl` (or `controls`: twin id -> (word, control word)). Masked twins keep
    their mask and answers, so a control pair's logit difference should be near 0."""
    controls = load_twin_controls() if controls is None else controls
    kept, skipped = [], []
    for pair in pairs:
        key = pair.id[len("twin:"):] if pair.id.startswith("twin:") else pair.id
        if key not in controls:
            skipped.append((pair.id, "no control swap written for this twin"))
            continue
        candidate, reason = _twin_control(pair, loaded, controls[key])
        if candidate is None:
            skipped.append((pair.id, reason))
        else:
            kept.append(candidate)
    return PairSet(kept, skipped)


def relation_controls(pairs: list[Pair], loaded: LoadedModel) -> tuple[PairSet, str] | None:
    """The relation-free control pairs for these pairs, and how they were built; None for a relation without
    controls. Negation: adverb <-> adverb (`control_pairs`); coreference twins: `twin_control_pairs`."""
    relation = pairs[0].relation
    if relation == "negation":
        return control_pairs(pairs, loaded), ("each negation pair's adverb text against the same text with the "
                                              f"next adverb in {list(ADVERBS)} of as many pieces")
    if relation == "coreference":
        return twin_control_pairs(pairs, loaded), ("each twin's clean text against the same text with its special "
                                                   "word swapped for one that keeps the referent (hand-written, "
                                                   "probing/examples/builtin/wsc273_controls.jsonl)")
    return None


def suggest_twin(text: str) -> tuple[str, str] | None:
    """A minimal twin for a sentence, and what was swapped, for what the sentence is about: a negation cue first
    ("not" <-> "really": "She did not like the soup." -> "She did really like the soup."), else the first
    pronoun (he <-> she, him/his/her, himself/herself). None when there is nothing to swap."""
    words = list(re.finditer(r"[A-Za-z]+", text))
    cue = next((m for m in words if m.group().lower() in NEGATION_SWAPS), None)
    match = cue or next((m for m in words if m.group().lower() in TWIN_WORDS), None)
    if match is None:
        return None
    word = match.group()
    swap = TWIN_WORDS[word.lower()]
    if word[0].isupper():
        swap = swap.capitalize()
    return text[:match.start()] + swap + text[match.end():], f"{word} -> {swap}"
