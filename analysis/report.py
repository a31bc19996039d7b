"""`python -m analysis report`: heads, probes and ablations for one model, in one folder, resumable.

Each step runs one of the other commands (`heads`, `probe`, `ablate`) into its own sub-folder. A step that
finished is skipped on a rerun when its key (model, data files, code version, arguments) is unchanged;
change the code or the data and it runs again. The top-level `report.md` stitches the steps' own reports
together (figures linked), `summary.json` records every step's key numbers, and a model-comparison section
puts side by side the reports of other models found next to this one (e.g. reports/minilm, reports/mpnet).

Where it writes: `--out DIR`, else `out/report/<model>` (`out/quick/<model>` with `--quick`) under the current
folder. The committed reports in the repository's `reports/<model>/` are written only when asked for by
`--commit-reports` (or by naming that folder in `--out`), and never by a `--quick` run.

The findings page, `reports/FINDINGS.md` (`probing/report/findings.py`: cross-model tables, every number read
from the committed reports), is rewritten after every run into the committed reports, and by `--findings-only`,
which runs no model (`--findings-only --out DIR` writes DIR/FINDINGS.md for the model folders under DIR).

The code version in a step's key hashes only the code that can change that step's numbers (`code_files`):
`analysis/<command>.py` and every module of `probing/` and `analysis/` it imports, directly or through other
modules (imports inside functions included), less the presentation-only modules in `PRESENTATION_ONLY`.
README, the demo (`app.py`, `probing/demo/`, `probing/views.py`) and this file are
not imported by any step, so editing them leaves the reports current; this file's choices (the steps, their
arguments) are recorded in each key's `argv`. `--check` compares the recorded keys of a report with what the
current code would record, without running anything (the CI test `tests/test_report_command.py` does this
for every committed report).
"""
from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import importlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from analysis import options
from probing.models import DEFAULT_MODEL
from probing.outputs import (COMMITTED_REPORTS, check_out_dir, make_writable_dir, safe_name, write_complete, write_json,
                             write_text)

ROOT = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("probing", "analysis")       # the project's own code, whose imports `code_files` follows
# Modules that write or draw results but compute no number: editing them does not mark a report stale.
PRESENTATION_ONLY = frozenset({"probing/outputs.py"})
HEADS_DATA = ["builtin-coref", "builtin-negation", "gap-dev", "blimp-npi-licensing", "winobias", "winogender", "wsc273"]
DONE = ".done.json"


@dataclass
class Step:
    """One unit of the report: a command, its arguments, and the data it reads."""
    name: str                     # sub-folder, e.g. "heads/gap-dev"
    command: str                  # "heads", "probe" or "ablate"
    argv: list[str]
    data: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.model(parser)
    options.out(parser, required=False,
                help_text="output folder, made when it does not exist (default: out/report/<model>, or "
                          "out/quick/<model> with --quick)")
    parser.add_argument("--commit-reports", action="store_true",
                        help="write into the repository's committed reports/<model>/ (the folder the demo reads); "
                             "not with --quick")
    options.data_root(parser)
    parser.add_argument("--quick", action="store_true",
                        help="small limits everywhere: a smoke test of the pipeline, not a result; never written "
                             "into the committed reports")
    options.force(parser, "rerun every step, even finished ones")
    parser.add_argument("--only", action="append", default=None, metavar="STEP",
                        help="run only the steps named STEP or under it (repeatable, e.g. --only heads); the report "
                             "records the subset, says so at its top, and --check checks that subset")
    parser.add_argument("--check", action="store_true",
                        help="run nothing: compare the recorded keys of the report in --out (default: the committed "
                             "reports/<model>) with what the current code would record; exit 1 when stale")
    parser.add_argument("--findings-only", action="store_true",
                        help="run no model: write the findings page FINDINGS.md from the reports already written, "
                             "into the folder that holds the model folders (default: the committed reports/; with "
                             "--out DIR, DIR is that folder)")


