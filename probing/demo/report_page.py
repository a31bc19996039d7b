"""The Probing report tab's content, findings first: a summary in words, then (in the page) the detail, then a
compact download (the whole report as one zip, plus the main CSV and JSON files).

Reads what `analysis heads` / `analysis report` wrote into a report folder; no Gradio and no model here.
Internal files (resume markers such as `.done.json`, hidden or temporary files) are never offered or archived.
"""
from __future__ import annotations

import html

import json
import os
import threading
import zipfile
from pathlib import Path

from probing.defaults import MIN_UNITS   # below it a report claims nothing (as the head reports do)
from probing.outputs import safe_name  # noqa: F401  (app.py names the download after the model)

# Named first: the primary evidence (GAP and the twin sets for coreference, the paired built-in set for
# negation); the agreement-solvable built-in coreference items follow, reported as what they are.
MAIN_SETS = ("gap-dev", "wsc273", "winogender", "winobias", "builtin-negation", "builtin-coref")
DOWNLOAD_SETS = ("builtin-coref", "builtin-negation")   # the demo's own sets: their tables beside the archive
INTERNAL_SUFFIXES = (".done.json", ".tmp", ".part", ".lock", "~")


def is_internal(path: Path) -> bool:
    """Files a visitor has no use for: hidden files, resume markers and temporary files."""
    return any(part.startswith(".") for part in path.parts) or path.name.endswith(INTERNAL_SUFFIXES) \
        or path.name.startswith(("tmp", "_"))


def report_files(folder: Path) -> list[Path]:
    """Every file of the report a visitor may download, in a stable order (internal ones left out)."""
    folder = Path(folder)
    # Symbolic links are never offered or archived: one pointing outside the report would serve that file.
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.is_symlink() and not is_internal(p.relative_to(folder)))


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%"


def _head(row: dict) -> str:
    return f"{row['layer']}-{row['head']}"




def _known(x) -> bool:
    """A recorded number (JSON null and NaN mean: not defined for this data)."""
    return isinstance(x, (int, float)) and x == x


def _task_finding(summary: dict, task: str, part: dict, n_heads: int) -> str | None:
    """One task's best head and verdict in words, from the numbers the head report recorded."""
    top = (part.get("top_heads") or [None])[0]
    key = summary.get("ranked_by")
    baselines = part.get("baselines") or summary.get("baselines") or {}
    significant = part.get("n_significant_heads_fwer", summary.get("n_significant_heads_fwer"))
    units = part.get("n_units", summary.get("n_units"))
    if not top or key not in top or significant is None:
        return None
    low, high = top.get(f"{key}_ci_low"), top.get(f"{key}_ci_high")
    ci = f"95% CI {low:.3f} to {high:.3f}" if low is not None and high is not None else "no CI recorded"
    if summary.get("relation") == "coreference":
        best = (f"head {_head(top)} gives the antecedent more attention than every other candidate in "
                f"{_percent(top['accuracy'])} of sentences (95% CI {_percent(top['accuracy_ci_low'])}–"
                f"{_percent(top['accuracy_ci_high'])})")
        if task != "all-words" and _known(baselines.get("nearest_candidate_accuracy")):
            best += f"; always picking the noun nearest the pronoun does {_percent(baselines['nearest_candidate_accuracy'])}"
        if task == "all-words" and _known(baselines.get("best_offset_accuracy")):
            best += ("; always picking the word at the distance from the pronoun where the antecedent most often "
                     f"sits does {_percent(baselines['best_offset_accuracy'])}")
        if _known(baselines.get("agreement_oracle_accuracy")):
            best += f", pronoun agreement alone {_percent(baselines['agreement_oracle_accuracy'])}"
        baseline = "the nearest-noun baseline" if task != "all-words" else "the fixed-distance baseline"
    elif key == "paired_difference":
        best = (f"head {_head(top)} attends from the cue to the next word more than from a control adverb in the "
                f"same place by {top[key]:.3f} (paired difference, {ci})")
        baseline = "their control adverb"
    else:
        best = (f"head {_head(top)}'s attention from the cue to the next word exceeds its attention from any "
                f"word to the next one by {top[key]:.3f} (above baseline, {ci})")
        baseline = "their next-word baseline"
    label = f" [{task}]" if len(summary.get("tasks") or {}) > 1 else ""
    if units is not None and units < MIN_UNITS:
        verdict = f"only {units} independent units, too few to claim anything (descriptive only)"
    elif significant == 0:
        verdict = f"no head beats {baseline} after correction over all heads (a null result)"
    else:
        verdict = f"{significant} of {n_heads} heads beat {baseline} after correction over all heads"
    return f"{label} {best}; {verdict}."


