"""Layer x head heatmaps for the demo.

`heatmap_html` is the demo's heatmap: a grid of buttons, one per head, coloured by value, that the page can
click (the demo's `gr.HTML` turns a click into `{layer, head}`). Every string in it is HTML-escaped, it has
no script and no URL, so it is safe to put user words (the source and target) in its title.
`head_heatmap` is the same picture as a plotly figure, for notebooks.
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


def heatmap_html(values: np.ndarray, title: str, marked: np.ndarray | None = None,
                 selected: tuple[int, int] | None = None, diverging: bool = False, decimals: int = 2) -> str:
    """A clickable layer x head grid: one `<button data-layer data-head>` per head, coloured by its value.

    `marked` (bool, same shape) outlines the heads whose argmax is the target; `selected` rings one head.
    NaN values are grey and read "n/a".
    """
    import matplotlib
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"values must be a non-empty (layers, heads) array, got shape {values.shape}")
    n_layers, n_heads = values.shape
    marked = np.zeros(values.shape, bool) if marked is None else np.asarray(marked, bool)
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
            if selected is not None and tuple(selected) == (layer, head):
                classes.append("hh-selected")
            if np.isfinite(value):
                background, ink = _colour(cmap, (value - low) / (high - low))
                shown, tip = f"{value:.{decimals}f}", f"{value:.4f}"
            else:
                background, ink, shown, tip = "#d0d0d0", "#333", "n/a", "n/a"
            tip = f"layer {layer}, head {head}: {tip}" + (" (target wins the argmax)" if marked[layer, head] else "")
            cells.append(
                f'<button type="button" class="{" ".join(classes)}" data-layer="{layer}" data-head="{head}" '
                f'title="{html.escape(tip)}" aria-label="{html.escape(tip)}" '
                f'style="background:{background};color:{ink}">{shown if show_numbers else ""}</button>')
    stops = ", ".join(_colour(cmap, x)[0] for x in np.linspace(0, 1, 9))
    legend = (f'<div class="hh-legend"><span>{low:.2f}</span>'
              f'<span class="hh-bar" style="background:linear-gradient(to right, {stops})"></span>'
              f'<span>{high:.2f}</span>'
              '<span class="hh-key"><span class="hh-swatch hh-argmax"></span>target wins the argmax</span>'
              '<span class="hh-key"><span class="hh-swatch hh-selected"></span>shown below</span></div>')
    style = (
        "<style>"
        ".hh-wrap{font-size:12px;line-height:1.2;max-width:760px}"
        ".hh-wrap .hh-title{font-weight:600;margin:0 0 6px 0;word-break:break-word}"
        ".hh-wrap .hh-grid{display:grid;gap:2px;align-items:center}"
        ".hh-wrap .hh-axis,.hh-wrap .hh-corner{color:#666;text-align:center;font-size:11px;padding:0 2px}"
        ".hh-wrap .hh-corner{white-space:nowrap}"
        ".hh-wrap button.hh-cell{height:28px;min-width:0;margin:0;border:0;border-radius:2px;padding:0;"
        "font-size:10px !important;font-weight:400 !important;line-height:28px;cursor:pointer;"
        "font-family:inherit;overflow:hidden;white-space:nowrap;box-shadow:none}"
        ".hh-wrap .hh-small button.hh-cell{height:18px;line-height:18px}"
        ".hh-wrap button.hh-cell:hover,.hh-wrap button.hh-cell:focus-visible{outline:2px solid #f97316;"
        "outline-offset:1px}"
        ".hh-wrap .hh-argmax{box-shadow:inset 0 0 0 2px #e00000,inset 0 0 0 3px #fff !important}"
        ".hh-wrap .hh-selected{outline:3px solid #000 !important;outline-offset:1px;position:relative;z-index:1}"
        ".hh-wrap .hh-legend{display:flex;flex-wrap:wrap;align-items:center;gap:6px;margin-top:8px;color:#444}"
        ".hh-wrap .hh-bar{display:inline-block;width:120px;height:10px;border-radius:2px}"
        ".hh-wrap .hh-key{display:inline-flex;align-items:center;gap:4px;margin-left:10px}"
        ".hh-wrap .hh-swatch{display:inline-block;width:14px;height:14px;background:#ccc;border-radius:2px}"
        ".hh-wrap .hh-hint{color:#666;margin-top:4px}"
        "</style>"
    )
    return (f'{style}<div class="hh-wrap" data-layers="{n_layers}" data-heads="{n_heads}">'
            f'<div class="hh-title">{html.escape(title)}</div>'
            f'<div class="hh-grid{"" if show_numbers else " hh-small"}" '
            f'style="grid-template-columns:auto repeat({n_heads},minmax(18px,1fr))">{"".join(cells)}</div>'
            f'{legend}'
            '<div class="hh-hint">Click a head to show it in the head view below.</div></div>')


# Runs once in the browser when the demo's heatmap component loads: one delegated listener on the
# component, so it keeps working when the grid inside is replaced.
HEATMAP_CLICK_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest('button[data-layer][data-head]');
  if (!cell || !element.contains(cell)) return;
  trigger('click', {layer: Number(cell.dataset.layer), head: Number(cell.dataset.head)});
});
"""


def head_heatmap(values: np.ndarray, title: str, marked: np.ndarray | None = None, colorscale: str = "Viridis",
                 zmid: float | None = None):
    """A plotly heatmap of a (layers, heads) array; cells where `marked` is True get a red outline marker."""
    import plotly.graph_objects as go
    values = np.asarray(values, dtype=float)
    n_layers, n_heads = values.shape
    text = [[f"layer {l}, head {h}: {values[l, h]:.3f}" for h in range(n_heads)] for l in range(n_layers)]
    figure = go.Figure(go.Heatmap(z=values, x=list(range(n_heads)), y=list(range(n_layers)), colorscale=colorscale,
                                  zmid=zmid, hovertext=text, hoverinfo="text", colorbar={"thickness": 12}))
    if marked is not None and np.any(marked):
        layers, heads = np.nonzero(marked)
        figure.add_trace(go.Scatter(x=heads, y=layers, mode="markers", hoverinfo="skip", showlegend=False,
                                    marker={"symbol": "square-open", "size": 18, "color": "red",
                                            "line": {"width": 2}}))
    figure.update_layout(title={"text": html.escape(title), "font": {"size": 13}}, height=120 + 28 * n_layers,
                         margin={"l": 50, "r": 20, "t": 50, "b": 40},
                         xaxis={"title": "head", "dtick": 1}, yaxis={"title": "layer", "dtick": 1, "autorange": "reversed"})
    return figure
