"""The architecture matrix: ten model families, each a tiny random model on disk, through every capability.

Each family is built from its Transformers config class with tiny sizes (2 layers x 2 heads, hidden 32, the
decoders with one key/value head where the family has grouped queries), saved with its LM head and MiniLM's
tokenizer (Qwen2: a byte-level BPE, see FAMILIES) with no hub access, and then:
- loaded by the repository's loader (`probing.models.load_model(folder)`): layers, heads, causal or not;
- drawn by the views (`probing.views.head_view` / `model_view`) from attention rows that sum to 1;
- scored by the head scorer on the fused and on the eager path, with the same numbers (to 1e-5), or, where the
  family cannot use the fused path, the tool says so and falls back to eager;
- patched (`patching.patch_pair`, embedding and logit readouts; `patching.patch_heads` on two pairs);
- probed (coreference, negation and layer probes on a few built-in examples).

The README's "Model families" table states FAMILIES and FUSED_FALLBACK (checked below). A family breaking a
capability fails its own parametrised test, named after it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from probing import attention as A
from probing import patching
from probing.heads import score_examples
from probing.models import direction_for, load_model
from tests.conftest import COREF_EXAMPLES, NEGATION_EXAMPLES

TOL = 1e-5
CLEAN, CORRUPT = "The lawyer did not sign the contract.", "The lawyer did really sign the contract."


@dataclass(frozen=True)
class Family:
    config: str                  # Transformers config class
    model: str                   # the class saved: the family's masked-LM or causal-LM class (with its head)
    causal: bool
    settings: dict = field(default_factory=dict)   # tiny sizes in the family's own argument names
    tokenizer: str = "minilm"    # "minilm" (WordPiece), or "byte-bpe" where Transformers forces its own class


# Sizes every family shares, in the common argument names (GPT-2 and DistilBERT spell them their own way).
_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
              max_position_embeddings=128)
# MiniLM's tokenizer: [PAD] 0, [CLS] 101, [SEP] 102; the decoders' bos/eos must lie inside its vocabulary.
_SPECIALS = dict(pad_token_id=0, bos_token_id=101, eos_token_id=102)

FAMILIES = {
    "BERT": Family("BertConfig", "BertForMaskedLM", False, _SIZES),
    # RoBERTa offsets positions by the padding index (+2), hence two more positions.
    "RoBERTa": Family("RobertaConfig", "RobertaForMaskedLM", False,
                      {**_SIZES, "max_position_embeddings": 130, "pad_token_id": 0}),
    "DistilBERT": Family("DistilBertConfig", "DistilBertForMaskedLM", False,
                         dict(dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=128,
                              pad_token_id=0)),
    # Local (sliding-window, 8 pieces) attention in layer 0, global in layer 1: both kinds are exercised.
    "ModernBERT": Family("ModernBertConfig", "ModernBertForMaskedLM", False,
                         {**_SIZES, **_SPECIALS, "cls_token_id": 101, "sep_token_id": 102, "local_attention": 8,
                          "global_attn_every_n_layers": 2}),
    "MPNet": Family("MPNetConfig", "MPNetForMaskedLM", False,
                    {**_SIZES, "max_position_embeddings": 130, "pad_token_id": 0}),
    "GPT-2": Family("GPT2Config", "GPT2LMHeadModel", True,
                    dict(n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=101, eos_token_id=102)),
    "GPT-NeoX (Pythia)": Family("GPTNeoXConfig", "GPTNeoXForCausalLM", True, {**_SIZES, **_SPECIALS}),
    "Llama": Family("LlamaConfig", "LlamaForCausalLM", True, {**_SIZES, **_SPECIALS, "num_key_value_heads": 1}),
    # Transformers 5 loads any model_type "qwen2" folder with Qwen2Tokenizer whatever tokenizer_class the folder
    # names, and that class reads MiniLM's WordPiece vocabulary letter by letter; so Qwen2 gets what real Qwen
    # checkpoints have, a byte-level BPE (trained here on the built-in sentences).
    "Qwen2": Family("Qwen2Config", "Qwen2ForCausalLM", True,
                    {**_SIZES, "num_key_value_heads": 1, "pad_token_id": 0, "bos_token_id": None, "eos_token_id": 0},
                    tokenizer="byte-bpe"),
    # Gemma 3's default head_dim is 256; a sliding window of 8 pieces on its local layers is exercised too.
    "Gemma 3": Family("Gemma3TextConfig", "Gemma3ForCausalLM", True,
                      {**_SIZES, **_SPECIALS, "num_key_value_heads": 1, "head_dim": 16, "sliding_window": 8}),
}
# Families whose attention does not go through Transformers' AttentionInterface: eager path only.
FUSED_FALLBACK = {"MPNet"}
NAMES = list(FAMILIES)


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory):
    """family name -> folder of its tiny random model and MiniLM's tokenizer; each built once per session."""
    import transformers
    from probing.models import resolve_path
    tokenizers = {"minilm": transformers.AutoTokenizer.from_pretrained(resolve_path("minilm"))}
    folders: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in folders:
            family = FAMILIES[name]
            if family.tokenizer not in tokenizers:
                tokenizers[family.tokenizer] = _byte_bpe_tokenizer()
            tokenizer = tokenizers[family.tokenizer]
            torch.manual_seed(0)
            config = getattr(transformers, family.config)(vocab_size=len(tokenizer), **family.settings)
            folder = tmp_path_factory.mktemp(_folder_prefix(name))
            getattr(transformers, family.model)(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            folders[name] = str(folder)
        return folders[name]
    return build


def _byte_bpe_tokenizer():
    """A Qwen2Tokenizer (byte-level BPE, "<|endoftext|>" id 0) trained on the built-in sentences: no hub."""
    import json
    from tokenizers import ByteLevelBPETokenizer
    from transformers import Qwen2Tokenizer
    from probing.examples import load_examples
    texts = [e.text for name in ("builtin-negation", "builtin-coref") for e in load_examples(name)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=2000, special_tokens=["<|endoftext|>"], show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])