def heads_finding(summary: dict) -> str | None:
    """The findings in words for one `analysis heads` summary (one clause per task), or None when the
    summary lacks the numbers."""
    n_heads = (summary.get("layers") or 0) * (summary.get("heads") or 0)
    if not n_heads:
        return None
    tasks = summary.get("tasks") or {summary.get("primary_task") or "all": summary}
    order = [summary.get("primary_task")] + [t for t in tasks if t != summary.get("primary_task")]
    parts = [_task_finding(summary, t, tasks[t], n_heads) for t in order if t in tasks]
    parts = [p for p in parts if p]
    if not parts:
        return None
    unit = summary.get("resampling_unit", "example")
    where = (f"**{summary.get('data')}** ({summary.get('n_examples')} examples, {summary.get('direction')}, "
             f"resampling unit: {unit})")
    return f"- {where}:" + "".join(parts)


def _ci(low, high) -> str:
    return f"95% CI {low:+.3f} to {high:+.3f}"


def patching_finding(summary: dict) -> str | None:
    """The patching result in words for one `analysis patch` summary: the behavioural gate first, then the
    heads whose output the model needs (named only when the gate passed and maxT p_fwer < 0.05), and whether
    attention predicts it (the rank correlation with its CI); None when the summary lacks the numbers."""
    gate, top = summary.get("gate") or {}, summary.get("top") or {}
    if "passed" not in gate or "noising" not in top:
        return None
    where = (f"**{summary.get('data')}** ({summary.get('n_pairs')} minimal pairs, {summary.get('relation')}, "
             f"{summary.get('n_layers', 0) * summary.get('n_heads', 0)} heads)")
    if not gate["passed"]:
        measure = str(gate.get("measure", "the behaviour test")).split(":")[0].split(",")[0]
        text = (f"the model fails the behaviour test first ({measure}: {gate['clean_minus_corrupt']:.4f}, "
                f"{_ci(*gate['ci'])}), so there is nothing to localise and no head is named (a null result)")
        head, effect = top["noising"][0][:2], top["noising"][0][2]
        return f"- Patching, {where}: {text}; the largest point effect, head {head[0]}-{head[1]} at {effect:.3f}, " \
               "is not a finding."
    else:
        head, effect = top["noising"][0][:2], top["noising"][0][2]
        named = summary.get("named", {}).get("noising") or []
        beyond = " and beyond their effect on the relation-free control pairs" if summary.get("control") else ""
        passed = ("the swap moves the model more than a relation-free swap does (difference "
                  f"{gate['relation_minus_control']:+.3f}, {_ci(*gate['relation_minus_control_ci'])}); "
                  if "relation_minus_control" in gate else "")
        text = passed + (f"swapping one head's output between the two sentences takes away most through head "
                f"{head[0]}-{head[1]} ({effect:.3f} of the whole difference); "
                + (f"{len(named)} heads have a single-head effect beyond chance{beyond} after correction "
                   f"({', '.join(f'{l}-{h}' for l, h in named[:5])}{', ...' if len(named) > 5 else ''})" if named
                   else f"no single-head effect beyond chance{beyond} was detected with this readout (other heads "
                   "may compensate, so this does not show the heads are unused)"))
    correlation = (summary.get("correlation") or {}).get("noising")
    if correlation:
        rho, low, high = correlation["spearman"], correlation["ci_low"], correlation["ci_high"]
        reading = ("heads with more attention tend to matter more" if low > 0 else
                   "heads with more attention tend to matter less" if high < 0 else
                   "attention does not predict which heads matter")
        text += (f". Attention vs effect, ranked within each layer (effects grow with depth): Spearman {rho:+.2f} "
                 f"({_ci(low, high)}): {reading}")
    return f"- Patching, {where}: {text}."


