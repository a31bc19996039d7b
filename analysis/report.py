"""`python -m analysis report`: heads, probes and ablations for one model, in one folder, resumable.

Each step runs one of the other commands (`heads`, `probe`, `ablate`) into its own sub-folder. A step that
finished is skipped on a rerun when its key (model, data files, code version, arguments) is unchanged;
change the code or the data and it runs again. The top-level `report.md` stitches the steps' own reports
together (figures linked), `summary.json` records every step's key numbers, and a model-comparison section
puts side by side the reports of other models found next to this one (e.g. reports/minilm, reports/mpnet).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from probing.outputs import write_json, write_text

ROOT = Path(__file__).resolve().parent.parent
HEADS_DATA = ["builtin-coref", "builtin-negation", "gap-dev", "blimp-negation", "winobias", "winogender", "wsc273"]
DONE = ".done.json"


@dataclass
class Step:
    """One unit of the report: a command, its arguments, and the data it reads."""
    name: str                     # sub-folder, e.g. "heads/gap-dev"
    command: str                  # "heads", "probe" or "ablate"
    argv: list[str]
    data: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="minilm (default), mpnet, gemma-270m, a hub id or a path")
    parser.add_argument("--out", default=None, help="output folder (default: reports/<model>)")
    parser.add_argument("--data-root", default=None, help="folder holding the real datasets")
    parser.add_argument("--quick", action="store_true",
                        help="small limits everywhere: a smoke test of the pipeline, not a result")
    parser.add_argument("--force", action="store_true", help="rerun every step, even finished ones")


def available(name: str, data_root) -> bool:
    """Built-in sets always; a real dataset when its files are under the data root."""
    from probing.examples import BUILTIN_SETS
    if name in BUILTIN_SETS:
        return True
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
    gap = available("gap-dev", data_root) and available("gap-test", data_root)
    coref_data = ["builtin-coref"] + (["gap"] if gap else []) + \
        [n for n in ("winobias", "winogender") if available(n, data_root)]
    quick_probe = ["--limit", "400", "--n-boot", "100", "--folds", "3"] if quick else []
    data_flags = [flag for name in coref_data for flag in ("--data", name)]
    steps.append(Step("probe/coref", "probe", ["--task", "coref", *data_flags] + common + quick_probe,
                      [d for d in coref_data if d != "gap"] + (["gap-dev", "gap-test", "gap-validation"] if gap else [])))
    negation_data = ["builtin-negation"] + (["blimp-negation"] if available("blimp-negation", data_root) else [])
    steps.append(Step("probe/negation", "probe", ["--task", "negation"] + common + quick_probe, negation_data))
    steps.append(Step("probe/layers", "probe", ["--task", "layers"] + common + quick_probe,
                      negation_data + ["builtin-coref"]))
    steps.append(Step("patching/builtin-negation", "patch", ["--data", "builtin-negation"] + common
                      + (["--limit", "8", "--n-boot", "100", "--n-perm", "500"] if quick else []), ["builtin-negation"]))
    ablate_quick = ["--draws", "5", "--limit", "30"] if quick else []
    steps.append(Step("ablation", "ablate", common + ablate_quick,
                      ["builtin-negation", "builtin-coref"] + [n for n in ("neg136-simp", "neg136-nat")
                                                                if available(n, data_root)]))
    return steps


def code_version(command: str) -> str:
    """A hash of the library and of the step's command: a change to either reruns the step."""
    digest = hashlib.sha256()
    for path in sorted(list((ROOT / "probing").rglob("*.py")) + [ROOT / "analysis" / f"{command}.py"]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def data_version(names: list[str], data_root) -> str:
    """A hash of the files behind the named datasets."""
    from probing.examples import BUILTIN_SETS
    from probing.examples.loaders import DATASETS, default_data_root
    digest = hashlib.sha256()
    for name in names:
        if name in BUILTIN_SETS:
            paths = [BUILTIN_SETS[name]]
        else:
            base = Path(data_root or default_data_root()) / DATASETS[name].path
            paths = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for path in paths:
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
    record = {"key": key, "seconds": round(time.perf_counter() - started, 1)}
    write_json(folder / DONE, record)
    return record


def is_done(folder: Path, key: dict) -> bool:
    marker = folder / DONE
    return marker.exists() and json.loads(marker.read_text()).get("key") == key


def run(args: argparse.Namespace) -> int:
    from probing.models import DEFAULT_MODEL
    model = args.model or DEFAULT_MODEL
    out = Path(args.out or ROOT / "reports" / re.sub(r"[^A-Za-z0-9_.-]+", "_", model))
    steps = plan(model, args.data_root, args.quick)
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
    summary = collect_summary(out, model, steps, records, quick=args.quick)
    write_json(out / "summary.json", summary)
    write_text(out / "report.md", report_markdown(out, summary, steps))
    print(f"wrote {out / 'report.md'} and {out / 'summary.json'}")
    return 0


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def collect_summary(out: Path, model: str, steps: list[Step], records: dict, quick: bool) -> dict:
    """Every step's own summary JSON, gathered under one roof."""
    summary = {"model": model, "quick": quick, "steps": {}}
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
    lines += ["Every number below comes with its baseline and a 95% CI. Attention shows where a head looks, "
              "not why the model decides: the probes ask whether the pattern carries the relation better than a "
              "control, and the ablations whether the model needs those heads.", "",
              "## Contents", ""]
    lines += [f"- [{step.name}](#{re.sub(r'[^a-z0-9-]', '', step.name.replace('/', '-').lower())})" for step in steps]
    lines += ["", model_comparison(out, summary["model"]), ""]
    for step in steps:
        folder = out / step.name
        lines += [f'<a id="{re.sub(r"[^a-z0-9-]", "", step.name.replace("/", "-").lower())}"></a>', ""]
        reports = sorted(p for p in folder.glob("*.md"))
        if not reports:
            lines += [f"## {step.name}", "", "(this step wrote no report)", ""]
        for path in reports:
            lines += [_demote(_relink(path.read_text(encoding="utf-8"), step.name)), ""]
    return "\n".join(lines)


def model_comparison(out: Path, model: str) -> str:
    """The top head per built-in set, for this model and every other model reported beside it."""
    rows = []
    for folder in sorted(p for p in out.parent.iterdir() if p.is_dir()):
        for data in ("builtin-coref", "builtin-negation", "gap-dev", "blimp-negation"):
            head_summary = _read_json(folder / "heads" / data / "summary.json")
            if not head_summary:
                continue
            top = head_summary["top_heads"][0]
            key = head_summary["ranked_by"]
            rows.append(f"| {head_summary['model']} | {data} | {head_summary['direction']} | "
                        f"{top['layer']}-{top['head']} | {key} {top[key]:.3f} "
                        f"[{top[f'{key}_ci_low']:.3f}, {top[f'{key}_ci_high']:.3f}] | "
                        f"{head_summary['n_significant_heads_holm']}/{head_summary['layers'] * head_summary['heads']} |")
    if len({r.split('|')[1] for r in rows}) < 2:
        return "## Model comparison\n\nOnly this model has a report here so far; reports of other models " \
               "written beside it (`python -m analysis report --model mpnet`) appear in this table.\n\n" + \
               _table(rows)
    return "## Model comparison\n\n" + _table(rows)


def _table(rows: list[str]) -> str:
    header = ["| model | data | direction | best head | score [95% CI] | heads beating baseline (Holm) |",
              "|---|---|---|---|---|---|"]
    return "\n".join(header + rows)
