"""Tests for probing/patching/direction.py: the readout's projection and the raw-space mapping on hand-made
numbers, the class-size check, MiniLM on hand-written sentences, and (slow, skipped without the data) the
CD-SCO training story."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probing.examples import load_examples
from probing.examples.cdsco import FOLDER
from probing.examples.format import ExampleError
from probing.examples.loaders import DATA_ROOT_ENV, default_data_root
from probing.patching.direction import (MIN_PER_CLASS, POOLING, Direction, cdsco_direction, fit_direction,
                                        negation_direction, pooled_projection)

# 30 sentences with a negation cue ("not", "never", "no", "n't") and 30 without, written for this test; none is
# a sentence of the built-in negation set (checked below), whose frames the readout is later used on.
NEGATED = [
    "The river never freezes in winter.", "She did not finish her dinner.", "No birds sang that morning.",
    "We could not find the station.", "He never answered my letters.", "There is no milk in the fridge.",
    "The printer is not working today.", "They have never seen the ocean.", "I do not like cold tea.",
    "No one came to the meeting.", "The bakery was not open on Sunday.", "My brother never learned to swim.",
    "The train did not stop at our village.", "There were no chairs in the hall.", "The kettle is not boiling yet.",
    "Our neighbours never cut their hedge.", "She had no time for breakfast.", "The museum does not allow cameras.",
    "He is not afraid of the dark.", "The children never tidy their rooms.", "No taxis were waiting outside.",
    "The soup was not hot enough.", "I have never climbed a mountain.", "The garden gets no sun in the afternoon.",
    "The bridge is not safe for lorries.", "We never eat meat on Fridays.", "The letter had no stamp on it.",
    "The answer was not in the book.", "Grandfather never drove a car.", "The shop sells no newspapers.",
]
PLAIN = [
    "The river floods every spring.", "She finished her dinner quickly.", "Many birds sang that morning.",
    "We found the station at last.", "He answered my letters promptly.", "There is fresh milk in the fridge.",
    "The printer works well today.", "They have seen the ocean twice.", "I like strong black coffee.",
    "Everyone came to the meeting.", "The bakery was open on Sunday.", "My brother learned to swim early.",
    "The train stopped at our village.", "There were plenty of chairs in the hall.", "The kettle is boiling already.",
    "Our neighbours cut their hedge in May.", "She had time for a long breakfast.", "The museum allows cameras.",
    "He is afraid of spiders.", "The children tidy their rooms on Saturdays.", "Several taxis were waiting outside.",
    "The soup was hot and salty.", "I climbed a mountain last summer.", "The garden gets sun in the afternoon.",
    "The bridge is safe for cyclists.", "We eat fish on Fridays.", "The letter had a blue stamp on it.",
    "The answer was in the first chapter.", "Grandfather drove a red car.", "The shop sells fresh bread.",
]


# ---- the readout's value function ----------------------------------------------------------------------

def test_pooled_projection_is_the_mean_over_positions_dotted_with_the_vector():
    hidden = torch.tensor([[[1.0, 2.0, 0.0], [3.0, 0.0, 4.0]],
                           [[0.0, -1.0, 2.0], [2.0, 1.0, 0.0]]])            # [batch 2, pos 2, d 3]
    vector = np.array([0.5, -1.0, 2.0])
    got = pooled_projection(hidden, vector)
    # means: [2, 1, 2] and [1, 0, 1]; dots: 1 - 1 + 4 = 4 and 0.5 + 0 + 2 = 2.5
    assert got.dtype == torch.float64 and got.shape == (2,)
    assert torch.allclose(got, torch.tensor([4.0, 2.5], dtype=torch.float64))
    manual = torch.stack([(hidden[b].double().mean(0) * torch.tensor(vector)).sum() for b in range(2)])
    assert torch.allclose(got, manual)


# ---- fitting on hand-made features -----------------------------------------------------------------------

def test_the_direction_is_in_raw_space_along_the_informative_coordinate():
    """Class = sign of coordinate 0 (small scale); coordinate 1 is pure noise on a scale 1000 times larger;
    coordinate 2 is weak noise. Standardised, the fit weighs coordinate 0; mapped back to raw space
    (w / scale), the noise coordinate's weight shrinks by its large scale: the vector lies along coordinate 0."""
    rng = np.random.default_rng(0)
    n = 200
    labels = np.arange(n) % 2 == 0
    informative = np.where(labels, 1.0, -1.0) * 0.01 + rng.normal(0, 0.002, n)
    X = np.column_stack([informative, rng.normal(0, 10.0, n), rng.normal(0, 0.01, n)])
    vector, accuracy = fit_direction(X, labels)
    assert vector.dtype == np.float64 and vector.shape == (3,)
    assert np.isclose(np.linalg.norm(vector), 1.0)
    assert vector[0] > 0.9                                 # cos with +e0 (it points toward "negated")
    assert abs(vector[1]) < 0.01
    assert accuracy > 0.95
    # projecting raw features on it separates the classes (what the readout does with pooled states)
    projection = X @ vector
    assert projection[labels].min() > projection[~labels].max() - 0.01


