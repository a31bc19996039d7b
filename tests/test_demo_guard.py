"""The demo backend's hardening (`probing.demo.backend`, `probing.demo.guard`), called directly: fields checked before
anything else, one forward pass per analysis, bounded failure memory, background loads, one global limit on
forward passes, a per-session queue cap, the private download folder, and only complete report folders."""
import asyncio
import os
import re
import stat
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from probing.demo import backend as demo, guard as demo_guard
from probing.demo.guard import DemoError, ModelGate
from probing.examples import find_span
from probing.heads import score_examples
from probing.models import ModelLoadError
from probing.report.outputs import mark_complete

COREF = "The doctor called the nurse because she was late."


@pytest.mark.parametrize("field, value, message", [
    ("source", ["she"], r"The source word must be text, got list"),
    ("target", 3, r"The target word must be text, got int"),
    ("model", {"a": 1}, r"The model name must be text, got dict"),
    ("text", 12.5, r"The text must be text, got float"),
    ("source", "a" + " " * 100_000 + "a", r"The source word has 100,002 characters; the limit here is 200"),
    ("source", "1" * 5000 + ":2", r"The source word has 5,002 characters"),
    ("source", "1" * 150 + ":3", r"more than 9 digits"),
    ("text", "The doctor \ud800 called her.", r"lone surrogate"),
    ("relation", ["negation"], r"The relation must be text, got list"),
])
def test_every_field_is_checked_before_any_regex_or_model(field, value, message):
    args = {"text": COREF, "relation": "coreference", "source": "she", "target": "nurse", "model": None}
    args[field] = value
    with pytest.raises(DemoError, match=message):
        demo.analyse(args["text"], args["relation"], args["source"], args["target"], args["model"])


def test_word_and_offsets_parse_without_backtracking():
    from probing.demo.explore import parse_labelled, parse_offsets, resolve_word
    assert parse_labelled("she (36:39)", "source") == ("she", (36, 39))
    assert parse_labelled("a" + " " * 50_000 + "a", "source") is None     # linear: returns at once
    assert parse_offsets(" 3 : 7 ", "x") == (3, 7) and parse_offsets("3:x", "x") is None
    assert parse_offsets("²:3", "x") is None                              # a Unicode digit is not a number
    assert resolve_word(COREF, "she (36:39)", "source") == (36, 39)


def test_messages_quote_user_text_short_and_pages_show_it_inert():
    assert demo_guard.shown("x" * 10_000).endswith("… (10,000 characters)") and len(demo_guard.shown("x" * 10_000)) < 100
    import app
    message = app._problem(DemoError("The source word '![t](http://evil.invalid/track.png) [x](http://a.b)' is bad"))
    assert not re.search(r"(?<!\\)\]\(", message) and "<img" not in message
    assert "\\!\\[t\\]\\(http" in message


def test_one_analysis_makes_one_forward_pass_and_equals_the_library(minilm):
    calls = []
    # The model object the demo holds (its gate may have loaded its own copy after other tests cleared caches).
    handle = demo.get_model(None).model.register_forward_hook(lambda *a: calls.append(1))
    try:
        analysis = demo.analyse(COREF, "coreference", "she", "nurse", None)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert analysis.view.html.startswith('<iframe sandbox="allow-scripts" ')
    assert f"&quot;layer&quot;:{analysis.best_layer}," in analysis.view.html
    from probing.examples import Example
    example = Example(text=COREF, relation="coreference", source_span=find_span(COREF, "she"),
                      target_span=find_span(COREF, "nurse"))
    scores, _ = score_examples(minilm, [example])
    # The demo reads the full pattern of its one pass (eager); the library's default is the fused reads,
    # which agree with eager to float32 rounding (the contract is 1e-5).
    np.testing.assert_allclose(analysis.scores.attention, scores.attention[0], rtol=0, atol=1e-5)


def test_two_word_negation_has_no_baseline_and_does_not_crash():
    analysis = demo.analyse("not bad", "negation", "", "", None)
    assert analysis.scores.target == "bad" and len(analysis.top_table) == 8
    assert analysis.top_table["selectivity"].isna().all()      # no other adjacent pair: no baseline, shown empty


