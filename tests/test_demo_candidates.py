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


def test_adjectives_and_adverbs_with_no_noun_after_them_are_not_offered():
    assert words("He paid the best. She was a really.") == []
    assert words("They sold the red tractor.") == [("tractor", "noun")]


def test_the_offer_is_ranked_nearest_before_the_pronoun_and_bounded():
    from probing.demo.candidates import MAX_OFFERED, default_antecedent, offered, ranked
    text = "The doctor called the nurse because she was late for the meeting."
    she = find_pronouns(text)[0][1]
    assert [c.word for c in ranked(text, she)] == ["nurse", "doctor", "meeting"]
    assert default_antecedent(text, she).word == "nurse"
    assert default_antecedent("She called the doctor.", (0, 3)).word == "doctor"    # none before: nearest after
    assert default_antecedent("She left.", (0, 3)) is None
    paragraph = " ".join(["The farmer sold the tractor to a neighbour at the market."] * 30) + " Then she left."
    she = find_pronouns(paragraph)[0][1]
    shown = offered(paragraph, she)
    assert len(antecedent_candidates(paragraph, she)) == 120 and len(shown) == MAX_OFFERED
    assert shown == sorted(shown, key=lambda c: c.span) and shown[-1].word == "market"
    assert all(c.span[0] > len(paragraph) - 130 for c in shown)        # the last two sentences' nouns


def test_enter_on_a_typed_sentence_has_a_target_preselected():
    """The page's choices for a typed sentence: the first pronoun, and its nearest noun before it as target;
    with no target at all (Enter before the choices arrived) the analysis uses that noun and says so."""
    import app
    text = "The doctor called the nurse because she was late."
    source, target, candidates = app.coreference_choices(text, None, None)
    assert source["value"] == "she (36:39)" and target["value"] == "nurse (22:27)" == candidates["value"]
    assert [v for _, v in candidates["choices"]] == ["doctor (4:10)", "nurse (22:27)"]
    assert app.coreference_choices(text, "she (36:39)", "doctor (4:10)")[1]["value"] == "doctor (4:10)"
    chosen, note = app._target_or_default("coreference", text, "she (36:39)", "")
    assert chosen == "nurse (22:27)" and "nearest noun or name before the pronoun" in note
    assert app._target_or_default("negation", "He did not go.", "not", "") == ("", "")
    assert app._target_or_default("coreference", "She left.", "", None) == (None, "")
