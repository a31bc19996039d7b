"""Probing classifiers on attention features and hidden states, each against a control task that can fail.

Three probes, one call shape `fn(model, examples, *, options) -> Result` (model None = the default model);
every result is a dataclass with `.table` (a DataFrame) and `.to_dict()` (JSON-ready):

- `coref_probe` (Clark et al. 2019's attention-only probe): a `StandardScaler + LogisticRegression` pipeline
  on the 2 x L x H attention features of each (pronoun, candidate) pair (see `probing.features`), trained to
  say whether the candidate is the antecedent; an example's prediction is its highest-scoring candidate.
  Beside it: chance, nearest/first candidate, the best single head (chosen on training data), the
  agreement rule (what pronoun gender/number/animacy alone gets) and, on twin data, twin consistency.
- `negation_probe`: cue-type transfer. The same pipeline on every adjacent word pair (w, w+1) is trained to
  find the negation cue in sentences whose cue is `train_cue` ("not") and tested on sentences with other cue
  forms ("n't", "never", "no"): word identity learned on "not" cannot find "n't", so a probe that transfers
  reads something about the cue's role from attention. The score is per sentence: is the top-scoring pair
  the cue? (chance 1/#pairs). Baselines: a positional probe and a word-identity probe trained on the same rows;
  hard negatives: does the cue outscore the adverb that replaces it in its control sentence?
- `layer_probe`: per layer, a probe on the hidden state of the word after the source (negated vs control
  sentence, or the antecedent's gender). For negation it also runs an adverb-vs-adverb probe (the control
  sentence vs the same sentence with another adverb in its place), so the curve shows what negation adds over
  any word swap.

Control tasks (Hewitt & Liang 2019), type-level so that a probe can learn them: every word TYPE gets a fixed
random value (a seeded hash). Coreference: the control answer is the candidate whose type has the highest
value; negation: the pair whose word w has the highest value; layers: the probed word's type picks the label.
A probe that can tell word types apart memorises these on training data (control train accuracy) and carries
them to test examples that share types (control accuracy). selectivity = accuracy - control accuracy (paired);
`beats_control` is True only when its 95% CI is above 0, and every report says so when it is not.

Conventions:
- No leakage: every split is grouped (`probing.features.fold_groups`: meta["group"] or the dataset default
  `DEFAULT_GROUP_BY`, joined with meta["twin"]; negation: the sentence pair), the scaler is fit per training
  fold, C is chosen on the training side only (an inner grouped CV, or the given validation set).
- CIs: 95% percentile cluster bootstrap (`probing.stats.bootstrap_ci` with the fold groups); differences are
  per-example differences, so they are paired.
- Speed: fits run with BLAS limited to one thread (`single_threaded_blas`).
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from probing.defaults import BATCH_TOKENS, N_BOOT, SEED
from probing.examples import Example, example_from_dict
from probing.controls import balanced_controls
from probing.features import (DEFAULT_GROUP_BY, DIRECTIONS_ADJACENT, DIRECTIONS_COREF, AdjacentPairFeatures,
                              CandidateFeatures, adjacent_pair_features, candidate_features, fold_groups,
                              negation_group, resolve_group_by, word_hidden_states)
from probing.stats import Estimate, bootstrap_ci

__all__ = ["DEFAULT_GROUP_BY", "coref_probe", "negation_probe", "layer_probe", "CorefProbeResult",
           "NegationProbeResult", "LayerProbeResult", "adverb_swap_examples"]

DEFAULT_CS = (0.0001, 0.001, 0.01, 0.1, 1.0)
ADVERB_SWAPS = ("just", "also", "surely")   # put in place of the control's adverb (the first that differs)
MIN_TEST_SENTENCES = 5
WEIGHT_NOTE = ("weight = mean |coefficient| of the head's two directions in the probe refit on all training "
               "data; features are standard-scaled, so weights are comparable across heads")


# ---- Estimates ----------------------------------------------------------------------------------------

def estimate(values, groups=None, n_boot: int = N_BOOT, seed: int = SEED) -> Estimate:
    """Mean of per-example values (NaN = undefined, left out) with its cluster-bootstrap 95% CI."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0 or np.isnan(values).all():
        return Estimate(float("nan"), float("nan"), float("nan"))
    low, high = bootstrap_ci(values[:, None], n_boot, seed=seed, groups=groups)
    return Estimate(float(np.nanmean(values)), float(low[0]), float(high[0]))


def above_zero(difference: Estimate) -> bool:
    """A difference whose whole 95% CI is above 0."""
    return bool(np.isfinite(difference.ci_low) and difference.ci_low > 0)


def _jsonable(value):
    """Estimates to dicts, tuples to lists, numpy scalars to Python numbers, recursively."""
    if isinstance(value, Estimate):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _plain_fields(result, exclude: tuple[str, ...]) -> dict:
    """A result dataclass's fields, less `exclude`, as JSON-ready values."""
    return {f.name: _jsonable(getattr(result, f.name)) for f in fields(result) if f.name not in exclude}


def _estimate_rows(scores: dict) -> pd.DataFrame:
    """name -> Estimate (or float) as a table: name, mean, ci_low, ci_high."""
    rows = []
    for name, value in scores.items():
        if isinstance(value, Estimate):
            rows.append({"name": name, **value.to_dict()})
        elif value is not None:
            rows.append({"name": name, "mean": float(value), "ci_low": np.nan, "ci_high": np.nan})
    return pd.DataFrame(rows, columns=["name", "mean", "ci_low", "ci_high"])


def _top_heads(weights: pd.DataFrame, k: int = 5) -> list[dict]:
    return weights.nlargest(k, "weight")[["layer", "head", "weight"]].to_dict("records")


# ---- Probes, folds, C and control labels ------------------------------------------------------------

