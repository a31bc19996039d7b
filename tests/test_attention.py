"""The fused attention reads (`probing.attention`) against the full patterns they replace.

Hand-made tensors check each piece (rows, band, log-sum-exp, band -> adjacent words); real models check that
the head scorer's numbers are those of the eager `output_attentions` path to 1e-5: MiniLM on the built-in sets
and a GAP subset, a tiny random GPT-2 (causal: reversed negation, truncation), and Gemma-270M when installed.
"""
import numpy as np
import pytest
import torch

from probing import attention as A
from probing.alignment import adjacent_word_attention, drop_special_columns
from probing.heads import score_examples
from tests.conftest import COREF_EXAMPLES, NEGATION_EXAMPLES, needs_datasets

TOL = 1e-5


def _random_case(seed=0, batch=2, heads=3, pieces=11, dim=8):
    generator = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, heads, pieces, dim, generator=generator) for _ in range(2))
    v = torch.randn(batch, heads, pieces, dim, generator=generator)
    keep = torch.ones(batch, 1, pieces, pieces, dtype=torch.bool)
    keep[1, :, :, pieces - 3:] = False                      # the second row is padded: 3 key columns masked
    additive = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    return q, k, v, additive


def _full(q, k, additive, causal, scale):
    logits = q @ k.transpose(2, 3) * scale
    if additive is not None:
        logits = logits + additive
    if causal:
        n = q.shape[2]
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(logits, -1)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_output_and_lse_match_the_full_softmax(causal):
    q, k, v, additive = _random_case()
    mask = None if causal else additive
    output, lse = A.fused_attention(q, k, v, mask, causal, 0.3)
    full = _full(q, k, mask, causal, 0.3)
    assert torch.allclose(output, full @ v, atol=1e-5)
    reference = torch.logsumexp(q @ k.transpose(2, 3) * 0.3 + (A._mask_block(mask, causal, 0, 11, 11, "cpu",
                                                                             torch.float32)), -1)
    assert torch.allclose(lse, reference, atol=1e-5)


@pytest.mark.parametrize("causal,step", [(False, 1), (False, -1), (True, -1), (True, 1)])
@pytest.mark.parametrize("renormalize", [False, True])
def test_rows_and_band_equal_the_full_pattern(causal, step, renormalize, monkeypatch):
    monkeypatch.setattr(A, "_LSE_CHUNK_CELLS", 40)           # several row blocks in the chunked log-sum-exp
    q, k, v, additive = _random_case(seed=1)
    mask = None if causal else additive
    is_word = torch.ones(2, 11, dtype=torch.bool)
    is_word[:, 0] = False                                    # a [CLS]-like piece
    is_word[1, 8:] = False                                   # padding
    full = _full(q, k, mask, causal, 0.25)
    lse = A.fused_attention(q, k, v, mask, causal, 0.25)[1]
    if renormalize:
        full = drop_special_columns(full, is_word)
        lse = A.row_logsumexp(q, k, mask, causal, 0.25, is_word)
    source = torch.tensor([[2, 3], [5, 5]])
    rows = A.source_rows(q, k, source, mask, causal, 0.25)
    if renormalize:
        rows = drop_special_columns(rows, is_word)
    assert torch.allclose(rows, full.gather(2, source[:, None, :, None].expand(-1, 3, -1, 11)), atol=1e-6)
    band = A.band_probabilities(q, k, lse, mask, causal, 0.25, 4, step, is_word if renormalize else None)
    expected = A.band_from_full(full, 4, step)
    if renormalize:                                          # special columns hold 0 after renormalising
        assert torch.allclose(band[:, :, 1:7], expected[:, :, 1:7], atol=1e-6)
    else:
        assert torch.allclose(band, expected, atol=1e-6)


