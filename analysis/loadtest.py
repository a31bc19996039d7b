"""Load test for the demo's API: many gradio_client users at once, every answer checked.

    python -m analysis.loadtest --url http://127.0.0.1:7860 [--users 25] [--requests 40]
    python -m analysis.loadtest --start [--port 7870]      # starts `python app.py` itself, stops it after

The mix includes adversarial requests (sent to 127.0.0.1 only; any other host is refused): a 1 MB word, a
60,000-character word, a 4,400-digit span, a list and a dict where strings belong, Markdown in a word, a
body that declares 40 MB, an upload. A monitor asks `/gradio_api/info` every half second throughout, and
its slowest answer is reported: one request must never stall the others. Each odd request's answer is printed.

After the rounds come the attacks, each with its limit (`attacks`):
- **fresh session hashes**: one address sends 100 `queue/join` calls, each with a new session hash; at most
  its cap (4) may be accepted, and another address is served meanwhile;
- **Content-Length with a chunked body**: four requests declare 10 bytes and stream up to 16 MB chunked;
  each must be refused with 4xx and the server's memory must not move (+50 MiB at most);
- **patching flood**: 12 addresses send `/patch_heads` in a loop while `/score_heads` is timed; the p95
  ratio flood / idle (idle: timed before and after the flood) is printed and must stay under 3;
- **slow connections**: 20 connections that send nothing and 20 that send their headers a byte a second;
  the server must close every one of them (within its header deadline plus a margin) and keep answering.

- **direct runs**: one address sends 20 `POST /gradio_api/run/score_heads` and 20 `/gradio_api/api/patch_heads`
  at once (the routes Gradio opens off a Space, running queued functions outside the queue): at most 4 may be
  accepted, and another address is served meanwhile;
- **spoofed addresses**: 100 joins from 127.0.0.1, each with its own X-Forwarded-For, X-Real-IP and Forwarded:
  at most 4 accepted (a client chooses its address by no header the server was not told to trust);
- **unqueued events**: one address sends the page's queue=False event (`/gradio_api/run/predict`, a 5,000-
  character text) 16 at a time while `/score_heads` is timed: the p95 ratio must stay under 3;
- **heartbeat flood**: one address opens 2,000 `GET /gradio_api/heartbeat/<anything>` streams; each must be
  refused or closed within the stream lifetime plus a margin, and another address served within a second;
- **fuzz**: odd requests to every kind of route (unknown routes and keys, fn_index -1 and huge, NaN, lone
  surrogates, a right-to-left override, duplicate Content-Length, CL+TE with a malformed chunk): no plain-text
  500, no echoed control character, no traceback in the server's log.

The test plays a proxy: every simulated visitor sends its own address in `X-Loadtest-Client`, and the server it
starts (`--start`, never in Space mode) trusts that header from 127.0.0.1 only (`PROBING_TRUSTED_PROXIES`), as
the Space's server trusts its proxy's. A server started otherwise sees every visitor as one address.

Each user has its own `gradio_client.Client` and sends a mix of requests: `/score_heads` (coreference,
negation, a sentence with emoji), `/head_view`, `/patch_heads` (a not/really pair), and bad input (empty text, a word that occurs twice, a
path as model id, a head out of range, 100,000 characters, Chinese text with no pronoun). Every answer must
be the right one: the numbers equal the library's (`probing.heads.score_examples` and `probing.patching.patch_pair`, computed here), the
head view is a sandboxed iframe opened on the asked head, each bad input gets its message in words.

It reports p50/p95 latency and throughput, and the server's resident memory (psutil, on the server's pid)
after a warm-up and after each of --rounds rounds. It exits 1 when any request failed or got a wrong answer,
when memory grew more than --max-rss-growth (20%) over the warm-up by the last round, when any attack's
limit was broken, or when a round did not finish within --timeout seconds (a deadlock or a stuck queue).

`AppServer` (start `app.py` on a port and wait until it serves) is used by the tests too.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"


# ---- a server to test --------------------------------------------------------------------------------

class _StartAgain(RuntimeError):
    """app.py could not start on its port for a reason another port would cure."""


def free_port() -> int:
    """A port no one is listening on now on 127.0.0.1 (it can be taken before the caller binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`python app.py` in a subprocess on 127.0.0.1:port; a context manager that waits until it serves."""

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None, startup_timeout: float = 180.0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile("w+", prefix="probing-app-", suffix=".log", delete=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def __enter__(self) -> "AppServer":
        for _ in range(3):
            try:
                return self._start()
            except _StartAgain as why:
                # A port picked free can be taken before app.py binds it (another test process picked it too),
                # and Gradio's launch gives up when its own first request to the page takes over 3 s (a loaded
                # machine): a new port, said out loud.
                print(f"app.py did not start on port {self.port} ({why}); starting it again on another port",
                      file=sys.stderr)
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}/"
        return self._start()

    def _start(self) -> "AppServer":
        env = {key: value for key, value in os.environ.items() if key not in NOT_A_SPACE}   # a Space if asked
        env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port),
                   GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **self.env)
        self.log.seek(0)
        self.log.truncate()                  # this attempt's log only
        self.process = subprocess.Popen([sys.executable, str(APP)], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_tail()
                if "localhost is not accessible" in log or "Cannot find empty port" in log:
                    raise _StartAgain(log.strip().splitlines()[-1])
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{log}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"app.py did not serve {self.url} within {self.startup_timeout:.0f}s:\n"
                               f"{self.log_tail()}")
        # The page answered, but whose page? Under parallel test processes another process's server can hold
        # the port this one was told to use (Gradio then moves to the next port without a word); every request
        # would go to the wrong server.
        if not listens_on(self.process.pid, self.port):
            self.stop()
            raise _StartAgain(f"the port is served by another process than app.py (pid {self.process.pid})")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` listens on TCP `port` (its own sockets only: no root needed, macOS included)."""
    import psutil
    try:
        return any(conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN
                   for conn in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.NoSuchProcess:
        return False


def server_pid(url: str) -> int | None:
    """The pid listening on the URL's port (this machine only), or None."""
    import psutil
    port = int(re.search(r":(\d+)", url.split("//", 1)[-1]).group(1))
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return conn.pid
    return None


# ---- the requests and their right answers ------------------------------------------------------------

COREF = "The doctor called the nurse because she was late."
NEGATION = "The lawyer did not sign the contract."
NEGATION_TWIN = "The lawyer did really sign the contract."
EMOJI = "The dog 🐶 saw the cat 😺 and it ran away."
# A longer pair (about 20 pieces) for the session-hash flood: each accepted job runs a few seconds, so the
# count of one address's jobs cannot drain while its 100 joins arrive.
LONGER_NEGATION = "The lawyer did not sign the contract that the client had sent to the office last week."
LONGER_TWIN = "The lawyer did really sign the contract that the client had sent to the office last week."


@dataclass
class Case:
    name: str
    api: str
    args: tuple
    check: Callable[[object], str | None] | None = None   # success: returns a problem, or None
    error: str | None = None                                # failure: a regex the message must match
    raw: Callable[[str], str] | None = None                 # a raw HTTP request instead: url -> "status: text"
    odd: bool = False                                       # adversarial: its answers are printed
    lane: bool = False                                      # patching: "busy" (its small queue full) is an answer

BUSY = r"Queue is full|Patching is busy"                    # gradio_client's words for a full (patching) queue
MIN_LANE_ANSWERED = 0.10                                    # the patching lane must answer at least this share


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse
    parsed = urlparse(url)
    return parsed.hostname or "", parsed.port or 80


def declared_40mb(url: str) -> str:
    """A POST that declares a 40 MB body and sends 10 KB of it: must be refused before it is read."""
    import http.client
    host, port = _host_port(url)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("POST", "/gradio_api/call/score_heads")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(40_000_000))
        connection.endheaders()
        connection.send(b'{"data": ["' + b"x" * 10_000)
        response = connection.getresponse()
        return f"{response.status}: {response.read().decode()[:200]}"
    finally:
        connection.close()


def upload(url: str) -> str:
    import urllib.error
    request = urllib.request.Request(url + "gradio_api/upload", data=b"--x--\r\n", method="POST",
                                     headers={"Content-Type": "multipart/form-data; boundary=x"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"{response.status}: {response.read().decode()[:200]}"
    except urllib.error.HTTPError as err:
        return f"{err.code}: {err.read().decode()[:200]}"


def library_numbers(text: str, relation: str, source: tuple[int, int], target: tuple[int, int]) -> dict:
    """Per-head (attention, is_argmax) from probing.heads.score_examples, keyed by (layer, head)."""
    from probing.examples import Example
    from probing.heads import score_examples
    from probing.models import load_model
    scores, _ = score_examples(load_model("minilm"), [Example(text=text, relation=relation, source_span=source,
                                                              target_span=target, id="loadtest")])
    n_layers, n_heads = scores.attention.shape[1:]
    return {(l, h): (float(scores.attention[0, l, h]), bool(scores.is_argmax[0, l, h]))
            for l in range(n_layers) for h in range(n_heads)}


def score_checker(expected: dict, model: str = "minilm") -> Callable[[object], str | None]:
    def check(answer) -> str | None:
        if not isinstance(answer, dict) or answer.get("model") != model:
            return f"not a score_heads answer for {model}: {str(answer)[:120]}"
        heads = {(h["layer"], h["head"]): (h["attention"], h["is_argmax"]) for h in answer["heads"]}
        if heads.keys() != expected.keys():
            return f"{len(heads)} heads, expected {len(expected)}"
        for key, (attention, is_argmax) in expected.items():
            if abs(heads[key][0] - attention) > 1e-6 or heads[key][1] != is_argmax:
                return f"head {key}: got {heads[key]}, library says ({attention:.6f}, {is_argmax})"
        return None
    return check


def head_view_checker(layer: int, head: int) -> Callable[[object], str | None]:
    def check(answer) -> str | None:
        if not isinstance(answer, str) or not answer.startswith('<iframe sandbox="allow-scripts" '):
            return f"not a sandboxed iframe: {str(answer)[:80]}"
        if f"&quot;layer&quot;:{layer}," not in answer or f"&quot;heads&quot;:[{head}]" not in answer:
            return f"the view does not open on layer {layer}, head {head}"
        return None
    return check


def patch_numbers(clean: str, corrupt: str) -> dict:
    """Per-head (noising, denoising) from probing.patching.patch_pair, keyed by (layer, head)."""
    from probing.models import load_model
    from probing.patching import patch_pair
    result = patch_pair(load_model("minilm"), clean, corrupt, kinds=("noising", "denoising"))
    n_layers, n_heads = result.effects["noising"].shape
    return {(l, h): (float(result.effects["noising"][l, h]), float(result.effects["denoising"][l, h]))
            for l in range(n_layers) for h in range(n_heads)}


def patch_checker(expected: dict) -> Callable[[object], str | None]:
    def check(answer) -> str | None:
        if not isinstance(answer, dict) or answer.get("model") != "minilm":
            return f"not a patch_heads answer for minilm: {str(answer)[:120]}"
        heads = {(h["layer"], h["head"]): (h["noising"], h["denoising"]) for h in answer["heads"]}
        if heads.keys() != expected.keys():
            return f"{len(heads)} heads, expected {len(expected)}"
        for key, numbers in expected.items():
            if max(abs(a - b) for a, b in zip(heads[key], numbers)) > 1e-5:
                return f"head {key}: got {heads[key]}, library says {numbers}"
        return None
    return check


def build_cases() -> list[Case]:
    """The request mix, with right answers computed by the library in this process."""
    from probing.examples import find_span
    coref = library_numbers(COREF, "coreference", find_span(COREF, "she"), find_span(COREF, "nurse"))
    negation = library_numbers(NEGATION, "negation", find_span(NEGATION, "not"), find_span(NEGATION, "sign"))
    emoji = library_numbers(EMOJI, "coreference", find_span(EMOJI, "it"), find_span(EMOJI, "dog"))
    patched = patch_numbers(NEGATION, NEGATION_TWIN)
    return [
        Case("score coreference", "/score_heads", (COREF, "coreference", "she", "nurse", ""), score_checker(coref)),
        Case("head view", "/head_view", (COREF, "", 1, 3), head_view_checker(1, 3)),
        Case("score negation", "/score_heads", (NEGATION, "negation", "not", "", ""), score_checker(negation)),
        Case("empty text", "/score_heads", ("   ", "coreference", "she", "nurse", ""), error=r"sentence is empty"),
        Case("score emoji", "/score_heads", (EMOJI, "coreference", "it", "dog", ""), score_checker(emoji)),
        Case("patch heads", "/patch_heads", (NEGATION, NEGATION_TWIN, "", ""), patch_checker(patched), lane=True),
        Case("not a minimal pair", "/patch_heads", (NEGATION, COREF, "", ""), error=r"pieces and the twin",
             lane=True),
        Case("word twice", "/score_heads", ("He said he was late.", "coreference", "he", "said", ""),
             error=r"occurs 2 times .*start:end"),
        Case("path as model", "/score_heads", (COREF, "coreference", "she", "nurse", "/etc"), error=r"allow-list"),
        Case("head out of range", "/head_view", (COREF, "", 1, 99), error=r"head 99 is out of range"),
        Case("100,000 characters", "/score_heads", ("a" * 100_000, "coreference", "she", "nurse", ""),
             error=r"100,000 characters.*refused"),
        Case("no pronoun", "/score_heads", ("他说明天会下雨。", "coreference", "", "", ""), error=r"no pronoun"),
        # adversarial: each gets its worded refusal at once
        Case("1 MB word", "/score_heads", (COREF, "coreference", "a" + " " * 1_000_000 + "a", "nurse", ""),
             error=r"413", odd=True),
        Case("60,000-char word", "/score_heads", (COREF, "coreference", "a" + " " * 60_000 + "a", "nurse", ""),
             error=r"source word has 60,002 characters; the limit here is 200", odd=True),
        Case("4,400-digit span", "/score_heads", (COREF, "coreference", "1" * 4400 + ":2", "nurse", ""),
             error=r"source word has 4,402 characters", odd=True),
        Case("list as source", "/score_heads", (COREF, "coreference", ["she"], "nurse", ""),
             error=r"source word must be text, got list", odd=True),
        Case("dict as model", "/score_heads", (COREF, "coreference", "she", "nurse", {"a": 1}),
             error=r"model name must be text, got dict", odd=True),
        Case("markdown word", "/score_heads", (COREF, "coreference", "![t](http://evil.invalid/t.png)", "nurse", ""),
             error=r"does not occur in the sentence", odd=True),
        Case("40 MB body", "", (), raw=declared_40mb, error=r"^413: .*40,000,000 bytes", odd=True),
        Case("upload", "", (), raw=upload, error=r"^403: .*no file uploads", odd=True),
    ]


@dataclass
class Result:
    case: str
    seconds: float
    problem: str | None
    answer: str = ""


def run_case(client, case: Case, url: str = "") -> Result:
    start = time.perf_counter()
    if case.raw is not None:
        try:
            answer = case.raw(url)
        except Exception as err:
            answer = f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - start
        ok = re.search(case.error, answer, re.S)
        return Result(case.name, seconds, None if ok else f"answered {answer[:200]!r}, expected /{case.error}/",
                      answer[:200])
    try:
        answer = client.predict(*case.args, api_name=case.api)
    except Exception as err:  # gradio_client raises AppError with the server's gr.Error message
        seconds = time.perf_counter() - start
        message = str(err)
        if case.lane and re.search(BUSY, message):
            return Result(case.name, seconds, None, "busy")     # counted in print_round (the lane must not starve)
        if case.error is None:
            return Result(case.name, seconds, f"unexpected error {type(err).__name__}: {message[:200]}")
        if not re.search(case.error, message, re.S):
            return Result(case.name, seconds, f"wrong message {message[:200]!r}, expected /{case.error}/", message[:200])
        return Result(case.name, seconds, None, message[:200])
    seconds = time.perf_counter() - start
    if case.error is not None:
        return Result(case.name, seconds, f"expected an error /{case.error}/, got an answer")
    return Result(case.name, seconds, case.check(answer))


def user(url: str, cases: list[Case], n_requests: int, offset: int, stop: threading.Event) -> list[Result]:
    """One visitor: its own client and address, n_requests requests from the mix, starting at a different case."""
    client = client_for(url, 1 + offset)
    results = []
    for i in range(n_requests):
        if stop.is_set():
            break
        results.append(run_case(client, cases[(offset + i) % len(cases)], url))
    return results


def rss_mb(pid: int) -> float:
    import psutil
    return psutil.Process(pid).memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def health_monitor(url: str, stop: threading.Event, seconds: list[float]) -> None:
    """GET /gradio_api/info every half second until stopped, recording how long each answer took."""
    while not stop.wait(0.5):
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=30) as response:
                response.read()
        except OSError:
            pass
        seconds.append(time.perf_counter() - start)


# ---- the attacks ------------------------------------------------------------------------------------------

# The load test plays a proxy at 127.0.0.1 that reports each simulated visitor in a header of its own: any
# other header a request carries (X-Forwarded-For, X-Real-IP, Forwarded ...) is the client's to invent, and the
# spoofing attack checks that the server believes none of them.
VISITOR_HEADER = "X-Loadtest-Client"
STREAM_LIFETIME_S = 60.0         # the started server's stream lifetime: long enough for any wait, short enough to watch
PROXY_ENV = {"PROBING_CLIENT_ADDRESS_HEADER": VISITOR_HEADER.lower(), "PROBING_TRUSTED_PROXIES": "127.0.0.1",
             "PROBING_STREAM_LIFETIME_S": f"{STREAM_LIFETIME_S:g}"}
# Not a Space: Gradio opens its direct run routes off a Space, and the server must close them itself.
NOT_A_SPACE = ("SYSTEM", "SPACE_ID")
PER_ADDRESS_CAP = 4              # the server's PROBING_MAX_JOBS_PER_CLIENT default
MAX_FLOOD_RATIO = 3.0            # /score_heads p95 during a patching flood / idle p95
MAX_RSS_MOVE_MB = 50.0           # the chunked attack may not move the server's memory more than this
SLOW_CLOSE_S = 30.0              # slow connections must be closed within this (header deadline 10 s + margin)


def visitor(number: int) -> dict[str, str]:
    """The headers of simulated visitor `number`: its own address, as the Space's proxy would report it."""
    return {VISITOR_HEADER: f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"}


def client_for(url: str, number: int):
    from gradio_client import Client
    return Client(url, verbose=False, headers=visitor(number))


def _post_json(url: str, body: dict, headers: dict, timeout: float = 30) -> tuple[int, str]:
    import json
    import urllib.error
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def fn_index(url: str, api_name: str) -> int:
    """The event index of an API endpoint, from the app's config (what `queue/join` takes)."""
    import json
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.loads(response.read())
    for dependency in config["dependencies"]:
        if dependency.get("api_name") == api_name:
            return dependency["id"]
    raise RuntimeError(f"the app has no endpoint {api_name}")


def fresh_session_flood(url: str, n: int = 100) -> dict:
    """One address sends n `queue/join` calls (patching, the slow kind), each with a new session hash, 25 at a
    time; meanwhile another address asks for scores. Returns how many joins were accepted and how long the
    other address waited."""
    import json
    import uuid
    index = fn_index(url, "patch_heads")
    greedy = visitor(60_000)

    def join(_):
        body = {"data": [LONGER_NEGATION, LONGER_TWIN, "", ""], "fn_index": index, "session_hash": uuid.uuid4().hex,
                "event_data": None, "trigger_id": None}
        return _post_json(url + "gradio_api/queue/join", body, greedy)

    other = {}

    def served():
        started = time.perf_counter()
        status, text = _post_json(url + "gradio_api/call/score_heads",
                                  {"data": [COREF, "coreference", "she", "nurse", ""]}, visitor(60_001))
        if status == 200:
            event = json.loads(text)["event_id"]
            with urllib.request.urlopen(url + f"gradio_api/call/score_heads/{event}", timeout=120) as response:
                text = response.read().decode()
        other.update(ok=status == 200 and "event: complete" in text, seconds=time.perf_counter() - started)

    side = threading.Thread(target=served)
    with ThreadPoolExecutor(25) as pool:
        side.start()
        answers = list(pool.map(join, range(n)))
    side.join(180)
    accepted = sum(status == 200 for status, _ in answers)
    refusals = [text for status, text in answers if status != 200]
    return {"sent": n, "accepted": accepted, "refused": len(refusals), "message": (refusals or [""])[0][:120],
            "other_ok": other.get("ok", False), "other_seconds": other.get("seconds", float("nan"))}


def chunked_with_small_length(url: str, megabytes: int = 16) -> str:
    """Declares Content-Length: 10 and streams a chunked body of up to `megabytes` MB; returns the status line
    (or how the connection ended)."""
    host, port = _host_port(url)
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(b"POST /gradio_api/call/score_heads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b"a" * (1 << 20))
        try:
            for _ in range(megabytes):
                connection.sendall(chunk)
            connection.sendall(b"0\r\n\r\n")
        except OSError:
            pass                               # the server closed the connection: it refused before reading
        try:
            answer = connection.recv(4096).decode(errors="replace")
        except OSError as err:
            return f"closed: {err}"
    return answer.splitlines()[0] if answer else "closed without an answer"


def chunked_attack(url: str, pid: int | None) -> dict:
    before = rss_mb(pid) if pid else None
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: chunked_with_small_length(url), range(4)))
    time.sleep(1)
    after = rss_mb(pid) if pid else None
    return {"answers": answers, "refused": all(re.match(r"HTTP/1\.1 4\d\d", a) for a in answers),
            "rss_before": before, "rss_after": after}


def timed_scores(url: str, n: int, number: int) -> list[float]:
    client = client_for(url, number)
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        client.predict(COREF, "coreference", "she", "nurse", "", api_name="/score_heads")
        seconds.append(time.perf_counter() - started)
    return seconds


def idle_again(url: str, n: int, number: int, settle_s: float = 1.0) -> list[float]:
    """/score_heads timed alone once more after a flood (whose requests have all been answered by then).
    On a machine whose other load comes and goes, a quiet window on each side of the flood's keeps the
    ratio about the flood, not about when the machine was busy."""
    time.sleep(settle_s)
    return timed_scores(url, n, number)


def patching_flood(url: str, clients: int = 12, n_scores: int = 20, max_patches: int = 40) -> dict:
    """/score_heads timed alone, then again while `clients` addresses each send /patch_heads in a loop (at most
    `max_patches` each, until the timing is done), then alone again once the flood is over. Returns both p95s
    (idle: the windows before and after together) and their ratio."""
    idle = timed_scores(url, n_scores, 61_000)
    stop = threading.Event()
    counts = {"answered": 0, "refused": 0}

    def patcher(number):
        client = client_for(url, number)
        for _ in range(max_patches):
            if stop.is_set():
                return
            try:
                client.predict(NEGATION, NEGATION_TWIN, "", "", api_name="/patch_heads")
                counts["answered"] += 1
            except Exception:                  # "patching is busy": its own small queue is full
                counts["refused"] += 1
                stop.wait(0.5)

    with ThreadPoolExecutor(clients) as pool:
        floods = [pool.submit(patcher, 62_000 + i) for i in range(clients)]
        time.sleep(3)                          # the flood is under way: the lane busy, its queue full
        during = timed_scores(url, n_scores, 61_001)
        stop.set()
        wait(floods, timeout=600)
    idle += idle_again(url, n_scores, 61_002)
    p95_idle, p95_flood = percentile(idle, 0.95), percentile(during, 0.95)
    return {"p95_idle": p95_idle, "p95_flood": p95_flood, "ratio": p95_flood / p95_idle, **counts}


def slow_connections(url: str, idle: int = 20, trickling: int = 20, limit_s: float = SLOW_CLOSE_S) -> dict:
    """Open `idle` connections that send nothing and `trickling` ones that send their headers a byte a second;
    returns how many the server closed within `limit_s`, and whether it answered meanwhile."""
    host, port = _host_port(url)
    sockets = [socket.create_connection((host, port), timeout=5) for _ in range(idle + trickling)]
    for s in sockets:
        s.setblocking(False)
    request = b"GET /gradio_api/info HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    closed: set[int] = set()
    started = time.perf_counter()
    answered_meanwhile = False
    step = 0
    while time.perf_counter() - started < limit_s and len(closed) < len(sockets):
        for number, s in enumerate(sockets):
            if number in closed:
                continue
            try:
                if number >= idle and step < len(request):
                    s.send(request[step:step + 1])
                if s.recv(1024) == b"":
                    closed.add(number)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(number)
        if not answered_meanwhile:
            try:
                with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as response:
                    answered_meanwhile = response.status == 200
            except OSError:
                pass
        step += 1
        time.sleep(1)
    seconds = time.perf_counter() - started
    for s in sockets:
        s.close()
    return {"opened": len(sockets), "closed": len(closed), "seconds": seconds, "answered": answered_meanwhile}


def _http(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
          source: str | None = None, timeout: float = 120) -> tuple[int, str]:
    """(status, text) of one request, sent from the local address `source` when given (any 127.x.y.z: another
    client address on loopback, for a server that believes no header)."""
    import http.client
    host, port = _host_port(url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout,
                                            source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def _served_meanwhile(url: str, number: int, source: str | None = None) -> dict:
    """Another address (simulated visitor `number`, or the local address `source`) asks for scores through
    `/call/score_heads`; returns whether it was answered, and when."""
    import json
    started = time.perf_counter()
    headers = {"Content-Type": "application/json", **visitor(number)}
    body = json.dumps({"data": [COREF, "coreference", "she", "nurse", ""]}).encode()
    status, text = _http(url, "POST", "/gradio_api/call/score_heads", body, headers, source)
    if status == 200:
        event = json.loads(text)["event_id"]
        status, text = _http(url, "GET", f"/gradio_api/call/score_heads/{event}", None, visitor(number), source)
    return {"ok": status == 200 and "event: complete" in text, "seconds": time.perf_counter() - started}


def direct_run_flood(url: str, n: int = 20, other_source: str | None = None) -> dict:
    """One address sends `n` direct `POST /gradio_api/run/score_heads` and `n` `/gradio_api/api/patch_heads` at
    once (outside the queue); meanwhile another address asks for scores. Returns how many were accepted (a 200
    answer: the function ran) and the statuses of the rest."""
    greedy = visitor(63_000)
    bodies = [("gradio_api/run/score_heads", [COREF, "coreference", "she", "nurse", ""]),
              ("gradio_api/api/patch_heads", [NEGATION, NEGATION_TWIN, "", ""])]
    with ThreadPoolExecutor(2 * n + 1) as pool:
        other = pool.submit(_served_meanwhile, url, 63_001, other_source)
        answers = list(pool.map(lambda i: _post_json(url + bodies[i % 2][0], {"data": bodies[i % 2][1]}, greedy,
                                                     timeout=120), range(2 * n)))
        served = other.result(timeout=180)
    statuses: dict[int, int] = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    return {"sent": 2 * n, "accepted": statuses.get(200, 0), "statuses": statuses,
            "message": next((text for status, text in answers if status != 200), "")[:120],
            "other_ok": served["ok"], "other_seconds": served["seconds"]}


SPOOF_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded", "True-Client-IP", "CF-Connecting-IP", "X-Client-IP")


def spoofed_joins(url: str, n: int = 100, other_source: str | None = None) -> dict:
    """`n` joins (patching, the slow kind) from 127.0.0.1 with no visitor header, each claiming its own
    address in every common proxy header; a server that believes none of them sees one address and
    accepts at most its cap. Another address is served meanwhile."""
    import uuid
    index = fn_index(url, "patch_heads")

    def join(i):
        claimed = f"198.51.{i // 256 % 256}.{i % 256}"
        headers = {name: (f"for={claimed}" if name == "Forwarded" else claimed) for name in SPOOF_HEADERS}
        body = {"data": [LONGER_NEGATION, LONGER_TWIN, "", ""], "fn_index": index, "session_hash": uuid.uuid4().hex,
                "event_data": None, "trigger_id": None}
        return _post_json(url + "gradio_api/queue/join", body, headers)

    with ThreadPoolExecutor(26) as pool:
        other = pool.submit(_served_meanwhile, url, 63_101, other_source)
        answers = list(pool.map(join, range(n)))
        served = other.result(timeout=180)
    accepted = sum(status == 200 for status, _ in answers)
    return {"sent": n, "accepted": accepted, "other_ok": served["ok"], "other_seconds": served["seconds"],
            "message": next((text for status, text in answers if status != 200), "")[:120]}


def unqueued_event(url: str) -> tuple[int, int]:
    """(fn_index, number of inputs) of the page's unqueued event that reads the sentence as it is typed (the
    first `queue=False` change event of a text box with two inputs: the candidate words)."""
    import json
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.loads(response.read())
    boxes = {c["id"] for c in config["components"] if c.get("type") == "textbox"}
    for dependency in config["dependencies"]:
        targets = dependency.get("targets") or []
        if dependency.get("queue") is False and targets and targets[0][1] == "change" and targets[0][0] in boxes \
                and len(dependency.get("inputs", [])) == 2:
            return dependency["id"], len(dependency["inputs"])
    raise RuntimeError("the page has no unqueued change event of a text box")


def unqueued_flood(url: str, clients: int = 16, n_scores: int = 20, max_events: int = 400) -> dict:
    """/score_heads timed alone, then again while one address sends the page's unqueued event with a
    5,000-character text from `clients` threads (at most `max_events` each, until the timing is done), then
    alone again (the idle p95 is over both quiet windows)."""
    index, n_inputs = unqueued_event(url)
    text = ("The doctor called the nurse because she was late. " * 100)[:5000]
    body = {"fn_index": index, "data": [text] + [""] * (n_inputs - 1), "session_hash": "unqueued-flood",
            "event_data": None, "trigger_id": None}
    greedy = visitor(64_000)
    idle = timed_scores(url, n_scores, 64_001)
    stop = threading.Event()
    counts = {"answered": 0, "refused": 0}

    def flooder():
        for _ in range(max_events):
            if stop.is_set():
                return
            status, _ = _post_json(url + "gradio_api/run/predict", body, greedy)
            counts["answered" if status == 200 else "refused"] += 1

    with ThreadPoolExecutor(clients) as pool:
        floods = [pool.submit(flooder) for _ in range(clients)]
        time.sleep(2)
        during = timed_scores(url, n_scores, 64_002)
        stop.set()
        wait(floods, timeout=120)
    idle += idle_again(url, n_scores, 64_003)
    p95_idle, p95_flood = percentile(idle, 0.95), percentile(during, 0.95)
    return {"p95_idle": p95_idle, "p95_flood": p95_flood, "ratio": p95_flood / p95_idle, **counts}


def _info_seconds(url: str, source: str | None = None) -> float | None:
    """Seconds `/gradio_api/info` took to answer (from the local address `source` when given), or None when it
    failed."""
    started = time.perf_counter()
    try:
        status, _ = _http(url, "GET", "/gradio_api/info", None, visitor(65_002), source, timeout=30)
    except OSError:
        return None
    return time.perf_counter() - started if status == 200 else None


def heartbeat_flood(url: str, n: int = 2000, bound_s: float = STREAM_LIFETIME_S + 15,
                    other_source: str | None = None) -> dict:
    """One address opens `n` heartbeat streams (each its own connection, any session name). Returns how many
    the server refused at once, how many it had closed within `bound_s` and the slowest close; and how long
    another address waited for `/gradio_api/info` right behind the burst (the server still answering the
    flood's requests), then for `/gradio_api/info` and a score once the burst was answered (the flood's
    streams still open)."""
    host, port = _host_port(url)
    head = "GET /gradio_api/heartbeat/flood-{} HTTP/1.1\r\nHost: x\r\n{}: {}\r\n\r\n"
    greedy = visitor(65_000)
    sockets, refused, closed_at, first = [], 0, {}, {}
    started = time.perf_counter()
    for i in range(n):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(head.format(i, VISITOR_HEADER, greedy[VISITOR_HEADER]).encode())
            s.setblocking(False)
            sockets.append(s)
        except OSError:
            refused += 1                        # not even accepted: refused too
    opened = time.perf_counter() - started
    behind_burst = _info_seconds(url, other_source)

    def poll() -> None:
        for number, s in enumerate(sockets):
            if number in closed_at:
                continue
            try:
                data = s.recv(65536)
                if data == b"":
                    closed_at[number] = time.perf_counter() - started
                else:
                    first.setdefault(number, data[:12])
            except BlockingIOError:
                pass
            except OSError:
                closed_at[number] = time.perf_counter() - started

    while time.perf_counter() - started < bound_s and len(first.keys() | closed_at.keys()) < len(sockets):
        poll()
        time.sleep(0.1)
    answered = time.perf_counter() - started
    after_burst = _info_seconds(url, other_source)
    served = _served_meanwhile(url, 65_001, other_source)
    streaming = sum(d.startswith(b"HTTP/1.1 200") for d in first.values()) - sum(
        1 for number, d in first.items() if d.startswith(b"HTTP/1.1 200") and number in closed_at)
    while time.perf_counter() - started < bound_s and len(closed_at) < len(sockets):
        poll()
        time.sleep(0.2)
    for s in sockets:
        s.close()
    refused += sum(data.startswith(b"HTTP/1.1 429") for data in first.values())
    return {"sent": n, "refused": refused, "streamed": sum(d.startswith(b"HTTP/1.1 200") for d in first.values()),
            "streaming_when_served": streaming, "closed": len(closed_at) + (n - len(sockets)),
            "open_after": len(sockets) - len(closed_at), "slowest_close": max(closed_at.values(), default=0.0),
            "bound_s": bound_s, "opened_in": opened, "answered_in": answered, "info_behind_burst": behind_burst,
            "info_seconds": after_burst, "info_ok": after_burst is not None, "other_ok": served["ok"],
            "other_seconds": served["seconds"]}


def _raw(url: str, request: bytes, timeout: float = 15) -> tuple[str, str, str]:
    """Send raw bytes; returns (status line, content type, body) of the answer, or ('closed', '', '')."""
    host, port = _host_port(url)
    with socket.create_connection((host, port), timeout=timeout) as connection:
        try:
            connection.sendall(request)
        except OSError:
            pass
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or len(answer) < 200:
                data = connection.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    if not answer:
        return "closed", "", ""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    content_type = next((line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("content-type:")), "")
    return lines[0], content_type, body.decode("utf-8", "replace")


def _post_raw(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def fuzz_requests(url: str) -> list[tuple[str, bytes]]:
    """Odd requests to every kind of route, as (name, raw bytes)."""
    import json
    index = fn_index(url, "score_heads")
    private, n_inputs = unqueued_event(url)
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.loads(response.read())
    dropdowns = {c["id"] for c in config["components"] if c.get("type") in ("dropdown", "radio")}
    choice_event = next((d["id"] for d in config["dependencies"]
                         if any(i in dropdowns for i in d.get("inputs", []))), private)
    n_choice = len(next(d for d in config["dependencies"] if d["id"] == choice_event)["inputs"])
    join = lambda data, fn: json.dumps({"fn_index": fn, "data": data, "session_hash": "fuzz"}).encode()  # noqa: E731
    requests = [
        ("unknown /call", _post_raw("/gradio_api/call/no_such_api", b'{"data": []}')),
        ("unknown /run", _post_raw("/gradio_api/run/no_such_api", b'{"data": []}')),
        ("unknown keys", _post_raw("/gradio_api/queue/join", b'{"nothing": 1, "else": [2]}')),
        ("fn_index -1", _post_raw("/gradio_api/run/predict", join([], -1))),
        ("fn_index huge", _post_raw("/gradio_api/run/predict", join([], 10 ** 15))),
        ("fn_index -1 queued", _post_raw("/gradio_api/queue/join", join([], -1))),
        ("fn_index huge queued", _post_raw("/gradio_api/queue/join", join([], 10 ** 15))),
        ("NaN", _post_raw("/gradio_api/run/predict", b'{"fn_index": 1, "data": [NaN]}')),
        ("Infinity in a join", _post_raw("/gradio_api/queue/join", b'{"fn_index": Infinity, "data": []}')),
        ("lone surrogate", _post_raw("/gradio_api/call/score_heads", b'{"data": ["\\ud800", "coreference"]}')),
        ("lone surrogate key", _post_raw("/gradio_api/queue/join", b'{"\\udc00": 1}')),
        ("lone surrogate in a choice", _post_raw("/gradio_api/run/predict",
                                                 join(["\ud800"] * n_choice, choice_event))),
        ("right-to-left override in a choice", _post_raw("/gradio_api/run/predict",
                                                         join(["x\u202eevil"] * n_choice, choice_event))),
        ("too few inputs", _post_raw("/gradio_api/run/predict", join([], private))),
        ("a dict where data belongs", _post_raw("/gradio_api/run/predict", b'{"fn_index": 1, "data": {"a": 1}}')),
        ("queued fn on /run", _post_raw("/gradio_api/run/predict", join([COREF, "coreference", "she", "nurse", ""],
                                                                        index))),
        ("not JSON", _post_raw("/gradio_api/queue/join", b"{not json")),
        ("not UTF-8", _post_raw("/gradio_api/queue/join", b'{"data": ["\xff\xfe"]}')),
        ("unknown event stream", b"GET /gradio_api/call/score_heads/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("queue/data of nobody", b"GET /gradio_api/queue/data?session_hash=nobody HTTP/1.1\r\nHost: x\r\n"
                                 b"Connection: close\r\n\r\n"),
        ("duplicate Content-Length", (b"POST /gradio_api/call/score_heads HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                      b"application/json\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n"
                                      b'{"data": []}')),
        ("Content-Length: N, N", (b"POST /gradio_api/call/score_heads HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                  b"application/json\r\nContent-Length: 12, 12\r\n\r\n" b'{"data": []}')),
        ("CL+TE and a malformed chunk", (b"POST /gradio_api/call/score_heads HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                         b"application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
                                         b"\r\nzz\r\nnot a chunk\r\n\r\n")),
    ]
    return requests


def fuzz(url: str, log_text: Callable[[], str] | None = None) -> dict:
    """Send every fuzz request; count plain (not JSON) 500s, any 5xx, answers that echo a raw control or
    bidi character, and tracebacks the server logged meanwhile."""
    before = log_text().count("Traceback") if log_text else 0
    answers = {}
    for name, request in fuzz_requests(url):
        try:
            answers[name] = _raw(url, request)
        except OSError as err:
            answers[name] = (f"closed: {err}", "", "")
    plain_500 = [n for n, (status, kind, _) in answers.items() if " 500" in status and "json" not in kind]
    any_5xx = [n for n, (status, _, _) in answers.items() if re.match(r"HTTP/1\.1 5", status)]
    echoed = [n for n, (_, _, body) in answers.items() if re.search("[\u202a-\u202e\u2066-\u2069\x00-\x08]", body)]
    time.sleep(0.5)
    tracebacks = (log_text().count("Traceback") - before) if log_text else None
    return {"sent": len(answers), "plain_500": plain_500, "5xx": any_5xx, "echoed": echoed, "tracebacks": tracebacks,
            "answers": answers}


MAX_ACCEPTED_SPOOFED = PER_ADDRESS_CAP    # joins accepted from one address whatever headers it invents
MAX_SERVED_S = 1.0               # another address's /gradio_api/info during the heartbeat flood


def route_attacks(url: str, log_text: Callable[[], str] | None = None) -> list[str]:
    """The attacks on the routes around the queue (issue 31): direct runs, spoofed addresses, unqueued events,
    a heartbeat flood and the fuzz. Prints what happened; returns the broken limits in words."""
    failures = []
    direct = direct_run_flood(url)
    print(f"direct runs: one address sent {direct['sent']} POSTs to /run/score_heads and /api/patch_heads at once, "
          f"{direct['accepted']} accepted (cap {PER_ADDRESS_CAP}), answers {direct['statuses']} "
          f"({direct['message'][:80]!r}); another address {'was served' if direct['other_ok'] else 'was NOT served'} "
          f"in {direct['other_seconds']:.1f} s")
    if direct["accepted"] > PER_ADDRESS_CAP:
        failures.append(f"{direct['accepted']} direct runs of one address were accepted (cap {PER_ADDRESS_CAP})")
    if not direct["other_ok"]:
        failures.append("another address was not served during the direct-run flood")
    spoof = spoofed_joins(url)
    print(f"spoofed addresses: {spoof['sent']} joins from 127.0.0.1, each with its own {', '.join(SPOOF_HEADERS)}: "
          f"{spoof['accepted']} accepted (cap {PER_ADDRESS_CAP}); another address "
          f"{'was served' if spoof['other_ok'] else 'was NOT served'} in {spoof['other_seconds']:.1f} s")
    if spoof["accepted"] > MAX_ACCEPTED_SPOOFED:
        failures.append(f"{spoof['accepted']} joins with invented proxy headers were accepted from one address")
    if not spoof["other_ok"]:
        failures.append("another address was not served during the spoofed joins")
    unqueued = unqueued_flood(url)
    print(f"unqueued events (16 at a time from one address, 5,000 characters): /score_heads p95 "
          f"{unqueued['p95_idle'] * 1000:.0f} ms idle, {unqueued['p95_flood'] * 1000:.0f} ms during the flood: ratio "
          f"{unqueued['ratio']:.2f} (limit {MAX_FLOOD_RATIO:g}); events answered {unqueued['answered']}, "
          f"refused {unqueued['refused']}")
    if unqueued["ratio"] >= MAX_FLOOD_RATIO:
        failures.append(f"/score_heads p95 during an unqueued-event flood is {unqueued['ratio']:.2f}x its idle p95")
    beats = heartbeat_flood(url)
    seconds = lambda value: f"{value:.2f} s" if value is not None else "no answer"  # noqa: E731
    print(f"heartbeat flood: one address opened {beats['sent']} streams in {beats['opened_in']:.1f} s, all answered "
          f"within {beats['answered_in']:.1f} s: {beats['refused']} refused at once, {beats['streamed']} streamed, "
          f"{beats['closed']} closed by the server (the last after {beats['slowest_close']:.1f} s; bound "
          f"{beats['bound_s']:.0f} s), {beats['open_after']} still open. Another address: /gradio_api/info "
          f"{seconds(beats['info_behind_burst'])} right behind the burst; with {beats['streaming_when_served']} "
          f"flood streams open, /gradio_api/info {seconds(beats['info_seconds'])} and a score "
          f"{beats['other_seconds']:.2f} s")
    if beats["open_after"]:
        failures.append(f"{beats['open_after']} heartbeat streams were still open after {beats['bound_s']:.0f} s")
    if not beats["info_ok"] or beats["info_seconds"] > MAX_SERVED_S or not beats["other_ok"]:
        failures.append(f"another address was not served within {MAX_SERVED_S:g} s during the heartbeat flood "
                        f"(info {seconds(beats['info_seconds'])}, score {'ok' if beats['other_ok'] else 'failed'})")
    fuzzed = fuzz(url, log_text)
    print(f"fuzz: {fuzzed['sent']} odd requests, {len(fuzzed['plain_500'])} plain-text 500s, {len(fuzzed['5xx'])} "
          f"5xx in JSON ({', '.join(fuzzed['5xx']) or 'none'}), {len(fuzzed['echoed'])} echoing a raw control "
          f"character, tracebacks logged: {fuzzed['tracebacks'] if fuzzed['tracebacks'] is not None else 'not read'}")
    for name, (status, _, body) in fuzzed["answers"].items():
        print(f"  {name:34s} {status[:30]:30s} {body[:90]!r}")
    if fuzzed["plain_500"]:
        failures.append(f"plain-text 500s: {fuzzed['plain_500']}")
    if fuzzed["echoed"]:
        failures.append(f"answers echoing a raw control or bidi character: {fuzzed['echoed']}")
    if fuzzed["tracebacks"]:
        failures.append(f"the fuzz wrote {fuzzed['tracebacks']} tracebacks to the server's log")
    return failures


def attacks(url: str, pid: int | None, log_text: Callable[[], str] | None = None) -> list[str]:
    """Run every attack, print what happened, return the broken limits in words."""
    failures = route_attacks(url, log_text)
    flood = fresh_session_flood(url)
    print(f"fresh session hashes: one address sent {flood['sent']} joins, {flood['accepted']} accepted "
          f"(cap {PER_ADDRESS_CAP}), {flood['refused']} refused ({flood['message'][:90]!r}); another address "
          f"{'was served' if flood['other_ok'] else 'was NOT served'} in {flood['other_seconds']:.1f} s")
    if flood["accepted"] > PER_ADDRESS_CAP:
        failures.append(f"one address got {flood['accepted']} joins accepted with fresh session hashes "
                        f"(cap {PER_ADDRESS_CAP})")
    if not flood["other_ok"]:
        failures.append("another address was not served during the session-hash flood")
    chunked = chunked_attack(url, pid)
    moved = (chunked["rss_after"] - chunked["rss_before"]) if pid else None
    print(f"Content-Length 10 with 16 MB chunked bodies, 4 at once: {chunked['answers'][0]!r}"
          + (f"; server RSS {chunked['rss_before']:.0f} -> {chunked['rss_after']:.0f} MiB" if pid else ""))
    if not chunked["refused"]:
        failures.append(f"a chunked body with a small declared length was not refused with 4xx: {chunked['answers']}")
    if moved is not None and moved > MAX_RSS_MOVE_MB:
        failures.append(f"the chunked attack moved the server's memory by {moved:.0f} MiB")
    patching = patching_flood(url)
    print(f"patching flood (12 addresses): /score_heads p95 {patching['p95_idle'] * 1000:.0f} ms idle, "
          f"{patching['p95_flood'] * 1000:.0f} ms during the flood: ratio {patching['ratio']:.2f} (limit "
          f"{MAX_FLOOD_RATIO:g}); patching answered {patching['answered']}, refused {patching['refused']}")
    if patching["ratio"] >= MAX_FLOOD_RATIO:
        failures.append(f"/score_heads p95 during a patching flood is {patching['ratio']:.2f}x its idle p95")
    slow = slow_connections(url)
    print(f"slow connections: {slow['closed']} of {slow['opened']} closed by the server within "
          f"{slow['seconds']:.0f} s; it {'answered' if slow['answered'] else 'did NOT answer'} meanwhile")
    if slow["closed"] < slow["opened"]:
        failures.append(f"{slow['opened'] - slow['closed']} idle or slow connections were still open after "
                        f"{SLOW_CLOSE_S:.0f} s")
    if not slow["answered"]:
        failures.append("the server did not answer while slow connections were open")
    return failures


def is_loopback(url: str) -> bool:
    return _host_port(url)[0] in ("127.0.0.1", "localhost", "::1")


def mixed_round(url: str, cases: list[Case], users: int, requests: int, timeout: float) -> tuple[list, list, float, list]:
    """One round: `users` visitors (each its own address) send `requests` requests each from the mix, while
    the health monitor runs. Returns (results, failures, wall seconds, health answer times)."""
    stop = threading.Event()
    health: list[float] = []
    monitor = threading.Thread(target=health_monitor, args=(url, stop, health), daemon=True)
    monitor.start()
    started = time.perf_counter()
    pool = ThreadPoolExecutor(users)
    futures = [pool.submit(user, url, cases, requests, i, stop) for i in range(users)]
    done, pending = wait(futures, timeout=timeout)
    wall = time.perf_counter() - started
    failures = []
    if pending:
        stop.set()
        failures.append(f"{len(pending)} users did not finish within {timeout:.0f}s (deadlock or stuck queue)")
    results = []
    for future in done:
        try:
            results.extend(future.result())
        except Exception as err:
            failures.append(f"a user crashed: {type(err).__name__}: {err}")
    pool.shutdown(wait=False, cancel_futures=True)
    stop.set()
    monitor.join(10)
    failures += [f"{r.case}: {r.problem}" for r in results if r.problem]
    return results, failures, wall, health


def print_round(results: list, wall: float, cases: list[Case], health: list[float], expected: int) -> list[str]:
    failures = []
    latencies = [r.seconds for r in results]
    by_case: dict[str, list[float]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r.seconds)
    print(f"requests: {len(results)} of {expected} finished in {wall:.1f}s, "
          f"{sum(r.problem is None for r in results)} right, {sum(r.problem is not None for r in results)} wrong")
    if latencies:
        print(f"latency: p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms; throughput {len(results) / wall:.1f} requests/s")
        for name, values in sorted(by_case.items()):
            print(f"  {name:20s} n={len(values):3d}  p50 {statistics.median(values) * 1000:6.0f} ms  "
                  f"p95 {percentile(values, 0.95) * 1000:6.0f} ms")
    lane = [r for r in results if r.case in {c.name for c in cases if c.lane}]
    busy = sum(r.answer == "busy" for r in lane)
    if lane:
        print(f"patching lane: {len(lane) - busy} of {len(lane)} patching requests answered, {busy} told the lane "
              "was busy (its own small queue full)")
        # Under the full mix (25 visitors at once on a small machine) the one lane cannot keep up and its small
        # queue turns most patching away at once, in words, so that scoring stays fast; it must still answer.
        if len(lane) - busy < MIN_LANE_ANSWERED * len(lane):
            failures.append(f"the patching lane answered {len(lane) - busy} of {len(lane)} requests (starved: "
                            f"fewer than {MIN_LANE_ANSWERED:.0%})")
    print("odd and oversized requests, and how they were answered:")
    for name in [c.name for c in cases if c.odd]:
        answers = [r for r in results if r.case == name]
        if answers:
            right = sum(r.problem is None for r in answers)
            print(f"  {name:18s} {right}/{len(answers)} refused as expected, p95 "
                  f"{percentile([r.seconds for r in answers], 0.95) * 1000:.0f} ms: {answers[0].answer[:110]!r}")
    if health:
        print(f"health (/gradio_api/info, every 0.5 s during the run): {len(health)} answers, "
              f"max {max(health) * 1000:.0f} ms, p95 {percentile(health, 0.95) * 1000:.0f} ms")
        # p95, not max: on a shared 2-core machine the load test's own 25 client threads compete with the server.
        if percentile(health, 0.95) > 1.0:
            failures.append(f"health requests took {percentile(health, 0.95):.2f} s at p95 during the run (limit 1 s)")
    return failures


def load_test(url: str, pid: int | None, users: int, requests: int, timeout: float, max_growth: float,
              rounds: int = 1, log_text: Callable[[], str] | None = None) -> int:
    if not is_loopback(url):
        print(f"refused: the load test sends adversarial requests, so it runs against 127.0.0.1 only, not {url}",
              file=sys.stderr)
        return 2
    print(f"load test: {rounds} round(s) of {users} users x {requests} requests against {url}, then the attacks",
          flush=True)
    cases = build_cases()
    warm = client_for(url, 0)
    for _ in range(2):   # warm-up: the model loaded, every code path run once, thread pools started
        problems = [r for r in (run_case(warm, c, url) for c in cases) if r.problem]
        if problems:
            print(f"FAIL in warm-up: {problems[0].case}: {problems[0].problem}")
            return 1
    with ThreadPoolExecutor(users) as pool:   # a concurrent warm-up round, unmeasured
        list(pool.map(lambda i: run_case(client_for(url, 1 + i), cases[i % len(cases)], url), range(users)))
    rss_warm = rss_mb(pid) if pid else None
    failures, rss_rounds = [], []
    for number in range(1, rounds + 1):
        print(f"---- round {number} of {rounds}")
        results, round_failures, wall, health = mixed_round(url, cases, users, requests, timeout)
        failures += round_failures + print_round(results, wall, cases, health, users * requests)
        if pid:
            rss_rounds.append(rss_mb(pid))
            print(f"server RSS after round {number}: {rss_rounds[-1]:.0f} MiB "
                  f"({rss_rounds[-1] / rss_warm - 1:+.1%} over the warm-up's {rss_warm:.0f} MiB)", flush=True)
    print("---- attacks")
    failures += attacks(url, pid, log_text)
    if pid:
        growth = rss_rounds[-1] / rss_warm - 1
        print(f"server RSS (pid {pid}): {rss_warm:.0f} MiB after warm-up, "
              + ", ".join(f"{r:.0f}" for r in rss_rounds) + f" MiB after each round ({growth:+.1%} by the last; "
              f"limit +{max_growth:.0%}); {rss_mb(pid):.0f} MiB after the attacks")
        if growth > max_growth:
            failures.append(f"server memory grew {growth:.1%} over {rounds} round(s) (more than {max_growth:.0%})")
    else:
        print("server RSS: not measured (no pid; pass --pid, or run on the server's machine)")
    answering = run_case(warm, cases[0], url)
    print(f"after the run the server still answers: {'yes' if answering.problem is None else answering.problem}")
    if answering.problem:
        failures.append(f"server not answering after the run: {answering.problem}")
    for failure in failures[:20]:
        print(f"FAIL {failure}")
    print("PASS" if not failures else f"FAILED ({len(failures)} problems)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    from analysis.options import HelpFormatter
    parser = argparse.ArgumentParser(prog="python -m analysis.loadtest", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="the running demo")
    parser.add_argument("--start", action="store_true", help="start `python app.py` on --port (trusting the "
                        "load test's visitor header from 127.0.0.1, as behind the Space's proxy) and stop it after")
    parser.add_argument("--port", type=int, default=None, help="port for --start (default: a free one)")
    parser.add_argument("--pid", type=int, default=None, help="server pid for the memory check (default: found "
                                                                "from the port)")
    parser.add_argument("--users", type=int, default=25, help="simulated visitors, each its own address")
    parser.add_argument("--requests", type=int, default=40, help="requests per user per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the mix; memory is measured after each")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit in seconds for one round")
    parser.add_argument("--max-rss-growth", type=float, default=0.20, help="memory growth allowed by the last round")
    args = parser.parse_args(argv)
    try:
        import psutil  # noqa: F401  (the memory check; psutil comes with accelerate)
    except ImportError:
        print("psutil is needed for the memory check: pip install psutil", file=sys.stderr)
        return 2
    if args.start:
        with AppServer(args.port, env=PROXY_ENV) as server:
            return load_test(server.url, server.pid, args.users, args.requests, args.timeout, args.max_rss_growth,
                             args.rounds, server.log_text)
    pid = args.pid or server_pid(args.url)
    return load_test(args.url.rstrip("/") + "/", pid, args.users, args.requests, args.timeout, args.max_rss_growth,
                     args.rounds)


if __name__ == "__main__":
    sys.exit(main())
