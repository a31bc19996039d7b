"""Held-out confirmation: choose heads on one set, test exactly those, unchanged, on sets they were not chosen on.

Choosing the best of L x H heads and testing it on the same sentences is optimistic even with a family-wise
correction over all heads (the choice itself used the data). So:

1. **Explore.** Score every head on the exploration set; the chosen heads are those with the main score's
   family-wise p (Westfall-Young maxT: `paired_p_fwer` for negation with controls, else `p_fwer`) below ALPHA,
   best first, at most MAX_HEADS.
2. **Confirm.** On each confirmation set, the chosen heads (and only they) are tested with that set's own
   one-sided sign-flip test of its main score (paired difference against the control adverbs, or attention
   above the next-word baseline where a set has no controls; for coreference, accuracy above the
   nearest-candidate baseline), clustered by the set's `meta.group`; the per-head p values are Holm-adjusted
   over the few chosen heads, separately for each set. A head is *confirmed* on a set when its Holm p < ALPHA.

The built-in sets carry a fixed split (`meta.split` "explore" / "confirm"; negation by host word and
predicate, coreference by template, see `probing.examples.build_builtin`); `split_examples` reads it.
`CONFIRM_PLAN` names, per exploration set, the held-out sets that fit it: the other half, plus an external set
(negation: BLiMP NPI scope, whose word after "not" is always "ever", and CondaQA's "not"/"n't" cues; built-in
coreference: WSC273; GAP-dev: GAP-test). Every label names its target ("-> ever", "-> next word").

**The negated word as target** (`target="negated-word"`, `NEGATED_WORD_PLAN`). "Not" -> next word is what most
heads are scored on, but the word negated is the head of the negated predicate, which is the next word only in
most simple sentences. On the built-in set, the target becomes that word
(`build_builtin.negated_word_span`: "was not in the *office*"), for the negated sentences and their adverb
controls alike. The external set where it varies is CD-SCO (`probing.examples.cdsco`: the *SEM 2012 Conan
Doyle corpus, every cue's negated event annotated): its "not"/"n't" cues with an event, split by direction
(event after the cue, event before it: "we *can* not leave"). CD-SCO has no substitute-adverb sentences, so
each cue gets relation-free controls of the same shape: the same sentence, another word as source, the word at
the same signed distance as target (`cdsco.offset_controls`), and the paired difference against their mean is
the score, as with the adverbs. Heads are chosen on the built-in exploration half (or on CD-SCO dev, the
corpus's own development story) and confirmed on the built-in confirmation half and the two CD-SCO gold test
stories. A causal model reads negation backwards (the later word attends to the earlier one); for an event
before its cue that is the cue attending back to the event, so there source and target trade places.

The result (`ConfirmResult`) is plain data: `.table` (one row per confirmation set and chosen head),
`.exploration` (the chosen heads' exploration numbers), `.to_dict()`, `.top(k, by=None)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from probing.defaults import ALPHA, BATCH_TOKENS, MENTION, N_BOOT, N_PERM, SEED
from probing import stats

MAX_HEADS = 5
SPLIT_KEY = "split"

# exploration set -> (how its exploration examples are taken, the confirmation sets: (label, dataset, part))
# part: "confirm" = the dataset's confirmation half, None = the whole dataset.
CONFIRM_PLAN = {
    "builtin-negation": ("explore", [("builtin-negation (confirmation half)", "builtin-negation", "confirm"),
                                     ("blimp-npi-scope (-> ever)", "blimp-npi-scope", None),
                                     ("condaqa (not / n't cues, -> next word)", "condaqa", None)]),
    "builtin-coref": ("explore", [("builtin-coref (confirmation half)", "builtin-coref", "confirm"),
                                  ("wsc273", "wsc273", None)]),
    "gap-dev": (None, [("gap-test", "gap-test", None)]),
}
TARGETS = ("next-word", "negated-word")
# The same shape, for the negated word as target; part "after" / "before": CD-SCO's cues whose event is after /
# before the cue (with their offset controls).
_CDSCO_TEST = [("cd-sco-test (-> negated event after the cue)", "cd-sco-test", "after"),
               ("cd-sco-test (-> negated event before the cue)", "cd-sco-test", "before")]
NEGATED_WORD_PLAN = {
    "builtin-negation": ("explore", [("builtin-negation (confirmation half, -> negated word)", "builtin-negation",
                                      "confirm")] + _CDSCO_TEST),
    "cd-sco-dev": (None, _CDSCO_TEST),
}
# At most this many offset controls per CD-SCO cue (evenly spaced over the sentence's eligible words).
MAX_OFFSET_CONTROLS = 8


# When the analysis rules were fixed relative to each exploration set's held-out data, in words (reported with
# every confirmation). Sets not named here have no record: their confirmation is held out for the choice of
# heads only.
RULES_FIXED = {
    "builtin-negation": (
        "The analysis rules (the cue read from its last piece, the next word as target, the mean over the "
        "control adverbs as the control, the crossed frame x predicate test) were fixed before this split was "
        "written: the confirmation half (host words do, have, had, were, are, am, can, would, must, may, with "
        "its own verbs and copula predicates; no host word and no predicate in both halves) was split off "
        "afterwards. The last-piece rule itself was chosen with the whole earlier built-in set in view, which "
        "held many of these host words and predicates: the confirmation half is held out for the choice of "
        "heads, not for the choice of that rule."),
    "builtin-negation -> negated word": (
        "The negated-word target (the head of the negated predicate), CD-SCO's split by direction and its "
        "offset-matched controls were fixed before any CD-SCO number or any negated-word score was computed; "
        "heads are chosen on the built-in exploration half, and CD-SCO's test stories are used only here."),
    "cd-sco-dev -> negated event": (
        "Heads are chosen on CD-SCO dev (The Adventure of Wisteria Lodge) and tested on the two gold test stories "
        "(The Cardboard Box, The Red Circle); the target, the split by direction and the offset-matched controls "
        "were fixed before any CD-SCO number was computed."),
}
NO_RECORD = ("No record of when the analysis rules were fixed relative to this set's held-out data: the "
             "confirmation is held out for the choice of heads only.")


def rules_fixed_note(exploration_label: str) -> str:
    """RULES_FIXED's sentence for the set an exploration label names ("builtin-negation (exploration half)"),
    else NO_RECORD."""
    name = exploration_label.split(" (")[0].strip()
    return RULES_FIXED.get(name, NO_RECORD)


def split_examples(examples: list, part: str) -> list:
    """The examples of one half ("explore" / "confirm") of a set with a fixed `meta.split`; controls follow their
    item (they carry the same split). Raises ValueError when no example has that half."""
    chosen = [e for e in examples if (e.meta or {}).get(SPLIT_KEY) == part]
    if not chosen:
        raise ValueError(f"no example has meta.{SPLIT_KEY} == {part!r}; this set has no fixed {part} half")
    return chosen


def fits_external(name: str, examples: list) -> list:
    """The rows of an external set that fit the built-in format: BLiMP scope's licensing "not" only (its
    'scope-bad' rows have the cue in the wrong clause); CondaQA's "not" / "n't" cues only (other cues, such as
    "never" or "no", are other words than the ones chosen on)."""
    if name.startswith("blimp"):
        return [e for e in examples if e.role in ("negated", "control")]
    if name == "condaqa":
        return [e for e in examples if e.source.lower().replace("\u2019", "'") in ("not", "n't")]
    return examples


def fwer_column(main_score: str) -> str:
    return "paired_p_fwer" if main_score == "paired_difference" else "p_fwer"


def p_column(main_score: str) -> str:
    return "paired_p_value" if main_score == "paired_difference" else "p_value"


def choose_heads(table: pd.DataFrame, main_score: str, alpha: float = ALPHA, max_heads: int = MAX_HEADS) -> pd.DataFrame:
    """The heads with family-wise p below alpha, best first by the main score, at most max_heads."""
    passing = table[table[fwer_column(main_score)] < alpha]
    return passing.sort_values(main_score, ascending=False).head(max_heads).reset_index(drop=True)


def confirmation_rows(table: pd.DataFrame, main_score: str, chosen: list[tuple[int, int]], set_name: str,
                      alpha: float = ALPHA) -> pd.DataFrame:
    """The chosen heads' rows of one confirmation set's head table, with the Holm adjustment over them.

    `confirmed`: Holm p < alpha on a set of at least `stats.MIN_UNITS` units; `verdict` says it in words
    ("yes", "no", or "descriptive (< 30 units)" where the set is too small for a claim either way)."""
    index = table.set_index(["layer", "head"])
    rows = index.loc[chosen].reset_index()
    p = rows[p_column(main_score)].to_numpy()
    out = pd.DataFrame({
        "set": set_name, "layer": rows["layer"], "head": rows["head"],
        "head_name": [f"{l}-{h}" for l, h in zip(rows["layer"], rows["head"])],
        "score": main_score, "estimate": rows[main_score], "ci_low": rows[f"{main_score}_ci_low"],
        "ci_high": rows[f"{main_score}_ci_high"], "p_value": p, "p_holm": stats.holm(p),
        "n_examples": rows["n_examples"], "n_units": rows["n_units"]})
    # The report's unit rule (stats.MIN_UNITS): below it a small Holm p is descriptive, never "confirmed".
    enough = out["n_units"] >= stats.MIN_UNITS
    out["confirmed"] = (out["p_holm"] < alpha) & enough
    out["verdict"] = [("yes" if ok else "no") if big else f"descriptive (< {stats.MIN_UNITS} units)"
                      for ok, big in zip(out["p_holm"] < alpha, enough)]
    return out


@dataclass
class ConfirmResult:
    """Heads chosen on the exploration set and their tests on each confirmation set (plain data)."""
    model: str
    relation: str
    task: str
    exploration_set: str
    confirmation_sets: list[str]
    main_score: str
    chosen: list[str]                    # "layer-head", best first
    exploration: pd.DataFrame            # the chosen heads' exploration rows (score, CI, p_fwer)
    table: pd.DataFrame                  # one row per confirmation set and chosen head
    notes: list[str] = field(default_factory=list)
    rules_fixed: str = NO_RECORD         # when the analysis rules were fixed relative to the held-out data

    def top(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The k rows with the highest `by` (default: the estimate) over all confirmation sets."""
        return self.table.sort_values(by or "estimate", ascending=False).head(k)

    def to_dict(self) -> dict:
        def records(frame):
            return frame.astype(object).where(frame.notna(), None).to_dict("records")
        return {"model": self.model, "relation": self.relation, "task": self.task,
                "exploration_set": self.exploration_set, "confirmation_sets": self.confirmation_sets,
                "main_score": self.main_score, "chosen_heads": self.chosen, "alpha": ALPHA,
                "selection": f"{fwer_column(self.main_score)} < {ALPHA} on the exploration set, best "
                             f"{MAX_HEADS} by {self.main_score}",
                "test": "one-sided sign-flip per chosen head on each confirmation set (clustered by meta.group; "
                        "crossed with meta.predicate where the set has it), Holm over the chosen heads, per set",
                "rules_fixed": self.rules_fixed,
                "exploration": records(self.exploration), "confirmation": records(self.table), "notes": self.notes}


