"""bertviz head and model views as self-contained, offline HTML for Gradio.

bertviz's own HTML loads require.js, d3 and jQuery from a CDN and relies on
the notebook running its <script> tags. The demo must work with no internet,
and Gradio's ``gr.HTML`` does not run scripts. So this module builds one
standalone page that inlines the vendored libraries from ``probing/static/``
(jQuery, then d3, then require.js, then named ``define()`` shims so require.js
never asks for a URL), followed by bertviz's own view script read at run time
from the installed bertviz package, and puts that page in the ``srcdoc`` of an
``<iframe sandbox="allow-scripts">``, which browsers run without giving it
access to the parent page.

Tokens are user text. They travel only inside the JSON given to bertviz's
script, with ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\uXXXX``
escapes (and ``/`` as ``\\/``), so no token can close the <script> tag or put
a raw URL in the page. bertviz draws tokens with d3's ``.text()``, which never
parses HTML. The whole page is attribute-escaped into ``srcdoc``.

To keep the page free of ``http://`` and ``https://`` strings, whole-line
``//`` comments that hold URLs are dropped, bertviz's CDN ``require.config``
and header comment are removed, and any other ``http://`` left (XML namespace
names such as d3's SVG namespace, a link in a require.js error message and in
its licence header) is written as ``http:\\/\\/``, which is the same string to
JavaScript. Nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
import math
import operator
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

STATIC_DIR = Path(__file__).resolve().parent / "static"
LIBRARY_FILES = ("jquery-2.2.4.min.js", "d3-5.7.0.min.js", "require-2.3.6.js")
AMD_SHIMS = (
    "define('jquery', [], function () { return window.jQuery; });\n"
    "define('d3', [], function () { return window.d3; });"
)

# Geometry from bertviz's head_view.js / model_view.js, used to size the iframe.
HEAD_ROW_PX = 22.5  # BOXHEIGHT: one token row
HEAD_TOP_PX = 30  # TEXT_TOP: head colour boxes above the tokens
HEAD_CONTROLS_PX = 50  # the "Layer:" select line plus page margins
MODEL_AXIS_PX = 38  # HEADING_TEXT_SIZE + HEADING_PADDING + TEXT_SIZE + TEXT_PADDING
MODEL_DETAIL_ROW_PX = 18  # DETAIL_BOX_HEIGHT
MODEL_DETAIL_EXTRA_PX = 55  # 2 * DETAIL_PADDING + DETAIL_HEADING_HEIGHT
MODEL_CONTROLS_PX = 40  # page margins and the empty control line
MODEL_DRAWN_WIDTH_PX = 970  # DIV_WIDTH: the model view's drawing, scaled down to a narrower frame
PAGE_MARGIN_PX = 8  # the page's body margin on each side

_URL_LINE_COMMENT = re.compile(r"^[ \t]*//[^\n]*https?://[^\n]*\n?", re.M)
_URL_SCHEME = re.compile(r"(https?:)//")
_HEADER_COMMENT = re.compile(r"\A\s*/\*.*?\*/\s*", re.S)
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);\s*", re.S)
_PARAMS_MARKER = "const params = PYTHON_PARAMS;"
_JSON_ESCAPES = {"/": "\\/", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@dataclass(frozen=True)
class ViewResult:
    """A rendered view: the iframe for gr.HTML plus the page inside it."""

    html: str
    document: str
    n_tokens_shown: int
    n_tokens_total: int
    truncated: bool
    note: str


def head_view_html(
    tokens: list[str],
    attention,
    layer: int | None = None,
    head: int | None = None,
    max_tokens: int = 60,
    decimals: int = 3,
    sentence_b_start=None,
) -> ViewResult:
    """Render bertviz's head view, opening on `layer` with only `head` selected."""
    tokens, attn = _validated(tokens, attention, max_tokens, decimals)
    n_layers, n_heads = attn.shape[:2]
    layer = _checked_index("layer", layer, n_layers, "layers")
    head = _checked_index("head", head, n_heads, "heads")
    sentence_b_start = _checked_split(sentence_b_start, len(tokens))
    shown_tokens, shown_attn, note = _truncated(tokens, attn, max_tokens)
    if sentence_b_start is not None and sentence_b_start >= len(shown_tokens):
        sentence_b_start = None
        note += " Sentence B starts after the cut, so the sentence A/B filter is off."
    weights = _rounded(shown_attn, decimals)
    attn_data = _head_attn_data(_prettified(shown_tokens), weights, sentence_b_start)
    root_id = _root_id()
    params = {
        "attention": attn_data,
        "default_filter": "0",
        "root_div_id": root_id,
        "layer": layer,
        "heads": None if head is None else [head],
        "include_layers": list(range(n_layers)),
    }
    body = _head_body(root_id, [d["name"] for d in attn_data] if len(attn_data) > 1 else [])
    document = _document(body, _bertviz_js("head_view.js", params), "bertviz head view")
    height = _head_height(len(shown_tokens))
    return _result(document, height, "Attention head view", len(shown_tokens), len(tokens), note)