def available(name: str, data_root) -> bool:
    """Built-in sets always; a real dataset when its files are under the data root."""
    from probing.examples import BUILTIN_SETS
    if name in BUILTIN_SETS:
        return True
    if name.startswith("cd-sco"):
        return all(path.is_file() for path in _cdsco_files(name, data_root))
    from probing.examples.loaders import DATASETS, default_data_root
    info = DATASETS.get(name)
    return info is not None and (Path(data_root or default_data_root()) / info.path).exists()


def plan(model: str, data_root, quick: bool) -> list[Step]:
    """The steps for this model, leaving out datasets that are not present."""
    common = ["--model", model] + (["--data-root", str(data_root)] if data_root else [])
    limit = ["--limit", "60"] if quick else []
    steps = [Step(f"heads/{name}", "heads", ["--data", name] + common + limit
                  + (["--n-boot", "200", "--n-perm", "2000"] if quick else []), [name])
             for name in HEADS_DATA if available(name, data_root)]
    steps += confirm_steps(common, limit, quick, data_root)
    gap = available("gap-dev", data_root) and available("gap-test", data_root)
    coref_data = ["builtin-coref"] + (["gap"] if gap else []) + \
        [n for n in ("winobias", "winogender") if available(n, data_root)]
    quick_probe = ["--limit", "400", "--n-boot", "100", "--folds", "3"] if quick else []
    steps.append(Step("probe/coref", "probe", ["--task", "coref", *_data_flags(coref_data)] + common + quick_probe,
                      [d for d in coref_data if d != "gap"] + (["gap-dev", "gap-test", "gap-validation"] if gap else [])))
    # The data go in explicitly: the probe's own defaults include datasets that may be absent.
    negation_data = ["builtin-negation"] + (["blimp-npi-licensing"] if available("blimp-npi-licensing", data_root) else [])
    layers_data = negation_data + ["builtin-coref"]
    steps.append(Step("probe/negation", "probe", ["--task", "negation", *_data_flags(negation_data)] + common
                      + quick_probe, negation_data))
    steps.append(Step("probe/layers", "probe", ["--task", "layers", *_data_flags(layers_data)] + common + quick_probe,
                      layers_data))
    # a quick run's random head sets: 100 (last on the line, so it wins over a step's own --n-random)
    patch_quick = ["--limit", "8", "--n-boot", "100", "--n-perm", "500", "--n-random", "100"] if quick else []
    # Every patched copy of a pair is one forward pass: the pattern-only kinds triple the work, so models
    # other than the default get the head-output kinds and the source-row kind that asks "does it matter
    # where this head looks from the cue / the pronoun?".
    # Every head of every model is patched exactly on the negation pairs and the Winograd twins: the maxT family
    # is every head, chosen on nothing. (A screen, which tests only the heads its estimates pick on the same
    # pairs, is left to the one step whose exact run would cost too much: Gemma's Winogender contexts.)
    kinds = [] if model == DEFAULT_MODEL else ["--kinds", "noising,denoising,row_noising"]
    # Head sets (compensation): the encoders' negation pairs, each chosen set against the library's 1,000
    # layer-matched random sets (p >= 1/1001; Holm over 8 comparisons can pass the 5% level only when
    # 8/(1 + n) < 0.05). MPNet's cost about 100 minutes of a 2-core CPU. The decoders get none in the committed
    # reports: Gemma's would cost hours of that CPU, and fewer than 160 would be a test that cannot pass;
    # `analysis patch --sets` runs them.
    sets = [] if model in DECODERS else ["--sets"]
    # The larger models patch the first 132 "not" pairs (as many as the report patched before the held-out
    # split added frames): their exact patching costs about five times MiniLM's per pair on a 2-core CPU.
    pair_limit = [] if model == DEFAULT_MODEL or quick else ["--limit", "132"]
    steps.append(Step("patching/builtin-negation", "patch", ["--data", "builtin-negation"] + common + kinds + sets
                      + pair_limit + patch_quick, ["builtin-negation"]))
    steps += readout_steps(model, common, pair_limit, patch_quick, data_root)
    if available("wsc273", data_root):
        # Winograd twins: the special word flips the referent ("too large" / "too small"), the pronoun stays
        steps.append(Step("patching/wsc273", "patch", ["--data", "wsc273"] + common + kinds + patch_quick,
                          ["wsc273"]))
    # Zero-ablation is the secondary causal evidence now (patching is the first): 100 layer-matched random
    # draws on the first 60 evaluation items keep a full report within about ten minutes on a laptop CPU.
    ablate_quick = ["--draws", "5", "--limit", "30"] if quick else ["--limit", "60"]
    steps.append(Step("ablation", "ablate", common + ablate_quick,
                      ["builtin-negation", "builtin-coref"] + [n for n in ("neg136-simp", "neg136-nat")
                                                                if available(n, data_root)]))
    return steps


