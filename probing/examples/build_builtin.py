"""Generator of the two built-in example sets: `builtin/coreference.jsonl` and `builtin/negation.jsonl`.

Run `python -m probing.examples.build_builtin` to rewrite both files. The output is deterministic (no
randomness: every choice below is a fixed rotation through hand-written lists), so rerunning it gives
byte-identical files. All sentences are this project's own, composed from the templates and word lists
in this file; no external data is used.

Coreference (`relation: "coreference"`)
    source = the pronoun, target = the antecedent's head noun ("doctor", not "The doctor"; names whole).
    Templates use the slots {A} and {B} (noun phrases; the span is the phrase's last word), {P} (the
    pronoun, chosen from the antecedent's gender and the template's case: subject, object, possessive)
    and {F} (the flip word of a Winograd pair). meta:
      pronoun          the pronoun as written
      gender           of the pronoun: male / female / neuter / plural
      antecedent       the antecedent's head word
      antecedent_role  "subject" (subject of its clause) or "object" (any non-subject argument)
      distance         "far" when at least FAR_WORDS words lie between antecedent and pronoun, else "near"
      category         all-words (one possible referent; no candidate_spans, every word competes),
                       gender / animacy / number (two candidates told apart by the pronoun's gender,
                       animacy or number), possessive (his/her/their, told apart by gender or number),
                       winograd (same-type candidates; one flip word decides)
      agreement_decides  two-candidate rows only: True when pronoun agreement (gender, number, animacy)
                       alone picks the antecedent, False for Winograd pairs
      group            the template id; all variants of one frame (and both halves of a Winograd pair)
                       share it, for grouped cross-validation and as the clustering unit of the statistics
      split            "explore" / "confirm": within each category the templates alternate between the two
                       halves (fixed; the held-out half of probing.confirm)
      flip_word, twin, twin_role  Winograd only: the flip word; the pair's id (its group) shared by both
                       halves; "clean" for the first half, "corrupt" for the second
    Every sentence with two candidates carries `candidate_spans` (both head nouns).

Negation (`relation: "negation"`): a crossed design that can carry a claim
    FRAMES lists 46 host frames (subject + auxiliary / modal / copula + a slot); each gets 3 predicates from
    its slot's pool (bare verb, participle, -ing form, copula predicate) by a rotation that reuses every
    predicate across frames, so frame and predicate are crossed. Each (frame, predicate) item is written in
    every negated form English has for the host ("did not" and "didn't"; "may", "might", "am" only "not";
    "can" only "can't") and, as controls, with every non-negating adverb that fits the slot (4 to 7) where the
    uncontracted cue stood: "The lawyer didn't sign the contract." / "The lawyer did not sign ..." /
    "The lawyer did really sign ...", "... did actually sign ...". The cue span of a contraction is the three
    characters "n't" ("did|n't", "ca|n't", "wo|n't"). source = the cue (negated) or the adverb (control);
    target = the next word, the same word in all of an item's rows.
    meta: pair (the item id "neg-f01-p1", shared by all its rows: the scoring compares each negated sentence
    with the mean over the item's controls, with per-adverb strata; see probing.controls), role (negated /
    control), frame ("The lawyer did _"), group (the frame id "f01": the resampling unit), predicate (the
    predicate id, shared across frames and verb forms: the second clustering factor), host, host_type
    (auxiliary / copula / modal), next_is_predicate (False when the word after the cue is not the predicate's
    head: "is not *a* doctor", "is not *at* home"), split ("explore" for odd frames, "confirm" for even ones:
    the held-out half, see probing.confirm); negated rows add cue and cue_form ("not" / "n't"), controls add
    adverb and control_note. Ids: "neg-f01-p1-nt", "neg-f01-p1-not", "neg-f01-p1-ctl-really". Within an item the
    "n't" row comes before the "not" row and the controls follow, so a reader that keeps one row per pair and
    role (probing.patching.collect_pairs keeps the last) gets the "not" sentence and the last adverb.
"""
from __future__ import annotations

import re

from . import BUILTIN_SETS, Example, example_from_dict, write_jsonl

FAR_WORDS = 8          # at least this many words between antecedent and pronoun makes "far"

# ---------------------------------------------------------------------------------------------------------
# Coreference: word lists
# ---------------------------------------------------------------------------------------------------------

PRONOUN_FORMS = {      # gender -> case -> the pronoun written in the templates
    "male": {"subj": "he", "obj": "him", "poss": "his"},
    "female": {"subj": "she", "obj": "her", "poss": "her"},
    "neuter": {"subj": "it", "obj": "it", "poss": "its"},
    "plural": {"subj": "they", "obj": "them", "poss": "their"},
}

MEN = ["the man", "John", "the boy", "David", "the uncle", "Peter",
       "the old man", "Thomas", "the waiter", "Daniel", "the young man", "Robert"]
WOMEN = ["the woman", "Mary", "the girl", "Sarah", "the aunt", "Laura",
         "the old woman", "Emma", "the waitress", "Anna", "the young woman", "Helen"]
GROUPS = ["the students", "the players", "the workers", "the children", "the soldiers",
          "the guests", "the tourists", "the volunteers", "the neighbours", "the nurses"]

