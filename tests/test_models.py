"""`probing.models`: causality decided by behaviour (one probe forward), tokenizers that cannot read English
refused, with tiny random models saved to temporary folders (no hub)."""
import json

import pytest

from probing.models import ModelLoadError, load_model, resolve_path


def _save(folder, model, tokenizer=True):
    from transformers import AutoTokenizer
    model.save_pretrained(folder)
    if tokenizer:
        AutoTokenizer.from_pretrained(resolve_path("minilm")).save_pretrained(folder)
    return str(folder)


def _gpt2_config(**kw):
    from transformers import AutoTokenizer, GPT2Config
    vocab = AutoTokenizer.from_pretrained(resolve_path("minilm")).vocab_size
    return GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2, **kw)


def test_decoder_saved_without_its_lm_head_is_causal(tmp_path):
    """GPT2Model says architectures ["GPT2Model"] (no "ForCausalLM"): only the probe forward can tell."""
    import torch
    from transformers import GPT2Model
    torch.manual_seed(0)
    path = _save(tmp_path / "gpt2-bare", GPT2Model(_gpt2_config()))
    assert json.loads((tmp_path / "gpt2-bare" / "config.json").read_text())["architectures"] == ["GPT2Model"]
    loaded = load_model(path)
    assert loaded.is_causal       # so negation is read next word -> cue (test_decoder_scores_negation_backwards...)


def test_encoder_is_not_causal(minilm, tmp_path):
    import torch
    from transformers import BertConfig, BertModel
    assert not minilm.is_causal
    torch.manual_seed(0)
    config = BertConfig(vocab_size=minilm.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, is_decoder=False)
    assert not load_model(_save(tmp_path / "bert", BertModel(config))).is_causal


def test_decoder_scores_negation_backwards_even_without_its_head(tmp_path):
    """With the bare decoder, negation is measured next word -> cue and the heads are not all zero."""
    import torch
    from transformers import GPT2Model
    from probing.examples import load_examples
    from probing.heads import score_heads
    torch.manual_seed(1)
    loaded = load_model(_save(tmp_path / "gpt2-bare2", GPT2Model(_gpt2_config())))
    examples = load_examples("builtin-negation", limit=6)
    scores = score_heads(loaded, examples, n_boot=20, n_perm=50)
    assert scores.direction == "next_word->cue"
    assert (scores.table["mean_attention"] > 0.01).all()


def test_folder_without_tokenizer_files_is_refused(tmp_path):
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    path = _save(tmp_path / "no-tokenizer", BertModel(config), tokenizer=False)
    with pytest.raises(ModelLoadError, match=r"reads 11 of the 11 pieces .* unknown token .*lacks its tokenizer files"):
        load_model(path)


def test_a_folder_that_asks_to_run_its_own_code_is_refused_without_a_question(tmp_path, monkeypatch):
    """A config with `auto_map` (code shipped in the folder): the folder's code never runs (it would write a
    file), nobody is asked on stdin (a "y" there used to run it), and the model loads as Transformers' own
    class for its model_type."""
    import io
    import torch
    from transformers import GPT2Model
    torch.manual_seed(0)
    folder = tmp_path / "remote-code"
    _save(folder, GPT2Model(_gpt2_config()))
    ran = tmp_path / "the-folder-code-ran"
    (folder / "evil.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n"
                                    "from transformers import GPT2Config as EvilConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("sys.stdin", io.StringIO("y\ny\ny\n"))
    assert type(load_model(str(folder)).model).__name__ == "GPT2Model"
    assert not ran.exists()
    assert __import__("sys").stdin.read() == "y\ny\ny\n"          # nothing was asked


def test_every_from_pretrained_call_in_the_code_says_trust_remote_code_false():
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    calls = []
    for path in [*(root / "probing").rglob("*.py"), *(root / "analysis").rglob("*.py"), root / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                flag = [k for k in node.keywords if k.arg == "trust_remote_code"]
                calls.append((path.name, node.lineno, bool(flag) and isinstance(flag[0].value, ast.Constant)
                              and flag[0].value.value is False))
    assert calls and all(ok for *_, ok in calls), [c for c in calls if not c[2]]