def test_band_logits_in_blocks_equal_the_diagonals():
    q, k, _, _ = _random_case(seed=2, pieces=37)
    logits = q @ k.transpose(2, 3)
    for step in (1, -1):
        # 5 blocks, the last one partial; and one block holding the whole text (a plain T x T matmul)
        for band in (A.band_logits(q, k, 5, step, block=8), A.band_logits(q, k, 5, step, block=64)):
            for d in range(1, 6):
                diagonal = torch.diagonal(logits, offset=step * d, dim1=2, dim2=3)
                rows = slice(0, 37 - d) if step > 0 else slice(d, 37)
                outside = slice(37 - d, 37) if step > 0 else slice(0, d)
                assert torch.allclose(band[:, :, rows, d - 1], diagonal, atol=1e-5)
                assert (band[:, :, outside, d - 1] == 0).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_adjacent_words_from_the_band_equal_the_full_computation(reverse):
    torch.manual_seed(3)
    attention = torch.softmax(torch.randn(2, 2, 12, 12), -1)
    words = torch.tensor([[-1, 0, 0, 1, 2, 2, 2, 3, 4, -1, -1, -1], [-1, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, -1]])
    width = A.band_width(words)
    assert width == 6
    from_band = A.adjacent_from_band(A.band_from_full(attention, width, -1 if reverse else 1), words, reverse)
    assert torch.allclose(from_band, adjacent_word_attention(attention, words, reverse=reverse), atol=1e-7)


# ---- Real models: the scorer's numbers on both paths ----------------------------------------------------------

def _compare(loaded, examples, renormalize=False, **kw):
    eager, eager_skipped = score_examples(loaded, examples, renormalize=renormalize, attention="eager", **kw)
    fused, fused_skipped = score_examples(loaded, examples, renormalize=renormalize, attention="fused", **kw)
    assert fused.ids == eager.ids and fused_skipped == eager_skipped
    assert fused.attention_path.startswith("fused") and eager.attention_path.startswith("eager")
    assert np.abs(fused.attention - eager.attention).max() <= TOL
    assert np.array_equal(np.isnan(fused.next_word_baseline), np.isnan(eager.next_word_baseline))
    assert np.nan_to_num(np.abs(fused.next_word_baseline - eager.next_word_baseline)).max() <= TOL
    assert np.array_equal(fused.is_argmax, eager.is_argmax)
    return fused


@pytest.mark.parametrize("renormalize", [False, True])
def test_minilm_fused_equals_eager_on_hand_made_examples(minilm, renormalize):
    _compare(minilm, NEGATION_EXAMPLES, renormalize)
    _compare(minilm, COREF_EXAMPLES, renormalize, batch_tokens=16)     # one example per batch, and padding


@pytest.mark.slow
@pytest.mark.parametrize("name", ["builtin-negation", "builtin-coref",
                                  pytest.param("gap-dev", marks=needs_datasets)])
def test_minilm_fused_equals_eager_on_dataset_subsets(minilm, name):
    from probing.examples import load_examples
    examples = [e for e in load_examples(name, limit=16 if name == "gap-dev" else 40) if not e.is_control]
    scores = _compare(minilm, examples, renormalize=name == "builtin-negation")
    assert len(scores) > 10


def test_default_path_is_fused_and_the_output_says_so(minilm):
    from probing.heads import score_heads
    result = score_heads(minilm, COREF_EXAMPLES, n_boot=10, n_perm=10)
    assert result.attention_path == A.PATH_NAMES[A.FUSED]


