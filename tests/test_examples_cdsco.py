"""Tests for probing/examples/cdsco.py: hand-made CoNLL snippets (no corpus text is copied here), then the real
CD-SCO gold files when the shared data root has them (skipped with the reason otherwise)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from probing.examples.cdsco import (CUE_FORMS, FOLDER, PARTS, SKIP_INSIDE_CUE_WORD, SKIP_NO_EVENT,
                                    SKIP_SEVERAL_TOKENS, by_direction, counts, files, load_cdsco, offset_controls,
                                    with_offset_controls)
from probing.examples.format import Example, ExampleError, Examples, example_from_dict
from probing.examples.loaders import DATA_ROOT_ENV, default_data_root

DEV, CARDBOARD, CIRCLE = PARTS["cd-sco-dev"][0], *PARTS["cd-sco-test"]


# --------------------------------------------------------------------------------------------------
# hand-made snippets


def sentence(chapter: str, number: int, words: list[str], *instances: dict) -> list[str]:
    """The CoNLL lines of one sentence. Each instance maps "cue" / "scope" / "event" to {token index: value}."""
    lines = []
    for i, word in enumerate(words):
        if instances:
            cols = [inst.get(part, {}).get(i, "_") for inst in instances for part in ("cue", "scope", "event")]
        else:
            cols = ["***"]
        lines.append("\t".join([chapter, str(number), str(i), word, word.lower(), "XX", "*", *cols]))
    return lines


def write_part(root: Path, part: str, *sentences_per_file: list[list[str]]) -> Path:
    """Write the files of a part under root/cd-sco/; each file is a list of sentences (lists of lines)."""
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, sents in zip(PARTS[part], sentences_per_file):
        (folder / name).write_text("".join("\n".join(s) + "\n\n" for s in sents), encoding="utf-8")
    return folder


def line_of(lines_before: list[list[str]], index: int) -> int:
    """The 1-based file line of token `index` of the sentence that follows `lines_before`."""
    return sum(len(s) + 1 for s in lines_before) + index + 1


S_GO = sentence("circle01", 0, "He did not go .".split(), {"cue": {2: "not"}, "event": {3: "go"}})
S_CAN = sentence("circle01", 1, "We can not leave .".split(), {"cue": {2: "not"}, "event": {1: "can"}})
S_CANT_INSIDE = sentence("circle01", 2, "I ca n't say .".split(), {"cue": {2: "n't"}, "event": {1: "ca"}})
S_CANT_SAY = sentence("circle01", 3, "I ca n't say .".split(), {"cue": {2: "n't"}, "event": {3: "say"}})
S_NEVER = sentence("circle01", 4, "She never came .".split(), {"cue": {1: "never"}, "event": {2: "came"}})
S_NO_EVENT = sentence("circle01", 5, "Why not ?".split(), {"cue": {1: "not"}, "scope": {0: "Why"}})
S_PLAIN = sentence("circle01", 6, "Nothing here is negated .".split())
S_SEVERAL = sentence("circle01", 7, "He did not give up .".split(),
                     {"cue": {2: "not"}, "event": {3: "give", 4: "up"}})
S_TWO = sentence("circle02", 0, "She never said it was not true .".split(),
                 {"cue": {1: "never"}, "event": {2: "said"}}, {"cue": {5: "Not"}, "event": {6: "true"}})
S_PART = sentence("circle02", 1, "It did not reappear .".split(), {"cue": {2: "not"}, "event": {3: "appear"}})
SNIPPET = [S_GO, S_CAN, S_CANT_INSIDE, S_CANT_SAY, S_NEVER, S_NO_EVENT, S_PLAIN, S_SEVERAL, S_TWO, S_PART]


@pytest.fixture
def snippet(tmp_path) -> Examples:
    write_part(tmp_path, "cd-sco-dev", SNIPPET)
    return load_cdsco("cd-sco-dev", data_root=tmp_path)


def by_id(examples) -> dict[str, Example]:
    return {e.id: e for e in examples}


def test_not_then_its_event_after(snippet):
    e = by_id(snippet)["cdsco-circle01-0-c0"]
    assert e.text == "He did not go."
    assert (e.source, e.target) == ("not", "go")
    assert (e.source_span, e.target_span) == ((7, 10), (11, 13))
    assert e.relation == "negation"
    assert e.meta == {"role": "negated", "pair": "cdsco-circle01-0-c0", "group": "circle01-0", "story": "circle",
                      "cue": "not", "cue_form": "not", "event": "go", "event_offset": 1, "direction": "after",
                      "file": DEV, "line": line_of([], 2), "part": "cd-sco-dev"}
    assert example_from_dict(e.to_dict()) == e


def test_modal_event_before_the_cue(snippet):
    e = by_id(snippet)["cdsco-circle01-1-c0"]
    assert e.text == "We can not leave."
    assert (e.source, e.target, e.source_span, e.target_span) == ("not", "can", (7, 10), (3, 6))
    assert (e.meta["event_offset"], e.meta["direction"]) == (-1, "before")


def test_nt_is_glued_and_an_event_inside_its_word_is_skipped(snippet):
    ids = by_id(snippet)
    assert "cdsco-circle01-2-c0" not in ids                     # event "ca": inside "can't"
    skipped = snippet.report.skipped
    assert f"{DEV}:{line_of(SNIPPET[:2], 2)}: {SKIP_INSIDE_CUE_WORD}" in skipped, skipped
    e = ids["cdsco-circle01-3-c0"]
    assert e.text == "I can't say."
    assert (e.source_span, e.target_span) == ((4, 7), (8, 11))
    assert (e.source, e.target, e.meta["cue"], e.meta["event"]) == ("n't", "say", "n't", "say")
    assert (e.meta["event_offset"], e.meta["direction"]) == (1, "after")    # words: I / can't / say.


def test_other_cues_are_not_examples_nor_skips(snippet):
    c = counts(snippet)
    assert c["cues"] == 10 and c["other_cues"] == 2, c                  # two "never" cues
    assert c["not_cues"] == {"not": 6, "n't": 2}, c
    assert not any("never" in e.meta["cue"] for e in snippet)
    assert not any("never" in reason for reason in snippet.report.skipped)
    two = [e for e in snippet if e.meta["group"] == "circle02-0"]
    assert [e.id for e in two] == ["cdsco-circle02-0-c1"]              # k = the instance's column group
    assert (two[0].source, two[0].meta["cue"]) == ("not", "not")        # "Not" in the cue column: any case


def test_no_event_and_several_tokens_are_skipped_with_reasons(snippet):
    skipped = snippet.report.skipped
    assert f"{DEV}:{line_of(SNIPPET[:5], 1)}: {SKIP_NO_EVENT}" in skipped, skipped
    assert f"{DEV}:{line_of(SNIPPET[:7], 2)}: {SKIP_SEVERAL_TOKENS}" in skipped, skipped
    assert counts(snippet)["skipped"] == {SKIP_INSIDE_CUE_WORD: 1, SKIP_NO_EVENT: 1, SKIP_SEVERAL_TOKENS: 1}
    assert "3 skipped" in snippet.report.summary() and "10 cues read" in snippet.report.summary()


def test_an_event_on_part_of_a_token_targets_the_whole_token(snippet):
    e = by_id(snippet)["cdsco-circle02-1-c0"]
    assert (e.target, e.meta["event"], e.meta["event_part"]) == ("reappear", "reappear", "appear")


def test_counts_are_plain_data(snippet):
    c = counts(snippet)
    assert json.loads(json.dumps(c)) == c
    assert (c["examples"], c["after"], c["before"], c["with_event"]) == (5, 4, 1, 7), c
    assert c["examples_by_cue"] == {"not": 4, "n't": 1}
    assert (c["sentences"], c["sentences_with_negation"]) == (10, 9)
    assert c["examples"] + sum(c["skipped"].values()) == sum(c["not_cues"].values())
    assert snippet.report.n_records == len(snippet) == 5


def test_text_glues_clitics_punctuation_and_closing_quotes(tmp_path):
    words = "`` He 's not here , '' she said ; they 'll see .".split()
    write_part(tmp_path, "cd-sco-dev", [sentence("wisteria01", 3, words, {"cue": {3: "not"}, "event": {4: "here"}})])
    (e,) = load_cdsco("cd-sco-dev", data_root=tmp_path)
    assert e.text == "`` He's not here,'' she said; they'll see."
    assert (e.source, e.target, e.meta["story"], e.meta["event_offset"]) == ("not", "here", "wisteria", 1)


def test_limit_keeps_the_first_examples(tmp_path):
    write_part(tmp_path, "cd-sco-dev", SNIPPET)
    first = load_cdsco("cd-sco-dev", data_root=tmp_path, limit=2)
    assert [e.id for e in first] == ["cdsco-circle01-0-c0", "cdsco-circle01-1-c0"]
    assert first.report.n_records == 2 and counts(first)["examples"] == 2
    with pytest.raises(ExampleError, match="limit"):
        load_cdsco("cd-sco-dev", data_root=tmp_path, limit=0)


def test_test_part_reads_both_stories_in_order(tmp_path):
    write_part(tmp_path, "cd-sco-test", [sentence("cardboard", 0, "He did not go .".split(),
                                                  {"cue": {2: "not"}, "event": {3: "go"}})],
               [sentence("circle01", 0, "We can not leave .".split(), {"cue": {2: "not"}, "event": {1: "can"}})])
    examples = load_cdsco("cd-sco-test", data_root=tmp_path)
    assert [(e.meta["story"], e.meta["file"]) for e in examples] == [("cardboard", CARDBOARD), ("circle", CIRCLE)]
    assert counts(examples)["files"] == [CARDBOARD, CIRCLE]


def test_malformed_line_raises_naming_file_and_line_or_is_skipped(tmp_path):
    bad = sentence("circle01", 9, "They could not stay .".split(), {"cue": {2: "not"}, "event": {3: "stay"}})
    bad[1] = "\t".join(bad[1].split("\t")[:5])                          # too few columns
    folder = write_part(tmp_path, "cd-sco-dev", [S_GO, bad, S_CAN])
    line = line_of([S_GO], 1)
    with pytest.raises(ExampleError, match=rf"{DEV}:{line}: expected at least 8 tab-separated columns"):
        load_cdsco("cd-sco-dev", data_root=tmp_path)
    examples = load_cdsco("cd-sco-dev", data_root=tmp_path, skip_bad=True)
    assert [e.id for e in examples] == ["cdsco-circle01-0-c0", "cdsco-circle01-1-c0"]
    (reason,) = examples.report.skipped
    assert reason.startswith(f"{DEV}:{line}: expected at least 8") and "sentence is skipped" in reason
    assert counts(examples)["sentences"] == 2
    assert (folder / DEV).is_file()


@pytest.mark.parametrize("edit, problem", [
    (lambda cols: cols[:2] + ["7"] + cols[3:], "token number '7', expected 1"),
    (lambda cols: cols + ["_"], "negation columns, not 3 per negation instance"),
    (lambda cols: cols[:7] + ["***", "_", "_"], "'\\*\\*\\*' \\(no negation\\) together with"),
    (lambda cols: ["circle09"] + cols[1:], "changes inside a sentence"),
    (lambda cols: cols[:3] + ["two words"] + cols[4:], "empty or holds white space"),
])
def test_other_malformed_lines(tmp_path, edit, problem):
    bad = sentence("circle01", 9, "They could not stay .".split(), {"cue": {2: "not"}, "event": {3: "stay"}})
    bad[1] = "\t".join(edit(bad[1].split("\t")))
    write_part(tmp_path, "cd-sco-dev", [S_GO, bad])
    with pytest.raises(ExampleError, match=rf"{DEV}:{line_of([S_GO], 1)}: .*{problem}"):
        load_cdsco("cd-sco-dev", data_root=tmp_path)
    assert len(load_cdsco("cd-sco-dev", data_root=tmp_path, skip_bad=True)) == 1


def test_files_parts_and_missing_data(tmp_path):
    assert files("cd-sco-test", tmp_path) == [tmp_path / FOLDER / CARDBOARD, tmp_path / FOLDER / CIRCLE]
    assert files("cd-sco-dev", tmp_path) == [tmp_path / FOLDER / DEV]
    with pytest.raises(ExampleError, match="unknown CD-SCO part 'cd-sco-train'.*cd-sco-dev, cd-sco-test"):
        files("cd-sco-train", tmp_path)
    with pytest.raises(ExampleError, match="missing .*" + DEV):
        load_cdsco("cd-sco-dev", data_root=tmp_path)
    write_part(tmp_path, "cd-sco-dev", [S_NEVER, S_PLAIN])
    with pytest.raises(ExampleError, match="no examples"):
        load_cdsco("cd-sco-dev", data_root=tmp_path)


# --------------------------------------------------------------------------------------------------
# offset controls

CONTROL_WORDS = "The old man did not really want the red car .".split()


@pytest.fixture
def far_item(tmp_path) -> Examples:
    write_part(tmp_path, "cd-sco-dev", [sentence("cardboard", 0, CONTROL_WORDS,
                                                 {"cue": {4: "not"}, "event": {6: "want"}}), S_CANT_SAY])
    return load_cdsco("cd-sco-dev", data_root=tmp_path)


def test_offset_controls_keep_the_offset(far_item):
    item = far_item[0]
    assert (item.text, item.meta["event_offset"]) == ("The old man did not really want the red car.", 2)
    controls = offset_controls(item)
    pairs = [(c.source, c.target) for c in controls]
    assert pairs == [("The", "man"), ("old", "did"), ("did", "really"), ("really", "the"), ("the", "car")]
    words = item.text.split(" ")
    for c in controls:
        i, j = (item.text.count(" ", 0, span[0]) for span in (c.source_span, c.target_span))
        assert j - i == 2 and c.target == words[j].strip(".")
        assert {c.source_span, c.target_span}.isdisjoint({item.source_span, item.target_span})
        assert c.source.isalpha() and c.target.isalpha()
        assert (c.role, c.meta["pair"], c.meta["group"], c.meta["control_set"]) == \
            ("control", item.id, item.meta["group"], "offset")
        assert example_from_dict(c.to_dict()) == c
    assert [c.id for c in controls] == [f"{item.id}-off{i}" for i in range(5)]
    assert controls[0].meta["control_note"] == "offset +2 from 'The'"


def test_offset_controls_at_most_max_evenly_spaced_and_deterministic(far_item):
    item = far_item[0]
    two = offset_controls(item, max_controls=2)
    assert [(c.source, c.target) for c in two] == [("The", "man"), ("did", "really")]
    assert offset_controls(item, max_controls=2) == two
    assert len(offset_controls(item, max_controls=5)) == 5
    with pytest.raises(ExampleError, match="max_controls"):
        offset_controls(item, max_controls=0)


def test_offset_controls_before_and_negation_words_never_sources(tmp_path):
    words = "No , we can not leave the boat now .".split()
    write_part(tmp_path, "cd-sco-dev", [sentence("circle01", 0, words, {"cue": {4: "not"}, "event": {3: "can"}})])
    (item,) = load_cdsco("cd-sco-dev", data_root=tmp_path)
    assert item.meta["event_offset"] == -1
    pairs = [(c.source, c.target) for c in offset_controls(item)]
    # words: No, / we / can / not / leave / the / boat / now. -- "No" is never a source; "leave" -> "not" is
    # the cue; "we" -> "No" is fine (a target may be any alphabetic word but the cue's and the event's)
    assert pairs == [("we", "No"), ("the", "leave"), ("boat", "the"), ("now", "boat")]
    assert all(c.meta["direction"] == "before" and c.meta["event_offset"] == -1 for c in offset_controls(item))


def test_with_offset_controls_and_by_direction(far_item):
    both = with_offset_controls(far_item)
    assert [e.id for e in both][:6] == ["cdsco-cardboard-0-c0"] + [f"cdsco-cardboard-0-c0-off{i}" for i in range(5)]
    assert both[-1].id == "cdsco-circle01-3-c0"            # "I can't say.": no word pair at +1 besides the cue's
    c = counts(both)
    assert (c["examples"], c["controls"], c["items_without_controls"]) == (2, 5, 1), c
    assert "5 offset controls (1 examples have none; kept)" in both.report.summary()
    after = by_direction(both, "after")
    assert len(after) == 7 and counts(after)["after"] == 2
    assert by_direction(both, "before") == []
    assert counts(by_direction(both, "before"))["controls"] == 0
    with pytest.raises(ExampleError, match="direction"):
        by_direction(both, "sideways")
    again = with_offset_controls(both)                       # controls already there are rebuilt, not doubled
    assert [e.id for e in again] == [e.id for e in both]


# --------------------------------------------------------------------------------------------------
# the real files (skipped when the data root lacks them)

try:
    REAL = default_data_root() / FOLDER
except ExampleError:                                          # an installed copy: no data root to guess
    REAL = None

# From the folder's README (check_cdsco.py's counts): sentences, cues, "not" and "n't" cues, those without an
# event. All four files hold 599 "not"/"n't" cues; dev + test hold 62 + 116 = 178 of them (train: 421).
README = {"cd-sco-dev": {"sentences": 787, "cues": 173, "not": 42, "n't": 20, "no_event": 18 + 7},
          "cd-sco-test": {"sentences": 496 + 593, "cues": 133 + 131, "not": 41 + 41, "n't": 18 + 16,
                          "no_event": 19 + 7 + 12 + 6}}


@pytest.fixture(scope="module", params=list(PARTS))
def real(request) -> tuple[str, Examples]:
    if REAL is None or not REAL.is_dir():
        pytest.skip(f"no CD-SCO folder at {REAL} (set {DATA_ROOT_ENV} to the shared data root)")
    return request.param, load_cdsco(request.param)


def test_real_counts_match_the_readme(real):
    part, examples = real
    c, expected = counts(examples), README[part]
    got = {"sentences": c["sentences"], "cues": c["cues"], "not": c["not_cues"]["not"],
           "n't": c["not_cues"]["n't"], "no_event": c["skipped"].get(SKIP_NO_EVENT, 0)}
    assert got == expected, f"{part}: {c}"
    assert c["examples"] + sum(c["skipped"].values()) == sum(c["not_cues"].values()), f"{part}: {c}"
    assert c["with_event"] == sum(c["not_cues"].values()) - expected["no_event"], f"{part}: {c}"
    assert c["after"] + c["before"] == c["examples"] == len(examples) > 0, f"{part}: {c}"


def test_real_sources_are_cues_and_targets_their_events(real):
    part, examples = real
    summary = examples.report.summary()
    assert all(e.source.lower().replace("\u2019", "'") in CUE_FORMS for e in examples), summary
    assert all(e.target == e.meta["event"] for e in examples), summary
    assert len({e.id for e in examples}) == len(examples), summary
    assert all(e.meta["group"] == e.id.removeprefix("cdsco-").rsplit("-c", 1)[0] for e in examples), summary
    assert all((e.meta["event_offset"] > 0) == (e.meta["direction"] == "after") for e in examples), summary


def test_real_offset_controls(real):
    part, examples = real
    both = with_offset_controls(examples)
    c = counts(both)
    items = {e.meta["pair"]: e for e in both if not e.is_control}
    for control in (e for e in both if e.is_control):
        item = items[control.meta["pair"]]
        assert {control.source_span, control.target_span}.isdisjoint({item.source_span, item.target_span})
        i, j = (control.text.count(" ", 0, span[0]) for span in (control.source_span, control.target_span))
        assert j - i == item.meta["event_offset"], f"{part}: {control.id}"
    per_item = [sum(e.meta["pair"] == p and e.is_control for e in both) for p in items]
    assert max(per_item) <= 8 and c["controls"] == sum(per_item), f"{part}: {c}"
    assert c["items_without_controls"] == per_item.count(0) < len(items) / 4, f"{part}: {c}"
