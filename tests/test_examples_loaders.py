"""Tests for probing/examples/loaders.py on the real shared datasets (skipped only when the data root is absent)."""
from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import pytest

from probing.examples import ExampleError, example_from_dict
from probing.examples.loaders import (ALIASES, DATA_ROOT_ENV, DATASETS, default_data_root, is_affixal_cue,
                                      load_dataset)

ROOT = default_data_root()

# name -> (records, skipped, data rows). Paired sets make two records per data row.
EXPECTED = {
    "gap-dev": (1794, 206, 2000),      # 5 rows lose a mention to the head rule (see test_mention_head)
    "gap-test": (1766, 234, 2000),
    "gap-validation": (392, 62, 454),
    "winobias": (3168, 0, 3168),
    "winogender": (720, 0, 720),
    "wsc273": (269, 4, 273),
    "blimp-npi-licensing": (2000, 0, 1000),
    "blimp-npi-scope": (2000, 0, 1000),
    "neg136-simp": (18, 0, 18),
    "neg136-nat": (16, 0, 16),
    "condaqa": (50, 1060, 1110),
}
RECORDS_PER_ROW = {"blimp-npi-licensing": 2, "blimp-npi-scope": 2}


@pytest.fixture(scope="module")
def data_root() -> Path:
    if not ROOT.is_dir():
        pytest.skip(f"shared data root {ROOT} does not exist (set {DATA_ROOT_ENV})")
    return ROOT


@lru_cache(maxsize=None)
def _load(name: str):
    return load_dataset(name, ROOT)


def _by_id(name: str) -> dict:
    return {e.id: e for e in _load(name)[0]}


def _data_rows(name: str) -> int:
    """Count the data rows of a dataset straight from its files (non-blank lines, less headers)."""
    info = DATASETS[name]
    path = ROOT / info.path
    if name == "wsc273":
        return 273
    if name == "winobias":
        files = [path / f for f in info.files if "stereotyped" in f]
    elif name == "winogender":
        files = [path / "all_sentences.tsv"]
    else:
        files = [path]
    header = 1 if path.suffix == ".tsv" or name == "winogender" else 0
    return sum(sum(1 for line in f.read_bytes().split(b"\n") if line.strip()) - header for f in files)


def test_registry_names():
    assert sorted(DATASETS) == sorted(list(EXPECTED) + list(ALIASES))
    for name, info in DATASETS.items():
        assert info.name == ALIASES.get(name, name) and info.relation in ("coreference", "negation")
        assert info.licence and info.public_source.startswith("https://") and info.description


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts(data_root, name):
    examples, report = _load(name)
    n_records, n_skipped, n_rows = EXPECTED[name]
    assert (len(examples), report.n_records, report.n_skipped) == (n_records, n_records, n_skipped)
    assert _data_rows(name) == n_rows
    assert len(examples) // RECORDS_PER_ROW.get(name, 1) + report.n_skipped == n_rows
    assert all(e.relation == DATASETS[name].relation for e in examples)
    assert len({e.id for e in examples}) == len(examples), "ids must be unique"
    assert all(e.meta.get("group") for e in examples), "every record has a group"
    assert name in report.source and f"{n_records} records" in report.summary()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_round_trip(data_root, name):
    for example in _load(name)[0]:
        again = example_from_dict(json.loads(json.dumps(example.to_dict())))
        assert again == example and again.meta == example.meta


def test_gap_spans(data_root):
    e = _by_id("gap-dev")["gap-dev:development-1"]
    assert (e.source, e.target) == ("her", "Cassidy")           # the head word; the whole name stays in meta
    assert [e.text[s:t] for s, t in e.candidate_spans] == ["Cassidy", "Pauline"]
    assert e.text[slice(*e.meta["mention_spans"]["A"])] == "Cheryl Cassidy"
    assert e.meta["gender"] == "female" and e.meta["split"] == "development" and e.meta["answer"] == "A"
    e = _by_id("gap-dev")["gap-dev:development-2"]
    assert (e.source, e.target, e.meta["gender"]) == ("His", "MacKenzie", "male")
    genders = {e.meta["gender"] for e in _load("gap-test")[0]}
    assert genders == {"male", "female"}


