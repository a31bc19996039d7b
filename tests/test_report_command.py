"""`analysis report`: where it writes (never a --quick run into the committed reports), and the staleness check
that fails CI when a committed report was made by other scoring code than the current one."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis import report
from analysis.__main__ import main
from probing.examples.loaders import default_data_root

ROOT = Path(report.__file__).resolve().parent.parent
COMMITTED = sorted(p.name for p in (ROOT / "reports").iterdir() if (p / "summary.json").exists())


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return parser.parse_args(list(argv))


# ---- the committed reports are current -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("folder", COMMITTED)
def test_committed_report_was_made_by_the_current_scoring_code(folder):
    """Compares recorded keys only (no rerun). If this fails, the change that altered the numbers must also
    regenerate the report: `python -m analysis report --model <model> --commit-reports`."""
    if not default_data_root().is_dir():
        pytest.skip(f"the datasets are not at {default_data_root()}, so their fingerprints cannot be compared")
    model = json.loads((ROOT / "reports" / folder / "summary.json").read_text())["model"]
    problems = report.stale_steps(ROOT / "reports" / folder, model)
    assert not problems, (f"reports/{folder} is stale; regenerate it with `python -m analysis report --model {model} "
                          "--commit-reports`:\n" + "\n".join(problems))


def test_committed_reports_exist():
    assert "minilm" in COMMITTED


# ---- what the code version covers ------------------------------------------------------------------

def test_code_files_are_the_scoring_code_and_not_the_demo():
    files = {c: {p.as_posix() for p in report.code_files(c)} for c in ("heads", "probe", "ablate")}
    assert {"analysis/heads.py", "probing/heads.py", "probing/stats.py", "probing/runner.py", "probing/alignment.py",
            "probing/models.py", "probing/examples/loaders.py", "probing/report/heads.py"} <= files["heads"]
    assert {"analysis/probe.py", "probing/probes.py", "probing/features.py"} <= files["probe"]
    assert {"analysis/ablate.py", "probing/ablation.py"} <= files["ablate"]
    everything = set().union(*files.values())
    for unrelated in ("probing/views.py", "probing/demo/backend.py", "probing/demo/explore.py",
                      "probing/demo/heatmap.py", "probing/outputs.py", "analysis/report.py", "app.py", "README.md"):
        assert unrelated not in everything


def _copy_code(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for package in ("probing", "analysis"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "builtin",
                                                                                     "static"))
    (root / "README.md").write_text("readme\n")
    return root


@pytest.mark.slow
def test_code_version_changes_with_scoring_code_only(tmp_path):
    root = _copy_code(tmp_path)
    before = {c: report.code_version(c, root) for c in ("heads", "probe", "ablate")}
    assert before == {c: report.code_version(c) for c in before}  # same bytes, same version as the checkout

    for unrelated in ("probing/views.py", "probing/demo/backend.py", "probing/demo/heatmap.py", "README.md"):
        (root / unrelated).write_text((root / unrelated).read_text() + "\n# an edit that computes nothing\n")
    assert {c: report.code_version(c, root) for c in before} == before

    (root / "probing/stats.py").write_text((root / "probing/stats.py").read_text() + "\nTHRESHOLD = 0.06\n")
    after = {c: report.code_version(c, root) for c in before}
    assert all(after[c] != before[c] for c in before)

    (root / "analysis/probe.py").write_text((root / "analysis/probe.py").read_text() + "\n# probe only\n")
    assert report.code_version("probe", root) != after["probe"]
    assert report.code_version("heads", root) == after["heads"]


def test_imports_inside_functions_and_relative_imports_are_followed(tmp_path):
    root = _copy_code(tmp_path)
    (root / "probing/extra.py").write_text("from . import helper_b\n")
    (root / "probing/helper_b.py").write_text("VALUE = 1\n")
    (root / "probing/stats.py").write_text((root / "probing/stats.py").read_text()
                                           + "\n\ndef _late():\n    from probing.extra import VALUE\n    return VALUE\n")
    files = {p.as_posix() for p in report.code_files("heads", root)}
    assert {"probing/extra.py", "probing/helper_b.py"} <= files


# ---- stale_steps names what changed ---------------------------------------------------------------

def _fresh_report(out: Path, data_root: Path) -> list:
    """Markers for every planned step, with the keys the current code records (built-in sets only)."""
    steps = report.plan("minilm", data_root, quick=False)
    for step in steps:
        (out / step.name).mkdir(parents=True)
        (out / step.name / report.DONE).write_text(json.dumps({"key": report.step_key(step, "minilm", data_root)}))
    return steps


@pytest.mark.slow
def test_stale_steps_is_empty_for_current_keys_and_names_each_difference(tmp_path):
    out, data_root = tmp_path / "report", tmp_path / "no-datasets"
    data_root.mkdir()
    steps = _fresh_report(out, data_root)
    assert [s.name for s in steps] == ["heads/builtin-coref", "heads/builtin-negation", "probe/coref",
                                       "probe/negation", "probe/layers", "patching/builtin-negation",
                                       "patching/builtin-negation-sentence", "ablation"]
    assert report.stale_steps(out, "minilm", data_root) == []

    marker = out / "heads/builtin-negation" / report.DONE
    record = json.loads(marker.read_text())
    record["key"]["code"] = "0123456789abcdef"
    record["key"]["argv"] = record["key"]["argv"] + ["--limit", "60"]
    marker.write_text(json.dumps(record))
    (out / "ablation" / report.DONE).unlink()
    (out / "heads/old-set").mkdir()
    (out / "heads/old-set" / report.DONE).write_text("{}")
    problems = report.stale_steps(out, "minilm", data_root)
    assert len(problems) == 3
    assert problems[0].startswith("heads/builtin-negation: argv (recorded") and "code (recorded '0123456789abcdef'" \
        in problems[0]
    assert problems[1].startswith("ablation: no finished run recorded")
    assert problems[2] == "heads/old-set: recorded, but no such step in the current plan"


@pytest.mark.slow
def test_check_command_exit_codes(tmp_path, capsys):
    out, data_root = tmp_path / "report", tmp_path / "no-datasets"
    data_root.mkdir()
    _fresh_report(out, data_root)
    assert main(["report", "--check", "--out", str(out), "--data-root", str(data_root)]) == 0
    assert "every step is current" in capsys.readouterr().out
    (out / "probe/layers" / report.DONE).unlink()
    assert main(["report", "--check", "--out", str(out), "--data-root", str(data_root)]) == 1
    printed = capsys.readouterr().out
    assert "stale: probe/layers: no finished run recorded" in printed
    assert f"regenerate with `python -m analysis report --model minilm --out {out}`" in printed


# ---- where a run writes ----------------------------------------------------------------------------

def test_output_folder_defaults_and_the_explicit_request_for_committed_reports():
    assert report.output_folder(parse(), "minilm") == Path("out/report/minilm")
    assert report.output_folder(parse("--quick"), "minilm") == Path("out/quick/minilm")
    assert report.output_folder(parse("--quick"), "org/model") == Path("out/quick/org_model")
    assert report.output_folder(parse("--out", "x/y"), "minilm") == Path("x/y")
    assert report.output_folder(parse("--commit-reports"), "minilm") == ROOT / "reports" / "minilm"
    assert report.output_folder(parse("--check"), "mpnet") == ROOT / "reports" / "mpnet"


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--commit-reports"], "--quick never writes into the committed reports"),
    (["--quick", "--out", str(ROOT / "reports" / "minilm")], "--quick never writes into the committed reports"),
    (["--quick", "--out", str(ROOT / "reports" / "minilm" / ".." / "new")], "--quick never writes into the"),
    (["--commit-reports", "--out", "x"], "give either --commit-reports or --out, not both"),
])
def test_quick_run_into_the_committed_reports_is_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        report.output_folder(parse(*argv), "minilm")


def test_quick_run_writes_under_out_quick_and_leaves_the_repository_clean(tmp_path, monkeypatch, capsys):
    """The whole command with the steps replaced by a stand-in (the real steps take minutes): every file lands
    under ./out/quick/minilm and `git status` of reports/ stays clean."""
    def fake_step(step, folder, key):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text("{}")
        (folder / report.DONE).write_text(json.dumps({"key": key}))
        return {"key": key, "seconds": 0.0}

    monkeypatch.setattr(report, "run_step", fake_step)
    monkeypatch.chdir(tmp_path)
    data_root = tmp_path / "no-datasets"
    data_root.mkdir()
    before = subprocess.run(["git", "status", "--porcelain", "reports"], cwd=ROOT, capture_output=True, text=True)
    assert main(["report", "--quick", "--data-root", str(data_root)]) == 0
    after = subprocess.run(["git", "status", "--porcelain", "reports"], cwd=ROOT, capture_output=True, text=True)
    assert after.stdout == before.stdout
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert "out/quick/minilm/report.md" in written and "out/quick/minilm/heads/builtin-coref/summary.json" in written
    assert all(p.startswith("out/quick/minilm/") for p in written)
    assert "Quick run" in (tmp_path / "out/quick/minilm/report.md").read_text()
    assert main(["report", "--quick", "--out", str(ROOT / "reports" / "minilm")]) == 2
    assert "--quick never writes into the committed reports" in capsys.readouterr().err


@pytest.mark.slow
def test_a_partial_report_is_checked_on_the_steps_it_recorded(tmp_path):
    out, data_root = tmp_path / "report", tmp_path / "no-datasets"
    data_root.mkdir()
    _fresh_report(out, data_root)
    for name in ("probe", "patching", "ablation"):
        shutil.rmtree(out / name)
    assert any(p.startswith("ablation: no finished run") for p in report.stale_steps(out, "minilm", data_root))
    (out / "summary.json").write_text(json.dumps({"model": "minilm", "only": ["heads"]}))
    assert report.stale_steps(out, "minilm", data_root) == []      # the subset it ran is current
    steps = report.plan("minilm", data_root, quick=False)
    assert [s.name for s in report.select(steps, ["heads/"])] == ["heads/builtin-coref", "heads/builtin-negation"]
    assert report.select(steps, None) == steps
    with pytest.raises(ValueError, match="no step of the plan matches"):
        report.select(steps, ["head"])


# ---- publishing: every folder checked first, each step's files whole, the report's own files marked ---------

def test_report_refuses_an_unwritable_step_folder_before_computing_anything(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(report, "run_step", lambda *a: ran.append(a))
    data_root = tmp_path / "no-datasets"
    data_root.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "probe").write_text("a file where the probe steps' folder belongs")
    assert main(["report", "--quick", "--out", str(out), "--data-root", str(data_root)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {out / 'probe/coref'} cannot be made: " \
                                              f"{out / 'probe'} is a file, not a folder"
    assert ran == []


def _fake_command(monkeypatch):
    """A stand-in for the step commands that publishes like them (write_complete), in a few milliseconds."""
    from types import SimpleNamespace
    from probing.outputs import prepare_out_dir, write_complete

    def add_arguments(parser):
        parser.add_argument("--out")
        parser.add_argument("--force", action="store_true")
        known = parser.parse_known_args                  # the steps' other options are not this stand-in's
        parser.parse_args = lambda argv: known(argv)[0]

    def run(args):
        out = prepare_out_dir(args.out, ["summary.json"], args.force)
        write_complete(out, ["summary.json", "report.md"],
                       lambda staging: ((staging / "summary.json").write_text("{}"),
                                        (staging / "report.md").write_text("# step\n")))
        return 0

    module = SimpleNamespace(add_arguments=add_arguments, run=run)
    monkeypatch.setattr(report.importlib, "import_module", lambda name: module)


@pytest.mark.slow
def test_report_into_a_new_nested_folder_publishes_every_step_and_itself_whole(tmp_path, monkeypatch):
    from probing.outputs import DONE_MARKER, is_complete
    _fake_command(monkeypatch)
    data_root = tmp_path / "no-datasets"
    data_root.mkdir()
    out = tmp_path / "out" / "some" / "new" / "folder"
    assert report.run(parse("--quick", "--out", str(out), "--data-root", str(data_root))) == 0
    steps = report.plan("minilm", data_root, quick=True)
    for step in steps:
        record = json.loads((out / step.name / DONE_MARKER).read_text())
        # the command's marker (its files, its run) and the report's key, in one record
        assert is_complete(out / step.name) and record["files"] == ["summary.json", "report.md"]
        assert record["key"] == report.step_key(step, "minilm", data_root)
    assert is_complete(out) and json.loads((out / DONE_MARKER).read_text())["files"] == ["summary.json", "report.md"]
    # the report's own marker is not taken for a step (a quick run's steps are all stale against the full plan)
    planned = {step.name for step in report.plan("minilm", data_root, quick=False)}
    assert all(problem.split(":")[0] in planned for problem in report.stale_steps(out, "minilm", data_root))


def test_the_plan_s_random_head_sets_are_tests_that_can_pass(tmp_path):
    """The encoders get the library's 1,000 random sets, the decoders none; wherever sets run,
    Holm over their 8 comparisons can fall below ALPHA (8 / (1 + n) < ALPHA), so a non-rejection is a result,
    not a floor; a quick run uses 100 (its own --n-random last, so it wins)."""
    from probing import defaults

    def argv(model, quick=False):
        return next(s.argv for s in report.plan(model, tmp_path / "none", quick=quick)
                    if s.name == "patching/builtin-negation")

    for encoder in ("minilm", "mpnet"):
        assert "--sets" in argv(encoder) and "--n-random" not in argv(encoder)
    assert defaults.N_RANDOM == 1000 and 8 / (1 + defaults.N_RANDOM) < defaults.ALPHA
    assert all("--sets" not in argv(model) for model in report.DECODERS)
    quick = argv("minilm", quick=True)
    assert quick[len(quick) - 1 - quick[::-1].index("--n-random") + 1] == "100"


def test_the_plan_patches_every_head_exactly_but_gemma_s_winogender_screen(tmp_path, monkeypatch):
    """No step's named heads come from a family chosen on its own pairs, except the one screened step (Gemma's
    Winogender contexts, too costly exactly), which says `--method screen` in its arguments."""
    monkeypatch.setattr(report, "available", lambda name, data_root: True)     # every dataset's step planned
    screened = []
    for model in ("minilm", "mpnet", "gemma-270m"):
        for step in report.plan(model, tmp_path / "none", quick=False):
            if step.command == "patch" and "--method" in step.argv:
                assert step.argv[step.argv.index("--method") + 1] == "screen"
                screened.append(f"{model}:{step.name}")
    assert screened == ["gemma-270m:patching/winogender"]
