"""`probing.patching.units`: the resampling units of patched pairs (frames, crossed with predicates where the
pairs carry both). Hand-made pairs and effects where the answer is known."""
import numpy as np
import pytest

from probing import stats
from probing.patching import units as design
from probing.patching.pairs import Pair


def _pair(i, frame, predicate=None):
    return Pair(id=f"p{i}", relation="negation", clean="a not b", corrupt="a really b", clean_source=(2, 5),
                corrupt_source=(2, 8), group=frame, predicate=predicate)


def _crossed(n_frames=8, n_predicates=6):
    """Every frame with every predicate: (pairs, frame index, predicate index)."""
    cells = [(f, p) for f in range(n_frames) for p in range(n_predicates)]
    pairs = [_pair(i, f"f{f}", f"pred{p}") for i, (f, p) in enumerate(cells)]
    return pairs, np.array([f for f, _ in cells]), np.array([p for _, p in cells])


def test_units_are_crossed_only_where_every_pair_has_a_predicate_of_several():
    pairs, _, _ = _crossed(3, 2)
    units = design.pair_units(pairs)
    assert design.is_crossed(units) and list(units) == [p.group for p in pairs]
    assert units.second == [p.predicate for p in pairs]
    assert design.in_words(units, len(pairs)) == "3 frames x 2 predicates (crossed)"
    plain = design.pair_units([_pair(0, "f0"), _pair(1, "f1"), _pair(2, "")])    # twins: no predicate
    assert not design.is_crossed(plain) and plain == ["f0", "f1", "p2"]             # no frame: the pair itself
    assert design.in_words(plain, 3) == "3 units"
    one_level = design.pair_units([_pair(0, "f0", "x"), _pair(1, "f1", "x")])
    assert not design.is_crossed(one_level)


def test_take_keeps_the_second_factor_of_the_rows_it_takes():
    pairs, _, _ = _crossed(3, 2)
    units = design.pair_units(pairs)
    part = design.take(units, [0, 1, 4])
    assert list(part) == ["f0", "f0", "f2"] and part.second == ["pred0", "pred1", "pred0"]
    assert design.take(["a", "b", "c"], [2, 0]) == ["c", "a"]


def test_a_predicate_effect_widens_the_ci_beyond_the_frame_clustered_one():
    pairs, frame, predicate = _crossed(40, 6)
    rng = np.random.default_rng(0)
    # the predicates carry the variance (their effects sum to zero), the frames almost none
    values = np.array([-0.3, 0.3, -0.2, 0.2, -0.1, 0.1])[predicate] + rng.normal(0, 0.01, len(pairs))
    units = design.pair_units(pairs)
    low, high, method = design.ci(values, 500, 0, units)
    f_low, f_high, _ = stats.cluster_ci(values[:, None], 500, seed=0, groups=list(units))
    t_low, t_high = stats.two_way_ci(values[:, None], list(units), units.second)
    assert high[0] - low[0] == pytest.approx(max(f_high[0] - f_low[0], t_high[0] - t_low[0]))
    assert high[0] - low[0] > 5 * (f_high[0] - f_low[0])          # frames alone: a far too narrow interval
    assert "two-way frame x predicate" in method
    # plain frame labels: exactly the frame-clustered interval
    p_low, p_high, p_method = design.ci(values, 500, 0, list(units))
    assert (p_low[0], p_high[0], p_method) == (f_low[0], f_high[0], stats.cluster_ci(values[:, None], 500, seed=0,
                                                                                     groups=list(units))[2])
