"""A linear negation direction in a model's pooled final hidden states: the value function of a patching readout.

The readout (for encoders): a run's final hidden states, mean-pooled over every position, projected on a unit
"negation direction" (`pooled_projection`). The direction is the weight vector of a logistic-regression probe
trained to tell sentences WITH a negation cue from sentences without (`negation_direction`; on CD-SCO,
`cdsco_direction`: a sentence is negated when it carries at least one annotated negation cue, of any form:
"not", "n't", "no", "never", "without", affixes, ...). A larger projection reads "more like a negated sentence".

Why the probe is trained on other sentences than the patched pairs: the patched pairs (the built-in
`builtin-negation` set) are what the readout measures. A direction fitted on them would be fitted to the very
clean/corrupt difference that patching then divides effects by, so a head could score by matching the pairs'
idiosyncrasies (their frames, their adverbs) rather than by carrying negation. CD-SCO (Conan Doyle prose) shares
no sentence with the generated built-in frames, so the readout is fixed before the pairs are seen.

Pooling convention (the same in training and in the readout): the mean over every position of the final hidden
states, special pieces ([CLS], [SEP], <s>, </s>) included, padding excluded; no L2 normalisation of the pooled
state, no standardisation of the returned vector. The probe is fitted on standardised features (so its L2
penalty treats dimensions alike), and its weight is mapped back to raw space (w_raw = w_std / scale) before it
is unit-normalised, so <pooled raw state, vector> is what the probe's decision function is, up to a positive
factor and an offset. Class weights are balanced (CD-SCO has about 3 plain sentences per negated one), so the
direction is not pulled toward the majority class.

Accuracy is held-out: stratified k-fold cross-validation, grouped by chapter on CD-SCO (no chapter on both
sides of a fold), with a 95% bootstrap CI over the out-of-fold predictions (clustered by chapter when given).
The returned vector itself comes from one fit on all sentences.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from probing.defaults import BATCH_TOKENS, N_BOOT, SEED
from probing.probes import estimate, single_threaded_blas

MIN_PER_CLASS = 20      # fewer sentences of either class than this: no direction (ValueError)
DEAD_SPREAD = 1e-3      # a feature this many times less spread than the median feature is constant (weight 0)
POOLING = "mean over every position of the final hidden states"
CDSCO_TRAIN_FILE = "SEM-2012-SharedTask-CD-SCO-training-09032012.txt"
CDSCO_SPLITS = ("train", "dev", "test")
_STORIES = {"train": "The Hound of the Baskervilles", "dev": "The Adventure of Wisteria Lodge",
            "test": "The Adventure of the Cardboard Box and The Adventure of the Red Circle"}
_SPLIT_NAMES = {"train": "training story", "dev": "development story", "test": "test stories"}


@dataclass(frozen=True)
class Direction:
    """A unit negation direction in raw pooled-state space, with the held-out accuracy of its probe."""
    vector: np.ndarray          # [d_model] float64, unit L2 norm; points toward "has a negation cue"
    accuracy: float             # out-of-fold accuracy (stratified k-fold, grouped when groups are given)
    accuracy_ci: tuple[float, float]     # 95% bootstrap CI of `accuracy` (clustered by group when given)
    balanced_accuracy: float    # out-of-fold mean of the two classes' recalls
    majority_baseline: float    # accuracy of always answering the larger class
    n_negated: int
    n_plain: int
    folds: int
    source: str                 # the data, in words
    pooling: str = POOLING

    def to_dict(self) -> dict:
        return {"vector": [float(x) for x in self.vector], "d_model": int(self.vector.shape[0]),
                "accuracy": float(self.accuracy), "accuracy_ci": [float(x) for x in self.accuracy_ci],
                "balanced_accuracy": float(self.balanced_accuracy),
                "majority_baseline": float(self.majority_baseline), "n_negated": int(self.n_negated),
                "n_plain": int(self.n_plain), "folds": int(self.folds), "source": self.source,
                "pooling": self.pooling}


# ---- the readout's value function ------------------------------------------------------------------------

def pooled_projection(hidden: torch.Tensor, vector) -> torch.Tensor:
    """hidden [batch, pos, d_model] (no padding: a patching pair's texts have equal length) -> [batch] float64:
    the mean over positions, dotted with `vector` ([d_model])."""
    v = torch.as_tensor(vector, dtype=torch.float64, device=hidden.device)
    return hidden.double().mean(1) @ v


# ---- fitting -----------------------------------------------------------------------------------------------

def _check_labels(n_rows: int, labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n_rows:
        raise ValueError(f"expected one negated flag per sentence: {n_rows} sentences but {labels.size} flags")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("negated flags must be True/False (or 1/0)")
    labels = labels.astype(bool)
    n_negated, n_plain = int(labels.sum()), int((~labels).sum())
    if min(n_negated, n_plain) < MIN_PER_CLASS:
        raise ValueError(f"a negation direction needs at least {MIN_PER_CLASS} sentences with a negation cue and "
                         f"{MIN_PER_CLASS} without; got {n_negated} with and {n_plain} without")
    return labels


def _splits(labels: np.ndarray, groups, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds, grouped (no group on both sides) when groups are given."""
    smallest = int(min(labels.sum(), (~labels).sum()))
    if not isinstance(folds, int) or isinstance(folds, bool) or not 2 <= folds <= smallest:
        raise ValueError(f"folds must be a whole number from 2 to the smaller class's size ({smallest}), "
                         f"got {folds!r}")
    X = np.zeros(len(labels))
    if groups is None:
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, labels))
    groups = np.asarray(groups, dtype=object)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups for {len(labels)} sentences")
    n_groups = len(set(groups.tolist()))
    if n_groups < folds:
        raise ValueError(f"only {n_groups} groups for {folds} grouped folds; use fewer folds or no groups")
    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(X, labels, groups))


