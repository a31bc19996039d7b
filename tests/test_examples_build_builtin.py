"""Checks of the committed built-in sets (probing/examples/builtin/*.jsonl) and of their generator."""
import json
import re
from collections import Counter, defaultdict

import pytest

from probing.examples import BUILTIN_SETS, read_jsonl
from probing.examples import build_builtin

PRONOUN_GENDER = {"he": "male", "him": "male", "his": "male", "she": "female", "her": "female",
                  "it": "neuter", "its": "neuter", "they": "plural", "them": "plural", "their": "plural"}
DETERMINERS = {"the", "a", "an", "his", "her", "their", "its", "my", "our", "your"}
WORD = re.compile(r"[\w'-]+")
HOSTS = {
    "auxiliary": {"did", "does", "do", "has", "have", "had", "was", "were", "is", "are"},
    "copula": {"is", "are", "was", "were", "am"},
    "modal": {"can", "could", "should", "must", "may", "might", "will", "would"},
}
CONTRACTED = {"can": "ca", "will": "wo"}


def load(name):
    examples, report = read_jsonl(BUILTIN_SETS[name])
    assert report.n_skipped == 0 and report.n_records == len(examples)
    return examples


@pytest.fixture(scope="module")
def coref():
    return load("builtin-coref")


@pytest.fixture(scope="module")
def negation():
    return load("builtin-negation")


@pytest.fixture(scope="module")
def pairs(negation):
    by_pair = defaultdict(lambda: {"negated": [], "control": []})
    for example in negation:
        by_pair[example.meta["pair"]][example.role].append(example)
    return by_pair


def between(text, left, right):
    return len(WORD.findall(text[left:right]))


# ---------------------------------------------------------------------------------------------------------
# Both files
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUILTIN_SETS))
def test_files_read_cleanly_with_unique_ids_and_texts(name):
    examples = load(name)
    assert len({e.id for e in examples}) == len(examples)
    assert len({e.text for e in examples}) == len(examples)
    for line in BUILTIN_SETS[name].read_text(encoding="utf-8").splitlines():
        assert "id" in json.loads(line)          # ids are written, not filled in by the reader


def test_generator_is_deterministic_and_matches_committed_files(coref, negation):
    for built, committed, name in ((build_builtin.build_coreference(), coref, "builtin-coref"),
                                   (build_builtin.build_negation(), negation, "builtin-negation")):
        assert [e.to_dict() for e in built] == [e.to_dict() for e in committed]
        again = [e.to_dict() for e in (build_builtin.build_coreference() if name == "builtin-coref"
                                       else build_builtin.build_negation())]
        assert again == [e.to_dict() for e in built]
        expected = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in built)
        assert BUILTIN_SETS[name].read_text(encoding="utf-8") == expected


# ---------------------------------------------------------------------------------------------------------
# Coreference
# ---------------------------------------------------------------------------------------------------------

def test_coref_ids_relation_and_meta(coref):
    assert len(coref) >= 170
    for e in coref:
        assert re.fullmatch(r"coref-\d{4}", e.id)
        assert e.relation == "coreference"
        assert {"pronoun", "gender", "distance", "antecedent_role", "category", "group"} <= set(e.meta)
        assert e.meta["distance"] in ("near", "far")
        assert e.meta["antecedent_role"] in ("subject", "object")


def test_coref_coverage(coref):
    pronouns = Counter(e.meta["pronoun"] for e in coref)
    for pronoun in ("he", "she", "it", "they", "his", "her", "them", "their"):
        assert pronouns[pronoun] >= 10, pronoun
    for field, values in (("distance", ("near", "far")), ("antecedent_role", ("subject", "object"))):
        counts = Counter(e.meta[field] for e in coref)
        for value in values:
            assert counts[value] >= 40, (field, value, counts)
    categories = Counter(e.meta["category"] for e in coref)
    assert set(categories) == {"all-words", "gender", "animacy", "number", "possessive", "winograd"}
    assert sum(1 for e in coref if e.meta["category"] == "gender" and e.candidate_spans) >= 90
    # "all-words" rows are the only ones without candidates (a different task, never averaged with the rest)
    assert all((e.meta["category"] == "all-words") == (not e.candidate_spans) for e in coref)


