"""Alignment arithmetic on hand-made tensors whose answers are known."""
import numpy as np
import pytest
import torch

from probing.alignment import (AlignmentError, adjacent_word_attention, drop_special_columns, make_layout,
                               mention_pieces, span_pieces, span_words, unit_attention, word_index)

# "[CLS] the law ##yer did not sign [SEP]": 8 pieces, words the=0, lawyer=1 (2 pieces), did=2, not=3, sign=4
TEXT = "the lawyer did not sign"
OFFSETS = [(0, 0), (0, 3), (4, 7), (7, 10), (11, 14), (15, 18), (19, 23), (0, 0)]
WORD_IDS = [None, 0, 1, 1, 2, 3, 4, None]


def test_word_index_marks_specials_and_groups_pieces():
    assert word_index(WORD_IDS, OFFSETS, TEXT).tolist() == [-1, 0, 1, 1, 2, 3, 4, -1]


def test_span_selects_the_words_of_its_pieces():
    words = word_index(WORD_IDS, OFFSETS, TEXT)
    assert span_words((5, 6), OFFSETS, words) == [1]          # one character inside "lawyer"
    assert span_words((11, 18), OFFSETS, words) == [2, 3]     # "did not"
    assert span_words((100, 101), OFFSETS, words) == []


def test_whitespace_fallback_when_tokenizer_reports_one_word():
    offsets = [(0, 3), (3, 7), (7, 10), (10, 15)]   # "the", " law", "yer", " sign"
    words = word_index([0, 0, 0, 0], offsets, "the lawyer sign")
    assert words.tolist() == [0, 1, 1, 2]


def test_layout_all_words_mode_and_positional_baselines():
    layout = make_layout(TEXT, (15, 18), (19, 23), None, OFFSETS, WORD_IDS)
    assert layout.source.tolist() == [5]
    assert [u.tolist() for u in layout.units] == [[6], [1], [2, 3], [4]]   # target first, then other words
    assert layout.target == 0 and layout.nearest == 0 and layout.first == 1


def test_layout_with_candidates():
    layout = make_layout(TEXT, (15, 18), (4, 10), [(0, 3), (4, 10)], OFFSETS, WORD_IDS)
    assert layout.target == 1 and layout.nearest == 1 and layout.first == 0
    assert layout.units[1].tolist() == [2, 3]


def test_layout_raises_on_span_lost_to_truncation():
    with pytest.raises(AlignmentError, match="source span"):
        make_layout(TEXT, (40, 43), (19, 23), None, OFFSETS, WORD_IDS)


def _attention():
    """(1 batch, 1 head, 8, 8): row i is a fixed distribution, easy to sum by hand."""
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    a /= a.sum(1, keepdims=True)
    return torch.tensor(a, dtype=torch.float64)[None, None]


def test_unit_attention_is_mean_over_sources_of_sum_over_targets():
    a = _attention()
    from_index = torch.tensor([[2, 3, 0]])                      # source "lawyer", padded to 3 entries
    from_weights = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    to = torch.zeros(1, 8, 2, dtype=torch.float64)
    to[0, [5, 6], 0] = 1                                        # unit "not sign"
    to[0, [1], 1] = 1                                           # unit "the"
    got = unit_attention(a, from_index, from_weights, to)[0, 0]
    m = a[0, 0].numpy()
    expected_0 = ((m[2, 5] + m[2, 6]) + (m[3, 5] + m[3, 6])) / 2
    expected_1 = (m[2, 1] + m[3, 1]) / 2
    assert got.tolist() == pytest.approx([expected_0, expected_1])


def test_adjacent_word_attention_forward_and_reverse():
    a = _attention()
    words = torch.tensor([[-1, 0, 1, 1, 2, 3, 4, -1]])
    m = a[0, 0].numpy()
    forward = adjacent_word_attention(a, words, source_pieces="mean")[0, 0].tolist()
    assert forward == pytest.approx([m[1, 2] + m[1, 3],                 # the -> lawyer (sum over 2 pieces)
                                     (m[2, 4] + m[3, 4]) / 2,           # lawyer -> did (mean over 2 pieces)
                                     m[4, 5], m[5, 6]])
    reverse = adjacent_word_attention(a, words, reverse=True, source_pieces="mean")[0, 0].tolist()
    assert reverse == pytest.approx([(m[2, 1] + m[3, 1]) / 2, m[4, 2] + m[4, 3], m[5, 4], m[6, 5]])


