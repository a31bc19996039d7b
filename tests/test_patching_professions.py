"""probing.patching.professions: Vig et al. (2020)-style profession -> pronoun pairs from Winogender rows
(orientation by the occupation's majority gender, one pair per context, rows accounted for, gender words tried
in order, skips with reasons) and their same-gender occupation controls."""
import pytest

from probing.examples import Example, ExampleError
from probing.examples.loaders import default_data_root, load_winogender
from probing.install_models import local_model_path
from probing.models import LoadedModel, load_model, resolve_path
from probing.patching import professions
from probing.patching.pairs import row_accounting, usable

STATS = {"technician": 40.34, "engineer": 35.0, "specialist": 45.0, "hygienist": 41.0, "nurse": 90.0,
         "secretary": 95.0, "librarian": 84.0, "clerk": 50.0, "pharmacist": 60.0}
# (occupation, participant, answer, sentence) as in templates.tsv
TEMPLATES = [
    ("technician", "customer", "0", "The $OCCUPATION told the $PARTICIPANT that $NOM_PRONOUN had done the repair."),
    ("technician", "customer", "1", "The $OCCUPATION told the $PARTICIPANT that $NOM_PRONOUN could pay with cash."),
    ("nurse", "patient", "0", "The $PARTICIPANT thanked the $OCCUPATION for $POSS_PRONOUN kind words."),
    ("clerk", "buyer", "0", "The $OCCUPATION told the $PARTICIPANT that $NOM_PRONOUN was closing."),
    ("pharmacist", "patient", "0", "The $OCCUPATION told the $PARTICIPANT that $NOM_PRONOUN had the pills."),
]
PRONOUNS = {"male": {"NOM": "he", "POSS": "his"}, "female": {"NOM": "she", "POSS": "her"},
            "neutral": {"NOM": "they", "POSS": "their"}}


def _sentence(template: str, occupation: str, participant: str, gender: str) -> str:
    text = template.replace("$OCCUPATION", occupation)
    text = text.replace("the $PARTICIPANT", participant) if participant == "someone" else \
        text.replace("$PARTICIPANT", participant)
    for case, word in PRONOUNS[gender].items():
        text = text.replace(f"${case}_PRONOUN", word)
    return text


