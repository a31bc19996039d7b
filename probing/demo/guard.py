"""The public demo's safety policy, as plain Python (no Gradio in here): what a request may contain, which
models it may load, and how much of the server one visitor may hold.

- **Fields** (`text_field`, `word_field`, `choice_field`, `number_field`): every value a request carries is
  checked for type and length *before* any regex, tokenizer or model sees it, so a 1 MB word or a list
  where a string belongs is refused in words at once. Messages quote user text through `shown` (short,
  `repr`-quoted) and pages show them through `inert` (no HTML, no Markdown).
- **Models** (`allowed_models`, `check_model_allowed`, `ModelGate`): only allow-listed models load, a load
  runs in a background thread (the request that started it waits at most `LOAD_WAIT_S`; any other request
  hears "loading, try again in a moment" at once instead of holding a worker), and a failed load is remembered for `RETRY_FAILED_S` seconds,
  in a memory of at most `MAX_REMEMBERED` model names.
- **Load** (`FORWARD_SLOTS`, `PATCH_LANE`, `cap_queue`): scoring, views and reports share `CONCURRENCY`
  forward-pass slots; patching has a lane of its own (one job at a time, a queue of `PATCH_QUEUE_SIZE`), so
  it never takes a slot scoring uses. One client address (`client_address`: the peer, or the address a
  trusted proxy reports) has at most `MAX_JOBS_PER_ADDRESS` requests waiting or running, on the page's events
  and the `/call` routes alike; past that it hears "You already have 4 requests waiting or running …"
  (HTTP 503 on the API).
- **Connections** (`BodyLimit`, `server_timeouts`): ambiguous framing (Content-Length with
  Transfer-Encoding, two lengths, `N, N`) refused from the raw header bytes (`framing_problem`, before h11
  merges identical lengths) and again from the parsed headers; every body counted as it streams, over
  `MAX_BODY_BYTES` or slower than `BODY_TIMEOUT_S` refused; JSON holding NaN, lone surrogates or bytes that
  are not UTF-8 refused in words; every upload refused; headers must arrive within `HEADER_TIMEOUT_S`, idle
  connections close after `KEEP_ALIVE_S`, and one peer holds at most `MAX_CONNECTIONS_PER_PEER` sockets.
  uvicorn's own proxy-header handling is off: no header chooses a client's address but the configured one,
  from a configured proxy (`address_from`).
- **Every route** (`RouteGate`, around the whole app): the direct run routes (`/run/*`, `/api/*`: the page's
  queue=False events; queued functions are closed there by `api_open=False`) at most
  `MAX_UNQUEUED_PER_ADDRESS` at once per address; heartbeat and event streams at most
  `MAX_STREAMS_PER_ADDRESS` per address, each closed after `STREAM_LIFETIME_S`; at most
  `MAX_REQUESTS_PER_ADDRESS` requests open per address; and every failure answered in JSON words, never a
  plain-text 500 (`printable` escapes what is echoed).
- **Gradio internals** (`check_gradio_internals`): the queue's `push`, its waiting and running events, the
  function table, `process_api`, `api_open` and uvicorn's Config are checked before the server starts; if
  one is missing the demo refuses to start rather than run without its per-address cap.
- **The log** (`RateLimitedLines`): each kind of line at most `LOG_BURST` times per `LOG_WINDOW_S`; a flood
  of refusals or of one error costs the log a few lines and a count. Each refusal is one log line.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager

from probing.models import DEFAULT_MODEL, SHORT_NAMES, LoadedModel, ModelLoadError, load_model, loaded_model_names

log = logging.getLogger("probing.demo.backend")

MAX_WORD_CHARS = 200            # a word field ("she", "36:39", "she (36:39)"): far more than any real word
MAX_MODEL_CHARS = 200           # a model name or path
MAX_CHOICE_CHARS = 40           # relation, metric, head label
MAX_NUMBER_DIGITS = 6           # layer and head numbers
MAX_BODY_BYTES = int(os.environ.get("PROBING_MAX_BODY_BYTES", str(256 * 1024)))   # room for a 100,000-character text refused in words
MAX_JOBS_PER_ADDRESS = int(os.environ.get("PROBING_MAX_JOBS_PER_CLIENT", "4"))   # waiting + running, per address
CONCURRENCY = int(os.environ.get("PROBING_CONCURRENCY", "2"))   # scoring's forward passes at once
PATCH_QUEUE_SIZE = int(os.environ.get("PROBING_PATCH_QUEUE_SIZE", "4"))   # patching jobs waiting for the lane
PATCH_GROUP_ID = "patching"     # the Gradio concurrency group of patching events (limit 1)
PATCH_NICE = int(os.environ.get("PROBING_PATCH_NICE", "10"))   # the patching thread's CPU priority (nice)
ADDRESS_HEADER_ENV = "PROBING_CLIENT_ADDRESS_HEADER"   # e.g. x-forwarded-for behind the Space's proxy
TRUSTED_PROXIES_ENV = "PROBING_TRUSTED_PROXIES"        # the proxy's addresses/networks, e.g. 10.0.0.0/8
HEADER_TIMEOUT_S = float(os.environ.get("PROBING_HEADER_TIMEOUT_S", "10"))   # a request's headers, complete
BODY_TIMEOUT_S = float(os.environ.get("PROBING_BODY_TIMEOUT_S", "20"))       # its body, complete
KEEP_ALIVE_S = float(os.environ.get("PROBING_KEEP_ALIVE_S", "5"))            # an idle connection after an answer
BODY_METHODS = ("POST", "PUT", "PATCH")
MALLOC_ARENAS = int(os.environ.get("PROBING_MALLOC_ARENAS", "2"))
TRIM_EVERY_S = float(os.environ.get("PROBING_TRIM_EVERY_S", "10"))   # freed heap pages handed back this often
UPLOAD_PATHS = ("/upload", "/process_recording", "/stream")
LOAD_WAIT_S = float(os.environ.get("PROBING_LOAD_WAIT_S", "30"))   # the request that starts a load waits this long
RETRY_FAILED_S = float(os.environ.get("PROBING_RETRY_FAILED_S", "300"))
MAX_REMEMBERED = 64             # failed model names remembered (bounded: any-model mode sees any name)
SHOWN_CHARS = 60                # user text quoted in a message
# Page events run at once outside the queue, per address. A page has at most one run of each event in flight
# (Gradio's trigger modes) and one action fires at most about five at once (a shared link filling a tab);
# each one more lets a flood take a larger share of the CPU from other visitors' scoring.
MAX_UNQUEUED_PER_ADDRESS = int(os.environ.get("PROBING_MAX_UNQUEUED_PER_CLIENT", "6"))
UNQUEUED_RATE = float(os.environ.get("PROBING_UNQUEUED_RATE", "10"))   # page events per second, per address,
UNQUEUED_BURST = int(os.environ.get("PROBING_UNQUEUED_BURST", "30"))     # after a burst of this many
REFUSAL_DELAY_S = float(os.environ.get("PROBING_REFUSAL_DELAY_S", "0.5"))   # a refused page event waits this long
MAX_STREAMS_PER_ADDRESS = int(os.environ.get("PROBING_MAX_STREAMS_PER_CLIENT", "8"))     # heartbeat and event streams
MAX_REQUESTS_PER_ADDRESS = int(os.environ.get("PROBING_MAX_REQUESTS_PER_CLIENT", "32"))  # any route, at once
MAX_CONNECTIONS_PER_PEER = int(os.environ.get("PROBING_MAX_CONNECTIONS_PER_PEER", "64"))  # open sockets
# A request's line and headers: room for the longest share link (32,700 characters) and ordinary headers; past
# this h11 would answer a bare "Invalid HTTP request" and the socket would reset under the client's unsent bytes.
MAX_HEAD_BYTES = 64 * 1024
# A link to the page too long to read is sent back to the page with this value (`?link=too-long`), which opens
# it with a note (share_link.READ_JS), whichever part of the server caught it.
TOO_LONG_LINK = "too-long"
STREAM_LIFETIME_S = float(os.environ.get("PROBING_STREAM_LIFETIME_S", "1800"))           # then a stream is closed


class DemoError(ValueError):
    """Anything the visitor should read in words: bad input, a model that may not or cannot load."""


# ---- user text in messages -----------------------------------------------------------------------------

def shown(value, limit: int = SHOWN_CHARS) -> str:
    """User text quoted in a message: repr-quoted (surrogates and control characters escaped), cut short."""
    text = value if isinstance(value, str) else str(type(value).__name__)
    quoted = repr(text[:limit])
    return quoted + (f"… ({len(text):,} characters)" if len(text) > limit else "")


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def inert(text: str) -> str:
    """Text for a Markdown component that renders as itself: HTML escaped, Markdown syntax backslashed, so
    `![t](http://…)` in a word is neither an image nor a link."""
    import html
    return _MARKDOWN.sub(r"\\\1", html.escape(str(text), quote=False))


# ---- fields -------------------------------------------------------------------------------------------

def _string(value, name: str, limit: int, allow_none: bool = True) -> str:
    if value is None and allow_none:
        return ""
    if not isinstance(value, str):
        raise DemoError(f"The {name} must be text, got {type(value).__name__}.")
    if len(value) > limit:
        raise DemoError(f"The {name} has {len(value):,} characters; the limit here is {limit:,}. "
                        "It was refused, not cut.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DemoError(f"The {name} holds a lone surrogate (an invalid Unicode character); "
                        "send valid UTF-8 text.") from None
    return value


def text_field(value, limit: int) -> str | None:
    """The sentence: text up to `limit` characters (None stays None: the empty-text message comes later)."""
    return None if value is None else _string(value, "text", limit)


def word_field(value, role: str) -> str:
    """A source or target word: short text (a word, `start:end` or `word (start:end)`)."""
    return _string(value, f"{role} word", MAX_WORD_CHARS)


def model_field(value) -> str:
    return _string(value, "model name", MAX_MODEL_CHARS)


def choice_field(value, name: str, choices) -> str:
    """One of a few fixed words (relation, metric)."""
    value = _string(value, name, MAX_CHOICE_CHARS)
    if value not in choices:
        raise DemoError(f"Unknown {name} {shown(value)}: use {' or '.join(repr(c) for c in choices)}.")
    return value


def number_field(value, name: str):
    """A layer or head number: None, an int, a whole float or a short numeric string; range is checked later."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value.strip()) <= MAX_NUMBER_DIGITS + 1:
        return value
    raise DemoError(f"The {name} must be a whole number, got {shown(value) if isinstance(value, str) else type(value).__name__}.")