def single_threaded_blas(function):
    """Run `function` with BLAS limited to one thread (many small fits; threads only contend)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)
    return wrapper


def make_probe(C: float = 1.0, scale: bool = True) -> Pipeline:
    """The probe: StandardScaler (fit on the training rows only, inside the pipeline) + LogisticRegression."""
    steps = [("scale", StandardScaler())] if scale else []
    return Pipeline(steps + [("logreg", LogisticRegression(C=C, max_iter=2000))])


def grouped_folds(groups, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of a GroupKFold: no group is on both sides of any fold."""
    groups = np.asarray(groups, dtype=object)
    n_groups = len(set(groups.tolist()))
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if n_groups < n_folds:
        raise ValueError(f"only {n_groups} groups for {n_folds} grouped folds; use fewer folds or more data")
    return list(GroupKFold(n_splits=n_folds).split(np.zeros(len(groups)), groups=groups))


def inner_splits(groups, n_inner: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped splits of a training fold for choosing C; none when there are too few groups."""
    n_groups = len(set(np.asarray(groups, dtype=object).tolist()))
    return grouped_folds(groups, min(n_inner, n_groups)) if n_groups >= 2 else []


def choose_C(Cs, splits, fit_and_score: Callable[[float, np.ndarray, np.ndarray], float]) -> float:
    """The C with the best mean validation score over the splits; ties go to the smaller (simpler) C."""
    Cs = sorted(Cs)
    if not Cs:
        raise ValueError("Cs is empty: give at least one regularisation strength")
    if len(Cs) == 1 or not splits:
        return float(Cs[len(Cs) // 2])
    means = [np.mean([fit_and_score(C, train, valid) for train, valid in splits]) for C in Cs]
    return float(Cs[int(np.argmax(means))])


def stable_unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same on every run and machine (unlike hash())."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def type_priority(word: str, seed: int) -> float:
    """The control task's random value of a word type."""
    return stable_unit(seed, f"type:{word}")


def type_control_labels(words, classes, seed: int = SEED) -> np.ndarray:
    """One control label per word type, drawn from `classes`' empirical distribution by the type's hash."""
    classes = np.asarray(classes)
    values, counts = np.unique(classes, return_counts=True)
    cumulative = np.cumsum(counts / counts.sum())
    pick = lambda u: values[min(int(np.searchsorted(cumulative, u, side="right")), len(values) - 1)]  # noqa: E731
    return np.array([pick(type_priority(w, seed)) for w in words])


def head_weight_table(coef: np.ndarray, directions: tuple[str, str], n_layers: int, n_heads: int) -> pd.DataFrame:
    """One row per head: the coefficient of each direction and weight = mean |coef| of the two."""
    coef = np.asarray(coef).reshape(2, n_layers, n_heads)
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                          "head": np.tile(np.arange(n_heads), n_layers)})
    for d, name in enumerate(directions):
        table[f"coef_{name}"] = coef[d].reshape(-1)
    table["weight"] = np.abs(coef).mean(0).reshape(-1)
    return table


def _loaded(model):
    from probing.models import as_loaded
    return as_loaded(model)


def check_options(n_folds: int, n_boot: int, Cs) -> None:
    """The options every probe shares, checked up front with a message that names the problem."""
    if not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer of at least 2, got {n_folds!r}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
        raise ValueError(f"Cs must be positive regularisation strengths, got {Cs!r}")


# ---- Coreference ------------------------------------------------------------------------------------

