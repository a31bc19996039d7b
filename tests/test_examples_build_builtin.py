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


def head_genders() -> dict[str, str]:
    """Gender/number of every head noun in the generator's two-, plural- and possessive-candidate frames
    (read from its own word lists, so a noun added there is checked here)."""
    table = {}
    for phrases, gender in ((build_builtin.MEN, "male"), (build_builtin.WOMEN, "female"),
                            (build_builtin.GROUPS, "plural")):
        for phrase in phrases:
            table[phrase.split()[-1]] = gender
    for _, _, _, nouns in build_builtin.ANIMACY_FRAMES:
        for phrase in nouns:
            table[phrase.split()[-1]] = "neuter"
    for *_, nouns in build_builtin.POSSESSIVE_FRAMES:
        for phrase in nouns or ():
            table[phrase.split()[-1]] = "plural"
    return table


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
    assert decided[("winograd", False)] == 50 and decided[("all-words", None)] == 120
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
    genders = head_genders()
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
        assert e.meta["host"] in HOSTS[e.meta["host_type"]], e.id
        assert isinstance(e.meta["next_is_predicate"], bool)
        assert re.fullmatch(r"f\d{2}", e.meta["group"]) and e.meta["frame"].endswith(" _")
        assert e.meta["predicate"].startswith(("verb-", "pred-")) and e.meta["split"] in ("explore", "confirm")
        assert re.fullmatch(r"neg-f\d{2}-p\d", e.meta["pair"]) and e.meta["pair"].startswith(f"neg-{e.meta['group']}-")
        if e.role == "negated":
            assert e.meta["cue"] in ("not", "n't") and e.meta["cue_form"] == e.meta["cue"]
            assert e.id == e.meta["pair"] + {"not": "-not", "n't": "-nt"}[e.meta["cue"]]
        else:
            assert e.id == f"{e.meta['pair']}-ctl-{e.meta['adverb']}" and e.meta["control_note"]
            assert "cue" not in e.meta


def test_negation_is_a_crossed_design_with_enough_frames(negation, pairs):
    negated = [e for e in negation if e.role == "negated"]
    frames = defaultdict(set)
    for e in negated:
        frames[e.meta["group"]].add(e.meta["predicate"])
    assert len(frames) >= 40 and all(len(p) >= 3 for p in frames.values())
    # crossed, not nested: most predicates occur in several frames
    frames_of = defaultdict(set)
    for e in negated:
        frames_of[e.meta["predicate"]].add(e.meta["group"])
    assert sum(len(f) >= 2 for f in frames_of.values()) >= 0.8 * len(frames_of)
    host_types = Counter(e.meta["host_type"] for e in negated)
    for host_type in HOSTS:
        assert host_types[host_type] >= 40, host_types
    assert len({e.meta["host"] for e in negated}) >= 15
    # both forms wherever English has both; a frame's half is fixed
    for pair, members in pairs.items():
        host = members["negated"][0].meta["host"]
        forms = sorted(e.meta["cue"] for e in members["negated"])
        expected = (["not"] if host in build_builtin.NO_CONTRACTION else ["n't"] if host in build_builtin.ONLY_CONTRACTION
                    else ["n't", "not"])
        assert forms == expected, pair
        assert len({e.meta["split"] for e in members["negated"] + members["control"]}) == 1
    splits = Counter(e.meta["split"] for e in negated)
    assert abs(splits["explore"] - splits["confirm"]) <= 0.1 * len(negated)


def test_every_item_has_every_fitting_adverb_as_a_control(pairs):
    for pair, members in pairs.items():
        neg = members["negated"][0]
        group = build_builtin.ADVERB_GROUP.get(neg.meta["host"], "modal" if neg.meta["host_type"] == "modal" else "be")
        adverbs = [c.meta["adverb"] for c in members["control"]]
        assert adverbs == build_builtin.CONTROL_ADVERBS[group] and len(adverbs) >= 3, pair


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


def test_each_control_is_a_negated_sentence_with_the_cue_replaced(pairs):
    for pair, members in pairs.items():
        for neg in members["negated"]:
            host, cue = neg.meta["host"], neg.meta["cue"]
            for ctl in members["control"]:
                adverb = ctl.meta["adverb"]
                assert (ctl.meta["host"], ctl.meta["host_type"]) == (host, neg.meta["host_type"])
                assert ctl.source == adverb, pair
                start, end = neg.source_span
                if cue == "not":
                    expected = neg.text[:start] + adverb + neg.text[end:]
                else:      # "didn't X" -> "did ADVERB X", "can't X" -> "can ADVERB X", "won't X" -> "will ADVERB X"
                    word_start = start - len(CONTRACTED.get(host, host))
                    expected = neg.text[:word_start] + host + " " + adverb + neg.text[end:]
                assert ctl.text == expected, pair
                assert not re.search(r"\bnot\b|n't", ctl.text), pair
                shift = len(ctl.text) - len(neg.text)
                assert ctl.target == neg.target, pair
                assert ctl.target_span == (neg.target_span[0] + shift, neg.target_span[1] + shift), pair
                assert ctl.target_span[0] == ctl.source_span[1] + 1, pair


def test_next_is_predicate_marks_determiners_prepositions_and_adverbs(pairs):
    marked = {neg.target: neg.meta["next_is_predicate"] for m in pairs.values() for neg in m["negated"]}
    verb_forms = {form for verb in build_builtin.VERBS for form in verb[:3]}
    for word, flag in marked.items():
        if word in verb_forms or word in ("happy", "hungry", "doctors"):
            assert flag, word
        if word in ("a", "at", "very", "in", "on", "good"):
            assert not flag, word
    assert any(not flag for flag in marked.values())


