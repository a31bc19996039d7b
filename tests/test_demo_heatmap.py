"""The demo's heatmap (`probing.demo.heatmap`): a grid of clickable heads, diverging colours centred on 0 for
signed values, significant and argmax heads marked and explained, narrow grids that do not overflow."""
import re

import numpy as np

from probing.demo.heatmap import ARGMAX_MEANING, heatmap_html, is_signed

EVIL = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"


def backgrounds(grid):
    return re.findall(r'data-layer="\d+" data-head="\d+" title="[^"]*" aria-label="[^"]*" '
                      r'style="background:(#[0-9a-f]{6})', grid)


def test_signed_values_get_a_diverging_map_with_white_at_zero():
    values = np.array([[-0.2, 0.0, 0.1]])
    assert is_signed(values) and not is_signed(np.abs(values))
    grid = heatmap_html(values, "above_baseline")
    low, zero, high = backgrounds(grid)
    assert zero in ("#f7f6f6", "#f7f7f7", "#f8f8f8", "#f6f6f6")       # RdBu_r's middle is (almost) white
    assert int(low[5:7], 16) > int(low[1:3], 16) and int(high[1:3], 16) > int(high[5:7], 16)   # blue < 0 < red
    assert "-0.20" in grid and "0.20" in grid and "0 (white)" in grid        # symmetric range around 0
    assert "0 (white)" not in heatmap_html(np.abs(values), "attention")     # viridis for non-negative values
    assert "0 (white)" in heatmap_html(np.abs(values), "above_baseline", diverging=True)


def test_significant_and_argmax_heads_are_marked_and_explained():
    values = np.full((2, 3), 0.5)
    significant = np.zeros((2, 3), bool)
    significant[1, 0] = True
    marked = np.zeros((2, 3), bool)
    marked[0, 2] = True
    grid = heatmap_html(values, "t", marked, significant=significant, value_meaning="share of attention")
    cells = re.findall(r'class="([^"]*)" data-layer="(\d)" data-head="(\d)"', grid)
    assert [(l, h) for c, l, h in cells if "hh-significant" in c] == [("1", "0")]
    assert "beats its baseline on the dataset (maxT-corrected)" in grid and "share of attention" in grid
    assert "special tokens left out" in grid and "[SEP]" in ARGMAX_MEANING
    plain = heatmap_html(values, "t")
    assert not re.search(r'class="hh-cell[^"]*hh-significant', plain) and "red outline" not in plain   # no key for a mark not shown


def test_narrow_grids_hide_numbers_instead_of_overflowing():
    grid = heatmap_html(np.zeros((2, 12)), "t")
    assert "minmax(0,1fr)" in grid and "container-type:inline-size" in grid
    assert "@container (max-width: 480px){.hh-wrap button.hh-cell{font-size:0 !important}" in grid


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
