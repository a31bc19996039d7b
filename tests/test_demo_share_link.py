"""The shareable link's checks (`probing.demo.share_link`): bad or oversized values are dropped in words and
unknown models refused."""
import json

from probing.demo.share_link import LIMITS, MAX_LINK_JSON_CHARS, READ_JS, parse_link, write_js

MODELS = ["minilm", "mpnet"]


def test_a_good_link_is_read_whole():
    raw = json.dumps({"tab": "negation", "text": "She did not go.", "model": "mpnet", "head": "11-3",
                      "source": "not", "target": "go"})
    link = parse_link(raw, MODELS)
    assert (link.tab, link.text, link.model, link.head, link.source, link.target, link.problem) == \
        ("negation", "She did not go.", "mpnet", (11, 3), "not", "go", "")


def test_an_unknown_model_is_refused_and_not_echoed():
    link = parse_link(json.dumps({"model": "evil/<script>", "text": "x"}), MODELS)
    assert link.model == "" and "not offered" in link.problem and "<script>" not in link.problem
    assert link.text == "x"


def test_bad_parts_are_dropped():
    link = parse_link(json.dumps({"tab": "nowhere", "head": "1-2-3", "text": ["list"], "twin": 5}), MODELS)
    assert (link.tab, link.head, link.text, link.twin) == ("", None, "", "")
    assert parse_link(json.dumps({"text": "x" * (LIMITS["text"] + 1)}), MODELS).text == ""
    assert parse_link(json.dumps({"head": "12345-1"}), MODELS).head is None


def test_unreadable_or_huge_links_are_ignored_before_parsing():
    assert "too long" in parse_link("{" + " " * MAX_LINK_JSON_CHARS + "}", MODELS).problem
    assert "could not be read" in parse_link("{not json", MODELS).problem
    assert "could not be read" in parse_link("[1, 2]", MODELS).problem
    assert parse_link("", MODELS).problem == "" and parse_link(None, MODELS).problem == ""


def test_the_scripts_bound_what_they_read_and_write():
    assert "const query = full.slice(0, " in READ_JS and "JSON.stringify(link)" in READ_JS
    script = write_js("patching", ["text", "twin"])
    assert "history.replaceState" in script and '"patching"' in script and ".slice(0, limits[key])" in script
    for bad in (lambda: write_js("elsewhere", ["text"]), lambda: write_js("negation", ["password"])):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("an unknown tab or key was accepted")


def test_a_cut_link_says_so():
    """READ_JS lists what it cut (`cut`: the whole query or a field over its limit); the note names it."""
    link = parse_link(json.dumps({"text": "She left.", "cut": "text"}), MODELS)
    assert link.text == "She left." and "the sentence was cut short" in link.problem
    both = parse_link(json.dumps({"text": "x", "cut": "query,twin,nonsense"}), MODELS).problem
    assert "the link, the twin were cut short" in both
    assert parse_link(json.dumps({"text": "x", "cut": "nonsense"}), MODELS).problem == ""
    assert "cut.push" in READ_JS and "link.cut" in READ_JS


def test_a_lone_surrogate_is_dropped_in_words():
    raw = json.dumps({"text": "a\udfffb", "target": "go", "tab": "negation"})     # JSON's "\udfff" escape
    link = parse_link(raw, MODELS)
    assert link.text == "" and link.target == "go" and "lone surrogate" in link.problem
    link.problem.encode("utf-8")                       # the note itself can be sent


def test_a_tab_without_a_head_input_writes_the_ringed_cell():
    script = write_js("patching", ["text", "twin"], head_cell="#patch-effect button.hh-selected",
                      only_with_head=True)
    assert 'document.querySelector("#patch-effect button.hh-selected")' in script
    assert "if (!cell && true) return values;" in script and 'params.set("head"' in script
    assert "querySelector" not in write_js("negation", ["text", "head"])


def _answer(middleware, path, query, method="GET"):
    """Run one request through an ASGI middleware; (status, headers, body, whether the app was reached)."""
    import asyncio
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "root_path": "", "headers": []}
    asyncio.run(middleware(app)(scope, receive, send))
    if not sent:
        return None, {}, b"", bool(reached)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"], bool(reached)


def test_an_overlong_query_is_answered_before_anything_parses_it():
    """Over MAX_QUERY_CHARS: the page redirects to itself with a note, any other route answers 414 in words;
    a link within the bound reaches the app untouched."""
    from probing.demo.share_link import MAX_QUERY_CHARS, LongLinkRedirect
    status, headers, _, reached = _answer(LongLinkRedirect, "/", b"text=" + b"a" * MAX_QUERY_CHARS)
    assert (status, headers[b"location"], reached) == (303, b"/?link=too-long", False)
    status, _, body, reached = _answer(LongLinkRedirect, "/gradio_api/info", b"x" * (MAX_QUERY_CHARS + 1))
    assert status == 414 and not reached and "longer than this demo reads" in json.loads(body)["error"]
    assert _answer(LongLinkRedirect, "/", b"text=" + b"a" * 1000)[3]
    assert 'get("link") === "too-long"' in READ_JS
    assert "ignored; share a shorter sentence" in parse_link(json.dumps({"cut": "whole"}), MODELS).problem
