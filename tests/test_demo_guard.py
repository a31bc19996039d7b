"""The demo's policy (`probing.demo.guard`), called directly and through the backend: fields checked before
anything else, the allow-list, bounded failure memory, background loads, one global limit on forward passes, a
per-session queue cap, and the policy kept out of the core loader."""
import asyncio
import re
import threading
from types import SimpleNamespace

import pytest

from probing.demo import backend as demo, guard as demo_guard
from probing.demo.guard import DemoError, ModelGate
from probing.models import ModelLoadError

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


def test_messages_quote_user_text_short_and_pages_show_it_inert():
    assert demo_guard.shown("x" * 10_000).endswith("… (10,000 characters)") and len(demo_guard.shown("x" * 10_000)) < 100
    import app
    message = app._problem(DemoError("The source word '![t](http://evil.invalid/track.png) [x](http://a.b)' is bad"))
    assert not re.search(r"(?<!\\)\]\(", message) and "<img" not in message
    assert "\\!\\[t\\]\\(http" in message


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


def test_policy_lives_in_the_demo_not_the_loader():
    import probing.models as models
    for name in ("allowed_models", "check_model_allowed", "HUB_ALLOW_LIST", "ALLOW_ANY_ENV", "ALLOWED_ENV"):
        assert not hasattr(models, name) and hasattr(demo_guard, name)
    source = open(demo.__file__).read() + open(demo_guard.__file__).read()
    assert "import gradio" not in source and "from gradio" not in source


def test_allow_list_by_default(default_allow_list):
    allowed = demo_guard.allowed_models()
    assert allowed[0] == "minilm" and "gpt2" in allowed and "/etc" not in allowed
    assert demo_guard.check_model_allowed("") == "minilm"
