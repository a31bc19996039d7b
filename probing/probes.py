"""Probing classifiers on attention features and hidden states, with baselines and control tasks.

Three probes, each a library function returning a plain dataclass (its `to_dict()` is JSON-ready):

- `coref_probe` (Clark et al. 2019's attention-only probe): a `StandardScaler + LogisticRegression` pipeline
  on the 2 x L x H attention features of each (pronoun, candidate) pair (see `probing.features`), trained to
  say whether the candidate is the antecedent; an example's prediction is its highest-scoring candidate.
- `negation_probe`: the same pipeline on every adjacent word pair (w, w+1), trained to say whether w is a
  negation cue, with a positional control, a word-identity control and a comparison of its per-head
  weights with `score_heads`' single-head selectivity.
- `layer_probe`: per layer, a pipeline on the hidden state of the word after the source (negated vs
  control sentence, or the gender of the antecedent), with a random-label control per layer.

Conventions, shared by all three:
- No leakage: every split is grouped (GroupKFold on the example's group: meta["group"] for coreference,
  meta["pair"] for negation so a negated sentence and its control share a fold), the scaler lives inside the
  pipeline and is fit per training fold, C is chosen on the training side only (an inner grouped CV, or
  the given validation set), and the best single head is chosen on training examples only.
- Control tasks (Hewitt & Liang 2019): the same probe, same C, trained and scored on control labels that
  keep the label distribution but carry no information about the property. Labels are a seeded hash of
  the example's group, so every member of a group gets the same control answer. selectivity = score -
  control score. Because folds are grouped, a test group's control labels were never seen: control
  accuracy near chance shows that nothing leaks from the group, not that the probe has low capacity.
- CIs: 95% percentile bootstrap resampling groups (whole groups, since their members are related); a
  difference is bootstrapped on the same resamples (paired).
- Speed: the fits run with BLAS limited to one thread (`single_threaded_blas`): on a busy small CPU,
  multi-threaded BLAS on these small matrices is up to 10x slower than one thread.
- Head weights: coefficients of the probe refit on all training data (after scaling, so comparable
  across heads); a head's `weight` is the mean |coef| of its two directions.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from probing.features import (DIRECTIONS_ADJACENT, DIRECTIONS_COREF, AdjacentPairFeatures, CandidateFeatures,
                              adjacent_pair_features, candidate_features, negation_group, word_hidden_states)
from probing.features import example_group as coref_group

DEFAULT_CS = (0.0001, 0.001, 0.01, 0.1, 1.0)
WEIGHT_NOTE = ("weight = mean |coefficient| of the head's two directions in the probe refit on all training "
               "data; features are standard-scaled, so weights are comparable across heads")


# ---- Estimates and the grouped bootstrap ------------------------------------------------------------

@dataclass
class Estimate:
    """A number with its 95% bootstrap CI (resampling groups) and the count it rests on."""
    value: float
    ci_low: float
    ci_high: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


def grouped_bootstrap(stat: Callable[[np.ndarray], float], groups, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> Estimate:
    """stat(row_weights) on the data, and its percentile CI over resamples of whole groups.

    A resample draws the groups with replacement; a row's weight is how often its group was drawn, so any
    weighted statistic (a mean, an F1) works. The same seed gives the same resamples, so differences of
    two statistics computed in one `stat` are paired.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    codes = pd.factorize(np.asarray(groups, dtype=object))[0]
    if len(codes) == 0:
        raise ValueError("no rows to bootstrap")
    n_groups = codes.max() + 1
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    values = np.array([stat(draw[codes].astype(np.float64)) for draw in draws])
    alpha = (1 - level) / 2
    return Estimate(value=float(stat(np.ones(len(codes)))), ci_low=float(np.nanquantile(values, alpha)),
                    ci_high=float(np.nanquantile(values, 1 - alpha)), n=int(len(codes)))


