"""probing.hooks: z and attention-pattern hooks read, replace and knock out exactly one head, leave every other
number bit-identical, and are removed (config back to eager) on exit; MiniLM, a tiny GPT-2, MPNet, Gemma 3."""
import pytest
import torch

from probing import attention, hooks, sites
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
    assert attention._PLAN.get() is None and sites.routed() is None
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


# ---- one site map: nothing outside probing/sites.py intercepts a forward pass ------------------------------

SITE_MODULE = "probing/sites.py"
# Assigning one of these attributes swaps how a module computes (its forward, its attention implementation).
SWAPPED_ATTRIBUTES = {"forward", "_attn_implementation", "_attn_implementation_internal"}


def interceptions(path) -> list[str]:
    """Every place in a source file that registers a module hook, swaps a module's forward or attention
    implementation, or registers an attention function: "file:line what"."""
    import ast
    import re
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and re.fullmatch(r"register_\w*hook", node.attr):
            found.append(f"{where} {node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr == "register" and isinstance(node.value, ast.Name) \
                and node.value.id in ("AttentionInterface", "AttentionMaskInterface"):
            found.append(f"{where} {node.value.id}.register")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [f"{where} assigns .{t.attr}" for t in targets
                      if isinstance(t, ast.Attribute) and t.attr in SWAPPED_ATTRIBUTES]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in SWAPPED_ATTRIBUTES:
            found.append(f"{where} setattr {node.args[1].value}")
    return found


def test_the_interception_scan_finds_each_kind(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("m.register_forward_pre_hook(f)\nm.o.register_full_backward_hook(f)\n"
                       "AttentionInterface.register('x', f)\nconfig._attn_implementation = 'eager'\n"
                       "layer.forward = f\nsetattr(c, '_attn_implementation_internal', 'x')\nm.forward(x)\n")
    assert sorted(line.split(" ", 1)[0] for line in interceptions(planted)) == [f"planted.py:{n}" for n in range(1, 7)]


def test_only_the_site_module_intercepts_the_forward_pass():
    """One site map, one intervention context: no other module of probing/ registers a hook, swaps a forward
    or an attention implementation, or registers an attention function."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    outside = [hit for path in sorted((root / "probing").rglob("*.py"))
               if path.relative_to(root).as_posix() != SITE_MODULE for hit in interceptions(path)]
    assert not outside, "interception outside probing/sites.py:\n" + "\n".join(outside)
    assert interceptions(root / SITE_MODULE)        # the scan sees the site module's own


def test_intervene_values_site_and_errors(minilm):
    """A `values` site reads [batch, kv_head, pos, d_head] and is read-only; bad sites are refused in words;
    every hook and routed edit is gone after an error inside the block."""
    from probing import sites
    ids, mask = _batch(minilm)
    layout = hooks.head_layout(minilm)
    module = hooks.as_module(minilm)
    n_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())   # Transformers' own
    seen = {}

    def keep(value):
        seen[1] = value.clone()

    with sites.intervene(minilm, {sites.Site(sites.VALUES, 1): keep}):
        assert sites.routed() is not None
        _last(minilm, ids, mask)
    assert seen[1].shape == (ids.shape[0], layout.n_heads, ids.shape[1], layout.head_dim)
    assert sites.routed() is None
    with pytest.raises(ValueError, match="read-only"):
        with sites.intervene(minilm, {sites.Site(sites.VALUES, 1): lambda v: v}):
            _last(minilm, ids, mask)
    with pytest.raises(ValueError, match="site kind must be one of"):
        sites.Site("attn", 1)
    with pytest.raises(ValueError, match="layers \\[40\\] do not exist"):
        with sites.intervene(minilm, {sites.Site(sites.Z, 40): lambda z: None}):
            pass
    with pytest.raises(RuntimeError, match="inside"):
        with sites.intervene(minilm, {sites.Site(sites.Z, 0): lambda z: None,
                                      sites.Site(sites.PATTERN, 0): lambda p: None,
                                      sites.Site(sites.LAYER_INPUT, 0): lambda h: None}):
            raise RuntimeError("inside")
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()) == n_hooks
    assert sites.routed() is None
