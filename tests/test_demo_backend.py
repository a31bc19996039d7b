"""The demo's backend (`probing.demo.backend`), called directly: one request from text to scores, heatmap and
views in one forward pass, its worded errors, the gallery, the top-heads table, head and model views, the report
files (only complete folders, a private download folder), and public-demo model safety (allow-list, no remote
code, LRU, failed loads)."""
import html
import json
import os
import stat
from collections import OrderedDict

import numpy as np
import pytest

from probing import models
from probing.demo import backend as demo, guard as demo_guard
from probing.demo.glossary import sentence_heatmap
from probing.demo.guard import DemoError
from probing.examples import find_span
from probing.heads import score_examples
from probing.outputs import mark_complete

COREF = "The doctor called the nurse because she was late."
NEGATION = "The lawyer did not sign the contract."
EVIL = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"


@pytest.fixture
def fresh_model_state(monkeypatch):
    """An empty model cache and failure memory, restored afterwards (other tests keep their models)."""
    monkeypatch.setattr(models, "_cache", OrderedDict())
    monkeypatch.setattr(demo, "GATE", demo_guard.ModelGate())


# ---- words the page needs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["他说明天会下雨。", "قال إن الطقس سيكون جميلا غدا", "Το σπίτι είναι μεγάλο."])
def test_other_scripts_without_a_pronoun_say_so_and_offer_an_example(text):
    with pytest.raises(demo.DemoError, match=r"no pronoun \(he, she, it, they, \.\.\.\)\. Try an example such as"):
        demo.analyse(text, "coreference", "", "", None)


def test_no_negation_cue_says_so_and_offers_an_example():
    with pytest.raises(demo.DemoError, match=r"no 'not' or 'n't'\. Try an example such as"):
        demo.analyse("The lawyer signed the contract.", "negation", "", "", None)


def test_emoji_and_other_scripts_around_a_pronoun_work():
    text = "The dog 🐶 saw the cat 😺 and it ran away. 他说"
    analysis = demo.analyse(text, "coreference", "it", "dog", None)
    assert analysis.scores.source == "it" and analysis.scores.target == "dog"
    assert np.isfinite(analysis.scores.attention).all() and analysis.scores.attention.max() > 0


# ---- the API answer, truncation, HTML --------------------------------------------------------------------

def test_score_heads_api_json(minilm):
    answer = demo.score_heads_api(COREF, "coreference", "she", "nurse", None)
    assert json.loads(json.dumps(answer)) == answer
    assert {"model", "direction", "tokens", "heads"} <= answer.keys()
    assert answer["model"] == "minilm" and answer["direction"] == "pronoun->antecedent"
    assert answer["tokens"][:3] == ["[CLS]", "the", "doctor"] and len(answer["heads"]) == 72
    negation = demo.score_heads_api(NEGATION, "negation", "not", "", "")
    assert negation["target"] == "sign" and {"next_word_baseline", "above_baseline"} <= negation["heads"][0].keys()


@pytest.mark.slow   # a 512-token forward and its head view: over 3 s under load
def test_text_longer_than_the_model_limit_is_truncated_with_a_note():
    text = "The man said that he was late. " + "Then it rained again. " * 150
    analysis = demo.analyse(text, "coreference", "he", "man", None)
    assert analysis.scores.truncated
    assert any("truncated and only the beginning was analysed" in n for n in analysis.notes)
    view = demo.head_view(text, None, 0, 0)
    assert "truncated" in view.note and "Showing the first 60" in view.note


def test_words_beyond_the_truncation_are_refused_in_words():
    text = "Then it rained again. " * 150 + "The man said that he was late."
    with pytest.raises(demo.DemoError, match=r"The source word 'he' at \d+:\d+ lies beyond the first 512 tokens"):
        demo.analyse(text, "coreference", f"{text.rindex('he')}:{text.rindex('he') + 2}", "man", None)


def test_html_in_the_text_stays_text():
    text = EVIL + " She said it."
    analysis = demo.analyse(text, "coreference", "She", "img", None)
    grid = sentence_heatmap(analysis.scores, "mean_attention")
    assert "<script" not in grid and "<img" not in grid and "onerror=alert(1)>" not in grid
    view = demo.head_view(text, None, 0, 0)
    assert "<script>alert(2)" not in html.unescape(view.html.split('srcdoc="', 1)[1])


# ---- gallery and top-heads table ----------------------------------------------------------------------------------------

def test_gallery_examples_come_with_gold_words_preselected():
    for relation in demo.DATASET_FOR:
        rows = demo.gallery_rows(relation)
        assert 6 <= len(rows) <= 12
        for i, (text, source, target) in enumerate(rows):
            chosen = demo.gallery_example(relation, i)
            assert chosen.text == text
            assert chosen.source in [v for _, v in chosen.sources] and chosen.source.startswith(source + " (")
            assert chosen.target in [v for _, v in chosen.words] and chosen.target.startswith(target + " (")
    chosen = demo.gallery_example("coreference", 0)
    analysis = demo.analyse(chosen.text, "coreference", chosen.source, chosen.target, None)
    assert (analysis.scores.source, analysis.scores.target) == ("she", "Laura")
    with pytest.raises(demo.DemoError, match="no example number 99"):
        demo.gallery_example("coreference", 99)