def findings_markdown(folder: Path, model: str) -> str:
    """The summary shown first: one sentence per scored dataset, the demo's two sets first, in words."""
    folder = Path(folder)
    heads = folder / "heads"
    names = [d.name for d in sorted(heads.iterdir()) if (d / "summary.json").exists()] if heads.exists() else []
    names = [n for n in MAIN_SETS if n in names] + [n for n in names if n not in MAIN_SETS]
    lines = []
    for name in names:
        try:
            line = heads_finding(json.loads((heads / name / "summary.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            line = None
        lines.append(line or f"- **{name}**: scored; see its section below.")
    patching = folder / "patching"
    for summary in sorted(patching.glob("*/summary.json")) if patching.exists() else []:
        try:
            line = patching_finding(json.loads(summary.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            line = None
        if line:
            lines.append(line)
    if not lines:
        return f"No head scores for **{model}** in this report yet."
    extra = [label for sub, label in (("patching", "activation patching of every head on minimal pairs"),
                                      ("probe", "attention probes against control tasks"),
                                      ("ablation", "ablations of the top heads against layer-matched random heads"))
             if (folder / sub).exists()]
    return "\n".join(
        [f"### Findings for {model}",
         "Which head links the two words most reliably on each dataset, against its baseline "
         "(a 95% bootstrap CI on every score; \"beat\" means a one-sided paired test whose p-value is corrected "
         "over all heads at once, maxT p_fwer < 0.05). Attention shows where a head looks, not whether the model "
         "uses it: the patching section below answers that."]
        + lines
        + ([f"\nThe full report below also has the {' and the '.join(extra)}."] if extra else []))


def findings_page(root: Path) -> str:
    """The cross-model findings page (`reports/FINDINGS.md`), generated from the reports under root, for the
    report tab: links to report files become their plain text (the tab serves no files), the generator's
    comment is left out, and a report lacking a key the page needs gives the reason in words instead."""
    import re
    from probing.report.findings import FindingsError, findings_markdown
    try:
        page = findings_markdown(Path(root))
    except (FindingsError, OSError) as err:
        return f"The findings page could not be made from the reports here: {html.escape(str(err))}"
    page = re.sub(r"<!--.*?-->\n*", "", page, flags=re.DOTALL)
    page = re.sub(r"\A# .*\n+", "", page)                         # the tab's accordion carries the title
    page = re.sub(r"^(#+) ", r"\1# ", page, flags=re.MULTILINE)    # sections nest under the tab
    return re.sub(r"\[([^\]]+)\]\((?!https?:)[^)]*\)", r"\1", page)


_archive_lock = threading.Lock()


def report_archive(folder: Path, out_dir: Path, name: str) -> Path:
    """The whole report (internal files left out) as `<name>-report.zip` in out_dir; rebuilt when a file changed."""
    folder, out_dir = Path(folder), Path(out_dir)
    files = report_files(folder)
    if not files:
        raise FileNotFoundError(f"the report folder {folder.name!r} holds no files")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{name}-report.zip"
    newest = max(p.stat().st_mtime for p in files)
    with _archive_lock:
        if archive.exists() and archive.stat().st_mtime >= newest:
            return archive
        partial = archive.with_name(f".{archive.name}.{os.getpid()}.{threading.get_ident()}")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
            for path in files:
                zipped.write(path, f"{name}-report/{path.relative_to(folder).as_posix()}")
        os.replace(partial, archive)
    return archive


def main_files(folder: Path) -> list[tuple[Path, str]]:
    """The main CSV/JSON files beside the archive, with the names they are offered under."""
    folder = Path(folder)
    picked = [(folder / "heads" / data / "heads.csv", f"{data}-heads.csv") for data in DOWNLOAD_SETS]
    picked.append((folder / "summary.json", "summary.json"))
    return [(path, shown) for path, shown in picked if path.is_file()]


def report_downloads(folder: Path, out_dir: Path, name: str) -> list[str]:
    """The compact download list: the archive first, then the main CSV/JSON, copied under telling names."""
    out_dir = Path(out_dir)
    downloads = [str(report_archive(folder, out_dir, name))]
    for path, shown in main_files(folder):
        target = out_dir / f"{name}-{shown}"
        if not target.exists() or target.stat().st_mtime < path.stat().st_mtime:
            partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
            partial.write_bytes(path.read_bytes())
            os.replace(partial, target)
        downloads.append(str(target))
    return downloads


def downloads_html(paths: list[str]) -> str:
    """The report's downloads as plain links served by Gradio's file route (the folder is on `allowed_paths`):
    read-only, with no "Remove this file" button as a file component has. Names and paths are escaped."""
    from urllib.parse import quote
    items = []
    for path in paths:
        file = Path(path)
        size = file.stat().st_size if file.exists() else 0
        shown = f"{size / 1024:,.0f} kB" if size >= 1024 else f"{size} B"
        items.append(f'<li><a href="gradio_api/file={html.escape(quote(str(file)), quote=True)}" '
                     f'download="{html.escape(file.name, quote=True)}">{html.escape(file.name)}</a> ({shown})</li>')
    if not items:
        return ""
    return ('<div class="report-downloads"><b>Download:</b> the whole report as one .zip, and its main CSV and '
            f'JSON files<ul>{"".join(items)}</ul></div>')