def test_controls_share_their_item_s_frame_predicate_and_strata(pairs):
    for members in pairs.values():
        for neg in members["negated"]:
            for ctl in members["control"]:
                for key in ("group", "frame", "predicate", "next_is_predicate", "split", "pair"):
                    assert neg.meta[key] == ctl.meta[key]


def test_coref_all_words_task_has_30_templates_and_every_category_is_split(coref):
    all_words = {e.meta["group"] for e in coref if e.meta["category"] == "all-words"}
    assert len(all_words) >= 30
    halves = Counter((e.meta["category"], e.meta["split"]) for e in coref)
    for category in {e.meta["category"] for e in coref}:
        assert halves[(category, "explore")] and halves[(category, "confirm")], category
    split_of = {}
    for e in coref:      # a template (and a Winograd pair) is never split across the halves
        assert split_of.setdefault(e.meta["group"], e.meta["split"]) == e.meta["split"]


def test_negation_halves_share_no_host_word_and_no_predicate_and_each_has_30_frames(negation):
    """The confirmation half is held out by host word and by predicate (not by subject alone)."""
    negated = [e for e in negation if e.role == "negated"]
    halves = {split: [e for e in negated if e.meta["split"] == split] for split in ("explore", "confirm")}
    for key in ("host", "predicate"):
        explore, confirm = ({e.meta[key] for e in halves[s]} for s in ("explore", "confirm"))
        assert explore and confirm and not explore & confirm, key
    for split, members in halves.items():
        assert len({e.meta["group"] for e in members}) >= 30, split
        assert {e.meta["host_type"] for e in members} == set(HOSTS), split
    with pytest.raises(ValueError, match="in neither half"):
        build_builtin.split_of_host("ought")


def test_no_control_reads_as_odd_english(negation):
    texts = [e.text for e in negation if e.role == "control"]
    for odd in (" did also ", " does also ", " do also ", " must probably ", " can probably "):
        assert not any(odd in f" {t}" for t in texts), odd


def test_clitic_controls_split_like_nt_and_match_the_committed_file(negation):
    """builtin-negation-clitics: each "n't" sentence of a host with an affirmative clitic, paired with the same
    sentence where host + "n't" became the clitic on the subject ("The pupils wouldn't visit" -> "The pupils'd
    visit"); the source is the clitic, the target the same next word; >= 30 frames."""
    built = build_builtin.build_negation_clitics()
    expected = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in built)
    assert BUILTIN_SETS["builtin-negation-clitics"].read_text(encoding="utf-8") == expected
    main_nt = {e.id: e for e in negation if e.role == "negated" and e.meta["cue"] == "n't"}
    by_pair = defaultdict(dict)
    for e in built:
        by_pair[e.meta["pair"]][e.role] = e
    assert len({e.meta["group"] for e in built}) >= 30
    for pair, members in by_pair.items():
        neg, ctl = members["negated"], members["control"]
        assert neg.to_dict() == main_nt[neg.id].to_dict()          # the same "n't" sentence as the main set
        host, clitic = neg.meta["host"], build_builtin.CLITICS[neg.meta["host"]]
        assert ctl.meta["control_set"] == "clitic" and ctl.meta["clitic"] == clitic == ctl.source
        subject = neg.meta["frame"][: -len(f" {host} _")]
        assert ctl.text == subject + clitic + neg.text[neg.source_span[1]:], pair
        assert ctl.target == neg.target and ctl.target_span[0] == ctl.source_span[1] + 1
        for key in ("group", "predicate", "split", "host"):
            assert ctl.meta[key] == neg.meta[key]
    assert {e.meta["host"] for e in built} == set(build_builtin.CLITICS)


def test_the_negated_word_is_the_predicate_s_head_for_negated_and_control_rows_alike(negation, pairs):
    from probing.examples import Example
    words = Counter()
    for e in negation:
        span = build_builtin.negated_word_span(e)
        word = e.text[slice(*span)]
        assert span[0] > e.source_span[1], e.id            # after the cue (or the control's adverb)
        if e.meta["next_is_predicate"]:
            assert tuple(span) == tuple(e.target_span), e.id  # the next word is the predicate's head
        else:
            assert word in ("home", "tall", "cook", "cooks", "train", "office", "doctor"), (e.id, word)
            words[word] += 1
    assert set(words) == {"home", "tall", "cooks", "train", "office", "doctor"}
    for members in pairs.values():                      # an item's rows all point at the same word
        targets = {e.text[slice(*build_builtin.negated_word_span(e))] for e in members["negated"] + members["control"]}
        assert len(targets) == 1, targets
    # hand-made rows where the answer is known
    row = Example("Tom was not in the big office.", "negation", (8, 11), (12, 14), id="x",
                  meta={"predicate": "pred-in the office"})
    assert row.text[slice(*build_builtin.negated_word_span(row))] == "office"
    row = Example("Tom did not sign it.", "negation", (8, 11), (12, 16), id="y", meta={"predicate": "verb-sign"})
    assert row.text[slice(*build_builtin.negated_word_span(row))] == "sign"
    with pytest.raises(ValueError, match="neither verb-"):
        build_builtin.negated_word_span(Example("Tom did not go home.", "negation", (8, 11), (12, 14), id="z",
                                                meta={"predicate": "odd"}))
