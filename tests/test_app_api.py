"""The real app in a subprocess, driven through gradio_client: the API contract, its numbers against the
library's, every kind of bad input answered in words, and the server still serving afterwards."""
import html
import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from analysis.loadtest import PROXY_ENV, AppServer, chunked_with_small_length, fresh_session_flood, rss_mb
from probing.examples import Example, find_span
from probing.demo import guard
from probing.heads import score_examples

gradio_client = pytest.importorskip("gradio_client")
# The app in a subprocess (about 20 s to start) and real requests: deselected by -m "not slow".
pytestmark = pytest.mark.slow

COREF = "The doctor called the nurse because she was late."
NEGATION = "The lawyer did not sign the contract."
EVIL = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken-model")
    (folder / "config.json").write_text("{ not json")
    return str(folder)


@pytest.fixture(scope="module")
def server(tiny_causal_path, broken_model):
    """app.py on a free port, allowing the installed models plus a tiny causal model and a broken folder."""
    # PROXY_ENV: the tests play the Space's proxy (X-Forwarded-For believed from 127.0.0.1 only), so that
    # several client addresses can be simulated on loopback.
    env = {"PROBING_ALLOWED_MODELS": f"{tiny_causal_path},{broken_model}", "PROBING_ALLOW_ANY_MODEL": "0", **PROXY_ENV}
    with AppServer(env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server.url, verbose=False)


def library(minilm, text, relation, source_span, target_span):
    example = Example(text=text, relation=relation, source_span=source_span, target_span=target_span)
    scores, skipped = score_examples(minilm, [example])
    assert not skipped
    return scores


def assert_serving(client):
    answer = client.predict(COREF, "coreference", "she", "nurse", "", api_name="/score_heads")
    assert answer["model"] == "minilm" and len(answer["heads"]) == 72


