"""Interactive layer x head heatmaps (plotly) for the demo; the static PNG lives with the CLI."""
from __future__ import annotations

import numpy as np


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
    figure.update_layout(title={"text": title, "font": {"size": 13}}, height=120 + 28 * n_layers,
                         margin={"l": 50, "r": 20, "t": 50, "b": 40},
                         xaxis={"title": "head", "dtick": 1}, yaxis={"title": "layer", "dtick": 1, "autorange": "reversed"})
    return figure