def test_agreement_decides_every_two_candidate_row_but_winograd(coref):
    decided = Counter((e.meta["category"], e.meta.get("agreement_decides")) for e in coref)
    assert decided[("winograd", False)] == 50 and decided[("all-words", None)] == 68
    assert sum(n for (category, flag), n in decided.items() if flag) == 176      # the count


def test_coref_spans_point_at_pronoun_and_head_noun(coref):
    for e in coref:
        assert e.source == e.meta["pronoun"] and e.source in PRONOUN_GENDER, e.id
        assert PRONOUN_GENDER[e.source] == e.meta["gender"], e.id
        assert WORD.fullmatch(e.target) and e.target.lower() not in DETERMINERS, e.id
        assert e.target == e.meta["antecedent"], e.id
        assert e.target_span[1] <= e.source_span[0], e.id          # antecedent before pronoun
        for start, end in [e.source_span, e.target_span, *(e.candidate_spans or ())]:   # whole words
            assert (start == 0 or not e.text[start - 1].isalnum()) and not e.text[end].isalnum(), e.id
        if e.candidate_spans:
            assert len(e.candidate_spans) == 2 and e.target_span in e.candidate_spans
            for start, end in e.candidate_spans:
                assert e.text[start:end].lower() not in DETERMINERS


def test_coref_distance_label_matches_word_count(coref):
    for e in coref:
        n = between(e.text, e.target_span[1], e.source_span[0])
        assert (n >= build_builtin.FAR_WORDS) == (e.meta["distance"] == "far"), (e.id, n)


def test_non_winograd_candidates_are_told_apart_by_gender_or_number(coref):
    genders = build_builtin.head_genders()
    for e in coref:
        if not e.candidate_spans or e.meta["category"] == "winograd":
            continue
        words = [e.text[s:t] for s, t in e.candidate_spans]
        compatible = [w for w in words if genders[w] == e.meta["gender"]]
        assert compatible == [e.target], (e.id, words)


def test_winograd_pairs(coref):
    groups = defaultdict(list)
    for e in coref:
        if e.meta["category"] == "winograd":
            groups[e.meta["group"]].append(e)
    assert len(groups) >= 20
    for group, (a, b) in ((g, members) for g, members in groups.items() if len(members) == 2):
        assert a.candidate_spans and b.candidate_spans
        assert [a.text[s:t] for s, t in a.candidate_spans] == [b.text[s:t] for s, t in b.candidate_spans]
        assert a.target != b.target and a.source == b.source
        assert a.meta["flip_word"] != b.meta["flip_word"]
        assert a.meta["twin"] == b.meta["twin"] == group
        assert (a.meta["twin_role"], b.meta["twin_role"]) == ("clean", "corrupt")
        assert a.text.replace(a.meta["flip_word"], b.meta["flip_word"]) == b.text
        words_a, words_b = WORD.findall(a.text), WORD.findall(b.text)
        assert sum(x != y for x, y in zip(words_a, words_b)) == 1 and len(words_a) == len(words_b)
    assert all(len(members) == 2 for members in groups.values())


def test_groups_do_not_mix_categories(coref):
    category_of = {}
    for e in coref:
        assert category_of.setdefault(e.meta["group"], e.meta["category"]) == e.meta["category"]
    assert max(Counter(e.meta["group"] for e in coref).values()) <= 8


# ---------------------------------------------------------------------------------------------------------
# Negation
# ---------------------------------------------------------------------------------------------------------

def test_negation_ids_relation_and_meta(negation):
    for e in negation:
        assert e.relation == "negation"
        assert e.role in ("negated", "control")
        assert e.meta["cue"] in ("not", "n't")
        assert e.meta["host"] in HOSTS[e.meta["host_type"]], e.id
        assert e.meta["cue_form"] == e.meta["cue"] and isinstance(e.meta["next_is_predicate"], bool)
        assert e.meta["group"].startswith(("verb-", "pred-"))
        if e.role == "negated":
            assert re.fullmatch(r"neg-\d{4}", e.id) and e.meta["pair"] == e.id
        else:
            assert re.fullmatch(r"neg-\d{4}-ctl", e.id) and e.id == e.meta["pair"] + "-ctl"
            assert e.meta["adverb"] and e.meta["control_note"]