def test_drop_special_columns_renormalises_rows():
    a = _attention()
    is_word = torch.tensor([[False, True, True, True, True, True, True, False]])
    kept = drop_special_columns(a, is_word)[0, 0].numpy()
    assert kept[:, [0, 7]].max() == 0
    assert kept.sum(1) == pytest.approx(np.ones(8))
    m = a[0, 0].numpy()
    assert kept[3, 5] == pytest.approx(m[3, 5] / m[3, 1:7].sum())


# ---- The piece rule and the mention rule (issue 11) -------------------------------------------------------
# BERT: "[CLS] he hasn ' t read [SEP]", every piece its own word (BERT splits punctuation off).
NT_TEXT = "he hasn't read"
NT_OFFSETS = [(0, 0), (0, 2), (3, 7), (7, 8), (8, 9), (10, 14), (0, 0)]
NT_WORD_IDS = [None, 0, 1, 2, 3, 4, None]


def test_span_takes_the_pieces_inside_it_not_the_host():
    words = word_index(NT_WORD_IDS, NT_OFFSETS, NT_TEXT)
    assert span_pieces((6, 9), NT_OFFSETS, words) == [3, 4]        # "n't" -> ' t, never "hasn"
    assert span_words((6, 9), NT_OFFSETS, words) == [2, 3]


def test_span_falls_back_to_overlapping_pieces_when_none_lie_inside():
    words = word_index(NT_WORD_IDS, NT_OFFSETS, NT_TEXT)
    assert span_pieces((4, 6), NT_OFFSETS, words) == [2]           # "as" inside "hasn"


def test_bpe_contraction_is_the_apostrophe_t_piece():
    # GPT-2 style: "he", " hasn", "'t", " read" (offsets without the leading space)
    offsets = [(0, 2), (3, 7), (7, 9), (10, 14)]
    words = word_index([0, 1, 1, 2], offsets, NT_TEXT)
    assert span_pieces((6, 9), offsets, words) == [2]


def test_negation_layout_on_a_contraction_uses_cue_pieces_and_keeps_the_host_as_a_candidate():
    layout = make_layout(NT_TEXT, (6, 9), (10, 14), None, NT_OFFSETS, NT_WORD_IDS)
    assert layout.source.tolist() == [3, 4] and layout.source_words == [2, 3]
    assert [u.tolist() for u in layout.units] == [[5], [1], [2]]    # target "read", then "he", "hasn"


# "[CLS] mary ann smith met tom [SEP]"
MW_TEXT = "Mary Ann Smith met Tom and she"
MW_OFFSETS = [(0, 0), (0, 4), (5, 8), (9, 14), (15, 18), (19, 22), (23, 26), (27, 30), (0, 0)]
MW_WORD_IDS = [None, 0, 1, 2, 3, 4, 5, 6, None]


def test_head_mention_is_the_last_word_and_span_keeps_the_sum():
    head = make_layout(MW_TEXT, (27, 30), (0, 14), [(0, 14), (19, 22)], MW_OFFSETS, MW_WORD_IDS, mention="head")
    assert [u.tolist() for u in head.units] == [[3], [5]] and head.target_words == [2]
    span = make_layout(MW_TEXT, (27, 30), (0, 14), [(0, 14), (19, 22)], MW_OFFSETS, MW_WORD_IDS, mention="span")
    assert [u.tolist() for u in span.units] == [[1, 2, 3], [5]]
    assert mention_pieces([1, 2, 3], word_index(MW_WORD_IDS, MW_OFFSETS, MW_TEXT), "head") == [3]
    with pytest.raises(ValueError, match="mention"):
        make_layout(MW_TEXT, (27, 30), (0, 14), None, MW_OFFSETS, MW_WORD_IDS, mention="sum")


def test_minilm_cue_pieces_of_hasnt(minilm):
    from probing.runner import encode
    text = "In the end, the pilot hasn't read the letter."
    enc = encode(minilm, [text])[0]
    start = text.index("n't")
    layout = make_layout(text, (start, start + 3), (start + 4, start + 8), None, enc.offsets, enc.word_ids)
    tokens = minilm.tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert [tokens[i] for i in layout.source] == ["'", "t"]
