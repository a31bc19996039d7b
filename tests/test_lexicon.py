"""`probing.lexicon`: the shared word lists and word rules (pronouns, articles and determiners, the negation cue,
word types), and that the modules which use them read them from here."""
import pytest

from probing import lexicon
from probing.lexicon import DETERMINERS, NEGATION_CUE, PERSON_PRONOUNS, PRONOUNS, strip_article, word_type


@pytest.mark.parametrize("phrase, stripped", [
    ("The doctor", "doctor"), ("a  big   dog", "big dog"), ("An", "An"), ("the", "the"),
    ("Theresa May", "Theresa May"), ("their car", "their car"),
])
def test_strip_article_drops_a_leading_article_only(phrase, stripped):
    assert strip_article(phrase) == stripped


def test_word_type_is_the_stripped_phrase_lowercased():
    assert word_type("The Doctor") == "doctor" and word_type("An") == "an" and word_type(" The  old man ") == "old man"


@pytest.mark.parametrize("text, cues", [
    ("The lawyer did not sign.", ["not"]),
    ("She hasn't left and won’t stay.", ["n't", "n’t"]),
    ("Nothing is knotted; notably, cannot", []),        # never inside a word ("cannot" is one word)
    ("NOT now, DON'T", ["NOT", "N'T"]),
])
def test_the_negation_cue_is_not_or_the_nt_of_a_contraction(text, cues):
    assert [m.group() for m in NEGATION_CUE.finditer(text)] == cues


def test_word_lists_nest_as_their_names_say():
    assert PERSON_PRONOUNS < PRONOUNS and {"it", "its"} <= PRONOUNS - PERSON_PRONOUNS
    assert set(lexicon.ARTICLES) < DETERMINERS and "his" in DETERMINERS


def test_the_loaders_features_and_demo_read_the_lists_from_here():
    from probing.demo import candidates, explore
    from probing.examples import loaders
    from probing import features
    assert loaders.NEGATION_CUE is explore.NEGATION_CUE is NEGATION_CUE
    assert explore.PRONOUNS is candidates.PRONOUNS is PRONOUNS and candidates.DETERMINERS is DETERMINERS
    assert features.word_type is word_type and loaders.strip_article is strip_article
