"""probing.patching.pairs: pairs from rows and twins, skipped with reasons, the one minimal-pair check (also the
demo's), Winograd twins that swap another word than the pronoun, and twin suggestions."""

import numpy as np
import pytest

from probing import patching
from probing.examples import Example
from tests.patching_cases import CLEAN, CORRUPT, WINOGRAD, _neg, _twin


def test_twin_suggestions_swap_what_the_sentence_is_about():
    """The negation cue first (issue 23: "She" must not win over "not"), else the first pronoun."""
    assert patching.suggest_twin("She did not like the soup.") == ("She did really like the soup.", "not -> really")
    assert patching.suggest_twin(CLEAN) == (CORRUPT, "not -> really")
    assert patching.suggest_twin("He said she left.") == ("She said she left.", "He -> She")
    assert patching.suggest_twin("Not him, she said.") == ("Really him, she said.", "Not -> Really")
    assert patching.suggest_twin("Nothing to swap here.") is None


def test_pairs_skipped_with_reasons(minilm):
    examples = [_neg(CLEAN, "not", "a", "negated"), _neg(CORRUPT, "really", "a", "control"),
                _neg("The workers didn't open it.", "n't", "b", "negated"),
                _neg("The workers did actually open it.", "actually", "b", "control"),
                _neg("The cat did not eat.", "not", "c", "negated")]
    pairs = patching.collect_pairs(examples)
    assert [p.id for p in pairs.pairs] == ["a", "b"] and pairs.skipped[0][0] == "c"
    ok, reason, info = patching.usable(minilm, pairs.pairs[1])
    assert not ok and "contraction" in reason
    ok, _, info = patching.usable(minilm, pairs.pairs[0])
    assert ok and len(info["source"]) == 1 and info["target"]
    twins = [Example(text="He said it.", relation="coreference", source_span=(0, 2), target_span=(8, 10), id="t1",
                     meta={"twin": "w", "twin_role": "clean"}),
             Example(text="She said it.", relation="coreference", source_span=(0, 3), target_span=(9, 11), id="t2",
                     meta={"twin": "w", "twin_role": "corrupt"})]
    assert [(p.clean, p.corrupt) for p in patching.collect_pairs(twins).pairs] == [("He said it.", "She said it.")]
    with pytest.raises(ValueError, match="The clean text has 10 pieces and the corrupt text 9"):
        patching.patch_pair(minilm, "The workers didn't open it.", "The workers did actually open it.")


def test_every_row_is_paired_or_counted_with_its_reason():
    """One pair per item: the "not" row (its n't twin counted), the last control (the others counted); an item
    without a control is skipped, and its row counted with the skip; used + counted unused = all rows."""
    examples = [_neg("The cat didn't eat.", "n't", "a", "negated", cue_form="n't"),
                _neg(CLEAN, "not", "a", "negated", cue_form="not"),
                _neg("The cat did also eat.", "also", "a", "control"), _neg(CORRUPT, "really", "a", "control"),
                _neg("The cat did not run.", "not", "c", "negated", cue_form="not"),
                Example(text="No pair here.", relation="negation", source_span=(0, 2), target_span=(3, 7), id="x")]
    pairs = patching.collect_pairs(examples)
    assert [(p.clean, p.corrupt) for p in pairs.pairs] == [(CLEAN, CORRUPT)]
    assert pairs.pairs[0].rows == ("a-negated", "a-control") and pairs.skipped[0][0] == "c"
    rows = patching.pairs.row_accounting(pairs, pairs.pairs)
    assert rows["rows"] == 6 and rows["patched"] == 2
    assert rows["not_patched"] == {patching.pairs.UNUSED_CONTRACTION: 1, patching.pairs.UNUSED_CONTROL: 1,
                                   patching.pairs.UNUSED_UNPAIRED: 1,
                                   "in a pair that was skipped: incomplete pair: has only negated": 1}
    # a pair dropped later (not usable) moves its two rows to the skipped count, and the sum still holds
    later = pairs.with_pairs([], pairs.skipped + [("a", "different number of pieces")])
    assert patching.pairs.row_accounting(later, [])["not_patched"][
        "in a pair that was skipped: different number of pieces (the swapped words split differently)"] == 2


