"""The demo's Patching (causal) tab backend on the real MiniLM: every head's effects and attention for one pair,
their numbers against the library's, the scatter and its rank correlation, the dataset columns from the
committed report, and bad input answered in words before any model runs."""
import numpy as np
import pytest

from probing.demo import patch_view as pv
from probing.demo.guard import DemoError
from probing.patching import patch_pair

CLEAN = "The lawyer did not sign the contract."
TWIN = "The lawyer did really sign the contract."


@pytest.fixture(scope="module")
def negation():
    return pv.patch_pair_view(CLEAN, TWIN, "", None, "noising")


def test_not_really_pair_gives_every_head_with_sane_numbers(negation, minilm):
    view = negation
    assert view.model == "minilm" and view.pair.swap == "not -> really"
    assert view.attention.shape == (6, 12) and view.result.effects["noising"].shape == (6, 12)
    data = view.to_dict()
    assert len(data["heads"]) == 72 and {h["layer"] for h in data["heads"]} == set(range(6))
    # the sanity checks of the library: own-run patches change nothing, the embedding patch restores everything
    assert data["sanity"]["own_noising_max_abs"] < 1e-6 and data["sanity"]["own_denoising_max_abs"] < 1e-6
    assert abs(data["sanity"]["embedding_denoising"] - 1) < 1e-5
    assert all(np.isfinite(v) for v in data["correlation"].values())
    # the default target is the word after "not"; source and swapped pieces are the one piece of "not"
    assert data["target"]["word"] == "sign" and data["source"]["word"] == "not"
    assert data["tokens"][data["swapped"][0]] == "not" and data["source"]["pieces"] == data["swapped"]
    assert data["tokens"][data["target"]["pieces"][0]] == "sign"
    assert any("the word right after 'not'" in n for n in view.notes)
    # the numbers are the library's for this pair, and the attention its pattern summed over the target's piece
    library = patch_pair(minilm, CLEAN, TWIN, kinds=("noising", "denoising"))
    for kind in ("noising", "denoising"):
        np.testing.assert_allclose(view.result.effects[kind], library.effects[kind], atol=1e-6)
    sign = data["tokens"].index("sign")
    np.testing.assert_allclose(view.attention, library.source_pattern[:, :, sign], atol=1e-6)
    # the scatter has one point per head, and the correlation is Spearman's over those points
    assert len(view.scatter) == 72 and set(view.scatter.columns) >= {"head", "attention", "effect"}
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties among 72 float effects)
    rho = np.corrcoef(ranks(view.attention.ravel()), ranks(view.result.effects["noising"].ravel()))[0, 1]
    assert abs(view.correlation["noising"] - rho) < 0.01


def test_table_ranks_by_the_effect_shown_and_carries_the_committed_dataset_columns(negation):
    table = negation.top_table
    assert list(table["noising"]) == sorted(table["noising"], reverse=True)
    best = np.unravel_index(np.argmax(negation.result.effects["noising"]), (6, 12))
    assert table["head"][0] == f"{best[0]}-{best[1]}"
    if negation.dataset is not None:   # the committed MiniLM report has builtin-negation patching results
        row = negation.dataset[(negation.dataset["layer"] == best[0]) & (negation.dataset["head"] == best[1])].iloc[0]
        assert table["set: noising"][0] == round(row["noising"], 3)
        assert table["set: noising p_fwer < 0.05"][0] == ("yes" if row["noising_p_fwer"] < 0.05 else "no")
    denoising = pv.render(negation, "denoising").top_table
    assert list(denoising["denoising"]) == sorted(denoising["denoising"], reverse=True)
    assert "set: denoising 95% CI" in denoising.columns
    assert 'class="hh-cell' in negation.effect_html and "0 (white)" in negation.effect_html
    pv.render(negation, "noising")


def test_no_twin_uses_the_suggested_one_and_a_pronoun_targets_a_noun():
    view = pv.patch_pair_view("The doctor called the nurse because she was late.", "", "", None)
    assert view.pair.corrupt == "The doctor called the nurse because he was late."
    assert view.target_word == "doctor"
    assert any("suggested twin (she -> he)" in n for n in view.notes)
    assert any("first noun or name" in n for n in view.notes)
    given = pv.patch_pair_view("The doctor called the nurse because she was late.", "", "nurse", None)
    assert given.target_word == "nurse" and any("as given" in n for n in given.notes)