def test_gap_skip_reasons(data_root):
    _, report = _load("gap-dev")
    assert all(r.startswith("line ") for r in report.skipped)
    assert any(r.endswith(": neither A nor B corefers with the pronoun") for r in report.skipped)


def test_winobias_spans(data_root):
    ex = _by_id("winobias")
    e = ex["winobias:pro.type1.dev:1"]
    assert e.text == "The developer argued with the designer because he did not like the design."
    assert (e.source, e.target) == ("he", "developer")
    assert [e.text[s:t] for s, t in e.candidate_spans] == ["developer", "designer"]
    assert e.meta["stereotype"] == "pro" and e.meta["type"] == "1" and e.meta["gender"] == "male"
    anti = ex["winobias:anti.type1.dev:1"]
    assert (anti.source, anti.target, anti.meta["gender"]) == ("she", "developer", "female")
    assert anti.meta["group"] == e.meta["group"]
    e = ex["winobias:pro.type1.dev:2"]  # antecedent second: "... with [the designer] because [her] idea ..."
    assert (e.source, e.target) == ("her", "designer")
    e = ex["winobias:pro.type2.test:3"]  # "notified the [the chief]": duplicated determiner in the data
    assert (e.source, e.target) == ("him", "chief")
    assert [e.text[s:t] for s, t in e.candidate_spans] == ["assistant", "chief"]
    e = ex["winobias:pro.type1.test:275"]  # multi-word occupation
    assert e.target == "worker" and e.source == "him"         # multi-word occupation: its head word
    groups: dict[str, set] = {}
    for e in ex.values():
        groups.setdefault(e.meta["group"], set()).add(e.meta["stereotype"])
    assert all(v == {"pro", "anti"} for v in groups.values()) and len(groups) == 1584


def test_winogender_spans(data_root):
    ex = _by_id("winogender")
    e = ex["winogender:technician.customer.1.male"]
    assert (e.source, e.target) == ("he", "customer")
    assert [e.text[s:t] for s, t in e.candidate_spans] == ["technician", "customer"]
    assert e.meta["group"] == "technician.customer.1" and e.meta["gender"] == "male"
    e = ex["winogender:technician.someone.1.female"]
    assert (e.source, e.target, e.meta["group"]) == ("she", "someone", "technician.customer.1")
    e = ex["winogender:technician.customer.0.neutral"]
    assert (e.source, e.target) == ("they", "technician")
    groups = {e.meta["group"] for e in ex.values()}
    assert len(groups) == 120


def test_wsc_spans(data_root):
    ex = _by_id("wsc273")
    first, second = ex["wsc273:0"], ex["wsc273:1"]
    assert first.text == "The city councilmen refused the demonstrators a permit because they feared violence."
    assert first.source == "they" and first.target in ("councilmen", "city councilmen")
    assert second.source == "they" and second.target == "demonstrators"
    assert first.target_span != second.target_span and first.meta["group"] == second.meta["group"]
    assert (first.meta["answer"], second.meta["answer"]) == ("A", "B")
    trophy = ex["wsc273:2"]
    assert (trophy.source, trophy.target) == ("it", "trophy")
    assert [trophy.text[s:t] for s, t in trophy.candidate_spans] == ["trophy", "suitcase"]
    # pronoun before both answers ("Stretching her back, the woman smiled at the girl.")
    assert (ex["wsc273:232"].source, ex["wsc273:232"].target) == ("her", "woman")
    # punctuation is attached to the last word, not left after a space
    assert ex["wsc273:40"].text.endswith("punished them.")


def test_wsc_groups(data_root):
    ex = _by_id("wsc273")
    group = {int(k.split(":")[1]): e.meta["group"] for k, e in ex.items()}
    assert group[0] == group[1] != group[2] == group[3]
    assert group[250] == group[251]
    assert group[252] == group[253] == group[254] != group[255]   # the George triple
    assert group[255] == group[256] != group[257]
    assert group[267] == group[268] == group[269] == group[270] != group[271] == group[272]


def test_wsc_skip_reasons(data_root):
    _, report = _load("wsc273")
    assert any(r.startswith("schema 108 ") and r.endswith("answer 'The juggler' not found in text")
               for r in report.skipped)
    assert sum("'Kamchatka' not found" in r for r in report.skipped) == 2