@pytest.mark.slow
def test_winograd_twins_swap_a_word_other_than_the_pronoun(minilm):
    rows = [row for i, (clean, a, corrupt, b) in enumerate(WINOGRAD) for row in
            (_twin(clean, "it" if " it " in clean else "he", a, f"w{i}", "clean"),
             _twin(corrupt, "it" if " it " in corrupt else "he", b, f"w{i}", "corrupt"))]
    pairs = patching.collect_pairs(rows)
    ok, reason, info = patching.usable(minilm, pairs.pairs[0])
    assert ok, reason
    tokens = minilm.tokenizer.convert_ids_to_tokens(info["ids"][0])
    assert [tokens[i] for i in info["swapped"]] == ["wide"] and [tokens[i] for i in info["source"]] == ["it"]
    assert [tokens[i] for i in info["target"]] == ["box"]
    two_words = patching.Pair(id="x", relation="coreference", clean="The cat sat here.", corrupt="A dog sat here.",
                              clean_source=(8, 11), corrupt_source=(6, 9))
    assert patching.usable(minilm, two_words)[1] == "the texts differ in more than one word"
    # the pair's row patches read from the pronoun, not from the swapped adjective
    text = WINOGRAD[0][0]
    one = patching.patch_pair(minilm, text, WINOGRAD[0][2], source=(text.index(" it ") + 1, text.index(" it ") + 3),
                              target=(4, 7), kinds=("noising", "row_noising"))
    assert [one.tokens[i] for i in one.source] == ["it"] and [one.tokens[i] for i in one.swapped] == ["wide"]
    np.testing.assert_allclose(one.attention, one.source_pattern[:, :, one.target].sum(-1))
    with pytest.raises(ValueError, match="target must be"):
        patching.patch_pair(minilm, text, WINOGRAD[0][2], target=(5, 500))


def test_minimal_pair_is_one_check_with_worded_reasons(minilm):
    pieces = patching.minimal_pair(minilm, CLEAN, CORRUPT)
    assert [minilm.tokenizer.convert_ids_to_tokens(pieces.clean_ids)[i] for i in pieces.swapped] == ["not"]
    cases = [(CLEAN, "The lawyer did unhappily sign the contract.", "lengths", "has 10 pieces and the"),
             (CLEAN, CLEAN, "identical", "are the same to the model"),
             (CLEAN, "The judge did really sign the contract.", "words", "differ in more than one word")]
    for clean, corrupt, kind, words in cases:
        with pytest.raises(patching.NotAMinimalPair, match=words) as err:
            patching.minimal_pair(minilm, clean, corrupt, names=("sentence", "twin"))
        assert err.value.kind == kind
    # the demo's tab words the same check
    from probing.demo import patch_view
    from probing.demo.guard import DemoError
    with pytest.raises(DemoError, match="The sentence and the twin differ in more than one word"):
        patch_view.minimal_pair(minilm, CLEAN, "The judge did really sign the contract.", 10)


def test_a_piece_carrying_its_space_is_read_as_its_own_word():
    """SentencePiece tokenizers (Gemma) give " better" the offsets of the space before it: the twin control's
    special word is "better", not "lot better" (which made every Gemma twin control unusable)."""
    from probing.patching.pairs import _word_at
    text = "Anna did a lot better than Lucy."
    start = text.index(" better")
    assert _word_at(text, start, start + len(" better")) == (start + 1, start + len(" better"))
    inside = text.index("tter")                       # a piece inside a word still grows to the whole word
    assert _word_at(text, inside, inside + 4) == (start + 1, start + len(" better"))


def test_every_written_twin_control_swaps_one_word_for_another():
    controls = patching.load_twin_controls()
    assert len(controls) == 88
    assert all(word.isalpha() and other.isalpha() and word.lower() != other.lower()
               for word, other in controls.values())


def test_a_contracted_cue_is_written_out_so_an_adverb_can_swap_it():
    from probing.patching.pairs import expand_contraction
    assert expand_contraction("With proper equipment, scuba-diving isn't very") == \
        "With proper equipment, scuba-diving is not very"
    assert expand_contraction("I can't be") == "I can not be" and expand_contraction("It won't go") == "It will not go"
    assert expand_contraction("They don’t eat") == "They do not eat"
    assert expand_contraction("A robin is not a") is None
