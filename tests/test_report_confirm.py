"""`probing.report.confirm`: the confirmation section names the exploration set, the held-out sets and the
chosen heads, escapes what it quotes, and `analysis heads --confirm` writes it."""
import json

import pytest

from probing.confirm import ConfirmResult, confirmation_rows
from tests.conftest import needs_datasets
from tests.test_confirm import _table


def test_confirm_markdown_names_the_sets_and_heads_and_escapes_them():
    from probing.report.confirm import confirm_markdown
    table = confirmation_rows(_table([0.3, 0.2], [1, 1], p_value=[0.01, 0.6]), "paired_difference", [(0, 0), (0, 1)],
                              "<b>held|out</b>")
    result = ConfirmResult(model="toy", relation="negation", task="all-words", exploration_set="mine (explore)",
                           confirmation_sets=["<b>held|out</b>"], main_score="paired_difference", chosen=["0-0", "0-1"],
                           exploration=_table([0.3, 0.2], [0.001, 0.01]), table=table, notes=["a note"])
    text = confirm_markdown(result)
    assert "**mine (explore)**" in text and "**0-0, 0-1**" in text and "&lt;b&gt;held&#124;out&lt;/b&gt;" in text
    assert "<b>" not in text and "| 0-0 | paired_difference | 0.300 [0.200, 0.400] | 0.01 | 0.02 | 40 | yes |" in text
    # A test that does not reject says what it could have detected: (1.96 + 0.84) x (0.1 / 1.96) = 0.143
    assert ("| 0-1 | paired_difference | 0.200 [0.100, 0.300] | 0.6 | 0.6 | 40 | not shown with 40 units "
            "(detectable at 80% power: about 0.143) |") in text and "- a note" in text
    assert "no effect" not in text and "no more than" not in text
    assert "*When the rules were fixed.* No record of when" in text     # a set RULES_FIXED does not name
    small = confirmation_rows(_table([0.3], [1], p_value=[0.01], n_units=23), "paired_difference", [(0, 0)], "half")
    text = confirm_markdown(ConfirmResult(**{**result.__dict__, "table": small}))
    assert "| 0.01 | 0.01 | 23 | descriptive (< 30 units) |" in text and "| yes |" not in text


def test_confirm_json_carries_the_detectable_difference_of_each_row():
    from probing.report.confirm import confirm_dict
    table = confirmation_rows(_table([0.3, 0.2], [1, 1], p_value=[0.01, 0.6]), "paired_difference", [(0, 0), (0, 1)],
                              "half")
    result = ConfirmResult(model="toy", relation="negation", task="all-words", exploration_set="e",
                           confirmation_sets=["half"], main_score="paired_difference", chosen=["0-0", "0-1"],
                           exploration=_table([0.3, 0.2], [0.001, 0.01]), table=table, notes=[])
    data = confirm_dict(result)
    assert [r["detectable_difference"] for r in data["confirmation"]] == pytest.approx([0.1429, 0.1429], abs=1e-4)
    assert "80% power" in data["detectable_difference_rule"]
    json.dumps(data, allow_nan=False)       # valid JSON: no NaN


@pytest.mark.slow
@needs_datasets
def test_analysis_heads_confirm_writes_the_section(tmp_path, capsys):
    from analysis.__main__ import main
    out = tmp_path / "confirm"
    assert main(["heads", "--data", "builtin-coref", "--confirm", "--limit", "80", "--n-boot", "50", "--n-perm", "500",
                 "--out", str(out)]) == 0
    data = json.loads((out / "confirm.json").read_text())
    assert data["exploration_set"] == "builtin-coref (exploration half)"
    assert data["confirmation_sets"] == ["builtin-coref (confirmation half)", "wsc273"]
    assert len(data["chosen_heads"]) <= 5
    assert {r["set"] for r in data["confirmation"]} == (set(data["confirmation_sets"]) if data["chosen_heads"] else set())
    text = (out / "confirm.md").read_text()
    assert "Exploration set: **builtin-coref (exploration half)**" in text and "**wsc273**" in text
    assert main(["heads", "--data", "winobias", "--confirm", "--out", str(tmp_path / "x")]) != 0
    assert "--confirm knows held-out sets for builtin-negation, builtin-coref, gap-dev; not for 'winobias'" in \
        capsys.readouterr().err