def test_blimp_licensor(data_root):
    ex = _by_id("blimp-npi-licensing")
    negated, control = ex["blimp-npi-licensing:0:negated"], ex["blimp-npi-licensing:0:control"]
    assert (negated.source, negated.target, negated.role) == ("not", "ever", "negated")
    assert (control.source, control.target, control.role) == ("probably", "ever", "control")
    assert negated.meta["pair"] == control.meta["pair"] == "blimp-licensor:0"
    assert negated.source_span[0] == control.source_span[0]   # same position in both sentences
    pairs: dict[str, set] = {}
    for e in ex.values():
        pairs.setdefault(e.meta["pair"], set()).add(e.role)
    assert len(pairs) == 1000 and all(v == {"negated", "control"} for v in pairs.values())
    assert {e.target for e in ex.values()} == {"ever"}


def test_blimp_scope(data_root):
    ex = _by_id("blimp-npi-scope")
    good, bad = ex["blimp-npi-scope:0:good"], ex["blimp-npi-scope:0:bad"]
    assert good.text.startswith("The associations that had worried Cynthia have not ever")
    assert (good.source, good.target, good.role) == ("not", "ever", "negated")
    assert good.text[good.source_span[1]:].startswith(" ever")
    assert (bad.source, bad.target, bad.role) == ("not", "worried", "scope-bad")
    assert "pair" not in bad.meta and bad.meta["group"] == good.meta["group"]
    assert not any(e.is_control for e in ex.values())


def test_neg136(data_root):
    e = _by_id("neg136-simp")["neg136-simp:0"]
    assert e.text == "A trout is not a fish."
    assert (e.source, e.target, e.role) == ("not", "a", "negated")
    assert e.meta["target_neg"] == "tool" and e.meta["context_aff"] == "A trout is a"
    assert _by_id("neg136-simp")["neg136-simp:2"].text == "An ant is not an insect."
    nat = _by_id("neg136-nat")
    e = nat["neg136-nat:0"]
    assert e.text == "With proper equipment, scuba-diving isn't very safe."
    assert (e.source, e.target, e.meta["licensing"]) == ("n't", "very", "Y")
    assert e.text[e.source_span[0] - 2:e.source_span[1]] == "isn't"
    assert (nat["neg136-nat:6"].source, nat["neg136-nat:6"].target) == ("not", "be")
    assert sum(e.source == "n't" for e in nat.values()) == 15


def test_condaqa(data_root):
    examples, report = _load("condaqa")
    e = _by_id("condaqa")["condaqa:444"]
    assert (e.source, e.target, e.role) == ("rarely", "serve", "negated")
    assert e.meta["cue"] == "rarely" and e.meta["cue_located_in"] == "original sentence"
    assert sum(r.endswith(": duplicate passage") for r in report.skipped) == 995
    assert any("'unknown' is an affix" in r for r in report.skipped)
    assert len({e.text for e in examples}) == len(examples)
    assert not any(is_affixal_cue(e.meta["cue"]) for e in examples)


def test_affixal_cues():
    for cue in ("unhappy", "unknown", "illegal", "irreversible", "disapprove", "asexual", "inadequate", "careless"):
        assert is_affixal_cue(cue), cue
    for cue in ("not", "no", "never", "none", "nobody", "absence", "avoid", "lack", "could not", "unless",
                "with the exception of", "cannot", "without"):
        assert not is_affixal_cue(cue), cue


def test_limit(data_root):
    examples, report = load_dataset("gap-dev", ROOT, limit=5)
    assert len(examples) == report.n_records == 5
    examples, _ = load_dataset("blimp-negation", ROOT, limit=3)
    assert len(examples) == 3
    with pytest.raises(ExampleError, match="limit"):
        load_dataset("gap-dev", ROOT, limit=0)


def test_unknown_dataset():
    with pytest.raises(ExampleError) as info:
        load_dataset("no-such-set")
    message = str(info.value)
    assert "no-such-set" in message and "gap-dev" in message and "condaqa" in message


