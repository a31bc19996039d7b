"""Every route behind the same limits, wherever the demo runs (issue 31): the real app in a subprocess, once
as a Space (SYSTEM=spaces, SPACE_ID set) and once not, each attacked from 127.0.0.1 with the load test's
attacks while another loopback address (127.0.0.2) is served. The server trusts a proxy that is not on this
machine, so no header a local client sends may choose its address."""
import pytest

from analysis.loadtest import (AppServer, direct_run_flood, fuzz, heartbeat_flood, spoofed_joins, unqueued_event,
                               _http)
from probing.demo import guard

pytestmark = pytest.mark.slow

OTHER = "127.0.0.2"           # another client address on loopback (Linux routes all of 127.0.0.0/8 there)
LIFETIME_S = 5.0
MODES = {
    "not a space": {},
    "space": {"SYSTEM": "spaces", "SPACE_ID": "probing/route-test"},
}


@pytest.fixture(scope="module", params=list(MODES))
def server(request):
    # A proxy is configured, but elsewhere: uvicorn's own default would have trusted 127.0.0.1 regardless.
    env = {"PROBING_CLIENT_ADDRESS_HEADER": "x-forwarded-for", "PROBING_TRUSTED_PROXIES": "10.9.9.9",
           "PROBING_STREAM_LIFETIME_S": f"{LIFETIME_S:g}", **MODES[request.param]}
    with AppServer(env=env) as running:
        yield running


def test_direct_runs_never_skip_the_queue(server):
    flood = direct_run_flood(server.url, n=20, other_source=OTHER)
    assert flood["accepted"] <= guard.MAX_JOBS_PER_ADDRESS, flood
    assert set(flood["statuses"]) <= {404, 429}, flood          # closed, or past the cap: in words either way
    assert "does not accept direct HTTP POST" in flood["message"] or "page events running" in flood["message"]
    assert flood["other_ok"], flood


def test_a_client_at_127_0_0_1_cannot_choose_its_address_by_any_header(server):
    spoof = spoofed_joins(server.url, n=100, other_source=OTHER)
    assert 1 <= spoof["accepted"] <= guard.MAX_JOBS_PER_ADDRESS, spoof
    assert "You already have 4 requests waiting or running" in spoof["message"], spoof
    assert spoof["other_ok"], spoof


def test_the_page_s_unqueued_events_are_capped_per_address(server):
    import json
    from concurrent.futures import ThreadPoolExecutor
    index, n_inputs = unqueued_event(server.url)
    text = ("The doctor called the nurse because she was late. " * 100)[:5000]
    body = json.dumps({"fn_index": index, "data": [text] + [""] * (n_inputs - 1), "session_hash": "flood"}).encode()
    headers = {"Content-Type": "application/json"}
    send = lambda source=None: _http(server.url, "POST", "/gradio_api/run/predict", body, headers, source)  # noqa: E731
    with ThreadPoolExecutor(16) as pool:
        flood = [pool.submit(send) for _ in range(160)]
        other = [send(OTHER) for _ in range(3)]                  # another address meanwhile
        answers = [f.result() for f in flood]
    refused = [text for status, text in answers if status == 429]
    assert refused and all(guard.unqueued_message(guard.MAX_UNQUEUED_PER_ADDRESS) in text
                           or guard.rate_message(guard.UNQUEUED_RATE) in text for text in refused), refused[:3]
    assert {status for status, _ in answers} <= {200, 429}
    assert [status for status, _ in other] == [200] * 3


def test_a_heartbeat_flood_is_refused_or_closed_and_others_are_served(server):
    beats = heartbeat_flood(server.url, n=2000, bound_s=LIFETIME_S + guard.KEEP_ALIVE_S + 20, other_source=OTHER)
    assert beats["open_after"] == 0, beats
    assert beats["streamed"] <= guard.MAX_STREAMS_PER_ADDRESS, beats
    assert beats["refused"] >= 2000 - guard.MAX_STREAMS_PER_ADDRESS, beats
    assert beats["info_ok"] and beats["other_ok"], beats


def test_odd_requests_get_words_never_a_plain_500(server):
    fuzzed = fuzz(server.url, server.log_text)
    assert fuzzed["plain_500"] == [] and fuzzed["echoed"] == [], fuzzed
    assert fuzzed["tracebacks"] == 0, server.log_tail(60)
    for name in ("duplicate Content-Length", "Content-Length: N, N", "CL+TE and a malformed chunk", "NaN",
                 "lone surrogate", "lone surrogate in a choice", "not UTF-8"):
        assert fuzzed["answers"][name][0].startswith("HTTP/1.1 400"), (name, fuzzed["answers"][name])
    for name in ("unknown /call", "unknown /run"):
        assert fuzzed["answers"][name][0].startswith("HTTP/1.1 404"), (name, fuzzed["answers"][name])
    body = fuzzed["answers"]["right-to-left override in a choice"][2]
    assert "\u202e" not in body
