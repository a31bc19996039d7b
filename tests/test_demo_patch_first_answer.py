"""The patching tab's quick first answer (attribution estimates for every head) and the exact values that then
replace the top heads' estimates."""
import numpy as np

from probing.demo import patch_view as pv

CLEAN, TWIN = "The lawyer did not sign the contract.", "The lawyer did really sign the contract."


def test_first_answer_is_estimated_and_the_top_heads_become_exact():
    first = pv.patch_pair_view(CLEAN, TWIN, "", None, "noising", method="attribution")
    assert first.result.method == "attribution" and any(n.startswith("First answer:") for n in first.notes)
    confirmed = pv.confirm_top_heads(first, k=3)
    exact = pv.patch_pair_view(CLEAN, TWIN, "", None, "noising")
    patched = ~confirmed.estimated
    assert 3 <= patched.sum() <= 6
    for kind in pv.KINDS:
        np.testing.assert_allclose(confirmed.result.effects[kind][patched], exact.result.effects[kind][patched],
                                   atol=1e-6)
        # the rest keep the first answer's estimates
        np.testing.assert_array_equal(confirmed.result.effects[kind][~patched], first.result.effects[kind][~patched])
    top = np.unravel_index(np.argmax(first.result.effects["noising"]), patched.shape)
    assert patched[top]
    assert not any(n.startswith("First answer:") for n in confirmed.notes)
    assert pv.confirm_top_heads(exact) is exact       # an exact view has nothing to confirm


def test_first_answer_leaves_its_sanity_checks_to_the_confirmation():
    first = pv.patch_pair_view(CLEAN, TWIN, "", None, "noising", method="attribution")
    assert first.result.sanity == {"passed": None}
    assert first.to_dict()["sanity"] == {"passed": None}
    confirmed = pv.confirm_top_heads(first, k=2)
    assert confirmed.result.sanity["passed"] is True