DECODERS = ("gemma-270m",)     # the short names that are decoders: they get the task (logit) readouts


def readout_steps(model: str, common, pair_limit, patch_quick, data_root) -> list[Step]:
    """Patching under the other readouts, each its own step with its own gate. An encoder: the model's
    normalised output (`sentence`) and a negation direction (`probe`, trained on CD-SCO's training story) on
    the built-in negation pairs. A decoder: its next-token logit difference on NEG-136 (both parts as one set,
    Ettinger 2020) and on Winogender's profession -> pronoun contexts (Vig et al. 2020). Head sets are not
    repeated per readout; path patching is (the named and top heads)."""
    z_kinds = ["--kinds", "noising,denoising"]
    steps = []
    if model in DECODERS:
        neg136 = [n for n in ("neg136-simp", "neg136-nat") if available(n, data_root)]
        if neg136:
            steps.append(Step("patching/neg136", "patch", _data_flags(neg136) + common + ["--readout", "logits"]
                              + ["--kinds", "noising,denoising"] + patch_quick, neg136))
        if available("winogender", data_root):
            # Screened: exact patching of all 72 heads on its 720 rows would take about 45 minutes on a 2-core
            # CPU; the screen's candidates are chosen on the pairs it tests, and its report says so.
            steps.append(Step("patching/winogender", "patch", ["--data", "winogender"] + common
                              + ["--readout", "logits"] + z_kinds + ["--method", "screen"] + patch_quick,
                              ["winogender"]))
        return steps
    steps.append(Step("patching/builtin-negation-sentence", "patch", ["--data", "builtin-negation"] + common
                      + ["--readout", "sentence"] + z_kinds + pair_limit + patch_quick, ["builtin-negation"]))
    if available("cd-sco-train", data_root):
        steps.append(Step("patching/builtin-negation-probe", "patch", ["--data", "builtin-negation"] + common
                          + ["--readout", "probe"] + z_kinds + pair_limit + patch_quick,
                          ["builtin-negation", "cd-sco-train"]))
    return steps


def confirm_steps(common: list[str], limit: list[str], quick: bool, data_root) -> list[Step]:
    """Held-out confirmation (`analysis heads --confirm`) for each set that has a plan, when every set it
    reads is present: heads chosen on the exploration half, tested unchanged on the held-out sets. The
    negated-word plans (`--target negated-word`) get their own folders, `confirm/<data>-negated-word`."""
    from probing.confirm import CONFIRM_PLAN, NEGATED_WORD_PLAN
    steps = []
    for plan, target in ((CONFIRM_PLAN, []), (NEGATED_WORD_PLAN, ["--target", "negated-word"])):
        for name, (_part, held_out) in plan.items():
            data = list(dict.fromkeys([name] + [dataset for _label, dataset, _held in held_out]))
            if all(available(d, data_root) for d in data):
                folder = f"confirm/{name}" + ("-negated-word" if target else "")
                steps.append(Step(folder, "heads", ["--data", name, "--confirm"] + target + common + limit
                                  + (["--n-boot", "200", "--n-perm", "2000"] if quick else []), data))
    return steps


