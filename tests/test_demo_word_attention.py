"""`probing.demo.word_attention`: one head's attention from the source word to each word, as the word-shading
view shows it, equal to the scorer's numbers on the real model."""
import numpy as np
import pytest


def test_word_attention_matches_the_scorer_on_the_real_model():
    from probing.demo import backend as demo
    text = "The uncle thanked Laura because she had helped him."
    analysis = demo.analyse(text, "coreference", "she", "Laura", None)      # the default model, MiniLM
    shaded = analysis.shading                          # the word-shading view's numbers, as the demo draws them
    assert shaded.words == ["The", "uncle", "thanked", "Laura", "because", "she", "had", "helped", "him", "."]
    assert shaded.words[shaded.source] == "she" and shaded.values.shape == (6, 12, 10)
    # The shading of "Laura" is the number the heatmap and the table show for that head.
    np.testing.assert_allclose(shaded.values[:, :, 3], analysis.scores.attention, atol=1e-5)
    # Every head's attention from "she" goes to words or special tokens, nowhere else.
    np.testing.assert_allclose(shaded.values.sum(-1) + shaded.special, 1.0, atol=1e-5)


def test_the_source_is_named_as_a_reader_sees_it():
    """"didn't" is three pieces ("didn", "'", "t"); the title names the cue "n't" and its word, never "'"."""
    from probing.demo.word_attention import source_name, word_attention
    text = "The lawyer didn't sign."
    assert source_name(text, (14, 17)) == "\u201cn't\u201d (in \u201cdidn't\u201d)"
    assert source_name(text, (11, 17)) == "\u201cdidn't\u201d"
    assert source_name("She said it.", (0, 3)) == "\u201cShe\u201d"
    offsets = [(0, 0), (0, 3), (4, 10), (11, 15), (15, 16), (16, 17), (18, 22), (22, 23), (0, 0)]
    word_ids = [None, 0, 1, 2, 3, 4, 5, 6, None]
    attention = np.full((1, 1, 9, 9), 1 / 9)
    shaded = word_attention(text, offsets, word_ids, attention, (14, 17))
    assert shaded.words[shaded.source] == "n't" and shaded.source_name == "\u201cn't\u201d (in \u201cdidn't\u201d)"


def test_the_cue_is_one_unit_read_by_the_scorers_rule():
    """The cue's pieces "'" and "t" are one drawn unit "n't" (after "did"), read from the last piece by default,
    so no word "t" draws attention and "sign" gets the number the scorer gives it."""
    from probing.demo.word_attention import word_attention
    text = "The lawyer didn't sign."
    offsets = [(0, 0), (0, 3), (4, 10), (11, 15), (15, 16), (16, 17), (18, 22), (22, 23), (0, 0)]
    word_ids = [None, 0, 1, 2, 3, 4, 5, 6, None]
    attention = np.zeros((1, 1, 9, 9))
    attention[0, 0, 4, 6] = 0.2           # from "'" to "sign"
    attention[0, 0, 4, 5] = 0.8           # from "'" to "t"
    attention[0, 0, 5, 6] = 0.9           # from "t" to "sign"
    attention[0, 0, 5, 0] = 0.1           # from "t" to [CLS]
    last = word_attention(text, offsets, word_ids, attention, (14, 17))
    assert last.words == ["The", "lawyer", "did", "n't", "sign", "."] and last.source == 3
    assert [text[s:e] for s, e in last.spans] == last.words
    assert last.values[0, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 0.9, 0.0] and last.special[0, 0] == 0.1
    assert last.reading == "from its last piece \u201ct\u201d"
    mean = word_attention(text, offsets, word_ids, attention, (14, 17), source_pieces="mean")
    np.testing.assert_allclose(mean.values[0, 0], [0, 0, 0, 0.4, 0.55, 0])
    assert mean.reading.startswith("averaged over its pieces")
    one_piece = word_attention(text, offsets, word_ids, attention, (18, 22))
    assert one_piece.words[one_piece.source] == "sign" and one_piece.reading == ""
    with pytest.raises(ValueError, match="source_pieces"):
        word_attention(text, offsets, word_ids, attention, (14, 17), source_pieces="first")


def test_the_negation_shading_equals_the_table_for_the_gallery_sentence():
    """The gallery's "The lawyer didn't sign the contract.": every head's shade of "sign" is its table number."""
    from probing.demo import backend as demo
    analysis = demo.analyse("The lawyer didn't sign the contract.", "negation", "n't", "sign", None)
    shaded = analysis.shading
    assert shaded.words[shaded.source] == "n't" and "t" not in shaded.words and "'" not in shaded.words
    np.testing.assert_allclose(shaded.values[:, :, shaded.words.index("sign")], analysis.scores.attention, atol=1e-6)
