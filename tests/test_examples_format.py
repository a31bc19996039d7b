"""`probing.examples.format`, the example contract: each broken rule of a row named in the message, JSONL read
and written back unchanged (line separators inside strings included), bad lines named by file and line or
counted under skip_bad, and `find_span` matching whole words only."""
import json

import pytest

from probing.examples.format import (MAX_LINE_BYTES, Example, ExampleError, example_from_dict, find_span, jsonl_line,
                                     read_jsonl, write_jsonl)

ROW = {"text": "The doctor called the nurse because she was late.", "relation": "coreference",
       "source_span": [36, 39], "target_span": [22, 27], "candidate_spans": [[4, 10], [22, 27]],
       "id": "c1", "meta": {"group": "g1"}}


@pytest.mark.parametrize("change, message", [
    ({"relation": "sarcasm"}, r"relation must be one of \('coreference', 'negation'\), got 'sarcasm'"),
    ({"source_span": [36, 99]}, r"source_span \[36, 99\] is out of range or empty for a text of 49 characters"),
    ({"source_span": [36, True]}, r"source_span must be a list of two integers"),
    ({"target_span": [37, 40]}, r"source_span \[36, 39\] and target_span \[37, 40\] overlap"),
    ({"target_span": [3, 4]}, r"target_span \[3, 4\] covers only white space"),
    ({"candidate_spans": [[4, 10]]}, r"candidate_spans must be a list of at least two spans"),
    ({"candidate_spans": [[4, 10], [11, 17]]}, r"target_span \[22, 27\] is not among candidate_spans"),
    ({"meta": [1]}, r"meta must be a JSON object"),
    ({"text": "  "}, r"text must be a non-empty string"),
])
def test_each_broken_rule_is_named(change, message):
    with pytest.raises(ExampleError, match=message):
        example_from_dict({**ROW, **change})


def test_missing_fields_are_listed():
    with pytest.raises(ExampleError, match=r"missing field\(s\) relation, target_span"):
        example_from_dict({"text": "x", "source_span": [0, 1]})


def test_a_valid_row_becomes_an_example():
    example = example_from_dict(ROW)
    assert (example.source, example.target, example.relation) == ("she", "nurse", "coreference")
    assert example.candidate_spans == ((4, 10), (22, 27)) and example.meta == {"group": "g1"}


def test_jsonl_round_trip_keeps_line_separators_inside_strings(tmp_path):
    text = "She said\u2028it was not\u0085late."
    example = Example(text=text, relation="negation", source_span=find_span(text, "not"),
                      target_span=find_span(text, "late"), id="n1")
    assert "\u2028" not in jsonl_line(example) and "\\u2028" in jsonl_line(example)
    path = tmp_path / "out" / "rows.jsonl"
    write_jsonl([example, example_from_dict(ROW)], path)
    read, report = read_jsonl(path)
    assert read == [example, example_from_dict(ROW)] and report.n_records == 2 and len(path.read_text().splitlines()) == 2


def test_bad_lines_are_named_by_file_and_line_or_counted(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([json.dumps(ROW), "{not json", json.dumps({**ROW, "relation": "x"}), ""]) + "\n")
    with pytest.raises(ExampleError, match=rf"{path}:2: malformed JSON"):
        read_jsonl(path)
    examples, report = read_jsonl(path, skip_bad=True)
    assert len(examples) == 1 and report.n_skipped == 2
    assert report.skipped[0].startswith("line 2: malformed JSON") and report.skipped[1].startswith("line 3: relation")


def test_an_over_long_line_is_refused_without_being_parsed(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"text": "' + b"a" * (MAX_LINE_BYTES + 200_000) + b'"}\n' + json.dumps(ROW).encode() + b"\n")
    examples, report = read_jsonl(path, skip_bad=True)
    assert len(examples) == 1 and report.skipped[0].startswith(f"line 1: the line has {MAX_LINE_BYTES + 1:,} bytes")


def test_find_span_matches_whole_words_only():
    assert find_span("Another other word", "other") == (8, 13)
    with pytest.raises(ExampleError, match=r"'cat' does not occur as a word"):
        find_span("concatenate", "cat")
