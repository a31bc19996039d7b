"""`python -m analysis bench`: how close the head scorer comes to the bare forward pass, and how far ahead of
a notebook-style loop it is. A script that prints ratios, not a timed test.

Three ways produce the same per-head `mean_attention`, `accuracy` (and, for negation, the next-word
baseline) on the same examples, alternated over several repetitions in one process, against two floors:
- sdpa:  the bare batched forward with the fused SDPA kernel and no attentions, on the same batches;
- floor: the bare batched forward pass with output_attentions=True (eager) on the same batches;
- ours:  `probing.heads.score_examples`, end to end from records (tokenising included) to the reduced scores,
         on the default attention path (the fused reads of `probing.attention` where the model supports them),
         without the norm-based attention (not compared here); "ours+norms" is the same with it, as
         `analysis heads` runs it; each dataset also prints where the time goes (`time_stages`);
- naive: `probing.naive`, one sentence at a time, attention to numpy, Python loops over words and heads.
It fails loudly if ours and naive disagree by more than 1e-5. Wall-clock medians give the ratios; process
CPU-time ratios are printed beside them, since a shared machine's load moves wall time more than CPU time.
It also measures peak RSS of `analysis heads` at two input sizes, the demo's `/score_heads` against a
single-sentence forward, `patch_pair` (the patching tab) against the pair's bare forward, the demo's
start-up time, and (`--long-doc`) one 4,096-token document scored by
Gemma-270M against its bare fused forward and its eager output_attentions forward, each in a child process.
`--patching` instead times exact against attribution patching (and, with `--long-doc MODEL`, on one long pair).
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

from analysis import options

ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.model(parser, "model to time (default minilm)")
    parser.add_argument("--data", nargs="+", default=["gap-dev", "builtin-coref", "builtin-negation"],
                        help="datasets to time")
    parser.add_argument("--n", type=options.bounded_int(1), default=500, help="examples per dataset; at least 1")
    parser.add_argument("--repeats", type=options.bounded_int(1), default=3,
                        help="alternating repetitions (median reported); at least 1")
    parser.add_argument("--naive-n", type=options.bounded_int(1), default=None,
                        help="time naive on only the first N examples and scale; at least 1 (default: all)")
    options.data_root(parser)
    parser.add_argument("--skip-extras", action="store_true",
                        help="only the three-way timing (no RSS, demo latency or start-up measurements)")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--long-doc", default=None, metavar="MODEL",
                        help="also time one long document with this model (e.g. gemma-270m): scoring vs the "
                             "bare fused forward vs eager output_attentions, peak RSS and seconds")
    parser.add_argument("--long-tokens", type=options.bounded_int(options.MIN_BATCH_TOKENS), default=4096,
                        help=f"pieces in the long document; at least {options.MIN_BATCH_TOKENS}")
    parser.add_argument("--patching", action="store_true",
                        help="only the patching bench: exact vs attribution patching (time, ratio, agreement per "
                             "kind) on builtin-negation pairs for MiniLM (and MPNet when installed), and the "
                             "demo's first attribution answer on a 64-piece pair; with --long-doc MODEL also one long "
                             "pair (--long-patch-tokens pieces) patched exactly and by attribution with MODEL")
    parser.add_argument("--pairs", type=options.bounded_int(1), default=6,
                        help="pairs per model in the patching bench; at least 1")
    parser.add_argument("--long-patch-tokens", type=options.bounded_int(options.MIN_BATCH_TOKENS), default=1024,
                        help="with --patching and --long-doc MODEL: pieces in the long pair patched with MODEL; at "
                             f"least {options.MIN_BATCH_TOKENS}")
    parser.add_argument("--eager-memory-gib", type=options.positive_float, default=12.0,
                        help="address-space limit for the eager long-document child (it may run out); above 0")


def _batches(loaded, examples):
    """The padded batches `score_examples` would run, built once (not timed)."""
    from probing.heads import oriented
    from probing.runner import encode, length_batches, pad_ids
    encoded = encode(loaded, [oriented(e, loaded.is_causal).text for e in examples])
    batches = length_batches([len(e.input_ids) for e in encoded])
    return [pad_ids([encoded[i].input_ids for i in batch], loaded.tokenizer.pad_token_id) for batch in batches]


def _timed(function, *args):
    """(wall seconds, process CPU seconds, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _floor(loaded, padded) -> tuple[float, float]:
    """Seconds for the bare eager forward passes with output_attentions=True over the batches."""
    from probing.runner import forward_attentions

    def run():
        for ids, mask in padded:
            forward_attentions(loaded, ids, mask)
    return _timed(run)[:2]


def _sdpa(loaded, padded) -> tuple[float, float]:
    """Seconds for the bare fused (SDPA) forward passes, no attentions, over the same batches."""
    from probing.attention import bare_forward

    def run():
        for ids, mask in padded:
            bare_forward(loaded, ids, mask)
    return _timed(run)[:2]


def _ours(loaded, examples, norms: bool = False):
    """score_examples end to end; norms=True also computes the norm-based attention (as `analysis heads` does)."""
    from probing.heads import score_examples

    def run():
        scores, _ = score_examples(loaded, examples, norms=norms)
        return _means(scores.attention, scores.is_argmax, scores.next_word_baseline), scores.attention_path
    wall, cpu, (reduced, path) = _timed(run)
    return wall, cpu, reduced, path


def _naive(loaded, examples):
    from probing.naive import naive_example_scores
    start = time.perf_counter()
    rows = [naive_example_scores(loaded, e) for e in examples]
    reduced = _means(np.stack([r["attention"] for r in rows]), np.stack([r["is_argmax"] for r in rows]),
                     np.stack([r["next_word_baseline"] for r in rows]))
    return time.perf_counter() - start, reduced


def _means(attention, is_argmax, next_word_baseline) -> dict[str, np.ndarray]:
    """The per-head scores all three must agree on."""
    means = {"mean_attention": attention.mean(0), "accuracy": is_argmax.mean(0)}
    if not np.all(np.isnan(next_word_baseline)):
        means["next_word_baseline"] = np.nanmean(next_word_baseline, axis=0)
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
    from probing.attention import supports_reads
    padded = _batches(loaded, examples)
    has_sdpa = supports_reads(loaded)
    floors, sdpas, ours, with_norms, naives = [], [], [], [], []
    for _ in range(repeats):
        if has_sdpa:
            sdpas.append(_sdpa(loaded, padded))
        floors.append(_floor(loaded, padded))
        wall, cpu, ours_means, path = _ours(loaded, examples)
        ours.append((wall, cpu))
        with_norms.append(_ours(loaded, examples, norms=True)[:2])
        seconds, naive_means = _naive(loaded, naive_examples)
        naives.append(seconds * len(examples) / len(naive_examples))
    if naive_n:
        _, _, ours_means, _ = _ours(loaded, naive_examples)
    worst = _check_equal(ours_means, naive_means, f"ours and naive on {name}")
    from probing.runner import encode
    n_tokens = sum(len(e.input_ids) for e in encode(loaded, [e.text for e in examples]))
    median = lambda pairs, i: statistics.median(p[i] for p in pairs) if pairs else float("nan")  # noqa: E731
    floor, our, sdpa = median(floors, 0), median(ours, 0), median(sdpas, 0)
    naive = statistics.median(naives)
    return {"ours+norms_s": median(with_norms, 0), "ours+norms/sdpa": median(with_norms, 0) / sdpa,
            "stages_s": time_stages(loaded, examples), "data": name, "n": len(examples), "tokens": n_tokens, "floor_s": floor, "sdpa_s": sdpa, "ours_s": our,
            "naive_s": naive, "ours/floor": our / floor, "ours/sdpa": our / sdpa, "naive/ours": naive / our,
            "cpu ours/sdpa": median(ours, 1) / median(sdpas, 1), "cpu ours/floor": median(ours, 1) / median(floors, 1),
            "tokens_per_s_ours": n_tokens / our, "tokens_per_s_floor": n_tokens / floor, "max_abs_diff": worst,
            "naive_timed_on": len(naive_examples), "attention_path": path}


def time_stages(loaded, examples) -> dict[str, float]:
    """Where the scorer's time goes, each stage timed on its own over the batches `score_examples` runs (wall
    seconds, one pass): tokenise (encode and align), forward (the bare forward: fused SDPA, or eager
    output_attentions where the model has no fused reads), reads (the attention reads beyond that forward),
    norms (the value-vector norms beyond the reads), scoring (the arithmetic on the reads, norms included)."""
    import torch
    from probing.attention import EAGER, bare_forward, choose_path
    from probing.defaults import BATCH_TOKENS, MENTION
    from probing.heads import forward_reads, mention_rule, oriented, score_attention
    from probing.runner import encode_and_align, forward_attentions, length_batches, pad_ids
    relation = examples[0].relation
    path = choose_path(loaded, "auto")
    reverse = relation == "negation" and loaded.is_causal
    wall = time.perf_counter()
    encoded, layouts, _ = encode_and_align(loaded, [oriented(e, loaded.is_causal) for e in examples],
                                           mention_rule(relation, MENTION))
    stages = {"tokenise": time.perf_counter() - wall}
    usable = [i for i, layout in enumerate(layouts) if layout is not None]
    batches = [[usable[i] for i in batch]
               for batch in length_batches([len(encoded[i].input_ids) for i in usable], BATCH_TOKENS)]
    forward = forward_attentions if path == EAGER else bare_forward
    totals = {"forward": 0.0, "reads": 0.0, "norms": 0.0, "scoring": 0.0}
    for rows in batches:
        ids = [encoded[r].input_ids for r in rows]
        batch_layouts = [layouts[r] for r in rows]
        wall = time.perf_counter()
        with torch.inference_mode():
            forward(loaded, *pad_ids(ids, loaded.tokenizer.pad_token_id))
        totals["forward"] += time.perf_counter() - wall
        wall = time.perf_counter()
        forward_reads(loaded, batch_layouts, ids, relation, path=path)
        totals["reads"] += time.perf_counter() - wall
        wall = time.perf_counter()
        reads, norms = forward_reads(loaded, batch_layouts, ids, relation, path=path, norms=True)
        totals["norms"] += time.perf_counter() - wall
        wall = time.perf_counter()
        score_attention(batch_layouts, reads, relation, reverse=reverse, norms=norms)
        totals["scoring"] += time.perf_counter() - wall
    totals["norms"] -= totals["reads"]              # each pass is timed whole; keep what it adds
    totals["reads"] -= totals["forward"]
    return {**stages, **totals}


# ---- One long document ------------------------------------------------------------------------------------

LONG_HEAD = "Catherine Harlow opened a small bakery on the corner of Mill Street in the spring of 1998. "
LONG_TAIL = " Decades later the whole town still agreed that she had changed it for the better."


def long_document(loaded, n_tokens: int = 4096, data_root=None):
    """A coreference example of about n_tokens pieces: the antecedent in the first sentence, GAP passages in
    between, the pronoun in the last sentence; candidates: the antecedent and a GAP name near the middle."""
    from probing.examples import Example, load_examples
    passages = list(load_examples("gap-dev", data_root=data_root))
    count = lambda text: len(loaded.tokenizer(text)["input_ids"])  # noqa: E731
    budget = n_tokens - count(LONG_HEAD + LONG_TAIL)
    words, used, distractor = [], 0, None
    for example in passages:
        size = count(example.text) - count("")
        if used + size > budget:
            break
        if distractor is None and used > budget // 2:
            start = len(LONG_HEAD) + len(" ".join(words)) + (1 if words else 0)
            distractor = (start + example.target_span[0], start + example.target_span[1])
        words.append(example.text)
        used += size
    middle = " ".join(words)
    text = LONG_HEAD + middle + LONG_TAIL
    while count(text) < n_tokens and middle:        # pad with words from the next passage up to the budget
        extra = passages[len(words)].text.split()
        for k in range(len(extra), 0, -1):
            candidate = LONG_HEAD + middle + " " + " ".join(extra[:k]) + LONG_TAIL
            if count(candidate) <= n_tokens:
                text = candidate
                break
        break
    pronoun = text.rindex(" she ") + 1
    antecedent = (0, len("Catherine Harlow"))
    return Example(text=text, relation="coreference", source_span=(pronoun, pronoun + 3), target_span=antecedent,
                   candidate_spans=(antecedent, distractor), id="long-document")


_LONG_CHILD = """
import json, resource, sys, time, torch
mode, model, n_tokens, data_root, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] or None, float(sys.argv[5])
if mode == "eager" and limit > 0:
    resource.setrlimit(resource.RLIMIT_AS, (int(limit * 2**30), int(limit * 2**30)))
from analysis.bench import long_document
from probing.models import load_model
from probing.runner import encode, pad_ids
from probing.attention import bare_forward, supports_reads
from probing.heads import score_examples
loaded = load_model(model)
example = long_document(loaded, n_tokens, data_root)
encoded = encode(loaded, [example.text])[0]
ids, mask = pad_ids([encoded.input_ids], loaded.tokenizer.pad_token_id)
supports_reads(loaded)
from dataclasses import replace
score_examples(loaded, [replace(example, text="She said that Mary was late.", source_span=(0, 3),
                                target_span=(14, 18), candidate_spans=None)])   # warm-up on a short text
def rss(key):
    return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)][0] / 1024
open("/proc/self/clear_refs", "w").write("5")       # reset the peak: measure the step, not the model load
before = rss("VmRSS")
start, cpu = time.perf_counter(), time.process_time()
result = {"tokens": len(encoded.input_ids)}
try:
    if mode == "sdpa":
        bare_forward(loaded, ids, mask)
    elif mode == "ours":
        scores, skipped = score_examples(loaded, [example])
        result.update(path=scores.attention_path, skipped=skipped,
                      best_head=[int(x) for x in divmod(int(scores.attention[0].argmax()), loaded.n_heads)],
                      attention_max=float(scores.attention[0].max()))
    else:
        from probing.runner import forward_attentions
        forward_attentions(loaded, ids, mask)
    result.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu, peak_mib=rss("VmHWM"),
                  before_mib=before)
except (MemoryError, RuntimeError) as err:
    result.update(error=f"{type(err).__name__}: {str(err).splitlines()[0][:120]}", seconds=time.perf_counter() - start,
                  peak_mib=rss("VmHWM"), before_mib=before)
print(json.dumps(result))
"""


def _long_child(mode: str, model: str, n_tokens: int, data_root, limit_gib: float) -> dict:
    out = subprocess.run([sys.executable, "-c", _LONG_CHILD, mode, model, str(n_tokens), data_root or "",
                          str(limit_gib)], cwd=ROOT, capture_output=True, text=True)
    lines = [l for l in out.stdout.strip().splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {out.returncode}: {tail[:160]}"}
    return json.loads(lines[-1])


def long_document_report(model: str, n_tokens: int, data_root, eager_limit_gib: float) -> dict:
    """Scoring one long document vs its bare fused forward (and eager output_attentions), one child each."""
    runs = {mode: _long_child(mode, model, n_tokens, data_root, eager_limit_gib) for mode in ("sdpa", "ours", "eager")}
    sdpa, ours, eager = runs["sdpa"], runs["ours"], runs["eager"]
    if "error" in sdpa or "error" in ours:
        raise SystemExit(f"FAIL: long document: sdpa {sdpa}, ours {ours}")
    print(f"long document ({model}, {ours['tokens']} tokens, path: {ours['path'].split(':')[0]}): "
          f"ours {ours['seconds']:.2f}s, peak RSS {ours['peak_mib']:.0f} MiB | bare sdpa {sdpa['seconds']:.2f}s, "
          f"{sdpa['peak_mib']:.0f} MiB | ours/sdpa time {ours['seconds'] / sdpa['seconds']:.3f} "
          f"(cpu {ours['cpu_seconds'] / sdpa['cpu_seconds']:.3f}), "
          f"peak RSS {ours['peak_mib'] / sdpa['peak_mib']:.3f} (above the loaded model: "
          f"ours +{ours['peak_mib'] - ours['before_mib']:.0f} MiB, sdpa +{sdpa['peak_mib'] - sdpa['before_mib']:.0f} MiB)",
          flush=True)
    if "error" in eager:
        print(f"  eager output_attentions on the same text: failed under a {eager_limit_gib:g} GiB address-space "
              f"limit after {eager.get('seconds', float('nan')):.1f}s: {eager['error']}", flush=True)
    else:
        print(f"  eager output_attentions on the same text: {eager['seconds']:.2f}s, peak RSS {eager['peak_mib']:.0f} "
              f"MiB (+{eager['peak_mib'] - eager['before_mib']:.0f} MiB above the loaded model)", flush=True)
    return runs


def peak_rss_of_heads(n: int, model: str | None, data_root) -> float:
    """Peak RSS (MiB) of a child process that runs the head scorer on the first n GAP examples (dev, then test)."""
    code = ("import sys, resource; from probing.examples import load_examples; from probing.heads import score_heads;"
            f"ex = [e for name in ('gap-dev', 'gap-test') for e in load_examples(name, data_root={data_root!r})][:{n}];"
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


def patch_latency(loaded, calls: int = 10) -> dict:
    """Median time of `probing.patching.patch_pair` (every head noised and denoised, the demo's patching tab)
    on an 11-word negation pair, against one bare forward pass of the two texts; and the same without the
    skip of unchanged layers (every patched row from layer 0), to show what that saves."""
    import contextlib

    import torch

    from probing import hooks, patching
    clean = "The lawyer from the city did not sign the new contract today."
    corrupt = clean.replace(" not ", " really ")
    ids = torch.tensor([loaded.tokenizer(clean)["input_ids"], loaded.tokenizer(corrupt)["input_ids"]])

    @contextlib.contextmanager
    def from_layer_zero(model, layer, hidden):
        with hooks.replace_layer_input(model, layer, torch.arange(hidden.shape[0]), hidden):
            yield

    def bare():
        with torch.inference_mode():
            loaded.model(input_ids=ids)

    def patch():
        return patching.patch_pair(loaded, clean, corrupt, kinds=("noising", "denoising"))

    skip = hooks.start_at_layer
    for _ in range(2):
        patch(), bare()
    times = {"patch": [], "forward": [], "patch_no_skip": []}
    for _ in range(calls):
        for name, function in (("forward", bare), ("patch", patch)):
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
        hooks.start_at_layer = from_layer_zero
        try:
            start = time.perf_counter()
            patch()
            times["patch_no_skip"].append(time.perf_counter() - start)
        finally:
            hooks.start_at_layer = skip
    median = {name: statistics.median(values) for name, values in times.items()}
    return {"patch_ms": 1000 * median["patch"], "forward_ms": 1000 * median["forward"],
            "patch_no_skip_ms": 1000 * median["patch_no_skip"], "ratio": median["patch"] / median["forward"],
            "skip_saves": 1 - median["patch"] / median["patch_no_skip"],
            "rows": 2 * loaded.n_layers * loaded.n_heads + 3}


def _patching_agreement(exact: dict, estimate: dict) -> dict:
    """Per kind, over the mean effects [layers*heads] of the pairs: Spearman over every head, and how many of
    exact's top 5 heads are in the estimate's top 10 (with the ones that are not)."""
    from scipy.stats import spearmanr
    rows = {}
    for kind in exact:
        x, y = exact[kind], estimate[kind]
        top5, top10 = np.argsort(-x, kind="stable")[:5], set(np.argsort(-y, kind="stable")[:10].tolist())
        rows[kind] = {"spearman": float(spearmanr(x, y)[0]), "top5_in_top10": sum(int(i) in top10 for i in top5),
                      "missed": [int(i) for i in top5 if int(i) not in top10]}
    return rows


def patching_bench(loaded, n_pairs: int, data_root=None) -> dict:
    """Exact patching (`engine.patch_ids`, every kind) and attribution patching (`attribution.attribute_ids`)
    of the first n_pairs usable builtin-negation pairs, alternated pair by pair after one untimed warm-up of
    each; summed seconds, their ratio, and the agreement of the mean effects per kind (embedding readout, as `analysis patch` uses for MiniLM)."""
    from probing.examples import load_examples
    from probing.patching.attribution import attribute_ids
    from probing.patching.engine import KINDS, patch_ids
    from probing.patching.pairs import collect_pairs, usable
    from probing.patching.readouts import normalise_all
    pairs = [p for p in collect_pairs(load_examples("builtin-negation", data_root=data_root)).pairs]
    infos = [info for ok, _, info in (usable(loaded, p) for p in pairs) if ok][:n_pairs]
    seconds = {"exact": 0.0, "attribution": 0.0}
    outs = {"exact": [], "attribution": []}
    for function in (patch_ids, attribute_ids):      # warm-up, untimed: the first backward pass sets up autograd
        function(loaded.model, *infos[0]["ids"], infos[0]["source"], infos[0]["target"], ("noising",), 512)
    for info in infos:
        for method, function in (("exact", patch_ids), ("attribution", attribute_ids)):
            start = time.perf_counter()
            outs[method].append(function(loaded.model, *info["ids"], info["source"], info["target"], KINDS, 512))
            seconds[method] += time.perf_counter() - start
    means = {}
    for method, method_outs in outs.items():
        normalise_all(method_outs, per_pair_scale=True)
        means[method] = {k: np.mean([o.effects[k].reshape(-1) for o in method_outs], 0) for k in KINDS}
    return {"model": loaded.name, "pairs": len(infos), "exact_s": seconds["exact"],
            "attribution_s": seconds["attribution"], "attribution/exact": seconds["attribution"] / seconds["exact"],
            "agreement": _patching_agreement(means["exact"], means["attribution"])}


def first_answer_latency(loaded, n_pieces: int = 64, calls: int = 5) -> dict:
    """The demo's first answer on a pair of n_pieces pieces: `patch_pair(method="attribution", check=False)`
    (noising and denoising, as the tab asks) against the
    floor of the pair's two bare forwards (one batch of 2, gradients on) plus one backward pass."""
    import torch

    from probing import patching
    words = "The lawyer from the old city did not sign the new contract with the bank today because".split()
    clean = " ".join(words)
    while len(loaded.tokenizer(clean)["input_ids"]) < n_pieces:
        clean += " and the " + words[len(clean) % len(words)]
    ids = loaded.tokenizer(clean)["input_ids"]
    clean = loaded.tokenizer.decode(ids[1:n_pieces - 1]) if not loaded.is_causal else clean
    corrupt = clean.replace(" not ", " really ", 1)
    batch = torch.tensor([loaded.tokenizer(clean)["input_ids"], loaded.tokenizer(corrupt)["input_ids"]])

    def floor():
        with torch.enable_grad():
            hidden = loaded.model(input_ids=batch).last_hidden_state
            torch.autograd.grad(hidden.sum(), [p for p in loaded.model.parameters() if p.requires_grad][:1]
                                or [hidden])

    def answer():
        # as the demo's tab asks for it: its sanity runs come with the exact confirmation of the top heads
        return patching.patch_pair(loaded, clean, corrupt, kinds=("noising", "denoising"), method="attribution",
                                   check=False)
    answer(), floor()
    times = {"answer": [], "floor": []}
    for _ in range(calls):
        for name, function in (("floor", floor), ("answer", answer)):
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {"pieces": int(batch.shape[1]), "answer_ms": 1000 * median["answer"], "floor_ms": 1000 * median["floor"],
            "ratio": median["answer"] / median["floor"]}


LONG_FILLER = ("The committee met again on Tuesday to read the reports from every branch office. ",
               "Each office had sent its figures for the year, and most of them arrived on time. ",
               "A few of the tables were late, so the clerks stayed into the evening to finish them. ")


def long_patching_pair(loaded, n_pieces: int = 1024):
    """A negation pair of about n_pieces pieces: filler sentences, then "The lawyer did not sign the contract."
    (the corrupt text: "did really sign") in the middle, then more filler. Returns `usable`'s info."""
    from probing.patching.pairs import Pair, usable
    count = lambda text: len(loaded.tokenizer(text)["input_ids"])  # noqa: E731
    if n_pieces > loaded.tokenizer.model_max_length:
        raise SystemExit(f"FAIL: {loaded.name} reads at most {loaded.tokenizer.model_max_length} pieces, "
                         f"not {n_pieces}: lower --long-patch-tokens")
    middle = "The lawyer did not sign the contract. "
    sentences = []
    while count("".join(sentences) + middle) < n_pieces - len(LONG_FILLER[0].split()):
        sentences.append(LONG_FILLER[len(sentences) % len(LONG_FILLER)])
    before, after = "".join(sentences[:len(sentences) // 2]), "".join(sentences[len(sentences) // 2:])
    clean = before + middle + after
    corrupt = clean.replace(" not sign", " really sign", 1)
    cue = len(before) + len("The lawyer did ")
    pair = Pair(id="long", relation="negation", clean=clean, corrupt=corrupt, clean_source=(cue, cue + 3),
                corrupt_source=(cue, cue + 6), clean_target=(cue + 4, cue + 8))
    ok, reason, info = usable(loaded, pair)
    if not ok:
        raise SystemExit(f"FAIL: the long patching pair is not usable with {loaded.name}: {reason}")
    return info


def long_patching_bench(loaded, n_pieces: int = 1024) -> dict:
    """Exact patching vs attribution patching (noising and denoising, embedding readout) on one long pair,
    after one untimed warm-up of each on the same pair: seconds, their ratio, and the agreement over heads."""
    from probing.patching.attribution import attribute_ids
    from probing.patching.engine import patch_ids
    from probing.patching.readouts import normalise_all
    info = long_patching_pair(loaded, n_pieces)
    kinds = ("noising", "denoising")
    args = (*info["ids"], info["source"], info["target"])
    seconds, outs = {}, {}
    for method, function in (("exact", patch_ids), ("attribution", attribute_ids)):
        function(loaded.model, *args, ("noising",), 512)          # warm-up, untimed
        start = time.perf_counter()
        outs[method] = [function(loaded.model, *args, kinds, 512)]
        seconds[method] = time.perf_counter() - start
        normalise_all(outs[method], per_pair_scale=True)
    means = {m: {k: outs[m][0].effects[k].reshape(-1) for k in kinds} for m in outs}
    return {"model": loaded.name, "pieces": len(info["ids"][0]), "exact_s": seconds["exact"],
            "attribution_s": seconds["attribution"], "attribution/exact": seconds["attribution"] / seconds["exact"],
            "agreement": _patching_agreement(means["exact"], means["attribution"])}


def _print_agreement(loaded, agreement: dict) -> None:
    for kind, a in agreement.items():
        missed = ", ".join(f"{i // loaded.n_heads}-{i % loaded.n_heads}" for i in a["missed"])
        print(f"  {kind:18s} Spearman {a['spearman']:+.3f}  exact top 5 in attribution top 10: "
              f"{a['top5_in_top10']}/5" + (f" (missed heads {missed})" if missed else ""), flush=True)


def run_patching_bench(args) -> int:
    from probing.install_models import local_model_path
    from probing.models import load_model
    results = []
    print(f"load {open('/proc/loadavg').read().split()[:3]} on {os.cpu_count()} CPUs", flush=True)
    for name in ["minilm"] + (["mpnet"] if local_model_path("mpnet") else []):
        loaded = load_model(name)
        row = patching_bench(loaded, args.pairs, args.data_root)
        print(f"{row['model']} builtin-negation, {row['pairs']} pairs: exact {row['exact_s']:.2f} s, attribution "
              f"{row['attribution_s']:.2f} s, attribution/exact {row['attribution/exact']:.3f}", flush=True)
        _print_agreement(loaded, row["agreement"])
        first = first_answer_latency(loaded)
        row["first_answer"] = first
        print(f"  demo first answer (attribution) on a {first['pieces']}-piece pair: {first['answer_ms']:.0f} ms vs "
              f"{first['floor_ms']:.0f} ms for two bare forwards + one backward (ratio {first['ratio']:.2f})", flush=True)
        results.append(row)
    if args.long_doc:
        loaded = load_model(args.long_doc)
        row = long_patching_bench(loaded, args.long_patch_tokens)
        print(f"{row['model']} one long negation pair, {row['pieces']} pieces: exact {row['exact_s']:.2f} s, "
              f"attribution {row['attribution_s']:.2f} s, attribution/exact {row['attribution/exact']:.3f}", flush=True)
        _print_agreement(loaded, row["agreement"])
        results.append({**row, "long": True})
    print(f"load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


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
    if args.patching:
        return run_patching_bench(args)
    import torch
    from probing.examples import load_examples
    from probing.models import load_model
    loaded = load_model(args.model)
    print(f"model {loaded.name}: {loaded.n_layers}x{loaded.n_heads}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    rows = []
    for name in args.data:
        examples = load_examples(name, data_root=args.data_root, limit=args.n)
        rows.append(time_dataset(loaded, name, examples, args.repeats, args.naive_n))
        r = rows[-1]
        print(f"{name:18s} n={r['n']:5d} tokens={r['tokens']:7d}  sdpa {r['sdpa_s']:6.2f}s  floor {r['floor_s']:6.2f}s"
              f"  ours {r['ours_s']:6.2f}s  naive {r['naive_s']:7.2f}s  | ours/sdpa {r['ours/sdpa']:.3f}"
              f" (cpu {r['cpu ours/sdpa']:.3f})  ours/floor {r['ours/floor']:.3f} (cpu {r['cpu ours/floor']:.3f})"
              f"  naive/ours {r['naive/ours']:5.1f}  | {r['tokens_per_s_ours']:6.0f} tok/s ours"
              f"  | max diff {r['max_abs_diff']:.1e}", flush=True)
        print(f"{'':18s} with norm-based attention: ours+norms {r['ours+norms_s']:6.2f}s, ours+norms/sdpa "
              f"{r['ours+norms/sdpa']:.3f} | where the time goes (s, one pass): "
              + ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in r["stages_s"].items()), flush=True)
    print(f"attention path: {rows[-1]['attention_path'] if rows else '-'}", flush=True)
    results = {"model": loaded.name, "timing": rows}
    if args.long_doc:
        results["long_document"] = long_document_report(args.long_doc, args.long_tokens, args.data_root,
                                                        args.eager_memory_gib)
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
        patched = patch_latency(loaded)
        results["patching"] = patched
        print(f"patch_pair, {patched['rows']} patched rows of an 11-word pair: {patched['patch_ms']:.0f} ms median vs "
              f"{patched['forward_ms']:.1f} ms for the pair's bare forward (ratio {patched['ratio']:.1f}); running each "
              f"row from its patched layer saves {100 * patched['skip_saves']:.0f}% "
              f"({patched['patch_no_skip_ms']:.0f} ms from layer 0)", flush=True)
        startup = first_page_seconds()
        results["first_page_s"] = startup
        print(f"time to the first served page after `python app.py`: {startup:.1f} s", flush=True)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0
