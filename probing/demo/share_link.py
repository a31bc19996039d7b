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

TABS = ("coreference", "negation", "patching", "model-view", "report", "about")
# What each URL key may hold, at most: the sentence and twin as the text boxes take them; words and models short.
LIMITS = {"text": MAX_TEXT_CHARS, "twin": MAX_TEXT_CHARS, "source": 200, "target": 200, "model": 200,
          "tab": 20, "head": 9}
# The whole query string is cut off before the browser's parser sees it (URLSearchParams), and the JSON the
# server gets is capped before json.loads sees it.
MAX_QUERY_CHARS = 3 * (2 * MAX_TEXT_CHARS + 4 * 200 + 100)
MAX_LINK_JSON_CHARS = 2 * MAX_TEXT_CHARS + 4 * 200 + 400
HEAD = re.compile(r"(\d{1,3})-(\d{1,3})")

READ_JS = f"""(ignored) => {{
  const query = window.location.search.slice(0, {MAX_QUERY_CHARS});
  const params = new URLSearchParams(query);
  const limits = {json.dumps(LIMITS)};
  const link = {{}};
  for (const [key, limit] of Object.entries(limits)) {{
    const value = params.get(key);
    if (value) link[key] = value.slice(0, limit);
  }}
  return JSON.stringify(link);
}}"""


def write_js(tab: str, keys: list[str]) -> str:
    """A script for an event whose inputs are `keys` (in order): it writes their values and the tab into the
    page's URL (empty values removed) and returns the inputs unchanged."""
    if tab not in TABS or not set(keys) <= set(LIMITS):
        raise ValueError(f"unknown tab {tab!r} or keys {keys!r}")
    return f"""(...values) => {{
  const keys = {json.dumps(keys)};
  const limits = {json.dumps(LIMITS)};
  const params = new URLSearchParams();
  params.set("tab", {json.dumps(tab)});
  keys.forEach((key, i) => {{
    const value = values[i];
    if (value !== null && value !== undefined && String(value) !== "" && !Array.isArray(value))
      params.set(key, String(value).slice(0, limits[key]));
  }});
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