def select(steps: list[Step], only: list[str] | None) -> list[Step]:
    """The steps named in `only` (a step's name, or a folder such as "heads"); all of them when `only` is empty."""
    if not only:
        return steps
    prefixes = [o.strip("/") for o in only]
    chosen = [s for s in steps if any(s.name == p or s.name.startswith(p + "/") for p in prefixes)]
    if not chosen:
        raise ValueError(f"--only {' '.join(only)}: no step of the plan matches; steps are "
                         f"{', '.join(s.name for s in steps)}")
    return chosen


def _data_flags(names: list[str]) -> list[str]:
    return [flag for name in names for flag in ("--data", name)]


def _module_file(module: str, root: Path) -> Path | None:
    """The source file of a dotted module name of this project, or None (another library, or no such file)."""
    parts = module.split(".")
    if parts[0] not in CODE_PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, root: Path) -> set[str]:
    """Dotted names this file imports anywhere (top level or inside functions), its package's parents included."""
    package = path.relative_to(root).with_suffix("").parts[:-1]   # for a package's __init__.py, the package itself
    try:
        return set(_imports_in_source(path.read_text(encoding="utf-8"), package))
    except SyntaxError as error:
        raise SyntaxError(f"{path}: {error.msg}", (str(path), error.lineno, error.offset, error.text)) from None


@functools.lru_cache(maxsize=1024)
def _imports_in_source(source: str, package: tuple[str, ...]) -> frozenset[str]:
    """`_imported_modules` of one file's text; cached on the text itself (a changed file is parsed again), since
    every step's key walks the same files and parsing them is most of a key's cost."""
    names = {".".join(package[:i]) for i in range(1, len(package) + 1)}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] if node.level else ())
            base = ".".join(filter(None, (base, node.module or "")))
            parts = base.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            names.update(f"{base}.{alias.name}" for alias in node.names)   # `from probing import stats`
    return frozenset(names)


def code_files(command: str, root: Path = ROOT) -> list[Path]:
    """The files whose code can change the numbers of `analysis <command>`: the command's module and every
    module of this project it imports, transitively, less PRESENTATION_ONLY. Sorted, relative to `root`."""
    todo, seen = [root / "analysis" / f"{command}.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(found for name in _imported_modules(path, root)
                    if (found := _module_file(name, root)) is not None)
    relative = {p.relative_to(root) for p in seen}
    return sorted(p for p in relative if p.as_posix() not in PRESENTATION_ONLY)


def code_version(command: str, root: Path = ROOT) -> str:
    """A hash of the code that can change the step's numbers (`code_files`): a change to it reruns the step."""
    digest = hashlib.sha256()
    for relative in code_files(command, root):
        digest.update(relative.as_posix().encode())
        digest.update((root / relative).read_bytes())
    return digest.hexdigest()[:16]


def data_version(names: list[str], data_root) -> str:
    """A hash of the files behind the named datasets."""
    from probing.examples import BUILTIN_SETS
    from probing.examples.loaders import DATASETS, default_data_root
    digest = hashlib.sha256()
    for name in names:
        if name in BUILTIN_SETS:
            paths = [BUILTIN_SETS[name]]
        elif name.startswith("cd-sco"):
            paths = _cdsco_files(name, data_root)
        else:
            base = Path(data_root or default_data_root()) / DATASETS[name].path
            paths = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for path in paths:
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cdsco_files(name: str, data_root) -> list[Path]:
    """The CD-SCO files behind a part's name ("cd-sco-dev", "cd-sco-test"); its loader lives apart from the
    dataset registry (`probing.examples.cdsco`), read only by the negated-word confirmation."""
    from probing.examples import cdsco
    if name == "cd-sco-train":      # the training story: read only to train the probe readout's direction
        from probing.patching.direction import cdsco_files
        return cdsco_files("train", data_root)
    return cdsco.files(name, data_root)


