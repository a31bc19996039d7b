"""Load test for the demo's API: many gradio_client users at once, every answer checked.

    python -m analysis.loadtest --url http://127.0.0.1:7860 [--users 25] [--requests 40]
    python -m analysis.loadtest --start [--port 7870]      # starts `python app.py` itself, stops it after

The mix includes adversarial requests (sent to 127.0.0.1 only; any other host is refused): a 1 MB word, a
60,000-character word, a 4,400-digit span, a list and a dict where strings belong, Markdown in a word, a
body that declares 40 MB, an upload; and, after the run, one session that tries to fill the queue. A
monitor asks `/gradio_api/info` every half second throughout, and its slowest answer is reported: one
request must never stall the others. Each odd request's answer is printed.

Each user has its own `gradio_client.Client` and sends a mix of requests: `/score_heads` (coreference,
negation, a sentence with emoji), `/head_view`, `/patch_heads` (a not/really pair), and bad input (empty text, a word that occurs twice, a
path as model id, a head out of range, 100,000 characters, Chinese text with no pronoun). Every answer must
be the right one: the numbers equal the library's (`probing.heads.score_examples` and `probing.patching.patch_pair`, computed here), the
head view is a sandboxed iframe opened on the asked head, each bad input gets its message in words.

It reports p50/p95 latency and throughput, and the server's resident memory (psutil, on the server's pid)
after a warm-up and after the run. It exits 1 when any request failed or got a wrong answer, when memory
grew more than --max-rss-growth (20%) over the warm-up, or when the run did not finish within
--timeout seconds (a deadlock or a stuck queue).

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

def free_port() -> int:
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

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-n:])

    def __enter__(self) -> "AppServer":
        env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port),
                   GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **self.env)
        self.process = subprocess.Popen([sys.executable, str(APP)], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app.py did not serve {self.url} within {self.startup_timeout:.0f}s:\n{self.log_tail()}")

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


@dataclass
class Case:
    name: str
    api: str
    args: tuple
    check: Callable[[object], str | None] | None = None   # success: returns a problem, or None
    error: str | None = None                                # failure: a regex the message must match
    raw: Callable[[str], str] | None = None                 # a raw HTTP request instead: url -> "status: text"
    odd: bool = False                                       # adversarial: its answers are printed


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
        Case("patch heads", "/patch_heads", (NEGATION, NEGATION_TWIN, "", ""), patch_checker(patched)),
        Case("not a minimal pair", "/patch_heads", (NEGATION, COREF, "", ""), error=r"pieces and the twin"),
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
    """One visitor: its own client, n_requests requests from the mix, starting at a different case."""
    from gradio_client import Client
    client = Client(url, verbose=False)
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


def flood_one_session(url: str, n: int = 16) -> dict:
    """One client submits n requests at once: the per-session cap must refuse some of them."""
    from gradio_client import Client
    client = Client(url, verbose=False)
    jobs = [client.submit(COREF, "coreference", "she", "nurse", "", api_name="/score_heads") for _ in range(n)]
    answered, refused, message = 0, 0, ""
    for job in jobs:
        try:
            job.result(timeout=300)
            answered += 1
        except Exception as err:
            refused += 1
            message = message or str(err)
    return {"sent": n, "answered": answered, "refused": refused, "message": message}


def is_loopback(url: str) -> bool:
    return _host_port(url)[0] in ("127.0.0.1", "localhost", "::1")


def load_test(url: str, pid: int | None, users: int, requests: int, timeout: float, max_growth: float) -> int:
    from gradio_client import Client
    if not is_loopback(url):
        print(f"refused: the load test sends adversarial requests, so it runs against 127.0.0.1 only, not {url}",
              file=sys.stderr)
        return 2
    print(f"load test: {users} users x {requests} requests against {url}", flush=True)
    cases = build_cases()
    warm = Client(url, verbose=False)
    for _ in range(2):   # warm-up: the model loaded, every code path run once, thread pools started
        problems = [r for r in (run_case(warm, c, url) for c in cases) if r.problem]
        if problems:
            print(f"FAIL in warm-up: {problems[0].case}: {problems[0].problem}")
            return 1
    with ThreadPoolExecutor(users) as pool:   # a concurrent warm-up round, unmeasured
        list(pool.map(lambda i: run_case(Client(url, verbose=False), cases[i % len(cases)], url), range(users)))
    rss_warm = rss_mb(pid) if pid else None

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
    rss_after = rss_mb(pid) if pid else None

    latencies = [r.seconds for r in results]
    by_case: dict[str, list[float]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r.seconds)
    print(f"requests: {len(results)} of {users * requests} finished in {wall:.1f}s, "
          f"{sum(r.problem is None for r in results)} right, {sum(r.problem is not None for r in results)} wrong")
    if latencies:
        print(f"latency: p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms; throughput {len(results) / wall:.1f} requests/s")
        for name, values in sorted(by_case.items()):
            print(f"  {name:20s} n={len(values):3d}  p50 {statistics.median(values) * 1000:6.0f} ms  "
                  f"p95 {percentile(values, 0.95) * 1000:6.0f} ms")
    odd = [c.name for c in cases if c.odd]
    print("odd and oversized requests, and how they were answered:")
    for name in odd:
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
    flood = flood_one_session(url)
    print(f"one session sending {flood['sent']} requests at once: {flood['answered']} answered, "
          f"{flood['refused']} refused ({flood['message'][:90]!r})")
    if flood["refused"] == 0:
        failures.append("one session could queue every one of its requests")
    if pid:
        growth = rss_after / rss_warm - 1
        print(f"server RSS (pid {pid}): {rss_warm:.0f} MiB after warm-up, {rss_after:.0f} MiB after the run "
              f"({growth:+.1%}; limit +{max_growth:.0%})")
        if growth > max_growth:
            failures.append(f"server memory grew {growth:.1%} (more than {max_growth:.0%})")
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
    parser = argparse.ArgumentParser(prog="python -m analysis.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="the running demo (default %(default)s)")
    parser.add_argument("--start", action="store_true", help="start `python app.py` on --port and stop it after")
    parser.add_argument("--port", type=int, default=None, help="port for --start (default: a free one)")
    parser.add_argument("--pid", type=int, default=None, help="server pid for the memory check (default: found "
                                                                "from the port)")
    parser.add_argument("--users", type=int, default=25)
    parser.add_argument("--requests", type=int, default=40, help="requests per user (25 x 40 = 1,000)")
    parser.add_argument("--timeout", type=float, default=600.0, help="global limit in seconds for the run")
    parser.add_argument("--max-rss-growth", type=float, default=0.20)
    args = parser.parse_args(argv)
    try:
        import psutil  # noqa: F401  (the memory check; psutil comes with accelerate)
    except ImportError:
        print("psutil is needed for the memory check: pip install psutil", file=sys.stderr)
        return 2
    if args.start:
        with AppServer(args.port) as server:
            return load_test(server.url, server.pid, args.users, args.requests, args.timeout, args.max_rss_growth)
    pid = args.pid or server_pid(args.url)
    return load_test(args.url.rstrip("/") + "/", pid, args.users, args.requests, args.timeout, args.max_rss_growth)


if __name__ == "__main__":
    sys.exit(main())
