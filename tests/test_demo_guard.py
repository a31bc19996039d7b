"""The demo's policy (`probing.demo.guard`), called directly and through the backend: fields checked before
anything else, the allow-list, bounded failure memory, background loads, one global limit on forward passes, a
per-address queue cap, patching's own lane, the body limit, and the policy kept out of the core loader."""
import asyncio
import re
import threading
from types import SimpleNamespace

import numpy as np
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


class _Request:
    """What the queue keeps of a request: its peer address and headers."""
    def __init__(self, host, headers=None):
        from starlette.datastructures import Headers
        self.client = SimpleNamespace(host=host)
        self.headers = Headers(headers or {})


class _Event:
    def __init__(self, session_hash, request, concurrency_id="model"):
        self.session_hash, self.request, self.concurrency_id = session_hash, request, concurrency_id


def _fake_queue():
    """A queue with Gradio's shape: waiting events per concurrency group, running jobs in `active_jobs`."""
    queue = SimpleNamespace(event_queue_per_concurrency_id={"model": SimpleNamespace(queue=[]),
                                                            "patching": SimpleNamespace(queue=[])},
                            active_jobs=[None, None], blocks=None)

    async def push(body, request, username):
        group = getattr(body, "group", "model")
        queue.event_queue_per_concurrency_id[group].queue.append(_Event(body.session_hash, request, group))
        return True, "id", "success"

    queue.push = push
    return queue


def test_one_address_cannot_fill_the_queue_whatever_session_hashes_it_sends(monkeypatch):
    queue = _fake_queue()
    demo_guard.cap_queue(queue, per_address=4)
    greedy = _Request("10.0.0.7")
    answers = [asyncio.run(queue.push(SimpleNamespace(session_hash=f"fresh-{i}"), greedy, None)) for i in range(100)]
    assert [a[2] for a in answers] == ["success"] * 4 + ["queue_full"] * 96
    assert "You already have 4 requests waiting or running" in answers[-1][1]
    # Another address is served meanwhile.
    assert asyncio.run(queue.push(SimpleNamespace(session_hash="someone"), _Request("10.0.0.8"), None))[2] == "success"
    # Running jobs count too: two of the greedy four start running, and the address is still at its cap.
    waiting = queue.event_queue_per_concurrency_id["model"].queue
    queue.active_jobs = [[waiting.pop(0)], [waiting.pop(0)]]
    assert asyncio.run(queue.push(SimpleNamespace(session_hash="x"), greedy, None))[2] == "queue_full"
    queue.active_jobs = [None, None]                     # they finished: room for two more
    assert asyncio.run(queue.push(SimpleNamespace(session_hash="y"), greedy, None))[2] == "success"


def test_patching_has_its_own_small_queue(monkeypatch):
    queue = _fake_queue()
    monkeypatch.setattr(demo_guard, "_fn_of", lambda q, body: SimpleNamespace(concurrency_id=body.group))
    demo_guard.cap_queue(queue, per_address=100, patch_queue=2)
    patch = [asyncio.run(queue.push(SimpleNamespace(session_hash=f"p{i}", group="patching"), _Request(f"10.0.1.{i}"),
                                    None))[2] for i in range(5)]
    assert patch == ["success", "success", "queue_full", "queue_full", "queue_full"]
    # Scoring is not behind it: its pushes are accepted while patching's queue is full.
    assert asyncio.run(queue.push(SimpleNamespace(session_hash="s", group="model"), _Request("10.0.2.1"), None))[2] \
        == "success"


def test_the_client_address_is_the_peer_unless_a_trusted_proxy_reports_it(monkeypatch):
    spoofed = _Request("203.0.113.5", {"x-forwarded-for": "1.2.3.4"})
    assert demo_guard.client_address(spoofed) == "203.0.113.5"          # no header configured: the peer
    monkeypatch.setenv(demo_guard.ADDRESS_HEADER_ENV, "X-Forwarded-For")
    assert demo_guard.client_address(spoofed) == "203.0.113.5"          # a direct client: its header is ignored
    monkeypatch.setenv(demo_guard.TRUSTED_PROXIES_ENV, "10.0.0.0/8")
    proxied = _Request("10.1.2.3", {"x-forwarded-for": "6.6.6.6, 198.51.100.9"})
    assert demo_guard.client_address(proxied) == "198.51.100.9"         # the address the proxy appended, last
    assert demo_guard.client_address(_Request("10.1.2.3", {"x-forwarded-for": "not an address"})) == "10.1.2.3"
    assert demo_guard.client_address(spoofed) == "203.0.113.5"          # still not a trusted proxy


# ---- BodyLimit, called as ASGI ----------------------------------------------------------------------------

def _asgi(headers, chunks, method="POST", path="/gradio_api/call/score_heads", **limits):
    """Run BodyLimit over a request; returns (status, what the app received, response body)."""
    seen, sent = {}, []
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        seen["body"] = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    asyncio.run(demo_guard.BodyLimit(app, **limits)(scope, receive, send))
    return sent[0]["status"], seen.get("body"), sent[-1].get("body", b"")


