"""The docs say what the code does and no more: the demo's About tab is checked against the code's rules and
the built-in data, the README and the About tab state no finding number that the committed reports do not
hold, the methods page states the code's constants, and the README stays a user's document (under 3,500 words).

Constants are read from the source with `ast` (no torch import), so these tests run in a second or two."""
from __future__ import annotations

import ast
import collections
import json
import re
from pathlib import Path

import pytest

from probing import defaults
from tests.report_numbers import strip_code, unheld_numbers, unrecorded_heads

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ABOUT = ROOT / "probing" / "demo" / "about.md"
METHODS = ROOT / "docs" / "methods.md"
NEGATION_SET = ROOT / "probing" / "examples" / "builtin" / "negation.jsonl"
README_MAX_WORDS = 3500

# How each source-piece rule is stated in the About tab: the sentence for the code's default must be there, and
# no other rule may be stated as what the tab's numbers are.
SOURCE_PIECE_SENTENCES = {
    "last": "is read from S's **last** word piece",
    "mean": "is the mean over S's word pieces",
}
# Decimals in the README that are not findings, each with what it is.
NOT_FINDINGS = {
    "3.11": "the Python version",
    "2.0": "the Apache-2.0 licence",
    "4.0": "the CC BY 4.0 licence",
    "6.31": "the Gradio version",
    "0.5": "the demo's refusal delay in seconds (PROBING_REFUSAL_DELAY_S)",
}