def test_negation_coverage(negation):
    negated = [e for e in negation if e.role == "negated"]
    assert len(negated) >= 160 and len(negation) == 2 * len(negated)
    cues = Counter(e.meta["cue"] for e in negated)
    assert cues["not"] >= 50 and cues["n't"] >= 50
    host_types = Counter(e.meta["host_type"] for e in negated)
    for host_type in HOSTS:
        assert host_types[host_type] >= 40, host_types
    verb_forms = {form for verb in build_builtin.VERBS for form in verb[:3]}
    assert sum(e.target not in verb_forms for e in negated) >= 40       # "is not happy", "was not a ..."
    assert len({e.target for e in negated}) >= 40
    assert len({e.meta["host"] for e in negated}) >= 15


def test_every_negated_has_exactly_one_control(pairs):
    for pair, members in pairs.items():
        assert len(members["negated"]) == 1 and len(members["control"]) == 1, pair


def test_negated_spans_cue_host_and_next_word(negation):
    for e in negation:
        if e.role != "negated":
            continue
        start, end = e.source_span
        cue, host = e.meta["cue"], e.meta["host"]
        assert e.source == cue, e.id
        if cue == "not":
            assert e.text[:start].endswith(" ") and e.text[:start - 1].split()[-1] == host, e.id
        else:
            written = CONTRACTED.get(host, host)
            assert e.text[start - len(written):start] == written, e.id
            assert start - len(written) == 0 or e.text[start - len(written) - 1] == " ", e.id
        assert len(re.findall(r"\bnot\b|n't", e.text)) == 1, e.id
        assert e.text[end] == " " and e.target_span[0] == end + 1, e.id
        assert WORD.fullmatch(e.target) and not e.text[e.target_span[1]].isalnum(), e.id


def test_control_is_the_same_sentence_with_the_cue_replaced(pairs):
    adverbs = {a for group in build_builtin.CONTROL_ADVERBS.values() for a in group}
    for pair, members in pairs.items():
        neg, ctl = members["negated"][0], members["control"][0]
        host, cue, adverb = neg.meta["host"], neg.meta["cue"], ctl.meta["adverb"]
        assert (ctl.meta["host"], ctl.meta["host_type"], ctl.meta["cue"]) == (host, neg.meta["host_type"], cue)
        assert adverb in adverbs and ctl.source == adverb, pair
        start, end = neg.source_span
        if cue == "not":
            expected = neg.text[:start] + adverb + neg.text[end:]
        else:      # "didn't X" -> "did ADVERB X", "can't X" -> "can ADVERB X", "won't X" -> "will ADVERB X"
            word_start = start - len(CONTRACTED.get(host, host))
            expected = neg.text[:word_start] + host + " " + adverb + neg.text[end:]
        assert ctl.text == expected, pair
        assert not re.search(r"\bnot\b|n't", ctl.text), pair
        # the target is the same word, at the position the shared tail of the sentence implies
        shift = len(ctl.text) - len(neg.text)
        assert ctl.target == neg.target, pair
        assert ctl.target_span == (neg.target_span[0] + shift, neg.target_span[1] + shift), pair
        assert ctl.target_span[0] == ctl.source_span[1] + 1, pair
        assert ctl.text[:ctl.source_span[0]].split()[-1] == host, pair


def test_next_is_predicate_marks_determiners_prepositions_and_adverbs(pairs):
    marked = {neg.target: neg.meta["next_is_predicate"] for neg in (m["negated"][0] for m in pairs.values())}
    verb_forms = {form for verb in build_builtin.VERBS for form in verb[:3]}
    for word, flag in marked.items():
        if word in verb_forms or word in ("happy", "hungry", "nurses"):
            assert flag, word
        if word in ("a", "at", "very", "fully", "always", "the", "good", "in", "on", "quite", "so"):
            assert not flag, word
    assert 0.2 < sum(not f for f in (m["negated"][0].meta["next_is_predicate"] for m in pairs.values())) / len(pairs) < 0.35


def test_controls_share_their_pair_s_group_and_strata(pairs):
    for members in pairs.values():
        neg, ctl = members["negated"][0], members["control"][0]
        for key in ("group", "cue_form", "next_is_predicate"):
            assert neg.meta[key] == ctl.meta[key]
