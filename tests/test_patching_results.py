"""probing.patching.results: a pair's patching output has named fields, and its sanity readings are found by
what each sanity row is, not by its position in the batch."""

import numpy as np
import torch

from probing.patching.results import PairRun, SanityReadings
from probing.patching.runs import EMBEDDING_CHECK, OWN_CLEAN, OWN_CORRUPT, plan_rows, sanity_readings


def test_sanity_readings_are_found_by_row_not_by_position():
    rows = plan_rows(1, 2, ("noising",))
    reordered = [rows[-1], *rows[:-1]]          # the embedding check first: a position rule would misread it
    values = torch.tensor([float(i) for i in range(len(reordered))], dtype=torch.float64)
    readings = sanity_readings(reordered, values)
    assert readings == SanityReadings(own_clean=float(reordered.index(OWN_CLEAN)),
                                      own_corrupt=float(reordered.index(OWN_CORRUPT)),
                                      embedding=float(reordered.index(EMBEDDING_CHECK)))
    assert readings.embedding == 0.0


def test_pair_run_difference_and_missing_summary():
    run = PairRun(values={"noising": np.zeros((1, 2))}, clean=2.5, corrupt=0.5,
                  sanity_readings=SanityReadings(2.5, 0.5, 2.5), distance=1.0, seconds=0.0)
    assert run.difference == 2.0 and run.attention is None and run.norm_attention is None
    assert run.effects == {} and run.estimates is None