def constant(name: str, *files: str):
    """A module-level constant NAME = <literal>, read from the first of `files` (paths under probing/) that
    defines it, without importing the module."""
    for file in files:
        tree = ast.parse((ROOT / "probing" / file).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
    raise AssertionError(f"no constant {name} in {files}: the test follows the code, so update where it looks")


def words(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").split())


# ---- the About tab against the code -------------------------------------------------------------------

def test_the_about_tab_states_the_source_piece_rule_the_code_uses():
    about = ABOUT.read_text(encoding="utf-8")
    default = defaults.SOURCE_PIECES
    assert SOURCE_PIECE_SENTENCES[default] in about, \
        f"the code reads a source word's pieces by the rule {default!r}; the About tab must say so"
    for rule, sentence in SOURCE_PIECE_SENTENCES.items():
        if rule != default:
            assert sentence not in about, f"the About tab states the {rule!r} rule, which is not the default"


def test_the_about_tab_names_the_adverbs_the_built_in_controls_use_most():
    counts = collections.Counter(json.loads(line)["meta"].get("adverb") for line in
                                 NEGATION_SET.read_text(encoding="utf-8").splitlines()
                                 if line.strip() and json.loads(line)["meta"].get("role") == "control")
    most = max(counts.values())
    commonest = {adverb for adverb, n in counts.items() if n == most}
    named = set(re.findall(r"\*did (\w+) sign\*", ABOUT.read_text(encoding="utf-8"))) - {"not"}
    assert named, "the About tab gives no example of a control sentence (*did ADVERB sign*)"
    assert named <= commonest, (f"the About tab's example controls use {sorted(named)}, but the built-in set "
                                f"uses {sorted(commonest)} most ({counts.most_common(4)})")


def test_the_about_tab_names_the_twin_the_patching_tab_suggests():
    twin_words = constant("TWIN_WORDS", "patching/pairs.py")
    swaps = re.findall(r"swaps \*(\w+)\* for \*(\w+)\*|\*(\w+)\* for \*(\w+)\*",
                       ABOUT.read_text(encoding="utf-8").split("**The Patching (causal) tab**", 1)[1])
    pairs = [(a or c, b or d) for a, b, c, d in swaps]
    assert pairs, "the About tab no longer says which twin the patching tab suggests"
    for word, twin in pairs:
        assert twin_words.get(word) == twin, f"the About tab says {word} -> {twin}; the code swaps {word} -> " \
                                              f"{twin_words.get(word)}"


def test_the_about_tab_and_methods_page_state_the_codes_thresholds():
    """Every "30 units"-style threshold and stated constant equals the code's."""
    stated = {
        r"(?:fewer than|at least|under|below) (\d+) (?:independent )?units": defaults.MIN_UNITS,
        r"p_fwer` < (0\.\d+)|p < (0\.\d+)|below (0\.\d+)": defaults.ALPHA,
    }
    for path in (ABOUT, METHODS):
        text = path.read_text(encoding="utf-8")
        for pattern, value in stated.items():
            for match in re.finditer(pattern, text):
                found = next(g for g in match.groups() if g)
                if found == str(constant("SMALL_SAMPLE_UNITS", "stats.py")):
                    continue       # the t-interval threshold, checked below
                assert float(found) == value, f"{path.name}: {match.group(0)!r}, but the code uses {value}"
    methods = " ".join(METHODS.read_text(encoding="utf-8").split())     # line breaks do not matter
    assert f"({defaults.N_BOOT:,} resamples)" in methods
    assert f"({defaults.N_PERM:,} flips" in methods
    assert f"below {constant('SMALL_SAMPLE_UNITS', 'stats.py')} units" in methods
    assert f"best first, at most {constant('MAX_HEADS', 'confirm.py')}" in methods
    assert (f"top {constant('SCREEN_TOP_K', 'patching/attribution.py')} heads per kind plus "
            f"{constant('SCREEN_RANDOM', 'patching/attribution.py')} random others") in methods
    assert f"{defaults.N_DRAWS} random head sets" in methods


def test_the_threshold_check_fails_on_a_wrong_rule(tmp_path):
    """The pattern the check above relies on finds a stated threshold that differs from the code's."""
    wrong = "with fewer than 20 units a report refuses to claim anything"
    found = re.search(r"(?:fewer than|at least|under|below) (\d+) (?:independent )?units", wrong)
    assert found and int(found.group(1)) != defaults.MIN_UNITS


# ---- no finding number that the reports do not hold ---------------------------------------------------

@pytest.mark.parametrize("path", [README, ABOUT], ids=["README", "About"])
def test_no_finding_number_that_the_committed_reports_do_not_hold(path):
    text = strip_code(path.read_text(encoding="utf-8"))
    text = re.sub(r"arXiv:\d+\.\d+", " ", text)            # paper identifiers, not numbers
    numbers = unheld_numbers(text, {**NOT_FINDINGS, str(defaults.ALPHA): "the family-wise level (defaults.ALPHA)"})
    heads = unrecorded_heads(text)
    assert not numbers, f"{path.name} states numbers no committed report holds: {numbers}"
    assert not heads, f"{path.name} names heads no committed report names: {heads}"


def test_the_number_check_holds_a_number_only_beside_its_head():
    # the committed MiniLM values of its best head on the built-in negation set (paired difference and CI)
    summary = json.loads((ROOT / "reports" / "minilm" / "heads" / "builtin-negation" / "summary.json").read_text())
    top = summary["top_heads"][0]
    head = f"{top['layer']}-{top['head']}"
    score, low, high = (f"{top[k]:.3f}" for k in ("paired_difference", "paired_difference_ci_low",
                                                   "paired_difference_ci_high"))
    assert unheld_numbers(f"Head {head} leads with {score} [{low}, {high}].") == []
    assert unheld_numbers(f"Head {head} leads with 0.9171.") == ["0.9171"]      # not a value of that head
    assert unheld_numbers(f"Head 1-3 leads with {score}.") == [score]            # a value of another head
    assert unheld_numbers(f"The best head leads with {score}.") == [score]       # no head: no context to hold it
    accuracy = f"{100 * top['accuracy']:.1f}%"
    assert unheld_numbers(f"Head {head} is right in {accuracy} of them.") == []  # its accuracy as a percentage
    assert unrecorded_heads(f"heads {head} and 17-11 lead") == ["17-11"]


# ---- the README is the user's document ----------------------------------------------------------------

def test_the_readme_is_short_and_links_the_findings_and_methods_pages():
    assert words(README) < README_MAX_WORDS, f"README.md has {words(README)} words (at most {README_MAX_WORDS})"
    readme = README.read_text(encoding="utf-8")
    for link in ("reports/FINDINGS.md", "docs/methods.md"):
        assert f"]({link})" in readme and (ROOT / link).is_file(), link
    assert "python -m analysis report --findings-only" in readme
