"""Data-parallel head scoring with Hugging Face `accelerate`: `accelerate launch -m analysis heads ...`.

Each process scores a contiguous shard of the examples (`PartialState().split_between_processes`) and
keeps only per-example reductions; the shards are gathered to every process and concatenated in rank
order, which is the original order. Because every row is one example, combining is exact: the sums,
counts, bootstrap resamples and tests downstream see exactly the arrays a single process would.
"""
from __future__ import annotations

from probing.heads import ExampleScores, score_examples


def score_examples_parallel(loaded, examples, batch_tokens=4096, renormalize=False, progress=False,
                            mention="head", label="examples"):
    """`score_examples` over this process's shard, gathered from all processes; same return value."""
    from accelerate import PartialState
    from accelerate.utils import gather_object
    state = PartialState()
    with state.split_between_processes(list(examples)) as shard:
        part = score_examples(loaded, shard, batch_tokens, renormalize, progress and state.is_main_process,
                              mention=mention, label=label) \
            if shard else None
    parts = gather_object([part])     # one entry per process, in rank order
    scores = ExampleScores.concat([p[0] for p in parts if p is not None])
    skipped = [reason for p in parts if p is not None for reason in p[1]]
    return scores, skipped


def is_main_process() -> bool:
    """True outside a distributed run, and on rank 0 inside one."""
    from accelerate import PartialState
    return PartialState().is_main_process


def process_device():
    """The device accelerate assigned to this process (cpu under `--cpu`)."""
    from accelerate import PartialState
    return PartialState().device
