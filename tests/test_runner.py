"""Batching and the long-document path: a text longer than one batch's budget runs alone, whatever its length."""
import pytest

from probing.runner import length_batches, pad_ids
from tests.conftest import needs_datasets


def test_texts_longer_than_the_budget_run_one_at_a_time():
    batches = length_batches([5000, 12, 4100, 10, 11], batch_tokens=4096)
    assert batches[0] == [0] and batches[1] == [2]             # longest first, each alone
    assert sorted(batches[2]) == [1, 3, 4]


def test_batches_respect_the_token_budget():
    lengths = [100] * 50
    batches = length_batches(lengths, batch_tokens=1000)
    assert all(len(b) * 100 <= 1000 for b in batches) and sum(map(len, batches)) == 50


def test_pad_ids_right_pads_with_a_mask():
    ids, mask = pad_ids([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.slow
@needs_datasets                  # the document is built from GAP passages
def test_gemma_scores_a_long_document_on_the_fused_path():
    """Gemma-270M, a document of about 1,000 pieces (the bench runs 4,096), twice the batch budget: fused equals
    eager to 1e-5."""
    from probing.install_models import local_model_path
    if local_model_path("gemma-270m") is None:
        pytest.skip("gemma-270m is not installed")
    import numpy as np
    from analysis.bench import long_document
    from probing.heads import score_examples
    from probing.models import load_model
    loaded = load_model("gemma-270m")
    example = long_document(loaded, 1000)
    n_pieces = len(loaded.tokenizer(example.text)["input_ids"])
    assert 900 < n_pieces <= 1000
    assert example.source_span[0] > 0.95 * len(example.text) and example.target_span[0] == 0
    fused, skipped = score_examples(loaded, [example], batch_tokens=512)
    eager, _ = score_examples(loaded, [example], batch_tokens=512, attention="eager")
    assert skipped == [] and fused.attention_path.startswith("fused")
    assert np.abs(fused.attention - eager.attention).max() <= 1e-5
    assert np.array_equal(fused.is_argmax, eager.is_argmax)