def layers_field(value) -> list:
    """The model view's layer choices: a short list of short numbers."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) > 256:
        raise DemoError("The layers must be a list of at most 256 layer numbers.")
    return [number_field(v, "layer") for v in value]


# ---- which models the demo may load -------------------------------------------------------------------

HUB_ALLOW_LIST = ("bert-base-uncased", "roberta-base", "distilbert-base-uncased", "gpt2")
ALLOW_ANY_ENV = "PROBING_ALLOW_ANY_MODEL"      # "1" on a private machine: any hub id or local path
ALLOWED_ENV = "PROBING_ALLOWED_MODELS"         # comma-separated list replacing the default allow-list


def installed_short_names() -> list[str]:
    """Short names whose offline copies are present (MiniLM always is: it is a requirement)."""
    from probing.install_models import local_model_path
    return [DEFAULT_MODEL] + [n for n in SHORT_NAMES if n != DEFAULT_MODEL and local_model_path(n) is not None]


def allowed_models() -> list[str]:
    """The demo's model choices: installed offline models, then the hub allow-list (or $PROBING_ALLOWED_MODELS)."""
    configured = os.environ.get(ALLOWED_ENV)
    extra = [m.strip() for m in configured.split(",") if m.strip()] if configured is not None else list(HUB_ALLOW_LIST)
    return list(dict.fromkeys(installed_short_names() + extra))


def check_model_allowed(name) -> str:
    """The model name to load, or DemoError naming it when the demo may not load it (nothing is loaded)."""
    name = model_field(name).strip() or DEFAULT_MODEL
    if os.environ.get(ALLOW_ANY_ENV) == "1" or name in allowed_models():
        return name
    raise DemoError(f"model {shown(name)} is not on this demo's allow-list ({', '.join(allowed_models())}); "
                    f"a local run can allow any model with {ALLOW_ANY_ENV}=1")


