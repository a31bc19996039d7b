"""The findings page: generated from the committed reports (the committed page is what the generator writes),
every number on it read from them, the claim rules applied to recorded numbers, and a worded error when a
report lacks a key the page needs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis.__main__ import main
from probing import defaults
from probing.report.findings import FINDINGS_FILE, FindingsError, findings_markdown, write_findings
from tests.report_numbers import REPORTS, strip_code, unrecorded_heads, unrecorded_values

STEPS = ("heads/builtin-negation", "confirm/builtin-negation", "patching/builtin-negation")


def test_the_committed_findings_page_is_what_the_generator_writes_from_the_committed_reports():
    committed = (REPORTS / FINDINGS_FILE).read_text(encoding="utf-8")
    assert committed == findings_markdown(REPORTS), \
        "reports/FINDINGS.md is stale: regenerate it with `python -m analysis report --findings-only`"


def test_every_number_and_head_on_the_page_comes_from_the_reports():
    page = findings_markdown(REPORTS)
    text = strip_code(page)
    assert unrecorded_values(text) == []
    assert unrecorded_heads(text) == []
    for model in ("minilm", "mpnet", "gemma-270m"):
        if (REPORTS / model / "summary.json").is_file():
            assert f"[{model}]({model}/report.md)" in page


def _toy(tmp_path: Path, edit=None) -> Path:
    """A one-model reports folder made of MiniLM's committed negation steps; `edit(step, data)` may change a
    step's JSON before it is written."""
    root = tmp_path / "reports"
    model = root / "toy"
    model.mkdir(parents=True)
    (model / "summary.json").write_text("{}")
    for step in STEPS:
        source, target = REPORTS / "minilm" / step, model / step
        target.mkdir(parents=True)
        for path in source.iterdir():
            if path.suffix in (".json", ".csv"):
                shutil.copy(path, target / path.name)
        (target / ".done.json").write_text("{}")
        if edit:
            name = "confirm.json" if step.startswith("confirm") else "summary.json"
            data = json.loads((target / name).read_text())
            edit(step, data)
            (target / name).write_text(json.dumps(data))
    return root


def _row(page: str, *cells: str) -> str:
    """The one table row whose first cells are these."""
    start = "| " + " | ".join(cells) + " |"
    rows = [line for line in page.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, rows)
    return rows[0]


def test_the_claim_rules_are_applied_to_the_recorded_numbers(tmp_path):
    def edit(step, data):
        if step.startswith("heads"):
            data["tasks"]["all-words"]["n_units"] = defaults.MIN_UNITS - 1
        if step.startswith("confirm"):
            for row in data["confirmation"]:
                row["confirmed"] = True          # an old or wrong file: the unit rule still holds
        if step.startswith("patching"):
            data["gate"]["passed"] = False
    page = findings_markdown(_toy(tmp_path, edit))
    assert f"descriptive (< {defaults.MIN_UNITS} units)" in _row(page, "builtin-negation", "toy")
    chosen = ("toy", "builtin-negation", "1-7, 2-8, 1-8, 2-1, 3-1")
    # columns from the right: descriptive, not confirmed, confirmed
    half = _row(page, *chosen, "builtin-negation (confirmation half)").split("|")
    assert "1-7 (0.248" in half[-2] and half[-4].strip() == "none"      # 23 units: descriptive, though "confirmed"
    assert "1-7 (0.418" in _row(page, *chosen, "blimp-npi-scope").split("|")[-4]     # 1,000 units: confirmed
    gate = _row(page, "toy", "builtin-negation", "132", "exact").split("|")
    assert "fails: nothing named" in gate[6] and gate[7].strip() == gate[8].strip() == "none"


def test_a_passing_gate_names_heads_with_their_control_effects(tmp_path):
    page = findings_markdown(_toy(tmp_path))
    row = _row(page, "toy", "builtin-negation", "132", "exact")
    assert "passes (44 units)" in row and "5-9 0.613 (control 0.166)" in row
    assert "5-9 0.612 (control 0.169)" in row
    assert "| toy | builtin-negation | noising | attention | 1 | 1-8 |" in page    # head sets, from sets.csv


def test_heads_are_read_in_every_form_a_summary_writes_them(tmp_path):
    """[layer, head], {"layer", "head", "effect"} and "L-H" give the same page; anything else is said in words."""
    def as_strings_and_dicts(step, data):
        if step.startswith("patching"):
            data["named"] = {k: [f"{l}-{h}" for l, h in v] for k, v in data["named"].items()}
            data["top"] = {k: [{"layer": l, "head": h, "effect": e} for l, h, e in v] for k, v in data["top"].items()}
    assert findings_markdown(_toy(tmp_path / "a", as_strings_and_dicts)) == findings_markdown(_toy(tmp_path / "b"))
    root = _toy(tmp_path / "c", lambda step, data: data["named"].update(noising=[[5]]) if step.startswith("patching")
                else None)
    with pytest.raises(FindingsError, match=r"cannot read a head from \[5\]"):
        findings_markdown(root)


def test_a_missing_key_is_an_error_that_names_the_file_and_the_key(tmp_path):
    root = _toy(tmp_path, lambda step, data: data.pop("gate", None) if step.startswith("patching") else None)
    with pytest.raises(FindingsError, match=r"patching/builtin-negation/summary.json.*'gate'"):
        findings_markdown(root)
    assert main(["report", "--findings-only", "--out", str(root)]) == 2
    assert not (root / FINDINGS_FILE).exists()


def test_an_incomplete_step_is_left_out_and_said(tmp_path):
    root = _toy(tmp_path)
    (root / "toy" / "patching" / "builtin-negation" / ".done.json").unlink()
    page = findings_markdown(root)
    assert "Left out (no completion marker, e.g. a killed run): toy/patching/builtin-negation." in page
    assert "No patching in these reports." in page


def test_findings_only_writes_the_page_and_runs_no_model(tmp_path, capsys):
    root = _toy(tmp_path)
    assert main(["report", "--findings-only", "--out", str(root)]) == 0
    assert (root / FINDINGS_FILE).read_text(encoding="utf-8") == findings_markdown(root)
    assert f"wrote {root / FINDINGS_FILE}" in capsys.readouterr().out
    assert write_findings(root, tmp_path / "elsewhere.md").read_text(encoding="utf-8") == findings_markdown(root)
    empty = tmp_path / "no-models"
    empty.mkdir()
    with pytest.raises(FindingsError, match="no model reports"):
        findings_markdown(empty)