def model_view_html(
    tokens: list[str],
    attention,
    layers: list[int] | None = None,
    max_tokens: int = 40,
    decimals: int = 3,
    heads: list[int] | None = None,
) -> ViewResult:
    """Render bertviz's model view: the chosen heads (all if None) of the chosen layers (all if None).

    Fewer heads get wider thumbnails: on a narrow screen a visitor picks a few heads at a time and still
    reaches every one; the drawing also scales down to the frame's width (`FIT_WIDTH_JS`)."""
    tokens, attn = _validated(tokens, attention, max_tokens, decimals)
    n_layers, n_heads = attn.shape[:2]
    layers = _checked_layers(layers, n_layers)
    heads = _checked_heads(heads, n_heads)
    shown_tokens, shown_attn, note = _truncated(tokens, attn[layers][:, heads], max_tokens)
    shown = _prettified(shown_tokens)
    root_id = _root_id()
    params = {
        "attention": [{"name": None, "attn": _rounded(shown_attn, decimals), "left_text": shown, "right_text": shown}],
        "default_filter": "0",
        "display_mode": "light",
        "root_div_id": root_id,
        "include_layers": layers,
        "include_heads": heads,
        "total_heads": len(heads),
    }
    document = _document(_model_body(root_id), _bertviz_js("model_view.js", params) + FIT_WIDTH_JS,
                         "bertviz model view")
    height = _model_height(len(shown_tokens), len(layers), len(heads))
    return _result(document, height, "Attention model view", len(shown_tokens), len(tokens), note,
                   drawn_width=MODEL_DRAWN_WIDTH_PX)