class ModelGate:
    """Loads allowed models in the background and remembers failures, both bounded.

    A request never waits on another request's load: it gets "loading, try again in a moment" and its worker
    is free; the request that started the load waits for it at most `wait_s`. One load per name runs at a time; at most `max_remembered` failures are
    kept (oldest dropped first), each answered at once with its message for `retry_s` seconds.
    """

    def __init__(self, loader=load_model, cached=loaded_model_names, wait_s: float = LOAD_WAIT_S,
                 retry_s: float = RETRY_FAILED_S, max_remembered: int = MAX_REMEMBERED):
        self.loader, self.cached = loader, cached
        self.wait_s, self.retry_s, self.max_remembered = wait_s, retry_s, max_remembered
        self._guard = threading.Lock()
        self._loading: dict[str, threading.Thread] = {}
        self.failed: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, name: str) -> LoadedModel:
        """The loaded model, or DemoError: "still loading", or the load's failure in words."""
        asked = time.monotonic()
        if name in self.cached():
            return self.loader(name)                     # in memory: the loader's cache answers at once
        with self._guard:
            self._raise_if_failed(name)
            thread = self._loading.get(name)
            started_here = thread is None
            if started_here:                             # one load per name, in the background
                thread = threading.Thread(target=self._load, args=(name,), daemon=True, name="model load")
                self._loading[name] = thread
                thread.start()
        # The request that started the load waits for it (up to wait_s); the others do not wait at all.
        thread.join(self.wait_s if started_here else 0)
        if thread.is_alive():
            raise DemoError(f"The model {shown(name)} is still loading; try again in a moment.")
        with self._guard:
            self._raise_if_failed(name, since=asked)
        return self.loader(name)

    def _raise_if_failed(self, name: str, since: float | None = None) -> None:
        """A failure within the retry window (or one that happened since `since`) is answered in words."""
        failed = self.failed.get(name)
        if failed is not None and (time.monotonic() - failed[0] < self.retry_s
                                   or (since is not None and failed[0] >= since)):
            raise DemoError(failed[1])

    def _load(self, name: str) -> None:
        try:
            self.loader(name)
        except ModelLoadError as err:
            self._remember_failure(name, str(err))
        except Exception as err:  # anything a broken model folder throws: still words, the app keeps serving
            first = str(err).splitlines()[0] if str(err) else ""
            log.warning("loading model %s failed: %s: %s", shown(name), type(err).__name__, shown(first, 200))
            self._remember_failure(name, f"cannot load model {shown(name)}: {type(err).__name__}: {first[:200]}")
        else:
            with self._guard:
                self.failed.pop(name, None)
        finally:
            with self._guard:
                self._loading.pop(name, None)

    def _remember_failure(self, name: str, message: str) -> None:
        with self._guard:
            self.failed[name] = (time.monotonic(), message)
            self.failed.move_to_end(name)
            while len(self.failed) > self.max_remembered:
                self.failed.popitem(last=False)


# ---- forward passes: scoring's slots, and patching's own lane ---------------------------------------------

FORWARD_SLOTS = threading.BoundedSemaphore(max(1, CONCURRENCY))
# Patching runs in a lane of its own: one job at a time, holding none of scoring's slots, so a visitor waiting
# for scores is never behind anyone's patching. Its hooks act only on the thread that installed them
# (`probing.hooks`), so a scoring pass running meanwhile on the same model is untouched.
PATCH_LANE = threading.BoundedSemaphore(1)


@contextmanager
def forward_slot():
    """Hold one of the CONCURRENCY forward-pass slots of scoring, views and reports."""
    with FORWARD_SLOTS:
        yield


@contextmanager
def exclusive_forward():
    """Hold the patching lane: at most one patching job runs at a time, beside (never instead of) scoring."""
    with PATCH_LANE:
        yield


def _lower_priority() -> None:
    """Run this thread (and the compute threads it starts) at a lower CPU priority: on a small machine
    scoring, a request a visitor waits on for a fraction of a second, then gets the cores first. Linux nice
    values are per thread; where that is not possible the lane simply runs at normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PATCH_NICE)
    except (AttributeError, OSError) as err:
        log.info("the patching lane runs at normal priority (%s)", err)


_LANE_THREAD = None
_LANE_THREAD_GUARD = threading.Lock()


def in_patch_lane(job):
    """`job()` run in the patching lane: one job at a time, on one dedicated thread of lower CPU priority,
    so a flood of patching requests takes turns with scoring instead of starving it. Returns what `job`
    returns and raises what it raises."""
    global _LANE_THREAD
    from concurrent.futures import ThreadPoolExecutor
    with _LANE_THREAD_GUARD:
        if _LANE_THREAD is None:
            _LANE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patch-lane",
                                              initializer=_lower_priority)
    with exclusive_forward():
        return _LANE_THREAD.submit(job).result()


# ---- memory -----------------------------------------------------------------------------------------------------

def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (normally up to 8 per core): every server thread that runs a forward pass
    would otherwise get an arena of its own, each keeping its freed tensors' pages, and the server's memory
    would creep up with the number of threads that ever served. Call before the server's threads start.
    Returns whether the cap was set (False off glibc)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, int(arenas)))          # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def trim_memory_every(seconds: float = TRIM_EVERY_S) -> threading.Thread:
    """A background thread that hands the heap's freed pages back to the OS every `seconds` (glibc's
    malloc_trim, `probing.runner.release_freed_memory`): requests of every size come and go, and without it the
    server's resident memory keeps the high-water mark of every burst of them."""
    def trim():
        from probing import runner           # here, not at the top: the guard itself imports no torch
        while True:
            time.sleep(seconds)
            runner.release_freed_memory()

    thread = threading.Thread(target=trim, daemon=True, name="memory trim")
    thread.start()
    return thread


# ---- request bodies, uploads and slow connections -----------------------------------------------------------

class BodyLimit:
    """ASGI middleware: refuse uploads, ambiguous framing and any request body over `max_bytes`, before the
    app reads or parses a byte of it.

    - A request with both Content-Length and Transfer-Encoding, several Content-Length headers, or one that is
      not a plain number is refused (400) from its headers alone: which of the two framings the server
      believes is exactly what request smuggling and limit bypasses play on.
    - A declared length over the limit is refused (413) at once.
    - Every body is then read here and counted as it streams, whatever it declared, at most `max_bytes` and
      within `body_timeout_s` (408 past it: a body trickled in a byte at a time holds no worker for long).
    - Uploads (`refused_paths`, and any multipart body) are refused (403): the demo has no upload component.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES,
                 refused_paths: tuple[str, ...] = UPLOAD_PATHS, body_timeout_s: float = BODY_TIMEOUT_S):
        self.app, self.max_bytes, self.refused_paths = app, max_bytes, refused_paths
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            return await _refuse(send, *refusal)
        if scope.get("method") not in BODY_METHODS and not _header_values(scope, b"transfer-encoding") \
                and not _header_values(scope, b"content-length"):
            return await self.app(scope, receive, send)
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout_s)
        except asyncio.TimeoutError:
            return await _refuse(send, 408, f"The request body did not arrive within {self.body_timeout_s:g} s.")
        if body is None:
            return await _refuse(send, 413, f"The request body is over the limit of {self.max_bytes:,} bytes.")
        problem = json_body_problem(scope, body)
        if problem is not None:
            return await _refuse(send, 400, problem)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def refusal(self, scope) -> tuple[int, str] | None:
        """(status, message) for a request refused from its headers alone; None when it may be read."""
        path = scope.get("path", "")
        content_type = b"".join(_header_values(scope, b"content-type")).lower()
        if scope.get("method") in BODY_METHODS and (any(path.rstrip("/").endswith(p) for p in self.refused_paths)
                                                    or content_type.startswith(b"multipart/")):
            return 403, "This demo accepts no file uploads."
        lengths = _header_values(scope, b"content-length")
        if lengths and _header_values(scope, b"transfer-encoding"):
            return 400, "The request has both Content-Length and Transfer-Encoding; send one of them."
        if len(lengths) > 1:
            return 400, "The request has more than one Content-Length header."
        if lengths:
            if not (lengths[0].isdigit() and len(lengths[0]) <= 20):
                return 400, "The Content-Length header is not a number."
            if int(lengths[0]) > self.max_bytes:
                return 413, f"The request body has {int(lengths[0]):,} bytes; the limit here is {self.max_bytes:,}."
        return None

    async def _read_body(self, receive) -> bytes | None:
        """The whole body, counted as it streams; None as soon as it passes the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)              # the client left: the app sees an empty body, then the disconnect
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


