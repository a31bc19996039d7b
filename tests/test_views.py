"""Offline bertviz views: inlined libraries, no URLs, sandboxed iframe, escaping, rounding, truncation, errors."""
import html
import json
import re
import shutil

import numpy as np
import pytest

from probing.views import head_view_html, model_view_html, script_json

TOKENS = ["[CLS]", "the", "lawyer", "did", "not", "sign", "[SEP]"]
EVIL = [
    "[CLS]",
    "</script>",
    '"><img src=x onerror=alert(1)>',
    "{{7*7}}",
    "<img src=x onerror=alert(1)></script><script>alert(2)</script>",
    "https://example.com/a?b=1&c=2",
    "line\u2028sep\u2029end",
    "[SEP]",
]


def attention(n_layers=6, n_heads=4, n_tokens=len(TOKENS), seed=0):
    """Random attention with softmax-normalised rows, shape (layers, heads, tokens, tokens)."""
    x = np.random.default_rng(seed).normal(size=(n_layers, n_heads, n_tokens, n_tokens))
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def params_of(document):
    """Decode the params JSON that was put into bertviz's script."""
    start = document.index("const params = ") + len("const params = ")
    return json.JSONDecoder().raw_decode(document, start)[0]


def srcdoc_of(iframe):
    """Return the raw (still escaped) srcdoc attribute value of the iframe element."""
    return re.fullmatch(r'<iframe [^>]*srcdoc="([^"]*)"></iframe>', iframe).group(1)


def both_views(tokens, attn):
    return [head_view_html(tokens, attn), model_view_html(tokens, attn)]


def test_libraries_are_inlined_in_order_with_define_shims():
    doc = head_view_html(TOKENS, attention()).document
    jquery, d3, require = doc.index("jQuery v2.2.4"), doc.index('version="5.7.0"'), doc.index("RequireJS 2.3.6")
    shim_jquery = doc.index("define('jquery', [], function () { return window.jQuery; });")
    shim_d3 = doc.index("define('d3', [], function () { return window.d3; });")
    bertviz = doc.index("requirejs(['jquery', 'd3']")
    assert jquery < d3 < require < shim_jquery < shim_d3 < bertviz
    assert "function renderVis()" in doc  # bertviz's head_view.js, read from the installed package
    assert "require.config({" not in doc and "cdnjs" not in doc


def test_no_http_url_anywhere_in_the_views():
    for result in both_views(EVIL, attention(n_tokens=len(EVIL))):
        assert not re.search(r"https?://", result.document, re.I)
        assert not re.search(r"https?://", result.html, re.I)
        markup = re.sub(r"<script>.*?</script>", "", result.document, flags=re.S)
        assert markup.count("<div") == 2 and not re.search(r"\b(src|href)\s*=", markup, re.I)


def test_iframe_is_sandboxed_and_holds_the_escaped_document():
    for result in both_views(TOKENS, attention()):
        assert result.html.startswith('<iframe sandbox="allow-scripts" ')
        assert "allow-same-origin" not in result.html
        assert re.search(r'style="width:100%;height:(\d+px|auto;aspect-ratio:986/\d+;max-height:\d+px);border:0"',
                         result.html)
        assert html.unescape(srcdoc_of(result.html)) == result.document


@pytest.mark.parametrize("view", [head_view_html, model_view_html])
def test_malicious_tokens_stay_text(view):
    result = view(EVIL, attention(n_tokens=len(EVIL)))
    doc = result.document
    for raw in ["<script>alert(2)</script>", "</script><script>", "<img src=x", '"><img', "\u2028", "\u2029"]:
        assert raw not in doc
    assert doc.count("</script>") == 5  # 3 libraries, shims, bertviz: no token closed or opened a script
    assert params_of(doc)["attention"][0]["left_text"] == EVIL
    attribute = srcdoc_of(result.html)
    assert '"' not in attribute and "<" not in attribute and ">" not in attribute


def test_script_json_escapes_html_significant_characters():
    text = script_json(["</script>&", "\u2028\u2029", "a/b"])
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert "</" not in text
    assert json.loads(text) == ["</script>&", "\u2028\u2029", "a/b"]


