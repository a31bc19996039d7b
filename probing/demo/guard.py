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
  Transfer-Encoding, two lengths) refused from the headers; every body counted as it streams, over
  `MAX_BODY_BYTES` or slower than `BODY_TIMEOUT_S` refused; every upload refused; headers must arrive within
  `HEADER_TIMEOUT_S`, and idle connections close after `KEEP_ALIVE_S`. Each refusal is one log line.
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


def _header_values(scope, name: bytes) -> list[bytes]:
    return [value.strip() for key, value in scope.get("headers") or [] if key.lower() == name]


async def _refuse(send, status: int, message: str) -> None:
    """Answer with the message in JSON and close the connection (the unread body is not worth reading); one
    log line, never a traceback."""
    import json
    log.info("refused with %d: %s", status, message)
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def request_deadline_protocol(header_timeout_s: float = HEADER_TIMEOUT_S):
    """uvicorn's h11 protocol with one more limit: a connection must finish a request's headers within
    `header_timeout_s` of opening (or of its previous answer), else it is closed. uvicorn itself only times
    out a connection idle *after* an answer (`timeout_keep_alive`); one that opens and sends nothing, or
    sends its headers a byte a minute, would hold a socket for ever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
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

    return DeadlineH11Protocol


@contextmanager
def server_timeouts(header_timeout_s: float = HEADER_TIMEOUT_S, keep_alive_s: float = KEEP_ALIVE_S):
    """Inside the block, every uvicorn server started (Gradio's `launch` starts one) uses the deadline
    protocol above and closes idle kept-alive connections after `keep_alive_s`. Gradio builds uvicorn's
    Config itself without passing these through, so its class is swapped for the block's duration."""
    import uvicorn
    original = uvicorn.Config
    protocol = request_deadline_protocol(header_timeout_s)

    class TimedConfig(original):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("http", protocol)
            kwargs.setdefault("timeout_keep_alive", keep_alive_s)
            super().__init__(*args, **kwargs)

    uvicorn.Config = TimedConfig
    try:
        yield
    finally:
        uvicorn.Config = original


# ---- who is asking: one client address per request -----------------------------------------------------------

def _trusted_proxies() -> list:
    import ipaddress
    networks = []
    for item in os.environ.get(TRUSTED_PROXIES_ENV, "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                log.warning("%s: %s is not an address or network; ignored", TRUSTED_PROXIES_ENV, shown(item))
    return networks


def client_address(request) -> str:
    """The address a request counts against: the connection's peer, or, when that peer is a trusted proxy
    ($PROBING_TRUSTED_PROXIES, addresses or networks) and $PROBING_CLIENT_ADDRESS_HEADER names its header, the
    last address in that header (the one the proxy itself appended; earlier ones are the client's to invent).
    A direct client's headers are never believed."""
    import ipaddress
    peer = getattr(getattr(request, "client", None), "host", None) or "unknown"
    header = os.environ.get(ADDRESS_HEADER_ENV, "").strip().lower()
    if not header:
        return peer
    try:
        peer_ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(peer_ip in network for network in _trusted_proxies()):
        return peer
    values = request.headers.getlist(header) if hasattr(request.headers, "getlist") else [request.headers.get(header, "")]
    reported = (values[-1] if values else "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(reported))
    except ValueError:
        return peer


# ---- the queue: a cap per client address, and patching's own small queue ------------------------------------

def _waiting(queue) -> list:
    groups = getattr(queue, "event_queue_per_concurrency_id", {}) or {}
    return [event for group in groups.values() for event in getattr(group, "queue", [])]


def _running(queue) -> list:
    return [event for job in getattr(queue, "active_jobs", []) or [] if job for event in job]


def jobs_of_address(queue, address: str) -> int:
    """Requests of this client address waiting in the queue or running now (every event and API route)."""
    return sum(1 for event in _waiting(queue) + _running(queue)
               if client_address(getattr(event, "request", None)) == address)


def waiting_in_group(queue, concurrency_id: str) -> int:
    groups = getattr(queue, "event_queue_per_concurrency_id", {}) or {}
    group = groups.get(concurrency_id)
    return len(getattr(group, "queue", []) or []) if group is not None else 0


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
    fns = getattr(getattr(queue, "blocks", None), "fns", None) or {}
    index = getattr(body, "fn_index", None)
    return fns.get(index) if isinstance(index, int) else None