def _jsonable(value):
    """Estimates to dicts, tuples to lists, numpy scalars to Python numbers, recursively."""
    if isinstance(value, Estimate):
        return asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _top_heads(weights: pd.DataFrame, k: int = 5) -> list[dict]:
    """The k heads with the largest probe weight, as records."""
    return weights.nlargest(k, "weight")[["layer", "head", "weight"]].to_dict("records")


def _plain_fields(result, exclude: tuple[str, ...]) -> dict:
    """A result dataclass's fields, less `exclude`, as JSON-ready values."""
    return {f.name: _jsonable(getattr(result, f.name)) for f in fields(result) if f.name not in exclude}


def weighted_mean(values) -> Callable[[np.ndarray], float]:
    """A bootstrap statistic: the weighted mean of `values` (e.g. 0/1 correctness)."""
    values = np.asarray(values, dtype=np.float64)
    return lambda w: float((w * values).sum() / max(w.sum(), 1e-12))


def weighted_f1(predicted, gold) -> Callable[[np.ndarray], float]:
    """A bootstrap statistic: F1 of the positive class with row weights (0 when nothing is positive)."""
    predicted, gold = np.asarray(predicted, bool), np.asarray(gold, bool)
    tp, fp, fn = (predicted & gold).astype(float), (predicted & ~gold).astype(float), (~predicted & gold).astype(float)

    def f1(w):
        denominator = 2 * (w * tp).sum() + (w * fp).sum() + (w * fn).sum()
        return float(2 * (w * tp).sum() / denominator) if denominator > 0 else 0.0
    return f1


def difference(a: Callable, b: Callable) -> Callable[[np.ndarray], float]:
    """A bootstrap statistic: a(w) - b(w), paired on the same resample."""
    return lambda w: a(w) - b(w)


# ---- Probes, folds and the choice of C --------------------------------------------------------------

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
    steps = [("scale", StandardScaler(with_mean=scale, with_std=scale))] if scale else []
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


