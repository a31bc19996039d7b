"""The demo's policy (`probing.demo.guard`), called directly and through the backend: fields checked before
anything else, the allow-list, bounded failure memory, background loads, one global limit on forward passes, a
per-address queue cap, patching's own lane, the body limit, and the policy kept out of the core loader."""
import asyncio
import re
import threading
import time
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


@pytest.mark.slow
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


# ---- the route gate, called as ASGI (issue 31) ----------------------------------------------------------------

def _scope(path, method="GET", client="127.0.0.1", headers=()):
    return {"type": "http", "method": method, "path": path, "client": (client, 5000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}


async def _call(gate, scope, disconnect_after=None):
    """One request through `gate`; returns (status, body) of what it sent."""
    sent = []

    async def receive():
        if disconnect_after is not None:
            await asyncio.sleep(disconnect_after)
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await gate(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), sent


def test_the_gate_caps_unqueued_runs_per_address_and_refuses_in_words():
    async def scenario():
        done = asyncio.Event()

        async def slow_app(scope, receive, send):          # a page event that takes a while
            await done.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        gate = demo_guard.RouteGate(slow_app, unqueued=4)
        greedy = [asyncio.create_task(_call(gate, _scope("/gradio_api/run/predict", "POST"))) for _ in range(4)]
        await asyncio.sleep(0.05)
        fifth = await _call(gate, _scope("/gradio_api/run/predict", "POST"))
        other = asyncio.create_task(_call(gate, _scope("/gradio_api/run/predict", "POST", client="127.0.0.2")))
        api = await _call(gate, _scope("/gradio_api/api/score_heads", "POST"))
        done.set()
        answers = await asyncio.gather(*greedy, other)
        after = await _call(gate, _scope("/gradio_api/run/predict", "POST"))
        return fifth, api, answers, after, gate

    fifth, api, answers, after, gate = asyncio.run(scenario())
    assert fifth[0] == 429 and "You already have 4 page events running" in fifth[1].decode()
    assert api[0] == 429                                   # /api/* is the same door
    assert [a[0] for a in answers] == [200] * 5            # the four, and another address meanwhile
    assert after[0] == 200 and gate.open == {}             # finished runs are counted out


def test_no_header_chooses_a_direct_client_s_address(monkeypatch):
    spoofing = [("X-Forwarded-For", "198.51.100.7"), ("X-Real-IP", "198.51.100.8"), ("Forwarded", "for=198.51.100.9"),
                ("True-Client-IP", "198.51.100.10"), ("CF-Connecting-IP", "198.51.100.11")]
    scope = _scope("/gradio_api/queue/join", "POST", client="127.0.0.1", headers=spoofing)
    assert demo_guard.scope_address(scope) == "127.0.0.1"              # nothing configured
    monkeypatch.setenv(demo_guard.ADDRESS_HEADER_ENV, "x-forwarded-for")
    assert demo_guard.scope_address(scope) == "127.0.0.1"              # loopback is no proxy unless configured
    monkeypatch.setenv(demo_guard.TRUSTED_PROXIES_ENV, "10.0.0.0/8")
    assert demo_guard.scope_address(scope) == "127.0.0.1"
    proxied = _scope("/x", client="10.1.1.1", headers=[("X-Real-IP", "6.6.6.6"), ("X-Forwarded-For", "6.6.6.6, 203.0.113.4")])
    assert demo_guard.scope_address(proxied) == "203.0.113.4"          # the configured header, from the proxy
    # uvicorn's own proxy-header handling (trusting 127.0.0.1 by default) is switched off for the demo's server.
    import uvicorn
    with demo_guard.server_timeouts():
        config = uvicorn.Config(app=lambda scope, receive, send: None, port=1)
    assert config.proxy_headers is False and isinstance(config.app, demo_guard.RouteGate)
    config.load()
    assert type(config.loaded_app).__name__ != "ProxyHeadersMiddleware"


def test_streams_are_capped_per_address_and_closed_after_their_lifetime():
    async def stream_app(scope, receive, send):            # Starlette's streaming answer: until the client leaves
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: ALIVE\n\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass

    async def scenario():
        gate = demo_guard.RouteGate(stream_app, streams=3, lifetime_s=0.3)
        opened = [asyncio.create_task(_call(gate, _scope(f"/gradio_api/heartbeat/s{i}"))) for i in range(3)]
        await asyncio.sleep(0.05)
        refused = await asyncio.gather(*[_call(gate, _scope(f"/gradio_api/heartbeat/x{i}")) for i in range(50)])
        elsewhere = asyncio.create_task(_call(gate, _scope("/gradio_api/queue/data", client="127.0.0.9")))
        closed = await asyncio.wait_for(asyncio.gather(*opened, elsewhere), 5)
        return refused, closed, gate

    refused, closed, gate = asyncio.run(scenario())
    assert {r[0] for r in refused} == {429} and "open event streams" in refused[0][1].decode()
    for status, body, sent in closed:                      # ended by the lifetime, cleanly (a last empty chunk)
        assert status == 200 and sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert gate.open == {}
    head = b"GET /gradio_api/heartbeat/abc HTTP/1.1\r\nHost: x"
    gate.open[("stream", "127.0.0.1")] = 3                 # the protocol asks from the raw head, before parsing
    assert "open event streams" in gate.refusal_from_head("127.0.0.1", head)
    assert gate.refusal_from_head("127.0.0.2", head) is None
    assert gate.refusal_from_head("127.0.0.1", b"GET /gradio_api/info HTTP/1.1\r\nHost: x") is None


def test_every_failure_is_answered_in_words_never_a_plain_500(caplog):
    class FnIndexInferError(Exception):
        pass

    async def failing(scope, receive, send):
        raise {"/boom": RuntimeError("deep inside\nsecond line"), "/unknown": FnIndexInferError("no api x")}[scope["path"]]

    async def plain_500(scope, receive, send):             # what Starlette's ServerErrorMiddleware sends
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Internal Server Error"})
        raise ValueError("then re-raises")

    caplog.set_level("INFO", logger="probing.demo.backend")
    boom = asyncio.run(_call(demo_guard.RouteGate(failing), _scope("/boom", "POST")))
    unknown = asyncio.run(_call(demo_guard.RouteGate(failing), _scope("/unknown", "POST")))
    rewritten = asyncio.run(_call(demo_guard.RouteGate(plain_500), _scope("/x", "POST")))
    assert boom[0] == 500 and "could not be processed (RuntimeError)" in boom[1].decode()
    assert unknown[0] == 404 and "no endpoint by that name" in unknown[1].decode()
    assert rewritten[0] == 500 and b"Internal Server Error" not in rewritten[1] and b"could not be processed" in rewritten[1]
    for _, _, sent in (boom, unknown, rewritten):
        assert dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all("\n" not in line and "Traceback" not in line for line in lines)


@pytest.mark.parametrize("body, message", [
    (b'{"data": [NaN]}', r"holds NaN"),
    (b'{"data": ["\\ud800"]}', r"lone surrogate"),
    (b'{"\\udfff": 1}', r"lone surrogate"),
    (b'{"data": ["\xff"]}', r"not valid UTF-8"),
])
def test_unencodable_json_is_refused_in_words_before_any_route(body, message):
    status, seen, answer = _asgi([("Content-Type", "application/json"), ("Content-Length", str(len(body)))], [body])
    assert status == 400 and re.search(message, answer.decode()) and seen is None


def test_json_that_can_be_encoded_passes():
    for body in (b'{"data": ["\\ud83d\\udc36 dog", "\\\\ud800 as text"]}', b'{not json'):
        status, seen, _ = _asgi([("Content-Type", "application/json")], [body])
        assert status == 200 and seen == body


@pytest.mark.parametrize("head, problem", [
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5", r"more than one Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 5, 5", r"more than one Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked", r"both Content-Length and Transfer"),
    (b"POST / HTTP/1.1\r\nContent-Length: 5", None),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked", None),
])
def test_ambiguous_framing_is_read_from_the_raw_headers(head, problem):
    found = demo_guard.framing_problem(head)
    assert (found is None) if problem is None else re.search(problem, found)


def test_the_log_cannot_be_flooded():
    import logging
    now = [0.0]
    limit = demo_guard.RateLimitedLines(burst=5, window_s=10, clock=lambda: now[0])
    record = lambda: logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, "Too many open files", None, None)  # noqa: E731
    passed = sum(limit.filter(record()) for _ in range(220_000 // 100))
    assert passed == 5
    now[0] = 11.0
    late = record()
    assert limit.filter(late) and "2,195 similar lines dropped" in late.getMessage()
    other = logging.LogRecord("probing", logging.INFO, "", 0, "another kind %s", ("x",), None)
    assert limit.filter(other)                             # each kind has its own allowance


def test_echoed_text_cannot_reorder_or_hide_the_message():
    assert demo_guard.printable("x\u202eevil\u2066\x00") == "x\\u202eevil\\u2066\\x00"
    assert demo_guard.printable("plain words, ünïcode and emoji 🐶\n") == "plain words, ünïcode and emoji 🐶\n"


# ---- the Gradio internals the limits stand on (issue 27, item 6) ------------------------------------------------

def test_the_demo_refuses_to_start_without_a_gradio_internal_it_relies_on(monkeypatch):
    import gradio as gr
    from gradio import queueing
    import app
    demo = app.build_demo()
    demo.queue(default_concurrency_limit=2, max_size=8, api_open=False)
    assert demo_guard.missing_gradio_internals(demo) == []
    demo.api_open = True                                   # the direct routes left open
    assert any("api_open" in p for p in demo_guard.missing_gradio_internals(demo))
    demo.api_open = False
    del demo._queue.event_queue_per_concurrency_id         # Gradio renamed the waiting events
    with pytest.raises(demo_guard.GradioInternalsError, match=r"Queue\.event_queue_per_concurrency_id"):
        demo_guard.check_gradio_internals(demo)
    # The whole app: a Gradio without Queue.push never reaches launch.
    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append(kw))
    monkeypatch.delattr(queueing.Queue, "push")
    with pytest.raises(SystemExit, match=r"Queue\.push.*does not\s+start"):
        app.main()
    assert not launched


def test_counting_a_queue_without_its_internals_fails_loudly_not_as_zero():
    broken = SimpleNamespace(active_jobs=[])               # no event_queue_per_concurrency_id
    with pytest.raises(AttributeError):
        demo_guard.jobs_of_address(broken, "10.0.0.1")


def test_a_space_without_a_trusted_proxy_is_warned_about(monkeypatch):
    for name in ("SPACE_ID", demo_guard.ADDRESS_HEADER_ENV, demo_guard.TRUSTED_PROXIES_ENV):
        monkeypatch.delenv(name, raising=False)
    assert demo_guard.proxy_warning() is None                      # a local run: the peer is the visitor
    monkeypatch.setenv("SPACE_ID", "user/space")
    assert demo_guard.proxy_warning() is None                      # a Space's defaults: its proxy's header
    monkeypatch.setenv(demo_guard.TRUSTED_PROXIES_ENV, "10.0.0.0/8")    # one set by hand: no defaults
    assert "every visitor counts as the proxy's one address" in demo_guard.proxy_warning()
    monkeypatch.setenv(demo_guard.ADDRESS_HEADER_ENV, "x-forwarded-for")
    assert demo_guard.proxy_warning() is None


def test_a_space_reads_its_proxys_header_from_private_peers_only(monkeypatch):
    for name in ("SPACE_ID", demo_guard.ADDRESS_HEADER_ENV, demo_guard.TRUSTED_PROXIES_ENV):
        monkeypatch.delenv(name, raising=False)
    assert demo_guard.address_from("10.1.2.3", ["203.0.113.9"]) == "10.1.2.3"     # off a Space: the peer
    monkeypatch.setenv("SPACE_ID", "user/space")
    assert demo_guard.address_from("10.1.2.3", ["198.51.100.7, 203.0.113.9"]) == "203.0.113.9"
    assert demo_guard.address_from("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"   # loopback is not the proxy
    assert demo_guard.address_from("203.0.113.5", ["198.51.100.7"]) == "203.0.113.5"  # a public peer is believed never


def test_page_events_are_rate_limited_per_address_and_refusals_wait():
    now = [0.0]

    async def quick(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gate = demo_guard.RouteGate(quick, rate=2, burst=5, refusal_delay_s=0.2, clock=lambda: now[0])
    event = lambda client="127.0.0.1": _call(gate, _scope("/gradio_api/run/predict", "POST", client=client))  # noqa: E731
    answers = [asyncio.run(event())[0] for _ in range(8)]
    assert answers == [200] * 5 + [429] * 3                   # the burst, then refused
    refused = asyncio.run(event())
    assert "more than 2 page events a second" in refused[1].decode()
    assert asyncio.run(event("127.0.0.2"))[0] == 200          # another address has its own allowance
    now[0] = 1.0                                               # a second later: two more
    assert [asyncio.run(event())[0] for _ in range(3)] == [200, 200, 429]
    import time
    started = time.perf_counter()
    asyncio.run(event())
    assert time.perf_counter() - started >= 0.2                # a refused event is answered after the delay
    assert gate.open == {}


def _bare_server(protocol):
    """A uvicorn server on a free loopback port with `protocol` and a one-line app; (server, port)."""
    import socket
    import threading
    import time

    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, port


def _answer_in_pieces(port: int, pieces: list[bytes], pause_s: float = 0.3) -> bytes:
    """Send a request in pieces, with a pause after each (so the server reads them apart), and read the
    answer's first bytes (until the server ends or 5 s pass)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause_s)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < 200:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _answer(port: int, request: bytes) -> bytes:
    """Send a request in one write and read the answer's first bytes."""
    return _answer_in_pieces(port, [request], pause_s=0)


def test_a_request_head_too_long_to_read_gets_a_worded_431_not_a_reset():
    from probing.demo.guard import MAX_HEAD_BYTES, request_deadline_protocol
    server, port = _bare_server(request_deadline_protocol())
    try:
        fine = _answer(port, b"GET /?q=" + b"a" * 1000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert fine.startswith(b"HTTP/1.1 200")
        # 168 KB of address: h11 alone answered a bare "Invalid HTTP request" and the socket reset under the
        # client's unsent bytes; now the client reads a worded refusal
        huge = _answer(port, b"GET /gradio_api/info?q=" + b"a" * (168 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431"), huge[:80]
        assert f"longer than this demo reads ({MAX_HEAD_BYTES:,} bytes)".encode() in huge
        assert _answer(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True


def test_a_long_share_link_cut_into_several_reads_is_read_whole():
    """A 32 KB link (the longest the demo writes) that arrives in four reads: h11 alone refused a part over
    16 KB with a bare 400 and a reset; the protocol holds the head until it is whole."""
    from probing.demo.guard import request_deadline_protocol
    server, port = _bare_server(request_deadline_protocol())
    request = b"GET /?text=" + b"a" * 32_700 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    try:
        answer = _answer_in_pieces(port, [request[i:i + 9000] for i in range(0, len(request), 9000)], pause_s=0.1)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    finally:
        server.should_exit = True


@pytest.mark.parametrize("pieces", [1, 2], ids=["one read", "two reads"])
def test_a_link_to_the_page_too_long_to_read_goes_back_to_the_page_however_it_arrives(pieces):
    """A 70 KB share link: whether the server reads its head in one piece (complete, over the limit) or in
    two (the first over the limit, no end yet), the answer is the same redirect to the page's too-long note.
    (It used to depend on the network: one read went on to the page, two got a JSON 431.)"""
    from probing.demo.guard import MAX_HEAD_BYTES, TOO_LONG_LINK, request_deadline_protocol
    server, port = _bare_server(request_deadline_protocol())
    request = b"GET /?text=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    cut = MAX_HEAD_BYTES + 10 if pieces == 2 else len(request)
    try:
        answer = _answer_in_pieces(port, [request[:cut], request[cut:]] if pieces == 2 else [request])
        assert answer.startswith(b"HTTP/1.1 303"), answer[:80]
        assert f"location: ?link={TOO_LONG_LINK}\r\n".encode() in answer
    finally:
        server.should_exit = True