_SUSPECT_JSON = re.compile(rb"\\u[dD][89a-fA-F]|NaN|Infinity")   # what the full check below looks for


def json_body_problem(scope, body: bytes) -> str | None:
    """Why a JSON body cannot be taken, in words, or None. Refused here, before any route sees it: text that
    is not UTF-8, NaN or Infinity (not JSON; Gradio's 422 answer fails to encode them), and a lone surrogate
    (`"\\ud800"`: valid JSON, but no UTF-8 text; Gradio fails on it deep inside). Malformed JSON is left to
    the route, which answers it in words. Bodies that are not JSON are not read here."""
    import json
    content_type = b"".join(_header_values(scope, b"content-type")).lower()
    if not body or b"json" not in content_type:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "The request body is not valid UTF-8 text."
    if not _SUSPECT_JSON.search(body):
        return None                  # no surrogate escape, no NaN or Infinity: nothing to parse here (fast path)

    def no_constants(name):
        raise ValueError(name)

    try:
        data = json.loads(text, parse_constant=no_constants)
    except ValueError as err:
        if str(err) in ("NaN", "Infinity", "-Infinity"):
            return f"The request body holds {err}, which is not a JSON number; send a number or null."
        return None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return ("The request holds a lone surrogate (an invalid Unicode character, such as \\ud800); "
                "send valid UTF-8 text.")
    return None


def _header_values(scope, name: bytes) -> list[bytes]:
    return [value.strip() for key, value in scope.get("headers") or [] if key.lower() == name]


async def _refuse(send, status: int, message: str, quiet: bool = False) -> None:
    """Answer with the message in JSON and close the connection (the unread body is not worth reading); one
    log line (none when `quiet`: the caller logged it), never a traceback, even when h11 has already answered
    a malformed request on this connection and the send fails."""
    import json
    if not quiet:
        log.info("refused with %d: %s", status, message)
    body = json.dumps({"error": message}).encode()
    await _safe(send({"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"application/json"),
                                  (b"content-length", str(len(body)).encode()), (b"connection", b"close")]}))
    await _safe(send({"type": "http.response.body", "body": body}))


def framing_problem(head: bytes) -> str | None:
    """Why a request's raw header block frames its body ambiguously, in words, or None: more than one
    Content-Length or a list of them (`N, N`; h11 merges identical ones before the app could see them), or
    Content-Length with Transfer-Encoding (refused here, before h11 reads a chunk it would then fail on)."""
    lines = [line.lower() for line in head.split(b"\r\n")[1:]]
    lengths = [line.split(b":", 1)[1] for line in lines if line.startswith(b"content-length:")]
    if len(lengths) > 1 or any(b"," in value for value in lengths):
        return "The request has more than one Content-Length (or a list of them); send one."
    if lengths and any(line.startswith(b"transfer-encoding:") for line in lines):
        return "The request has both Content-Length and Transfer-Encoding; send one of them."
    return None


