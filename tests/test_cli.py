"""`python -m analysis heads` end to end, its error messages, and the real numbers of the default model."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from probing.examples import load_examples
from probing.heads import score_heads

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    {"text": "The lawyer did not sign the contract.", "relation": "negation", "source_span": [15, 18],
     "target_span": [19, 23]},
    {"text": "She was not happy about the noise.", "relation": "negation", "source_span": [8, 11],
     "target_span": [12, 17]},
    {"text": "They could not find the keys anywhere.", "relation": "negation", "source_span": [11, 14],
     "target_span": [15, 19]},
]


def _write(path: Path, rows) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_heads_end_to_end_writes_four_files(tmp_path, capsys):
    data = _write(tmp_path / "small.jsonl", SMALL)
    out = tmp_path / "out"
    assert main(["heads", "--data", str(data), "--out", str(out), "--n-boot", "50", "--n-perm", "200"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["heads.csv", "heatmap.png", "report.md", "summary.json"]
    table = pd.read_csv(out / "heads.csv")
    assert len(table) == 72
    for column in ("layer", "head", "mean_attention", "accuracy", "next_word_baseline", "selectivity",
                   "selectivity_ci_low", "selectivity_ci_high", "p_value", "p_holm"):
        assert column in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["direction"] == "cue->next_word" and summary["n_examples"] == 3
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "not explanation" in (out / "report.md").read_text() or "not why" in (out / "report.md").read_text()
    assert "top heads by selectivity" in capsys.readouterr().out


def test_existing_results_are_not_overwritten_without_force(tmp_path, capsys):
    data = _write(tmp_path / "small.jsonl", SMALL)
    out = tmp_path / "out"
    args = ["heads", "--data", str(data), "--out", str(out), "--n-boot", "20", "--n-perm", "50"]
    assert main(args) == 0
    before = (out / "heads.csv").stat().st_mtime_ns
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "heads.csv").stat().st_mtime_ns == before
    assert main(args + ["--force"]) == 0


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "malformed JSON"),
    (json.dumps({**SMALL[0], "source_span": [15, 999]}), "out of range"),
    (json.dumps({k: v for k, v in SMALL[0].items() if k != "relation"}), "missing field"),
    (json.dumps({**SMALL[0], "relation": "sarcasm"}), "relation must be one of"),
    (json.dumps({**SMALL[0], "target_span": [16, 20]}), "overlap"),
])
def test_bad_row_names_file_and_line_or_is_skipped(tmp_path, capsys, bad_line, message):
    data = _write(tmp_path / "bad.jsonl", [SMALL[0], bad_line, SMALL[1]])
    assert main(["heads", "--data", str(data), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2:" in err and message in err
    assert main(["heads", "--data", str(data), "--out", str(tmp_path / "o2"), "--skip-bad",
                 "--n-boot", "20", "--n-perm", "50"]) == 0
    assert "2 records, 1 skipped" in capsys.readouterr().err
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["n_skipped_loading"] == 1


def test_wrong_encoding_and_empty_file(tmp_path, capsys):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(SMALL[0]).encode() + b"\n" + '{"text": "caf\xe9"}'.encode("latin-1") + b"\n")
    assert main(["heads", "--data", str(latin), "--out", str(tmp_path / "o")]) == 2
    assert f"{latin}:2: the file is not UTF-8" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["heads", "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no valid examples" in capsys.readouterr().err


def test_unknown_dataset_and_model_are_explained(tmp_path, capsys):
    assert main(["heads", "--data", "no-such-set", "--out", str(tmp_path / "o")]) == 2
    assert "no-such-set" in capsys.readouterr().err
    data = _write(tmp_path / "small.jsonl", SMALL)
    assert main(["heads", "--data", str(data), "--model", str(tmp_path / "missing-model"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_sigterm_leaves_no_partial_result(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "analysis", "heads", "--data", "builtin-coref",
                                "--out", str(out), "--n-perm", "200000"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until scoring has started (the loader's summary line), then stop it mid-run.
    deadline = time.time() + 120
    line = ""
    while "records" not in line and time.time() < deadline:
        line = process.stderr.readline()
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    # 130 from our handler; -SIGINT when the interrupt lands while Python is shutting a library down.
    assert process.returncode in (130, -signal.SIGINT), err[-500:]
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert leftovers == [], leftovers
    assert "no partial result" in err


def test_default_model_negation_heads_real_numbers(minilm):
    """On the built-in negation set the raw-attention leader is a positional head, not the selective one."""
    examples, _ = load_examples("builtin-negation")
    table = score_heads(minilm, examples, n_boot=200, n_perm=10000).table.set_index(["layer", "head"])
    top_raw = table["mean_attention"].idxmax()
    top_selective = table["selectivity"].idxmax()
    assert top_raw == (1, 8) and top_selective == (1, 7)
    assert table.loc[(1, 8), "next_word_baseline"] > 0.55            # it looks at any next word
    assert table.loc[(1, 8), "selectivity"] < 0.02
    assert table.loc[(1, 7), "selectivity"] > 0.12
    assert table.loc[(1, 7), "selectivity_ci_low"] > table.loc[(1, 8), "selectivity_ci_high"]
    assert table.loc[(1, 7), "p_holm"] < 0.05
    # The control adverb gets less of head 1-7's attention to the next word than "not" does.
    assert table.loc[(1, 7), "paired_difference"] > 0.1


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "gap-coreference").exists()
                    and not os.environ.get("PROBING_DATA_ROOT"), reason="GAP data not present")
def test_default_model_gap_heads_beat_nearest_candidate(minilm):
    examples, _ = load_examples("gap-dev", limit=300)
    table = score_heads(minilm, examples, n_boot=200, n_perm=1000).table
    best = table.sort_values("accuracy", ascending=False).iloc[0]
    assert (best["layer"], best["head"]) in {(3, 1), (4, 10), (3, 7)}
    assert best["accuracy_ci_low"] > best["nearest_candidate_accuracy"] + 0.05
