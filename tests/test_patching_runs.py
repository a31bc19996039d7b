"""`probing.patching.runs`: the rows of one pair's batch, how they are chunked, and the clean run's attention
reading, on hand-made inputs where the answer is known."""
import numpy as np
import pytest
import torch

from probing.patching.runs import SANITY_ROWS, _chunks, plan_rows, _source_to_target


def test_the_plan_has_a_row_per_kind_and_head_then_the_sanity_rows():
    rows = plan_rows(2, 3, ("noising", "denoising"))
    assert len(rows) == 2 * 2 * 3 + SANITY_ROWS
    assert [r.run for r in rows[:6]] == [0] * 6 and [r.run for r in rows[6:12]] == [1] * 6   # noising from clean
    assert [(r.layer, r.head) for r in rows[:6]] == [(l, h) for l in range(2) for h in range(3)]
    assert [r.kind for r in rows[-SANITY_ROWS:]] == ["sanity_own", "sanity_own", "sanity_embeddings"]
    only = plan_rows(2, 3, ("noising",), heads=[(1, 2)])
    assert [(r.layer, r.head) for r in only[:-SANITY_ROWS]] == [(1, 2)]


@pytest.mark.parametrize("max_rows", [1, 2, 5, 100])
def test_chunks_start_at_their_layer_hold_at_most_max_rows_and_cover_every_row_once(max_rows):
    rows = plan_rows(3, 4, ("noising", "denoising"))
    chunks = _chunks(rows, max_rows)
    covered = sorted(i for _, indices in chunks for i in indices)
    assert covered == list(range(len(rows)))
    for layer, indices in chunks[:-1]:
        assert len(indices) <= max_rows and {rows[i].layer for i in indices} == {layer}
    assert chunks[-1] == (0, list(range(len(rows) - SANITY_ROWS, len(rows))))   # the sanity rows run whole


def test_source_to_target_reads_forwards_and_a_decoders_later_target_backwards():
    # one layer, one head, 3 positions; the source is position 0, the target position 2
    full = torch.tensor([[[[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]]]])
    reading, reversed_ = _source_to_target(full, [0], [1, 2])
    assert not reversed_ and reading[0, 0] == pytest.approx(0.8)               # 0.3 + 0.5, summed over the target
    causal = torch.tensor([[[[1.0, 0.0, 0.0], [0.4, 0.6, 0.0], [0.7, 0.1, 0.2]]]])
    reading, reversed_ = _source_to_target(causal, [0], [2])
    assert reversed_ and reading[0, 0] == pytest.approx(0.7)                    # read target -> source
    reading, reversed_ = _source_to_target(full, [0, 1], [2])
    assert reading[0, 0] == pytest.approx((0.5 + 0.8) / 2)                     # mean over the source's pieces
    assert _source_to_target(full, [0], [])[0] is None
    assert isinstance(np.asarray(reading), np.ndarray)