# Two people of different gender; the pronoun's gender picks one of them.
GENDER_FRAMES = [  # (group, template, antecedent slot, pronoun case)
    ("gc-01", "{A} thanked {B} because {P} had helped with the move.", "B", "subj"),
    ("gc-02", "{A} called {B} because {P} needed a ride to the station.", "A", "subj"),
    ("gc-03", "{A} apologized to {B} because {P} had forgotten the meeting.", "A", "subj"),
    ("gc-04", "{A} congratulated {B} because {P} had won the race.", "B", "subj"),
    ("gc-05", "{A} visited {B} in the hospital after {P} broke a leg.", "B", "subj"),
    ("gc-06", "{A} asked {B} for help because {P} could not open the door.", "A", "subj"),
    ("gc-07", "{A} paid {B} because {P} had cleaned the kitchen.", "B", "subj"),
    ("gc-08", "{A} woke {B} because {P} had overslept.", "B", "subj"),
    ("gc-09", "{A} hugged {B} and told {P} that everything would be fine.", "B", "obj"),
    ("gc-10", "{A} forgave {B} because {P} had said sorry.", "B", "subj"),
    ("gc-11", "{A} phoned {B} late last night, long after the storm had passed, because {P} was worried.",
     "A", "subj"),
    ("gc-12", "{A} praised {B} in front of the whole team at the annual meeting because {P} had finished "
              "the project early.", "B", "subj"),
    ("gc-13", "{A} waited for {B} at the station for almost two hours in the cold rain, and then {P} went "
              "home alone.", "A", "subj"),
    ("gc-14", "{A} found {B}, who had been missing since early on Sunday morning, and hugged {P} tightly.",
     "B", "obj"),
    ("gc-15", "{A} lent {B} some money last winter, when times were hard for everyone in town, because {P} "
              "was so generous.", "A", "subj"),
    ("gc-16", "{A} met {B} at a small cafe near the old harbour on a rainy afternoon, and {P} ordered two "
              "cups of tea.", "A", "subj"),
]

# A person and a thing; "it" can only be the thing. (group, template, antecedent slot, things, thing slot)
ANIMACY_FRAMES = [
    ("ga-01", "{A} dropped {B} because {P} was too slippery.", "B",
     ["the glass", "the plate", "the bottle", "the bowl"]),
    ("ga-02", "{A} took {B} back to the shop because {P} was broken.", "B",
     ["the lamp", "the kettle", "the radio", "the toaster"]),
    ("ga-03", "{A} fell on {B} because {P} was loose.", "A",
     ["the shelf", "the mirror", "the clock", "the painting"]),
    ("ga-04", "{A} sold {B} last spring, after many long years of careful use and repair, because {P} had "
              "become too old.", "B", ["the car", "the boat", "the piano", "the tractor"]),
    ("ga-05", "{A} that my grandparents had given us many years ago woke {B} early because {P} was so loud.",
     "A", ["the clock", "the radio", "the parrot", "the bell"]),
]

# One person and a group; the pronoun's number picks one. (group, template, antecedent slot, case,
# which slot holds the group)
NUMBER_FRAMES = [
    ("pl-01", "{A} praised {B} because {P} had worked so hard.", "B", "subj", "B"),
    ("pl-02", "{A} thanked {B} because {P} had found the lost ball.", "B", "subj", "A"),
    ("pl-03", "{A} invited {B} to dinner and cooked for {P} all evening.", "B", "obj", "B"),
    ("pl-04", "{A} visited {B} and brought {P} some flowers.", "B", "obj", "A"),
    ("pl-05", "{A} left {B} at the station because {P} were in a hurry.", "A", "subj", "A"),
    ("pl-06", "{A} waited for {B} outside the old theatre for nearly an hour, and then {P} went inside "
              "without a word.", "A", "subj", "A"),
    ("pl-07", "{A} met {B} at the gate on the first cold morning of the winter and greeted {P} warmly.",
     "B", "obj", "B"),
    ("pl-08", "{A} told {B} that {P} could go home early.", "B", "subj", "B"),
]

# Possessive pronouns; two candidates, told apart by gender (first four) or number (the rest).
# (group, template, antecedent slot, plural slot or None, plural nouns)
POSSESSIVE_FRAMES = [
    ("ps-01", "{A} visited {B} at {P} home.", "B", None, None),
    ("ps-02", "{A} told {B} about {P} new job.", "A", None, None),
    ("ps-03", "{A} drove {B} home in {P} new car.", "A", None, None),
    ("ps-04", "{A} talked with {B} for a long time in the garden after dinner about {P} plans for the "
              "summer.", "B", None, None),
    ("ps-05", "{A} showed {B} {P} new garden.", "A", "A", ["the children", "the neighbours", "the twins",
                                                           "the students"]),
    ("ps-06", "{A} looked after {B} for the whole summer, from early June to late August, and washed {P} "
              "bowls every day.", "B", "B", ["the dogs", "the cats", "the rabbits", "the puppies"]),
    ("ps-07", "{A} read {B} a story before {P} bedtime.", "B", "B", ["the children", "the twins",
                                                                      "the boys", "the girls"]),
]

# One possible referent. (group, template, antecedent role, case, nouns: "people" or a list of
# (phrase, gender))
def things(*phrases):
    return [(p, "neuter") for p in phrases]


def plurals(*phrases):
    return [(p, "plural") for p in phrases]