def test_top_heads_table_sits_beside_dataset_scores():
    analysis = demo.analyse(COREF, "coreference", "she", "nurse", None)
    table = analysis.top_table
    assert list(table.columns) == list(demo.empty_top_table("coreference").columns)
    assert table["attention"].is_monotonic_decreasing and table["set: accuracy"].notna().all()
    assert table["head"].iloc[0] == f"{analysis.best_layer}-{analysis.best_head}"


# ---- layer and head, views -----------------------------------------------------------------------------

@pytest.mark.parametrize("layer, head, message", [
    (6, 0, r"The layer 6 is out of range: this model has 6 layers \(0-5\)\."),
    (-1, 0, r"The layer -1 is out of range"),
    (0, 12, r"The head 12 is out of range: this model has 12 heads \(0-11\)\."),
    (0, 2.5, r"The head must be a whole number, got 2\.5\."),
    ("one", 0, r"The layer must be a whole number, got 'one'\."),
    (True, 0, r"The layer must be a whole number"),
])
def test_head_view_layer_and_head_out_of_range(layer, head, message):
    with pytest.raises(demo.DemoError, match=message):
        demo.head_view(COREF, None, layer, head)


def test_head_view_opens_on_the_asked_head_in_a_sandbox():
    view = demo.head_view(COREF, None, 2, 4)
    assert view.html.startswith('<iframe sandbox="allow-scripts" ') and "allow-same-origin" not in view.html
    assert "&quot;layer&quot;:2," in view.html and "&quot;heads&quot;:[4]" in view.html
    model = demo.model_view(COREF, None, [0, 5])
    assert model.html.startswith('<iframe sandbox="allow-scripts" ')
    with pytest.raises(demo.DemoError, match="The layer 7 is out of range"):
        demo.model_view(COREF, None, [7])


def test_report_files_for_the_default_model():
    found = demo.report_files(None, compute=False)
    assert found.folder == "reports/minilm" and found.coref_heatmap.endswith("heatmap.png")
    # both coreference tasks get their own panel: the named candidates, and every word competing
    assert found.coref_all_words_heatmap.endswith("builtin-coref/heatmap-all-words.png")
    assert "Head scores: coreference" in found.markdown and "Head scores: negation" in found.markdown


# ---- model safety ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/etc", "../", "../../reports", "bert-large-cased", "minilm\x00", "~/.ssh"])
def test_models_off_the_allow_list_are_refused_without_loading(default_allow_list, monkeypatch, name):
    def no_loading(*args):
        raise AssertionError("a model off the allow-list must not be loaded")
    monkeypatch.setattr(models, "_load_uncached", no_loading)
    with pytest.raises(demo.DemoError, match=r"is not on this demo's allow-list \(minilm, "):
        demo.get_model(name)
    with pytest.raises(demo.DemoError, match=r"allow-list"):
        demo.report_files(name, compute=True)


def test_remote_code_never_runs(tmp_path, monkeypatch, fresh_model_state):
    """A model folder that asks for its own code: refused, and its code is never imported."""
    folder = tmp_path / "evil-model"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setenv(demo_guard.ALLOWED_ENV, str(folder))
    with pytest.raises(demo.DemoError, match=r"cannot load model"):
        demo.get_model(str(folder))
    assert not marker.exists()
    import transformers
    seen = []
    real = transformers.AutoModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code", False))
        return real(cls, *args, **kwargs)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", classmethod(spy))
    models.load_model("minilm")
    assert seen == [False]


def test_at_most_max_loaded_models_stay_in_memory(monkeypatch, fresh_model_state, tiny_causal_path, tmp_path):
    import shutil
    second = tmp_path / "tiny-copy"
    shutil.copytree(tiny_causal_path, second)
    monkeypatch.setenv(demo_guard.ALLOWED_ENV, f"{tiny_causal_path},{second}")
    monkeypatch.setattr(models, "MAX_LOADED", 2)
    demo.get_model("minilm")
    demo.get_model(tiny_causal_path)
    assert models.loaded_model_names() == ["minilm", tiny_causal_path]
    demo.get_model("minilm")                     # used again: now the most recent
    demo.get_model(str(second))                  # a third model pushes out the least recently used
    assert models.loaded_model_names() == ["minilm", str(second)]


def test_a_model_that_fails_to_load_leaves_the_others_serving(tmp_path, monkeypatch, fresh_model_state):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    monkeypatch.setenv(demo_guard.ALLOWED_ENV, str(broken))
    calls = []
    real = models._load_uncached
    monkeypatch.setattr(models, "_load_uncached", lambda name, *a, **k: (calls.append(name), real(name, *a, **k))[1])
    for _ in range(2):
        with pytest.raises(demo.DemoError, match=r"cannot load model '.*broken-model'"):
            demo.analyse(COREF, "coreference", "she", "nurse", str(broken))
    assert calls.count(str(broken)) == 1          # the failure is remembered, not retried at once
    assert demo.analyse(COREF, "coreference", "she", "nurse", "minilm").scores.attention.shape == (6, 12)
    monkeypatch.setattr(demo.GATE, "retry_s", 0.0)
    with pytest.raises(demo.DemoError):
        demo.get_model(str(broken))
    assert calls.count(str(broken)) == 2          # retried once the wait is over