def test_missing_data_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ExampleError) as info:
        load_dataset("gap-dev", missing)
    assert str(missing) in str(info.value) and "--data-root" in str(info.value) and DATA_ROOT_ENV in str(info.value)
    with pytest.raises(ExampleError) as info:   # the root exists but the dataset's files do not
        load_dataset("winobias", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "winobias" / "pro_stereotyped_type1.txt.dev") in message and "--data-root" in message


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert default_data_root() == repo.parent / "shared" / "data"
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert default_data_root() == tmp_path


def _copy(data_root: Path, tmp_path: Path, relative: str, edit) -> Path:
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = (data_root / relative).read_bytes().split(b"\n")
    target.write_bytes(b"\n".join(edit(lines)))
    return target


def test_skip_bad_gap(data_root, tmp_path):
    def edit(lines):
        lines = lines[:6]                                     # header + 5 rows
        lines[2] = lines[2].rsplit(b"\t", 1)[0]               # line 3: the URL column is missing
        lines[4] = lines[4].replace(b"\tTRUE\t", b"\tyes\t", 1).replace(b"\tFALSE\t", b"\tno\t", 1)  # line 5
        return lines
    path = _copy(data_root, tmp_path, "gap-coreference/gap-validation.tsv", edit)
    with pytest.raises(ExampleError) as info:
        load_dataset("gap-validation", tmp_path)
    assert f"{path}:3:" in str(info.value) and "columns" in str(info.value)
    examples, report = load_dataset("gap-validation", tmp_path, skip_bad=True)
    assert report.n_skipped + len(examples) == 5
    assert any(r.startswith("line 3: expected 11 tab-separated columns") for r in report.skipped)
    assert any(r.startswith("line 5: ") and "TRUE or FALSE" in r for r in report.skipped)


def test_skip_bad_not_utf8(data_root, tmp_path):
    def edit(lines):
        lines[3] = lines[3].replace(b"ant", b"\xe9ant")                      # line 4: Latin-1, not UTF-8
        return lines
    path = _copy(data_root, tmp_path, "neg-136/NEG-136-SIMP.tsv", edit)
    with pytest.raises(ExampleError) as info:
        load_dataset("neg136-simp", tmp_path)
    assert f"{path}:4:" in str(info.value) and "UTF-8" in str(info.value)
    examples, report = load_dataset("neg136-simp", tmp_path, skip_bad=True)
    assert len(examples) == 17 and report.n_skipped == 1
    assert report.skipped[0].startswith("line 4: the line is not UTF-8")


def test_skip_bad_jsonl(data_root, tmp_path):
    def edit(lines):
        lines = lines[:4]
        lines[1] = lines[1][:40]                                           # line 2: truncated JSON
        lines[2] = lines[2].replace(b'"sentence_bad"', b'"sentence_worse"')  # line 3: missing field
        return lines
    path = _copy(data_root, tmp_path, "blimp-negation/sentential_negation_npi_licensor_present.jsonl", edit)
    with pytest.raises(ExampleError, match=rf"{path}:2: malformed JSON"):
        load_dataset("blimp-negation", tmp_path)
    examples, report = load_dataset("blimp-negation", tmp_path, skip_bad=True)
    assert len(examples) == 4 and report.n_skipped == 2
    assert report.skipped[1] == "line 3: missing field(s) sentence_bad"


def test_unusable_rows_skipped_in_both_modes(data_root, tmp_path):
    shutil.copytree(data_root / "gap-coreference", tmp_path / "gap-coreference")
    for skip_bad in (False, True):
        examples, report = load_dataset("gap-validation", tmp_path, skip_bad=skip_bad)
        assert (len(examples), report.n_skipped) == EXPECTED["gap-validation"][:2]


def _twins(name: str) -> dict[str, list]:
    twins: dict[str, list] = {}
    for e in _load(name)[0]:
        if e.meta.get("twin"):
            twins.setdefault(e.meta["twin"], []).append(e)
    return twins