@pytest.fixture(scope="session")
def family_models(family_folder):
    """family name -> its LoadedModel, loaded once (the loader's own cache keeps only 3, and tests go by capability)."""
    models: dict[str, object] = {}

    def get(name: str):
        if name not in models:
            models[name] = load_model(family_folder(name))
        return models[name]
    return get


@pytest.fixture
def loaded(request, family_models):
    return family_models(request.param)


def _families(function):
    """Parametrise a test over every family; `loaded` is that family's model through the repository's loader."""
    return pytest.mark.parametrize("loaded", NAMES, indirect=True, ids=NAMES)(function)


def test_readme_matrix_lists_these_families_and_fallbacks():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Model families", 1)[1].split("\n#", 1)[0]
    header, _rule, *rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                            for line in section.splitlines() if line.startswith("|")]
    scores = header.index("Head scores")
    assert [row[0] for row in rows] == NAMES
    assert {row[0] for row in rows if row[scores].startswith("fallback")} == FUSED_FALLBACK
    assert all(cell.startswith("supported") for row in rows for i, cell in enumerate(row[1:], 1) if i != scores)


@_families
def test_loader_reads_layers_heads_and_direction(loaded):
    family = FAMILIES[_family_name(loaded)]
    assert (loaded.n_layers, loaded.n_heads) == (2, 2)
    assert loaded.is_causal == family.causal
    # The direction the scorers report (`direction_for`): a causal model reads negation backwards.
    assert direction_for("negation", loaded.is_causal) == ("next_word->cue" if family.causal else "cue->next_word")
    # The loader's token limit is one the model accepts: a long text is cut to it and runs.
    from probing.runner import run_with_attention
    long_text = run_with_attention(loaded, "word " * 300)
    assert len(long_text.tokens) == loaded.max_length and long_text.encoded.truncated


def _folder_prefix(name: str) -> str:
    return "tiny-" + "".join(c for c in name.lower() if c.isalnum())


def _family_name(loaded) -> str:
    """The family of a loaded tiny model, from its folder name (longest prefix: 'tiny-bert' vs 'tiny-distilbert')."""
    folder = loaded.path.rstrip("/").split("/")[-1]
    return max((n for n in NAMES if folder.startswith(_folder_prefix(n))), key=len)


@_families
def test_views_draw_every_head_from_normalised_attention(loaded):
    from probing.runner import run_with_attention
    from probing.views import head_view, model_view
    sentence = run_with_attention(loaded, CLEAN)
    attention = sentence.attention                                   # [layer, head, query_pos, key_pos]
    assert attention.shape == (2, 2, len(sentence.tokens), len(sentence.tokens))
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    if loaded.is_causal:                                             # a decoder never looks ahead
        assert np.abs(np.triu(attention, k=1)).max() == 0
    head = head_view(loaded, CLEAN, layer=1, head=1)
    every = model_view(loaded, CLEAN)
    assert "<iframe" in head.html and "<iframe" in every.html
    assert head.n_tokens_shown == every.n_tokens_shown == len(sentence.tokens) and not head.truncated


@_families
def test_head_scores_fused_equal_eager_or_fall_back_in_words(loaded):
    name = _family_name(loaded)
    if name in FUSED_FALLBACK:
        assert not A.supports_reads(loaded)
        with pytest.warns(A.FusedPathUnavailable, match=f"{loaded.name!r}.*eager"):
            scores, _ = score_examples(loaded, COREF_EXAMPLES)
        assert scores.attention_path == A.PATH_NAMES[A.EAGER]
        with pytest.raises(A.UnsupportedAttention, match="use the eager path"):
            score_examples(loaded, COREF_EXAMPLES, attention="fused")
        return
    assert A.supports_reads(loaded)
    for renormalize in (False, True):
        for examples in (NEGATION_EXAMPLES, COREF_EXAMPLES):
            _compare(loaded, examples, renormalize, batch_tokens=40)   # several batches, and padding
    with warnings.catch_warnings():
        warnings.simplefilter("error", A.FusedPathUnavailable)     # the fused path says nothing
        assert score_examples(loaded, COREF_EXAMPLES)[0].attention_path == A.PATH_NAMES[A.FUSED]


