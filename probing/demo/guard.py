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
- **Load** (`FORWARD_SLOTS`, `BodyLimit`, `cap_waiting_per_session`): one global limit on concurrent forward
  passes, whatever the event; request bodies over `MAX_BODY_BYTES` and every upload refused before they are
  read; at most `MAX_WAITING_PER_SESSION` queued jobs per client session.
"""
from __future__ import annotations

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
MAX_WAITING_PER_SESSION = int(os.environ.get("PROBING_MAX_WAITING_PER_SESSION", "4"))
CONCURRENCY = int(os.environ.get("PROBING_CONCURRENCY", "2"))   # forward passes at once, all events together
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


# ---- one global limit on forward passes ---------------------------------------------------------------

FORWARD_SLOTS = threading.BoundedSemaphore(max(1, CONCURRENCY))


@contextmanager
def forward_slot():
    """Hold one of the CONCURRENCY forward-pass slots, whatever event or endpoint asked for the pass."""
    with FORWARD_SLOTS:
        yield


_EXCLUSIVE = threading.Lock()      # two exclusive requests never hold half the slots each


@contextmanager
def exclusive_forward():
    """Hold every forward-pass slot: for patching, whose hooks sit on the shared model's modules and would edit
    any other request's forward pass running at the same time."""
    with _EXCLUSIVE:
        for _ in range(max(1, CONCURRENCY)):
            FORWARD_SLOTS.acquire()
    try:
        yield
    finally:
        for _ in range(max(1, CONCURRENCY)):
            FORWARD_SLOTS.release()


# ---- request bodies and uploads -------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: refuse uploads, and any request body over `max_bytes`, before it is read or parsed.

    The declared Content-Length is checked first; a body without one (chunked) is read here up to the limit
    and refused past it, so a 40 MB JSON body never reaches the JSON parser.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, refused_paths: tuple[str, ...] = ("/upload",)):
        self.app, self.max_bytes, self.refused_paths = app, max_bytes, refused_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if scope.get("method") == "POST" and any(path.endswith(p) for p in self.refused_paths):
            return await _refuse(send, 403, "This demo accepts no file uploads.")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared[:20])
            except ValueError:
                return await _refuse(send, 400, "The Content-Length header is not a number.")
            if size > self.max_bytes:
                return await _refuse(send, 413, f"The request body has {size:,} bytes; the limit here is "
                                                f"{self.max_bytes:,}.")
        if declared is not None or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # No declared length (a chunked body): read it here, at most max_bytes, before the app parses it.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _refuse(send, 413, f"The request body is over the limit of {self.max_bytes:,} bytes.")
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)




async def _refuse(send, status: int, message: str) -> None:
    import json
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- at most a few queued jobs per client session --------------------------------------------------------

def waiting_jobs(queue, session_hash: str) -> int:
    """Jobs of this session waiting in a Gradio queue (its per-concurrency-group lists of events)."""
    groups = getattr(queue, "event_queue_per_concurrency_id", {}) or {}
    return sum(1 for group in groups.values() for event in getattr(group, "queue", [])
               if getattr(event, "session_hash", None) == session_hash)


def cap_waiting_per_session(queue, limit: int = MAX_WAITING_PER_SESSION) -> None:
    """Wrap the queue's `push` so one session can have at most `limit` jobs waiting: one client cannot fill
    the shared queue. The refusal is the queue's own "queue full" answer, with a message in words."""
    original = queue.push

    async def push(body, request, username):
        session = getattr(body, "session_hash", None)
        if session is not None and waiting_jobs(queue, session) >= limit:
            return (False, f"You already have {limit} requests waiting; wait for them to finish.", "queue_full")
        return await original(body, request, username)

    queue.push = push