def confirm_heads(model, explore_examples: list, confirm_sets: dict[str, list], *, explore_name: str = "explore",
                  relation: str | None = None, max_heads: int = MAX_HEADS, alpha: float = ALPHA,
                  n_boot: int = N_BOOT, n_perm: int = N_PERM, seed: int = SEED, mention: str = MENTION,
                  batch_tokens: int = BATCH_TOKENS, progress: bool = False) -> ConfirmResult:
    """Choose heads on `explore_examples` and test exactly those on each of `confirm_sets` ({name: examples}).

    The task (candidates / all-words) is the exploration set's primary one; a confirmation set is read on the
    same task when it has it, else on its own primary task (noted)."""
    from probing.heads import MIN_UNITS, score_heads
    from probing.models import LoadedModel, load_model
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    options = dict(n_boot=n_boot, n_perm=n_perm, seed=seed, mention=mention, batch_tokens=batch_tokens,
                   progress=progress)
    direction = "backward" if loaded.is_causal else "forward"
    notes = []
    explore_examples, swapped = read_order(explore_examples, direction)
    if swapped:
        notes.append(f"{explore_name}: {swapped} rows with the target before the source are read from the source "
                     "back to the target (a causal model's reading order)")
    explore = score_heads(loaded, explore_examples, relation=relation, **options)
    task = explore.primary_task
    chosen_rows = choose_heads(explore.task_table(task), explore.main_score, alpha, max_heads)
    chosen = list(zip(chosen_rows["layer"].astype(int), chosen_rows["head"].astype(int)))
    names = [f"{l}-{h}" for l, h in chosen]
    tables = []
    if not chosen:
        notes.append(f"no head has {fwer_column(explore.main_score)} < {alpha} on {explore_name}: nothing to confirm")
    elif int(chosen_rows["n_units"].iloc[0]) < MIN_UNITS:
        notes.append(f"{explore_name}: the heads were chosen on {int(chosen_rows['n_units'].iloc[0])} units (< "
                     f"{MIN_UNITS}): the choice is descriptive; only the confirmation sets' tests carry a claim")
    for set_name, examples in confirm_sets.items():
        if not chosen:
            break
        examples = [e for e in examples if e.relation == explore.relation]
        if not examples:
            notes.append(f"{set_name}: no {explore.relation} examples; not tested")
            continue
        examples, swapped = read_order(examples, direction)
        if swapped:
            notes.append(f"{set_name}: {swapped} rows with the target before the source are read from the source "
                         "back to the target (a causal model's reading order)")
        scores = score_heads(loaded, examples, relation=explore.relation, **options)
        set_task = task if task in scores.tasks else scores.primary_task
        if set_task != task:
            notes.append(f"{set_name}: read on task {set_task!r} (it has no {task!r} examples)")
        if scores.main_score != explore.main_score:
            notes.append(f"{set_name}: scored by {scores.main_score} (the set has no controls), not "
                         f"{explore.main_score}")
        rows = confirmation_rows(scores.task_table(set_task), scores.main_score, chosen, set_name, alpha)
        if int(rows["n_units"].iloc[0]) < MIN_UNITS:
            notes.append(f"{set_name}: only {int(rows['n_units'].iloc[0])} units (< {MIN_UNITS}); the sign-flip test "
                         "is exact, but by the report's rule these numbers are descriptive, not a claim")
        tables.append(rows)
    keep = ["layer", "head", explore.main_score, f"{explore.main_score}_ci_low", f"{explore.main_score}_ci_high",
            fwer_column(explore.main_score), "n_examples", "n_units"]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["set", "layer", "head", "head_name", "score", "estimate", "ci_low", "ci_high", "p_value",
                 "p_holm", "n_examples", "n_units", "confirmed", "verdict"])
    return ConfirmResult(model=loaded.name, relation=explore.relation, task=task, exploration_set=explore_name,
                         confirmation_sets=list(confirm_sets), main_score=explore.main_score, chosen=names,
                         exploration=chosen_rows[[c for c in keep if c in chosen_rows]], table=table, notes=notes,
                         rules_fixed=rules_fixed_note(explore_name))