def _pair_rows(feats: CandidateFeatures, rows, targets) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (pronoun, candidate) rows of the examples at `rows`: features and is-the-answer labels."""
    rows = np.asarray(rows)
    mask = feats.candidate_mask[rows]
    X = feats.features[rows][mask].reshape(int(mask.sum()), -1)
    y = (np.arange(mask.shape[1])[None, :] == np.asarray(targets)[rows][:, None])[mask]
    return X, y


def fit_coref_probe(feats: CandidateFeatures, rows, targets, C: float) -> Pipeline:
    """Fit the probe on the candidates of the examples at `rows`, with `targets` (one per example) as answers."""
    X, y = _pair_rows(feats, rows, targets)
    return make_probe(C).fit(X, y)


def candidate_scores(probe: Pipeline, feats: CandidateFeatures, rows) -> np.ndarray:
    """(len(rows), C) probe decision values, -inf where a candidate does not exist."""
    rows = np.asarray(rows)
    mask = feats.candidate_mask[rows]
    scores = np.full(mask.shape, -np.inf)
    scores[mask] = probe.decision_function(feats.features[rows][mask].reshape(int(mask.sum()), -1))
    return scores


def head_choices(feats: CandidateFeatures, rows) -> np.ndarray:
    """(len(rows), L, H): the candidate each head attends to most from the pronoun (ties: the first)."""
    rows = np.asarray(rows)
    attention = feats.features[rows][:, :, 0]                                      # (n, C, L, H)
    attention = np.where(feats.candidate_mask[rows][:, :, None, None], attention, -np.inf)
    return attention.argmax(1)


def best_single_head(feats: CandidateFeatures, rows) -> tuple[int, int, float]:
    """(layer, head, accuracy) of the head whose pronoun->candidate argmax is right most often on `rows`."""
    accuracy = (head_choices(feats, rows) == feats.target[np.asarray(rows)][:, None, None]).mean(0)
    layer, head = np.unravel_index(int(np.argmax(accuracy)), accuracy.shape)
    return int(layer), int(head), float(accuracy[layer, head])


def coref_control_targets(feats: CandidateFeatures, seed: int = SEED) -> np.ndarray:
    """Type-level control answers: the candidate whose word type has the highest seeded random value.

    "doctor" beats "nurse" (or not) everywhere both occur, so a probe that can tell candidate types apart
    learns the control; nothing about the pronoun's antecedent is in it.
    """
    if not feats.candidate_words:
        raise ValueError("these features carry no candidate words; extract them with candidate_features")
    control = np.zeros(len(feats), dtype=np.int64)
    for row, words in enumerate(feats.candidate_words):
        control[row] = int(np.argmax([type_priority(w, seed) for w in words]))
    return control


def _accuracy(probe: Pipeline, feats: CandidateFeatures, rows, targets) -> float:
    rows = np.asarray(rows)
    return float((candidate_scores(probe, feats, rows).argmax(1) == np.asarray(targets)[rows]).mean())


@dataclass
class FoldDetail:
    """What one fold trained on and chose (kept for inspection and the leakage tests; not in to_dict)."""
    train_ids: list[str]
    test_ids: list[str]
    C: float
    best_head: tuple[int, int]
    control_train_accuracy: float
    probe: Pipeline
    control_probe: Pipeline


@dataclass
class CorefProbeResult:
    """The coreference probe on one dataset: accuracy, baselines, the type-level control, head weights."""
    model: str
    data: str
    scheme: str
    group_by: str | None
    n_train: int
    n_test: int
    n_folds: int
    C: list[float]
    accuracy: Estimate
    baselines: dict[str, Estimate]          # chance, nearest_candidate, first_candidate, best_single_head, agreement_rule
    best_heads: list[tuple[int, int]]       # the best single head of each fold (chosen on its training side)
    probe_minus_best_head: Estimate
    probe_minus_agreement: Estimate | None  # None when agreement is unknown for some test example
    control_train_accuracy: float           # mean over folds: can the probe memorise the type-level control?
    control_accuracy: Estimate              # on test examples
    selectivity: Estimate                   # accuracy - control_accuracy, paired per example
    beats_control: bool
    twin_consistency: Estimate | None       # share of twin pairs with both members right (None: no twins)
    n_twin_pairs: int
    twin_answers_differ: bool               # most twin pairs have different answers (Winograd) or the same (WinoBias)
    table: pd.DataFrame                     # one row per score: name, mean, ci_low, ci_high
    head_weights: pd.DataFrame              # layer, head, coef per direction, weight
    predictions: pd.DataFrame               # one row per test example
    skipped: list[str]
    folds: list[FoldDetail] = field(default_factory=list, repr=False)
    accuracy_by_C: dict[str, dict[str, float]] = field(default_factory=dict)
    weight_note: str = WEIGHT_NOTE

    def to_dict(self) -> dict:
        """Every number, JSON-ready (the table, head weights and predictions go to CSV files instead)."""
        out = _plain_fields(self, exclude=("table", "head_weights", "predictions", "folds", "skipped"))
        out["n_skipped"] = len(self.skipped)
        out["skipped"] = self.skipped[:50]
        out["top_heads_by_weight"] = _top_heads(self.head_weights)
        return out


def _coref_scorer(feats: CandidateFeatures, targets):
    """fit_and_score(C, train, valid) for choose_C: example accuracy of the argmax candidate."""
    def fit_and_score(C, train, valid):
        return _accuracy(fit_coref_probe(feats, train, targets, C), feats, valid, targets)
    return fit_and_score


def _evaluate_coref_fold(train: CandidateFeatures, test: CandidateFeatures, train_rows, test_rows, C: float,
                         seed: int) -> tuple[pd.DataFrame, FoldDetail]:
    """Fit the probe, the control probe and the best head on the training rows; predict the test rows."""
    train_control, test_control = coref_control_targets(train, seed), coref_control_targets(test, seed)
    probe = fit_coref_probe(train, train_rows, train.target, C)
    control_probe = fit_coref_probe(train, train_rows, train_control, C)
    layer, head, _ = best_single_head(train, train_rows)
    gold = test.target[test_rows]
    predicted = candidate_scores(probe, test, test_rows).argmax(1)
    control_predicted = candidate_scores(control_probe, test, test_rows).argmax(1)
    n_candidates = test.n_candidates[test_rows]
    agreement = [test.agreement[i] if test.agreement else None for i in test_rows]
    frame = pd.DataFrame({
        "id": [test.ids[i] for i in test_rows], "group": [test.groups[i] for i in test_rows],
        "twin": [test.twins[i] if test.twins else None for i in test_rows],
        "n_candidates": n_candidates, "gold": gold, "predicted": predicted, "correct": predicted == gold,
        "control_gold": test_control[test_rows], "control_predicted": control_predicted,
        "control_correct": control_predicted == test_control[test_rows],
        "nearest_correct": test.nearest[test_rows] == gold, "first_correct": test.first[test_rows] == gold,
        "best_head_correct": head_choices(test, test_rows)[:, layer, head] == gold,
        "agreement_decides": agreement,
        # the agreement rule is right when agreement decides, and guesses among the candidates otherwise
        "agreement_rule": [np.nan if a is None else (1.0 if a else 1.0 / k) for a, k in zip(agreement, n_candidates)]})
    detail = FoldDetail(train_ids=[train.ids[i] for i in train_rows], test_ids=[test.ids[i] for i in test_rows],
                        C=C, best_head=(layer, head),
                        control_train_accuracy=_accuracy(control_probe, train, train_rows, train_control),
                        probe=probe, control_probe=control_probe)
    return frame, detail


def twin_pairs_correct(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per twin pair with both members among the predictions: its group, whether both are right, and
    whether the twins share the answer (WinoBias: the pronoun flips, the antecedent stays)."""
    twins = predictions.dropna(subset=["twin"])
    both = twins.groupby("twin").agg(n=("correct", "size"), both_right=("correct", "all"), group=("group", "first"),
                                     same_answer=("gold", lambda g: g.nunique() == 1))
    return both[both["n"] == 2].reset_index()


