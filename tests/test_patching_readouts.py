"""probing.patching.readouts: normalisation by hand (per pair, and by the mean difference for logits)."""

import numpy as np

from probing import patching


def test_normalisation_by_hand():
    out = {"values": {"noising": np.array([[3.0, 1.0]]), "denoising": np.array([[1.0, 2.0]])},
           "clean": 3.0, "corrupt": 1.0, "own_clean": 3.0, "own_corrupt": 1.0, "embedding": 3.0}
    effects, sanity = patching.readouts.normalise(out, 2.0)
    assert effects["noising"].tolist() == [[0.0, 1.0]] and effects["denoising"].tolist() == [[0.0, 0.5]]
    assert sanity == {"own_noising_max_abs": 0.0, "own_denoising_max_abs": 0.0, "embedding_denoising": 1.0}
    # the logit readout divides every pair by the mean clean - corrupt difference (2 and 4 -> 3)
    second = {**out, "values": {"noising": np.array([[5.0, 1.0]])}, "clean": 5.0, "own_clean": 5.0, "embedding": 5.0}
    assert patching.readouts.normalise_all([dict(out), second], per_pair_scale=False) == 3.0
    assert second["effects"]["noising"].tolist() == [[0.0, 4 / 3]]