def planned_sets(data: str, data_root=None, limit: int | None = None,
                 target: str = "next-word") -> tuple[str, list, dict[str, list]]:
    """For a set named in the target's plan (`CONFIRM_PLAN` for "next-word", `NEGATED_WORD_PLAN` for
    "negated-word"): (exploration label, exploration examples, {confirmation label: examples})."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    plans = CONFIRM_PLAN if target == "next-word" else NEGATED_WORD_PLAN
    if data not in plans:
        raise ValueError(f"--confirm{'' if target == 'next-word' else ' --target ' + target} knows held-out sets "
                         f"for {', '.join(plans)}; not for {data!r}")
    part, plan = plans[data]
    examples = _load(data, data_root, target)
    explore = _part(examples, part, data)
    confirm = {label: _part(examples if name == data else _load(name, data_root, target), held_part, name)
               for label, name, held_part in plan}
    if limit is not None:
        explore = _first(explore, limit)
        confirm = {k: _first(v, limit) for k, v in confirm.items()}
    what = "" if target == "next-word" else (" -> negated event" if data.startswith("cd-sco") else
                                             " -> negated word")
    label = f"{data}{what} (exploration half)" if part == "explore" else f"{data}{what}"
    return label, explore, confirm


def _load(name: str, data_root, target: str) -> list:
    """A set's examples for the target: CD-SCO with its offset controls; a built-in negation set with each row's
    target moved to its negated word; anything else as `load_examples` gives it."""
    if name.startswith("cd-sco"):
        from probing.examples import cdsco
        return cdsco.with_offset_controls(cdsco.load_cdsco(name, data_root=data_root),
                                          max_controls=MAX_OFFSET_CONTROLS)
    from probing.examples import load_examples
    examples = load_examples(name, data_root=data_root)
    if target == "negated-word":
        from probing.examples.build_builtin import negated_word_span
        return [replace(e, target_span=negated_word_span(e)) for e in examples]
    return examples


def _part(examples: list, part: str | None, name: str) -> list:
    """One part of a set: a built-in half ("explore" / "confirm"), CD-SCO's cues by the direction of their event
    ("after" / "before", with their controls), or (None) the rows of an external set that fit the format."""
    if part in ("explore", "confirm"):
        return split_examples(examples, part)
    if part in ("after", "before"):
        from probing.examples import cdsco
        return cdsco.by_direction(examples, part)
    return fits_external(name, examples)


def read_order(examples: list, direction: str) -> tuple[list, int]:
    """The examples as the model can read them, and how many were changed. A causal model (direction
    "backward") reads negation with the later word attending to the earlier one (`probing.heads.oriented`
    swaps source and target); where a negation target comes before its source (a CD-SCO event before its cue),
    that swap would ask an earlier word to attend to a later one, which a causal model cannot do, so the two
    trade places here first and the head reads the cue attending back to the event. Other examples, and every
    example for "forward", are unchanged."""
    if direction != "backward":
        return examples, 0
    out = [replace(e, source_span=e.target_span, target_span=e.source_span)
           if e.relation == "negation" and e.target_span[0] < e.source_span[0] else e for e in examples]
    return out, sum(a is not b for a, b in zip(out, examples))


def _first(examples: list, limit: int) -> list:
    """The first `limit` non-control examples and the controls of their pairs (the house's one --limit rule)."""
    from probing.examples import first_keeping_partners
    return first_keeping_partners(examples, limit, is_partner=lambda e: e.is_control,
                                  partner_key=lambda e: (e.meta or {}).get("pair"))
