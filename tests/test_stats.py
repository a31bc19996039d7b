"""Statistics helpers against cases with known answers."""
import numpy as np
import pytest

from probing.stats import bootstrap_ci, holm, sign_flip_tests


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.5, 1, (50, 1)), rng.normal(0.5, 1, (5000, 1))
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s[0] < small.mean() < hi_s[0]
    assert (hi_l - lo_l)[0] < (hi_s - lo_s)[0] / 5
    assert lo_l[0] < 0.5 < hi_l[0]


def test_bootstrap_ci_constant_column_is_a_point():
    lo, hi = bootstrap_ci(np.ones((20, 2)))
    assert lo.tolist() == [1, 1] and hi.tolist() == [1, 1]


def test_sign_flip_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(2)
    diffs = np.column_stack([rng.normal(0.5, 1, 200), rng.normal(0, 1, 200)])
    p, _ = sign_flip_tests(diffs, n_perm=4000)
    assert p[0] < 0.001
    assert p[1] > 0.05


def test_sign_flip_exact_small_case():
    # All 8 sign patterns of (1, 1, 1): only all-plus reaches the observed sum 3, so p -> 1/8 for many flips.
    p, _ = sign_flip_tests(np.ones((3, 1)), n_perm=20000, seed=3)
    assert p[0] == pytest.approx(1 / 8, abs=0.01)


def test_holm_matches_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> monotone 0.09, 0.5*1=0.5
    assert holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="examples, heads"):
        bootstrap_ci(np.ones(5))


def test_cluster_bootstrap_is_wider_when_examples_repeat_within_groups():
    # 20 groups of 10 identical copies: as examples they look like 200 independent draws, as groups 20.
    rng = np.random.default_rng(4)
    per_group = rng.normal(0, 1, 20)
    values = np.repeat(per_group, 10)[:, None]
    groups = np.repeat(np.arange(20), 10)
    lo_e, hi_e = bootstrap_ci(values)
    lo_g, hi_g = bootstrap_ci(values, groups=groups)
    assert (hi_g - lo_g)[0] > 2.5 * (hi_e - lo_e)[0]
    # With one example per group the cluster bootstrap is the plain one (up to resampling noise).
    assert bootstrap_ci(values, groups=np.arange(200))[0][0] == pytest.approx(lo_e[0], abs=0.02)


def test_maxt_floor_is_one_over_flips_not_m_over_flips():
    rng = np.random.default_rng(5)
    diffs = np.column_stack([rng.normal(1.0, 1, 300)] + [rng.normal(0, 1, 300) for _ in range(999)])
    p, p_fwer = sign_flip_tests(diffs, n_perm=999, seed=1)
    assert p_fwer[0] == pytest.approx(1 / 1000)       # Holm's floor would be 1000/1000 = 1
    assert holm(p)[0] == 1.0
    assert (p_fwer >= p - 1e-12).all()                # adjusting never lowers a p-value
    assert np.mean(p_fwer[1:] < 0.05) < 0.01          # nulls stay null


def test_cluster_sign_flip_counts_groups_not_copies():
    # 3 groups of 50 identical positive differences: 2^3 sign patterns, so p cannot go below 1/8.
    diffs = np.repeat([1.0, 2.0, 1.5], 50)[:, None]
    p, _ = sign_flip_tests(diffs, n_perm=4000, seed=0, groups=np.repeat([0, 1, 2], 50))
    assert p[0] == pytest.approx(1 / 8, abs=0.02)
    p_plain, _ = sign_flip_tests(diffs, n_perm=4000, seed=0)
    assert p_plain[0] < 0.001


def test_cross_fitted_best_is_less_optimistic_than_the_in_sample_maximum():
    from probing.stats import cross_fitted_best
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(40, 200))          # 200 heads with true mean 0: the in-sample max is pure luck
    result = cross_fitted_best(noise, seed=0)
    assert result["in_sample_score"] > 0.3 and abs(result["score"]) < 0.3
    assert len(result["chosen"]) == 2
    real = noise.copy()
    real[:, 7] += 2.0                           # one real head is chosen on both halves
    assert cross_fitted_best(real, seed=0)["chosen"] == [7, 7]
    assert np.isnan(cross_fitted_best(real, groups=["g"] * 40)["score"])     # one unit: nothing to split


