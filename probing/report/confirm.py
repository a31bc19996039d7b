"""`analysis heads --confirm`: choose heads on an exploration set, test them on held-out sets, write the section.

Files: confirm.json (every number, `ConfirmResult.to_dict()`) and confirm.md (the section: the exploration set,
the confirmation sets, the chosen heads, and per set each head's estimate, CI, p and Holm p), published together
with the completion marker (see `probing.outputs`). See `probing.confirm` for the method.
"""
from __future__ import annotations

import html
import sys
from pathlib import Path

import numpy as np

from probing.defaults import BATCH_TOKENS, MENTION, N_BOOT, N_PERM
from probing.outputs import prepare_out_dir, write_complete, write_json, write_text

CONFIRM_FILES = ["confirm.json", "confirm.md"]


def _cell(text) -> str:
    """User-controlled text (set names, model names) made safe for a Markdown table cell."""
    return html.escape(str(text)).replace("|", "&#124;")


def row_detectable(row) -> float:
    """A confirmation row's detectable difference at 80% power (`probing.report.heads.detectable_difference`,
    from its 95% CI half-width); NaN for accuracy, whose CI is of the accuracy and not of a difference."""
    from probing.report.heads import detectable_difference
    if row["score"] == "accuracy":
        return float("nan")
    return detectable_difference(float(row["ci_low"]), float(row["ci_high"]))


def _verdict_words(row) -> str:
    """The verdict cell: a test that does not reject says what it could have detected, never "no effect"."""
    if row["verdict"] != "no":
        return str(row["verdict"])
    mde = row_detectable(row)
    units = int(row["n_units"])
    return (f"not shown with {units} units (detectable at 80% power: about {mde:.3f})" if np.isfinite(mde)
            else f"not shown: not distinguishable from the baseline with {units} units")


def confirm_dict(result) -> dict:
    """`result.to_dict()` with each confirmation row's `detectable_difference` (null where not computable) and
    the rule that gives it."""
    data = result.to_dict()
    for record, (_, row) in zip(data["confirmation"], result.table.iterrows()):
        mde = row_detectable(row)
        record["detectable_difference"] = float(mde) if np.isfinite(mde) else None
    data["detectable_difference_rule"] = ("at 80% power, two-sided alpha 0.05: (z_0.975 + z_0.80) x SE, SE = the "
                                          "95% CI half-width / 1.96; before the Holm correction")
    return data


def confirm_markdown(result) -> str:
    """The confirmation section: what was chosen where, and what held on each held-out set."""
    lines = [f"## Confirmed on held-out data: {_cell(result.relation)}", "",
             f"Model `{_cell(result.model)}`. Exploration set: **{_cell(result.exploration_set)}** (task "
             f"{_cell(result.task)}). Confirmation sets: "
             + ", ".join(f"**{_cell(s)}**" for s in result.confirmation_sets) + ".", "",
             f"Heads chosen on the exploration set ({result.main_score}, family-wise p < 0.05, at most 5, best "
             f"first): **{', '.join(result.chosen) or 'none'}**. Each is tested unchanged on each confirmation set "
             "(one-sided sign-flip test clustered by the set's units; Holm over the chosen heads, per set).", ""]
    if len(result.exploration):
        key = result.main_score
        fwer = "paired_p_fwer" if key == "paired_difference" else "p_fwer"
        lines += ["| head | exploration " + key + " | p_fwer | units |", "|---|---|---|---|"]
        for _, row in result.exploration.iterrows():
            lines.append(f"| {int(row['layer'])}-{int(row['head'])} | {row[key]:.3f} [{row[f'{key}_ci_low']:.3f}, "
                         f"{row[f'{key}_ci_high']:.3f}] | {row[fwer]:.2g} | {int(row['n_units'])} |")
        lines.append("")
    if len(result.table):
        lines += ["| confirmation set | head | score | estimate [95% CI] | p | Holm p | units | confirmed |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, row in result.table.iterrows():
            lines.append(f"| {_cell(row['set'])} | {row['head_name']} | {row['score']} | {row['estimate']:.3f} "
                         f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] | {row['p_value']:.2g} | {row['p_holm']:.2g} | "
                         f"{int(row['n_units'])} | {_verdict_words(row)} |")
        lines.append("")
    lines += [f"*When the rules were fixed.* {_cell(getattr(result, 'rules_fixed', ''))}", ""]
    lines += [f"- {_cell(note)}" for note in result.notes]
    return "\n".join(lines) + "\n"


def confirm_text(result) -> str:
    """A few lines for stdout."""
    lines = [f"{result.model} | {result.relation} | explored on {result.exploration_set} | chosen heads: "
             f"{', '.join(result.chosen) or 'none'}"]
    for _, row in result.table.iterrows():
        lines.append(f"  {row['set']}: {row['head_name']} {row['score']} {row['estimate']:.3f} "
                     f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] Holm p {row['p_holm']:.2g}"
                     f"{' confirmed' if row['confirmed'] else ''}"
                     f"{'' if row['confirmed'] else ' (' + _verdict_words(row) + ')'}")
    return "\n".join(lines + [f"  note: {n}" for n in result.notes])


def write_confirm(out: Path, result) -> None:
    write_json(Path(out) / "confirm.json", confirm_dict(result))
    write_text(Path(out) / "confirm.md", confirm_markdown(result))


def run_confirm(data: str, model: str | None, out: Path, data_root=None, limit: int | None = None,
                n_boot: int = N_BOOT, n_perm: int = N_PERM, device: str | None = None, dtype: str | None = None,
                mention: str = MENTION, batch_tokens: int = BATCH_TOKENS, progress: bool = False,
                target: str = "next-word"):
    """Load the planned sets for `data` and `target`, run `confirm_heads`, write the files to `out`; return the
    result."""
    from probing.confirm import confirm_heads, planned_sets
    from probing.models import load_model
    label, explore, confirm = planned_sets(data, data_root=data_root, limit=limit, target=target)
    if progress:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in confirm.items())
        print(f"exploration {label}: {len(explore)} rows; confirmation {sizes}", file=sys.stderr)
    result = confirm_heads(load_model(model, device=device, dtype=dtype), explore, confirm, explore_name=label,
                           n_boot=n_boot, n_perm=n_perm, mention=mention, batch_tokens=batch_tokens,
                           progress=progress)
    write_confirm(Path(out), result)
    return result


def confirm_command(args) -> int:
    """The `--confirm` branch of `python -m analysis heads` (same options; writes CONFIRM_FILES to --out)."""
    out = prepare_out_dir(args.out, CONFIRM_FILES, args.force)
    result = write_complete(out, CONFIRM_FILES, lambda staging: run_confirm(
        args.data, args.model, staging, data_root=args.data_root, limit=args.limit, n_boot=args.n_boot,
        n_perm=args.n_perm, device=args.device, dtype=args.dtype, mention=args.mention,
        batch_tokens=args.batch_tokens, progress=True, target=args.target))
    print(confirm_text(result))
    print(f"wrote {', '.join(str(out / f) for f in CONFIRM_FILES)}")
    return 0
