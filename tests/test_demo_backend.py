"""The demo's library side, called directly: input checks, word lists, scores equal to the library's,
the clickable heatmap, and public-demo model safety (allow-list, no remote code, LRU, failed loads)."""
import html
import json
import re
from collections import OrderedDict

import numpy as np
import pytest

from probing import models
from probing.demo import backend as demo, guard as demo_guard
from probing.demo.glossary import heatmap_title, metric_values, sentence_heatmap
from probing.examples import Example, find_span
from probing.demo.explore import (MAX_TEXT_CHARS, InputError, clean_text, find_negation_cues, find_pronouns,
                             make_example, resolve_word, score_sentence)
from probing.demo.heatmap import heatmap_html
from probing.heads import score_examples

COREF = "The doctor called the nurse because she was late."
NEGATION = "The lawyer did not sign the contract."
EVIL = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"


@pytest.fixture
def default_allow_list(monkeypatch):
    """The allow-list as a public demo ships it: no overrides from the environment."""
    monkeypatch.delenv(demo_guard.ALLOW_ANY_ENV, raising=False)
    monkeypatch.delenv(demo_guard.ALLOWED_ENV, raising=False)


@pytest.fixture
def fresh_model_state(monkeypatch):
    """An empty model cache and failure memory, restored afterwards (other tests keep their models)."""
    monkeypatch.setattr(models, "_cache", OrderedDict())
    monkeypatch.setattr(demo, "GATE", demo_guard.ModelGate())


# ---- text ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [None, "", "   ", "\n\t ", "\x00\x01\x02", " \x00 \x7f "])
def test_empty_text_is_refused_in_words(text):
    with pytest.raises(InputError, match=r"^The sentence is empty: type a sentence or pick an example\.$"):
        clean_text(text)


def test_text_over_the_limit_is_refused_and_says_so():
    with pytest.raises(InputError, match=r"100,000 characters; the limit here is 5,000\. It was refused, not cut"):
        clean_text("a" * 100_000)
    assert clean_text("a" * MAX_TEXT_CHARS) == "a" * MAX_TEXT_CHARS


def test_control_characters_become_spaces_and_offsets_stay():
    text = "The doctor\x00 called the nurse because she\x07 was late."
    cleaned = clean_text(text)
    assert len(cleaned) == len(text) and "\x00" not in cleaned and "\x07" not in cleaned
    assert cleaned[find_span(text, "she")[0]:][:3] == "she"
    analysis = demo.analyse(text, "coreference", "she", "nurse", None)
    assert any("2 control characters were (such as NUL) replaced by spaces" in n for n in analysis.notes)


def test_pronouns_and_cues_come_from_a_closed_word_list():
    assert [w for w, _ in find_pronouns("John told Mary that he saw her and their dog, not its owner.")] == \
        ["he", "her", "their", "its"]
    assert [w for w, _ in find_negation_cues("I do not know; they weren't there. Nothing, knot.")] == ["not", "n't"]
    sources, words = demo.word_choices(COREF, "coreference")
    assert sources == [("she (36:39)", "she (36:39)")]
    assert ("nurse (22:27)", "nurse (22:27)") in words and all("." not in label for label, _ in words)
    assert demo.word_choices("x" * (MAX_TEXT_CHARS + 1), "coreference") == ([], [])


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


@pytest.mark.parametrize("word, message", [
    ("surgeon", r"The source word 'surgeon' does not occur in the sentence\."),
    ("the", r"The source word 'the' occurs 2 times \(0:3, 18:21\); give it as start:end offsets\."),
    ("40:99", r"The source span 40:99 is out of range or reversed for a text of 49 characters\."),
    ("39:36", r"The source span 39:36 is out of range or reversed"),
    ("-1:3", r"The source span -1:3 is out of range"),
    ("10:11", r"The source span 10:11 covers only white space\."),
    ("he (36:39)", r"The source 'he' is not at 36:39 in this sentence \(that is 'she'\); the text changed"),
    ("", r"No source word was given\."),
])
def test_bad_words_and_spans_get_messages(word, message):
    with pytest.raises(InputError, match=message):
        resolve_word(COREF, word, "source")


def test_words_resolve_by_text_offsets_or_label():
    assert resolve_word(COREF, "She", "source") == (36, 39)
    assert resolve_word(COREF, "36:39", "source") == (36, 39) == resolve_word(COREF, "she (36:39)", "source")


