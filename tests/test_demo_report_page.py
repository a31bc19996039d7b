"""The Probing report tab's backend: findings in words first, a compact download without internal files."""
import json
import zipfile

from probing.demo.report_page import findings_markdown, heads_finding, is_internal, report_downloads, report_files


def _summary(relation, significant, units=40, **top):
    """A summary.json as `analysis heads` writes it (one task)."""
    baselines = ({"nearest_candidate_accuracy": 0.4456} if relation == "coreference"
                 else {"next_word_baseline_mean_over_heads": 0.07})
    ranked_by = next(k for k in ("accuracy", "paired_difference", "above_baseline") if k in top)
    return {"data": "toy", "relation": relation, "direction": "x->y", "layers": 2, "heads": 3, "n_examples": 10,
            "ranked_by": ranked_by, "resampling_unit": "meta.group", "n_units": units, "primary_task": "t",
            "n_significant_heads_fwer": significant, "baselines": baselines,
            "top_heads": [{"layer": 1, "head": 2, **top}]}


def test_findings_give_the_best_head_its_ci_baseline_and_corrected_count():
    coref = heads_finding(_summary("coreference", 4, accuracy=0.874, accuracy_ci_low=0.833, accuracy_ci_high=0.912))
    assert "head 1-2" in coref and "87% of sentences (95% CI 83%–91%)" in coref
    assert "nearest the pronoun does 45%" in coref and "4 of 6 heads beat" in coref
    negation = heads_finding(_summary("negation", 0, above_baseline=0.159, above_baseline_ci_low=-0.01,
                                      above_baseline_ci_high=0.19))
    assert "by 0.159" in negation and "-0.010 to 0.190" in negation
    assert "no head beats their next-word baseline after correction over all heads (a null result)" in negation
    paired = heads_finding(_summary("negation", 2, paired_difference=0.16, paired_difference_ci_low=0.12,
                                    paired_difference_ci_high=0.2))
    assert "more than from a control adverb in the same place by 0.160" in paired and "2 of 6 heads beat" in paired
    few = heads_finding(_summary("coreference", 3, units=12, accuracy=0.9, accuracy_ci_low=0.8, accuracy_ci_high=1.0))
    assert "only 12 independent units, too few to claim anything" in few and "heads beat" not in few
    assert heads_finding({"relation": "coreference"}) is None


def _report(tmp_path):
    folder = tmp_path / "toy"
    for data, relation in (("builtin-negation", "negation"), ("builtin-coref", "coreference")):
        (folder / "heads" / data).mkdir(parents=True)
        top = ({"accuracy": 0.5, "accuracy_ci_low": 0.4, "accuracy_ci_high": 0.6} if relation == "coreference"
               else {"above_baseline": 0.1, "above_baseline_ci_low": 0.05, "above_baseline_ci_high": 0.15})
        (folder / "heads" / data / "summary.json").write_text(json.dumps({**_summary(relation, 1, **top), "data": data}))
        (folder / "heads" / data / "heads.csv").write_text("layer,head\n0,0\n")
        (folder / "heads" / data / ".done.json").write_text("{}")
    (folder / "report.md").write_text("# report")
    (folder / "summary.json").write_text("{}")
    (folder / "ablation").mkdir()
    (folder / "ablation" / "ablation.csv.tmp").write_text("partial")
    return folder


def test_the_primary_evidence_comes_first_and_other_parts_are_named(tmp_path):
    folder = _report(tmp_path)
    (folder / "heads" / "gap-dev").mkdir()
    (folder / "heads" / "gap-dev" / "summary.json").write_text(json.dumps(
        {**_summary("coreference", 1, accuracy=0.7, accuracy_ci_low=0.6, accuracy_ci_high=0.8), "data": "gap-dev"}))
    text = findings_markdown(folder, "toy")
    # GAP first; the agreement-solvable built-in coreference set last, after the paired negation set
    assert text.index("gap-dev") < text.index("builtin-negation") < text.index("builtin-coref")
    assert "ablations of the top heads" in text and "probes" not in text
    assert findings_markdown(tmp_path / "missing", "toy") == "No head scores for **toy** in this report yet."


def test_downloads_are_one_archive_plus_main_files_and_never_internal_ones(tmp_path):
    folder = _report(tmp_path)
    downloads = report_downloads(folder, tmp_path / "out", "toy")
    names = [d.rsplit("/", 1)[1] for d in downloads]
    assert names == ["toy-report.zip", "toy-builtin-coref-heads.csv", "toy-builtin-negation-heads.csv",
                     "toy-summary.json"]
    archived = zipfile.ZipFile(downloads[0]).namelist()
    assert sorted(archived) == sorted(f"toy-report/{p.relative_to(folder).as_posix()}" for p in report_files(folder))
    assert len(archived) == 6 and not any(".done" in a or a.endswith(".tmp") for a in archived)
    assert is_internal(folder / ".done.json") and not is_internal(folder / "heads.csv")