def test_body_limit_refuses_ambiguous_framing_from_the_headers():
    big = [b"x" * 1000] * 10
    status, body, text = _asgi([("Content-Length", "10"), ("Transfer-Encoding", "chunked")], big, max_bytes=100)
    assert (status, body) == (400, None) and b"both Content-Length and Transfer-Encoding" in text
    status, body, text = _asgi([("Content-Length", "5"), ("Content-Length", "5")], [b"hello"])
    assert (status, body) == (400, None) and b"more than one Content-Length" in text
    for bad in ("-1", "1e3", "12abc", "9" * 30):
        assert _asgi([("Content-Length", bad)], [b"x"])[:2] == (400, None)
    assert _asgi([("Content-Length", "4000")], [b"x" * 4000], max_bytes=100)[:2] == (413, None)


def test_body_limit_counts_every_body_as_it_streams():
    status, body, text = _asgi([("Transfer-Encoding", "chunked")], [b"x" * 60] * 5, max_bytes=100)
    assert (status, body) == (413, None) and b"over the limit of 100 bytes" in text
    assert _asgi([("Transfer-Encoding", "chunked")], [b"ab", b"cd"], max_bytes=100)[:2] == (200, b"abcd")
    assert _asgi([("Content-Length", "4")], [b"abcd"], max_bytes=100)[:2] == (200, b"abcd")
    assert _asgi([], [b""], method="GET", path="/")[:2] == (200, b"")


def test_body_limit_refuses_every_upload_route_and_multipart_body():
    for path in ("/gradio_api/upload", "/gradio_api/process_recording", "/gradio_api/upload/"):
        assert _asgi([("Content-Length", "3")], [b"abc"], path=path)[0] == 403
    status, _, text = _asgi([("Content-Type", "multipart/form-data; boundary=x"), ("Content-Length", "3")], [b"abc"],
                            path="/gradio_api/anything")
    assert status == 403 and b"no file uploads" in text


def test_body_limit_times_out_a_slow_body():
    seen = {}

    async def trickle():
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def app(scope, receive, send):
        seen["called"] = True

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"content-length", b"1")]}
    asyncio.run(demo_guard.BodyLimit(app, body_timeout_s=0.2)(scope, trickle, send))
    assert sent[0]["status"] == 408 and "called" not in seen


def test_patching_and_scoring_at_once_give_the_numbers_each_gives_alone(minilm):
    """Patching's hooks act only on its own thread: a scoring pass running at the same time on the same model
    returns exactly the attention it returns alone, and the patching result is the one it gives alone."""
    from probing.patching import patch_pair
    clean, corrupt = "The lawyer did not sign the contract.", "The lawyer did really sign the contract."
    alone_scores = demo.forward(minilm, COREF).attention
    alone_patch = patch_pair(minilm, clean, corrupt, kinds=("noising", "pattern_noising"))
    results, errors = {}, []

    def patching():
        try:
            results["patch"] = [demo_guard.in_patch_lane(
                lambda: patch_pair(minilm, clean, corrupt, kinds=("noising", "pattern_noising"))) for _ in range(3)]
        except Exception as err:  # reported below, not lost in the thread
            errors.append(err)

    worker = threading.Thread(target=patching)
    worker.start()
    scored = []
    while worker.is_alive() or not scored:
        scored.append(demo.forward(minilm, COREF).attention)
    worker.join(120)
    assert not errors, errors
    assert len(scored) >= 2
    for attention in scored:
        np.testing.assert_array_equal(attention, alone_scores)
    for result in results["patch"]:
        for kind in ("noising", "pattern_noising"):
            np.testing.assert_allclose(result.effects[kind], alone_patch.effects[kind], rtol=0, atol=1e-6)


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


def test_the_patching_lane_is_one_dedicated_thread_of_lower_priority():
    import os
    seen = set()

    def job():
        seen.add(threading.get_native_id())
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    niceness = [demo_guard.in_patch_lane(job) for _ in range(3)]
    assert len(seen) == 1 and threading.get_native_id() not in seen       # one thread, not the caller's
    assert niceness[0] >= min(demo_guard.PATCH_NICE, 19) and len(set(niceness)) == 1
    with pytest.raises(ZeroDivisionError):                                # its errors reach the caller
        demo_guard.in_patch_lane(lambda: 1 / 0)
    with demo_guard.forward_slot():                                       # and the lane was given back
        assert demo_guard.PATCH_LANE.acquire(blocking=False)
        demo_guard.PATCH_LANE.release()


def test_memory_is_trimmed_in_the_background_and_arenas_capped(monkeypatch):
    import time
    from probing import runner
    calls = []
    monkeypatch.setattr(runner, "release_freed_memory", lambda: calls.append(time.monotonic()))
    demo_guard.trim_memory_every(0.05)
    time.sleep(0.5)
    assert len(calls) >= 3
    import platform
    if platform.libc_ver()[0] == "glibc":
        assert demo_guard.limit_malloc_arenas(8) is True       # 8: glibc's own per-core default, harmless here