def test_weights_are_rounded_to_the_given_decimals():
    attn = attention().astype(np.float32)
    for result in both_views(TOKENS, attn):
        weights = np.array(params_of(result.document)["attention"][0]["attn"])
        np.testing.assert_array_equal(weights, np.round(attn.astype(np.float64), 3))
        assert not re.search(r"\d\.\d{4,}", result.document[result.document.index("const params = "):])
    two = np.array(params_of(head_view_html(TOKENS, attn, decimals=2).document)["attention"][0]["attn"])
    np.testing.assert_array_equal(two, np.round(attn.astype(np.float64), 2))


def test_long_inputs_are_cut_to_max_tokens_with_a_note():
    tokens = [f"w{i}" for i in range(70)]
    result = head_view_html(tokens, attention(2, 2, 70), max_tokens=60)
    assert (result.n_tokens_shown, result.n_tokens_total, result.truncated) == (60, 70, True)
    assert "first 60 of 70 tokens" in result.note
    data = params_of(result.document)["attention"][0]
    assert data["left_text"] == tokens[:60]
    assert np.array(data["attn"]).shape == (2, 2, 60, 60)
    short = model_view_html(TOKENS, attention(), max_tokens=40)
    assert (short.truncated, short.note, short.n_tokens_shown) == (False, "", 7)


def test_the_model_views_frame_scales_with_its_drawing():
    """The model view scales down to a narrow frame; its frame keeps the unscaled page's aspect ratio (970 px
    drawn plus two 8 px margins, by the page's height) and never grows past that height. The head view, never
    scaled, keeps a fixed height."""
    model = model_view_html(TOKENS, attention(), layers=[0, 1])
    height = int(re.search(r"max-height:(\d+)px", model.html).group(1))
    assert f"height:auto;aspect-ratio:986/{height};max-height:{height}px" in model.html
    assert "aspect-ratio" not in head_view_html(TOKENS, attention()).html
    assert re.search(r"\(document\.documentElement\.clientWidth - 16\) / 970", model.document)


def test_iframe_height_grows_with_tokens_and_layers():
    def height(result):
        return int(re.search(r"height:(\d+)px", result.html).group(1))

    assert height(head_view_html(TOKENS * 4, attention(n_tokens=28))) > height(head_view_html(TOKENS, attention()))
    assert height(model_view_html(TOKENS, attention(), layers=[0, 1, 2, 3])) > height(
        model_view_html(TOKENS, attention(), layers=[0])
    )


def test_head_view_opens_on_the_chosen_layer_and_head():
    params = params_of(head_view_html(TOKENS, attention(), layer=4, head=2).document)
    assert (params["layer"], params["heads"], params["include_layers"]) == (4, [2], list(range(6)))
    default = params_of(head_view_html(TOKENS, attention()).document)
    assert (default["layer"], default["heads"]) == (None, None)


def test_head_view_sentence_pair_filters():
    result = head_view_html(TOKENS, attention(), sentence_b_start=4)
    names = [d["name"] for d in params_of(result.document)["attention"]]
    assert names[0] == "All" and "Sentence A -> Sentence B" in names and len(names) == 5
    assert '<select id="filter">' in result.document
    cut = head_view_html(TOKENS, attention(), sentence_b_start=5, max_tokens=4)
    assert len(params_of(cut.document)["attention"]) == 1 and "Sentence B" in cut.note