def _raw_refusal(status: str, message: str, location: str | None = None) -> bytes:
    """A whole HTTP answer, for a connection refused before uvicorn builds a request (`location`: a redirect's)."""
    import json
    body = json.dumps({"error": message}).encode()
    where = f"location: {location}\r\n" if location else ""
    return (f"HTTP/1.1 {status}\r\n{where}content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


def asks_for_the_page(head: bytes) -> bool:
    """Whether a raw request head (or its first bytes) is a GET or HEAD of the page itself, `/` or `/?...`."""
    return re.match(rb"(GET|HEAD) /(\?| )", head) is not None


def request_deadline_protocol(header_timeout_s: float = HEADER_TIMEOUT_S,
                              connections_per_peer: int = MAX_CONNECTIONS_PER_PEER, gate: "RouteGate | None" = None):
    """uvicorn's h11 protocol with three more limits:

    - a connection must finish a request's headers within `header_timeout_s` of opening (or of its previous
      answer), else it is closed (uvicorn itself only times out a connection idle *after* an answer;
      one that opens and sends nothing, or sends its headers a byte a minute, would hold a socket for ever);
    - one peer address may hold at most `connections_per_peer` open connections (trusted proxies, which carry
      everyone's, excepted): past that a connection is answered 429 and closed at once, so one address
      cannot use up the server's file descriptors;
    - a request's head is held until it is whole and handed to h11 in one piece (h11 refuses a part over its
      16 KB incomplete-event limit), and one over `MAX_HEAD_BYTES` is answered in words: a link to the page
      with a redirect to its too-long note, anything else with 431;
    - a request whose framing is ambiguous (`framing_problem`: two Content-Lengths, `N, N`, or Content-Length
      with Transfer-Encoding) is refused (400) from its raw header bytes, before h11 parses it (the first
      request of each read; one pipelined behind another in the same read is left to h11 and `BodyLimit`);
    - a stream request past its address's cap in `gate` is refused (429) from its raw header bytes too: a
      flood of thousands of streams costs the server a few microseconds each, and others are served."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol
    open_per_peer: dict[str, int] = {}          # touched on the event loop only

    class DeadlineH11Protocol(H11Protocol):
        _deadline = None
        _peer = None           # counted against the per-peer cap (an untrusted peer)
        _peer_seen = None      # the connection's peer, whatever it is
        _head = None

        def connection_made(self, transport):
            super().connection_made(transport)
            peer = (transport.get_extra_info("peername") or ("unknown",))[0]
            self._peer_seen = peer
            if not _is_trusted_proxy(peer):
                if open_per_peer.get(peer, 0) >= connections_per_peer:
                    log_refusal(f"a connection of {peer}: {connections_per_peer} already open")
                    transport.write(_raw_refusal("429 Too Many Requests", f"You already have {connections_per_peer} "
                                                 "connections open to this demo (counted per address)."))
                    transport.close()
                    return
                self._peer = peer
                open_per_peer[peer] = open_per_peer.get(peer, 0) + 1
            self._arm()

        def data_received(self, data):
            if self._head is not None or self.conn.their_state is h11.IDLE:
                head = (self._head or b"") + data
                end = head.find(b"\r\n\r\n")
                # Too long whether it came in one read or in several (the same request gets the same answer
                # however the network cut it): a link to the page goes back to the page, with a note.
                if end >= MAX_HEAD_BYTES or (end < 0 and len(head) >= MAX_HEAD_BYTES):
                    message = (f"The request's address and headers are longer than this demo reads "
                               f"({MAX_HEAD_BYTES:,} bytes); a share link is at most 32,700 characters.")
                    if asks_for_the_page(head):
                        log_refusal(f"a link to the page over {MAX_HEAD_BYTES} bytes: sent to ?link={TOO_LONG_LINK}")
                        # relative, so that it stays under whatever path prefix a proxy serves the page at
                        self._refuse_and_drain("303 See Other", message, location=f"?link={TOO_LONG_LINK}")
                    else:
                        log_refusal(f"a request head over {MAX_HEAD_BYTES} bytes")
                        self._refuse_and_drain("431 Request Header Fields Too Large", message)
                    return
                if end < 0:
                    # Held until the head is whole (or over the limit): h11 given part of a head longer than
                    # its 16 KB incomplete-event limit answers a bare 400 and resets the socket, so a long share
                    # link that the network cut into several reads would fail.
                    self._head = head
                    self._unset_keepalive_if_required()        # bytes arrived: not an idle kept-alive socket
                    return
                self._head, data = None, head
                problem = framing_problem(head[:end])
                if problem is not None:
                    log_refusal(f"a request's framing: {problem}")
                    self.transport.write(_raw_refusal("400 Bad Request", problem))
                    self.transport.close()
                    return
                busy = gate.refusal_from_head(self._peer or self._peer_seen, head[:end]) if gate is not None else None
                if busy is not None:
                    log_refusal(f"a stream request: {busy.split(';')[0]}")
                    self.transport.write(_raw_refusal("429 Too Many Requests", busy))
                    self.transport.close()
                    return
            super().data_received(data)

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def _refuse_and_drain(self, status: str, message: str, location: str | None = None):
            """Answer, end our side, and read (and drop) what the client is still sending for a moment before
            closing: closing a socket with unread bytes resets it, and the client would never see the answer."""
            self.data_received = lambda data: None          # the rest of this request is not read
            self.transport.write(_raw_refusal(status, message, location))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(2.0, self.transport.close)

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
            if self._peer is not None:
                open_per_peer[self._peer] -= 1
                if open_per_peer[self._peer] <= 0:
                    del open_per_peer[self._peer]
                self._peer = None
            super().connection_lost(exc)

        def _arm(self):
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout_s, self._expire, self.cycle)

        def _expire(self, cycle_when_armed):
            # Still the cycle of the arming moment: no request has begun since. Close, quietly.
            if self.cycle is cycle_when_armed and not self.transport.is_closing():
                log.info("closed a connection that sent no complete request within %g s", header_timeout_s)
                self.transport.close()

    DeadlineH11Protocol.open_per_peer = open_per_peer      # read by the tests
    return DeadlineH11Protocol


@contextmanager
def server_timeouts(header_timeout_s: float = HEADER_TIMEOUT_S, keep_alive_s: float = KEEP_ALIVE_S):
    """Inside the block, every uvicorn server started (Gradio's `launch` starts one) uses the protocol above,
    closes idle kept-alive connections after `keep_alive_s`, believes no proxy header (uvicorn's own
    proxy-header handling trusts 127.0.0.1 by default and would let any local process choose its client
    address: `address_from` alone reads the configured header, from configured proxies), and its log lines
    are rate-limited. Gradio builds uvicorn's Config itself without passing these through, so its class is
    swapped for the block's duration. The app it serves is wrapped in the `RouteGate`, outermost, so a
    refused request costs as little as possible (none of Gradio's middleware runs for it)."""
    import uvicorn
    original = uvicorn.Config

    class TimedConfig(original):
        def __init__(self, *args, **kwargs):
            gate = None
            if kwargs.get("app") is not None and not isinstance(kwargs["app"], str):
                gate = kwargs["app"] = RouteGate(kwargs["app"])
            kwargs.setdefault("http", request_deadline_protocol(header_timeout_s, gate=gate))
            kwargs.setdefault("timeout_keep_alive", keep_alive_s)
            kwargs.setdefault("h11_max_incomplete_event_size", MAX_HEAD_BYTES)    # a head as long as the protocol reads
            kwargs["proxy_headers"] = False
            super().__init__(*args, **kwargs)
            rate_limit_logs()                      # uvicorn has configured its loggers by now

    uvicorn.Config = TimedConfig
    try:
        yield
    finally:
        uvicorn.Config = original


# ---- who is asking: one client address per request -----------------------------------------------------------

# On a Space the container is reached only through Hugging Face's proxy, from a private address: with neither
# variable set there, the proxy's X-Forwarded-For is read from private peers, so visitors are not one address.
SPACE_DEFAULTS = {ADDRESS_HEADER_ENV: "x-forwarded-for", TRUSTED_PROXIES_ENV: "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"}


def _setting(name: str) -> str:
    """$name, or on a Space where neither address variable is set, its Space default (`SPACE_DEFAULTS`)."""
    value = os.environ.get(name, "").strip()
    unset = not any(os.environ.get(other, "").strip() for other in SPACE_DEFAULTS)
    if not value and unset and os.environ.get("SPACE_ID"):
        return SPACE_DEFAULTS[name]
    return value


def _trusted_proxies() -> list:
    import ipaddress
    networks = []
    for item in _setting(TRUSTED_PROXIES_ENV).split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                log.warning("%s: %s is not an address or network; ignored", TRUSTED_PROXIES_ENV, shown(item))
    return networks


def _is_trusted_proxy(peer: str | None) -> bool:
    import ipaddress
    try:
        peer_ip = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    return any(peer_ip in network for network in _trusted_proxies())


def proxy_warning() -> str | None:
    """A warning, in words, when the demo runs as a Space (behind Hugging Face's proxy) with no trusted proxy
    configured: every visitor then arrives from the proxy's address, and the per-address caps (jobs, page
    events, streams, connections) are shared by all of them. None otherwise."""
    if not os.environ.get("SPACE_ID") or (_setting(TRUSTED_PROXIES_ENV) and _setting(ADDRESS_HEADER_ENV)):
        return None
    return (f"This demo runs as a Space, but {ADDRESS_HEADER_ENV} and {TRUSTED_PROXIES_ENV} are not both set: "
            "every visitor counts as the proxy's one address, so the per-address limits are shared by all "
            f"visitors. Set them as the Space's variables (e.g. x-forwarded-for and the proxy's network).")


def address_from(peer: str | None, reported: list[str]) -> str:
    """The address a request counts against, from its connection's peer and the values of the configured
    address header: the peer, unless the peer is a trusted proxy ($PROBING_TRUSTED_PROXIES, addresses or
    networks) and $PROBING_CLIENT_ADDRESS_HEADER names a header, then the last address in that header (the
    one the proxy itself appended; earlier ones are the client's to invent). A direct client's headers are
    never believed, whatever they are called (the server's own proxy-header handling is off:
    `server_timeouts`)."""
    import ipaddress
    peer = peer or "unknown"
    if not _setting(ADDRESS_HEADER_ENV) or not _is_trusted_proxy(peer):
        return peer
    last = (reported[-1] if reported else "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


def client_address(request) -> str:
    """`address_from` for a Starlette/FastAPI request (the queue's events keep theirs)."""
    peer = getattr(getattr(request, "client", None), "host", None)
    header = _setting(ADDRESS_HEADER_ENV).lower()
    if not header or request is None:
        return address_from(peer, [])
    values = request.headers.getlist(header) if hasattr(request.headers, "getlist") else [request.headers.get(header, "")]
    return address_from(peer, values)


def scope_address(scope) -> str:
    """`address_from` for a raw ASGI scope (the middleware's view of a request, before any route runs)."""
    client = scope.get("client") or (None, None)
    header = _setting(ADDRESS_HEADER_ENV).lower().encode("latin-1")
    values = [v.decode("latin-1") for v in _header_values(scope, header)] if header else []
    return address_from(client[0], values)


# ---- the queue: a cap per client address, and patching's own small queue ------------------------------------

# These read Gradio's queue directly (no getattr with empty defaults): a renamed internal must fail loudly,
# never count 0 and let everyone in. `check_gradio_internals` checks each of them before the server starts.
def _waiting(queue) -> list:
    return [event for group in queue.event_queue_per_concurrency_id.values() for event in group.queue]


def _running(queue) -> list:
    return [event for job in queue.active_jobs if job for event in job]


def jobs_of_address(queue, address: str) -> int:
    """Requests of this client address waiting in the queue or running now (every event and API route)."""
    return sum(1 for event in _waiting(queue) + _running(queue)
               if client_address(getattr(event, "request", None)) == address)


def waiting_in_group(queue, concurrency_id: str) -> int:
    group = queue.event_queue_per_concurrency_id.get(concurrency_id)
    return len(group.queue) if group is not None else 0


def per_address_message(limit: int) -> str:
    return (f"You already have {limit} requests waiting or running on this demo (counted per address); "
            "wait for one to finish, then try again.")


def patch_queue_message(limit: int) -> str:
    return (f"Patching is busy: {limit} patching requests are already waiting. Try again in a minute; "
            "scoring sentences is not affected.")


def cap_queue(queue, per_address: int = MAX_JOBS_PER_ADDRESS, patch_queue: int = PATCH_QUEUE_SIZE,
              patch_group: str = PATCH_GROUP_ID) -> None:
    """Wrap the queue's `push` (which `/queue/join` and every `/call/*` route go through) so that one client
    address has at most `per_address` requests waiting or running, and at most `patch_queue` patching jobs
    wait. The refusal is the queue's own "queue full" answer (HTTP 503 on the API routes) with its message in
    words. Pushes are checked one at a time, so a burst cannot slip between the count and the push."""
    import asyncio as _asyncio
    original = queue.push
    lock = _asyncio.Lock()

    async def push(body, request, username):
        async with lock:
            address = client_address(request)
            if jobs_of_address(queue, address) >= per_address:
                log.info("refused a request of %s: %d requests waiting or running", address, per_address)
                return False, per_address_message(per_address), "queue_full"
            fn = _fn_of(queue, body)
            if getattr(fn, "concurrency_id", None) == patch_group and waiting_in_group(queue, patch_group) >= patch_queue:
                log.info("refused a patching request of %s: %d waiting", address, patch_queue)
                return False, patch_queue_message(patch_queue), "queue_full"
            return await original(body, request, username)

    queue.push = push


def _fn_of(queue, body):
    """The event function a queue body asks for (None when it names none: the queue's own push answers that)."""
    index = getattr(body, "fn_index", None)
    return queue.blocks.fns.get(index) if isinstance(index, int) else None


# ---- Gradio internals the limits stand on, checked before the server starts ---------------------------------

class GradioInternalsError(RuntimeError):
    """An internal of Gradio that a limit relies on is missing: the demo refuses to start rather than serve
    without its per-address cap."""


def missing_gradio_internals(blocks) -> list[str]:
    """The internals of Gradio that `cap_queue`, `worded_refusals` and the closed direct routes rely on and
    that this Gradio lacks, in words (empty when all are there). Call after `blocks.queue(...)`.

    The per-address cap wraps `queue.push` (the one door of `/queue/join` and every `/call/*` route) and counts
    `queue.event_queue_per_concurrency_id[*].queue` and `queue.active_jobs`, finding each event's function in
    `queue.blocks.fns`; errors are worded by replacing `blocks.process_api`; the direct run routes are closed
    by `blocks.api_open = False`; and the server's limits need uvicorn's `Config(http=, timeout_keep_alive=,
    proxy_headers=)` and h11 protocol class."""
    import inspect
    problems = []
    queue = getattr(blocks, "_queue", None)
    if queue is None:
        return ["Blocks._queue (the queue; call blocks.queue() first)"]
    push = getattr(queue, "push", None)
    if not inspect.iscoroutinefunction(push):
        problems.append("Queue.push (an async method)")
    elif list(inspect.signature(push).parameters)[:3] != ["body", "request", "username"]:
        problems.append(f"Queue.push(body, request, username) (found {inspect.signature(push)})")
    if not isinstance(getattr(queue, "event_queue_per_concurrency_id", None), dict):
        problems.append("Queue.event_queue_per_concurrency_id (a dict of waiting events per group)")
    if not isinstance(getattr(queue, "active_jobs", None), list):
        problems.append("Queue.active_jobs (a list of running jobs)")
    if not isinstance(getattr(getattr(queue, "blocks", None), "fns", None), dict):
        problems.append("Queue.blocks.fns (the event functions by index)")
    if not inspect.iscoroutinefunction(getattr(blocks, "process_api", None)):
        problems.append("Blocks.process_api (an async method every call runs through)")
    if getattr(blocks, "api_open", None) is not False:
        problems.append("Blocks.api_open = False (the direct run routes closed to queued functions)")
    import uvicorn
    parameters = inspect.signature(uvicorn.Config.__init__).parameters
    problems += [f"uvicorn.Config({name}=)" for name in ("http", "timeout_keep_alive", "proxy_headers",
                                                          "h11_max_incomplete_event_size")
                 if name not in parameters]
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
        problems += [f"H11Protocol.{name}" for name in ("connection_made", "connection_lost", "on_response_complete",
                                                        "_unset_keepalive_if_required")
                     if not hasattr(H11Protocol, name)]
    except ImportError:
        problems.append("uvicorn.protocols.http.h11_impl.H11Protocol")
    return problems


def check_gradio_internals(blocks) -> None:
    """Raise GradioInternalsError naming every missing internal (`missing_gradio_internals`)."""
    problems = missing_gradio_internals(blocks)
    if problems:
        from importlib.metadata import version         # the guard itself imports no Gradio
        raise GradioInternalsError(
            f"The demo's limits rely on Gradio internals that Gradio {version('gradio')} lacks: "
            + "; ".join(problems) + ". Without them one visitor could hold the whole server, so the demo does not "
            "start. Install the Gradio version in requirements.txt, or port probing/demo/guard.py.")


# ---- one gate for every route: the direct run routes, streams, connections and errors -----------------------

API_PREFIX = "/gradio_api/"
# The routes that run an event's function directly, outside the queue: Gradio's page sends its queue=False
# events to /run/predict, and /run/<api> and /api/<api> run any unqueued function (queued ones are closed by
# `api_open = False`).
DIRECT_ROUTES = ("run/", "api/")
# Long-lived answers: the page's session heartbeat, and the event streams of the queue and the /call routes.
STREAM_ROUTES = ("heartbeat/", "queue/data", "call/", "stream/")


def route_kind(method: str, path: str) -> str:
    """'direct' (a function run outside the queue), 'stream' (a long-lived event stream) or 'other'."""
    at = path.find(API_PREFIX)
    route = path[at + len(API_PREFIX):] if at >= 0 else ""
    if method == "POST" and route.startswith(DIRECT_ROUTES):
        return "direct"
    if method == "GET" and route.startswith(STREAM_ROUTES):
        # /call/<api>/<event_id> streams an event; /call/<api> (a POST) joins the queue.
        if not route.startswith("call/") or route.rstrip("/").count("/") >= 2:
            return "stream"
    return "other"


def unqueued_message(limit: int) -> str:
    return (f"You already have {limit} page events running on this demo (counted per address); "
            "wait for one to finish, then try again.")


def rate_message(rate: float) -> str:
    return (f"You sent more than {rate:g} page events a second to this demo (counted per address); "
            "slow down and try again.")


def streams_message(limit: int) -> str:
    return (f"You already have {limit} open event streams on this demo (counted per address); close a tab "
            "or wait for a request to finish.")


def requests_message(limit: int) -> str:
    return f"You already have {limit} requests open on this demo (counted per address); try again in a moment."


class RouteGate:
    """ASGI middleware in front of every route: one client address (`scope_address`) may have at most
    `unqueued` functions running outside the queue (the page's queue=False events on /run/predict, and any
    /run/* or /api/* call) and start at most `rate` of them a second (after a burst of `burst`: a token
    bucket), at most `streams` heartbeat or event streams open (each closed, as if its client had left, after
    `lifetime_s`) and at most `requests` requests of any kind open. Past a cap the request is refused (429,
    its message in words, one log line) before a byte of its body is read; a refused page event is answered
    after `refusal_delay_s`, so that a client refused in a loop cannot turn the refusals themselves into the
    load. A page fires a few events at a time, each at most once in flight: far below every limit.

    It also answers every failure in words: an exception any route raises becomes a JSON 500 with a worded
    error (never Starlette's plain-text "Internal Server Error", never a traceback in the log) and a plain-text
    500 a route returns is rewritten the same way. Counts live in this object and are touched only on the
    event loop (no lock needed)."""

    MAX_BUCKETS = 10_000                                 # addresses whose rate is remembered (oldest dropped)

    def __init__(self, app, unqueued: int = MAX_UNQUEUED_PER_ADDRESS, streams: int = MAX_STREAMS_PER_ADDRESS,
                 requests: int = MAX_REQUESTS_PER_ADDRESS, lifetime_s: float = STREAM_LIFETIME_S,
                 rate: float = UNQUEUED_RATE, burst: int = UNQUEUED_BURST, refusal_delay_s: float = REFUSAL_DELAY_S,
                 clock=time.monotonic):
        self.app = app
        self.limits = {"direct": unqueued, "stream": streams}
        self.requests_limit, self.lifetime_s = requests, lifetime_s
        self.rate, self.burst, self.refusal_delay_s, self.clock = rate, burst, refusal_delay_s, clock
        self.open: dict[tuple[str, str], int] = {}      # (kind, address) -> open now; kind "any" counts all
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # address -> (tokens, when)

    def refusal(self, kind: str, address: str) -> str | None:
        """The worded refusal for one more request of `kind` from `address`, or None when it may run (a page
        event admitted here has taken its token)."""
        if self.open.get(("any", address), 0) >= self.requests_limit:
            return requests_message(self.requests_limit)
        limit = self.limits.get(kind)
        if limit is not None and self.open.get((kind, address), 0) >= limit:
            return (unqueued_message if kind == "direct" else streams_message)(limit)
        if kind == "direct" and not self._take_token(address):
            return rate_message(self.rate)
        return None

    def _take_token(self, address: str) -> bool:
        """Token bucket per address: `burst` tokens, refilled at `rate` a second; one per page event."""
        now = self.clock()
        tokens, then = self.buckets.pop(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        allowed = tokens >= 1.0
        self.buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        while len(self.buckets) > self.MAX_BUCKETS:
            self.buckets.popitem(last=False)
        return allowed

    def _count(self, keys, step: int) -> None:
        for key in keys:
            self.open[key] = self.open.get(key, 0) + step
            if self.open[key] <= 0:
                del self.open[key]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        address = scope_address(scope)
        kind = route_kind(scope.get("method", ""), scope.get("path", ""))
        refusal = self.refusal(kind, address)
        if refusal is not None:
            log_refusal(f"a {kind} request of {address}: {refusal.split(';')[0]}")
            if kind == "direct" and self.refusal_delay_s > 0 and refusal != requests_message(self.requests_limit):
                self._count([("any", address)], +1)      # a waiting refusal is an open request too
                try:
                    await asyncio.sleep(self.refusal_delay_s)
                finally:
                    self._count([("any", address)], -1)
            return await _refuse(send, 429, refusal, quiet=True)
        keys = [("any", address)] + ([(kind, address)] if kind in self.limits else [])
        self._count(keys, +1)
        try:
            if kind == "stream":
                receive = _disconnect_after(receive, self.lifetime_s)
            await self._answer_in_words(scope, receive, send)
        finally:
            self._count(keys, -1)

    def refusal_from_head(self, peer: str, head: bytes) -> str | None:
        """`refusal` for a stream request read from its raw header block (the protocol asks before h11 parses
        it, so that a flood of streams is turned away at the least cost); None for any other request, which
        the gate checks as usual once it is parsed."""
        request_line, _, rest = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        if len(parts) != 3:
            return None
        kind = route_kind(parts[0].decode("latin-1"), parts[1].split(b"?", 1)[0].decode("latin-1"))
        if kind != "stream":
            return None
        header = _setting(ADDRESS_HEADER_ENV).lower().encode("latin-1")
        values = [line.split(b":", 1)[1].strip().decode("latin-1") for line in rest.split(b"\r\n")
                  if header and line.lower().startswith(header + b":")]
        return self.refusal(kind, address_from(peer, values))

    async def _answer_in_words(self, scope, receive, send):
        state = {"started": False, "ended": False, "plain_500": False}

        async def watched(message):
            if message["type"] == "http.response.start":
                content_type = b"".join(v for k, v in message.get("headers", []) if k.lower() == b"content-type")
                if message["status"] >= 500 and not content_type.startswith(b"application/json"):
                    state["plain_500"] = True        # answered in words below instead
                    return
                state["started"] = True
            elif message["type"] == "http.response.body":
                if state["plain_500"]:
                    return
                state["ended"] = not message.get("more_body", False)
            await send(message)

        failure = None
        try:
            await self.app(scope, receive, watched)
        except Exception as err:          # any route's failure: one log line, a worded answer
            failure = err
            log_refusal(f"a request to {shown(scope.get('path', ''), 80)} failed: {type(err).__name__}: "
                        f"{shown(str(err).splitlines()[0] if str(err) else '', 120)}")
        if not state["started"] and type(failure).__name__ == "FnIndexInferError":   # Gradio: no such API name
            await _refuse(send, 404, "This demo has no endpoint by that name; see /gradio_api/info.", quiet=True)
        elif not state["started"] and (failure is not None or state["plain_500"]):
            await _safe(_worded_500(send, type(failure).__name__ if failure is not None else "the server failed on it"))
        elif state["started"] and not state["ended"]:
            # A stream the gate ended (its lifetime passed), or a route that failed or stopped mid-answer.
            await _safe(send({"type": "http.response.body", "body": b"", "more_body": False}))


def _disconnect_after(receive, seconds: float):
    """`receive`, except that once `seconds` have passed it reports the client gone: a stream then ends the
    way it ends when its visitor leaves (Starlette's streaming answer listens for exactly this), and Gradio
    runs its own clean-up for that session."""
    deadline = time.monotonic() + seconds

    async def bounded():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"type": "http.disconnect"}
        try:
            return await asyncio.wait_for(receive(), remaining)
        except asyncio.TimeoutError:
            log.info("closed a stream after its lifetime of %g s", seconds)
            return {"type": "http.disconnect"}

    return bounded


async def _worded_500(send, what: str) -> None:
    import json
    body = json.dumps({"error": f"This request could not be processed ({what}); the server keeps serving."}).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _safe(awaitable) -> None:
    """Send on a connection that may already be gone or refused (h11 has answered it): nothing to log."""
    try:
        await awaitable
    except Exception:  # the connection is closed or in an error state; the client will not read more
        pass


# ---- a log that cannot be flooded ---------------------------------------------------------------------------

LOG_BURST = int(os.environ.get("PROBING_LOG_BURST", "20"))            # lines of one kind per window
LOG_WINDOW_S = float(os.environ.get("PROBING_LOG_WINDOW_S", "10"))


class RateLimitedLines:
    """A logging filter: at most `burst` records of one kind (logger and message template) per `window_s`;
    the rest are dropped and counted, and the next record of that kind after the window says how many were
    dropped. A flood (thousands of refusals, or an error repeated per connection) costs the log a few lines."""

    def __init__(self, burst: int = LOG_BURST, window_s: float = LOG_WINDOW_S, clock=time.monotonic):
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self.kinds: OrderedDict[tuple, list] = OrderedDict()     # kind -> [window start, lines, dropped]
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg)[:200])
        now = self.clock()
        with self.lock:
            window = self.kinds.get(kind)
            if window is None or now - window[0] >= self.window_s:
                dropped = window[2] if window else 0
                self.kinds[kind] = window = [now, 0, 0]
                self.kinds.move_to_end(kind)
                while len(self.kinds) > 1000:            # bounded: any message template is a kind
                    self.kinds.popitem(last=False)
                if dropped:
                    record.msg = f"{record.msg} [{dropped:,} similar lines dropped in the last {self.window_s:g} s]"
            if window[1] >= self.burst:
                window[2] += 1
                return False
            window[1] += 1
            return True


_LOG_FILTER = RateLimitedLines()


def rate_limit_logs(loggers=("", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio")) -> RateLimitedLines:
    """Put the rate limit on every handler of these loggers (a filter on a handler sees the records of every
    logger that reaches it). Call after logging is configured (uvicorn configures its own)."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if _LOG_FILTER not in handler.filters:
                handler.addFilter(_LOG_FILTER)
    return _LOG_FILTER


def log_refusal(message: str) -> None:
    """One line per refusal (rate-limited with the rest of the log)."""
    log.info("refused: %s", message)          # one template: the rate limit counts all refusals as one kind


def printable(text: str) -> str:
    """Text with every non-printable character (controls, bidi overrides such as U+202E, lone surrogates)
    written as its escape, so an echoed value can neither reorder nor hide the words around it."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in str(text))