def test_only_the_three_api_endpoints_are_public(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == \
        {"/score_heads", "/head_view", "/patch_heads"}


def test_page_can_be_embedded_in_an_iframe(server):
    with urllib.request.urlopen(server.url, timeout=30) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        body = response.read().decode()
    assert response.status == 200 and "gradio" in body.lower()
    assert "x-frame-options" not in headers
    assert "frame-ancestors" not in headers.get("content-security-policy", "")


def test_score_heads_numbers_equal_the_library(client, minilm):
    answer = client.predict(COREF, "coreference", "she", "nurse", "", api_name="/score_heads")
    assert {"model", "direction", "tokens", "heads"} <= answer.keys()
    assert (answer["model"], answer["direction"]) == ("minilm", "pronoun->antecedent")
    source, target = find_span(COREF, "she"), find_span(COREF, "nurse")
    assert (tuple(answer["source_span"]), tuple(answer["target_span"])) == (source, target)
    assert answer["tokens"] == minilm.tokenizer.convert_ids_to_tokens(minilm.tokenizer(COREF)["input_ids"])
    scores = library(minilm, COREF, "coreference", source, target)
    got = np.array([[h["attention"] for h in answer["heads"] if h["layer"] == l] for l in range(6)])
    hits = np.array([[h["is_argmax"] for h in answer["heads"] if h["layer"] == l] for l in range(6)])
    assert [(h["layer"], h["head"]) for h in answer["heads"]] == [(l, h) for l in range(6) for h in range(12)]
    # The API rounds to 6 decimals: equal to the library within 1e-6, on numbers that spread over [0, 1].
    np.testing.assert_allclose(got, scores.attention[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(hits, scores.is_argmax[0])
    assert scores.attention[0].std() > 0.01 and np.abs(got - scores.attention[0][::-1]).max() > 0.01


def test_score_heads_negation_by_offsets_equals_the_library(client, minilm):
    cue = find_span(NEGATION, "not")
    answer = client.predict(NEGATION, "negation", f"{cue[0]}:{cue[1]}", "", "", api_name="/score_heads")
    assert answer["direction"] == "cue->next_word" and answer["target"] == "sign"
    scores = library(minilm, NEGATION, "negation", cue, find_span(NEGATION, "sign"))
    for row in answer["heads"]:
        layer, head = row["layer"], row["head"]
        assert abs(row["attention"] - scores.attention[0, layer, head]) <= 1e-6
        assert abs(row["next_word_baseline"] - scores.next_word_baseline[0, layer, head]) <= 1e-6
        above = scores.attention[0, layer, head] - scores.next_word_baseline[0, layer, head]
        assert abs(row["above_baseline"] - above) <= 2e-6


def test_score_heads_with_a_causal_model_reads_negation_backwards(client, tiny_causal_path):
    answer = client.predict(NEGATION, "negation", "not", "", tiny_causal_path, api_name="/score_heads")
    assert answer["direction"] == "next_word->cue" and len(answer["heads"]) == 4
    assert any("causal" in note for note in answer["notes"])


def test_head_view_is_a_sandboxed_iframe_on_the_asked_head(client):
    view = client.predict(COREF, "", 2, 4, api_name="/head_view")
    assert view.startswith('<iframe sandbox="allow-scripts" ') and "allow-same-origin" not in view
    assert "&quot;layer&quot;:2," in view and "&quot;heads&quot;:[4]" in view
    default = client.predict(COREF, api_name="/head_view")
    assert default.startswith('<iframe sandbox="allow-scripts" ') and "&quot;layer&quot;:null" in default


def test_html_in_the_text_is_data_not_markup(client):
    answer = client.predict(EVIL + " She said it.", "coreference", "She", "img", "", api_name="/score_heads")
    assert "<script>alert(2)</script>" in "".join(answer["tokens"]) and answer["target"] == "img"
    view = client.predict(EVIL + " She said it.", "", 0, 0, api_name="/head_view")
    srcdoc = re.fullmatch(r'<iframe [^>]*srcdoc="([^"]*)"></iframe>', view).group(1)
    assert "<" not in srcdoc and "<script>alert(2)" not in html.unescape(srcdoc)


BAD_SCORE_HEADS = [
    ("empty", ("", "coreference", "she", "nurse", ""), r"^The sentence is empty"),
    ("white space", (" \n\t ", "coreference", "she", "nurse", ""), r"^The sentence is empty"),
    ("100,000 characters", ("x" * 100_000, "coreference", "she", "nurse", ""),
     r"^The text has 100,000 characters; the limit here is 5,000\. It was refused, not cut"),
    ("Chinese, no pronoun", ("他说明天会下雨。", "coreference", "", "", ""), r"has no pronoun .* Try an example such as"),
    ("Arabic, no pronoun", ("قال إن الطقس سيكون جميلا غدا", "coreference", "", "", ""), r"has no pronoun"),
    ("no negation", ("The lawyer signed it.", "negation", "", "", ""), r"has no 'not' or 'n't'\. Try an example"),
    ("NUL only", ("\x00\x00\x01", "coreference", "", "", ""), r"^The sentence is empty"),
    ("no antecedent", (COREF, "coreference", "she", "", ""), r"No antecedent was given"),
    ("missing word", (COREF, "coreference", "surgeon", "nurse", ""), r"The source word 'surgeon' does not occur"),
    ("word twice", (COREF, "coreference", "she", "the", ""),
     r"The target word 'the' occurs 2 times \(0:3, 18:21\); give it as start:end offsets"),
    ("span out of range", (COREF, "coreference", "36:39", "40:400", ""),
     r"The target span 40:400 is out of range or reversed for a text of 49 characters"),
    ("span reversed", (COREF, "coreference", "39:36", "nurse", ""), r"The source span 39:36 is out of range or reversed"),
    ("unknown relation", (COREF, "syntax", "she", "nurse", ""), r"Unknown relation 'syntax'"),
    ("unknown model id", (COREF, "coreference", "she", "nurse", "no-such/model"),
     r"model 'no-such/model' is not on this demo's allow-list"),
    ("hub model off the list", (COREF, "coreference", "she", "nurse", "gpt2"), r"model 'gpt2' is not on this demo's allow-list"),
    ("path /etc", (COREF, "coreference", "she", "nurse", "/etc"), r"model '/etc' is not on this demo's allow-list"),
    ("path ../", (COREF, "coreference", "she", "nurse", "../"), r"model '\.\./' is not on this demo's allow-list"),
    ("list as source", (COREF, "coreference", ["she"], "nurse", ""), r"The source word must be text, got list"),
    ("number as model", (COREF, "coreference", "she", "nurse", 7), r"The model name must be text, got int"),
    ("object as target", (COREF, "coreference", "she", {"a": 1}, ""), r"The target word must be text, got dict"),
    ("4,400-digit span", (COREF, "coreference", "1" * 4400 + ":2", "nurse", ""),
     r"The source word has 4,402 characters; the limit here is 200"),
    ("60,000-character word", (COREF, "coreference", "a" + " " * 60_000 + "a", "nurse", ""),
     r"The source word has 60,002 characters"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in BAD_SCORE_HEADS], ids=[c[0] for c in BAD_SCORE_HEADS])
def test_bad_input_to_score_heads_gets_words(client, args, message):
    with pytest.raises(gradio_client.exceptions.AppError, match=message) as caught:
        client.predict(*args, api_name="/score_heads")
    assert "Traceback" not in str(caught.value)
    assert_serving(client)


BAD_HEAD_VIEW = [
    ("empty", ("  ", "", 0, 0), r"^The sentence is empty"),
    ("layer out of range", (COREF, "", 6, 0), r"The layer 6 is out of range: this model has 6 layers \(0-5\)"),
    ("negative layer", (COREF, "", -1, 0), r"The layer -1 is out of range"),
    ("head out of range", (COREF, "", 0, 12), r"The head 12 is out of range: this model has 12 heads \(0-11\)"),
    ("path as model", (COREF, "../../etc", 0, 0), r"allow-list"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in BAD_HEAD_VIEW], ids=[c[0] for c in BAD_HEAD_VIEW])
def test_bad_input_to_head_view_gets_words(client, args, message):
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(*args, api_name="/head_view")
    assert_serving(client)


def test_patch_heads_numbers_equal_the_library(client, minilm):
    from probing.patching import patch_pair
    clean, twin = NEGATION, "The lawyer did really sign the contract."
    answer = client.predict(clean, twin, "", "", api_name="/patch_heads")
    assert answer["model"] == "minilm" and answer["swap"] == "not -> really" and len(answer["heads"]) == 72
    assert answer["target"]["word"] == "sign" and answer["tokens"][answer["swapped"][0]] == "not"
    assert abs(answer["sanity"]["embedding_denoising"] - 1) < 1e-5 and answer["sanity"]["own_noising_max_abs"] < 1e-6
    library = patch_pair(minilm, clean, twin, source=(15, 18), target=(19, 23), kinds=("noising", "denoising"))
    for row in answer["heads"]:
        layer, head = row["layer"], row["head"]
        assert abs(row["noising"] - library.effects["noising"][layer, head]) < 2e-6
        assert abs(row["denoising"] - library.effects["denoising"][layer, head]) < 2e-6
        assert abs(row["attention"] - library.attention[layer, head]) < 2e-6
    suggested = client.predict(clean, "", "", "contract", api_name="/patch_heads")    # no twin: suggested
    assert suggested["corrupt"] == twin and suggested["target"]["word"] == "contract"
    assert json.loads(json.dumps(answer)) == answer


BAD_PATCH_HEADS = [
    ("two words differ", (NEGATION, "The judge did really sign the contract.", "", ""), r"differ in more than one word"),
    ("nothing to swap", ("The lawyer signed it.", "", "", ""), r"none can be suggested"),
    ("over-long pair", ("He did not sign " + "the long contract " * 30, "", "", ""), r"at most 64, because every head"),
    ("list as twin", (NEGATION, ["x"], "", ""), r"The text must be text, got list"),
    ("100,000-character sentence", ("x" * 100_000, "", "", ""), r"The text has 100,000 characters"),
    ("dict as target", (NEGATION, "", "", {"a": 1}), r"The target word must be text, got dict"),
    ("60,000-character target", (NEGATION, "", "", "a" + " " * 60_000 + "a"), r"The target word has 60,002 characters"),
    ("path as model", (NEGATION, "", "../../etc", ""), r"allow-list"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in BAD_PATCH_HEADS], ids=[c[0] for c in BAD_PATCH_HEADS])
def test_bad_input_to_patch_heads_gets_words(client, args, message):
    with pytest.raises(gradio_client.exceptions.AppError, match=message) as caught:
        client.predict(*args, api_name="/patch_heads")
    assert "Traceback" not in str(caught.value)
    assert_serving(client)


def test_inputs_that_work_despite_looking_odd(client):
    emoji = client.predict("The dog 🐶 saw the cat 😺 and it ran away.", "coreference", "it", "dog", "",
                           api_name="/score_heads")
    assert emoji["source"] == "it" and emoji["target"] == "dog"
    nul = client.predict("The doctor\x00 called the nurse because she\x07 was late.", "coreference", "she", "nurse",
                         "", api_name="/score_heads")
    assert any("control characters" in n for n in nul["notes"])
    long = client.predict("The man said that he was late. " + "Then it rained again. " * 150, "coreference", "he",
                          "man", "", api_name="/score_heads")
    assert long["truncated"] and any("truncated" in n for n in long["notes"])


def test_a_model_that_fails_to_load_leaves_the_server_serving(client, broken_model):
    for _ in range(2):
        with pytest.raises(gradio_client.exceptions.AppError, match=r"cannot load model '.*broken-model.*'"):
            client.predict(COREF, "coreference", "she", "nurse", broken_model, api_name="/score_heads")
    assert_serving(client)


def test_json_answer_is_plain_json(client):
    answer = client.predict(NEGATION, "negation", "not", "sign", "", api_name="/score_heads")
    assert json.loads(json.dumps(answer)) == answer
    assert re.fullmatch(r"\d+-\d+", f"{answer['best_head']['layer']}-{answer['best_head']['head']}")


def _post(url, body: bytes, headers=None):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_lone_surrogates_get_words_not_a_null_error(server, client):
    """Refused before any route reads them (`guard.json_body_problem`), in words, on every route."""
    for route in ("gradio_api/call/score_heads", "gradio_api/queue/join", "gradio_api/run/predict"):
        for body in ('{"data": ["The doctor \\ud800 saw her.", "coreference", "her", "doctor", ""]}',
                     '{"data": ["' + COREF + '", "coreference", "she \\udfff", "nurse", ""], "fn_index": 1}'):
            status, text = _post(server.url + route, body.encode())
            assert status == 400 and "lone surrogate" in json.loads(text)["error"], (route, status, text)
    assert_serving(client)


def test_oversized_bodies_and_uploads_are_refused_in_words(server, client):
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/gradio_api/call/score_heads")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(40_000_000))       # a 40 MB body: refused before it is read
    connection.endheaders()
    connection.send(b'{"data": ["' + b"x" * 10_000)
    response = connection.getresponse()
    status, text = response.status, response.read().decode()
    connection.close()
    assert status == 413 and "40,000,000 bytes; the limit here is 262,144" in text
    status, text = _post(server.url + "gradio_api/upload", b"--x--\r\n", {"Content-Type": "multipart/form-data; boundary=x"})
    assert status == 403 and "accepts no file uploads" in text
    assert_serving(client)


def test_health_is_answered_while_an_oversized_body_streams_in(server):
    """A chunked body that never ends: the server answers GET / in the middle of it, then refuses it."""
    import http.client
    middle = threading.Event()
    done = threading.Event()

    def body():
        yield b'{"data": ["' + b"a" * 30_000
        middle.wait(60)                                # hold the request open until the health check ran
        for _ in range(100):
            yield b"a" * 30_000
        done.set()

    result = {}

    def send():
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            connection.request("POST", "/gradio_api/call/score_heads", body=body(), encode_chunked=True,
                               headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
            response = connection.getresponse()
            result["status"], result["text"] = response.status, response.read().decode()
        except OSError as err:                      # the server may close the connection once it refused
            result["status"], result["text"] = "closed", str(err)
        finally:
            connection.close()

    sender = threading.Thread(target=send)
    sender.start()
    with urllib.request.urlopen(server.url + "gradio_api/info", timeout=30) as response:
        assert response.status == 200               # answered while the big request is open
    middle.set()
    sender.join(60)
    assert result["status"] in (413, "closed"), result
    if result["status"] == 413:
        assert "over the limit of 262,144 bytes" in result["text"]


def test_every_model_event_is_in_scoring_s_group_or_patching_s_lane():
    import app
    demo = app.build_demo()
    grouped = [fn for fn in demo.fns.values() if fn.concurrency_id == "model"]
    patching = [fn for fn in demo.fns.values() if fn.concurrency_id == guard.PATCH_GROUP_ID]
    assert {"score_heads", "head_view"} <= {getattr(fn, "api_name", None) for fn in grouped}
    assert all(fn.concurrency_limit == app.CONCURRENCY for fn in grouped)
    # Every queued event that can run a model is in the group: the button, submit, gallery, picks, view, report.
    assert len(grouped) >= 2 * 6 + 1 + 2
    # Patching (the tab's button, Enter in the sentence and in the twin, the gallery, and the API) has its own
    # lane of one.
    assert {fn.name for fn in patching} == {"run_patching", "patch_heads"} and len(patching) == 5
    assert all(fn.concurrency_limit == 1 for fn in patching)


def test_launch_defaults_and_queue(monkeypatch):
    """`python app.py` binds 127.0.0.1:7860 unless GRADIO_SERVER_NAME/PORT say otherwise, with a bounded queue."""
    import gradio as gr
    import app
    import uvicorn
    launched, configs = [], []

    def launch(self, **kw):
        launched.append((self, kw))
        configs.append(uvicorn.Config(app=None, port=1))      # what Gradio's server would be built with

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    app.main()
    demo, kwargs = launched[-1]
    assert (kwargs["server_name"], kwargs["server_port"]) == ("127.0.0.1", 7860)
    assert kwargs["state_session_capacity"] == app.SESSION_CAPACITY <= 1000   # bounded per-visitor memory
    assert demo._queue.default_concurrency_limit == app.CONCURRENCY >= 1
    assert demo._queue.max_size == app.QUEUE_SIZE
    assert demo._queue.push.__qualname__.startswith("cap_queue")   # per-address cap and patching's queue installed
    assert configs[-1].http.__name__ == "DeadlineH11Protocol" and configs[-1].timeout_keep_alive == guard.KEEP_ALIVE_S
    assert configs[-1].proxy_headers is False                       # no header from 127.0.0.1 is believed
    assert demo.api_open is False                                   # direct runs of queued functions closed
    assert uvicorn.Config is not type(configs[-1])                 # swapped only while launching
    assert kwargs["max_file_size"] == "1kb"
    assert [m.cls for m in kwargs["app_kwargs"]["middleware"]][-1] is guard.BodyLimit   # innermost: reads bodies
    downloads = Path(kwargs["allowed_paths"][-1])
    assert downloads.name.startswith("probing-downloads-") and downloads.name != "probing-downloads"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    app.main()
    assert (launched[-1][1]["server_name"], launched[-1][1]["server_port"]) == ("0.0.0.0", 8123)


def test_a_chunked_body_with_a_small_declared_length_is_refused_and_memory_does_not_move(server, client):
    before = rss_mb(server.pid)
    answers = [chunked_with_small_length(server.url, megabytes=16) for _ in range(3)]
    assert all(a.startswith("HTTP/1.1 400") for a in answers), answers
    assert rss_mb(server.pid) - before < 50
    assert_serving(client)


def test_one_address_with_fresh_session_hashes_gets_at_most_its_cap_and_others_are_served(server):
    flood = fresh_session_flood(server.url, n=100)
    assert 1 <= flood["accepted"] <= guard.MAX_JOBS_PER_ADDRESS, flood
    assert "You already have 4 requests waiting or running" in flood["message"]
    assert flood["other_ok"], flood


def test_every_upload_route_is_refused(server):
    for route in ("gradio_api/upload", "gradio_api/process_recording"):
        status, text = _post(server.url + route, b"--x\r\n\r\nhi\r\n--x--\r\n",
                             {"Content-Type": "multipart/form-data; boundary=x"})
        assert status == 403 and "accepts no file uploads" in text, (route, status, text)
    status, text = _post(server.url + "gradio_api/process_recording", b"{}", {"Content-Type": "application/json"})
    assert status == 403


def test_the_page_s_own_events_answer_bad_values_in_words_and_log_one_line(server):
    """A private event called with junk (too few inputs, a dict where a choice belongs) gets a message, never
    `{"error": null}`, and the server's log gets one line per refusal, no traceback."""
    import json as _json
    config = _json.loads(urllib.request.urlopen(server.url + "config", timeout=30).read())
    private = [d["id"] for d in config["dependencies"] if d.get("api_visibility") == "private"][:12]
    assert private
    for index in private:
        for data in ([{"index": 99999}], [{"a": 1}, ["x"], 5, None, 7, 8, 9, 10]):
            body = _json.dumps({"fn_index": index, "data": data, "session_hash": f"junk{index}"}).encode()
            status, text = _post(server.url + "gradio_api/run/predict", body, {"Content-Type": "application/json"})
            answer = _json.loads(text)
            assert answer.get("error", "") is not None, (index, data, text)
    assert "Traceback" not in server.log_tail(400)


def test_a_server_started_on_a_port_someone_else_serves_moves_to_its_own_port():
    """The port AppServer was told is already served (as when two test processes picked the same free port):
    Gradio moves to the next port and the old one still answers 200, from the other server. AppServer must
    notice that the answer is not its app's and start on another port, saying so."""
    import http.server
    from analysis.loadtest import free_port, listens_on

    class Squatter(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "8")
            self.end_headers()
            self.wfile.write(b"squatter")

        def log_message(self, *args):
            pass

    squatter = http.server.HTTPServer(("127.0.0.1", free_port()), Squatter)
    thread = threading.Thread(target=squatter.serve_forever, daemon=True)
    thread.start()
    try:
        taken = squatter.server_address[1]
        with AppServer(port=taken) as running:
            assert running.port != taken
            assert listens_on(running.pid, running.port) and not listens_on(running.pid, taken)
            with urllib.request.urlopen(running.url, timeout=30) as response:
                assert "gradio" in response.read().decode().lower()
    finally:
        squatter.shutdown()
        squatter.server_close()
