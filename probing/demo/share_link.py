"""A shareable link: the page keeps the sentence, model, tab and head in its URL, and a link reopens them.

Two small scripts run in the visitor's browser. `READ_JS` (on page load) reads `?text=&model=&tab=&head=...`
and hands the values to the server as one JSON string; `write_js(...)` (after an analysis or a head pick)
writes the current values back with `history.replaceState`, so the address bar always holds a
link to what is on screen. Nothing here builds HTML: the values only ever reach text boxes and dropdowns,
and every one is checked in `parse_link` (type, length, allowed values) before anything else sees it; a
model that is not on the demo's menu is refused, as the allow-list refuses it anywhere else.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from probing.demo.explore import MAX_TEXT_CHARS
from probing.demo.guard import TOO_LONG_LINK

TABS = ("coreference", "negation", "patching", "model-view", "report", "about")
# What each URL key may hold, at most: the sentence and twin as the text boxes take them; words and models short.
LIMITS = {"text": MAX_TEXT_CHARS, "twin": MAX_TEXT_CHARS, "source": 200, "target": 200, "model": 200,
          "tab": 20, "head": 9}
# The whole query string is cut off before the browser's parser sees it (URLSearchParams), and the JSON the
# server gets is capped before json.loads sees it.
MAX_QUERY_CHARS = 3 * (2 * MAX_TEXT_CHARS + 4 * 200 + 100)
MAX_LINK_JSON_CHARS = 2 * MAX_TEXT_CHARS + 4 * 200 + 400
HEAD = re.compile(r"(\d{1,3})-(\d{1,3})")

# A query string longer than MAX_QUERY_CHARS (as sent, percent-encoded) is never parsed: the page is answered
# with a redirect to itself that says so (`LongLinkRedirect`, or guard's protocol when the whole request head
# is over its limit), every other route with a worded 414 (431).
TOO_LONG = TOO_LONG_LINK

READ_JS = f"""(ignored) => {{
  const full = window.location.search;
  if (new URLSearchParams(full.slice(0, 100)).get("link") === {json.dumps(TOO_LONG)})
    return JSON.stringify({{cut: "whole"}});
  const query = full.slice(0, {MAX_QUERY_CHARS});
  const params = new URLSearchParams(query);
  const limits = {json.dumps(LIMITS)};
  const link = {{}};
  const cut = full.length > {MAX_QUERY_CHARS} ? ["query"] : [];
  for (const [key, limit] of Object.entries(limits)) {{
    const value = params.get(key);
    if (value) link[key] = value.slice(0, limit);
    if (value && value.length > limit) cut.push(key);
  }}
  if (cut.length) link.cut = cut.join(",");
  return JSON.stringify(link);
}}"""
# What a cut part of a link is called in the note (`cut` lists the keys READ_JS shortened).
CUT_NAMES = {"query": "the link", "text": "the sentence", "twin": "the twin", "source": "the source word",
             "target": "the target word", "model": "the model", "tab": "the tab", "head": "the head"}


def write_js(tab: str, keys: list[str], head_cell: str | None = None, only_with_head: bool = False) -> str:
    """A script for an event whose inputs are `keys` (in order): it writes their values and the tab into the
    page's URL (empty values removed) and returns the inputs unchanged.

    head_cell: a CSS selector of the heatmap cell ringed on the page (`data-layer`, `data-head`), written as
    `head` (a tab whose picked head is not an input, such as patching's); only_with_head: write nothing when
    no cell is ringed."""
    if tab not in TABS or not set(keys) <= set(LIMITS):
        raise ValueError(f"unknown tab {tab!r} or keys {keys!r}")
    from_page = "" if head_cell is None else f"""
  const cell = document.querySelector({json.dumps(head_cell)});
  if (!cell && {json.dumps(only_with_head)}) return values;
  if (cell) params.set("head", `${{cell.dataset.layer}}-${{cell.dataset.head}}`.slice(0, limits.head));"""
    return f"""(...values) => {{
  const keys = {json.dumps(keys)};
  const limits = {json.dumps(LIMITS)};
  const params = new URLSearchParams();
  params.set("tab", {json.dumps(tab)});
  keys.forEach((key, i) => {{
    const value = values[i];
    if (value !== null && value !== undefined && String(value) !== "" && !Array.isArray(value))
      params.set(key, String(value).slice(0, limits[key]));
  }});{from_page}
  history.replaceState(history.state, "", "?" + params.toString() + window.location.hash);
  return values;
}}"""


@dataclass
class Link:
    """What a link asks for, checked: every field a bounded string ('' when absent), head a pair or None."""
    text: str = ""
    twin: str = ""
    source: str = ""
    target: str = ""
    model: str = ""
    tab: str = ""
    head: tuple[int, int] | None = None
    problem: str = ""           # why a part of the link was ignored, in words ('' when nothing was)


def parse_link(raw, allowed_models: list[str]) -> Link:
    """The link's values, each checked; a bad part is dropped and named in `problem`, never raised."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_LINK_JSON_CHARS:
        return Link(problem="The link is too long, so it was ignored." if isinstance(raw, str) and raw else "")
    try:
        data = json.loads(raw)
    except ValueError:
        return Link(problem="The link could not be read, so it was ignored.")
    if not isinstance(data, dict):
        return Link(problem="The link could not be read, so it was ignored.")
    values = {key: data[key] for key in LIMITS if isinstance(data.get(key), str) and len(data[key]) <= LIMITS[key]}
    problems = []
    unreadable = [key for key, value in values.items() if any("\ud800" <= c <= "\udfff" for c in value)]
    if unreadable:       # a lone surrogate (JSON's "\udfff") cannot be shown or encoded: that part is dropped
        problems.append(f"The link's {', '.join(unreadable)} held an invalid character (a lone surrogate), so "
                        f"{'it was' if len(unreadable) == 1 else 'they were'} ignored.")
        values = {key: value for key, value in values.items() if key not in unreadable}
    cut = data.get("cut")
    if cut == "whole":
        return Link(problem=f"The link was longer than this demo reads ({MAX_QUERY_CHARS:,} characters), so it was "
                            "ignored; share a shorter sentence.")
    if isinstance(cut, str) and len(cut) <= 200:
        names = [CUT_NAMES[key] for key in cut.split(",") if key in CUT_NAMES]
        if names:
            problems.append(f"The link was longer than this demo reads, so {', '.join(names)} "
                            f"{'was' if len(names) == 1 else 'were'} cut short (the sentence and twin keep "
                            f"their first {MAX_TEXT_CHARS:,} characters); check the text before you analyse it.")
    link = Link(**{k: values.get(k, "") for k in ("text", "twin", "source", "target")})
    model = values.get("model", "")
    if model and model not in allowed_models:
        problems.append("The link's model is not offered by this demo, so the default model is used.")
    else:
        link.model = model
    tab = values.get("tab", "")
    link.tab = tab if tab in TABS else ""
    match = HEAD.fullmatch(values.get("head", ""))
    link.head = (int(match.group(1)), int(match.group(2))) if match else None
    link.problem = " ".join(problems)
    return link


class LongLinkRedirect:
    """ASGI middleware: a query string over `max_chars` (as sent) is answered before any router, URL object or
    parser sees it (Starlette and httpx fail on about 64 KB, and answered 500). The page itself (GET or HEAD
    of `/`) is redirected to `/?link=too-long`, which opens the page with a note (`READ_JS`); any other route
    gets 414 in words."""

    def __init__(self, app, max_chars: int = MAX_QUERY_CHARS):
        self.app, self.max_chars = app, max_chars

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or len(scope.get("query_string", b"")) <= self.max_chars:
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD") and scope.get("path", "") in ("", "/"):
            status, headers, body = 303, [(b"location", f"{scope.get('root_path', '')}/?link={TOO_LONG}".encode())], b""
        else:
            status, headers = 414, [(b"content-type", b"application/json")]
            body = json.dumps({"error": f"The address is longer than this demo reads ({self.max_chars:,} "
                                        "characters of query string); send the values in the request body."}).encode()
        headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
