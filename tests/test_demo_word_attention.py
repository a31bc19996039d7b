"""`probing.demo.word_attention`: one head's attention from the source word to each word, as the word-shading
view shows it, equal to the scorer's numbers on the real model."""
import numpy as np


def test_word_attention_matches_the_scorer_on_the_real_model(minilm):
    from probing.demo import backend as demo
    from probing.demo.word_attention import sentence_word_attention
    text = "The uncle thanked Laura because she had helped him."
    analysis = demo.analyse(text, "coreference", "she", "Laura", None)
    shaded = sentence_word_attention(minilm, text, analysis.example.source_span)
    assert shaded.words == ["The", "uncle", "thanked", "Laura", "because", "she", "had", "helped", "him", "."]
    assert shaded.words[shaded.source] == "she" and shaded.values.shape == (6, 12, 10)
    # The shading of "Laura" is the number the heatmap and the table show for that head.
    np.testing.assert_allclose(shaded.values[:, :, 3], analysis.scores.attention, atol=1e-5)
    # Every head's attention from "she" goes to words or special tokens, nowhere else.
    np.testing.assert_allclose(shaded.values.sum(-1) + shaded.special, 1.0, atol=1e-5)
