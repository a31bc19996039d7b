"""`python -m analysis bench`: how close the head scorer comes to the bare forward pass, and how far ahead of
a notebook-style loop it is. A script that prints ratios, not a timed test.

Three ways produce the same per-head `mean_attention`, `accuracy` (and, for negation, the next-word
baseline) on the same examples, alternated over several repetitions in one process:
- floor: the bare batched forward pass with output_attentions=True on the same length-sorted batches;
- ours:  `probing.heads.score_examples`, end to end from records (tokenising included) to the reduced scores;
- naive: `probing.naive`, one sentence at a time, attention to numpy, Python loops over words and heads.
It fails loudly if the three disagree by more than 1e-5. It also measures peak RSS of `analysis heads` at
two input sizes, the demo's `/score_heads` against a single-sentence forward, and the demo's start-up time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model to time (default minilm)")
    parser.add_argument("--data", nargs="+", default=["gap-dev", "builtin-coref", "builtin-negation"],
                        help="datasets to time")
    parser.add_argument("--n", type=int, default=500, help="examples per dataset")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions (median reported)")
    parser.add_argument("--naive-n", type=int, default=None,
                        help="time naive on only the first N examples and scale (default: all)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--skip-extras", action="store_true",
                        help="only the three-way timing (no RSS, demo latency or start-up measurements)")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")


def _floor(loaded, examples) -> float:
    """Seconds for the bare forward passes over the same batches `score_examples` would run."""
    from probing.heads import oriented
    from probing.runner import encode, forward_attentions, length_batches, pad_ids
    encoded = encode(loaded, [oriented(e, loaded.is_causal).text for e in examples])
    batches = length_batches([len(e.input_ids) for e in encoded])
    padded = [pad_ids([encoded[i].input_ids for i in batch], loaded.tokenizer.pad_token_id) for batch in batches]
    start = time.perf_counter()
    for ids, mask in padded:
        forward_attentions(loaded, ids, mask)
    return time.perf_counter() - start


def _ours(loaded, examples):
    from probing.heads import score_examples
    start = time.perf_counter()
    scores, _ = score_examples(loaded, examples)
    reduced = _means(scores.attention, scores.hit, scores.next_word)
    return time.perf_counter() - start, reduced


def _naive(loaded, examples):
    from probing.naive import naive_example_scores
    start = time.perf_counter()
    rows = [naive_example_scores(loaded, e) for e in examples]
    reduced = _means(np.stack([r["attention"] for r in rows]), np.stack([r["hit"] for r in rows]),
                     np.stack([r["next_word"] for r in rows]))
    return time.perf_counter() - start, reduced


def _means(attention, hit, next_word) -> dict[str, np.ndarray]:
    """The per-head scores all three must agree on."""
    means = {"mean_attention": attention.mean(0), "accuracy": hit.mean(0)}
    if not np.all(np.isnan(next_word)):
        means["next_word_baseline"] = np.nanmean(next_word, axis=0)
    return means


def _check_equal(a: dict, b: dict, what: str) -> float:
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    if worst > 1e-5:
        raise SystemExit(f"FAIL: {what} differ by {worst:.2e} (> 1e-5); the benchmark's numbers are not comparable")
    return worst


def time_dataset(loaded, name, examples, repeats, naive_n):
    """Alternate floor, ours and naive `repeats` times; return medians, ratios and agreement."""
    examples = [e for e in examples if not e.is_control]
    from probing.heads import score_examples
    _, skipped = score_examples(loaded, examples[:8])    # warm-up (and make sure the data aligns)
    naive_examples = examples[:naive_n] if naive_n else examples
    floors, ours, naives = [], [], []
    for _ in range(repeats):
        floors.append(_floor(loaded, examples))
        seconds, ours_means = _ours(loaded, examples)
        ours.append(seconds)
        seconds, naive_means = _naive(loaded, naive_examples)
        naives.append(seconds * len(examples) / len(naive_examples))
    if naive_n:
        _, ours_means = _ours(loaded, naive_examples)
    worst = _check_equal(ours_means, naive_means, f"ours and naive on {name}")
    from probing.runner import encode
    n_tokens = sum(len(e.input_ids) for e in encode(loaded, [e.text for e in examples]))
    floor, our, naive = (statistics.median(x) for x in (floors, ours, naives))
    return {"data": name, "n": len(examples), "tokens": n_tokens, "floor_s": floor, "ours_s": our, "naive_s": naive,
            "ours/floor": our / floor, "naive/ours": naive / our, "tokens_per_s_ours": n_tokens / our,
            "tokens_per_s_floor": n_tokens / floor, "max_abs_diff": worst,
            "naive_timed_on": len(naive_examples)}


def peak_rss_of_heads(n: int, model: str | None, data_root) -> float:
    """Peak RSS (MiB) of a child process that runs the head scorer on the first n GAP examples (dev, then test)."""
    code = ("import sys, resource; from probing.examples import load_examples; from probing.heads import score_heads;"
            f"ex = [e for name in ('gap-dev', 'gap-test') for e in load_examples(name, data_root={data_root!r})[0]][:{n}];"
            f"assert len(ex) == {n};"
            f"score_heads({model!r}, ex, n_boot=200, n_perm=1000);"
            # VmHWM is this process's own peak; ru_maxrss would carry over the parent's peak across exec.
            "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def demo_latency(loaded, calls: int = 30) -> dict:
    """Median server-side time of `/score_heads` on a 20-word sentence against its bare forward pass."""
    from probing.demo.backend import score_heads_api
    from probing.runner import encode, forward_attentions, pad_ids
    text = "The old doctor from the village called the young nurse because she was late for the morning meeting again today."
    assert len(text.split()) == 20
    encoded = encode(loaded, [text])[0]
    ids, mask = pad_ids([encoded.input_ids], loaded.tokenizer.pad_token_id)
    for _ in range(3):
        score_heads_api(text, "coreference", "she", "nurse", loaded.name)
        forward_attentions(loaded, ids, mask)
    api, floor = [], []
    for _ in range(calls):
        start = time.perf_counter()
        forward_attentions(loaded, ids, mask)
        floor.append(time.perf_counter() - start)
        start = time.perf_counter()
        score_heads_api(text, "coreference", "she", "nurse", loaded.name)
        api.append(time.perf_counter() - start)
    return {"score_heads_ms": 1000 * statistics.median(api), "forward_ms": 1000 * statistics.median(floor),
            "ratio": statistics.median(api) / statistics.median(floor)}


def first_page_seconds() -> float:
    """Seconds from `python app.py` to the first served page."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 180:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.1)
        raise SystemExit("FAIL: the demo served no page within 180 s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def run(args: argparse.Namespace) -> int:
    import torch
    from probing.examples import load_examples
    from probing.models import load_model
    loaded = load_model(args.model)
    print(f"model {loaded.name}: {loaded.n_layers}x{loaded.n_heads}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    rows = []
    for name in args.data:
        examples, _ = load_examples(name, data_root=args.data_root, limit=args.n)
        rows.append(time_dataset(loaded, name, examples, args.repeats, args.naive_n))
        r = rows[-1]
        print(f"{name:18s} n={r['n']:5d} tokens={r['tokens']:7d}  floor {r['floor_s']:7.2f}s  ours {r['ours_s']:7.2f}s"
              f"  naive {r['naive_s']:8.2f}s  | ours/floor {r['ours/floor']:.3f}  naive/ours {r['naive/ours']:6.1f}"
              f"  | {r['tokens_per_s_ours']:7.0f} tok/s ours, {r['tokens_per_s_floor']:7.0f} floor"
              f"  | max diff {r['max_abs_diff']:.1e}", flush=True)
    results = {"model": loaded.name, "timing": rows}
    if not args.skip_extras:
        small = peak_rss_of_heads(500, args.model, args.data_root)
        large = peak_rss_of_heads(2000, args.model, args.data_root)
        results["peak_rss_mib"] = {"n500": small, "n2000": large, "growth": large / small - 1}
        print(f"peak RSS of the head scorer: {small:.0f} MiB at 500 GAP examples, {large:.0f} MiB at 2000 "
              f"(growth {100 * (large / small - 1):+.1f}%)", flush=True)
        latency = demo_latency(loaded)
        results["demo"] = latency
        print(f"/score_heads on a 20-word sentence: {latency['score_heads_ms']:.1f} ms median over 30 calls vs "
              f"{latency['forward_ms']:.1f} ms bare forward (ratio {latency['ratio']:.2f})", flush=True)
        startup = first_page_seconds()
        results["first_page_s"] = startup
        print(f"time to the first served page after `python app.py`: {startup:.1f} s", flush=True)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0