def word_shading_html(words: list[str], weights, source: int, title: str = "", special: float | None = None,
                      decimals: int = 3, text: str | None = None, spans: list[tuple[int, int]] | None = None) -> str:
    """The sentence with each word shaded by one head's attention from the source word (plain HTML, no script).

    `weights` (one per word) is the word-level attention from `words[source]`; shading is relative to the
    largest weight shown, and every word's exact value is in its tooltip. `special` is the attention that
    went to special tokens ([CLS], [SEP]), which belong to no word. With the `text` and each word's character
    `spans`, the words keep the text's own spacing; else they are joined by spaces. Every word is HTML-escaped.
    """
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise ValueError("words must be a list of strings")
    weights = np.asarray(_as_array(weights), dtype=np.float64).reshape(-1)
    if len(weights) != len(words) or not len(words):
        raise ValueError(f"got {len(weights)} weights for {len(words)} words (one each, at least one)")
    if not np.isfinite(weights).all():
        raise ValueError("weights contain NaN or infinite values")
    source = _as_int("source", source)
    if not 0 <= source < len(words):
        raise ValueError(f"source {source} is out of range for {len(words)} words")
    if (text is None) != (spans is None) or (spans is not None and len(spans) != len(words)):
        raise ValueError("give both text and one span per word, or neither")
    gaps = [" "] * len(words) if spans is None else \
        [text[spans[i - 1][1]:spans[i][0]] if i else "" for i in range(len(words))]
    top = max(float(weights.max()), 1e-9)
    shown = []
    for i, (word, weight) in enumerate(zip(words, weights)):
        alpha = 0.0 if i == source else weight / top
        ink = "#fff" if alpha > 0.55 else "#111"
        tip = f"{word}: {weight:.{decimals}f}" + (" (the source word: attention goes from here)" if i == source else "")
        classes = "ws-word ws-source" if i == source else "ws-word"
        shown.append(html.escape(gaps[i]) if i else "")
        shown.append(f'<span class="{classes}" title="{html.escape(tip)}" data-value="{weight:.{decimals}f}" '
                     f'style="background:rgba(29,78,216,{alpha:.3f});color:{ink}">{html.escape(word)}</span>')
    # The three words that draw the most attention (punctuation marks are shaded but not named here).
    order = [i for i in np.argsort(-weights, kind="stable") if i != source and any(c.isalnum() for c in words[i])][:3]
    strongest = ", ".join(f"{html.escape(words[i])} {weights[i]:.{decimals}f}" for i in order)
    to_special = ("" if special is None else
                  f" To special tokens ([CLS], [SEP]; no word): {float(special):.{decimals}f}.")
    style = ("<style>.ws-wrap{font-size:16px;line-height:2.1;max-width:100%;overflow-wrap:anywhere}"
             ".ws-wrap .ws-sentence{white-space:pre-wrap}.ws-wrap .ws-word{padding:2px 1px;border-radius:3px;cursor:help}"
             ".ws-wrap .ws-source{outline:2px solid #f97316;font-weight:600}"
             ".ws-wrap .ws-title{font-weight:600;font-size:13px;line-height:1.3;margin-bottom:4px}"
             ".ws-wrap .ws-note{font-size:12px;color:#555;line-height:1.3;margin-top:4px}</style>")
    return (f'{style}<div class="ws-wrap">'
            + (f'<div class="ws-title">{html.escape(title)}</div>' if title else "")
            + f'<div class="ws-sentence">{"".join(shown)}</div>'
            f'<div class="ws-note">Darker blue: more attention from the outlined word (the darkest is '
            f'{top:.{decimals}f}); hover a word for its value. Strongest: {strongest or "none"}.{to_special}</div></div>')


# ---------------------------------------------------------------- validation


def _as_array(attention) -> np.ndarray:
    """Turn a numpy array or (possibly GPU, grad-tracking) torch tensor into a float64 array."""
    if hasattr(attention, "detach"):
        attention = attention.detach().cpu().float().numpy()
    return np.asarray(attention, dtype=np.float64)


def _validated(tokens, attention, max_tokens: int, decimals: int) -> tuple[list[str], np.ndarray]:
    """Check tokens, attention shape, values and options; return tokens and the array."""
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokens must be a list of strings")
    tokens = list(tokens)
    attn = _as_array(attention)
    if attn.ndim != 4:
        raise ValueError(
            f"attention must have shape (layers, heads, tokens, tokens) for one sentence; got shape {attn.shape}"
        )
    if min(attn.shape) == 0:
        raise ValueError(f"attention is empty: shape {attn.shape}")
    if attn.shape[2] != attn.shape[3]:
        raise ValueError(f"attention must be square over tokens; got {attn.shape[2]} x {attn.shape[3]}")
    if attn.shape[2] != len(tokens):
        raise ValueError(f"attention covers {attn.shape[2]} tokens but {len(tokens)} tokens were given")
    if not np.isfinite(attn).all():
        raise ValueError("attention contains NaN or infinite values")
    if _as_int("max_tokens", max_tokens) < 1:
        raise ValueError(f"max_tokens must be at least 1; got {max_tokens}")
    if _as_int("decimals", decimals) < 0:
        raise ValueError(f"decimals must be 0 or more; got {decimals}")
    return tokens, attn