def choose_C(Cs, splits, fit_and_score: Callable[[float, np.ndarray, np.ndarray], float]) -> float:
    """The C with the best mean validation score over the splits; ties go to the smaller (simpler) C."""
    Cs = sorted(Cs)
    if not Cs:
        raise ValueError("Cs is empty: give at least one regularisation strength")
    if len(Cs) == 1 or not splits:
        return float(Cs[len(Cs) // 2])
    means = [np.mean([fit_and_score(C, train, valid) for train, valid in splits]) for C in Cs]
    return float(Cs[int(np.argmax(means))])


def inner_splits(groups, n_inner: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped splits of a training fold for choosing C; none when there are too few groups."""
    n_groups = len(set(np.asarray(groups, dtype=object).tolist()))
    return grouped_folds(groups, min(n_inner, n_groups)) if n_groups >= 2 else []


def stable_unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same on every run and machine (unlike hash())."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def _draw(distribution: np.ndarray, u: float) -> int:
    """The category at quantile u of a discrete distribution (inverse CDF)."""
    return int(min(np.searchsorted(np.cumsum(distribution), u, side="right"), len(distribution) - 1))


def group_control_labels(labels, groups, seed: int = 0) -> np.ndarray:
    """Control labels: each group gets one label, drawn from the labels' empirical distribution by a seeded hash."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    distribution = counts / counts.sum()
    by_group = {g: classes[_draw(distribution, stable_unit(seed, str(g)))] for g in dict.fromkeys(groups)}
    return np.array([by_group[g] for g in groups])


def head_weight_table(coef: np.ndarray, directions: tuple[str, str], n_layers: int, n_heads: int) -> pd.DataFrame:
    """One row per head: the coefficient of each direction and weight = mean |coef| of the two."""
    coef = np.asarray(coef).reshape(2, n_layers, n_heads)
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                          "head": np.tile(np.arange(n_heads), n_layers)})
    for d, name in enumerate(directions):
        table[f"coef_{name}"] = coef[d].reshape(-1)
    table["weight"] = np.abs(coef).mean(0).reshape(-1)
    return table


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


def coref_control_targets(feats: CandidateFeatures, seed: int = 0) -> np.ndarray:
    """Control answers: a seeded hash of the group picks the candidate position (gold positions' distribution).

    Among examples with the same number of candidates, the control positions follow the gold positions'
    distribution (so "first candidate" is as frequent as in the gold labels), and every example of a group
    gets the same position: nothing about the pronoun's actual antecedent is left.
    """
    n_candidates = feats.n_candidates
    control = np.zeros(len(feats), dtype=np.int64)
    for k in np.unique(n_candidates):
        rows = np.flatnonzero(n_candidates == k)
        distribution = np.bincount(feats.target[rows], minlength=k) / len(rows)
        for row in rows:
            control[row] = _draw(distribution, stable_unit(seed, feats.groups[row]))
    return control


@dataclass
class FoldDetail:
    """What one fold trained on and chose (kept for inspection and the leakage tests; not in to_dict)."""
    train_ids: list[str]
    test_ids: list[str]
    C: float
    best_head: tuple[int, int]
    probe: Pipeline
    control_probe: Pipeline


@dataclass
class CorefProbeResult:
    """The coreference probe on one dataset: accuracy, baselines, control, head weights (see module doc)."""
    model: str
    data: str
    scheme: str
    n_train: int
    n_test: int
    n_folds: int
    C: list[float]
    accuracy: Estimate
    baselines: dict[str, Estimate]          # chance, nearest_candidate, first_candidate, best_single_head
    best_heads: list[tuple[int, int]]       # the best single head of each fold (chosen on its training side)
    probe_minus_best_head: Estimate
    control_accuracy: Estimate
    selectivity: Estimate                   # accuracy - control_accuracy, paired
    head_weights: pd.DataFrame              # layer, head, coef per direction, weight
    predictions: pd.DataFrame               # one row per test example
    skipped: list[str]
    folds: list[FoldDetail] = field(default_factory=list, repr=False)
    # train/test only: validation accuracy per C (the choice), and test accuracy per C (sensitivity, not a choice)
    accuracy_by_C: dict[str, dict[str, float]] = field(default_factory=dict)
    weight_note: str = WEIGHT_NOTE

    def to_dict(self) -> dict:
        """Every number, JSON-ready (head weights and predictions go to CSV files instead)."""
        out = _plain_fields(self, exclude=("head_weights", "predictions", "folds", "skipped"))
        out["n_skipped"] = len(self.skipped)
        out["skipped"] = self.skipped[:50]
        out["top_heads_by_weight"] = _top_heads(self.head_weights)
        return out


def _coref_scorer(feats: CandidateFeatures, targets, rows_of: Callable = lambda r: r):
    """fit_and_score(C, train, valid) for choose_C: example accuracy of the argmax candidate."""
    def fit_and_score(C, train, valid):
        probe = fit_coref_probe(feats, rows_of(train), targets, C)
        return float((candidate_scores(probe, feats, rows_of(valid)).argmax(1) == targets[rows_of(valid)]).mean())
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
    head_predicted = head_choices(test, test_rows)[:, layer, head]
    frame = pd.DataFrame({
        "id": [test.ids[i] for i in test_rows], "group": [test.groups[i] for i in test_rows],
        "n_candidates": test.n_candidates[test_rows], "gold": gold, "predicted": predicted,
        "correct": predicted == gold, "control_gold": test_control[test_rows], "control_predicted": control_predicted,
        "control_correct": control_predicted == test_control[test_rows],
        "nearest_correct": test.nearest[test_rows] == gold, "first_correct": test.first[test_rows] == gold,
        "best_head_correct": head_predicted == gold})
    detail = FoldDetail(train_ids=[train.ids[i] for i in train_rows], test_ids=[test.ids[i] for i in test_rows],
                        C=C, best_head=(layer, head), probe=probe, control_probe=control_probe)
    return frame, detail


def _summarise_coref(predictions: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Accuracy, baselines, control and differences, each with a grouped bootstrap CI."""
    groups = predictions["group"].to_numpy()
    boot = lambda stat: grouped_bootstrap(stat, groups, n_boot, seed)  # noqa: E731
    probe = weighted_mean(predictions["correct"])
    control = weighted_mean(predictions["control_correct"])
    best_head = weighted_mean(predictions["best_head_correct"])
    return {
        "accuracy": boot(probe),
        "baselines": {"chance": boot(weighted_mean(1.0 / predictions["n_candidates"])),
                      "nearest_candidate": boot(weighted_mean(predictions["nearest_correct"])),
                      "first_candidate": boot(weighted_mean(predictions["first_correct"])),
                      "best_single_head": boot(best_head)},
        "probe_minus_best_head": boot(difference(probe, best_head)),
        "control_accuracy": boot(control),
        "selectivity": boot(difference(probe, control)),
    }


@single_threaded_blas
def coref_probe_from_features(train: CandidateFeatures, test: CandidateFeatures | None = None,
                              validation: CandidateFeatures | None = None, *, n_folds: int = 5,
                              Cs=DEFAULT_CS, n_boot: int = 1000, seed: int = 0, data: str = "",
                              group_by: str | None = None) -> CorefProbeResult:
    """The coreference probe on extracted features: train/test, or grouped k-fold on `train` when test is None.

    Train/test: C is tuned on `validation` when given, else by inner grouped CV on train. The groups are the
    features' own (see `candidate_features(group_by=...)`); `group_by` here only names them in `scheme`.
    """
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
        final_C = float(np.median([f.C for f in folds]))
        final = fit_coref_probe(train, np.arange(len(train)), train.target, final_C)
        key = group_by or "group"
        scheme = (f"grouped {n_folds}-fold cross-validation on {data or 'the data'} (groups: meta['{key}']); "
                  "C by inner grouped 3-fold CV")
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
    coef = final.named_steps["logreg"].coef_[0]
    return CorefProbeResult(
        model=train.model, data=data, scheme=scheme, n_train=n_train, n_test=len(predictions),
        n_folds=len(folds), C=[f.C for f in folds], best_heads=[f.best_head for f in folds],
        head_weights=head_weight_table(coef, DIRECTIONS_COREF, n_layers, n_heads), predictions=predictions,
        skipped=list(train.skipped) + (list(test.skipped) if test is not None else []), folds=folds,
        accuracy_by_C={name: {f"{C:g}": v for C, v in values.items()} for name, values in by_C.items()}, **summary)


def _heldout_accuracy(train: CandidateFeatures, heldout: CandidateFeatures, C: float) -> float:
    """Example accuracy on a held-out set of the probe fit on all training examples."""
    probe = fit_coref_probe(train, np.arange(len(train)), train.target, C)
    rows = np.arange(len(heldout))
    return float((candidate_scores(probe, heldout, rows).argmax(1) == heldout.target).mean())


def coref_probe(model, train, test=None, validation=None, *, n_folds: int = 5, Cs=DEFAULT_CS,
                n_boot: int = 1000, seed: int = 0, batch_tokens: int = 4096, data: str = "",
                group_by: str | None = None, progress: bool = False) -> CorefProbeResult:
    """Extract features (model: a name or LoadedModel) for lists of coreference Examples and run the probe.

    group_by: the meta key that defines CV and bootstrap groups (default meta["group"]).
    """
    loaded = _loaded(model)
    extract = lambda examples: candidate_features(loaded, examples, batch_tokens, progress=progress,  # noqa: E731
                                                  group_by=group_by)
    return coref_probe_from_features(extract(train), extract(test) if test else None,
                                     extract(validation) if validation else None, n_folds=n_folds, Cs=Cs,
                                     n_boot=n_boot, seed=seed, data=data, group_by=group_by)


def _loaded(model):
    from probing.models import LoadedModel, load_model
    return model if isinstance(model, LoadedModel) else load_model(model)


# ---- Negation ---------------------------------------------------------------------------------------

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


def _f1_scorer(X, y, make: Callable[[float], Pipeline]):
    """fit_and_score(C, train, valid) for choose_C: F1 of the positive class."""
    def fit_and_score(C, train, valid):
        predicted = make(C).fit(X[train], y[train]).predict(X[valid])
        return weighted_f1(predicted, y[valid])(np.ones(len(valid)))
    return fit_and_score


def _cross_validate(X, y, groups, folds, Cs, make: Callable[[float], Pipeline]) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold decision values; C chosen by inner grouped CV on each training fold (by F1)."""
    scores, chosen = np.zeros(len(y)), []
    for train, test in folds:
        splits = [(train[a], train[b]) for a, b in inner_splits(groups[train])]
        C = choose_C(Cs, splits, _f1_scorer(X, y, make))
        scores[test] = make(C).fit(X[train], y[train]).decision_function(X[test])
        chosen.append(C)
    return scores, chosen


@dataclass
class NegationProbeResult:
    """The negation-cue probe over adjacent word pairs, its controls and its head weights (see module doc)."""
    model: str
    data: str
    n_sentences: int
    n_pairs: int
    n_cues: int
    n_folds: int
    C: list[float]
    accuracy: Estimate
    f1: Estimate
    majority_accuracy: Estimate                 # always "not a cue"
    controls: dict[str, dict[str, Estimate]]    # positional / word_identity: accuracy, f1
    selectivity: dict[str, dict[str, Estimate]]  # probe - control, per control and metric (paired)
    hard_pairs: dict[str, Estimate]             # accuracy on (cue, substitute adverb) pairs, and ranking
    rank_correlation: dict                      # Spearman of head weights vs score_heads selectivity
    head_weights: pd.DataFrame                  # + score_heads_selectivity when compared
    predictions: pd.DataFrame                   # one row per word pair
    skipped: list[str]
    weight_note: str = WEIGHT_NOTE

    def to_dict(self) -> dict:
        """Every number, JSON-ready (head weights and predictions go to CSV files instead)."""
        out = _plain_fields(self, exclude=("head_weights", "predictions", "skipped"))
        out["n_skipped"] = len(self.skipped)
        out["skipped"] = self.skipped[:50]
        out["top_heads_by_weight"] = _top_heads(self.head_weights)
        return out


def _hard_pair_estimates(predictions: pd.DataFrame, boot) -> dict[str, Estimate]:
    """Accuracy on cue and substitute-adverb rows, and how often the cue outscores its own sentence pair's adverb."""
    hard = predictions[predictions["label"] | predictions["hard_negative"]]
    out = {}
    if len(hard):
        for name, column in (("probe_accuracy", "predicted"), ("word_identity_accuracy", "identity_predicted"),
                             ("positional_accuracy", "positional_predicted")):
            correct = hard[column] == hard["label"]
            out[name] = grouped_bootstrap(weighted_mean(correct), hard["group"].to_numpy(), **boot)
    cue = hard[hard["label"]].drop_duplicates("group").set_index("group")["score"]
    adverb = hard[hard["hard_negative"]].drop_duplicates("group").set_index("group")["score"]
    both = cue.index.intersection(adverb.index)
    if len(both):
        wins = (cue[both] > adverb[both]).to_numpy()
        out["probe_cue_outscores_adverb"] = grouped_bootstrap(weighted_mean(wins), np.asarray(both), **boot)
    return out


@single_threaded_blas
def negation_probe_from_features(feats: AdjacentPairFeatures, head_selectivity: np.ndarray | None = None, *,
                                 is_causal: bool = False, n_folds: int = 5, Cs=DEFAULT_CS, n_boot: int = 1000,
                                 seed: int = 0, data: str = "") -> NegationProbeResult:
    """The negation probe and its controls by grouped CV on pair rows.

    head_selectivity: score_heads' selectivity per head in (layer, head) order; enables the rank comparison.
    """
    y = feats.label.astype(bool)
    if y.sum() == 0 or y.all():
        raise ValueError("the negation probe needs both cue and non-cue pairs")
    n_layers, n_heads = feats.features.shape[-2:]
    groups = feats.pair_groups
    folds = grouped_folds(groups, n_folds)
    X = feats.features.reshape(len(feats), -1)
    score, chosen = _cross_validate(X, y, groups, folds, Cs, make_probe)
    positional, _ = _cross_validate(positional_features(feats), y, groups, folds, Cs, make_probe)
    identity, _ = _cross_validate(identity_features(feats), y, groups, folds, Cs, lambda C: make_probe(C, scale=False))
    predictions = pd.DataFrame({
        "sentence": [feats.ids[i] for i in feats.example], "group": groups, "word": feats.word,
        "position": feats.position, "label": y, "hard_negative": feats.hard_negative, "score": score,
        "predicted": score > 0, "positional_predicted": positional > 0, "identity_predicted": identity > 0})
    predictions["fold"] = 0
    for k, (_, test) in enumerate(folds):
        predictions.loc[test, "fold"] = k
    boot = {"n_boot": n_boot, "seed": seed}
    estimate = lambda stat: grouped_bootstrap(stat, groups, **boot)  # noqa: E731
    metrics = {name: {"accuracy": weighted_mean(predictions[col] == y), "f1": weighted_f1(predictions[col], y)}
               for name, col in (("probe", "predicted"), ("positional", "positional_predicted"),
                                 ("word_identity", "identity_predicted"))}
    final = make_probe(float(np.median(chosen))).fit(X, y)
    weights = head_weight_table(final.named_steps["logreg"].coef_[0], DIRECTIONS_ADJACENT, n_layers, n_heads)
    if head_selectivity is not None:
        weights["score_heads_selectivity"] = np.asarray(head_selectivity, dtype=float).reshape(-1)
    return NegationProbeResult(
        model=feats.model, data=data, n_sentences=len(feats.ids), n_pairs=len(feats), n_cues=int(y.sum()),
        n_folds=n_folds, C=chosen, accuracy=estimate(metrics["probe"]["accuracy"]), f1=estimate(metrics["probe"]["f1"]),
        majority_accuracy=estimate(weighted_mean(~y)),
        controls={name: {m: estimate(stat) for m, stat in metrics[name].items()}
                  for name in ("positional", "word_identity")},
        selectivity={name: {m: estimate(difference(metrics["probe"][m], metrics[name][m])) for m in ("accuracy", "f1")}
                     for name in ("positional", "word_identity")},
        hard_pairs=_hard_pair_estimates(predictions, boot),
        rank_correlation=weight_rank_correlation(weights, head_selectivity, is_causal),
        head_weights=weights, predictions=predictions, skipped=list(feats.skipped), weight_note=WEIGHT_NOTE)


def weight_rank_correlation(weights: pd.DataFrame, head_selectivity: np.ndarray | None, is_causal: bool) -> dict:
    """Spearman correlation over heads of the probe's weights with score_heads' selectivity ((layer, head) order)."""
    if head_selectivity is None:
        return {}
    from scipy.stats import spearmanr
    selectivity = np.asarray(head_selectivity, dtype=float).reshape(-1)
    if len(selectivity) != len(weights):
        raise ValueError(f"head_selectivity has {len(selectivity)} values for {len(weights)} heads")
    measured = DIRECTIONS_ADJACENT[1 if is_causal else 0]
    signed = spearmanr(weights[f"coef_{measured}"], selectivity)
    magnitude = spearmanr(weights["weight"], selectivity)
    return {"against": "score_heads selectivity on the same negation data", "n_heads": len(selectivity),
            "signed_coef": {"weight": f"coef_{measured} (the direction score_heads measures)",
                            "rho": float(signed.statistic), "p_value": float(signed.pvalue)},
            "abs_weight": {"weight": "mean |coef| of both directions",
                           "rho": float(magnitude.statistic), "p_value": float(magnitude.pvalue)}}


def negation_probe(model, examples, *, n_folds: int = 5, Cs=DEFAULT_CS, n_boot: int = 1000, seed: int = 0,
                   batch_tokens: int = 4096, data: str = "", compare_heads: bool = True,
                   progress: bool = False) -> NegationProbeResult:
    """Extract pair features for negation Examples (negated and control), run the probe; compare with score_heads."""
    loaded = _loaded(model)
    examples = [e for e in examples if e.relation == "negation"]
    if not examples:
        raise ValueError("no negation examples")
    feats = adjacent_pair_features(loaded, examples, batch_tokens, progress=progress)
    selectivity = None
    if compare_heads:
        from probing.heads import score_heads
        table = score_heads(loaded, examples, relation="negation", batch_tokens=batch_tokens,
                            n_boot=100, n_perm=200, seed=seed).table
        selectivity = table.sort_values(["layer", "head"])["selectivity"].to_numpy()
    return negation_probe_from_features(feats, selectivity, is_causal=loaded.is_causal, n_folds=n_folds, Cs=Cs,
                                        n_boot=n_boot, seed=seed, data=data)


# ---- Layer-wise probe on hidden states ---------------------------------------------------------------

@dataclass
class LayerProbeResult:
    """Accuracy per layer of a probe on the word-after-the-source's hidden state, with a random-label control."""
    model: str
    task: str                   # "negation" (negated vs control sentence) or "coreference" (antecedent gender)
    label: str
    classes: list[str]
    n_examples: int
    n_groups: int
    n_folds: int
    table: pd.DataFrame         # layer, accuracy (+CI), control_accuracy (+CI), selectivity (+CI), majority
    skipped: list[str]
    note: str = ""

    def to_dict(self) -> dict:
        """Every number, JSON-ready; the per-layer table as a list of records."""
        out = _plain_fields(self, exclude=("table", "skipped"))
        out["layers"] = self.table.to_dict("records")
        out["n_skipped"] = len(self.skipped)
        out["skipped"] = self.skipped[:50]
        return out


def _accuracy_scorer(X, y):
    def fit_and_score(C, train, valid):
        return float((make_probe(C).fit(X[train], y[train]).predict(X[valid]) == y[valid]).mean())
    return fit_and_score


def _layer_predictions(X, y, groups, folds, Cs) -> np.ndarray:
    """Out-of-fold predictions of one layer; C by inner grouped CV on each training fold."""
    predicted = np.empty(len(y), dtype=y.dtype)
    for train, test in folds:
        splits = [(train[a], train[b]) for a, b in inner_splits(groups[train])]
        C = choose_C(Cs, splits, _accuracy_scorer(X, y))
        predicted[test] = make_probe(C).fit(X[train], y[train]).predict(X[test])
    return predicted


@single_threaded_blas
def layer_probe_from_states(states: np.ndarray, labels, groups, *, n_folds: int = 5, Cs=(0.01, 0.1, 1.0),
                            n_boot: int = 1000, seed: int = 0, model: str = "", task: str = "", label: str = "",
                            skipped: list[str] | None = None) -> LayerProbeResult:
    """Per layer, grouped-CV accuracy of the probe on states (N, layers, D), and of the same probe on control labels."""
    labels, groups = np.asarray(labels).astype(str), np.asarray(groups, dtype=object)
    if states.ndim != 3 or len(states) != len(labels) or len(labels) != len(groups):
        raise ValueError(f"states must be (N, layers, D) with one label and group per row, got {states.shape}, "
                         f"{len(labels)} labels, {len(groups)} groups")
    if len(set(labels.tolist())) < 2:
        raise ValueError("the layer probe needs at least two label values")
    control = group_control_labels(labels, groups, seed)
    folds = grouped_folds(groups, n_folds)
    boot = lambda stat: grouped_bootstrap(stat, groups, n_boot, seed)  # noqa: E731
    majority = pd.Series(labels).value_counts(normalize=True).iloc[0]
    rows = []
    for layer in range(states.shape[1]):
        X = states[:, layer]
        correct = _layer_predictions(X, labels, groups, folds, Cs) == labels
        control_correct = _layer_predictions(X, control, groups, folds, Cs) == control
        row = {"layer": layer, "majority_baseline": float(majority)}
        for name, stat in (("accuracy", weighted_mean(correct)), ("control_accuracy", weighted_mean(control_correct)),
                           ("selectivity", difference(weighted_mean(correct), weighted_mean(control_correct)))):
            estimate = boot(stat)
            row.update({name: estimate.value, f"{name}_ci_low": estimate.ci_low, f"{name}_ci_high": estimate.ci_high})
        rows.append(row)
    return LayerProbeResult(model=model, task=task, label=label, classes=sorted(set(labels.tolist())),
                            n_examples=len(labels), n_groups=len(set(groups.tolist())), n_folds=n_folds,
                            table=pd.DataFrame(rows), skipped=list(skipped or []))


def layer_inputs(examples, task: str, group_by: str | None = None) -> tuple[list, list[str], list[str]]:
    """The examples, labels and groups of a layer task; negation keeps only complete (negated, control) pairs."""
    if task == "negation":
        examples = [e for e in examples if e.relation == "negation" and e.role in ("negated", "control")]
        roles: dict[str, set] = {}
        for e in examples:
            roles.setdefault(negation_group(e), set()).add(e.role)
        examples = [e for e in examples if roles[negation_group(e)] == {"negated", "control"}]
        return examples, [e.role for e in examples], [negation_group(e) for e in examples]
    if task == "coreference":
        examples = [e for e in examples if e.relation == "coreference" and e.meta.get("gender")]
        return examples, [str(e.meta["gender"]) for e in examples], [coref_group(e, group_by) for e in examples]
    raise ValueError(f"task must be 'negation' or 'coreference', got {task!r}")


def layer_probe(model, examples, task: str, *, n_folds: int = 5, Cs=(0.01, 0.1, 1.0), n_boot: int = 1000,
                seed: int = 0, batch_tokens: int = 4096, group_by: str | None = None,
                progress: bool = False) -> LayerProbeResult:
    """Hidden state of the word after the source, per layer: negated vs control (negation) or meta gender (coreference).

    group_by (coreference only): the meta key of the CV groups (default meta["group"]); negation groups by pair.
    """
    examples, labels, groups = layer_inputs(examples, task, group_by)
    if not examples:
        raise ValueError(f"no usable examples for the {task} layer probe (negation needs negated+control pairs, "
                         "coreference needs meta['gender'])")
    loaded = _loaded(model)
    states = word_hidden_states(loaded, examples, batch_tokens, progress=progress)
    kept_labels = [labels[i] for i in states.kept]
    kept_groups = [groups[i] for i in states.kept]
    label = "negated vs control sentence" if task == "negation" else "gender of the antecedent (meta['gender'])"
    result = layer_probe_from_states(states.states, kept_labels, kept_groups, n_folds=n_folds, Cs=Cs, n_boot=n_boot,
                                     seed=seed, model=loaded.name, task=task, label=label, skipped=states.skipped)
    result.note = ("Probed: the hidden state of the word right after the source (mean over its pieces); layer 0 "
                   "is the embedding output. Control: one random label per group, drawn from the label "
                   "distribution by a seeded hash (Hewitt & Liang 2019).")
    return result
