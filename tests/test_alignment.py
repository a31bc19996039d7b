"""Alignment arithmetic on hand-made tensors whose answers are known."""
import numpy as np
import pytest
import torch

from probing.alignment import (AlignmentError, adjacent_word_attention, drop_special_columns, make_layout,
                               span_words, unit_attention, word_index)

# "[CLS] the law ##yer did not sign [SEP]": 8 pieces, words the=0, lawyer=1 (2 pieces), did=2, not=3, sign=4
TEXT = "the lawyer did not sign"
OFFSETS = [(0, 0), (0, 3), (4, 7), (7, 10), (11, 14), (15, 18), (19, 23), (0, 0)]
WORD_IDS = [None, 0, 1, 1, 2, 3, 4, None]


def test_word_index_marks_specials_and_groups_pieces():
    assert word_index(WORD_IDS, OFFSETS, TEXT).tolist() == [-1, 0, 1, 1, 2, 3, 4, -1]


def test_span_selects_every_overlapping_word():
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
    forward = adjacent_word_attention(a, words)[0, 0].tolist()
    assert forward == pytest.approx([m[1, 2] + m[1, 3],                 # the -> lawyer (sum over 2 pieces)
                                     (m[2, 4] + m[3, 4]) / 2,           # lawyer -> did (mean over 2 pieces)
                                     m[4, 5], m[5, 6]])
    reverse = adjacent_word_attention(a, words, reverse=True)[0, 0].tolist()
    assert reverse == pytest.approx([(m[2, 1] + m[3, 1]) / 2, m[4, 2] + m[4, 3], m[5, 4], m[6, 5]])


def test_drop_special_columns_renormalises_rows():
    a = _attention()
    is_word = torch.tensor([[False, True, True, True, True, True, True, False]])
    kept = drop_special_columns(a, is_word)[0, 0].numpy()
    assert kept[:, [0, 7]].max() == 0
    assert kept.sum(1) == pytest.approx(np.ones(8))
    m = a[0, 0].numpy()
    assert kept[3, 5] == pytest.approx(m[3, 5] / m[3, 1:7].sum())