def _as_int(name: str, value) -> int:
    """Return value as an int, refusing bools, floats and other non-integers."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer; got {value!r}") from None


def _checked_index(name: str, value, count: int, plural: str) -> int | None:
    """Check that an optional layer/head index lies in range(count)."""
    if value is None:
        return None
    value = _as_int(name, value)
    if not 0 <= value < count:
        raise ValueError(f"{name} {value} is out of range: this model has {count} {plural} (0-{count - 1})")
    return value


def _checked_layers(layers, n_layers: int) -> list[int]:
    """Check a layer subset; return it sorted without duplicates (all layers if None)."""
    if layers is None:
        return list(range(n_layers))
    checked = [_checked_index("layer", layer, n_layers, "layers") for layer in layers]
    if not checked:
        raise ValueError("layers is empty: give at least one layer, or None for all layers")
    return sorted(set(checked))


def _checked_heads(heads, n_heads: int) -> list[int]:
    """The heads to draw, sorted and distinct; all of them when None or empty."""
    if heads is None or len(heads) == 0:
        return list(range(n_heads))
    return sorted({_checked_index("head", h, n_heads, "heads") for h in heads})


def _checked_split(sentence_b_start, n_tokens: int) -> int | None:
    """Check that sentence B starts strictly inside the token list."""
    if sentence_b_start is None:
        return None
    start = _as_int("sentence_b_start", sentence_b_start)
    if not 0 < start < n_tokens:
        raise ValueError(f"sentence_b_start {start} is out of range: it must be between 1 and {n_tokens - 1}")
    return start


# -------------------------------------------------------------- data prep


def _truncated(tokens: list[str], attn: np.ndarray, max_tokens: int) -> tuple[list[str], np.ndarray, str]:
    """Keep the first max_tokens tokens and their attention; explain any cut in a note."""
    if len(tokens) <= max_tokens:
        return tokens, attn, ""
    note = (
        f"Showing the first {max_tokens} of {len(tokens)} tokens; the weights shown are "
        "attention among those tokens only (not renormalised)."
    )
    return tokens[:max_tokens], attn[:, :, :max_tokens, :max_tokens], note


def _rounded(attn: np.ndarray, decimals: int) -> list:
    """Round weights to `decimals` places and return nested lists for JSON."""
    return np.round(attn, decimals).tolist()


def _prettified(tokens: list[str]) -> list[str]:
    """Remove BPE/SentencePiece markers as bertviz's prettify_tokens does."""
    return [t.replace("Ġ", " ").replace("▁", " ").replace("</w>", "") for t in tokens]


def _head_attn_data(tokens: list[str], attn: list, split: int | None) -> list[dict]:
    """Build bertviz's head-view attention list, with A/B filters when there is a split."""
    full = {"name": None if split is None else "All", "attn": attn, "left_text": tokens, "right_text": tokens}
    if split is None:
        return [full]
    parts = {"A": slice(0, split), "B": slice(split, len(tokens))}
    data = [full]
    for left, right in (("A", "A"), ("B", "B"), ("A", "B"), ("B", "A")):
        rows, cols = parts[left], parts[right]
        data.append(
            {
                "name": f"Sentence {left} -> Sentence {right}",
                "attn": [[[row[cols] for row in head[rows]] for head in layer] for layer in attn],
                "left_text": tokens[rows],
                "right_text": tokens[cols],
            }
        )
    return data


# ------------------------------------------------------------------- HTML


def _root_id() -> str:
    """Return a fresh id for bertviz's root div."""
    return f"bertviz-{uuid.uuid4().hex}"


