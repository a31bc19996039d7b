"""`python -m analysis heads` end to end, its error messages, and the real numbers of the default model."""
import argparse
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from probing.outputs import DONE_MARKER, current_umask, is_complete
from probing.report.heads import HEAD_FILES
from probing.examples import load_examples
from probing.heads import score_heads
from tests.conftest import needs_datasets

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


def test_heads_end_to_end_writes_the_head_files(tmp_path, capsys):
    data = _write(tmp_path / "small.jsonl", SMALL)
    out = tmp_path / "out"
    assert main(["heads", "--data", str(data), "--out", str(out), "--n-boot", "50", "--n-perm", "200"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".done.json", "heads.csv", "heatmap.png", "report.md",
                                                     "strata.csv", "summary.json"]
    assert is_complete(out)
    # Files get the permissions the umask asks for (the test process's umask), not a temporary file's 0600.
    assert {stat.S_IMODE((out / f).stat().st_mode) for f in HEAD_FILES} == {0o666 & ~current_umask()}
    table = pd.read_csv(out / "heads.csv")
    assert len(table) == 72
    for column in ("layer", "head", "mean_attention", "accuracy", "next_word_baseline", "above_baseline",
                   "above_baseline_ci_low", "above_baseline_ci_high", "p_value", "p_holm"):
        assert column in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["direction"] == "cue->next_word" and summary["n_examples"] == 3
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "not explanation" in (out / "report.md").read_text() or "not why" in (out / "report.md").read_text()
    assert "top heads by above_baseline" in capsys.readouterr().out


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


# A child process runs `analysis heads` on a three-row file with a hook that signals the process itself at
# one exact point: deterministic, whatever the machine's speed, and no dataset needed.
KILL_SCRIPT = """
import os, signal, sys
import probing.heads, probing.outputs
point, how = sys.argv[1], getattr(signal, sys.argv[2])
if point == "scoring":
    real = probing.heads.score_heads
    def score_heads(*a, **k):
        os.kill(os.getpid(), how)
        return real(*a, **k)
    probing.heads.score_heads = score_heads
else:                                   # "after-N-files": during publishing, after N files were moved in
    n = int(point.split("-")[1])
    real_replace = os.replace
    moved = []
    def replace(src, dst):
        real_replace(src, dst)
        if ".staging-" in str(src) and ".staging-" not in str(dst):
            moved.append(dst)
            if len(moved) == n:
                os.kill(os.getpid(), how)
    os.replace = replace
from analysis.__main__ import main
sys.exit(main(["heads", "--data", sys.argv[3], "--out", sys.argv[4], "--n-boot", "20", "--n-perm", "50", "--force"]))
"""


def _run_killed(tmp_path, data, out, point, how):
    process = subprocess.run([sys.executable, "-c", KILL_SCRIPT, point, how, str(data), str(out)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    return process.returncode, process.stderr


@pytest.mark.slow
def test_sigterm_at_any_point_leaves_the_previous_result_or_nothing_trusted(tmp_path):
    data = _write(tmp_path / "small.jsonl", SMALL)
    # No previous result: SIGTERM while scoring leaves nothing at all (not even an empty folder).
    code, err = _run_killed(tmp_path, data, tmp_path / "fresh", "scoring", "SIGTERM")
    assert code == 130, err[-800:]
    assert "nothing was written" in err and not (tmp_path / "fresh").exists()
    # A previous complete result, then SIGTERM while scoring: the previous result is untouched and trusted.
    out = tmp_path / "out"
    assert main(["heads", "--data", str(data), "--out", str(out), "--n-boot", "20", "--n-perm", "50"]) == 0
    before = {f: (out / f).read_bytes() for f in HEAD_FILES + [DONE_MARKER]}
    code, err = _run_killed(tmp_path, data, out, "scoring", "SIGTERM")
    assert code == 130 and "still holds the previous complete result, untouched" in err, err[-800:]
    assert {f: (out / f).read_bytes() for f in before} == before and is_complete(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)           # no staging folder or .tmp left
    # SIGTERM while the files are being moved in: held back for those few renames, so the new result is
    # complete and the message says so.
    code, err = _run_killed(tmp_path, data, out, "after-2-files", "SIGTERM")
    assert code == 130 and "holds the new complete result" in err, err[-800:]
    assert is_complete(out) and (out / DONE_MARKER).read_bytes() != before[DONE_MARKER]


@pytest.mark.slow
def test_kill_9_while_publishing_leaves_a_folder_no_reader_trusts(tmp_path):
    data = _write(tmp_path / "small.jsonl", SMALL)
    out = tmp_path / "out"
    assert main(["heads", "--data", str(data), "--out", str(out), "--n-boot", "20", "--n-perm", "50"]) == 0
    code, _ = _run_killed(tmp_path, data, out, "after-2-files", "SIGKILL")
    assert code == -signal.SIGKILL
    assert (out / "heads.csv").exists() and not (out / DONE_MARKER).exists() and not is_complete(out)
    assert any(p.name.startswith(".staging-") for p in out.iterdir())      # the dead run's staging folder
    # The next run removes what the killed one left and publishes a complete result.
    assert main(["heads", "--data", str(data), "--out", str(out), "--n-boot", "20", "--n-perm", "50",
                 "--force"]) == 0
    assert is_complete(out) and not any(p.name.startswith(".staging-") or p.name.endswith(".tmp")
                                        for p in out.iterdir())


def test_out_path_problems_are_one_line_and_leave_no_folder(tmp_path, capsys):
    data = _write(tmp_path / "small.jsonl", SMALL)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(["heads", "--data", str(data), "--out", str(a_file)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {a_file} is a file, not a folder"
    assert main(["heads", "--data", str(data), "--out", str(a_file / "sub" / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {a_file / 'sub' / 'out'} cannot be made: " \
                                              f"{a_file} is a file, not a folder"
    # A run that fails (bad data) after the checks leaves no empty folder behind.
    bad = _write(tmp_path / "bad.jsonl", ["{not json"])
    assert main(["heads", "--data", str(bad), "--out", str(tmp_path / "new" / "deeper")]) == 2
    assert not (tmp_path / "new").exists()


def test_out_path_without_permission_is_one_line(tmp_path, capsys, monkeypatch):
    """The check asks the OS (`os.access`) whether the folder may be written in. Mode bits do not bind root, and
    CI runs as root, so the OS is made to answer as it does to an ordinary user for this 0500 folder."""
    data = _write(tmp_path / "small.jsonl", SMALL)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        not mode & os.W_OK if Path(path) == locked else real_access(path, mode, **kw)))
    assert main(["heads", "--data", str(data), "--out", str(locked / "out")]) == 2
    assert "cannot be written: no permission" in capsys.readouterr().err


def test_deeply_nested_json_is_a_bad_row(tmp_path, capsys):
    data = _write(tmp_path / "deep.jsonl", [SMALL[0], "[" * 100_000 + "]" * 100_000, SMALL[1]])
    assert main(["heads", "--data", str(data), "--out", str(tmp_path / "o1")]) == 2
    assert f"{data}:2: nested too deeply" in capsys.readouterr().err
    assert main(["heads", "--data", str(data), "--out", str(tmp_path / "o2"), "--skip-bad",
                 "--n-boot", "20", "--n-perm", "50"]) == 0
    assert "2 records, 1 skipped" in capsys.readouterr().err


@pytest.mark.slow
@needs_datasets
def test_default_model_gap_heads_beat_nearest_candidate(minilm):
    examples = load_examples("gap-dev", limit=300)
    table = score_heads(minilm, examples, n_boot=200, n_perm=1000).table
    best = table.sort_values("accuracy", ascending=False).iloc[0]
    assert (best["layer"], best["head"]) in {(3, 1), (4, 10), (3, 7)}
    assert best["accuracy_ci_low"] > best["nearest_candidate_accuracy"] + 0.05


# ---- every command's --help: at once, with defaults, without torch ------------------------------------------

HELP_SCRIPT = """
import contextlib, io, sys
from analysis.__main__ import main
with contextlib.redirect_stdout(io.StringIO()) as shown:
    try:
        main([sys.argv[1], "--help"])
    except SystemExit:
        pass
print(sorted(m for m in ("torch", "transformers", "pandas") if m in sys.modules))
print(shown.getvalue())
"""


@pytest.mark.parametrize("command", ["heads", "patch", "probe", "ablate", "report", "bench"])
def test_help_imports_no_torch_and_shows_defaults(command):
    shown = subprocess.run([sys.executable, "-c", HELP_SCRIPT, command], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr[-800:]
    imported, _, text = shown.stdout.partition("\n")
    assert imported == "[]", f"`{command} --help` imported {imported}"
    assert "--model" in text and "(default" in text


def test_the_commands_defaults_are_the_librarys():
    import inspect
    from analysis import heads, patch
    from probing import defaults
    from probing.heads import score_heads
    parser = argparse.ArgumentParser()
    heads.add_arguments(parser)
    args = parser.parse_args(["--data", "x", "--out", "y"])
    signature = inspect.signature(score_heads).parameters
    for name, constant in (("n_boot", "N_BOOT"), ("n_perm", "N_PERM"), ("batch_tokens", "BATCH_TOKENS"),
                           ("source_pieces", "SOURCE_PIECES"), ("mention", "MENTION")):
        assert getattr(args, name) == signature[name].default == getattr(defaults, constant)
    parser = argparse.ArgumentParser()
    patch.add_arguments(parser)
    args = parser.parse_args(["--data", "x", "--out", "y", "--kinds", " denoising,noising,noising "])
    assert (args.n_random, args.seed, args.kinds) == (defaults.N_RANDOM, defaults.SEED, ("denoising", "noising"))


# ---- every option checked when parsed: refused in words, exit 2, before any dataset or model loads ----------

@pytest.fixture
def nothing_may_load(monkeypatch):
    """Loading a model or a dataset fails the test: the refusal must come before either."""
    import probing.examples
    import probing.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model or a dataset was loaded before the options were checked")
    for module, name in ((probing.models, "load_model"), (probing.models, "load_lm_model"),
                         (probing.examples, "load_examples")):
        monkeypatch.setattr(module, name, refuse)


def test_an_unknown_patch_kind_is_refused_at_once_with_the_valid_kinds(tmp_path, capsys, nothing_may_load):
    from probing import defaults
    out = tmp_path / "out"
    assert main(["patch", "--data", "builtin-negation", "--out", str(out), "--kinds", "noising,noisin"]) == 2
    err = capsys.readouterr().err
    assert "error: argument --kinds: unknown 'noisin'; choose from" in err
    assert all(kind in err for kind in defaults.PATCH_KINDS)
    assert not out.exists()


def test_the_negated_word_target_is_refused_without_confirm_or_where_no_plan_has_it(tmp_path, capsys,
                                                                                     nothing_may_load):
    out = tmp_path / "out"
    assert main(["heads", "--data", "builtin-negation", "--out", str(out), "--target", "negated-word"]) == 2
    assert "error: --target negated-word goes with --confirm" in capsys.readouterr().err
    assert main(["heads", "--data", "gap-dev", "--confirm", "--out", str(out), "--target", "negated-word"]) == 2
    assert "--target negated-word knows held-out sets for builtin-negation, cd-sco-dev" in capsys.readouterr().err
    assert not (out / "confirm.json").exists()


@pytest.mark.parametrize("command", ["heads", "patch", "probe", "ablate"])
@pytest.mark.parametrize("value, words", [("-1", "must be at least 1, got -1"), ("0", "must be at least 1, got 0"),
                                          ("ten", "must be a whole number, got 'ten'")])
def test_a_limit_below_one_is_refused_in_words(tmp_path, capsys, nothing_may_load, command, value, words):
    args = [command, *COMMAND_ARGS[command], "--out", str(tmp_path / "out"), "--limit", value]
    assert main(args) == 2
    assert f"error: argument --limit: {words}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


BAD_OPTIONS = [  # (command and its required arguments, the bad option, the words its refusal must hold)
    ("patch", ["--readout", "logit"], "argument --readout: invalid choice: 'logit'"),
    ("patch", ["--method", "exactly"], "argument --method: invalid choice: 'exactly'"),
    ("patch", ["--kinds", ","], "argument --kinds: name at least one of noising"),
    ("patch", ["--set-sizes", "1,x"], "argument --set-sizes: must be whole numbers separated by commas"),
    ("patch", ["--set-sizes", "0,3"], "argument --set-sizes: must be whole numbers of at least 1"),
    ("patch", ["--n-random", "0"], "argument --n-random: must be at least 1, got 0"),
    ("patch", ["--n-perm", "19"], "argument --n-perm: must be at least 20, got 19"),
    ("heads", ["--n-boot", "5"], "argument --n-boot: must be at least 20, got 5"),
    ("heads", ["--batch-tokens", "8"], "argument --batch-tokens: must be at least 64, got 8"),
    ("heads", ["--source-pieces", "first"], "argument --source-pieces: invalid choice: 'first'"),
    ("heads", ["--mention", "word"], "argument --mention: invalid choice: 'word'"),
    ("heads", ["--relation", "coref"], "argument --relation: invalid choice: 'coref'"),
    ("heads", ["--dtype", "f32"], "argument --dtype: invalid choice: 'f32'"),
    ("heads", ["--device", "gpu"], "argument --device: must be cpu, cuda or cuda:N"),
    ("probe", ["--folds", "1"], "argument --folds: must be at least 2, got 1"),
    ("probe", ["--seed", "-3"], "argument --seed: must be at least 0, got -3"),
    ("ablate", ["--mode", "half"], "argument --mode: invalid choice: 'half'"),
    ("ablate", ["--draws", "0"], "argument --draws: must be at least 1, got 0"),
    ("ablate", ["--k", "0"], "argument --k: must be at least 1, got 0"),
    ("ablate", ["--heads", "negation=a.csv,syntax=b.csv"], "argument --heads: takes negation=PATH,coreference=PATH"),
    ("bench", ["--n", "0"], "argument --n: must be at least 1, got 0"),
    ("bench", ["--eager-memory-gib", "nan"], "argument --eager-memory-gib: must be a number above 0"),
]


@pytest.mark.parametrize("command, bad, words", BAD_OPTIONS, ids=[f"{c} {b[0]}" for c, b, _ in BAD_OPTIONS])
def test_every_bounded_or_enumerated_option_is_checked_when_parsed(tmp_path, capsys, nothing_may_load, command,
                                                                   bad, words):
    out = ["--out", str(tmp_path / "out")] if command != "bench" else []
    assert main([command, *COMMAND_ARGS.get(command, []), *out, *bad]) == 2
    err = capsys.readouterr().err
    assert f"error: {words}" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["heads", "patch", "probe", "ablate", "report", "bench"])
def test_every_commands_help_answers_in_process_with_its_bounds(capsys, command):
    assert main([command, "--help"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: python -m analysis " + command)
    if command != "report":                   # report's options are flags and names, no numbers
        assert "at least" in shown


COMMAND_ARGS = {"heads": ["--data", "builtin-negation"], "patch": ["--data", "builtin-negation"],
                "probe": ["--task", "negation"], "ablate": [], "report": ["--quick"]}


@pytest.mark.parametrize("command", sorted(COMMAND_ARGS))
def test_every_command_refuses_an_empty_or_unmakeable_out_in_words_before_computing(tmp_path, capsys, command):
    assert main([command, *COMMAND_ARGS[command], "--out", ""]) == 2
    assert capsys.readouterr().err.strip() == "error: --out is empty: name the folder to write into (it is made " \
                                              "if it does not exist)"
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main([command, *COMMAND_ARGS[command], "--out", str(a_file / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{a_file} is a file, not a folder" in err, err
    assert not (tmp_path / "sub").exists()


@pytest.mark.slow
def test_probe_into_a_new_nested_folder_publishes_a_complete_result(tmp_path):
    out = tmp_path / "some" / "new" / "folder"
    assert main(["probe", "--task", "negation", "--limit", "60", "--folds", "2", "--n-boot", "20",
                 "--out", str(out)]) == 0
    assert is_complete(out)
    listed = json.loads((out / DONE_MARKER).read_text())["files"]
    assert "probe_negation.json" in listed and sorted(listed) == sorted(
        p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))


def test_an_integer_of_more_than_4300_digits_is_a_bad_row_that_skip_bad_counts(tmp_path, capsys):
    huge = '{"text": "x", "relation": "negation", "source_span": [0, ' + "1" * 5000 + '], "target_span": [0, 1]}'
    data = _write(tmp_path / "huge.jsonl", [SMALL[0], huge, SMALL[1]])
    assert main(["heads", "--data", str(data), "--out", str(tmp_path / "o1")]) == 2
    assert f"{data}:2: a number in the row is too long to read" in capsys.readouterr().err
    assert main(["heads", "--data", str(data), "--out", str(tmp_path / "o2"), "--skip-bad",
                 "--n-boot", "20", "--n-perm", "50"]) == 0
    assert "2 records, 1 skipped" in capsys.readouterr().err


def test_the_line_reader_is_linear_on_blank_lines(tmp_path):
    """4 MB of blank lines between two rows: read in well under the 7 CPU-seconds the per-line re-slicing took."""
    import time
    from probing.examples.format import read_jsonl
    path = tmp_path / "blank.jsonl"
    path.write_text(json.dumps(SMALL[0]) + "\n" + "\n" * 4_000_000 + json.dumps(SMALL[1]) + "\n")
    started = time.process_time()
    examples, _ = read_jsonl(path)
    assert len(examples) == 2 and time.process_time() - started < 3.0


def test_the_patch_commands_readout_choices_are_the_librarys():
    from analysis.patch import READOUT_CHOICES
    from probing.patching.readouts import READOUTS
    assert READOUT_CHOICES == READOUTS
