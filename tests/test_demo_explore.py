"""`probing.demo.explore`, one typed sentence: text cleaning, the closed word lists of pronouns and cues, the words
a visitor names (by text, offsets or label), the example made from them, and its scores equal to the library's."""
import numpy as np
import pytest

from probing.demo import backend as demo
from probing.demo.explore import (MAX_TEXT_CHARS, InputError, clean_text, find_negation_cues, find_pronouns,
                                  make_example, resolve_word)
from probing.examples import Example, find_span
from probing.heads import score_examples

COREF = "The doctor called the nurse because she was late."
NEGATION = "The lawyer did not sign the contract."


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t ", "\x00\x01\x02", " \x00 \x7f "])
def test_empty_text_is_refused_in_words(text):
    with pytest.raises(InputError, match=r"^The sentence is empty: type a sentence or pick an example\.$"):
        clean_text(text)


def test_text_over_the_limit_is_refused_and_says_so():
    with pytest.raises(InputError, match=r"100,000 characters; the limit here is 5,000\. It was refused, not cut"):
        clean_text("a" * 100_000)
    assert clean_text("a" * MAX_TEXT_CHARS) == "a" * MAX_TEXT_CHARS


def test_control_characters_become_spaces_and_offsets_stay():
    text = "The doctor\x00 called the nurse because she\x07 was late."
    cleaned = clean_text(text)
    assert len(cleaned) == len(text) and "\x00" not in cleaned and "\x07" not in cleaned
    assert cleaned[find_span(text, "she")[0]:][:3] == "she"
    analysis = demo.analyse(text, "coreference", "she", "nurse", None)
    assert any("2 control characters were (such as NUL) replaced by spaces" in n for n in analysis.notes)


def test_pronouns_and_cues_come_from_a_closed_word_list():
    assert [w for w, _ in find_pronouns("John told Mary that he saw her and their dog, not its owner.")] == \
        ["he", "her", "their", "its"]
    assert [w for w, _ in find_negation_cues("I do not know; they weren't there. Nothing, knot.")] == ["not", "n't"]
    # One cue pattern for the loaders and the demo: the curly apostrophe counts, a word's inner "not" does not.
    assert find_negation_cues("They weren’t there, not once; cannot.") == [("n’t", (9, 12)), ("not", (20, 23))]
    sources, words = demo.word_choices(COREF, "coreference")
    assert sources == [("she (36:39)", "she (36:39)")]
    assert ("nurse (22:27)", "nurse (22:27)") in words and all("." not in label for label, _ in words)
    assert demo.word_choices("x" * (MAX_TEXT_CHARS + 1), "coreference") == ([], [])


@pytest.mark.parametrize("word, message", [
    ("surgeon", r"The source word 'surgeon' does not occur in the sentence\."),
    ("the", r"The source word 'the' occurs 2 times \(0:3, 18:21\); give it as start:end offsets\."),
    ("40:99", r"The source span 40:99 is out of range or reversed for a text of 49 characters\."),
    ("39:36", r"The source span 39:36 is out of range or reversed"),
    ("-1:3", r"The source span -1:3 is out of range"),
    ("10:11", r"The source span 10:11 covers only white space\."),
    ("he (36:39)", r"The source 'he' is not at 36:39 in this sentence \(that is 'she'\); the text changed"),
    ("", r"No source word was given\."),
])
def test_bad_words_and_spans_get_messages(word, message):
    with pytest.raises(InputError, match=message):
        resolve_word(COREF, word, "source")


def test_words_resolve_by_text_offsets_or_label():
    assert resolve_word(COREF, "She", "source") == (36, 39)
    assert resolve_word(COREF, "36:39", "source") == (36, 39) == resolve_word(COREF, "she (36:39)", "source")


def test_make_example_checks_relation_and_overlap():
    with pytest.raises(InputError, match=r"Unknown relation 'syntax': use 'coreference' or 'negation'\."):
        make_example(COREF, "syntax", "she", "nurse")
    with pytest.raises(InputError, match=r"overlap"):
        make_example(COREF, "coreference", "she", "36:39")
    with pytest.raises(InputError, match=r"No antecedent was given: pick the word the pronoun refers to"):
        make_example(COREF, "coreference", "she", " ")
    with pytest.raises(InputError, match=r"Pick the pronoun: she \(36:39\)"):
        make_example(COREF, "coreference", "", "nurse")
    negation = make_example("They weren't barking.", "negation", "", "")
    assert (negation.source, negation.target) == ("n't", "barking")


@pytest.mark.parametrize("text, relation, source, target", [
    (COREF, "coreference", "she", "nurse"),
    (NEGATION, "negation", "not", "sign"),
    ("The dogs weren't barking at night.", "negation", "n't", "barking"),
])
def test_sentence_scores_equal_score_examples(minilm, text, relation, source, target):
    source_span = (text.index("n't"), text.index("n't") + 3) if source == "n't" else find_span(text, source)
    example = Example(text=text, relation=relation, source_span=source_span, target_span=find_span(text, target))
    # The sentence path reads the full patterns of its one forward pass: the scorer's eager path, exactly
    # (the fused path agrees within float32 rounding; tests/test_attention.py checks that).
    library, skipped = score_examples(minilm, [example], attention="eager")
    assert not skipped
    mine = demo.analyse(text, relation, source, target, None).scores     # the demo's own path, default model
    np.testing.assert_array_equal(mine.attention, library.attention[0])
    np.testing.assert_array_equal(mine.is_argmax, library.is_argmax[0])
    rows = mine.heads()
    assert [(r["layer"], r["head"]) for r in rows] == [(l, h) for l in range(6) for h in range(12)]
    for row in rows:
        assert abs(row["attention"] - float(library.attention[0, row["layer"], row["head"]])) <= 5e-7
    assert library.attention[0].std() > 0.01   # the numbers differ between heads: the comparison means something


def test_word_and_offsets_parse_without_backtracking():
    from probing.demo.explore import parse_labelled, parse_offsets, resolve_word
    assert parse_labelled("she (36:39)", "source") == ("she", (36, 39))
    assert parse_labelled("a" + " " * 50_000 + "a", "source") is None     # linear: returns at once
    assert parse_offsets(" 3 : 7 ", "x") == (3, 7) and parse_offsets("3:x", "x") is None
    assert parse_offsets("²:3", "x") is None                              # a Unicode digit is not a number
    assert resolve_word(COREF, "she (36:39)", "source") == (36, 39)