def test_model_view_shows_a_sorted_layer_subset():
    attn = attention()
    params = params_of(model_view_html(TOKENS, attn, layers=[3, 1, 3]).document)
    assert params["include_layers"] == [1, 3]
    np.testing.assert_array_equal(np.array(params["attention"][0]["attn"]), np.round(attn[[1, 3]], 3))


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    attn = attention()
    from_torch = params_of(model_view_html(TOKENS, torch.tensor(attn, requires_grad=True)).document)
    np.testing.assert_array_equal(np.array(from_torch["attention"][0]["attn"]), np.round(attn, 3))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: head_view_html(TOKENS, a, layer=9), r"^layer 9 is out of range: this model has 6 layers \(0-5\)$"),
        (lambda a: head_view_html(TOKENS, a, head=4), r"^head 4 is out of range: this model has 4 heads \(0-3\)$"),
        (lambda a: head_view_html(TOKENS, a, layer=-1), r"layer -1 is out of range"),
        (lambda a: model_view_html(TOKENS, a, layers=[0, 6]), r"layer 6 is out of range: this model has 6 layers"),
        (lambda a: model_view_html(TOKENS, a, layers=[]), r"layers is empty"),
        (lambda a: head_view_html(TOKENS[:-1], a), r"attention covers 7 tokens but 6 tokens were given"),
        (lambda a: head_view_html(TOKENS, a[0]), r"shape \(layers, heads, tokens, tokens\)"),
        (lambda a: head_view_html(TOKENS, a[..., :-1]), r"square"),
        (lambda a: head_view_html(TOKENS, np.full_like(a, np.nan)), r"NaN"),
        (lambda a: head_view_html(TOKENS, a, sentence_b_start=7), r"sentence_b_start 7 is out of range"),
        (lambda a: head_view_html(TOKENS, a, max_tokens=0), r"max_tokens must be at least 1"),
        (lambda a: head_view_html(TOKENS, a, layer=True), r"layer must be an integer"),
        (lambda a: model_view_html("the lawyer", a), r"tokens must be a list of strings"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(attention())


@pytest.mark.slow
def test_renders_in_a_real_browser_without_network_or_dialogs(tmp_path):
    """Headless chromium draws bertviz's SVG inside the sandboxed iframe, offline; skipped without chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    views = {"head": head_view_html(EVIL, attention(n_tokens=len(EVIL)), layer=5, head=3),
             "model": model_view_html(EVIL, attention(n_tokens=len(EVIL)), layers=[0, 2])}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            for name, result in views.items():
                page_file = tmp_path / f"{name}.html"
                page_file.write_text(f"<!DOCTYPE html><html><body>{result.html}</body></html>", encoding="utf-8")
                page = browser.new_page()
                requests, dialogs, errors = [], [], []
                page.on("request", lambda r: requests.append(r.url))
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(page_file.as_uri())
                frame = page.frames[1]
                frame.wait_for_selector("svg line", state="attached", timeout=10_000)
                page.wait_for_timeout(300)
                assert frame.locator("svg line").count() > 0 and frame.locator("svg rect").count() > 0
                assert frame.locator("img, body > script ~ script[src]").count() == 0
                if name == "head":
                    assert frame.locator("#layer").input_value() == "5"
                    assert EVIL[4] in frame.locator("svg text").all_text_contents()
                assert requests == [page_file.as_uri()] and dialogs == [] and errors == []
                page.close()
        finally:
            browser.close()


# ---- the word-shading view ----------------------------------------------------------------------------

def test_word_shading_escapes_words_and_shades_by_weight():
    from probing.views import word_shading_html
    words = ["The", EVIL[4], "said", "it"]
    page = word_shading_html(words, [0.1, 0.6, 0.0, 0.3], source=3, title="head 1-2", special=0.25)
    assert "<script" not in page and "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    shades = [float(a) for a in re.findall(r"rgba\(29,78,216,([0-9.]+)\)", page)]
    assert shades == [pytest.approx(0.1 / 0.6, abs=1e-3), 1.0, 0.0, 0.0]     # the source word is not shaded
    assert re.findall(r'data-value="([0-9.]+)"', page) == ["0.100", "0.600", "0.000", "0.300"]
    assert 'class="ws-word ws-source" title="it: 0.300 (the source word' in page
    assert "special tokens ([CLS], [SEP]; no word): 0.250" in page
    assert not re.search(r"https?:|javascript:", page)
    text = "The <b>x</b>, said  it"
    spaced = word_shading_html(["The", "<b>x</b>", "said", "it"], [0.1, 0.6, 0.0, 0.3], source=3, text=text,
                               spans=[(0, 3), (4, 12), (14, 18), (20, 22)])
    assert "</span>, <span" in spaced and "</span>  <span" in spaced and "<b>" not in spaced


def test_word_shading_refuses_mismatched_input():
    from probing.views import word_shading_html
    with pytest.raises(ValueError, match="got 2 weights for 3 words"):
        word_shading_html(["a", "b", "c"], [0.1, 0.2], source=0)
    with pytest.raises(ValueError, match="source 3 is out of range for 3 words"):
        word_shading_html(["a", "b", "c"], [0.1, 0.2, 0.3], source=3)
    with pytest.raises(ValueError, match="NaN"):
        word_shading_html(["a"], [float("nan")], source=0)
    with pytest.raises(ValueError, match="give both text and one span per word"):
        word_shading_html(["a"], [1.0], source=0, text="a")