def test_grouped_folds_and_their_checks():
    rng = np.random.default_rng(1)
    labels = np.arange(60) % 3 == 0                       # 20 negated, 40 plain
    X = rng.normal(size=(60, 4)) + labels[:, None] * np.array([3.0, 0, 0, 0])
    groups = [f"chapter{i % 6}" for i in range(60)]
    vector, accuracy = fit_direction(X, labels, groups)
    assert accuracy > 0.9 and vector[0] > 0.9
    with pytest.raises(ValueError, match="only 6 groups for 7 grouped folds"):
        fit_direction(X, labels, groups, folds=7)
    with pytest.raises(ValueError, match="folds must be"):
        fit_direction(X, labels, folds=1)


def test_too_few_sentences_of_one_class_or_mismatched_lengths_raise():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3))
    few = np.array([True] * (MIN_PER_CLASS - 1) + [False] * (60 - MIN_PER_CLASS + 1))
    with pytest.raises(ValueError, match=f"at least {MIN_PER_CLASS} sentences with a negation cue.*got 19 with"):
        fit_direction(X, few)
    with pytest.raises(ValueError, match="got 60 with and 0 without"):
        fit_direction(X, np.ones(60, dtype=bool))
    with pytest.raises(ValueError, match="60 sentences but 59 flags"):
        fit_direction(X, few[:59])
    # negation_direction checks before any forward pass: no model is needed to get the error
    with pytest.raises(ValueError, match="got 19 with and 41 without"):
        negation_direction(None, ["a sentence."] * 60, list(few))
    with pytest.raises(ValueError, match="3 sentences but 2 flags"):
        negation_direction(None, ["a", "b", "c"], [True, False])


# ---- the real default model ------------------------------------------------------------------------------

def test_handwritten_sentences_are_disjoint_from_the_builtin_pairs():
    builtin = {e.text for e in load_examples("builtin-negation")}
    assert len(NEGATED) == len(PLAIN) == 30
    assert not builtin & set(NEGATED + PLAIN)
    assert len(set(NEGATED + PLAIN)) == 60


def test_minilm_separates_handwritten_negated_sentences(minilm):
    direction = negation_direction(minilm, NEGATED + PLAIN, [True] * 30 + [False] * 30, n_boot=200)
    assert isinstance(direction, Direction)
    assert direction.vector.shape == (384,) and direction.vector.dtype == np.float64
    assert np.isclose(np.linalg.norm(direction.vector), 1.0)
    assert (direction.n_negated, direction.n_plain, direction.folds) == (30, 30, 5)
    assert direction.majority_baseline == 0.5 and direction.pooling == POOLING
    # observed: accuracy 0.933 (56 of 60 held out; 0.90-0.93 over seeds 0-4); chance is 0.5
    assert direction.accuracy >= 0.8
    assert direction.accuracy_ci[0] <= direction.accuracy <= direction.accuracy_ci[1]
    assert "30 sentences with a negation cue, 30 without" in direction.source
    payload = json.loads(json.dumps(direction.to_dict()))
    assert payload["d_model"] == 384 and len(payload["vector"]) == 384

    # the readout on raw final states: negated sentences project higher than their plain counterparts
    from probing.patching.readouts import run_readout
    ids = minilm.tokenizer(["The bakery was not open on Sunday."], return_tensors="pt")["input_ids"]
    plain_ids = minilm.tokenizer(["The bakery was also open on Sunday."], return_tensors="pt")["input_ids"]
    neg_value = pooled_projection(run_readout(minilm.model, ids, None), direction.vector)
    plain_value = pooled_projection(run_readout(minilm.model, plain_ids, None), direction.vector)
    assert neg_value.shape == (1,) and float(neg_value - plain_value) > 0


# ---- CD-SCO (skipped when the data root lacks it) ----------------------------------------------------------

try:
    REAL = default_data_root() / FOLDER
except ExampleError:                                          # an installed copy: no data root to guess
    REAL = None


@pytest.mark.slow
def test_cdsco_training_story_direction(minilm):
    if REAL is None or not REAL.is_dir():
        pytest.skip(f"no CD-SCO folder at {REAL} (set {DATA_ROOT_ENV} to the shared data root)")
    direction = cdsco_direction(minilm)
    # The folder's README: 3644 training sentences, 848 with negation.
    assert (direction.n_negated, direction.n_plain) == (848, 3644 - 848)
    assert "848 sentences with a negation cue, 2,796 without" in direction.source
    assert "grouped by chapter" in direction.source and "14 chapters" in direction.source
    # observed (MiniLM, 5 folds grouped by chapter, seed 0): accuracy 0.859 [0.845, 0.873], balanced 0.840,
    # majority baseline 0.767
    assert direction.accuracy > direction.majority_baseline + 0.05
    assert direction.balanced_accuracy > 0.78
    assert np.isclose(np.linalg.norm(direction.vector), 1.0)


def test_a_constant_feature_gets_no_weight():
    """A dead unit (constant up to float noise) would take the whole unit vector once its standardised weight is
    divided by its tiny scale; it is left out, and the vector lies along the informative coordinate."""
    rng = np.random.default_rng(0)
    n = 200
    labels = np.arange(n) % 2 == 0
    informative = np.where(labels, 1.0, -1.0) * 0.5 + rng.normal(0, 0.3, n)
    dead = 0.7 + rng.normal(0, 1e-9, n)
    vector, accuracy = fit_direction(np.column_stack([informative, dead, rng.normal(0, 1.0, n)]), labels)
    assert vector[1] == 0.0 and vector[0] > 0.9 and accuracy > 0.8