SIMPLE_FRAMES = [
    ("sm-01", "{A} said that {P} would arrive soon.", "subject", "subj", "people"),
    ("sm-02", "{A} was tired, so {P} went to bed early.", "subject", "subj", "people"),
    ("sm-03", "{A}, who had worked at the old hospital for many years, said that {P} was ready to retire.",
     "subject", "subj", "people"),
    ("sm-04", "Everyone admired {A} because {P} was so generous.", "object", "subj", "people"),
    ("sm-05", "Nobody in the crowded room recognized {A} until {P} began to speak.", "object", "subj",
     "people"),
    ("sm-06", "The police questioned {A} for several hours at the station on Friday night and then let {P} "
              "go.", "object", "obj", "people"),
    ("sm-07", "{A} looked delicious, but nobody touched {P}.", "subject", "obj",
     things("the cake", "the pie", "the soup", "the pudding")),
    ("sm-08", "We found {A} in the garden and brought {P} inside.", "object", "obj",
     things("the ball", "the kitten", "the bird", "the hedgehog")),
    ("sm-09", "{A} that we bought at the little market near the station last month stopped working, so we "
              "returned {P}.", "subject", "obj", things("the radio", "the lamp", "the clock", "the heater")),
    ("sm-10", "{A} said that {P} were ready to leave.", "subject", "subj",
     plurals("the students", "the workers", "the guests", "the players")),
    ("sm-11", "We invited {A} to the party at the end of a long and busy week, and {P} all came.", "object",
     "subj", plurals("the neighbours", "the volunteers", "the tourists", "the nurses")),
    ("sm-12", "The storm damaged {A} near the river, so the town had to repair {P}.", "object", "obj",
     plurals("the bridges", "the roads", "the houses", "the fences")),
    ("sm-13", "{A}, tired after the long walk across the hills in the heat of the afternoon, sat down under "
              "a tree and opened {P} bags.", "subject", "poss",
     plurals("the tourists", "the soldiers", "the students", "the hikers")),
    ("sm-14", "{A} finished {P} homework early.", "subject", "poss",
     plurals("the students", "the children", "the twins", "the boys")),
    ("sm-15", "I met {A} yesterday and told {P} the news.", "object", "obj", "people"),
    ("sm-16", "{A} lost {P} keys again.", "subject", "poss", "people"),
    ("sm-17", "{A}, after a long and difficult day at the busy office downtown, finally came home to {P} "
              "family.", "subject", "poss", "people"),
    # sm-18 .. sm-30: added so that the all-words task has 30 templates (its resampling units), the number a
    # report needs before it claims anything.
    ("sm-18", "{A} missed the bus, so {P} walked to work.", "subject", "subj", "people"),
    ("sm-19", "Our teacher thanked {A} and gave {P} a small present.", "object", "obj", "people"),
    ("sm-20", "{A} opened the letter and read it while {P} waited for the train.", "subject", "subj",
     "people"),
    ("sm-21", "After the long meeting on Monday afternoon, the director asked {A} whether {P} wanted some "
              "coffee.", "object", "subj", "people"),
    ("sm-22", "{A} sold {P} old bicycle to a neighbour.", "subject", "poss", "people"),
    ("sm-23", "{A} fell, and the cleaner quickly picked {P} up.", "subject", "obj",
     things("the cup", "the spoon", "the phone", "the book")),
    ("sm-24", "We painted {A} last summer, and now {P} looks new.", "object", "subj",
     things("the fence", "the shed", "the gate", "the door")),
    ("sm-25", "{A}, which we had kept for many long years, finally lost {P} handle.",
     "subject", "poss", things("the basket", "the suitcase", "the drawer", "the kettle")),
    ("sm-26", "{A} arrived late, and {P} apologised to the host.", "subject", "subj",
     plurals("the guests", "the musicians", "the cousins", "the engineers")),
    ("sm-27", "The coach watched {A} closely during the final match and praised {P} afterwards.", "object",
     "obj", plurals("the players", "the runners", "the swimmers", "the skaters")),
    ("sm-28", "{A} packed {P} tents before the rain started.", "subject", "poss",
     plurals("the campers", "the scouts", "the climbers", "the hikers")),
    ("sm-29", "The manager called {A} into the office on a grey Tuesday morning in early spring and told {P} "
              "about the new plan.", "object", "obj", "people"),
    ("sm-30", "{A} laughed when {P} heard the joke.", "subject", "subj", "people"),
]