def test_the_committed_minilm_report_has_findings_and_a_clean_archive(tmp_path):
    from probing.demo.backend import REPORTS_DIR
    folder = REPORTS_DIR / "minilm"
    text = findings_markdown(folder, "minilm")
    assert "**builtin-coref** (346 examples" in text and "head 1-3" in text
    archive = report_downloads(folder, tmp_path, "minilm")[0]
    names = zipfile.ZipFile(archive).namelist()
    assert any(n.endswith("heads/builtin-coref/heads.csv") for n in names)
    assert not any("/." in n or n.endswith(".done.json") for n in names)


def test_patching_findings_put_the_gate_first_and_name_heads_only_when_it_passes(tmp_path):
    from probing.demo.report_page import patching_finding
    base = {"data": "toy-pairs", "n_pairs": 40, "relation": "negation", "n_layers": 2, "n_heads": 2,
            "top": {"noising": [[1, 0, 0.3], [0, 1, 0.1]]}, "named": {"noising": [[1, 0]]},
            "correlation": {"noising": {"spearman": -0.4, "ci_low": -0.6, "ci_high": -0.1}}}
    passed = patching_finding({**base, "control": {"n_pairs": 40},
                               "gate": {"passed": True, "clean_minus_corrupt": 2.0, "ci": [1.5, 2.5],
                                        "relation_minus_control": 0.9, "relation_minus_control_ci": [0.7, 1.1]}})
    assert "head 1-0 (0.300" in passed and "1 heads have a single-head effect beyond chance and beyond " \
        "their effect on the relation-free control" in passed and "tend to matter less" in passed and "+0.700 to +1.100" in passed
    # an LM readout has no control pairs: the sentence does not claim one
    no_control = patching_finding({**base, "gate": {"passed": True, "clean_minus_corrupt": 1.0, "ci": [0.2, 1.8]}})
    assert "control" not in no_control and "1 heads have a single-head effect beyond chance after " \
        "correction" in no_control
    failed = patching_finding({**base, "named": {"noising": []},
                               "gate": {"passed": False, "measure": "substitution preference: cos ...",
                                        "clean_minus_corrupt": 0.0001, "ci": [-0.001, 0.001]}})
    assert "fails the behaviour test first (substitution preference: 0.0001" in failed
    assert "no head is named (a null result)" in failed and "is not a finding" in failed and "Spearman" not in failed
    assert patching_finding({"gate": {}}) is None
    folder = tmp_path / "report"
    (folder / "patching" / "toy-pairs").mkdir(parents=True)
    (folder / "patching" / "toy-pairs" / "summary.json").write_text(json.dumps(
        {**base, "gate": {"passed": True, "clean_minus_corrupt": 1.0, "ci": [0.2, 1.8]}}))
    assert "- Patching, **toy-pairs**" in findings_markdown(folder, "toy")


def test_downloads_are_plain_links_with_escaped_names(tmp_path):
    from probing.demo.report_page import downloads_html
    odd = tmp_path / 'a "quoted" <name>.csv'
    odd.write_text("task,layer\n")
    page = downloads_html([str(odd)])
    assert page.count("<a ") == 1 and 'href="gradio_api/file=' in page and "<name>" not in page
    assert "&lt;name&gt;" in page and "(11 B)" in page and "Remove" not in page
    assert downloads_html([]) == ""


def test_the_report_tab_shows_the_findings_page_without_file_links():
    from probing.demo.backend import REPORTS_DIR
    from probing.demo.report_page import findings_page
    from probing.report.findings import findings_markdown
    page = findings_page(REPORTS_DIR)
    assert "### 1. Where the heads look" in page and "Held-out confirmation" in page
    assert "](" not in page and "<!--" not in page and not page.startswith("# ")
    # the same tables as the committed page: only links, the comment and heading levels differ
    assert [line for line in page.splitlines() if line.startswith("|")] == \
        [line for line in findings_markdown(REPORTS_DIR).splitlines() if line.startswith("|")]


def test_a_report_the_findings_page_cannot_read_is_said_in_words(tmp_path):
    from probing.demo.report_page import findings_page
    model = tmp_path / "<toy>"
    (model / "heads" / "builtin-negation").mkdir(parents=True)
    (model / "summary.json").write_text("{}")
    (model / "heads" / "builtin-negation" / "summary.json").write_text("{}")
    (model / "heads" / "builtin-negation" / ".done.json").write_text("{}")
    page = findings_page(tmp_path)
    assert page.startswith("The findings page could not be made from the reports here:")
    assert "'relation'" in page or "&#x27;relation&#x27;" in page
    assert "<toy>" not in page and "&lt;toy&gt;" in page          # a path reaching the page is escaped
    assert findings_page(tmp_path / "missing").startswith("The findings page could not be made")