def _compare(loaded, examples, renormalize, **kw):
    """As tests/test_attention.py: the same ids, skips, attention, baseline and argmax on both paths."""
    eager, eager_skipped = score_examples(loaded, examples, renormalize=renormalize, attention="eager", **kw)
    fused, fused_skipped = score_examples(loaded, examples, renormalize=renormalize, attention="fused", **kw)
    assert fused.ids == eager.ids and fused_skipped == eager_skipped and len(fused.ids) == len(examples)
    assert fused.attention_path.startswith("fused") and eager.attention_path.startswith("eager")
    assert np.abs(fused.attention - eager.attention).max() <= TOL
    assert np.array_equal(np.isnan(fused.next_word_baseline), np.isnan(eager.next_word_baseline))
    assert np.nan_to_num(np.abs(fused.next_word_baseline - eager.next_word_baseline)).max() <= TOL
    assert np.array_equal(fused.is_argmax, eager.is_argmax)


@_families
def test_patch_pair_embedding_and_logit_readouts(loaded):
    result = patching.patch_pair(loaded, CLEAN, CORRUPT)
    assert result.readout == "embedding" and result.tokens[result.source[0]].lstrip("Ġ") == "not"   # BPE: "Ġnot"
    assert result.sanity["own_noising_max_abs"] <= 1e-6 and abs(result.sanity["embedding_denoising"] - 1) <= 1e-5
    for kind in patching.KINDS:
        assert result.effects[kind].shape == (2, 2) and np.isfinite(result.effects[kind]).all()
    assert np.abs(result.effects["noising"]).max() > 1e-4          # a random model's heads still matter
    # Attention "not" -> "sign": a decoder cannot look ahead, so it reads "sign" -> "not" (and says so).
    with_target = patching.patch_pair(loaded, CLEAN, CORRUPT, target=(19, 23), kinds=("noising",))
    assert with_target.attention_reversed == loaded.is_causal and with_target.attention.min() > 0
    # The LM head: the answer's logit at the last piece (decoders) or at the mask (masked LMs).
    mask = "" if loaded.is_causal else f" {loaded.tokenizer.mask_token}."
    logits = patching.patch_pair(loaded, "A trout is not a" + mask, "A trout is really a" + mask,
                                 answers=("tool", "fish"), kinds=("noising", "denoising"))
    assert logits.readout == "logits" and logits.sanity["own_noising_max_abs"] <= 1e-5
    assert np.isfinite(logits.effects["denoising"]).all()


@_families
def test_patch_heads_on_two_pairs(loaded):
    result = patching.patch_heads(loaded, NEGATION_EXAMPLES, kinds=("noising", "denoising"), controls=False,
                                  n_boot=20, n_perm=20)
    assert result.sanity["passed"] and len(result.pair_ids) == 2
    assert len(result.table) == 4 and np.isfinite(result.table["noising"]).all()
    # Attention vs effect: a decoder's attention is read next word -> cue (from the cue it is 0 on every head).
    assert np.isfinite(result.table["attention"]).all() and result.table["attention"].std() > 0
    assert np.isfinite(result.correlation["noising"]["spearman"])


@pytest.fixture(scope="module")
def probe_examples():
    """A few built-in examples per probe: 24 coreference rows with candidates and gender, 12 negation pairs."""
    from probing.examples import load_examples
    coref = [e for e in load_examples("builtin-coref") if e.candidate_spans and e.meta.get("gender")]
    negation = load_examples("builtin-negation")
    pairs = {e.meta["pair"] for e in negation if e.role == "negated"}
    keep = sorted(pairs)[:12]
    return coref[:24], [e for e in negation if e.meta.get("pair") in keep and e.role in ("negated", "control")]


@_families
def test_probes_run_on_a_few_examples(loaded, probe_examples):
    from probing.probes import coref_probe, layer_probe, negation_probe
    coref, negation = probe_examples
    fast = dict(n_folds=2, Cs=(1.0,), n_boot=20)
    coref_result = coref_probe(loaded, coref, **fast)
    assert 0 <= coref_result.accuracy.mean <= 1 and len(coref_result.table)
    negation_result = negation_probe(loaded, negation, **fast)
    assert len(negation_result.table)
    layers = layer_probe(loaded, negation, task="negation", **fast)
    assert len(layers.table) == loaded.n_layers + 1                 # the embedding output, then every layer
