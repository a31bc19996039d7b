"""Norm-based attention (Kobayashi et al. 2020) beside the weights: a tiny BERT with fixed random weights, the
norm sum_t alpha_st ||(x_t W_V + b_V) W_O^h|| computed by hand from its weights, against what the scorer gives
(fused and eager paths) to 1e-5; and adding the norm leaves every other number of the head table as it was."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from probing.heads import head_table, score_examples
from probing.models import load_model
from tests.conftest import negation

EXAMPLES = [negation("The lawyer did not sign the contract yesterday.", "not", "sign", id="a"),
            negation("The dogs weren't barking at the mailman.", "n't", "barking", id="b"),
            negation("She never answered the unsettling letter.", "never", "answered", id="c")]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer x 4-head BERT (d_model 32) with seeded random weights (biases too) and MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    from probing.models import resolve_path
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("minilm"))
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):          # non-zero value and output biases: b_V must be counted
                parameter.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_model(str(folder))


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    """A 2-layer x 4-head MPNet (its attention computes softmax inline, outside AttentionInterface)."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel
    from probing.models import resolve_path
    torch.manual_seed(4)
    folder = tmp_path_factory.mktemp("tiny-mpnet")
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("minilm"))
    model = MPNetModel(MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                   pad_token_id=0))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_model(str(folder))


def _value_and_output(block):
    """(the value projection, the output projection) of a BERT or an MPNet layer."""
    if hasattr(block.attention, "attn"):                    # MPNet: attention.attn.{v, o}
        return block.attention.attn.v, block.attention.attn.o
    return block.attention.self.value, block.attention.output.dense


@torch.no_grad()
def _by_hand(loaded, example) -> tuple[np.ndarray, np.ndarray]:
    """(weight, norm) [layer, head] for one example: read from the source's last piece, summed over the target's
    pieces; the norm from the hidden states entering each layer and the layer's own weight matrices."""
    from probing.runner import encode_and_align
    from probing.heads import mention_rule
    encoded, layouts, _ = encode_and_align(loaded, [example], mention_rule("negation", "head"))
    layout = layouts[0]
    ids = torch.tensor([encoded[0].input_ids])
    with torch.no_grad():
        out = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True,
                           output_hidden_states=True)
    source, target = int(layout.source[-1]), list(layout.units[layout.target])
    config = loaded.model.config
    n_heads, d_head = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    weights, norms = [], []
    for index, block in enumerate(loaded.model.encoder.layer):
        x = out.hidden_states[index][0].double()                                        # [pos, d_model]
        value_projection, output_projection = _value_and_output(block)
        value = x @ value_projection.weight.double().T + value_projection.bias.double()  # [pos, H*d]
        w_o = output_projection.weight.double()                                         # [d_model, H*d]
        alpha = out.attentions[index][0].double()                                       # [head, q, k]
        layer_w, layer_n = [], []
        for h in range(n_heads):
            cols = slice(h * d_head, (h + 1) * d_head)
            f = value[:, cols] @ w_o[:, cols].T                                         # [pos, d_model]
            layer_w.append(float(alpha[h, source, target].sum()))
            layer_n.append(float(sum(alpha[h, source, t] * torch.linalg.norm(f[t]) for t in target)))
        weights.append(layer_w)
        norms.append(layer_n)
    return np.array(weights), np.array(norms)


@pytest.mark.parametrize("path", ["fused", "eager"])
def test_norm_equals_the_hand_computation(tiny_bert, path):
    scores, skipped = score_examples(tiny_bert, EXAMPLES, attention=path)
    assert not skipped and scores.norm_attention.shape == (3, 2, 4)
    for row, example in enumerate(EXAMPLES):
        weight, norm = _by_hand(tiny_bert, example)
        np.testing.assert_allclose(scores.attention[row], weight, atol=1e-5)
        np.testing.assert_allclose(scores.norm_attention[row], norm, atol=1e-5)
        assert not np.allclose(norm, weight)      # the norm is not the weight again


def test_the_norm_column_leaves_every_other_column_as_it_was(tiny_bert):
    scores, _ = score_examples(tiny_bert, EXAMPLES)
    with_norm = head_table(scores, "negation", n_boot=50, n_perm=50)
    without = head_table(dataclasses.replace(scores, norm_attention=None), "negation", n_boot=50, n_perm=50)
    norm_columns = ["norm_attention", "norm_attention_ci_low", "norm_attention_ci_high"]
    # the norm columns come last; without norms they are NaN and a note column says why
    assert list(with_norm.columns) == [c for c in without.columns if c != "norm_attention_note"]
    assert list(with_norm.columns)[-3:] == norm_columns
    pd.testing.assert_frame_equal(with_norm.drop(columns=norm_columns + ["norm_attention_note"], errors="ignore"),
                                  without.drop(columns=norm_columns + ["norm_attention_note"], errors="ignore"))
    expected = scores.norm_attention.reshape(3, -1).mean(0)
    np.testing.assert_allclose(with_norm["norm_attention"], expected, rtol=1e-6)
    assert (with_norm["norm_attention_ci_low"] <= with_norm["norm_attention"] + 1e-9).all()
    assert without["norm_attention"].isna().all() and "not available" in without["norm_attention_note"][0]


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_mpnet"])
def test_patching_reports_the_norm_beside_the_attention(model, request):
    from probing.patching import patch_pair
    tiny = request.getfixturevalue(model)
    clean, corrupt = "The lawyer did not sign the contract yesterday.", "The lawyer did really sign the contract yesterday."
    result = patch_pair(tiny, clean, corrupt, target=(clean.index("sign"), clean.index("sign") + 4),
                        kinds=("noising", "denoising"))
    weight, norm = _by_hand(tiny, EXAMPLES[0])                # "not" is one piece: mean = last piece
    np.testing.assert_allclose(result.attention, weight, atol=1e-5)
    np.testing.assert_allclose(result.norm_attention, norm, atol=1e-5)
    assert {"attention", "norm_attention"} <= set(result.table.columns)
    assert result.to_dict()["norm_attention"] == result.norm_attention.tolist()


def test_mpnet_gives_the_norm_through_its_value_projection(tiny_mpnet):
    """MPNet's attention does not use AttentionInterface (eager path): the norms come from a hook on its value
    projection, and equal the hand computation."""
    scores, _ = score_examples(tiny_mpnet, EXAMPLES)
    assert scores.attention_path.startswith("eager")
    for row, example in enumerate(EXAMPLES):
        weight, norm = _by_hand(tiny_mpnet, example)
        np.testing.assert_allclose(scores.attention[row], weight, atol=1e-5)
        np.testing.assert_allclose(scores.norm_attention[row], norm, atol=1e-5)