def _head_body(root_id: str, filter_names: list[str]) -> str:
    """Return the head view's markup, as bertviz's head_view.py writes it."""
    options = "".join(f'<option value="{i}">{html.escape(name)}</option>' for i, name in enumerate(filter_names))
    select = f'Attention: <select id="filter">{options}</select>' if filter_names else ""
    return (
        f'<div id="{root_id}" style="font-family:\'Helvetica Neue\', Helvetica, Arial, sans-serif;">'
        f'<span style="user-select:none">Layer: <select id="layer"></select> {select}</span>'
        "<div id='vis'></div></div>"
    )


# bertviz draws the model view 970 px wide; on a narrow frame the heads on the right would be cut off, so the
# page scales the drawing down to the frame's width (never up).
FIT_WIDTH_JS = """
function fitWidth() {
  var scale = Math.min(1, (document.documentElement.clientWidth - 16) / 970);
  document.body.style.zoom = scale;
}
fitWidth();
window.addEventListener("resize", fitWidth);
"""


def _model_body(root_id: str) -> str:
    """Return the model view's markup, as bertviz's model_view.py writes it."""
    return (
        f'<div id="{root_id}" style="font-family:\'Helvetica Neue\', Helvetica, Arial, sans-serif;">'
        "<span style=\"user-select:none\"></span><div id='vis'></div></div>"
    )


def script_json(value) -> str:
    """Serialise value as JSON safe inside <script> (no '<', '>', '&', '/', U+2028/9 left raw)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    for char, escape in _JSON_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def _offline_js(js: str) -> str:
    """Drop URL-bearing line comments and write remaining http(s):// as http(s):\\/\\/."""
    js = _URL_SCHEME.sub(r"\1\\/\\/", _URL_LINE_COMMENT.sub("", js))
    if "</script" in js.lower():
        raise RuntimeError("a script to inline contains '</script', which would end its <script> element")
    return js


@lru_cache(maxsize=None)
def _libraries_js() -> tuple[str, ...]:
    """Read the vendored jQuery, d3 and require.js, ready to inline (in that order)."""
    return tuple(_offline_js((STATIC_DIR / name).read_text(encoding="utf-8")) for name in LIBRARY_FILES)


@lru_cache(maxsize=None)
def _bertviz_template(name: str) -> str:
    """Read a bertviz view script from the installed package, minus its CDN config."""
    js = resources.files("bertviz").joinpath(name).read_text(encoding="utf-8")
    js, n_configs = _REQUIRE_CONFIG.subn("", _HEADER_COMMENT.sub("", js, count=1))
    if n_configs != 1 or _PARAMS_MARKER not in js:
        raise RuntimeError(f"bertviz/{name} is not laid out as bertviz 1.4.1's; cannot adapt it")
    return _offline_js(js)


def _bertviz_js(name: str, params: dict) -> str:
    """Return bertviz's view script with the params filled in as script-safe JSON."""
    return _bertviz_template(name).replace(_PARAMS_MARKER, f"const params = {script_json(params)};", 1)


def _document(body: str, view_js: str, title: str) -> str:
    """Assemble the standalone page: libraries, define() shims, markup, bertviz script."""
    libraries = "\n".join(f"<script>\n{js}\n</script>" for js in _libraries_js())
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n"
        '<body style="margin:8px;background:#fff;color:#000">\n'
        f"{libraries}\n<script>\n{AMD_SHIMS}\n</script>\n"
        f"{body}\n<script>\n{view_js}\n</script>\n</body></html>\n"
    )


def _head_height(n_tokens: int) -> int:
    """Return the head view's iframe height in px for n_tokens rows."""
    return math.ceil(HEAD_CONTROLS_PX + HEAD_TOP_PX + HEAD_ROW_PX * n_tokens)


def _model_height(n_tokens: int, n_layers: int, n_heads: int) -> int:
    """Return the model view's iframe height in px (bertviz's divHeight plus margins)."""
    row = 7 * 12 / n_heads  # thumbnailBoxHeight
    thumbnails = n_layers * (n_tokens * row + 10) + MODEL_AXIS_PX
    detail = n_tokens * MODEL_DETAIL_ROW_PX + MODEL_DETAIL_EXTRA_PX
    return math.ceil(max(thumbnails, detail) + MODEL_CONTROLS_PX)


