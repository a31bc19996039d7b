"""Shared cases for the patching tests: hand-made pairs and twins, tiny masked LMs, and the plain
one-head-at-a-time loops (a hand-written pre-hook per head, no probing.hooks edits) the engine is checked against."""

import numpy as np
import pytest
import torch

from probing import hooks
from probing.examples import Example


CLEAN, CORRUPT = "The lawyer did not sign the contract.", "The lawyer did really sign the contract."


def _plain_effects(loaded, clean, corrupt, all_positions=False):
    """One forward per head with a hand-written pre-hook on the output projection (no probing.hooks edits). The
    readout averages the final states over the positions whose piece is the same in both texts (every position
    with all_positions=True), found here from the ids directly."""
    module = loaded.model
    layout = hooks.head_layout(loaded)
    ids = torch.tensor([loaded.tokenizer(clean)["input_ids"], loaded.tokenizer(corrupt)["input_ids"]])
    keep = torch.arange(ids.shape[1]) if all_positions else torch.nonzero(ids[0] == ids[1]).flatten()
    inputs = {}
    handles = [p.register_forward_hook(lambda m, a, o, l=l: inputs.__setitem__(l, a[0].clone()))
               for l, p in enumerate(layout.projections)]
    with torch.inference_mode():
        base = module(input_ids=ids).last_hidden_state.double()[:, keep].mean(1)
    for h in handles:
        h.remove()
    e_clean, e_corrupt = base
    readout = lambda batch: module(input_ids=batch).last_hidden_state.double()[:, keep].mean(1)[0]  # noqa: E731
    m = lambda e: float((e - e_corrupt) @ (e_clean - e_corrupt) / ((e_clean - e_corrupt) @ (e_clean - e_corrupt)))  # noqa
    return _per_head_runs(layout, inputs, ids, lambda batch: m(readout(batch)))


def _per_head_runs(layout, inputs, ids, normalised):
    """noising = 1 - m(clean run with head h's slice from the corrupt run), denoising = m(corrupt run with it
    from the clean run), one forward per head and run; `normalised(ids)` is the readout with clean = 1,
    corrupt = 0, and `inputs[layer]` the output projection's input on (clean, corrupt)."""
    noising = np.zeros((layout.n_layers, layout.n_heads))
    denoising = np.zeros_like(noising)
    d = layout.head_dim
    for layer in range(layout.n_layers):
        for head in range(layout.n_heads):
            for run, out in ((0, noising), (1, denoising)):
                source = inputs[layer][1 - run, :, head * d:(head + 1) * d]

                def hook(_m, args):
                    x = args[0].clone()
                    x[..., head * d:(head + 1) * d] = source
                    return (x,)
                handle = layout.projections[layer].register_forward_pre_hook(hook)
                with torch.inference_mode():
                    value = normalised(ids[run:run + 1])
                handle.remove()
                out[layer, head] = 1 - value if run == 0 else value
    return noising, denoising


def _assert_sanity(result):
    assert result.sanity["own_noising_max_abs"] <= 1e-6 and result.sanity["own_denoising_max_abs"] <= 1e-6
    assert abs(result.sanity["embedding_denoising"] - 1) <= 1e-5
    assert result.sanity["passed"] is True


def _tiny_masked_lm(tmp_path_factory, family: str, seed: int, **config) -> str:
    """A 2-layer x 2-head masked LM of `family` ("Bert", "Roberta") with random weights and MiniLM's tokenizer
    (it has a mask token), saved to a folder."""
    import transformers
    from probing.models import resolve_path
    torch.manual_seed(seed)
    folder = tmp_path_factory.mktemp(f"tiny-{family.lower()}-mlm")
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_path("minilm"))
    settings = getattr(transformers, f"{family}Config")(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                                        num_hidden_layers=2, num_attention_heads=2,
                                                        intermediate_size=37, **config)
    getattr(transformers, f"{family}ForMaskedLM")(settings).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_roberta_path(tmp_path_factory):
    return _tiny_masked_lm(tmp_path_factory, "Roberta", 2, max_position_embeddings=130, pad_token_id=0)


def _neg(text, cue, pair, role, **meta):
    start = text.index(cue)
    return Example(text=text, relation="negation", source_span=(start, start + len(cue)),
                   target_span=(start + len(cue) + 1, start + len(cue) + 5), id=f"{pair}-{role}",
                   meta={"pair": pair, "role": role, **meta})


@pytest.fixture(scope="module")
def tiny_masked_path(tmp_path_factory):
    return _tiny_masked_lm(tmp_path_factory, "Bert", 1, max_position_embeddings=64)


def _plain_logit_effects(lm, ids, position, answers):
    """Logit-difference noising/denoising per head, one forward per head, with a hand-written pre-hook."""
    layout = hooks.head_layout(lm)
    inputs = {}
    handles = [p.register_forward_hook(lambda m, a, o, l=l: inputs.__setitem__(l, a[0].clone()))
               for l, p in enumerate(layout.projections)]

    def diff(batch):
        with torch.inference_mode():
            logits = lm(input_ids=batch).logits[:, position].double()
        return logits[:, answers[0]] - logits[:, answers[1]]
    v_clean, v_corrupt = diff(ids).tolist()
    for h in handles:
        h.remove()
    noising, denoising = _per_head_runs(layout, inputs, ids,
                                        lambda batch: (float(diff(batch)[0]) - v_corrupt) / (v_clean - v_corrupt))
    return noising, denoising, v_clean - v_corrupt


def _neg136_rows(n):
    items = [("trout", "fish", "tool"), ("bee", "insect", "building"), ("rose", "flower", "tree"),
             ("hammer", "tool", "fish"), ("ant", "insect", "vegetable"), ("oak", "tree", "animal")]
    rows = []
    for i, (noun, aff, neg) in enumerate(items[:n]):
        context = f"A {noun} is not a"
        text = f"{context} {aff}."
        start = text.index("not")
        rows.append(Example(text=text, relation="negation", source_span=(start, start + 3),
                            target_span=(start + 4, start + 5), id=f"neg136:{i}",
                            meta={"pair": f"neg136:{i}", "group": f"neg136:{i}", "context_neg": context,
                                  "context_aff": f"A {noun} is a", "target_aff": aff, "target_neg": neg}))
    rows.append(Example(text="The dogs weren't barking.", relation="negation", source_span=(12, 15),
                        target_span=(16, 23), id="neg136:x",
                        meta={"pair": "neg136:x", "context_neg": "The dogs weren't", "context_aff": "The dogs were",
                              "target_aff": "barking", "target_neg": "sleeping"}))
    return rows


def _twin(text, pronoun, answer, twin, role):
    start, target = text.index(f" {pronoun} ") + 1, text.index(answer)
    return Example(text=text, relation="coreference", source_span=(start, start + len(pronoun)),
                   target_span=(target, target + len(answer)), id=f"{twin}-{role}",
                   meta={"twin": twin, "twin_role": role, "group": twin})


WINOGRAD = [("The box would not fit through the door because it was too wide.", "box",
             "The box would not fit through the door because it was too narrow.", "door"),
            ("The cup did not fit in the bag because it was too big.", "cup",
             "The cup did not fit in the bag because it was too small.", "bag"),
            ("The man could not lift his son because he was so weak.", "man",
             "The man could not lift his son because he was so heavy.", "son")]