# Winograd-style pairs: same-type candidates, one flip word decides.
# (group, template, A, B, gender of both, (flip word, antecedent slot), (flip word, antecedent slot))
WINOGRAD_PAIRS = [
    ("wg-01", "{A} would not fit through {B} because {P} was too {F}.", "the box", "the door", "neuter",
     ("wide", "A"), ("narrow", "B")),
    ("wg-02", "{A} could not hold {B} because {P} was too {F}.", "the table", "the television", "neuter",
     ("weak", "A"), ("heavy", "B")),
    ("wg-03", "{A} broke {B} because {P} was so {F}.", "the ball", "the window", "neuter",
     ("fast", "A"), ("fragile", "B")),
    ("wg-04", "{A} would not go up {B} because {P} was too {F}.", "the sofa", "the staircase", "neuter",
     ("bulky", "A"), ("narrow", "B")),
    ("wg-05", "{A} cracked {B} because {P} was so {F}.", "the rock", "the pipe", "neuter",
     ("heavy", "A"), ("thin", "B")),
    ("wg-06", "{A} could not light {B} because {P} was too {F}.", "the lamp", "the hall", "neuter",
     ("dim", "A"), ("large", "B")),
    ("wg-07", "{A} could not cross {B} because {P} was too {F}.", "the boat", "the river", "neuter",
     ("leaky", "A"), ("rough", "B")),
    ("wg-08", "{A} did not cover {B} because {P} was too {F}.", "the poster", "the wall", "neuter",
     ("small", "A"), ("large", "B")),
    ("wg-09", "{A} could not cover {B} because {P} was too {F}.", "the blanket", "the bed", "neuter",
     ("short", "A"), ("wide", "B")),
    ("wg-10", "{A} did not fit on {B} because {P} was too {F}.", "the cake", "the plate", "neuter",
     ("big", "A"), ("small", "B")),
    ("wg-11", "{A} passed {B} because {P} was {F}.", "the truck", "the bicycle", "neuter",
     ("faster", "A"), ("slower", "B")),
    ("wg-12", "{A} hid from {B} because {P} was {F}.", "the mouse", "the cat", "neuter",
     ("frightened", "A"), ("hungry", "B")),
    ("wg-13", "{A} lent money to {B} because {P} was {F}.", "Paul", "Peter", "male",
     ("rich", "A"), ("poor", "B")),
    ("wg-14", "{A} beat {B} at chess because {P} was so {F}.", "Sarah", "Julia", "female",
     ("clever", "A"), ("careless", "B")),
    ("wg-15", "{A} could not lift {B} because {P} was so {F}.", "the man", "his son", "male",
     ("weak", "A"), ("heavy", "B")),
    ("wg-16", "{A} comforted {B} because {P} was so {F}.", "the nurse", "the girl", "female",
     ("kind", "A"), ("frightened", "B")),
    ("wg-17", "{A} ran away from {B} because {P} were {F}.", "the cats", "the dogs", "plural",
     ("scared", "A"), ("aggressive", "B")),
    ("wg-18", "{A} asked {B} for directions because {P} were {F}.", "the tourists", "the guides", "plural",
     ("lost", "A"), ("friendly", "B")),
    ("wg-19", "{A} obeyed {B} because {P} were so {F}.", "the children", "the guards", "plural",
     ("afraid", "A"), ("strict", "B")),
    ("wg-20", "{A} asked {B} a question, but {P} refused to {F} it.", "the lawyer", "the witness", "male",
     ("repeat", "A"), ("answer", "B")),
    ("wg-21", "{A} woke {B} because {P} was {F}.", "the mother", "the daughter", "female",
     ("leaving", "A"), ("oversleeping", "B")),
    ("wg-22", "{A} trusted {B} because {P} was so {F}.", "the king", "the knight", "male",
     ("naive", "A"), ("loyal", "B")),
    ("wg-23", "{A} could not beat {B} at tennis because {P} was so {F}.", "Mike", "Chris", "male",
     ("slow", "A"), ("fast", "B")),
    ("wg-24", "{A} envied {B} because {P} was so {F}.", "Emily", "Kate", "female",
     ("insecure", "A"), ("successful", "B")),
    ("wg-25", "{A} could not defeat {B} because {P} were too {F}.", "the soldiers", "the rebels", "plural",
     ("weak", "A"), ("strong", "B")),
]


# ---------------------------------------------------------------------------------------------------------
# Coreference: building the rows
# ---------------------------------------------------------------------------------------------------------

SLOT = re.compile(r"\{([A-Z])\}")
WORD = re.compile(r"[\w'-]+")