def test_make_example_checks_relation_and_overlap():
    with pytest.raises(InputError, match=r"Unknown relation 'syntax': use 'coreference' or 'negation'\."):
        make_example(COREF, "syntax", "she", "nurse")
    with pytest.raises(InputError, match=r"overlap"):
        make_example(COREF, "coreference", "she", "36:39")
    with pytest.raises(InputError, match=r"No antecedent was given: pick the word the pronoun refers to"):
        make_example(COREF, "coreference", "she", " ")
    with pytest.raises(InputError, match=r"Pick the pronoun: she \(36:39\)"):
        make_example(COREF, "coreference", "", "nurse")
    negation = make_example("They weren't barking.", "negation", "", "")
    assert (negation.source, negation.target) == ("n't", "barking")


# ---- scores equal the library's --------------------------------------------------------------------

@pytest.mark.parametrize("text, relation, source, target", [
    (COREF, "coreference", "she", "nurse"),
    (NEGATION, "negation", "not", "sign"),
    ("The dogs weren't barking at night.", "negation", "n't", "barking"),
])
def test_sentence_scores_equal_score_examples(minilm, text, relation, source, target):
    source_span = (text.index("n't"), text.index("n't") + 3) if source == "n't" else find_span(text, source)
    example = Example(text=text, relation=relation, source_span=source_span, target_span=find_span(text, target))
    library, skipped = score_examples(minilm, [example])
    assert not skipped
    mine = score_sentence(minilm, make_example(text, relation, source, target))
    np.testing.assert_array_equal(mine.attention, library.attention[0])
    np.testing.assert_array_equal(mine.is_argmax, library.hit[0])
    rows = mine.heads()
    assert [(r["layer"], r["head"]) for r in rows] == [(l, h) for l in range(6) for h in range(12)]
    for row in rows:
        assert abs(row["attention"] - float(library.attention[0, row["layer"], row["head"]])) <= 5e-7
    assert library.attention[0].std() > 0.01   # the numbers differ between heads: the comparison means something


def test_score_heads_api_json(minilm):
    answer = demo.score_heads_api(COREF, "coreference", "she", "nurse", None)
    assert json.loads(json.dumps(answer)) == answer
    assert {"model", "direction", "tokens", "heads"} <= answer.keys()
    assert answer["model"] == "minilm" and answer["direction"] == "pronoun->antecedent"
    assert answer["tokens"][:3] == ["[CLS]", "the", "doctor"] and len(answer["heads"]) == 72
    negation = demo.score_heads_api(NEGATION, "negation", "not", "", "")
    assert negation["target"] == "sign" and {"next_word_baseline", "selectivity"} <= negation["heads"][0].keys()


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


# ---- the heatmap ----------------------------------------------------------------------------------------

def test_heatmap_is_a_grid_of_clickable_heads():
    values = np.arange(12, dtype=float).reshape(3, 4) / 12
    marked = np.zeros((3, 4), bool)
    marked[1, 2] = True
    grid = heatmap_html(values, f"attention: {EVIL!r}", marked, selected=(2, 3))
    cells = re.findall(r'<button type="button" class="([^"]*)" data-layer="(\d+)" data-head="(\d+)"', grid)
    assert [(int(l), int(h)) for _, l, h in cells] == [(l, h) for l in range(3) for h in range(4)]
    assert [(l, h) for c, l, h in cells if "hh-argmax" in c] == [("1", "2")]
    assert [(l, h) for c, l, h in cells if "hh-selected" in c] == [("2", "3")]
    assert "<script" not in grid and "&lt;img src=x onerror=alert(1)&gt;" in grid
    assert not re.search(r"https?:|javascript:", grid)
    with_nan = heatmap_html(np.full((2, 2), np.nan), "nothing")
    assert with_nan.count("n/a</button>") == 4


def test_negation_heatmap_switches_metric():
    scores = demo.analyse(NEGATION, "negation", "not", "", None).scores
    np.testing.assert_allclose(metric_values(scores, "selectivity"), scores.attention - scores.next_word)
    np.testing.assert_array_equal(metric_values(scores, "next_word_baseline"), scores.next_word)
    titles = {metric: heatmap_title(scores, metric) for metric in demo.HEATMAP_METRICS}
    assert len(set(titles.values())) == 3
    for metric, title in titles.items():
        assert html.escape(title) in sentence_heatmap(scores, metric)
    with pytest.raises(ValueError, match=r"Unknown heatmap metric 'bogus'"):
        metric_values(scores, "bogus")


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
    assert (analysis.scores.source, analysis.scores.target) == ("he", "man")
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


def test_allow_list_by_default(default_allow_list):
    allowed = demo_guard.allowed_models()
    assert allowed[0] == "minilm" and "gpt2" in allowed and "/etc" not in allowed
    assert demo_guard.check_model_allowed("") == "minilm"


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
