"""probing.patching.readouts: normalisation by hand (per pair, and by the mean difference for logits); the default
embedding readout leaves the swapped pieces out, checked against plain hooks."""

from dataclasses import replace

import numpy as np
import pytest

from probing import patching
from probing.patching.results import PairRun, SanityReadings


def test_normalisation_by_hand():
    out = PairRun(values={"noising": np.array([[3.0, 1.0]]), "denoising": np.array([[1.0, 2.0]])}, clean=3.0,
                  corrupt=1.0, sanity_readings=SanityReadings(own_clean=3.0, own_corrupt=1.0, embedding=3.0),
                  distance=1.0, seconds=0.0)
    effects, sanity = patching.readouts.normalise(out, 2.0)
    assert effects["noising"].tolist() == [[0.0, 1.0]] and effects["denoising"].tolist() == [[0.0, 0.5]]
    assert sanity == {"own_noising_max_abs": 0.0, "own_denoising_max_abs": 0.0, "embedding_denoising": 1.0}
    # the logit readout divides every pair by the mean clean - corrupt difference (2 and 4 -> 3)
    second = replace(out, values={"noising": np.array([[5.0, 1.0]])}, clean=5.0,
                     sanity_readings=SanityReadings(own_clean=5.0, own_corrupt=1.0, embedding=5.0))
    assert patching.readouts.normalise_all([out, second], per_pair_scale=False) == 3.0
    assert second.effects["noising"].tolist() == [[0.0, 4 / 3]]
    assert second.sanity["embedding_denoising"] == 1.0


@pytest.mark.slow
def test_default_readout_leaves_the_swapped_word_out_against_plain_hooks(minilm):
    """On a pair no other test uses, patch_pair's default readout equals an independent reference (plain forward
    passes, a hand-written pre-hook per head, the mean over the positions whose piece is the same in both texts)
    to 1e-4; the all-positions readout equals the reference over every position, and the two differ."""
    from tests.patching_cases import _plain_effects
    clean, corrupt = "The gardener did not water the roses.", "The gardener did still water the roses."
    default = patching.patch_pair(minilm, clean, corrupt, kinds=("noising", "denoising"))
    noising, denoising = _plain_effects(minilm, clean, corrupt)
    np.testing.assert_allclose(default.effects["noising"], noising, atol=1e-4)
    np.testing.assert_allclose(default.effects["denoising"], denoising, atol=1e-4)
    every = patching.patch_pair(minilm, clean, corrupt, kinds=("noising",), all_positions=True)
    noising_all, _ = _plain_effects(minilm, clean, corrupt, all_positions=True)
    np.testing.assert_allclose(every.effects["noising"], noising_all, atol=1e-4)
    assert np.abs(every.effects["noising"] - default.effects["noising"]).max() > 1e-3
    assert default.sanity["passed"] and every.sanity["passed"]


def test_pooled_positions_by_hand():
    assert patching.readouts.pooled_positions([1, 5, 7, 2], [1, 6, 7, 2]) == [0, 2, 3]
    assert patching.readouts.pooled_positions([1, 5], [1, 6], all_positions=True) is None


def test_the_probe_readout_refuses_relations_other_than_negation():
    """The probe's direction is a negation direction: other relations are refused before any direction is
    fitted, in words that name the way out; the other readouts are not its business."""
    from probing.examples import Example
    from probing.patching.readouts import check_probe_readout
    negation = [Example(text="It was not late.", relation="negation", source_span=(7, 10), target_span=(11, 15))]
    coref = [Example(text="Ann said she won.", relation="coreference", source_span=(9, 12), target_span=(0, 3))]
    check_probe_readout(negation, "probe")
    with pytest.raises(ValueError, match="negation pairs only; these examples include coreference: use --readout"):
        check_probe_readout(negation + coref, "probe")
    for readout in ("auto", "embedding", "sentence", "logits", "all-positions"):
        check_probe_readout(coref, readout)