def fill(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Replace each {X} by values[X]; return the text (first letter capitalized) and each slot's span."""
    text, spans, last = "", {}, 0
    for match in SLOT.finditer(template):
        text += template[last:match.start()]
        value = values[match.group(1)]
        spans[match.group(1)] = (len(text), len(text) + len(value))
        text += value
        last = match.end()
    text += template[last:]
    return text[0].upper() + text[1:], spans


def head_span(span: tuple[int, int], phrase: str) -> tuple[int, int]:
    """The span of a noun phrase's last word (its head noun, or the whole name)."""
    return (span[1] - len(phrase.split()[-1]), span[1])


def coref_row(group, category, template, a, b, antecedent_slot, role, case, gender,
              with_candidates, flip_word=None, twin_role=None) -> dict:
    """One coreference row; `a`/`b` are the phrases for {A}/{B} (b may be None)."""
    pronoun = PRONOUN_FORMS[gender][case]
    values = {"A": a, "P": pronoun}
    if b is not None:
        values["B"] = b
    if flip_word is not None:
        values["F"] = flip_word
    text, spans = fill(template, values)
    heads = {slot: head_span(spans[slot], values[slot]) for slot in ("A", "B") if slot in values}
    target = heads[antecedent_slot]
    source = spans["P"]
    n_between = len(WORD.findall(text[target[1]:source[0]]))
    meta = {"pronoun": pronoun, "gender": gender, "antecedent": text[target[0]:target[1]],
            "antecedent_role": role, "distance": "far" if n_between >= FAR_WORDS else "near",
            "category": category, "group": group}
    if with_candidates:
        meta["agreement_decides"] = category != "winograd"
    if flip_word is not None:
        meta.update(flip_word=flip_word, twin=group, twin_role=twin_role)
    row = {"text": text, "relation": "coreference", "source_span": list(source), "target_span": list(target),
           "meta": meta}
    if with_candidates:
        row["candidate_spans"] = [list(heads["A"]), list(heads["B"])]
    return row


def role_of(slot: str) -> str:
    return "subject" if slot == "A" else "object"


def person(i: int) -> tuple[str, str]:
    """The i-th person, alternating men and women."""
    return (MEN[(i // 2) % len(MEN)], "male") if i % 2 == 0 else (WOMEN[(i // 2) % len(WOMEN)], "female")


def coreference_rows() -> list[dict]:
    rows = []

    for t, (group, template, role, case, nouns) in enumerate(SIMPLE_FRAMES):
        for k in range(4):
            phrase, gender = person(3 * t + k) if nouns == "people" else nouns[k]
            rows.append(coref_row(group, "all-words", template, phrase, None, "A", role, case, gender, False))

    for t, (group, template, slot, case) in enumerate(GENDER_FRAMES):
        for k in range(6):
            man, woman = MEN[(t + k) % len(MEN)], WOMEN[(2 * t + k + 1) % len(WOMEN)]
            a, b = (man, woman) if k % 2 == 0 else (woman, man)
            gender = "male" if (a if slot == "A" else b) == man else "female"
            rows.append(coref_row(group, "gender", template, a, b, slot, role_of(slot), case, gender,
                                  True))

    for t, (group, template, slot, objects) in enumerate(ANIMACY_FRAMES):
        for k, thing in enumerate(objects):
            someone = person(5 * t + k)[0]
            a, b = (someone, thing) if slot == "B" else (thing, someone)
            rows.append(coref_row(group, "animacy", template, a, b, slot, role_of(slot), "subj",
                                  "neuter", True))

    for t, (group, template, slot, case, group_slot) in enumerate(NUMBER_FRAMES):
        for k in range(4):
            crowd = GROUPS[(3 * t + k) % len(GROUPS)]
            someone, gender = person(7 * t + k)
            a, b = (crowd, someone) if group_slot == "A" else (someone, crowd)
            if slot != group_slot:
                pronoun_gender = gender
            else:
                pronoun_gender = "plural"
            rows.append(coref_row(group, "number", template, a, b, slot, role_of(slot), case, pronoun_gender,
                                  True))

    for t, (group, template, slot, plural_slot, nouns) in enumerate(POSSESSIVE_FRAMES):
        for k in range(4):
            if plural_slot is None:
                man, woman = MEN[(5 * t + k) % len(MEN)], WOMEN[(3 * t + k + 2) % len(WOMEN)]
                a, b = (man, woman) if k % 2 == 0 else (woman, man)
                gender = "male" if (a if slot == "A" else b) == man else "female"
            else:
                someone = person(11 * t + k)[0]
                a, b = (nouns[k], someone) if plural_slot == "A" else (someone, nouns[k])
                gender = "plural"
            rows.append(coref_row(group, "possessive", template, a, b, slot, role_of(slot), "poss", gender,
                                  True))

    for group, template, a, b, gender, *flips in WINOGRAD_PAIRS:
        for (flip_word, slot), twin_role in zip(flips, ("clean", "corrupt")):
            rows.append(coref_row(group, "winograd", template, a, b, slot, role_of(slot), "subj", gender,
                                  True, flip_word=flip_word, twin_role=twin_role))

    for i, row in enumerate(rows, start=1):
        row["id"] = f"coref-{i:04d}"
    mark_splits(rows)
    return rows


def mark_splits(rows: list[dict]) -> None:
    """meta.split: within each category, the templates (groups) alternate between "explore" and "confirm" in
    the order they are written, so both halves hold every category; a Winograd pair stays together."""
    order: dict[str, list[str]] = {}
    for row in rows:
        groups = order.setdefault(row["meta"]["category"], [])
        if row["meta"]["group"] not in groups:
            groups.append(row["meta"]["group"])
    for row in rows:
        index = order[row["meta"]["category"]].index(row["meta"]["group"])
        row["meta"]["split"] = "explore" if index % 2 == 0 else "confirm"


# ---------------------------------------------------------------------------------------------------------
# Negation: a crossed design (frame x predicate x cue form x control adverb)
# ---------------------------------------------------------------------------------------------------------

# The two halves share no host word and no predicate (meta.split; probing.confirm): heads chosen on the
# exploration half are confirmed on hosts and predicates they were never chosen on. Each half has its own
# verbs, its own copula predicates and its own host words, and at least 30 frames.
EXPLORE_VERBS = [  # (bare form, past participle, -ing form, the rest of the verb phrase)
    ("sign", "signed", "signing", "the contract"),
    ("answer", "answered", "answering", "the phone"),
    ("lock", "locked", "locking", "the front door"),
    ("finish", "finished", "finishing", "the report"),
    ("call", "called", "calling", "the doctor"),
    ("read", "read", "reading", "the letter"),
    ("pay", "paid", "paying", "the bill"),
    ("open", "opened", "opening", "the window"),
    ("watch", "watched", "watching", "the match"),
    ("visit", "visited", "visiting", "the museum"),
    ("clean", "cleaned", "cleaning", "the kitchen"),
    ("feed", "fed", "feeding", "the dog"),
]
CONFIRM_VERBS = [
    ("fix", "fixed", "fixing", "the roof"),
    ("cook", "cooked", "cooking", "dinner"),
    ("tell", "told", "telling", "the truth"),
    ("wash", "washed", "washing", "the car"),
    ("sell", "sold", "selling", "the house"),
    ("paint", "painted", "painting", "the fence"),
    ("bake", "baked", "baking", "the bread"),
    ("catch", "caught", "catching", "the bus"),
    ("water", "watered", "watering", "the plants"),
    ("close", "closed", "closing", "the shop"),
    ("write", "written", "writing", "the speech"),
    ("drive", "driven", "driving", "the van"),
]
VERBS = EXPLORE_VERBS + CONFIRM_VERBS
# Copula predicates (singular form, plural form): adjectives, noun phrases, prepositional phrases.
EXPLORE_COPULA = [
    ("happy with the result", "happy with the result"), ("a doctor", "doctors"), ("at home", "at home"),
    ("ready for the exam", "ready for the exam"), ("very tall", "very tall"), ("in the office", "in the office"),
    ("afraid of the dark", "afraid of the dark"),
]
CONFIRM_COPULA = [
    ("sure about the plan", "sure about the plan"), ("angry about the delay", "angry about the delay"),
    ("busy today", "busy today"), ("hungry", "hungry"), ("a good cook", "good cooks"),
    ("on the train", "on the train"), ("interested in politics", "interested in politics"),
]
COPULA_PREDICATES = EXPLORE_COPULA + CONFIRM_COPULA
# Copula predicates whose first word is the predicate's head (an adjective or a bare noun); the others start
# with a determiner, a preposition or an intensifier ("a doctor", "at home", "very tall", "good cooks").
PREDICATE_HEADS_FIRST = {"happy", "ready", "afraid", "sure", "angry", "busy", "hungry", "interested", "doctors"}

# Every non-negating adverb that reads naturally in the slot after each kind of host; each item gets all of
# them as controls, so no adverb is confounded with a host (the old design gave each item one adverb).
# Left out as odd English: "also" after emphatic do ("did also sign"), "probably" after a modal of
# obligation or ability ("must probably sign").
CONTROL_ADVERBS = {
    "do": ["really", "actually", "indeed", "certainly"],
    "have": ["already", "probably", "also", "certainly", "actually"],
    "be": ["really", "also", "probably", "certainly", "still", "actually"],
    "modal": ["really", "also", "certainly", "surely", "still", "actually"],
    "may": ["also", "still", "actually", "really"],
}
ADVERB_GROUP = {"did": "do", "does": "do", "do": "do", "has": "have", "have": "have", "had": "have",
                "may": "may", "might": "may"}

CONTRACTED = {"can": "ca", "will": "wo"}      # "can't" = "ca" + "n't", "won't" = "wo" + "n't"
NO_CONTRACTION = {"may", "might", "am"}      # English has only "not" here ("mayn't", "amn't" are not used)
ONLY_CONTRACTION = {"can"}                   # "can not" is avoided (it reads as "cannot"); only "can't"

# Which half each host word belongs to (every host of a half is absent from the other).
EXPLORE_HOSTS = {"did", "does", "has", "was", "is", "could", "should", "might", "will"}
CONFIRM_HOSTS = {"do", "have", "had", "were", "are", "am", "can", "would", "must", "may"}

# The host frames: (subject, host, host_type, slot). slot: "bare" verb, "participle", "ing" form, or a
# copula predicate in the subject's number ("singular" / "plural"). Each line is one frame, the resampling
# unit; its predicates come from its half's pool for the slot by rotation, so every predicate recurs across
# the frames of its half. The exploration frames come first, then the confirmation frames.
FRAMES = [
    # exploration half: did, does, has, was, is, could, should, might, will
    ("The lawyer", "did", "auxiliary", "bare"), ("My parents", "did", "auxiliary", "bare"),
    ("We", "did", "auxiliary", "bare"), ("The old professor", "did", "auxiliary", "bare"),
    ("The new manager", "does", "auxiliary", "bare"), ("She", "does", "auxiliary", "bare"),
    ("My uncle", "does", "auxiliary", "bare"), ("The landlord", "does", "auxiliary", "bare"),
    ("Our neighbour", "has", "auxiliary", "participle"), ("The pilot", "has", "auxiliary", "participle"),
    ("The author", "has", "auxiliary", "participle"), ("My aunt", "has", "auxiliary", "participle"),
    ("The coach", "has", "auxiliary", "participle"),
    ("My grandfather", "was", "auxiliary", "ing"), ("He", "was", "auxiliary", "ing"),
    ("The singer", "was", "auxiliary", "ing"),
    ("The nurse", "is", "auxiliary", "ing"), ("The gardener", "is", "auxiliary", "ing"),
    ("Anna", "was", "copula", "singular"), ("The old farmer", "was", "copula", "singular"),
    ("The manager", "was", "copula", "singular"),
    ("My sister", "is", "copula", "singular"), ("The young teacher", "is", "copula", "singular"),
    ("David", "is", "copula", "singular"),
    ("The doctor", "could", "modal", "bare"), ("My brothers", "could", "modal", "bare"),
    ("The captain", "should", "modal", "bare"), ("The visitors", "should", "modal", "bare"),
    ("The mechanic", "might", "modal", "bare"), ("The twins", "might", "modal", "bare"),
    ("The chef", "will", "modal", "bare"), ("The interns", "will", "modal", "bare"),
    ("The mayor", "will", "modal", "bare"), ("The editor", "will", "modal", "bare"),
    # confirmation half: do, have, had, were, are, am, can, would, must, may
    ("The students", "do", "auxiliary", "bare"), ("They", "do", "auxiliary", "bare"),
    ("Most customers", "do", "auxiliary", "bare"), ("The villagers", "do", "auxiliary", "bare"),
    ("The workers", "have", "auxiliary", "participle"), ("You", "have", "auxiliary", "participle"),
    ("The nurses", "have", "auxiliary", "participle"), ("Our friends", "have", "auxiliary", "participle"),
    ("The tenants", "have", "auxiliary", "participle"),
    ("The driver", "had", "auxiliary", "participle"), ("The guests", "had", "auxiliary", "participle"),
    ("The old sailor", "had", "auxiliary", "participle"),
    ("The players", "were", "auxiliary", "ing"), ("The engineers", "were", "auxiliary", "ing"),
    ("The protesters", "were", "auxiliary", "ing"),
    ("The children", "are", "auxiliary", "ing"), ("The teenagers", "are", "auxiliary", "ing"),
    ("The dancers", "are", "auxiliary", "ing"),
    ("The volunteers", "were", "copula", "plural"), ("My cousins", "were", "copula", "plural"),
    ("The passengers", "were", "copula", "plural"),
    ("The tourists", "are", "copula", "plural"), ("Our neighbours", "are", "copula", "plural"),
    ("The musicians", "are", "copula", "plural"),
    ("I", "am", "copula", "singular"),
    ("The waiter", "can", "modal", "bare"), ("The soldiers", "can", "modal", "bare"),
    ("The judge", "would", "modal", "bare"), ("The pupils", "would", "modal", "bare"),
    ("The bankers", "would", "modal", "bare"), ("The lawyers", "would", "modal", "bare"),
    ("The secretary", "must", "modal", "bare"), ("The cleaners", "must", "modal", "bare"),
    ("The baker", "may", "modal", "bare"), ("The farmers", "may", "modal", "bare"),
    ("The clerks", "may", "modal", "bare"),
]
PREDICATES_PER_FRAME = 3


def cue_forms(host: str) -> list[str]:
    """The negation forms English has for a host, contraction first ("didn't" before "did not")."""
    if host in NO_CONTRACTION:
        return ["not"]
    if host in ONLY_CONTRACTION:
        return ["n't"]
    return ["n't", "not"]


def split_of_host(host: str) -> str:
    """The half ("explore" / "confirm") a host word belongs to."""
    if host in EXPLORE_HOSTS:
        return "explore"
    if host in CONFIRM_HOSTS:
        return "confirm"
    raise ValueError(f"host {host!r} is in neither half (EXPLORE_HOSTS, CONFIRM_HOSTS)")


def frame_predicates(slot: str, index: int, split: str = "explore") -> list[tuple[str, str, bool]]:
    """The predicates of the index-th frame with this slot in this half: (words after the cue, predicate id
    shared across frames and verb forms, whether the first of those words is the predicate's head)."""
    copula = slot in ("singular", "plural")
    pool = {("explore", True): EXPLORE_COPULA, ("confirm", True): CONFIRM_COPULA,
            ("explore", False): EXPLORE_VERBS, ("confirm", False): CONFIRM_VERBS}[(split, copula)]
    # Offsets 0, 5, 10 with a step of 2 between frames: three distinct predicates per frame whose
    # combinations vary from frame to frame, so frame and predicate are crossed, not nested.
    picks = [pool[(2 * index + 5 * k) % len(pool)] for k in range(PREDICATES_PER_FRAME)]
    out = []
    for entry in picks:
        if slot in ("singular", "plural"):
            words = entry[0] if slot == "singular" else entry[1]
            out.append((words, f"pred-{entry[0]}", words.split()[0] in PREDICATE_HEADS_FIRST))
        else:
            bare, participle, ing, rest = entry
            verb = {"bare": bare, "participle": participle, "ing": ing}[slot]
            out.append((f"{verb} {rest}", f"verb-{bare}", True))
    return out


def negated_word_span(example: Example) -> tuple[int, int]:
    """The negated word of a built-in negation row (a negated sentence or its control alike): the head of the
    predicate after the cue (or after the control's adverb) -- the verb ("did not *sign* the contract"), the
    adjective ("is not *happy* with the result"), or the last word of a copula phrase that starts with a
    determiner, preposition or intensifier ("was not in the *office*", "is not very *tall*", "are not good
    *cooks*"). For about nine rows in ten this is the next word (`meta.next_is_predicate`).

    Derived from the text and `meta.predicate` rather than stored in the JSONL, so that the set's data (and
    every committed step keyed on it) stays as it was; `tests/test_build_builtin.py` checks it on every row."""
    start = example.source_span[1]
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"[A-Za-z]+", example.text[start:])]
    if not words:
        raise ValueError(f"{example.id}: no word after the cue")
    predicate = str((example.meta or {}).get("predicate", ""))
    first = example.text[slice(*words[0])]
    if predicate.startswith("verb-") or first in PREDICATE_HEADS_FIRST:
        return words[0]
    if not predicate.startswith("pred-"):
        raise ValueError(f"{example.id}: meta.predicate {predicate!r} is neither verb-... nor pred-...")
    # The copula phrase is the rest of the sentence ("in the office."): its last word is the head.
    return words[-1]


def negated_row(item_id, meta, subject, host, cue, words) -> dict:
    """A negated sentence "S HOST not X." / "S HOSTn't X."; source the cue, target the next word."""
    lead = f"{subject} {CONTRACTED.get(host, host)}" if cue == "n't" else f"{subject} {host} "
    text = f"{lead}{cue} {words}."
    source = (len(lead), len(lead) + len(cue))
    target = (source[1] + 1, source[1] + 1 + len(words.split()[0]))
    suffix = "nt" if cue == "n't" else "not"
    return {"id": f"{item_id}-{suffix}", "text": text, "relation": "negation",
            "source_span": list(source), "target_span": list(target),
            "meta": {**meta, "role": "negated", "cue": cue, "cue_form": cue}}


def control_row(item_id, meta, subject, host, adverb, words) -> dict:
    """The item's control with one adverb where the (uncontracted) cue stood: "S HOST ADVERB X."."""
    lead = f"{subject} {host} "
    text = f"{lead}{adverb} {words}."
    source = (len(lead), len(lead) + len(adverb))
    target = (source[1] + 1, source[1] + 1 + len(words.split()[0]))
    return {"id": f"{item_id}-ctl-{adverb}", "text": text, "relation": "negation", "source_span": list(source),
            "target_span": list(target),
            "meta": {**meta, "role": "control", "adverb": adverb, "control_note": f"{host} not -> {host} {adverb}"}}


def negation_rows() -> list[dict]:
    """Every frame x predicate item: its negated sentence in each cue form, then one control per adverb.

    All rows of an item share meta.pair (the item id), so the scoring pairs each negated sentence with the
    mean over the item's controls (probing.controls). A frame's half (meta.split) is its host word's half,
    and its predicates come from that half's pools, so the halves share no host word and no predicate; both
    hold every host type."""
    rows, seen_slots = [], {}
    for f, (subject, host, host_type, slot) in enumerate(FRAMES, start=1):
        split = split_of_host(host)
        index = seen_slots[(split, slot)] = seen_slots.get((split, slot), -1) + 1
        frame_id = f"f{f:02d}"
        adverbs = CONTROL_ADVERBS[ADVERB_GROUP.get(host, "modal" if host_type == "modal" else "be")]
        for p, (words, predicate, next_is_predicate) in enumerate(frame_predicates(slot, index, split), start=1):
            item_id = f"neg-{frame_id}-p{p}"
            meta = {"pair": item_id, "frame": f"{subject} {host} _", "predicate": predicate, "host": host,
                    "host_type": host_type, "next_is_predicate": next_is_predicate, "group": frame_id,
                    "split": split}
            rows += [negated_row(item_id, meta, subject, host, cue, words) for cue in cue_forms(host)]
            rows += [control_row(item_id, meta, subject, host, adverb, words) for adverb in adverbs]
    return rows


# Controls of the same shape for "n't": an affirmative clitic split off its host the same way ("wouldn't" is
# `wouldn` `'` `t`, "pupils'd" is `pupils` `'` `d`), where English has one for the host (the reduced
# auxiliary attaches to the subject: "The pupils'd visit", "The workers've signed", "The nurse's signing").
CLITICS = {"would": "'d", "had": "'d", "will": "'ll", "have": "'ve", "are": "'re", "is": "'s", "has": "'s"}


def clitic_row(item_id, meta, subject, host, words) -> dict:
    """The item's clitic control: "S'CLITIC X." with the clitic as source and the next word as target."""
    clitic = CLITICS[host]
    text = f"{subject}{clitic} {words}."
    source = (len(subject), len(subject) + len(clitic))
    target = (source[1] + 1, source[1] + 1 + len(words.split()[0]))
    return {"id": f"{item_id}-ctl-clitic", "text": text, "relation": "negation", "source_span": list(source),
            "target_span": list(target),
            "meta": {**meta, "role": "control", "control_set": "clitic", "clitic": clitic,
                     "control_note": f"{host} n't -> {clitic}"}}


def clitic_control_rows() -> list[dict]:
    """The "n't" sentence of every item whose host has an affirmative clitic, each paired (meta.pair) with its
    clitic control: the second control set for "n't" (builtin-negation-clitics), beside the adverbs."""
    rows = []
    for row in negation_rows():
        meta = row["meta"]
        if meta["role"] != "negated" or meta["cue"] != "n't" or meta["host"] not in CLITICS:
            continue
        subject = meta["frame"][: -len(f" {meta['host']} _")]
        words = row["text"][row["target_span"][0]:-1]
        rows.append(row)
        base = {k: v for k, v in meta.items() if k not in ("role", "cue", "cue_form")}
        rows.append(clitic_row(meta["pair"], base, subject, meta["host"], words))
    return rows


# ---------------------------------------------------------------------------------------------------------

def validated(rows: list[dict]) -> list[Example]:
    texts = [row["text"] for row in rows]
    duplicates = sorted({t for t in texts if texts.count(t) > 1})
    if duplicates:
        raise ValueError(f"duplicate sentences: {duplicates[:3]}")
    return [example_from_dict(row) for row in rows]


def build_coreference() -> list[Example]:
    return validated(coreference_rows())


def build_negation() -> list[Example]:
    return validated(negation_rows())


def build_negation_clitics() -> list[Example]:
    return validated(clitic_control_rows())


def main() -> None:
    for name, examples in (("builtin-coref", build_coreference()), ("builtin-negation", build_negation()),
                           ("builtin-negation-clitics", build_negation_clitics())):
        write_jsonl(examples, BUILTIN_SETS[name])
        print(f"{BUILTIN_SETS[name]}: {len(examples)} records")


if __name__ == "__main__":
    main()
