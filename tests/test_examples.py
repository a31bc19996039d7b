"""`probing.examples.load_examples`: a built-in set's name, a JSONL path or a dataset's name to validated examples;
`limit` keeps each kept sentence's control; an unknown name lists the known ones. (The real datasets are tested
in test_examples_loaders.py, the format in test_examples_format.py.)"""
import json

import pytest

from probing.examples import BUILTIN_SETS, ExampleError, Examples, LoadReport, load_examples


def test_builtin_sets_by_name():
    negation = load_examples("builtin-negation")
    report = negation.report
    assert isinstance(negation, Examples) and isinstance(negation, list) and isinstance(report, LoadReport)
    assert report.source == "builtin-negation" and len(negation) == report.n_records == 1056
    assert sum(e.is_control for e in negation) == 801            # every item has each fitting adverb's control
    coref = load_examples("builtin-coref")
    assert len(coref) == 346 and {e.relation for e in coref} == {"coreference"}


def test_limit_keeps_the_controls_of_the_kept_sentences():
    examples = load_examples("builtin-negation", limit=5)
    report = examples.report
    negated = ["neg-f01-p1-nt", "neg-f01-p1-not", "neg-f01-p2-nt", "neg-f01-p2-not", "neg-f01-p3-nt"]
    adverbs = ["really", "actually", "indeed", "also", "certainly"]
    assert [e.id for e in examples] == negated + [f"neg-f01-p{p}-ctl-{a}" for p in (1, 2, 3) for a in adverbs]
    assert report.n_records == 20


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
                                           r"builtin-coref, builtin-negation, gap-dev"):
        load_examples("nope")
    assert set(BUILTIN_SETS) == {"builtin-coref", "builtin-negation"}
