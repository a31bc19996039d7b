"""Layer x head heatmaps for the demo.

`heatmap_html` is the demo's heatmap: a grid of buttons, one per head, coloured by value, that the page can
click (the demo's `gr.HTML` turns a click into `{layer, head}`). Every string in it is HTML-escaped, it has
no script and no URL, so it is safe to put user words (the source and target) in its title.
Signed values (a difference such as above_baseline, which can be negative) get a diverging red-blue map centred
on 0, so white means "no better than the baseline"; values that cannot be negative get viridis.
"""
from __future__ import annotations

import html

import numpy as np

SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"


def _colour(cmap, x: float) -> tuple[str, str]:
    """Background hex colour for x in [0, 1], and black or white text, whichever reads better on it."""
    r, g, b, _ = cmap(float(np.clip(x, 0.0, 1.0)))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#{:02x}{:02x}{:02x}".format(round(r * 255), round(g * 255), round(b * 255)), ("#000" if luminance > 0.5 else "#fff")


def colour_range(values: np.ndarray, diverging: bool) -> tuple[float, float]:
    """The value range the colours span: 0..max for attention, symmetric around 0 for a difference."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (-1.0, 1.0) if diverging else (0.0, 1.0)
    if diverging:
        top = max(float(np.abs(finite).max()), 1e-9)
        return -top, top
    low = min(0.0, float(finite.min()))
    return low, max(float(finite.max()), low + 1e-9)


ARGMAX_MEANING = ("red outline: the target gets more of this head's attention than any other word of the sentence "
                  "(special tokens such as [CLS] and [SEP] are not words and are left out of this comparison, so a "
                  "head can win with little attention while most of it goes to [SEP])")
SIGNIFICANT_MEANING = "dot: this head beats its baseline on the dataset beside the table (GAP for coreference where the report has it; one-sided paired test, corrected over all heads: maxT p_fwer < 0.05)"


def is_signed(values: np.ndarray) -> bool:
    """Whether the values hold negatives, so they need a diverging map centred on 0."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return bool(finite.size and finite.min() < 0)