def step_key(step: Step, model: str, data_root) -> dict:
    return {"model": model, "command": step.command, "argv": step.argv, "code": code_version(step.command),
            "data": data_version(step.data, data_root)}


def run_step(step: Step, folder: Path, key: dict) -> dict:
    """Run the step's command into `folder` (overwriting what an unfinished run left) and mark it done."""
    module = importlib.import_module(f"analysis.{step.command}")
    parser = argparse.ArgumentParser(prog=f"analysis {step.command}")
    module.add_arguments(parser)
    args = parser.parse_args(step.argv + ["--out", str(folder), "--force"])
    started = time.perf_counter()
    code = module.run(args)
    if code != 0:
        raise RuntimeError(f"step {step.name} failed with exit code {code}")
    # The command published its files with a marker listing them; the step's key joins that marker, so a
    # kill between the two leaves a complete folder without a key, which the next run simply redoes.
    record = {**(_read_json(folder / DONE) or {}), "key": key, "seconds": round(time.perf_counter() - started, 1)}
    write_json(folder / DONE, record)
    return record


def is_done(folder: Path, key: dict) -> bool:
    marker = folder / DONE
    return marker.exists() and json.loads(marker.read_text()).get("key") == key


def stale_steps(out: Path, model: str, data_root=None) -> list[str]:
    """What differs between the report in `out` and a full run of the current code, in words (empty: current).

    Compares each step's recorded key (command, arguments, code version, data version) with the key the
    current code would record, and lists steps that are missing, unfinished or no longer planned. Runs nothing.
    """
    out = Path(out)
    problems = []
    recorded_summary = _read_json(out / "summary.json") or {}
    steps = select(plan(model, data_root, quick=False), recorded_summary.get("only"))
    for step in steps:
        marker = out / step.name / DONE
        if not marker.exists():
            problems.append(f"{step.name}: no finished run recorded ({marker} is missing)")
            continue
        recorded = json.loads(marker.read_text()).get("key", {})
        current = step_key(step, model, data_root)
        changed = [f"{name} (recorded {recorded.get(name)!r}, now {value!r})"
                   for name, value in current.items() if recorded.get(name) != value]
        if changed:
            problems.append(f"{step.name}: {'; '.join(changed)}")
    planned = {step.name for step in steps}
    for marker in sorted(out.rglob(DONE)):
        if marker.parent == out:               # the report's own marker (summary.json, report.md), not a step
            continue
        name = marker.parent.relative_to(out).as_posix()
        if name not in planned:
            problems.append(f"{name}: recorded, but no such step in the current plan")
    return problems


def output_folder(args: argparse.Namespace, model: str) -> Path:
    """Where this run writes: --out, the committed reports/<model> when asked for, else out/report/<model>."""
    folder_name = safe_name(model)
    if args.commit_reports and args.out is not None:
        raise ValueError("give either --commit-reports or --out, not both")
    if args.commit_reports or (args.check and args.out is None):
        if not COMMITTED_REPORTS.is_dir():
            raise ValueError(f"there is no committed reports folder at {COMMITTED_REPORTS} (this is not a checkout "
                             "of the repository); give --out")
        out = COMMITTED_REPORTS / folder_name
    else:
        # an empty --out is refused in words (it would otherwise mean the current folder)
        out = check_out_dir(args.out) if args.out is not None else \
            Path("out") / ("quick" if args.quick else "report") / folder_name
    if args.quick and out.resolve().is_relative_to(COMMITTED_REPORTS.resolve()):
        raise ValueError(f"--quick never writes into the committed reports ({out}); give another --out, or "
                         "leave it out to write to out/quick/<model>")
    return out


def findings_only(out: str | None) -> int:
    """Write FINDINGS.md from the reports under `out` (the folder holding the model folders; default the
    committed reports/), running no model."""
    from probing.report.findings import write_findings
    root = check_out_dir(out) if out is not None else COMMITTED_REPORTS
    print(f"wrote {write_findings(root)}")
    return 0