def _summarise_coref(predictions: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Accuracy, baselines, control and differences, each with a cluster-bootstrap CI over fold groups."""
    groups = predictions["group"].to_numpy()
    est = lambda values: estimate(np.asarray(values, dtype=float), groups, n_boot, seed)  # noqa: E731
    correct = predictions["correct"].to_numpy(float)
    agreement = predictions["agreement_rule"].to_numpy(float)
    known = not np.isnan(agreement).any()
    baselines = {"chance": est(1.0 / predictions["n_candidates"]),
                 "nearest_candidate": est(predictions["nearest_correct"]),
                 "first_candidate": est(predictions["first_correct"]),
                 "best_single_head": est(predictions["best_head_correct"])}
    if known:
        baselines["agreement_rule"] = est(agreement)
    selectivity = est(correct - predictions["control_correct"].to_numpy(float))
    pairs = twin_pairs_correct(predictions)
    twin = (estimate(pairs["both_right"].to_numpy(float), pairs["group"].to_numpy(), n_boot, seed)
            if len(pairs) else None)
    differ = bool(len(pairs)) and bool((~pairs["same_answer"].astype(bool)).mean() > 0.5)
    return {"accuracy": est(correct), "baselines": baselines, "twin_answers_differ": differ,
            "probe_minus_best_head": est(correct - predictions["best_head_correct"].to_numpy(float)),
            "probe_minus_agreement": est(correct - agreement) if known else None,
            "control_accuracy": est(predictions["control_correct"]), "selectivity": selectivity,
            "beats_control": above_zero(selectivity), "twin_consistency": twin, "n_twin_pairs": len(pairs)}


def _coref_table(summary: dict, control_train: float) -> pd.DataFrame:
    scores = {"probe accuracy": summary["accuracy"],
              **{f"baseline: {k}": v for k, v in summary["baselines"].items()},
              "control task: train accuracy": control_train,
              "control task: test accuracy": summary["control_accuracy"],
              "selectivity (probe - control)": summary["selectivity"],
              "probe - best single head": summary["probe_minus_best_head"],
              "probe - agreement rule": summary["probe_minus_agreement"],
              "twin consistency (both twins right)": summary["twin_consistency"]}
    return _estimate_rows(scores)


@single_threaded_blas
def coref_probe_from_features(train: CandidateFeatures, test: CandidateFeatures | None = None,
                              validation: CandidateFeatures | None = None, *, n_folds: int = 5,
                              Cs=DEFAULT_CS, n_boot: int = N_BOOT, seed: int = SEED, data: str = "",
                              group_by: str | None = None) -> CorefProbeResult:
    """The coreference probe on extracted features: train/test, or grouped k-fold on `train` when test is None.

    Train/test: C is tuned on `validation` when given, else by inner grouped CV on train. The groups are the
    features' own (see `candidate_features`); `group_by` here only names them in `scheme`.
    """
    check_options(n_folds, n_boot, Cs)
    if len(train) == 0:
        raise ValueError("no training examples")
    n_layers, n_heads = train.features.shape[-2:]
    if test is not None and test.features.shape[2:] != train.features.shape[2:]:
        raise ValueError("train and test features come from models of different shapes")
    by_C: dict[str, dict[float, float]] = {}
    if test is None:
        frames, folds = [], []
        for train_rows, test_rows in grouped_folds(train.groups, n_folds):
            splits = [(train_rows[a], train_rows[b]) for a, b in inner_splits(np.asarray(train.groups)[train_rows])]
            C = choose_C(Cs, splits, _coref_scorer(train, train.target))
            frame, detail = _evaluate_coref_fold(train, train, train_rows, test_rows, C, seed)
            frames.append(frame.assign(fold=len(folds)))
            folds.append(detail)
        predictions = pd.concat(frames, ignore_index=True)
        final = fit_coref_probe(train, np.arange(len(train)), train.target, float(np.median([f.C for f in folds])))
        scheme = (f"grouped {n_folds}-fold cross-validation on {data or 'the data'} (groups: meta['{group_by or 'group'}'] "
                  "joined with meta['twin']); C by inner grouped 3-fold CV")
        n_train = len(train) - int(np.mean([len(f.test_ids) for f in folds]))
    else:
        all_train = np.arange(len(train))
        if validation is not None:
            by_C["validation_accuracy"] = {C: _heldout_accuracy(train, validation, C) for C in sorted(Cs)}
            C = float(max(sorted(Cs), key=by_C["validation_accuracy"].get))  # ties: the smaller C
            how = "C tuned on the validation set"
        else:
            C = choose_C(Cs, inner_splits(train.groups), _coref_scorer(train, train.target))
            how = "C by inner grouped 3-fold CV on the training set"
        # Sensitivity only (never used to choose C): how much the test accuracy depends on C.
        by_C["test_accuracy_not_used_for_selection"] = {C: _heldout_accuracy(train, test, C) for C in sorted(Cs)}
        predictions, detail = _evaluate_coref_fold(train, test, all_train, np.arange(len(test)), C, seed)
        predictions["fold"] = 0
        folds, final = [detail], detail.probe
        scheme = f"train/test ({how}): {data}"
        n_train = len(train)
    summary = _summarise_coref(predictions, n_boot, seed)
    control_train = float(np.mean([f.control_train_accuracy for f in folds]))
    return CorefProbeResult(
        model=train.model, data=data, scheme=scheme, group_by=group_by, n_train=n_train, n_test=len(predictions),
        n_folds=len(folds), C=[f.C for f in folds], best_heads=[f.best_head for f in folds],
        control_train_accuracy=control_train, table=_coref_table(summary, control_train),
        head_weights=head_weight_table(final.named_steps["logreg"].coef_[0], DIRECTIONS_COREF, n_layers, n_heads),
        predictions=predictions, skipped=list(train.skipped) + (list(test.skipped) if test is not None else []),
        folds=folds, accuracy_by_C={name: {f"{C:g}": v for C, v in values.items()} for name, values in by_C.items()},
        **summary)


def _heldout_accuracy(train: CandidateFeatures, heldout: CandidateFeatures, C: float) -> float:
    """Example accuracy on a held-out set of the probe fit on all training examples."""
    probe = fit_coref_probe(train, np.arange(len(train)), train.target, C)
    return _accuracy(probe, heldout, np.arange(len(heldout)), heldout.target)


def coref_probe(model, examples, *, test=None, validation=None, n_folds: int = 5, Cs=DEFAULT_CS,
                n_boot: int = N_BOOT, seed: int = SEED, batch_tokens: int = BATCH_TOKENS, data: str = "",
                group_by: str | None = None, progress: bool = False) -> CorefProbeResult:
    """The attention-only coreference probe on coreference Examples (those with candidate_spans).

    examples: the training examples; grouped k-fold on them when `test` is None, else train on them, tune C
    on `validation` (or by inner CV) and report on `test`. group_by: the meta key of the fold groups (default:
    `DEFAULT_GROUP_BY` for the examples' dataset, e.g. occupation for Winogender, else meta["group"]); twins
    always share a fold.
    """
    check_options(n_folds, n_boot, Cs)
    examples = [e for e in examples if e.relation == "coreference"]
    if not examples:
        raise ValueError("no coreference examples")
    group_by = resolve_group_by(examples, group_by)
    loaded = _loaded(model)
    extract = lambda items: candidate_features(loaded, items, batch_tokens, progress=progress,  # noqa: E731
                                               group_by=group_by)
    return coref_probe_from_features(extract(examples), extract(test) if test else None,
                                     extract(validation) if validation else None, n_folds=n_folds, Cs=Cs,
                                     n_boot=n_boot, seed=seed, data=data, group_by=group_by)


# ---- Negation: cue-type transfer --------------------------------------------------------------------

POSITION_CAP = 40
IDENTITY_BUCKETS = 2 ** 12


def positional_features(feats: AdjacentPairFeatures) -> np.ndarray:
    """One-hot position of w, one-hot distance to the sentence end (both capped at 40), and sentence length."""
    position = np.minimum(feats.position, POSITION_CAP)
    to_end = np.minimum(feats.n_words - 1 - feats.position, POSITION_CAP)
    eye = np.eye(POSITION_CAP + 1)
    return np.hstack([eye[position], eye[to_end], feats.n_words[:, None].astype(float)])


def identity_features(feats: AdjacentPairFeatures):
    """Hashed one-hot of the lowercased word w (sparse, 4096 buckets)."""
    from sklearn.feature_extraction import FeatureHasher
    return FeatureHasher(n_features=IDENTITY_BUCKETS, input_type="string", alternate_sign=False).transform(
        [[w] for w in feats.word])


def pair_control_labels(feats: AdjacentPairFeatures, seed: int = SEED) -> np.ndarray:
    """Type-level control: in every sentence, the pair whose word w has the highest seeded random value."""
    priority = np.array([type_priority(w, seed) for w in feats.word])
    label = np.zeros(len(feats), bool)
    for sentence in np.unique(feats.example):
        rows = np.flatnonzero(feats.example == sentence)
        label[rows[int(np.argmax(priority[rows]))]] = True
    return label


def sentence_top1(scores, labels, sentence_of_row, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sentence among `rows` that has a positive pair: (sentence, top pair is positive, 1/#pairs)."""
    rows = np.asarray(rows)
    frame = pd.DataFrame({"sentence": np.asarray(sentence_of_row)[rows], "score": np.asarray(scores)[rows],
                          "label": np.asarray(labels)[rows]})
    frame = frame[frame.groupby("sentence")["label"].transform("any")]
    top = frame.loc[frame.groupby("sentence")["score"].idxmax()]
    sizes = frame.groupby("sentence").size()
    return (top["sentence"].to_numpy(), top["label"].to_numpy(float),
            (1.0 / sizes.loc[top["sentence"]]).to_numpy())


def _fit_pairs(X, y, rows, groups, Cs, scale: bool = True) -> tuple[Pipeline, float]:
    """Fit on `rows`, C chosen by inner grouped CV on them (by sentence top-1 needs sentences; F1 is simpler)."""
    rows = np.asarray(rows)

    def fit_and_score(C, train, valid):
        predicted = make_probe(C, scale).fit(X[rows[train]], y[rows[train]]).predict(X[rows[valid]])
        truth = y[rows[valid]]
        tp = float((predicted & truth).sum())
        return 2 * tp / max(2 * tp + float((predicted & ~truth).sum()) + float((~predicted & truth).sum()), 1.0)
    C = choose_C(Cs, inner_splits(groups[rows]), fit_and_score)
    return make_probe(C, scale).fit(X[rows], y[rows]), C


@dataclass
class NegationProbeResult:
    """Cue-type transfer: trained on `train_cue` sentences, tested on every other cue form (see module doc)."""
    model: str
    data: str
    train_cue: str
    n_train_sentences: int
    n_pairs: int
    C: float
    cue_forms: dict[str, int]            # negated sentences per cue form
    table: pd.DataFrame                  # one row per evaluation (in-domain CV, transfer to each form)
    results: dict[str, dict]             # evaluation -> score -> Estimate / number
    head_weights: pd.DataFrame
    predictions: pd.DataFrame            # one row per pair, with the transfer scores
    skipped: list[str]
    weight_note: str = WEIGHT_NOTE

    def to_dict(self) -> dict:
        out = _plain_fields(self, exclude=("table", "head_weights", "predictions", "skipped"))
        out["n_skipped"] = len(self.skipped)
        out["skipped"] = self.skipped[:50]
        out["top_heads_by_weight"] = _top_heads(self.head_weights)
        return out


def _evaluate_transfer(scores: dict[str, np.ndarray], feats: AdjacentPairFeatures, y, control, rows,
                       control_train: float, n_boot: int, seed: int) -> dict:
    """Sentence top-1 of the probe, its baselines and its control on the negated sentences among `rows`."""
    sentence_groups = np.asarray(feats.groups, dtype=object)
    negated_rows = np.asarray([r for r in rows if feats.roles[feats.example[r]] != "control"])
    sentences, probe, chance = sentence_top1(scores["probe"], y, feats.example, negated_rows)
    groups = sentence_groups[sentences]
    out = {"n_sentences": len(sentences)}
    if not len(sentences):
        return out
    est = lambda values: estimate(values, groups, n_boot, seed)  # noqa: E731
    per_sentence = {}
    for name in ("positional", "word_identity"):
        s, correct, _ = sentence_top1(scores[name], y, feats.example, negated_rows)
        per_sentence[name] = pd.Series(correct, index=s).reindex(sentences).to_numpy()
    s, control_correct, _ = sentence_top1(scores["control"], control, feats.example, negated_rows)
    control_correct = pd.Series(control_correct, index=s).reindex(sentences).to_numpy()
    selectivity = est(probe - control_correct)
    out.update({"probe_top1": est(probe), "chance": est(chance), "positional_top1": est(per_sentence["positional"]),
                "word_identity_top1": est(per_sentence["word_identity"]),
                "control_train_top1": control_train, "control_top1": est(control_correct),
                "selectivity": selectivity, "beats_control": above_zero(selectivity),
                "probe_minus_positional": est(probe - per_sentence["positional"]),
                "probe_minus_word_identity": est(probe - per_sentence["word_identity"])})
    hard = _cue_outscores_adverb(scores["probe"], feats, rows)
    if len(hard):
        out["cue_outscores_adverb"] = estimate(hard.to_numpy(float), None, n_boot, seed)
    return out


def _cue_outscores_adverb(score, feats: AdjacentPairFeatures, rows) -> pd.Series:
    """Per sentence pair among `rows`: does the cue's pair outscore the substitute adverb's pair?"""
    rows = np.asarray(rows)
    groups = feats.pair_groups[rows]
    cue = pd.Series(np.asarray(score)[rows][feats.label[rows]], index=groups[feats.label[rows]])
    adverb = pd.Series(np.asarray(score)[rows][feats.hard_negative[rows]], index=groups[feats.hard_negative[rows]])
    both = cue.index.intersection(adverb.index).unique()
    return (cue.groupby(level=0).first()[both] > adverb.groupby(level=0).first()[both])


@single_threaded_blas
def negation_probe_from_features(feats: AdjacentPairFeatures, *, train_cue: str = "not", n_folds: int = 5,
                                 Cs=DEFAULT_CS, n_boot: int = N_BOOT, seed: int = SEED,
                                 data: str = "") -> NegationProbeResult:
    """Cue-type transfer on extracted pair features; in-domain grouped CV on the train cue as a reference."""
    check_options(n_folds, n_boot, Cs)
    y = feats.label.astype(bool)
    forms = np.asarray(feats.cue_forms, dtype=object)[feats.example]
    train_rows = np.flatnonzero(forms == train_cue)
    if not y[train_rows].any():
        raise ValueError(f"no sentence with the cue {train_cue!r} to train on; cue forms found: "
                         f"{sorted(set(feats.cue_forms))}")
    groups = feats.pair_groups
    control = pair_control_labels(feats, seed)
    X = {"probe": feats.features.reshape(len(feats), -1), "positional": positional_features(feats),
         "word_identity": identity_features(feats), "control": feats.features.reshape(len(feats), -1)}
    labels = {"probe": y, "positional": y, "word_identity": y, "control": control}
    scale = {"word_identity": False}
    counts = pd.Series([f for f, r in zip(feats.cue_forms, feats.roles) if r != "control"]).value_counts()
    results, transfer_scores, C_probe = {}, {}, None
    # In-domain reference: grouped CV within the train cue's sentences.
    in_domain = {name: np.zeros(len(feats)) for name in X}
    control_train = []
    for train, test in grouped_folds(groups[train_rows], n_folds):
        train, test = train_rows[train], train_rows[test]
        for name in X:
            probe, _ = _fit_pairs(X[name], labels[name], train, groups, Cs, scale.get(name, True))
            in_domain[name][test] = probe.decision_function(X[name][test])
            if name == "control":
                _, hits, _ = sentence_top1(probe.decision_function(X[name][train]), control[train],
                                           feats.example[train], np.arange(len(train)))
                control_train.append(float(hits.mean()))
    results[f"{train_cue} (in-domain, grouped {n_folds}-fold CV)"] = _evaluate_transfer(
        in_domain, feats, y, control, train_rows, float(np.mean(control_train)), n_boot, seed)
    # Transfer: fit on every train-cue sentence, score every other form.
    fitted = {name: _fit_pairs(X[name], labels[name], train_rows, groups, Cs, scale.get(name, True)) for name in X}
    C_probe = fitted["probe"][1]
    for name, (probe, _) in fitted.items():
        transfer_scores[name] = probe.decision_function(X[name])
    _, hits, _ = sentence_top1(transfer_scores["control"], control, feats.example, train_rows)
    for form in [f for f in counts.index if f != train_cue and counts[f] >= MIN_TEST_SENTENCES]:
        results[f"{train_cue} -> {form} (transfer)"] = _evaluate_transfer(
            transfer_scores, feats, y, control, np.flatnonzero(forms == form), float(hits.mean()), n_boot, seed)
    n_layers, n_heads = feats.features.shape[-2:]
    predictions = pd.DataFrame({
        "sentence": [feats.ids[i] for i in feats.example], "group": groups, "cue_form": forms, "word": feats.word,
        "position": feats.position, "label": y, "hard_negative": feats.hard_negative, "control_label": control,
        "in_domain_score": np.where(forms == train_cue, in_domain["probe"], np.nan),
        "transfer_score": np.where(forms != train_cue, transfer_scores["probe"], np.nan)})
    table = pd.concat([_estimate_rows({k: v for k, v in r.items() if k not in ("n_sentences", "beats_control")})
                       .assign(evaluation=name, n_sentences=r["n_sentences"], beats_control=r.get("beats_control"))
                       for name, r in results.items()], ignore_index=True)
    return NegationProbeResult(
        model=feats.model, data=data, train_cue=train_cue,
        n_train_sentences=int(counts.get(train_cue, 0)), n_pairs=len(feats), C=float(C_probe),
        cue_forms={str(k): int(v) for k, v in counts.items()}, table=table[["evaluation", "name", "mean", "ci_low",
                                                                             "ci_high", "n_sentences", "beats_control"]],
        results=results,
        head_weights=head_weight_table(fitted["probe"][0].named_steps["logreg"].coef_[0], DIRECTIONS_ADJACENT,
                                       n_layers, n_heads),
        predictions=predictions, skipped=list(feats.skipped))


def negation_probe(model, examples, *, train_cue: str = "not", n_folds: int = 5, Cs=DEFAULT_CS,
                   n_boot: int = N_BOOT, seed: int = SEED, batch_tokens: int = BATCH_TOKENS, data: str = "",
                   progress: bool = False) -> NegationProbeResult:
    """Cue-type transfer on negation Examples (negated, and their controls as hard negatives)."""
    check_options(n_folds, n_boot, Cs)
    examples = [e for e in examples if e.relation == "negation" and e.role in ("negated", "control")]
    if not examples:
        raise ValueError("no negated or control negation examples")
    feats = adjacent_pair_features(_loaded(model), examples, batch_tokens, progress=progress)
    return negation_probe_from_features(feats, train_cue=train_cue, n_folds=n_folds, Cs=Cs, n_boot=n_boot,
                                        seed=seed, data=data)


# ---- Layer-wise probe on hidden states ---------------------------------------------------------------

@dataclass
class LayerProbeResult:
    """Per layer: probe accuracy on the word after the source, the type-level control, and (negation) the
    adverb-vs-adverb probe."""
    model: str
    task: str                   # "negation" (negated vs control sentence) or "coreference" (antecedent gender)
    label: str
    classes: list[str]
    n_examples: int
    n_groups: int
    n_folds: int
    table: pd.DataFrame         # layer, accuracy, control_train_accuracy, control_accuracy, selectivity (+CIs), ...
    skipped: list[str]
    adverb_swap: str = ""       # what the adverb-vs-adverb probe compares (negation only)
    note: str = ""

    def to_dict(self) -> dict:
        out = _plain_fields(self, exclude=("table", "skipped"))
        out["layers"] = self.table.to_dict("records")
        out["n_skipped"] = len(self.skipped)
        out["skipped"] = self.skipped[:50]
        return out


def _layer_predictions(X, y, groups, folds, Cs) -> tuple[np.ndarray, float]:
    """Out-of-fold predictions of one layer (C by inner grouped CV per fold), and the mean training accuracy."""
    predicted, train_accuracy = np.empty(len(y), dtype=y.dtype), []
    for train, test in folds:
        def fit_and_score(C, a, b):
            return float((make_probe(C).fit(X[train[a]], y[train[a]]).predict(X[train[b]]) == y[train[b]]).mean())
        C = choose_C(Cs, inner_splits(groups[train]), fit_and_score)
        probe = make_probe(C).fit(X[train], y[train])
        predicted[test] = probe.predict(X[test])
        train_accuracy.append(float((probe.predict(X[train]) == y[train]).mean()))
    return predicted, float(np.mean(train_accuracy))


def _put(row: dict, name: str, value: Estimate) -> None:
    row.update({name: value.mean, f"{name}_ci_low": value.ci_low, f"{name}_ci_high": value.ci_high})


@single_threaded_blas
def layer_probe_from_states(states: np.ndarray, labels, groups, words=None, *, swap_states: np.ndarray | None = None,
                            swap_labels=None, swap_groups=None, n_folds: int = 5, Cs=(0.01, 0.1, 1.0),
                            n_boot: int = N_BOOT, seed: int = SEED, model: str = "", task: str = "", label: str = "",
                            skipped: list[str] | None = None) -> LayerProbeResult:
    """Per layer, grouped-CV accuracy on states (N, layers, D), the type-level control on `words` (one per row;
    default: every row its own type), and, given swap_*, the same probe on the adverb-vs-adverb contrast."""
    labels, groups = np.asarray(labels).astype(str), np.asarray(groups, dtype=object)
    if states.ndim != 3 or len(states) != len(labels) or len(labels) != len(groups):
        raise ValueError(f"states must be (N, layers, D) with one label and group per row, got {states.shape}, "
                         f"{len(labels)} labels, {len(groups)} groups")
    if len(set(labels.tolist())) < 2:
        raise ValueError("the layer probe needs at least two label values")
    check_options(n_folds, n_boot, Cs)
    words = [str(i) for i in range(len(labels))] if words is None else list(words)
    if len(words) != len(labels):
        raise ValueError(f"words has {len(words)} entries for {len(labels)} rows")
    control = type_control_labels(words, labels, seed)
    folds = grouped_folds(groups, n_folds)
    swap_folds = None
    if swap_states is not None:
        swap_labels, swap_groups = np.asarray(swap_labels).astype(str), np.asarray(swap_groups, dtype=object)
        swap_folds = grouped_folds(swap_groups, n_folds)
    est = lambda values, g=groups: estimate(values, g, n_boot, seed)  # noqa: E731
    majority = pd.Series(labels).value_counts(normalize=True).iloc[0]
    rows = []
    for layer in range(states.shape[1]):
        predicted, _ = _layer_predictions(states[:, layer], labels, groups, folds, Cs)
        control_predicted, control_train = _layer_predictions(states[:, layer], control, groups, folds, Cs)
        correct, control_correct = (predicted == labels).astype(float), (control_predicted == control).astype(float)
        row = {"layer": layer, "majority_baseline": float(majority), "control_train_accuracy": control_train}
        _put(row, "accuracy", est(correct))
        _put(row, "control_accuracy", est(control_correct))
        selectivity = est(correct - control_correct)
        _put(row, "selectivity", selectivity)
        row["beats_control"] = above_zero(selectivity)
        if swap_folds is not None:
            swap_predicted, _ = _layer_predictions(swap_states[:, layer], swap_labels, swap_groups, swap_folds, Cs)
            swap_correct = (swap_predicted == swap_labels).astype(float)
            _put(row, "adverb_swap_accuracy", est(swap_correct, swap_groups))
            # per sentence pair: negation accuracy minus adverb-swap accuracy (both pairs share the control)
            real = pd.Series(correct).groupby(groups).mean()
            swap = pd.Series(swap_correct).groupby(swap_groups).mean()
            both = real.index.intersection(swap.index)
            difference = estimate((real[both] - swap[both]).to_numpy(), None, n_boot, seed)
            _put(row, "negation_minus_swap", difference)
            row["negation_beats_swap"] = above_zero(difference)
        rows.append(row)
    return LayerProbeResult(model=model, task=task, label=label, classes=sorted(set(labels.tolist())),
                            n_examples=len(labels), n_groups=len(set(groups.tolist())), n_folds=n_folds,
                            table=pd.DataFrame(rows), skipped=list(skipped or []))


def adverb_swap_examples(examples: list[Example], swaps=ADVERB_SWAPS) -> list[Example]:
    """For every control sentence, the same sentence with another adverb in its adverb's place (role "swap").

    The first adverb of `swaps` that differs from the control's own is used, so like "not" it is (almost
    always) one fixed word put against the controls' varied adverbs.
    """
    out = []
    for e in examples:
        if e.role != "control":
            continue
        adverb = e.source
        swap = next(a for a in swaps if a != adverb.lower())
        swap = swap.capitalize() if adverb[:1].isupper() else swap
        start, end = e.source_span
        shift = len(swap) - (end - start)
        target = [p + shift if p >= end else p for p in e.target_span]
        out.append(example_from_dict({"text": e.text[:start] + swap + e.text[end:], "relation": "negation",
                                      "source_span": [start, start + len(swap)], "target_span": target,
                                      "id": f"{e.id}:swap", "meta": {**e.meta, "role": "swap", "adverb": swap,
                                                                     "swapped_from": adverb}}))
    return out


def layer_inputs(examples, task: str, group_by: str | None = None) -> tuple[list, list[str], list[str]]:
    """The examples, labels and groups of a layer task; negation keeps only complete (negated, control) pairs."""
    if task == "negation":
        examples = [e for e in examples if e.relation == "negation" and e.role in ("negated", "control")]
        roles: dict[str, set] = {}
        for e in examples:
            roles.setdefault(negation_group(e), set()).add(e.role)
        examples = balanced_controls([e for e in examples if roles[negation_group(e)] == {"negated", "control"}])
        return examples, [e.role for e in examples], [negation_group(e) for e in examples]
    if task == "coreference":
        examples = [e for e in examples if e.relation == "coreference" and e.meta.get("gender")]
        return examples, [str(e.meta["gender"]) for e in examples], fold_groups(examples, resolve_group_by(examples, group_by))
    raise ValueError(f"task must be 'negation' or 'coreference', got {task!r}")


def layer_probe(model, examples, *, task: str, n_folds: int = 5, Cs=(0.01, 0.1, 1.0), n_boot: int = N_BOOT,
                seed: int = SEED, batch_tokens: int = BATCH_TOKENS, group_by: str | None = None,
                progress: bool = False) -> LayerProbeResult:
    """Hidden state of the word after the source, per layer: negated vs control (negation, with the
    adverb-vs-adverb probe beside it) or meta gender (coreference)."""
    check_options(n_folds, n_boot, Cs)
    examples, labels, groups = layer_inputs(examples, task, group_by)
    if not examples:
        raise ValueError(f"no usable examples for the {task} layer probe (negation needs negated+control pairs, "
                         "coreference needs meta['gender'])")
    loaded = _loaded(model)
    swaps = adverb_swap_examples(examples) if task == "negation" else []
    states = word_hidden_states(loaded, examples + swaps, batch_tokens, progress=progress)
    real = [k for k, i in enumerate(states.kept) if i < len(examples)]
    kept = [states.kept[k] for k in real]
    swap_kw = {}
    if swaps:
        # adverb vs adverb: the control sentence (its adverb) against the swap sentence (another adverb)
        rows = [k for k, i in enumerate(states.kept) if i >= len(examples) or examples[i].role == "control"]
        swap_kw = dict(swap_states=states.states[rows],
                       swap_labels=["swap" if states.kept[k] >= len(examples) else "control" for k in rows],
                       swap_groups=[negation_group((examples + swaps)[states.kept[k]]) for k in rows])
    label = "negated vs control sentence" if task == "negation" else "gender of the antecedent (meta['gender'])"
    result = layer_probe_from_states(states.states[real], [labels[i] for i in kept], [groups[i] for i in kept],
                                     [states.words[k] for k in real], n_folds=n_folds, Cs=Cs, n_boot=n_boot,
                                     seed=seed, model=loaded.name, task=task, label=label,
                                     skipped=states.skipped, **swap_kw)
    if swaps:
        used = pd.Series([e.meta["adverb"] for e in swaps]).value_counts()
        result.adverb_swap = ("control sentence vs the same sentence with another adverb in place of its adverb ("
                              + ", ".join(f"{a}: {n}" for a, n in used.items()) + ")")
    result.note = ("Probed: the hidden state of the word right after the source (mean over its pieces); layer 0 "
                   "is the embedding output. Control task (Hewitt & Liang 2019): each word type of the probed word "
                   "gets one random label (a seeded hash, drawn from the label distribution), which a probe can "
                   "memorise; its train accuracy shows whether it can.")
    return result