def heatmap_html(values: np.ndarray, title: str, marked: np.ndarray | None = None,
                 selected: tuple[int, int] | None = None, diverging: bool | None = None, decimals: int = 2,
                 significant: np.ndarray | None = None, value_meaning: str = "",
                 hint: str = "Click a head to show it in the views below; hover for its exact value.") -> str:
    """A clickable layer x head grid: one `<button data-layer data-head>` per head, coloured by its value.

    `marked` (bool, same shape) outlines the heads whose argmax is the target; `significant` (bool, same shape)
    puts a dot on heads that beat their baseline on a dataset; `selected` rings one head. `diverging` None
    chooses by the values (a diverging map centred on 0 when any is negative); a signed metric should pass
    True so that a sentence whose values all happen to be positive is still coloured around 0.
    `value_meaning` is a one-line explanation of the numbers, shown under the grid, `hint` what a click does
    (the explorer tabs' default: it moves their views). NaN values are grey, "n/a".
    On a narrow screen (a grid under about 480 px) the numbers are hidden; every cell keeps its tooltip.
    """
    import matplotlib
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"values must be a non-empty (layers, heads) array, got shape {values.shape}")
    n_layers, n_heads = values.shape
    marked = np.zeros(values.shape, bool) if marked is None else np.asarray(marked, bool)
    significant = np.zeros(values.shape, bool) if significant is None else np.asarray(significant, bool)
    for name, array in (("marked", marked), ("significant", significant)):
        if array.shape != values.shape:
            raise ValueError(f"{name} must have the values' shape {values.shape}, got {array.shape}")
    diverging = is_signed(values) if diverging is None else diverging
    cmap = matplotlib.colormaps[DIVERGING if diverging else SEQUENTIAL]
    low, high = colour_range(values, diverging)
    show_numbers = n_heads <= 16
    cells = ['<div class="hh-corner">layer \\ head</div>']
    cells += [f'<div class="hh-axis">{h}</div>' for h in range(n_heads)]
    for layer in range(n_layers):
        cells.append(f'<div class="hh-axis">{layer}</div>')
        for head in range(n_heads):
            value = values[layer, head]
            classes = ["hh-cell"]
            if marked[layer, head]:
                classes.append("hh-argmax")
            if significant[layer, head]:
                classes.append("hh-significant")
            if selected is not None and tuple(selected) == (layer, head):
                classes.append("hh-selected")
            if np.isfinite(value):
                background, ink = _colour(cmap, (value - low) / (high - low))
                shown, tip = f"{value:.{decimals}f}", f"{value:.4f}"
            else:
                background, ink, shown, tip = "#d0d0d0", "#333", "n/a", "n/a"
            tip = (f"layer {layer}, head {head}: {tip}"
                   + (" · the target wins this head's argmax over the sentence's words" if marked[layer, head] else "")
                   + (" · beats its baseline on the dataset" if significant[layer, head] else ""))
            cells.append(
                f'<button type="button" class="{" ".join(classes)}" data-layer="{layer}" data-head="{head}" '
                f'title="{html.escape(tip)}" aria-label="{html.escape(tip)}" '
                f'style="background:{background};color:{ink}">{shown if show_numbers else ""}</button>')
    stops = ", ".join(_colour(cmap, x)[0] for x in np.linspace(0, 1, 9))
    centre = '<span class="hh-zero">0 (white)</span>' if diverging else ""
    keys = ['<span class="hh-key"><span class="hh-swatch hh-selected"></span>shown below</span>']
    if marked.any():
        keys.insert(0, f'<span class="hh-key" title="{html.escape(ARGMAX_MEANING)}"><span class="hh-swatch hh-argmax">'
                       '</span>red outline: the target wins this head\'s argmax over the words '
                       '(special tokens left out)</span>')
    if significant.any():
        keys.insert(0, f'<span class="hh-key" title="{html.escape(SIGNIFICANT_MEANING)}"><span class="hh-swatch '
                       'hh-significant"></span>dot: beats its baseline on the dataset (maxT-corrected)</span>')
    legend = (f'<div class="hh-legend"><span class="hh-scale"><span>{low:.2f}</span>'
              f'<span class="hh-bar" style="background:linear-gradient(to right, {stops})"></span>'
              f'<span>{high:.2f}</span>{centre}</span>{"".join(keys)}</div>')
    meaning = f'<div class="hh-meaning">{html.escape(value_meaning)}</div>' if value_meaning else ""
    style = (
        "<style>"
        ".hh-wrap{font-size:12px;line-height:1.2;max-width:760px;container-type:inline-size;min-width:0}"
        ".hh-wrap .hh-title{font-weight:600;margin:0 0 6px 0;word-break:break-word}"
        ".hh-wrap .hh-grid{display:grid;gap:2px;align-items:center;min-width:0}"
        ".hh-wrap .hh-axis,.hh-wrap .hh-corner{color:#666;text-align:center;font-size:11px;padding:0 2px}"
        ".hh-wrap .hh-corner{white-space:nowrap}"
        ".hh-wrap button.hh-cell{height:28px;min-width:0;width:100%;margin:0;border:0;border-radius:2px;padding:0;"
        "font-size:10px !important;font-weight:400 !important;line-height:28px;cursor:pointer;"
        "font-family:inherit;overflow:hidden;white-space:nowrap;box-shadow:none;position:relative}"
        ".hh-wrap .hh-small button.hh-cell{height:18px;line-height:18px}"
        ".hh-wrap button.hh-cell:hover,.hh-wrap button.hh-cell:focus-visible{outline:2px solid #f97316;"
        "outline-offset:1px}"
        ".hh-wrap .hh-argmax{box-shadow:inset 0 0 0 2px #e00000,inset 0 0 0 3px #fff !important}"
        ".hh-wrap .hh-significant::after{content:'';position:absolute;top:2px;right:2px;width:6px;height:6px;"
        "border-radius:50%;background:#111;box-shadow:0 0 0 1px #fff}"
        ".hh-wrap .hh-selected{outline:3px solid #000 !important;outline-offset:1px;z-index:1}"
        ".hh-wrap .hh-legend{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin-top:8px;color:#444}"
        ".hh-wrap .hh-scale{display:inline-flex;align-items:center;gap:6px}"
        ".hh-wrap .hh-zero{color:#666}"
        ".hh-wrap .hh-bar{display:inline-block;width:120px;height:10px;border-radius:2px}"
        ".hh-wrap .hh-key{display:inline-flex;align-items:center;gap:4px}"
        ".hh-wrap .hh-swatch{display:inline-block;width:14px;height:14px;background:#ccc;border-radius:2px;"
        "position:relative;flex:none}"
        ".hh-wrap .hh-meaning,.hh-wrap .hh-hint{color:#555;margin-top:4px}"
        # Under ~480 px a cell is too narrow for "-0.12": hide the numbers; hover and tap still show them.
        "@container (max-width: 480px){.hh-wrap button.hh-cell{font-size:0 !important}.hh-wrap .hh-bar{width:70px}}"
        "</style>"
    )
    return (f'{style}<div class="hh-wrap" data-layers="{n_layers}" data-heads="{n_heads}">'
            f'<div class="hh-title">{html.escape(title)}</div>'
            f'<div class="hh-grid{"" if show_numbers else " hh-small"}" '
            f'style="grid-template-columns:auto repeat({n_heads},minmax(0,1fr))">{"".join(cells)}</div>'
            f'{legend}{meaning}'
            f'<div class="hh-hint">{html.escape(hint)}</div></div>')


# Runs once in the browser when the demo's heatmap component loads: one delegated listener on the
# component, so it keeps working when the grid inside is replaced.
HEATMAP_CLICK_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest('button[data-layer][data-head]');
  if (!cell || !element.contains(cell)) return;
  trigger('click', {layer: Number(cell.dataset.layer), head: Number(cell.dataset.head)});
});
"""