def write_findings_beside(out: Path) -> int:
    """After a run into the committed reports: the findings page of every committed model (`reports/FINDINGS.md`).
    A report file that lacks a key the page needs is an error in words (exit 1), not a silently stale page. Other
    runs leave their folder's parent alone (`--findings-only --out DIR` writes a page for them)."""
    from probing.report.findings import FindingsError, write_findings
    if out.resolve().parent != COMMITTED_REPORTS.resolve():
        return 0
    try:
        print(f"wrote {write_findings(out.parent)}")
    except FindingsError as err:
        print(f"error: the findings page was not written: {err}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "findings_only", False):
        return findings_only(args.out)
    model = args.model or DEFAULT_MODEL
    out = output_folder(args, model)
    if args.check:
        problems = stale_steps(out, model, args.data_root)
        for problem in problems:
            print(f"stale: {problem}")
        committed = out.resolve().is_relative_to(COMMITTED_REPORTS.resolve())
        rerun = f"python -m analysis report --model {model} " + ("--commit-reports" if committed else f"--out {out}")
        print(f"{out}: " + (f"{len(problems)} step(s) stale; regenerate with `{rerun}`" if problems
                            else "every step is current"))
        return 1 if problems else 0
    steps = select(plan(model, args.data_root, args.quick), args.only)
    # Every folder is checked before the first step runs, so a bad --out fails now, not after an hour of steps:
    # the report's folder is made and written to, and no step's folder is blocked (by a file, say).
    make_writable_dir(out)
    for folder in [out / step.name for step in steps]:
        check_out_dir(folder)
    records = {}
    for number, step in enumerate(steps, start=1):
        folder = out / step.name
        key = step_key(step, model, args.data_root)
        if not args.force and is_done(folder, key):
            print(f"[{number}/{len(steps)}] {step.name}: finished earlier, skipped", file=sys.stderr)
            records[step.name] = {**json.loads((folder / DONE).read_text()), "skipped": True}
            continue
        print(f"[{number}/{len(steps)}] {step.name}: running `analysis {step.command} {' '.join(step.argv)}`",
              file=sys.stderr, flush=True)
        records[step.name] = run_step(step, folder, key)
    summary = collect_summary(out, model, steps, records, quick=args.quick, only=args.only)

    def produce(staging):
        write_json(staging / "summary.json", summary)
        write_text(staging / "report.md", report_markdown(out, summary, steps))

    write_complete(out, ["summary.json", "report.md"], produce)
    print(f"wrote {out / 'report.md'} and {out / 'summary.json'}")
    return write_findings_beside(out)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def collect_summary(out: Path, model: str, steps: list[Step], records: dict, quick: bool,
                    only: list[str] | None = None) -> dict:
    """Every step's own summary JSON, gathered under one roof (`only`: the subset of steps asked for)."""
    summary = {"model": model, "quick": quick, "only": only or None, "steps": {}}
    for step in steps:
        folder = out / step.name
        jsons = {p.name: _read_json(p) for p in sorted(folder.glob("*.json")) if p.name != DONE}
        summary["steps"][step.name] = {"command": step.command, "argv": step.argv,
                                       "seconds": records[step.name].get("seconds"), "results": jsons}
    return summary


def _relink(markdown: str, prefix: str) -> str:
    """Point a step report's relative links (figures, CSVs) at its sub-folder."""
    return re.sub(r"(!?\[[^\]]*\]\()(?!https?:|/)([^)]+)\)", lambda m: f"{m.group(1)}{prefix}/{m.group(2)})", markdown)


def _demote(markdown: str) -> str:
    """One heading level down, so each step's report nests under the top-level report."""
    return re.sub(r"^(#+)", r"#\1", markdown, flags=re.MULTILINE)


def report_markdown(out: Path, summary: dict, steps: list[Step]) -> str:
    lines = [f"# Attention-head report: {summary['model']}", ""]
    if summary["quick"]:
        lines += ["> **Quick run:** small limits everywhere. A smoke test of the pipeline, not a result.", ""]
    if summary.get("only"):
        lines += [f"> **Partial report:** only the steps under {', '.join(summary['only'])} were run "
                  f"({', '.join(step.name for step in steps)}).", ""]
    lines += ["Every number below comes with its baseline and a 95% CI. Attention shows where a head looks, "
              "not why the model decides: the probes ask whether the pattern carries the relation better than a "
              "control, and the ablations whether the model needs those heads.", "",
              "## Contents", ""]
    confirmed = [step for step in steps if step.name.startswith("confirm/")]
    rest = [step for step in steps if step not in confirmed]
    lines += [f"- [{step.name}](#{re.sub(r'[^a-z0-9-]', '', step.name.replace('/', '-').lower())})" for step in rest]
    if confirmed:
        # The claims first: heads chosen on one half and tested unchanged on data they were not chosen on.
        lines += ["", "## Confirmed on held-out data", "",
                  "Each relation's heads are chosen on an exploration set and tested, unchanged, on sets they were "
                  "not chosen on (Holm over the few chosen heads). Everything after this section is exploratory: "
                  "chosen and tested on the same data.", ""]
        for step in confirmed:
            for path in sorted((out / step.name).glob("*.md")):
                lines += [_demote(_demote(_relink(path.read_text(encoding="utf-8"), step.name))), ""]
    lines += ["", model_comparison(out, summary["model"]), ""]
    for step in rest:
        folder = out / step.name
        lines += [f'<a id="{re.sub(r"[^a-z0-9-]", "", step.name.replace("/", "-").lower())}"></a>', ""]
        reports = sorted(p for p in folder.glob("*.md"))
        if not reports:
            lines += [f"## {step.name}", "", "(this step wrote no report)", ""]
        for path in reports:
            lines += [_demote(_relink(path.read_text(encoding="utf-8"), step.name)), ""]
    return "\n".join(lines)


def model_comparison(out: Path, model: str) -> str:
    """The top head per set by its main score, for this model and every other model reported beside it.

    Only complete result folders count (their completion marker written last): a killed run's files do not."""
    from probing.outputs import is_complete
    rows = []
    for folder in sorted(p for p in out.parent.iterdir() if p.is_dir()):
        for data in ("builtin-coref", "builtin-negation", "gap-dev", "blimp-npi-licensing"):
            heads = folder / "heads" / data
            head_summary = _read_json(heads / "summary.json") if is_complete(heads) else None
            if not head_summary or "ranked_by" not in head_summary:
                continue
            top = head_summary["top_heads"][0]
            key = head_summary["ranked_by"]
            task = head_summary.get("primary_task", "")
            units = f"{head_summary.get('n_units', '?')} {head_summary.get('resampling_unit', 'example')}"
            significant = head_summary.get("n_significant_heads_fwer")
            rows.append(f"| {head_summary['model']} | {data} ({task}) | {head_summary['direction']} | {units} | "
                        f"{top['layer']}-{top['head']} | {key} {top[key]:.3f} "
                        f"[{top[f'{key}_ci_low']:.3f}, {top[f'{key}_ci_high']:.3f}] | "
                        f"{significant}/{head_summary['layers'] * head_summary['heads']} |")
    if len({r.split('|')[1] for r in rows}) < 2:
        return "## Model comparison\n\nOnly this model has a report here so far; reports of other models " \
               "written beside it (`python -m analysis report --model mpnet`) appear in this table.\n\n" + \
               _table(rows)
    return "## Model comparison\n\n" + _table(rows)


def _table(rows: list[str]) -> str:
    header = ["| model | data (task) | direction | independent units | best head | main score [95% CI] | "
              "heads beating baseline (maxT p_fwer < 0.05) |",
              "|---|---|---|---|---|---|---|"]
    return "\n".join(header + rows)