def test_eager_callers_still_get_the_eager_patterns(minilm):
    """After our function is installed, output_attentions without a plan is exactly the eager computation."""
    from transformers import AutoModel
    assert A.supports_reads(minilm)
    assert minilm.model.config._attn_implementation == A.IMPLEMENTATION
    reference = AutoModel.from_pretrained(minilm.path, attn_implementation="eager").eval()
    batch = minilm.tokenizer(["The nurse was not late.", "She called."], padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = minilm.model(**batch, output_attentions=True).attentions
        theirs = reference(**batch, output_attentions=True).attentions
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_bare_forward_is_transformers_sdpa(minilm):
    from transformers import AutoModel
    reference = AutoModel.from_pretrained(minilm.path, attn_implementation="sdpa").eval()
    batch = minilm.tokenizer(["The nurse was not late.", "She called the doctor yesterday."], padding=True,
                             return_tensors="pt")
    plan = A.ReadPlan(bare=True)
    with A.reading(plan), torch.inference_mode():
        ours = minilm.model(**batch).last_hidden_state
    with torch.inference_mode():
        theirs = reference(**batch).last_hidden_state
    assert torch.equal(ours, theirs) and plan.layers == []


def test_pattern_edits_travel_in_the_context_variable(minilm):
    """Pattern edits (probing.sites.intervene on a `pattern` site) reach this function through the routed
    context variable: nested blocks add to it, exit restores what was there, and fused reads refuse them
    (their rows and band would not see the edits)."""
    from probing import sites
    module = minilm.model.encoder.layer[0].attention.self
    first, second = (lambda p: None), (lambda p: None)
    pattern_fns = lambda: [fn for _m, kind, fn in sites.routed().entries if kind == sites.PATTERN]  # noqa: E731
    assert sites.routed() is None
    with sites.intervene(minilm, {sites.Site(sites.PATTERN, 0): first}):
        with sites.intervene(minilm, {sites.Site(sites.PATTERN, 0): second}):
            assert pattern_fns() == [first, second]
        assert pattern_fns() == [first]
        assert sites.routed().has_pattern_edits(module)
    assert sites.routed() is None
    batch = minilm.tokenizer(["The nurse was not late."], return_tensors="pt")
    with A.reading(A.ReadPlan(band_width=2)), sites.intervene(minilm, {sites.Site(sites.PATTERN, 0): first}):
        with pytest.raises(A.UnsupportedAttention, match="eager path"), torch.inference_mode():
            minilm.model(**batch)


def test_tiny_gpt2_fused_equals_eager_reversed_and_truncated(tiny_causal_path):
    from probing.models import load_model
    from tests.conftest import coreference
    loaded = load_model(tiny_causal_path)
    assert loaded.is_causal and A.supports_reads(loaded)
    long_text = "The dog did not bark. " + "word " * 200 + "and it was late."
    truncated = coreference(long_text, "it", "dog", id="cut")              # the pronoun falls past 128 pieces
    for renormalize in (False, True):
        _compare(loaded, NEGATION_EXAMPLES, renormalize)                   # negation read next word -> cue
        scores = _compare(loaded, COREF_EXAMPLES + [truncated], renormalize, batch_tokens=40)
        assert "cut" not in scores.ids


def test_model_without_the_interface_keeps_the_eager_path(tmp_path):
    """MPNet's attention does not go through AttentionInterface: the probe sees it and the scorer stays eager."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel
    from probing.models import load_model, resolve_path
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("minilm"))
    torch.manual_seed(0)
    MPNetModel(MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert not A.supports_reads(loaded)
    assert loaded.model.config._attn_implementation == "eager"
    scores, _ = score_examples(loaded, COREF_EXAMPLES)
    assert scores.attention_path == A.PATH_NAMES[A.EAGER]
    with pytest.raises(A.UnsupportedAttention, match="AttentionInterface"):
        score_examples(loaded, COREF_EXAMPLES, attention="fused")


def test_unknown_path_is_refused(minilm):
    with pytest.raises(ValueError, match="attention path 'flash'"):
        score_examples(minilm, COREF_EXAMPLES, attention="flash")


@pytest.mark.slow
def test_gemma_fused_equals_eager():
    from probing.install_models import local_model_path
    if local_model_path("gemma-270m") is None:
        pytest.skip("gemma-270m is not installed")
    from probing.examples import load_examples
    from probing.models import load_model
    loaded = load_model("gemma-270m")
    assert A.supports_reads(loaded)
    from probing.examples.loaders import default_data_root
    # GAP's long passages where the datasets are present; the built-in sets always (a bare clone has no GAP)
    names = ("builtin-negation", "builtin-coref") + (("gap-dev",) if default_data_root().is_dir() else ())
    for name in names:
        # GAP's passages are long: four of them (one path each way) keep this test to seconds, not minutes
        long = name == "gap-dev"
        examples = [e for e in load_examples(name, limit=4 if long else 12) if not e.is_control]
        for renormalize in (False,) if long else (False, True):
            _compare(loaded, examples, renormalize)
