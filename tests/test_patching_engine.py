"""probing.patching.engine: the batched runs agree with a plain one-head-at-a-time loop to 1e-5 (MiniLM, a tiny
GPT-2, a tiny RoBERTa; embedding and logit readouts), pass their sanity checks, and give a head whose output is
exactly zero no effect."""

import numpy as np
import pytest
import torch

from probing import patching
from probing.models import load_model
from tests.patching_cases import (CLEAN, CORRUPT, WINOGRAD, _assert_sanity, _plain_effects, _plain_logit_effects,
                                  _twin, tiny_masked_path, tiny_roberta_path)  # noqa: F401 (fixtures)


@pytest.mark.slow
def test_minilm_sanity_and_plain_agreement(minilm):
    result = patching.patch_pair(minilm, CLEAN, CORRUPT)
    _assert_sanity(result)
    noising, denoising = _plain_effects(minilm, CLEAN, CORRUPT)
    np.testing.assert_allclose(result.effects["noising"], noising, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"], denoising, atol=1e-5)
    assert result.effects["noising"].max() > 0.1          # some head matters on this pair
    assert result.tokens[result.source[0]] == "not"


@pytest.mark.slow
def test_tiny_gpt2_sanity_and_plain_agreement(tiny_causal_path):
    loaded = load_model(tiny_causal_path)
    result = patching.patch_pair(loaded, CLEAN, CORRUPT)
    _assert_sanity(result)
    noising, denoising = _plain_effects(loaded, CLEAN, CORRUPT)
    np.testing.assert_allclose(result.effects["noising"], noising, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"], denoising, atol=1e-5)


@pytest.mark.slow
def test_tiny_roberta_sanity_plain_agreement_and_masked_twins(tiny_roberta_path):
    """RoBERTa (a hub id the demo allows): the embedding readout agrees with the plain loop, and its LM head
    reads Winograd twins with the pronoun masked."""
    loaded = load_model(tiny_roberta_path)
    result = patching.patch_pair(loaded, CLEAN, CORRUPT, kinds=("noising", "denoising", "row_noising"))
    _assert_sanity(result)
    noising, denoising = _plain_effects(loaded, CLEAN, CORRUPT)
    np.testing.assert_allclose(result.effects["noising"], noising, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"], denoising, atol=1e-5)
    rows = [row for i, (clean, a, corrupt, b) in enumerate(WINOGRAD) for row in
            (_twin(clean, "it" if " it " in clean else "he", a, f"w{i}", "clean"),
             _twin(corrupt, "it" if " it " in corrupt else "he", b, f"w{i}", "corrupt"))]
    masked = patching.patch_heads(loaded, rows, kinds=("noising",), n_boot=50, n_perm=50)
    assert masked.readout.endswith("at the masked pronoun") and masked.sanity["passed"] and len(masked.pair_ids) == 3


def test_head_with_zero_output_has_zero_effects(tiny_causal_path):
    """Zero value weights make z[1, 0] exactly 0 in every run, so all its effects are 0 up to the float64
    rounding of the readout's arithmetic (a tolerance of 1e-12; seen: 7.2e-17)."""
    from transformers import GPT2Model
    model = GPT2Model.from_pretrained(tiny_causal_path, attn_implementation="eager").eval()
    d, n = 16, 32
    with torch.no_grad():
        model.h[1].attn.c_attn.weight[:, 2 * n:2 * n + d] = 0
        model.h[1].attn.c_attn.bias[2 * n:2 * n + d] = 0
    loaded = load_model(tiny_causal_path)
    zeroed = type(loaded)(**{**loaded.__dict__, "model": model})
    result = patching.patch_pair(zeroed, CLEAN, CORRUPT)
    for kind, effects in result.effects.items():
        assert abs(effects[1, 0]) <= 1e-12, kind
    assert np.abs(result.effects["noising"]).sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_causal_path", "tiny_masked_path"])
def test_logit_readout_sanity_and_plain_agreement(fixture, request):
    loaded = load_model(request.getfixturevalue(fixture))
    mask = "" if loaded.is_causal else f" {loaded.tokenizer.mask_token}."
    clean, corrupt = "A trout is not a" + mask, "A trout is really a" + mask
    result = patching.patch_pair(loaded, clean, corrupt, answers=("tool", "fish"))
    assert result.readout == "logits"
    assert result.sanity["own_noising_max_abs"] <= 1e-5 and abs(result.sanity["embedding_denoising"] - 1) <= 1e-5
    lm, _ = patching.load_lm_model(loaded)
    ids = torch.tensor([loaded.tokenizer(clean)["input_ids"], loaded.tokenizer(corrupt)["input_ids"]])
    position = ids.shape[1] - 1 if loaded.is_causal else ids[0].tolist().index(loaded.tokenizer.mask_token_id)
    answers = patching.pairs._answer_ids(loaded, ("tool", "fish"))
    noising, denoising, scale = _plain_logit_effects(lm, ids, position, answers)
    # compared in logits (effect x scale): a random model's clean - corrupt difference is small
    np.testing.assert_allclose(result.effects["noising"] * scale, noising * scale, atol=1e-5)
    np.testing.assert_allclose(result.effects["denoising"] * scale, denoising * scale, atol=1e-5)
    assert np.abs(result.effects["noising"]).max() > 1e-3