def _fit_raw(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """One probe on standardised features; its weight and intercept mapped back to raw-feature space.
    decision = w_std . (x - mean) / scale + b = (w_std / scale) . x + (b - w_std . mean / scale).
    A feature whose spread is below DEAD_SPREAD times the median feature's is left out (weight 0): a dead
    LayerNorm unit (gain ~0) is constant up to float noise, and dividing its standardised weight by that tiny
    scale would put the whole unit vector on it, so that no real state moves the readout (MiniLM has such units)."""
    scaler = StandardScaler().fit(X)
    live = scaler.scale_ >= DEAD_SPREAD * np.median(scaler.scale_)
    probe = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(scaler.transform(X)[:, live], y)
    w_raw = np.zeros(X.shape[1])
    w_raw[live] = probe.coef_[0] / scaler.scale_[live]          # the raw-space weight: w_raw = w_std / scale
    b_raw = float(probe.intercept_[0] - w_raw @ scaler.mean_)
    return w_raw, b_raw


@single_threaded_blas
def _fit(pooled, labels, groups=None, *, folds: int = 5, seed: int = SEED, C: float = 1.0
         ) -> tuple[np.ndarray, np.ndarray]:
    """(unit raw-space vector from a fit on every row, out-of-fold correctness per row)."""
    X = np.asarray(pooled, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"pooled states must be [n, d_model], got shape {X.shape}")
    y = _check_labels(len(X), labels)
    if not np.isfinite(X).all():
        raise ValueError("pooled states hold NaN or infinite values")
    correct = np.zeros(len(y), dtype=bool)
    for train, test in _splits(y, groups, folds, seed):
        w, b = _fit_raw(X[train], y[train], C)
        correct[test] = ((X[test] @ w + b) > 0) == y[test]
    w, _ = _fit_raw(X, y, C)
    norm = float(np.linalg.norm(w))
    if not norm > 0:
        raise ValueError("the probe's weight vector is zero: the pooled states do not separate the classes at all")
    return w / norm, correct


def fit_direction(pooled, labels, groups=None, *, folds: int = 5, seed: int = SEED, C: float = 1.0
                  ) -> tuple[np.ndarray, float]:
    """(unit direction in raw feature space [d] float64, out-of-fold accuracy) of a balanced logistic-regression
    probe of labels (True = negated) on pooled [n, d]; stratified k-fold, grouped when groups are given."""
    vector, correct = _fit(pooled, labels, groups, folds=folds, seed=seed, C=C)
    return vector, float(correct.mean())


# ---- from a model ----------------------------------------------------------------------------------------

def pooled_states(loaded, texts: list[str], batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
    """[n, d_model] float64: each text's final hidden states averaged over its real pieces (specials included,
    padding excluded), through the project's batched forward pass (`probing.ablation.final_hidden_states`)."""
    from probing.ablation import final_hidden_states
    from probing.runner import encode
    states = final_hidden_states(loaded, encode(loaded, list(texts)), batch_tokens)
    return torch.stack([s.double().mean(0) for s in states]).numpy()


def negation_direction(loaded, texts: list[str], negated: list[bool], *, groups=None, seed: int = SEED,
                       folds: int = 5, batch_tokens: int = BATCH_TOKENS, C: float = 1.0, n_boot: int = N_BOOT,
                       source: str = "") -> Direction:
    """The negation direction of `loaded` (a LoadedModel) from sentences and their flags (True = the sentence
    has a negation cue). groups (optional, one per sentence: a document or chapter) keeps a group on one side of
    every fold and clusters the accuracy CI. Raises ValueError when the lengths differ or either class has fewer
    than MIN_PER_CLASS sentences (before any forward pass)."""
    texts = list(texts)
    labels = _check_labels(len(texts), list(negated))
    _splits(labels, groups, folds, seed)                      # fold and group problems, before the model runs
    pooled = pooled_states(loaded, texts, batch_tokens)
    vector, correct = _fit(pooled, labels, groups, folds=folds, seed=seed, C=C)
    ci = estimate(correct.astype(float), None if groups is None else list(groups), n_boot, seed)
    n_negated, n_plain = int(labels.sum()), int((~labels).sum())
    balanced = float((correct[labels].mean() + correct[~labels].mean()) / 2)
    if not source:
        source = f"{n_negated:,} sentences with a negation cue, {n_plain:,} without"
    return Direction(vector=vector, accuracy=float(correct.mean()), accuracy_ci=(ci.ci_low, ci.ci_high),
                     balanced_accuracy=balanced, majority_baseline=max(n_negated, n_plain) / len(labels),
                     n_negated=n_negated, n_plain=n_plain, folds=folds, source=source)


# ---- CD-SCO ----------------------------------------------------------------------------------------------

def cdsco_files(split: str, data_root=None) -> list[Path]:
    """The gold files of a CD-SCO split: "train" (The Hound of the Baskervilles, which `load_cdsco` does not
    read), "dev" or "test" (the loader's parts)."""
    from probing.examples.cdsco import FOLDER, files
    from probing.examples.loaders import default_data_root
    if split == "train":
        root = Path(data_root).expanduser() if data_root is not None else default_data_root()
        return [root / FOLDER / CDSCO_TRAIN_FILE]
    if split in ("dev", "test"):
        return files(f"cd-sco-{split}", data_root)
    raise ValueError(f"unknown CD-SCO split {split!r}; the splits are {', '.join(CDSCO_SPLITS)}")


def cdsco_sentences(split: str = "train", data_root=None) -> tuple[list[str], list[bool], list[str]]:
    """(texts, negated flags, chapters) of every sentence of a CD-SCO split, read with the loader's own parser
    and detokeniser (`probing.examples.cdsco`); negated = at least one annotated negation cue, of any form.
    Raises ExampleError naming the file (missing) or the line (malformed)."""
    from probing.examples.cdsco import _blocks, _detokenise, _Malformed, _parse
    from probing.examples.format import ExampleError
    texts, negated, chapters = [], [], []
    for path in cdsco_files(split, data_root):
        if not path.is_file():
            raise ExampleError(f"CD-SCO {split}: missing {path}; put the CD-SCO gold files in cd-sco/ under the "
                               f"data root (PROBING_DATA_ROOT or data_root=)")
        for block in _blocks(path):
            try:
                sentence = _parse(block)
            except _Malformed as problem:
                line, reason = problem.args
                raise ExampleError(f"{path}:{line}: {reason}") from None
            texts.append(_detokenise([t.word for t in sentence.tokens])[0])
            negated.append(sentence.n_instances > 0)
            chapters.append(sentence.chapter)
    return texts, negated, chapters


def cdsco_direction(loaded, data_root=None, split: str = "train", **kwargs) -> Direction:
    """The negation direction trained on a CD-SCO split (default: the training story, disjoint from the
    patched built-in pairs and from the dev/test stories used for heads), folds grouped by chapter."""
    texts, negated, chapters = cdsco_sentences(split, data_root)
    n_negated = sum(negated)
    folds = kwargs.get("folds", 5)
    n_chapters = len(set(chapters))
    grouped = n_chapters >= folds       # dev (2 chapters) and test (3) have too few chapters to group folds by
    source = (f"CD-SCO {_SPLIT_NAMES[split]} ({_STORIES[split]}, {n_chapters} chapters): "
              f"{n_negated:,} sentences with a negation cue, {len(texts) - n_negated:,} without; "
              f"accuracy by {folds}-fold stratified cross-validation, "
              + ("grouped by chapter" if grouped else f"not grouped (only {n_chapters} chapters)"))
    return negation_direction(loaded, texts, negated, groups=chapters if grouped else None, source=source,
                              **kwargs)


__all__ = ["CDSCO_SPLITS", "Direction", "MIN_PER_CLASS", "POOLING", "cdsco_direction", "cdsco_files",
           "cdsco_sentences", "fit_direction", "negation_direction", "pooled_projection", "pooled_states"]