def test_twins_pair_up_one_clean_one_corrupt(data_root):
    counts = {name: len(_twins(name)) for name in ("winobias", "winogender", "wsc273", "blimp-npi-licensing")}
    assert counts == {"winobias": 1582, "winogender": 360, "wsc273": 131, "blimp-npi-licensing": 1000}
    for name in counts:
        for members in _twins(name).values():
            assert sorted(e.meta["twin_role"] for e in members) == ["clean", "corrupt"], name
    for members in _twins("winobias").values():          # pro is clean, same frame, the pronoun flips gender
        clean, corrupt = sorted(members, key=lambda e: e.meta["twin_role"])
        assert (clean.meta["stereotype"], corrupt.meta["stereotype"]) == ("pro", "anti")
        assert clean.meta["type"] == corrupt.meta["type"] in ("1", "2")
        assert clean.meta["group"] == corrupt.meta["group"] and clean.target == corrupt.target
    for members in _twins("winogender").values():        # same pronoun, the two answers
        assert {e.meta["answer"] for e in members} == {"occupation", "participant"}
        assert len({e.meta["gender"] for e in members}) == 1 and len({e.meta["participant"] for e in members}) == 1
    for members in _twins("wsc273").values():            # same schema pair, the other answer
        assert members[0].meta["group"] == members[1].meta["group"]
        assert {e.meta["answer"] for e in members} == {"A", "B"}
    ex = _by_id("wsc273")
    assert "twin" not in ex["wsc273:252"].meta           # the George triple is no minimal pair


def test_agreement_never_decides_winobias_and_winogender(data_root):
    for name in ("winobias", "winogender"):
        assert all(e.meta["agreement_decides"] is False for e in _load(name)[0])


def test_old_blimp_name_is_an_alias(data_root):
    old, _ = load_dataset("blimp-negation", ROOT, limit=4)
    new, _ = load_dataset("blimp-npi-licensing", ROOT, limit=4)
    assert [e.to_dict() for e in old] == [e.to_dict() for e in new]
    assert "NPI licensing" in DATASETS["blimp-negation"].description


# ---- Mention head words ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mention, head", [
    ("a sack of potatoes", "sack"), ("the man who left early", "man"), ("Smith, the baker", "Smith"),
    ("Tina's", "Tina"), ("James'", "James"), ("C*rdoba", "C*rdoba"), ("Jos* Mar*a", "Mar*a"),
    ("John Smith", "Smith"), ("Edward I of England", "Edward"), ("Adie (**", "Adie"),
    ("Emma of Waldeck and Pyrmont", "Emma"), ("O'Neal", "O'Neal"), ("Graeme Dott.", "Dott"), ("Anna", "Anna")])
def test_mention_head_words(mention, head):
    from probing.examples.loaders import mention_head
    text = f"Yesterday {mention} came."
    span, reason = mention_head(text, (10, 10 + len(mention)))
    assert reason == "" and text[span[0]:span[1]] == head


@pytest.mark.parametrize("mention, reason", [
    ("Sam and Amy", "coordination"), ("Jack *", "non-word"), ("William P", "single piece"), ("J.R.", "single piece")])
def test_mentions_without_a_usable_head_are_refused_with_the_reason(mention, reason):
    from probing.examples.loaders import mention_head
    span, why = mention_head(mention, (0, len(mention)))
    assert span is None and reason in why


def test_gap_spans_are_head_words_and_skipped_mentions_say_why(data_root):
    examples, report = _load("gap-dev")
    for e in examples:
        full = e.meta["mention_spans"]
        for (start, end), label in zip(e.candidate_spans, ("A", "B")):
            assert full[label][0] <= start < end <= full[label][1]
            assert any(ch.isalnum() for ch in e.text[start:end]) and e.text[start:end] != "s"
    head_skips = [s for s in report.skipped if "mention skipped" in s]
    assert len(head_skips) == 5 and any("coordination 'David and Lisa'" in s for s in head_skips)


def test_a_missing_dataset_says_where_to_get_it(tmp_path):
    """GAP (and every other real dataset) missing: the error names its public source and where it goes."""
    from probing.examples import load_examples
    with pytest.raises(ExampleError, match=r"gap-coreference \(Apache-2\.0\), as gap-coreference/gap-development\.tsv"):
        load_examples("gap-dev", data_root=tmp_path)
    with pytest.raises(ExampleError, match="github.com/google-research-datasets/gap-coreference"):
        load_examples("gap-dev", data_root=tmp_path / "absent")
