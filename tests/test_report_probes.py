"""The probe report writer: every file written, a probe that does not beat its control said so in words,
and the Markdown rebuilt from the JSON payload alone. Hand-made results, no model."""
import json

import numpy as np
import pandas as pd
import pytest

from probing.features import CandidateFeatures
from probing.probes import coref_probe_from_features, layer_probe_from_states
from probing.report.probes import (coref_markdown, expected_files, layers_markdown, pct, pts, slug,
                                   write_coref_report, write_layers_report)


def _features(signal: float, n: int = 160, seed: int = 0) -> CandidateFeatures:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 2, 2, 2, 3)).astype(np.float32)
    target = rng.integers(0, 2, n)
    features[np.arange(n), target, 0, 0, 0] += signal
    return CandidateFeatures(model="synthetic", ids=[f"x{i}" for i in range(n)], groups=[f"g{i // 2}" for i in range(n)],
                             features=features, candidate_mask=np.ones((n, 2), bool), target=target,
                             nearest=np.zeros(n, int), first=np.ones(n, int),
                             candidate_words=[(f"a{i % 9}", f"b{i % 7}") for i in range(n)],
                             twins=[None] * n, agreement=[False] * n)


@pytest.fixture(scope="module")
def coref_results():
    kw = dict(n_folds=3, Cs=(1.0,), n_boot=50)
    return {"signal": coref_probe_from_features(_features(5.0), data="signal", **kw),
            "noise": coref_probe_from_features(_features(0.0, seed=1), data="noise", **kw)}


@pytest.mark.slow
def test_coref_report_files_and_verdicts(tmp_path, coref_results):
    written = write_coref_report(tmp_path, coref_results, "synthetic", {"signal": 1.0, "noise": 1.0})
    assert written == expected_files("coref", ["signal", "noise"])
    for name in written:
        assert (tmp_path / name).stat().st_size > 0, name
    markdown = (tmp_path / "probe_coref.md").read_text()
    noise_section = markdown.split("## noise")[1]
    signal_section = markdown.split("## signal")[1].split("## noise")[0]
    assert "does **not** beat its control task" in noise_section
    assert "does **not** beat its control task" not in signal_section
    assert "agreement rule" in markdown and "control task, train" in markdown
    payload = json.loads((tmp_path / "probe_coref.json").read_text())
    assert coref_markdown(payload) == markdown                     # the JSON alone rebuilds the report
    table = pd.read_csv(tmp_path / "probe_coref_accuracy.csv")
    assert {"data", "name", "mean", "ci_low", "ci_high"} <= set(table.columns)
    assert "control task: train accuracy" in set(table["name"])


@pytest.mark.slow
def test_layers_report_says_where_the_probe_fails_its_control(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    labels = np.tile(["negated", "control"], n // 2)
    states = rng.normal(size=(n, 2, 4))
    states[:, 1, 0] += np.where(labels == "negated", 3.0, -3.0)
    groups = [f"p{i // 2}" for i in range(n)]
    result = layer_probe_from_states(states, labels, groups, [f"w{i // 2 % 5}" for i in range(n)],
                                     swap_states=rng.normal(size=(n, 2, 4)),
                                     swap_labels=np.tile(["control", "swap"], n // 2), swap_groups=groups,
                                     n_folds=3, Cs=(1.0,), n_boot=50, model="synthetic", task="negation",
                                     label="negated vs control sentence")
    result.adverb_swap = "control vs swap"
    written = write_layers_report(tmp_path, {"negation": result}, "synthetic", ["x"], {"negation": 1.0})
    assert all((tmp_path / name).stat().st_size > 0 for name in written)
    markdown = (tmp_path / "probe_layers.md").read_text()
    assert "does **not** beat its control task at layer(s) 0" in markdown
    assert "Negation is decodable beyond a word swap at layer(s) 1" in markdown
    payload = json.loads((tmp_path / "probe_layers.json").read_text())
    assert layers_markdown(payload) == markdown


def test_number_formats_and_names():
    assert pct({"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}) == "50.0% [40.0, 60.0]"
    assert pct({"mean": 0.5, "ci_low": float("nan"), "ci_high": float("nan")}) == "50.0%"
    assert pts({"mean": -0.01, "ci_low": -0.02, "ci_high": 0.0}) == "-1.0 points [-2.0, +0.0]"
    assert slug("data/my set.jsonl") == "my_set" and slug("gap") == "gap"
    with pytest.raises(ValueError, match="task"):
        expected_files("bogus", [])