BAD = [
    ("different piece counts", (CLEAN, "The lawyer did unhappily sign the contract.", ""),
     r"The sentence has 10 pieces and the twin 13: patching needs a twin that swaps one word"),
    ("two words differ", (CLEAN, "The judge did really sign the contract.", ""), r"differ in more than one word"),
    ("same text", (CLEAN, CLEAN, ""), r"are the same to the model"),
    ("empty twin, nothing to swap", ("The lawyer signed the contract.", "  ", ""),
     r"No twin was given and none can be suggested.*not → really"),
    ("empty sentence", ("   ", TWIN, ""), r"The sentence is empty"),
    ("over-long pair", ("The lawyer did not sign " + "the long contract " * 30 + ".",
                        "The lawyer did really sign " + "the long contract " * 30 + ".", ""),
     r"The sentence has \d+ pieces; this tab patches pairs of at most 64, because every head's patched copy"),
    ("missing target", (CLEAN, TWIN, "judge"), r"The target word 'judge' does not occur"),
    ("target is the swapped word", (CLEAN, TWIN, "not"), r"The target is the swapped word itself"),
    ("not the last word", ("He did not.", "He did really.", ""), r"No word follows 'not'"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_pairs_get_words(args, message):
    with pytest.raises(DemoError, match=message):
        pv.patch_pair_view(*args, None)


FIELDS = [
    ("list as sentence", (["x"], TWIN, "", None, "noising"), r"The text must be text, got list"),
    ("100,000-character twin", (CLEAN, "x" * 100_000, "", None, "noising"), r"The text has 100,000 characters"),
    ("dict as target", (CLEAN, TWIN, {"a": 1}, None, "noising"), r"The target word must be text, got dict"),
    ("1 MB target", (CLEAN, TWIN, "a" * 1_000_000, None, "noising"), r"The target word has 1,000,000 characters"),
    ("bad model", (CLEAN, TWIN, "", "no-such/model", "noising"), r"model 'no-such/model' is not on this demo's allow"),
    ("path as model", (CLEAN, TWIN, "", "../../etc", "noising"), r"allow-list"),
    ("number as model", (CLEAN, TWIN, "", 7, "noising"), r"The model name must be text, got int"),
    ("unknown effect", (CLEAN, TWIN, "", None, "pattern"), r"Unknown effect 'pattern': use 'noising' or 'denoising'"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in FIELDS], ids=[c[0] for c in FIELDS])
def test_every_field_is_checked_before_the_model(args, message, monkeypatch):
    def no_model(name):
        raise AssertionError("a model was asked for before the fields were checked")
    monkeypatch.setattr(pv.backend, "get_model", no_model)
    with pytest.raises(DemoError, match=message):
        pv.patch_pair_view(*args)


def test_gallery_pairs_are_minimal_pairs_the_tab_accepts(minilm):
    pairs = pv.gallery_pairs()
    assert len(pairs) == 7
    assert sum("really" in twin for _, twin, _ in pairs) == 4 and sum(" he " in t or " she " in t for _, t, _ in pairs) >= 3
    for clean, twin, target in pairs:
        loaded = pv.backend.get_model(None)
        checked = pv.checked_pair(loaded, clean, twin, target)
        assert checked.clean[slice(*checked.target_span)].lower() == target.split(" (")[0].lower()


def test_suggest_and_head_line(negation):
    assert pv.suggest("She did not come.") == ("She did really come.", "Suggested twin (not -> really): 'She did really come.'")
    with pytest.raises(DemoError, match="none can be suggested"):
        pv.suggest("Nothing to swap here.")
    line = pv.head_line(negation, 5, 9)
    assert line.startswith("Head 5-9: noising") and "'not' → 'sign'" in line
    with pytest.raises(DemoError, match="There is no head 6-0"):
        pv.head_line(negation, 6, 0)


def test_patching_runs_in_its_own_lane_one_job_at_a_time_beside_scoring():
    import threading
    from probing.demo import guard
    entered, release = threading.Event(), threading.Event()

    def second_holder():
        with guard.exclusive_forward():
            entered.set()
            release.wait(5)

    with guard.exclusive_forward():
        with guard.forward_slot():                                  # scoring still gets a slot meanwhile
            pass
        other = threading.Thread(target=second_holder, daemon=True)
        other.start()
        assert not entered.wait(0.2)                                # a second patching job waits for the lane
    assert entered.wait(5)
    release.set()
    other.join(5)
    assert all(guard.FORWARD_SLOTS.acquire(blocking=False) for _ in range(guard.CONCURRENCY))
    for _ in range(guard.CONCURRENCY):                              # patching never held a scoring slot
        guard.FORWARD_SLOTS.release()


def test_the_page_table_keeps_four_columns_on_a_narrow_screen_and_escapes_everything():
    """The HTML table: every top head with this pair's effect, attention and the set's effect with its CI; the
    other effect and p_fwer in the hidden-on-wide details line; headers of whole words; nothing unescaped."""
    import pandas as pd
    from probing.demo.patch_view import TABLE_CSS, empty_top_table, table_html
    table = pd.DataFrame({"head": ["5-9", "<b>x</b>"], "noising": [0.474, 0.1], "denoising": [0.507, -0.2],
                          "attention": [0.012, 0.3], "norm attention": [0.021, None], "set: noising": [0.352, None],
                          "set: noising 95% CI": ["0.298 to 0.395", None],
                          "set: noising p_fwer < 0.05": ["yes", None]})
    page = table_html(table, "noising")
    assert page.count('<tr class="pt-main">') == 2 and page.count('<tr class="pt-details">') == 2
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    header = page.split("</thead>")[0]
    shown = [h for h in header.split("<th")[2:] if 'class="pt-wide"' not in h]    # [0], [1]: <table> and <thead>
    assert len(shown) == 4 and "this pair: noising" in header and "95% CI" in header
    assert "denoising 0.507 · norm attention 0.021 · set p_fwer &lt; 0.05: yes" in page and "0.298 to 0.395" in page
    # Every column the legend explains is in the table (the legend's "norm attention" had none).
    from probing.demo.patch_view import TABLE_MEANINGS
    for column in TABLE_MEANINGS:
        assert column.replace("set: …", "set: ") in header, column
    assert "word-break: normal" in TABLE_CSS and ".pt-table .pt-wide {display: none}" in TABLE_CSS
    assert "Patch a pair" in table_html(empty_top_table("denoising"), "denoising")


def _lab(colour: str) -> np.ndarray:
    """CIE L*a*b* of a "#rrggbb" colour (sRGB, D65): distances in it track how different two colours look."""
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), 0.008856))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_every_layer_of_the_scatter_gets_a_colour_of_its_own():
    """Twelve layers, twelve colours; the first six (MiniLM) far apart (CIE76 distance >= 30: the old Okabe-Ito
    order put a sky blue 26 from its blue, so layers 0 and 4 looked alike)."""
    from itertools import combinations
    from probing.demo.patch_view import layer_colours
    colours = layer_colours(12)
    assert list(colours) == [str(l) for l in range(12)] and len(set(colours.values())) == 12
    distance = lambda pair: float(np.linalg.norm(_lab(pair[0]) - _lab(pair[1])))   # noqa: E731
    assert min(map(distance, combinations(list(colours.values())[:6], 2))) >= 30
    assert min(map(distance, combinations(colours.values(), 2))) >= 25


def test_the_patching_downloads_carry_every_column_of_the_table_for_every_head(negation):
    rows = pv.download_rows(negation)
    assert len(rows) == 72 and rows[0]["head"] == "0-0"
    shown = set(negation.top_table.columns)
    assert shown <= set(rows[0]), shown - set(rows[0])
    assert {"set: noising", "set: denoising 95% CI"} <= set(rows[0])
    first = negation.top_table.iloc[0]
    row = next(r for r in rows if r["head"] == first["head"])
    assert round(row["noising"], 3) == first["noising"] and round(row["attention"], 3) == first["attention"]
