"""`probing.examples.load_examples`: a built-in set's name, a JSONL path or a dataset's name to validated examples;
`limit` keeps each kept sentence's control; an unknown name lists the known ones. (The real datasets are tested
in test_examples_loaders.py, the format in test_examples_format.py.)"""
import json

import pytest

from probing.examples import (BUILTIN_SETS, ExampleError, Examples, LoadReport, example_from_dict,
                              first_keeping_partners, load_examples)


def test_builtin_sets_by_name():
    negation = load_examples("builtin-negation")
    report = negation.report
    assert isinstance(negation, Examples) and isinstance(negation, list) and isinstance(report, LoadReport)
    assert report.source == "builtin-negation" and len(negation) == report.n_records == 1515
    assert sum(e.is_control for e in negation) == 1119          # every item has each fitting adverb's control
    coref = load_examples("builtin-coref")
    assert len(coref) == 346 and {e.relation for e in coref} == {"coreference"}


def test_limit_keeps_the_controls_of_the_kept_sentences():
    examples = load_examples("builtin-negation", limit=5)
    report = examples.report
    negated = ["neg-f01-p1-nt", "neg-f01-p1-not", "neg-f01-p2-nt", "neg-f01-p2-not", "neg-f01-p3-nt"]
    adverbs = ["really", "actually", "indeed", "certainly"]
    assert [e.id for e in examples] == negated + [f"neg-f01-p{p}-ctl-{a}" for p in (1, 2, 3) for a in adverbs]
    assert report.n_records == 17


def _rows(*keys):
    """Examples whose meta.pair is each given key (None: unpaired); a key ending in "*" is a control."""
    rows = []
    for number, key in enumerate(keys):
        meta = {"pair": key.rstrip("*"), "role": "control" if key.endswith("*") else "negated"} if key else {}
        rows.append(example_from_dict({"text": "The lawyer did not sign it.", "relation": "negation",
                                       "source_span": [15, 18], "target_span": [19, 23], "id": f"r{number}",
                                       "meta": meta}))
    return rows


def test_first_keeping_partners_keeps_whole_units_then_their_partners():
    rows = _rows("a", "a", "b*", "b", "a*", None, "c")
    ids = lambda kept: [e.id for e in kept]                                     # noqa: E731
    by_pair = lambda e: e.meta.get("pair", e.id)                                # noqa: E731
    # units: the first 2 pairs (a, then b), every row of each, in their order
    assert ids(first_keeping_partners(rows, 2, unit=by_pair)) == ["r0", "r1", "r2", "r3", "r4"]
    # load_examples' rule: the first 3 sentences (controls not counted), then the controls of their pairs
    assert ids(first_keeping_partners(rows, 3, is_partner=lambda e: e.is_control,
                                      partner_key=lambda e: e.meta.get("pair"))) == ["r0", "r1", "r3", "r2", "r4"]
    assert ids(first_keeping_partners(rows, 99, unit=by_pair)) == ids(rows) == ids(first_keeping_partners(rows, None))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ExampleError, match="limit must be a whole number of at least 1"):
            first_keeping_partners(rows, bad)


def test_a_jsonl_path_is_read_as_a_file(tmp_path):
    row = {"text": "The lawyer did not sign the contract.", "relation": "negation", "source_span": [15, 18],
           "target_span": [19, 23]}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    loaded = load_examples(str(path))
    (example,), report = loaded, loaded.report
    assert (example.source, example.target, example.id) == ("not", "sign", "mine:1") and report.n_records == 1


def test_an_unknown_name_lists_the_known_datasets():
    with pytest.raises(ExampleError, match=r"unknown dataset 'nope' \(and not a file\); known datasets: "
                                           r"builtin-coref, builtin-negation, builtin-negation-clitics, gap-dev"):
        load_examples("nope")
    assert set(BUILTIN_SETS) == {"builtin-coref", "builtin-negation", "builtin-negation-clitics"}