def test_gap_bootstrap_ci_brackets_the_gap():
    from probing.stats import gap_bootstrap_ci
    values = np.r_[np.ones(30), np.zeros(30)][:, None] * np.ones((1, 2))
    values[:, 1] = 0.5
    in_a = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    low, high = gap_bootstrap_ci(values, in_a, n_boot=200, groups=[i % 15 for i in range(60)])
    assert low[0] == pytest.approx(1.0) and high[0] == pytest.approx(1.0)
    assert low[1] == pytest.approx(0.0) and high[1] == pytest.approx(0.0)


def test_label_permutation_detects_an_unpaired_gap_and_not_noise():
    from probing.stats import label_permutation_tests
    rng = np.random.default_rng(3)
    in_a = np.arange(80) % 2 == 0
    values = rng.random((80, 3))
    values[in_a, 0] += 0.5                       # column 0: a real gap; columns 1, 2: none
    p, p_fwer = label_permutation_tests(values, in_a, n_perm=2000, groups=[i // 4 for i in range(80)])
    assert p_fwer[0] < 0.001 and p[0] == pytest.approx(1 / 2001)
    assert p_fwer[1] > 0.05 and p_fwer[2] > 0.05 and (p_fwer >= p - 1e-12).all()
    with pytest.raises(ValueError, match="both kinds"):
        label_permutation_tests(values, np.ones(80, bool))


# ---- Two-way clustering (frame x predicate) ---------------------------------------------------------------

def test_two_way_ci_by_hand():
    from probing.stats import two_way_ci
    # values 1..4, frames a a b b, predicates x y x y; mean 2.5, residuals -1.5 -0.5 0.5 1.5.
    # V_frame = 2/1 * ((-2)^2 + 2^2) / 16 = 1; V_pred = 2/1 * ((-1)^2 + 1^2) / 16 = 0.25;
    # V_cell = 4/3 * (2.25 + 0.25 + 0.25 + 2.25) / 16 = 5/12; Var = 1 + 0.25 - 5/12 = 5/6; t(0.975, df 1) = 12.7062.
    low, high = two_way_ci(np.array([[1.0], [2.0], [3.0], [4.0]]), list("aabb"), list("xyxy"))
    half = 12.706204736 * np.sqrt(5 / 6)
    assert low[0] == pytest.approx(2.5 - half, rel=1e-6) and high[0] == pytest.approx(2.5 + half, rel=1e-6)


def test_two_way_variance_falls_back_to_the_larger_one_way_when_negative():
    from probing.stats import two_way_ci
    # Every cell its own frame and predicate pattern that makes V_cell large: a diagonal design.
    values = np.array([[1.0], [1.0], [3.0], [3.0]])
    frames, predicates = list("aabb"), list("xxyy")        # the two factors coincide: V1 = V2 = V12
    low, high = two_way_ci(values, frames, predicates)
    one_way = 2 / 1 * (2 ** 2 + 2 ** 2) / 16               # 1.0 (V1 + V2 - V12 = V1 here, positive)
    assert high[0] - 2.0 == pytest.approx(12.706204736 * np.sqrt(one_way), rel=1e-6)


def test_bootstrap_reports_the_wider_of_one_way_and_two_way():
    from probing.stats import Clusters, bootstrap_ci, clusters, two_way_ci
    rng = np.random.default_rng(0)
    frames = np.repeat(np.arange(40), 3)
    predicates = (frames * 2 + np.tile([0, 5, 10], 40)) % 15
    # A strong predicate effect that frame resampling alone does not see
    values = (predicates[:, None] % 2) * 1.0 + rng.normal(0, 0.05, (120, 1))
    one_low, one_high = bootstrap_ci(values, 500, groups=list(frames))
    two_low, two_high = two_way_ci(values, list(frames), list(predicates))
    low, high = bootstrap_ci(values, 500, groups=Clusters(list(frames), list(predicates)))
    assert (two_high - two_low)[0] > (one_high - one_low)[0]
    assert (low[0], high[0]) == (two_low[0], two_high[0])
    # a factor with one level, or absent, leaves one-way clustering as it was
    assert type(clusters(["a", "b"], ["x", "x"])) is list and type(clusters(["a", "b"], None)) is list
    assert type(clusters(["a", "a", "b"], ["x", "y", "x"])) is Clusters


def _crossed_design(seed: int = 0):
    """40 frames x 10 predicates, 5 items per frame with predicates drawn at random: frames share predicates."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(np.arange(40), 5)
    predicates = rng.integers(0, 10, len(frames))
    return rng, list(frames), list(predicates)


def test_crossed_components_add_up_to_the_data():
    from probing.stats import crossed_components
    rng, frames, predicates = _crossed_design()
    values = rng.normal(0, 1, (len(frames), 3))
    sums, residual = crossed_components(values, [frames, predicates])
    assert [s.shape for s in sums] == [(40, 3), (10, 3)]
    # Only the first factor carries the total; the later parts and the residual sum to 0.
    assert np.allclose(sums[0].sum(0), values.sum(0)) and np.allclose(sums[1].sum(0), 0)
    assert np.allclose(residual.sum(0), 0)


def test_crossed_test_holds_its_level_where_the_frame_only_test_over_rejects():
    """A predicate-only effect with mean 0 (the null is true): each column is an independent replicate of the
    design. Flipping frames only reads the shared predicates as signal; the crossed flip does not."""
    from probing.stats import Clusters, crossed_sign_flip_tests
    rng, frames, predicates = _crossed_design(1)
    effects = rng.normal(0, 1, (10, 200))                        # one predicate effect per replicate
    values = effects[predicates] + rng.normal(0, 0.1, (len(frames), 200))
    frame_only, _ = sign_flip_tests(values, n_perm=999, seed=0, groups=frames)
    crossed, _ = crossed_sign_flip_tests(values, [frames, predicates], n_perm=999, seed=0)
    assert np.mean(frame_only < 0.05) > 0.25          # far above the 5% level
    assert np.mean(crossed < 0.05) <= 0.08
    # Clusters with a second factor route sign_flip_tests to the crossed test (the factor the CI uses).
    routed, _ = sign_flip_tests(values, n_perm=999, seed=0, groups=Clusters(frames, predicates))
    assert np.array_equal(routed, crossed)


def test_crossed_test_still_finds_a_real_shift():
    from probing.stats import crossed_sign_flip_tests
    rng, frames, predicates = _crossed_design(2)
    noise = rng.normal(0, 1, (10, 1))[predicates] * 0.2 + rng.normal(0, 0.2, (len(frames), 1))
    values = np.hstack([noise + 0.5, noise])                     # head 0 shifted by 0.5, head 1 null
    p, p_fwer = crossed_sign_flip_tests(values, [frames, predicates], n_perm=1999, seed=0)
    assert p_fwer[0] < 0.01 and p_fwer[1] > 0.05 and p_fwer[0] <= p_fwer[1]
    with pytest.raises(ValueError, match="at least one factor"):
        crossed_sign_flip_tests(values, [])


def test_item_means_weigh_each_item_once():
    from probing.stats import item_means
    values = np.array([[1.0], [3.0], [10.0], [np.nan]])          # item a has two forms, b one, c none finite
    means, first = item_means(values, ["a", "a", "b", "c"])
    assert first == [0, 2, 3]
    assert means[:2, 0].tolist() == [2.0, 10.0] and np.isnan(means[2, 0])
    with pytest.raises(ValueError, match="3 labels for 4 examples"):
        item_means(values, ["a", "b", "c"])
