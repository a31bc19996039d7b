"""`probing.confirm`: heads chosen on the exploration half are tested, unchanged, on held-out sets (Holm over the
chosen few). Hand-made tables where the answer is known, the fixed splits, then a small real run with MiniLM."""
import json

import numpy as np
import pandas as pd
import pytest

from probing.confirm import (CONFIRM_PLAN, ConfirmResult, choose_heads, confirm_heads, confirmation_rows,
                             fits_external, split_examples)
from probing.examples import load_examples
from tests.conftest import needs_datasets


def _table(scores, p_fwer, p_value=None, n_units=40):
    n = len(scores)
    return pd.DataFrame({"layer": np.arange(n) // 4, "head": np.arange(n) % 4, "paired_difference": scores,
                         "paired_difference_ci_low": np.asarray(scores) - 0.1,
                         "paired_difference_ci_high": np.asarray(scores) + 0.1, "paired_p_fwer": p_fwer,
                         "paired_p_value": p_value if p_value is not None else p_fwer, "n_examples": 50,
                         "n_units": n_units})


def test_choose_heads_takes_the_significant_best_first_at_most_five():
    scores = [0.9, 0.1, 0.5, 0.8, 0.7, 0.6, 0.4, 0.3]
    p_fwer = [0.001, 0.001, 0.2, 0.01, 0.02, 0.03, 0.04, 0.001]
    chosen = choose_heads(_table(scores, p_fwer), "paired_difference")
    assert [(r.layer, r.head) for r in chosen.itertuples()] == [(0, 0), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert choose_heads(_table(scores, [0.5] * 8), "paired_difference").empty


def test_confirmation_is_holm_over_the_chosen_heads_only():
    table = _table([0.3, 0.2, 0.1, 0.0], [1, 1, 1, 1], p_value=[0.01, 0.02, 0.04, 0.9])
    rows = confirmation_rows(table, "paired_difference", [(0, 0), (0, 1), (0, 2)], "held-out")
    # Holm over three: 3 * 0.01, 2 * 0.02, 1 * 0.04 (monotone)
    assert rows["p_holm"].tolist() == pytest.approx([0.03, 0.04, 0.04])
    assert rows["confirmed"].tolist() == [True, True, True] and rows["head_name"].tolist() == ["0-0", "0-1", "0-2"]
    one = confirmation_rows(table, "paired_difference", [(0, 2)], "held-out")
    assert one["p_holm"].tolist() == pytest.approx([0.04])


def test_a_set_below_the_unit_rule_is_descriptive_not_confirmed():
    small = _table([0.3, 0.2], [1, 1], p_value=[0.0001, 0.9], n_units=23)
    rows = confirmation_rows(small, "paired_difference", [(0, 0), (0, 1)], "held-out")
    assert rows["p_holm"].iloc[0] < 0.05 and not rows["confirmed"].any()
    assert rows["verdict"].tolist() == ["descriptive (< 30 units)"] * 2
    big = confirmation_rows(_table([0.3, 0.2], [1, 1], p_value=[0.0001, 0.9], n_units=30), "paired_difference",
                            [(0, 0), (0, 1)], "held-out")
    assert big["confirmed"].tolist() == [True, False] and big["verdict"].tolist() == ["yes", "no"]


def test_builtin_sets_split_by_frame_and_template_into_two_fixed_halves():
    for name in ("builtin-negation", "builtin-coref"):
        examples = load_examples(name)
        explore, confirm = split_examples(examples, "explore"), split_examples(examples, "confirm")
        assert len(explore) + len(confirm) == len(examples)
        assert not {e.meta["group"] for e in explore} & {e.meta["group"] for e in confirm}
    with pytest.raises(ValueError, match="no example has meta.split == 'explore'"):
        split_examples([e for e in examples if e.meta["split"] == "confirm"], "explore")
    assert set(CONFIRM_PLAN) == {"builtin-negation", "builtin-coref", "gap-dev"}
    # every external negation set names its target: BLiMP's word after "not" is always "ever"
    labels = [label for label, name, _ in CONFIRM_PLAN["builtin-negation"][1] if name != "builtin-negation"]
    assert labels == ["blimp-npi-scope (-> ever)", "condaqa (not / n't cues, -> next word)"]


def test_a_causal_model_reads_an_event_before_its_cue_from_the_cue_back():
    from probing.confirm import read_order
    from probing.examples import Example
    before = Example("We can not leave.", "negation", (7, 10), (3, 6), id="b", meta={"role": "negated"})
    after = Example("He did not go.", "negation", (7, 10), (11, 13), id="a", meta={"role": "negated"})
    coref = Example("Ann said she left.", "coreference", (9, 12), (0, 3), id="c")
    same, changed = read_order([before, after, coref], "forward")
    assert changed == 0 and same == [before, after, coref]
    out, changed = read_order([before, after, coref], "backward")
    assert changed == 1 and (out[0].source_span, out[0].target_span) == ((3, 6), (7, 10))
    assert out[1] is after and out[2] is coref        # coreference's antecedent before the pronoun is its own order


def test_the_negated_word_plan_is_refused_in_words_where_it_has_no_sets():
    from probing.confirm import NEGATED_WORD_PLAN, planned_sets
    assert set(NEGATED_WORD_PLAN) == {"builtin-negation", "cd-sco-dev"}
    with pytest.raises(ValueError, match="--target negated-word knows held-out sets for builtin-negation, cd-sco-dev"):
        planned_sets("gap-dev", target="negated-word")
    with pytest.raises(ValueError, match="target must be one of next-word, negated-word"):
        planned_sets("builtin-negation", target="the verb")


def test_the_report_says_when_the_rules_were_fixed_relative_to_the_held_out_half():
    from probing.confirm import NO_RECORD, rules_fixed_note
    negation = rules_fixed_note("builtin-negation (exploration half)")
    assert "before this split was written" in negation and "whole earlier built-in set in view" in negation
    assert rules_fixed_note("gap-dev") == NO_RECORD


@needs_datasets
def test_external_negation_rows_that_fit_the_format():
    blimp = load_examples("blimp-npi-scope")
    kept = fits_external("blimp-npi-scope", blimp)
    assert kept and all(e.role == "negated" for e in kept) and len(kept) < len(blimp)
    condaqa = load_examples("condaqa")
    kept = fits_external("condaqa", condaqa)
    assert kept and {e.source.lower().replace("\u2019", "'") for e in kept} <= {"not", "n't"}


@pytest.mark.slow
def test_confirm_heads_on_the_builtin_negation_halves(minilm):
    examples = load_examples("builtin-negation")
    explore = split_examples(examples, "explore")
    held = split_examples(examples, "confirm")
    result = confirm_heads(minilm, explore, {"half": held}, explore_name="builtin-negation (exploration half)",
                           n_boot=100, n_perm=2000)
    assert isinstance(result, ConfirmResult) and 1 <= len(result.chosen) <= 5
    assert result.exploration[result.main_score].is_monotonic_decreasing
    assert result.table["head_name"].tolist() == result.chosen and set(result.table["set"]) == {"half"}
    assert (result.table["p_holm"] >= result.table["p_value"]).all()
    held_frames = {e.meta["group"] for e in held}                 # the held-out half's frames, its units
    assert int(result.table["n_units"].iloc[0]) == len(held_frames) >= 30
    assert not held_frames & {e.meta["group"] for e in explore}
    data = json.loads(json.dumps(result.to_dict()))
    assert data["chosen_heads"] == result.chosen and data["exploration_set"].startswith("builtin-negation")
    assert len(result.top(2)) == min(2, len(result.table))
