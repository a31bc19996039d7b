"""The antecedent candidates the demo offers for a typed sentence (hand-made cases with known answers)."""
from probing.demo.candidates import antecedent_candidates
from probing.demo.explore import find_pronouns


def words(text, source=None):
    return [(c.word, c.kind) for c in antecedent_candidates(text, source)]


def test_nouns_after_determiners_and_names():
    assert words("The doctor called the nurse because she was late.") == [("doctor", "noun"), ("nurse", "noun")]
    assert words("The uncle thanked Laura because she had helped him.") == [("uncle", "noun"), ("Laura", "name")]
    assert words("When John met Anna at the station, he smiled.") == [
        ("John", "name"), ("Anna", "name"), ("station", "noun")]


def test_adjectives_are_skipped_and_agent_nouns_head_a_compound():
    assert words("Mary Smith told the old bank manager that he was wrong.") == [
        ("Mary Smith", "name"), ("manager", "noun")]
    assert words("A famous young singer said she would come.") == [("singer", "noun")]


def test_pronouns_function_words_and_sentence_adverbs_are_never_offered():
    text = "Yesterday she said that they would come. Recently, he left. Hello, it is me."
    assert words(text) == []
    assert words("Then Emily said it.") == [("Emily", "name")]   # -ly ends a name mid-sentence


def test_spans_point_at_the_words_and_the_source_is_left_out():
    text = "The uncle thanked Laura because she had helped him."
    for candidate in antecedent_candidates(text):
        assert text[candidate.span[0]:candidate.span[1]] == candidate.word
    she = find_pronouns(text)[0][1]
    laura = antecedent_candidates(text)[1].span
    assert [c.word for c in antecedent_candidates(text, laura)] == ["uncle"]
    assert [c.word for c in antecedent_candidates(text, she)] == ["uncle", "Laura"]


def test_empty_and_odd_text_give_no_candidates():
    assert antecedent_candidates("") == []
    assert antecedent_candidates("the") == []
    assert antecedent_candidates("<img src=x> the") == []
    assert words("the 42 cats") == []     # a number is not a noun here; "cats" is not after a determiner