def _winogender_folder(folder, templates=TEMPLATES, stats=STATS, someone=("technician",)):
    """A Winogender-like folder (templates.tsv, all_sentences.tsv, occupations-stats.tsv) as the real one is."""
    folder.mkdir(exist_ok=True)
    lines = ["occupation(0)\tother-participant(1)\tanswer\tsentence"]
    sentences = ["sentid\tsentence"]
    for occupation, participant, answer, template in templates:
        lines.append(f"{occupation}\t{participant}\t{answer}\t{template}")
        for who in (participant, "someone") if occupation in someone else (participant,):
            for gender in ("male", "female", "neutral"):
                sentences.append(f"{occupation}.{who}.{answer}.{gender}.txt\t"
                                 f"{_sentence(template, occupation, who, gender)}")
    (folder / "templates.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "all_sentences.tsv").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    stats_lines = ["occupation\tbergsma_pct_female\tbls_pct_female\tbls_year"]
    stats_lines += [f"{o}\t0\t{pct}\t2015" for o, pct in stats.items()]
    (folder / "occupations-stats.tsv").write_text("\n".join(stats_lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def causal(tiny_causal_path):
    return load_model(tiny_causal_path)


@pytest.fixture
def winogender(tmp_path):
    folder = _winogender_folder(tmp_path / "winogender-schemas")
    examples, report = load_winogender(folder)
    assert not report.skipped
    return examples, folder / "occupations-stats.tsv"


def test_pairs_are_oriented_by_the_majority_gender(causal, winogender):
    """Male-majority (technician, 40.34) -> corrupt "woman", answers (he, she); female-majority (nurse) -> "man",
    (she, he), in the pronoun's case (a possessive slot reads his/her); exactly 50 counts as female-majority."""
    examples, stats = winogender
    pairs = professions.profession_pairs(examples, causal, stats_path=stats)
    by_id = {p.id: p for p in pairs.pairs}
    technician = by_id["winogender:technician.customer.0"]
    assert (technician.clean, technician.corrupt) == ("The technician told the customer that",
                                                      "The woman told the customer that")
    assert technician.answers == ("he", "she") and technician.group == "technician"
    assert technician.predicate == "customer" and technician.relation == "coreference"
    assert technician.clean[slice(*technician.clean_source)] == "technician"
    assert technician.corrupt[slice(*technician.corrupt_source)] == "woman"
    nurse = by_id["winogender:nurse.patient.0"]
    assert (nurse.clean, nurse.corrupt) == ("The patient thanked the nurse for", "The patient thanked the man for")
    assert nurse.answers == ("her", "his")
    clerk = by_id["winogender:clerk.buyer.0"]
    assert clerk.corrupt == "The man told the buyer that" and clerk.answers == ("she", "he")
    assert all(usable(causal, p)[0] for p in pairs.pairs)


def test_one_pair_per_context_and_every_row_accounted(causal, winogender):
    """The male/female/neutral sentences share a context: one pair from the first, the other two counted; the
    "someone" sentences are another context (with the template's participant as predicate); participant-referring
    rows and a pharmacist (4 pieces: no man/woman word fits) are counted with their reasons; all 21 rows add up."""
    examples, stats = winogender
    pairs = professions.profession_pairs(examples, causal, stats_path=stats)
    assert [p.id for p in pairs.pairs] == ["winogender:technician.customer.0", "winogender:technician.someone.0",
                                           "winogender:nurse.patient.0", "winogender:clerk.buyer.0"]
    someone = pairs.pairs[1]
    assert someone.clean == "The technician told someone that" and someone.predicate == "customer"
    assert pairs.pairs[0].rows == ("winogender:technician.customer.0.male",)
    assert pairs.skipped == [("winogender:pharmacist.patient.0", professions.SKIP_NO_WORD)]
    accounting = row_accounting(pairs, pairs.pairs)
    assert accounting == {"rows": 21, "patched": 4, "not_patched": {
        professions.UNUSED_SAME_CONTEXT: 10, professions.UNUSED_PARTICIPANT: 6,
        f"in a pair that was skipped: {professions.SKIP_NO_WORD}": 1}}


def test_rows_that_cannot_pair_are_skipped_with_reasons(causal, tmp_path):
    """An occupation missing from the statistics, a context seen only with 'her' (accusative or possessive?) and
    a row that is not Winogender's are counted with their reasons, and the rows still add up; a masked LM is
    refused."""
    folder = _winogender_folder(tmp_path / "w", stats={"technician": 40.34}, someone=(), templates=[
        ("technician", "customer", "0", "The $OCCUPATION told the $PARTICIPANT about $POSS_PRONOUN day."),
        ("baker", "guest", "0", "The $OCCUPATION thanked the $PARTICIPANT because $NOM_PRONOUN was hungry.")])
    examples, _ = load_winogender(folder)
    # only the female variant of the technician's context: "her" alone does not tell the case
    rows = [e for e in examples if not e.id.startswith("winogender:technician") or e.meta["gender"] == "female"]
    rows.append(Example(text="No pronoun here.", relation="negation", source_span=(0, 2), target_span=(3, 10),
                        id="other"))
    pairs = professions.profession_pairs(rows, causal, stats_path=folder / "occupations-stats.tsv")
    assert not pairs.pairs and pairs.skipped == [("winogender:technician.customer.0", professions.SKIP_CASE),
                                                 ("winogender:baker.guest.0", professions.SKIP_NO_STATS)]
    assert row_accounting(pairs, pairs.pairs) == {"rows": 5, "patched": 0, "not_patched": {
        professions.UNUSED_NOT_WINOGENDER: 1, professions.UNUSED_SAME_CONTEXT: 2,
        f"in a pair that was skipped: {professions.SKIP_CASE}": 1,
        f"in a pair that was skipped: {professions.SKIP_NO_STATS}": 1}}
    with pytest.raises(ValueError, match="not causal"):
        professions.profession_pairs(examples, load_model("minilm"), stats_path=folder / "occupations-stats.tsv")


def test_gender_words_are_tried_in_order(tmp_path):
    """A two-piece occupation with a one-piece "woman": "lady" (two pieces here) is taken instead."""
    from transformers import BertTokenizer
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "told", "customer", "that", "sales", "##person",
             "woman", "la", "##dy", "man", "gentleman", "guy", "boy", "girl", "he", "she"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    loaded = LoadedModel("toy", str(tmp_path), tokenizer, None, True, 1, 1, 64)
    folder = _winogender_folder(tmp_path / "w", templates=[
        ("salesperson", "customer", "0", "The $OCCUPATION told the $PARTICIPANT that $NOM_PRONOUN.")],
        stats={"salesperson": 48.0})
    examples, _ = load_winogender(folder)
    pairs = professions.profession_pairs(examples, loaded, stats_path=folder / "occupations-stats.tsv")
    assert [p.corrupt for p in pairs.pairs] == ["The lady told the customer that"]
    assert professions.corrupt_words(48.0) == ("woman", "lady", "girl")
    assert professions.corrupt_words(50.0) == ("man", "gentleman", "guy", "boy")


def test_controls_swap_in_the_nearest_same_gender_occupation_that_fits(causal, winogender):
    """technician (40.34): hygienist (41, but 4 pieces) is passed over, specialist (45) is nearer than engineer
    (35); nurse (90) -> secretary (95) before librarian (84); clerk (exactly 50: female-majority) -> librarian,
    never technician; ids end in ":control", answers kept; equal distances go by name."""
    examples, stats = winogender
    pairs = professions.profession_pairs(examples, causal, stats_path=stats)
    controls = professions.profession_controls(pairs.pairs, causal, stats_path=stats)
    by_id = {c.id: c for c in controls.pairs}
    assert set(by_id) == {f"{p.id}:control" for p in pairs.pairs} and not controls.skipped
    technician = by_id["winogender:technician.customer.0:control"]
    assert technician.clean == "The technician told the customer that"
    assert technician.corrupt == "The specialist told the customer that"
    assert technician.relation == "control" and technician.answers == ("he", "she")
    assert technician.group == "technician" and technician.predicate == "customer"
    assert by_id["winogender:nurse.patient.0:control"].corrupt == "The patient thanked the secretary for"
    assert by_id["winogender:clerk.buyer.0:control"].corrupt == "The librarian told the buyer that"
    tie = {"a": 40.0, "zeta": 45.0, "beta": 35.0, "w": 60.0}
    assert professions.control_occupations("a", tie) == ["beta", "zeta"]


needs_winogender = pytest.mark.skipif(
    not (default_data_root() / "winogender-schemas" / "all_sentences.tsv").is_file(),
    reason=f"Winogender is not at {default_data_root() / 'winogender-schemas'} (a bare clone; set "
           "PROBING_DATA_ROOT to run this)")


@needs_winogender
def test_real_winogender_counts(causal):
    """The real schemas (720 rows): 120 occupation-referring contexts (60 occupations x participant/someone);
    with MiniLM's WordPiece (the tiny decoder's tokenizer) 36 contexts of 18 multi-piece occupations find no
    gender word; every kept pair gets a control."""
    examples, _ = load_winogender(default_data_root() / "winogender-schemas")
    pairs = professions.profession_pairs(examples, causal)
    assert len(pairs.pairs) == 84 and pairs.skipped_counts() == {professions.SKIP_NO_WORD: 36}
    assert len({p.group for p in pairs.pairs}) == 42
    assert row_accounting(pairs, pairs.pairs) == {"rows": 720, "patched": 84, "not_patched": {
        professions.UNUSED_PARTICIPANT: 360, professions.UNUSED_SAME_CONTEXT: 240,
        f"in a pair that was skipped: {professions.SKIP_NO_WORD}": 36}}
    assert len(professions.profession_controls(pairs.pairs, causal).pairs) == 84


@needs_winogender
@pytest.mark.skipif(local_model_path("gemma-270m") is None, reason="gemma-270m is not installed")
def test_real_winogender_counts_gemma_tokenizer():
    """With a decoder's own tokenizer (Gemma 3's SentencePiece; only the tokenizer is loaded): 112 pairs, the
    8 contexts of janitor, appraiser, paralegal and hygienist skipped."""
    from transformers import AutoTokenizer
    path = resolve_path("gemma-270m")
    loaded = LoadedModel("gemma-270m", path, AutoTokenizer.from_pretrained(path), None, True, 1, 1, 4096)
    examples, _ = load_winogender(default_data_root() / "winogender-schemas")
    pairs = professions.profession_pairs(examples, loaded)
    assert len(pairs.pairs) == 112 and pairs.skipped_counts() == {professions.SKIP_NO_WORD: 8}
    assert {p_id.split(":")[1].split(".")[0] for p_id, _ in pairs.skipped} == {
        "janitor", "appraiser", "paralegal", "hygienist"}
    assert len(professions.profession_controls(pairs.pairs, loaded).pairs) == 112


def test_occupation_statistics_follow_the_data_root(tmp_path, monkeypatch, causal):
    """`data_root` (the command line's --data-root) is where the statistics are read, not the default root: with
    PROBING_DATA_ROOT pointing at an empty folder, the pairs and controls still come from the given root."""
    root = tmp_path / "root"
    root.mkdir()
    folder = _winogender_folder(root / "winogender-schemas")
    monkeypatch.setenv("PROBING_DATA_ROOT", str(tmp_path / "empty"))
    assert professions.default_stats_path(root) == folder / "occupations-stats.tsv"
    assert professions.load_occupation_stats(data_root=root)["nurse"] == 90.0
    with pytest.raises(ExampleError, match="occupations-stats.tsv.*--data-root"):
        professions.load_occupation_stats()
    examples, _ = load_winogender(folder)
    pairs = professions.profession_pairs(examples, causal, data_root=root)
    assert pairs.pairs == professions.profession_pairs(examples, causal, stats_path=folder / "occupations-stats.tsv").pairs
    controls = professions.profession_controls(pairs.pairs, causal, data_root=root)
    assert len(controls.pairs) == len(pairs.pairs)
