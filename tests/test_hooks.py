"""probing.hooks: z and attention-pattern hooks read, replace and knock out exactly one head, leave every other
number bit-identical, and are removed (config back to eager) on exit; MiniLM, a tiny GPT-2, MPNet, Gemma 3."""
import pytest
import torch

from probing import attention, hooks
from probing.install_models import local_model_path
from probing.models import load_model

TEXTS = ["The lawyer did not sign the contract.", "He said that she was not late today."]


def _batch(loaded):
    batch = loaded.tokenizer(TEXTS, return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


def _last(loaded, ids, mask, **kw):
    with torch.inference_mode():
        return loaded.model(input_ids=ids, attention_mask=mask, **kw)


def _check_model(loaded, layer=1, head=1):
    module = hooks.as_module(loaded)
    layout = hooks.head_layout(loaded)
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
    implementation = getattr(module.config, "text_config", module.config)._attn_implementation
    ids, mask = _batch(loaded)
    base = _last(loaded, ids, mask, output_attentions=True)
    with hooks.cache_z(loaded) as z, hooks.cache_pattern(loaded) as patterns:
        cached = _last(loaded, ids, mask)
    assert torch.equal(cached.last_hidden_state, base.last_hidden_state)   # reading changes nothing
    assert z[layer].shape == (*ids.shape, layout.n_heads, layout.head_dim)
    assert torch.equal(patterns[layer], base.attentions[layer])            # the pattern the model returns
    with hooks.replace_pattern(loaded, {(layer, head): patterns[layer][:, head]}):
        own_pattern = _last(loaded, ids, mask)
    assert torch.equal(own_pattern.last_hidden_state, base.last_hidden_state)
    with hooks.replace_z(loaded, {(layer, head): z[layer][:, :, head]}):
        own_z = _last(loaded, ids, mask)
    assert torch.equal(own_z.last_hidden_state, base.last_hidden_state)
    # a zero pattern makes the head's output exactly zero: the same run as zero ablation
    with hooks.replace_pattern(loaded, {(layer, head): torch.zeros_like(patterns[layer][:, head])}), \
            hooks.cache_z(loaded) as z_zero_pattern:
        zero_pattern = _last(loaded, ids, mask)
    with hooks.ablate_heads(loaded, [(layer, head)]), hooks.cache_z(loaded) as z_ablated:
        ablated = _last(loaded, ids, mask)
    assert (z_ablated[layer][:, :, head] == 0).all() and (z_zero_pattern[layer][:, :, head] == 0).all()
    others = [h for h in range(layout.n_heads) if h != head]
    assert torch.equal(z_ablated[layer][:, :, others], z[layer][:, :, others])
    for earlier in range(layer):
        assert torch.equal(z_ablated[earlier], z[earlier])
    assert torch.allclose(zero_pattern.last_hidden_state, ablated.last_hidden_state, atol=1e-5)
    assert not torch.allclose(ablated.last_hidden_state, base.last_hidden_state)
    # everything removed and restored
    assert all(len(p._forward_pre_hooks) == 0 for p in layout.projections)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()) == hooks_before
    # the attention implementation is the one the model had, or (interface models) probing.attention's
    # function, installed once: with no plan it is eager, bit for bit
    after = getattr(module.config, "text_config", module.config)._attn_implementation
    assert after in (implementation, attention.IMPLEMENTATION)
    assert attention._PLAN.get() is None
    assert torch.equal(_last(loaded, ids, mask, output_attentions=True).attentions[layer], base.attentions[layer])


def test_hooks_minilm(minilm):
    _check_model(minilm, layer=2, head=4)


def test_hooks_tiny_gpt2(tiny_causal_path):
    _check_model(load_model(tiny_causal_path), layer=1, head=0)


def test_one_query_row_only(minilm):
    """HeadPatch with `query` changes only that query row of the pattern."""
    ids, mask = _batch(minilm)
    with hooks.cache_pattern(minilm) as patterns:
        _last(minilm, ids, mask)
    uniform = torch.full((2, 1, ids.shape[1]), 1.0 / ids.shape[1])
    patch = hooks.HeadPatch(layer=3, rows=torch.tensor([0, 1]), heads=torch.tensor([5, 5]), values=uniform,
                            query=torch.tensor([4]))
    with hooks.replace_pattern(minilm, [patch]), hooks.cache_pattern(minilm, layers=[3]) as seen:
        _last(minilm, ids, mask)
    changed = seen[3] != patterns[3]
    assert changed[:, 5, 4].any() and not changed[:, :, [q for q in range(ids.shape[1]) if q != 4]].any()
    assert not changed[:, [h for h in range(12) if h != 5]].any()


def test_bad_heads_are_named(minilm):
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        with hooks.ablate_heads(minilm, [(9, 0)]):
            pass
    with pytest.raises(ValueError, match="layers \\[7\\] do not exist"):
        with hooks.edit_z(minilm, {7: lambda z: None}):
            pass


@pytest.mark.slow
@pytest.mark.skipif(local_model_path("mpnet") is None, reason="mpnet is not installed")
def test_hooks_mpnet():
    """MPNet computes softmax inline: its pattern is hooked at the self-attention's dropout."""
    _check_model(load_model("mpnet"), layer=2, head=3)


@pytest.mark.slow
@pytest.mark.skipif(local_model_path("gemma-270m") is None, reason="gemma-270m is not installed")
def test_hooks_gemma_gqa():
    """Gemma 3 shares one key/value head among query heads: z and the pattern are per query head."""
    _check_model(load_model("gemma-270m"), layer=3, head=2)


@pytest.mark.parametrize("edit", ["pattern", "z", "start_at_layer"])
def test_edits_touch_only_the_thread_that_entered_the_block(minilm, edit):
    """While one thread is inside an edit block, another thread's forward pass through the same model is
    bit-identical to an unedited one (and the editing thread's is not)."""
    import threading
    ids, mask = _batch(minilm)
    base = _last(minilm, ids, mask).last_hidden_state
    with hooks.cache_layer_inputs(minilm) as inputs:
        _last(minilm, ids, mask)
    blocks = {"pattern": lambda: hooks.replace_pattern(minilm, {(2, 4): torch.zeros(ids.shape[1], ids.shape[1])}),
              "z": lambda: hooks.ablate_heads(minilm, [(2, 4)]),
              "start_at_layer": lambda: hooks.start_at_layer(minilm, 3, inputs[3] * 2)}
    seen = {}
    with blocks[edit]():
        worker = threading.Thread(target=lambda: seen.update(other=_last(minilm, ids, mask).last_hidden_state))
        worker.start()
        worker.join()
        mine = _last(minilm, ids, mask).last_hidden_state
    assert torch.equal(seen["other"], base) and not torch.allclose(mine, base)
    assert torch.equal(_last(minilm, ids, mask).last_hidden_state, base)
    assert inputs[0].shape == (*ids.shape, 384) and hooks.head_layout(minilm).returns_tuple is False