def _frame_style(height: int, drawn_width: int | None = None) -> str:
    """The iframe's CSS. A drawing that scales down to a narrow frame (`FIT_WIDTH_JS`, drawn `drawn_width`
    px wide plus the page margins) gets a frame whose height scales with it: the aspect ratio of the
    unscaled page, capped at its unscaled `height` (a wide frame never scales the drawing up). A sandboxed
    page cannot reach its parent to resize the frame, so the ratio is set here, from the same geometry."""
    if drawn_width is None:
        return f"width:100%;height:{height}px;border:0"
    return (f"width:100%;height:auto;aspect-ratio:{drawn_width + 2 * PAGE_MARGIN_PX}/{height};"
            f"max-height:{height}px;border:0")


def _iframe(document: str, height: int, title: str, drawn_width: int | None = None) -> str:
    """Wrap the page in a script-only sandboxed iframe (no same-origin access)."""
    return (
        f'<iframe sandbox="allow-scripts" title="{html.escape(title)}" referrerpolicy="no-referrer" '
        f'style="{_frame_style(height, drawn_width)}" srcdoc="{html.escape(document, quote=True)}"></iframe>'
    )


def _result(document: str, height: int, title: str, shown: int, total: int, note: str,
            drawn_width: int | None = None) -> ViewResult:
    """Package a page as a ViewResult."""
    return ViewResult(_iframe(document, height, title, drawn_width), document, shown, total, shown < total, note)


# -------------------------------------------------------------- notebooks


@dataclass(frozen=True)
class View(ViewResult):
    """A rendered view that displays itself in Jupyter, JupyterLab and VS Code, offline.

    `_repr_html_` gives the same sandboxed iframe as `.html` (the libraries inlined, no CDN, no require.js
    from the notebook), so the view draws where bertviz's own notebook output stays blank. `str(view)` is that
    HTML too, for code that expects a string; `.document`, `.note` and the token counts are as in ViewResult.
    """

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html


def head_view(model, text: str, *, layer: int | None = None, head: int | None = None,
              max_tokens: int = 60) -> View:
    """The head view of one text under `model` (a name, a LoadedModel, or None for the default "minilm"),
    opening on `layer` with only `head` selected. In a notebook, the returned View displays itself."""
    tokens, attention, note = _attention_of(model, text)
    return _as_view(head_view_html(tokens, attention, layer=layer, head=head, max_tokens=max_tokens), note)


def model_view(model, text: str, *, layers: list[int] | None = None, heads: list[int] | None = None,
               max_tokens: int = 40) -> View:
    """The model view (the chosen heads of the chosen layers, all if None) of one text; displays itself."""
    tokens, attention, note = _attention_of(model, text)
    return _as_view(model_view_html(tokens, attention, layers=layers, heads=heads, max_tokens=max_tokens), note)


def _attention_of(model, text: str) -> tuple[list[str], np.ndarray, str]:
    """Tokens and attention (layers, heads, tokens, tokens) of one text, and a note if the model cut it."""
    from probing.models import as_loaded
    from probing.runner import run_with_attention
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string; got {text!r}")
    loaded = as_loaded(model)
    sentence = run_with_attention(loaded, text)
    note = (f"The text is longer than the {loaded.max_length} tokens {loaded.name} reads; only its beginning "
            "is shown." if sentence.encoded.truncated else "")
    return sentence.tokens, sentence.attention, note


def _as_view(result: ViewResult, note: str) -> View:
    """The ViewResult as a View, with the model's truncation note (if any) before the view's own."""
    values = {name: getattr(result, name) for name in result.__dataclass_fields__}
    values["note"] = " ".join(part for part in (note, result.note) if part)
    return View(**values)