def test_model_gate_answers_loading_instead_of_holding_a_worker():
    release = threading.Event()

    def slow_loader(name):
        release.wait(30)
        return SimpleNamespace(name=name)

    gate = ModelGate(loader=slow_loader, cached=lambda: [], wait_s=0.0)
    with pytest.raises(DemoError, match=r"still loading; try again in a moment"):
        gate.get("slow-model")                       # the starter, with no patience
    gate.wait_s = 30
    with pytest.raises(DemoError, match=r"still loading; try again in a moment"):
        gate.get("slow-model")                       # another request: answered at once, not held
    release.set()
    gate._loading.get("slow-model") and gate._loading["slow-model"].join(10)
    gate.wait_s = 5
    assert gate.get("slow-model").name == "slow-model"


def test_model_gate_failure_memory_is_bounded():
    def failing(name):
        raise ModelLoadError(f"cannot load model {name!r}")

    gate = ModelGate(loader=failing, cached=lambda: [], wait_s=5, max_remembered=8)
    for i in range(30):
        with pytest.raises(DemoError, match=rf"cannot load model 'm{i}'"):
            gate.get(f"m{i}")
    assert len(gate.failed) == 8 and list(gate.failed)[-1] == "m29"
    assert not gate._loading


def test_forward_passes_share_one_global_limit(minilm, monkeypatch):
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(demo_guard, "FORWARD_SLOTS", slots)
    slots.acquire()                                   # the only slot is busy
    done = threading.Event()
    worker = threading.Thread(target=lambda: (demo.forward(minilm, COREF), done.set()))
    worker.start()
    assert not done.wait(1.0)                         # waits for the slot (never runs past the limit)
    slots.release()
    worker.join(60)
    assert done.is_set()


class _Event:
    def __init__(self, session_hash):
        self.session_hash = session_hash


def test_one_session_cannot_fill_the_queue():
    queue = SimpleNamespace(event_queue_per_concurrency_id={"model": SimpleNamespace(queue=[])})

    async def push(body, request, username):
        queue.event_queue_per_concurrency_id["model"].queue.append(_Event(body.session_hash))
        return True, "id", "success"

    queue.push = push
    demo_guard.cap_waiting_per_session(queue, limit=4)
    answers = [asyncio.run(queue.push(SimpleNamespace(session_hash="greedy"), None, None)) for _ in range(10)]
    assert [a[2] for a in answers] == ["success"] * 4 + ["queue_full"] * 6
    assert "4 requests waiting" in answers[-1][1]
    assert asyncio.run(queue.push(SimpleNamespace(session_hash="someone-else"), None, None))[2] == "success"


def test_download_folder_is_private_and_refuses_symlinks(tmp_path, monkeypatch):
    import tempfile
    root = demo.downloads_dir()
    assert root.parent == __import__("pathlib").Path(tempfile.gettempdir()) and root.name != "probing-downloads"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and root.stat().st_uid == os.getuid()
    report = tmp_path / "report" / "heads" / "builtin-coref"
    report.mkdir(parents=True)
    (report / "heads.csv").write_text("layer,head\n")
    (report / "link.csv").symlink_to("/etc/passwd")
    from probing.demo.report_page import report_files as offered
    assert [p.name for p in offered(tmp_path / "report")] == ["heads.csv"]     # the link is never offered


def test_report_cache_trusts_only_complete_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "REPORTS_DIR", tmp_path / "reports")
    monkeypatch.setattr(demo, "CACHE_DIR", tmp_path / "cache")
    folder = tmp_path / "cache" / "minilm" / "heads" / "builtin-coref"
    folder.mkdir(parents=True)
    (folder / "heads.csv").write_text("layer,head,accuracy,mean_attention,nearest_candidate_accuracy\n0,0,0.5,0.1,0.2\n")
    assert demo.dataset_table("minilm", "coreference") is None           # a killed run's file: not trusted
    with pytest.raises(DemoError, match="No dataset-level report"):
        demo.report_files("minilm", compute=False)
    mark_complete(folder, ["heads.csv"])
    assert demo.dataset_table("minilm", "coreference")["accuracy"].tolist() == [0.5]


def test_policy_lives_in_the_demo_not_the_loader():
    import probing.models as models
    for name in ("allowed_models", "check_model_allowed", "HUB_ALLOW_LIST", "ALLOW_ANY_ENV", "ALLOWED_ENV"):
        assert not hasattr(models, name) and hasattr(demo_guard, name)
    source = open(demo.__file__).read() + open(demo_guard.__file__).read()
    assert "import gradio" not in source and "from gradio" not in source
