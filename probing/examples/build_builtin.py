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
      flip_word, twin, twin_role  Winograd only: the flip word; the pair's id (its group) shared by both
                       halves; "clean" for the first half, "corrupt" for the second
    Every sentence with two candidates carries `candidate_spans` (both head nouns).

Negation (`relation: "negation"`)
    Each negated sentence "S HOST not X ..." / "S HOSTn't X ..." has one control, a separate record, in
    which the cue is replaced at the same position by a non-negating adverb: "S HOST ADVERB X ...".
    For "n't" the contraction is expanded first, so the texts differ by the cue only after un-contracting:
    "The lawyer didn't sign" -> "The lawyer did really sign", "can't" -> "can ...", "won't" -> "will ...".
    The cue span of a contraction is always the three characters "n't" ("did|n't", "ca|n't", "wo|n't").
    source = the cue (negated) or the adverb (control); target = the next word, the same word in both.
    meta: pair (the negated record's id), role (negated / control), cue and cue_form ("not" / "n't"),
    host (the word carrying the negation, uncontracted), host_type (auxiliary / copula / modal),
    next_is_predicate (False when the word after the cue is not the negated predicate's head: "is not *a*
    doctor", "does not *fully* understand", "is not *at* home"), group (the predicate after the cue, the
    clustering unit: sentences sharing a predicate share the word the cue attends to); controls add
    adverb and control_note (the substitution made). Ids: "neg-0001" and its control "neg-0001-ctl".
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


def head_genders() -> dict[str, str]:
    """Gender/number of every head noun used in the two-, plural- and possessive-candidate frames."""
    table = {}
    for phrases, gender in ((MEN, "male"), (WOMEN, "female"), (GROUPS, "plural")):
        for phrase in phrases:
            table[phrase.split()[-1]] = gender
    for _, _, _, nouns in ANIMACY_FRAMES:
        for phrase in nouns:
            table[phrase.split()[-1]] = "neuter"
    for *_, nouns in POSSESSIVE_FRAMES:
        for phrase in nouns or ():
            table[phrase.split()[-1]] = "plural"
    return table


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
    return rows


# ---------------------------------------------------------------------------------------------------------
# Negation: word lists
# ---------------------------------------------------------------------------------------------------------

SINGULAR_SUBJECTS = ["the lawyer", "my sister", "the new manager", "our neighbour", "Anna", "the pilot",
                     "the young teacher", "David", "the driver", "my grandfather", "she", "the old farmer",
                     "he", "the nurse"]
PLURAL_SUBJECTS = ["the students", "my parents", "the workers", "we", "our neighbours", "the players",
                   "the tourists", "they", "the engineers", "the guests", "you", "the children"]
ANY_SUBJECTS = [s for pair in zip(SINGULAR_SUBJECTS, PLURAL_SUBJECTS) for s in pair]

VERBS = [  # (bare form, past participle, -ing form, the rest of the verb phrase)
    ("sign", "signed", "signing", "the contract"),
    ("answer", "answered", "answering", "the phone"),
    ("lock", "locked", "locking", "the front door"),
    ("finish", "finished", "finishing", "the report"),
    ("call", "called", "calling", "the doctor"),
    ("read", "read", "reading", "the letter"),
    ("pay", "paid", "paying", "the bill"),
    ("open", "opened", "opening", "the window"),
    ("eat", "eaten", "eating", "breakfast"),
    ("watch", "watched", "watching", "the match"),
    ("visit", "visited", "visiting", "the museum"),
    ("clean", "cleaned", "cleaning", "the kitchen"),
    ("write", "written", "writing", "the email"),
    ("drive", "driven", "driving", "the car"),
    ("take", "taken", "taking", "the early train"),
    ("wear", "worn", "wearing", "a coat"),
    ("tell", "told", "telling", "the truth"),
    ("break", "broken", "breaking", "the rules"),
    ("feed", "fed", "feeding", "the dog"),
    ("fix", "fixed", "fixing", "the roof"),
    ("cook", "cooked", "cooking", "dinner"),
    ("leave", "left", "leaving", "early"),
    ("plant", "planted", "planting", "the trees"),
    ("listen", "listened", "listening", "to the radio"),
]
# Verb phrases that start with an adverb, so that the word after the cue is not a verb.
ADVERB_VERB_PHRASES = ["fully understand the question", "always agree with the boss", "properly lock the door",
                       "completely trust the plan", "easily open the jar"]
# Copula predicates: adjectives, noun phrases, prepositional phrases (the next word is never a verb).
SINGULAR_PREDICATES = ["happy with the result", "a doctor", "at home", "ready for the exam", "very tall",
                       "in the office", "afraid of the dark", "the tallest in the family", "sure about the plan",
                       "angry about the delay", "busy today", "hungry", "the right person for the job",
                       "interested in politics", "a good cook", "on the train", "quite sure about the answer",
                       "so different from the others"]
PLURAL_PREDICATES = ["happy with the result", "nurses", "at home", "ready for the exam", "very tall",
                     "in the office", "afraid of the dark", "the tallest in the family", "sure about the plan",
                     "angry about the delay", "busy today", "hungry", "the right people for the job",
                     "interested in politics", "good cooks", "on the train", "quite sure about the answer",
                     "so different from the others"]

# Copula predicates whose first word is the predicate's head (an adjective or a bare noun); the others
# start with a determiner, a preposition or an intensifier ("a doctor", "at home", "very tall", "good cooks").
PREDICATE_HEADS_FIRST = {"happy", "ready", "afraid", "sure", "angry", "busy", "hungry", "interested", "nurses"}

PREFIXES = ["", "", "As far as I know, ", "", "To be honest, ", "In the end, ", "", "Apparently, "]
VERB_SUFFIXES = ["", " this time", "", " after all", " again"]
COPULA_SUFFIXES = ["", "", " after all"]

# Non-negating adverbs for the controls, chosen to read naturally after each kind of host.
CONTROL_ADVERBS = {
    "do": ["really", "actually", "indeed", "also", "certainly"],
    "have": ["already", "probably", "also", "certainly", "actually"],
    "be": ["really", "also", "probably", "certainly", "still", "actually"],
    "modal": ["really", "also", "certainly", "probably", "surely", "still", "actually"],
    "may": ["also", "still", "actually", "really"],
}
ADVERB_GROUP = {"did": "do", "does": "do", "do": "do", "has": "have", "have": "have", "had": "have",
                "may": "may", "might": "may"}

CONTRACTED = {"can": "ca", "will": "wo"}      # "can't" = "ca" + "n't", "won't" = "wo" + "n't"
NO_CONTRACTION = {"may", "might", "am"}      # always "not"
ONLY_CONTRACTION = {"can"}                   # "can not" is avoided; always "can't"

# (host, host_type, subjects, what follows the cue, how many sentences)
NEGATION_PLAN = [
    ("did", "auxiliary", ANY_SUBJECTS, "bare", 12),
    ("does", "auxiliary", SINGULAR_SUBJECTS, "bare", 8),
    ("do", "auxiliary", PLURAL_SUBJECTS, "bare", 8),
    ("has", "auxiliary", SINGULAR_SUBJECTS, "participle", 8),
    ("have", "auxiliary", PLURAL_SUBJECTS, "participle", 8),
    ("had", "auxiliary", ANY_SUBJECTS, "participle", 6),
    ("was", "auxiliary", SINGULAR_SUBJECTS, "ing", 6),
    ("were", "auxiliary", PLURAL_SUBJECTS, "ing", 6),
    ("is", "auxiliary", SINGULAR_SUBJECTS, "ing", 4),
    ("are", "auxiliary", PLURAL_SUBJECTS, "ing", 4),
    ("is", "copula", SINGULAR_SUBJECTS, "singular", 14),
    ("are", "copula", PLURAL_SUBJECTS, "plural", 12),
    ("was", "copula", SINGULAR_SUBJECTS, "singular", 14),
    ("were", "copula", PLURAL_SUBJECTS, "plural", 12),
    ("am", "copula", ["I"], "singular", 4),
    ("can", "modal", ANY_SUBJECTS, "bare", 8),
    ("could", "modal", ANY_SUBJECTS, "bare", 8),
    ("should", "modal", ANY_SUBJECTS, "bare", 8),
    ("must", "modal", ANY_SUBJECTS, "bare", 6),
    ("may", "modal", ANY_SUBJECTS, "bare", 5),
    ("might", "modal", ANY_SUBJECTS, "bare", 5),
    ("will", "modal", ANY_SUBJECTS, "bare", 10),
    ("would", "modal", ANY_SUBJECTS, "bare", 10),
]


# ---------------------------------------------------------------------------------------------------------
# Negation: building the rows
# ---------------------------------------------------------------------------------------------------------

def continuation(kind: str, line: int, k: int) -> tuple[str, str, str, bool]:
    """The words after the cue for the k-th sentence of plan line `line`, the suffix before the full stop,
    the predicate's id (shared by its singular/plural and verb-form variants) and whether the first word
    after the cue is the negated predicate's head."""
    if kind in ("singular", "plural"):
        predicates = SINGULAR_PREDICATES if kind == "singular" else PLURAL_PREDICATES
        index = (5 * k + 3 * line) % len(predicates)
        words = predicates[index]
        return (words, COPULA_SUFFIXES[(k + line) % len(COPULA_SUFFIXES)], f"pred-{SINGULAR_PREDICATES[index]}",
                words.split()[0] in PREDICATE_HEADS_FIRST)
    suffix = VERB_SUFFIXES[(k + line) % len(VERB_SUFFIXES)]
    if kind == "bare" and k % 4 == 3:
        words = ADVERB_VERB_PHRASES[(k // 4 + line) % len(ADVERB_VERB_PHRASES)]
        return words, suffix, f"verb-{words.split()[1]}", False
    bare, participle, ing, rest = VERBS[(7 * k + 5 * line) % len(VERBS)]
    verb = {"bare": bare, "participle": participle, "ing": ing}[kind]
    return f"{verb} {rest}", suffix, f"verb-{bare}", True


def negation_pair(pair_id, prefix, subject, host, host_type, cue, words, suffix, adverb, predicate,
                  next_is_predicate) -> list[dict]:
    """The negated row and its control."""
    def capitalized(text):
        return text[0].upper() + text[1:]

    lead = prefix + subject + " "
    negated_lead = lead + (CONTRACTED.get(host, host) if cue == "n't" else host + " ")
    negated = capitalized(negated_lead + cue + " " + words + suffix + ".")
    source = (len(negated_lead), len(negated_lead) + len(cue))
    target = (source[1] + 1, source[1] + 1 + len(words.split()[0]))

    control_lead = lead + host + " "
    control = capitalized(control_lead + adverb + " " + words + suffix + ".")
    ctl_source = (len(control_lead), len(control_lead) + len(adverb))
    ctl_target = (ctl_source[1] + 1, ctl_source[1] + 1 + len(words.split()[0]))
    written = CONTRACTED.get(host, host) + "n't" if cue == "n't" else host + " not"

    meta = {"pair": pair_id, "cue": cue, "cue_form": cue, "host": host, "host_type": host_type,
            "next_is_predicate": next_is_predicate, "group": predicate}
    return [
        {"id": pair_id, "text": negated, "relation": "negation", "source_span": list(source),
         "target_span": list(target), "meta": {**meta, "role": "negated"}},
        {"id": pair_id + "-ctl", "text": control, "relation": "negation", "source_span": list(ctl_source),
         "target_span": list(ctl_target),
         "meta": {**meta, "role": "control", "adverb": adverb,
                  "control_note": f"{written} -> {host} {adverb}"}},
    ]


def negation_rows() -> list[dict]:
    rows, n = [], 0
    for line, (host, host_type, subjects, kind, count) in enumerate(NEGATION_PLAN):
        adverbs = CONTROL_ADVERBS[ADVERB_GROUP.get(host, "modal" if host_type == "modal" else "be")]
        for k in range(count):
            n += 1
            if host in NO_CONTRACTION:
                cue = "not"
            elif host in ONLY_CONTRACTION:
                cue = "n't"
            else:
                cue = "not" if (k + line) % 2 == 0 else "n't"
            words, suffix, predicate, next_is_predicate = continuation(kind, line, k)
            rows += negation_pair(f"neg-{n:04d}", PREFIXES[(n * 3) % len(PREFIXES)],
                                  subjects[(3 * line + 5 * k) % len(subjects)], host, host_type, cue,
                                  words, suffix, adverbs[(line + k) % len(adverbs)], predicate,
                                  next_is_predicate)
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


def main() -> None:
    for name, examples in (("builtin-coref", build_coreference()), ("builtin-negation", build_negation())):
        write_jsonl(examples, BUILTIN_SETS[name])
        print(f"{BUILTIN_SETS[name]}: {len(examples)} records")


if __name__ == "__main__":
    main()