def test_causal_model_measures_negation_backwards_and_says_so(monkeypatch, tiny_causal_path):
    monkeypatch.setenv(demo_guard.ALLOWED_ENV, tiny_causal_path)
    analysis = demo.analyse(NEGATION, "negation", "not", "", tiny_causal_path)
    assert analysis.scores.direction == "next_word->cue"
    assert any("causal (left-to-right) model" in n and "'sign' → 'not'" in n for n in analysis.notes)
    answer = demo.score_heads_api(NEGATION, "negation", "not", "", tiny_causal_path)
    assert answer["direction"] == "next_word->cue" and len(answer["heads"]) == 4


def test_one_analysis_makes_one_forward_pass_and_equals_the_library(minilm):
    calls = []
    # The model object the demo holds (its gate may have loaded its own copy after other tests cleared caches).
    handle = demo.get_model(None).model.register_forward_hook(lambda *a: calls.append(1))
    try:
        analysis = demo.analyse(COREF, "coreference", "she", "nurse", None)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert analysis.view.html.startswith('<iframe sandbox="allow-scripts" ')
    assert f"&quot;layer&quot;:{analysis.best_layer}," in analysis.view.html
    from probing.examples import Example
    example = Example(text=COREF, relation="coreference", source_span=find_span(COREF, "she"),
                      target_span=find_span(COREF, "nurse"))
    scores, _ = score_examples(minilm, [example])
    # The demo reads the full pattern of its one pass (eager); the library's default is the fused reads,
    # which agree with eager to float32 rounding (the contract is 1e-5).
    np.testing.assert_allclose(analysis.scores.attention, scores.attention[0], rtol=0, atol=1e-5)


def test_two_word_negation_has_no_baseline_and_does_not_crash():
    analysis = demo.analyse("not bad", "negation", "", "", None)
    assert analysis.scores.target == "bad" and len(analysis.top_table) == 8
    assert analysis.top_table["above_baseline"].isna().all()      # no other adjacent pair: no baseline, shown empty


def test_download_folder_is_private_and_refuses_symlinks(tmp_path, monkeypatch):
    import tempfile
    root = demo.downloads_dir()
    assert root.parent == __import__("pathlib").Path(tempfile.gettempdir()) and root.name != "probing-downloads"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and root.stat().st_uid == os.getuid()
    report = tmp_path / "report" / "heads" / "builtin-coref"
    report.mkdir(parents=True)
    (report / "heads.csv").write_text("layer,head\n")
    (report / "link.csv").symlink_to("/etc/passwd")
    from probing.demo.report_page import report_files as offered
    assert [p.name for p in offered(tmp_path / "report")] == ["heads.csv"]     # the link is never offered


def test_report_cache_trusts_only_complete_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "REPORTS_DIR", tmp_path / "reports")
    monkeypatch.setattr(demo, "CACHE_DIR", tmp_path / "cache")
    folder = tmp_path / "cache" / "minilm" / "heads" / "builtin-coref"
    folder.mkdir(parents=True)
    (folder / "heads.csv").write_text("layer,head,accuracy,mean_attention,nearest_candidate_accuracy\n0,0,0.5,0.1,0.2\n")
    assert demo.dataset_table("minilm", "coreference") is None           # a killed run's file: not trusted
    with pytest.raises(DemoError, match="No dataset-level report"):
        demo.report_files("minilm", compute=False)
    mark_complete(folder, ["heads.csv"])
    assert demo.dataset_table("minilm", "coreference")["accuracy"].tolist() == [0.5]


def test_one_analysis_tokenises_once_and_runs_one_forward(monkeypatch):
    """The request path: one encoding (runner.encode), one forward pass (runner.forward_attentions), and the
    scores, the shading and the head view all read it; the dataset scorer's own forward never runs."""
    from probing import attention, runner
    demo.get_model(None)                      # loaded before counting (a load runs its own probe forward)
    calls = {"encode": 0, "forward": 0}
    real_encode, real_forward = runner.encode, runner.forward_attentions

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    def refused(*args, **kwargs):
        raise AssertionError("the dataset scorer's forward ran inside a demo request")

    monkeypatch.setattr(runner, "encode", counted("encode", real_encode))
    monkeypatch.setattr(runner, "forward_attentions", counted("forward", real_forward))
    monkeypatch.setattr(attention, "read_layers", refused)
    analysis = demo.analyse("The dogs weren't barking at night.", "negation", "n't", "barking", None)
    assert calls == {"encode": 1, "forward": 1}
    assert analysis.scores.attention.shape == (6, 12) and analysis.view.html and analysis.shading is not None
