"""Data parallelism with Hugging Face `accelerate` (`accelerate launch -m analysis heads ...`), and the one answer
to "am I the process that writes files?".

`map_shards` runs a function on this process's contiguous shard of a list (`PartialState().
split_between_processes`) and gathers every process's result to every process in rank order, which is the
original order. The caller combines the parts: for head scoring (`probing.heads.score_examples_parallel`)
every row is one example, so combining is exact and the sums, counts, bootstrap resamples and tests downstream
see exactly the arrays a single process would.

This module knows nothing about scoring, so the scorer depends on it and never the other way round.
`accelerate` is imported only when a function here runs.
"""
from __future__ import annotations

import os
from typing import Callable


def launched_in_parallel() -> bool:
    """True inside an `accelerate launch` (or torchrun) run with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def map_shards(function: Callable[[list, bool], object], items, progress: bool = False) -> list:
    """`function(shard, show_progress)` on this process's shard of `items`; every process's result, in rank order.

    show_progress is `progress` on the main process only; a process whose shard is empty contributes nothing.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    state = PartialState()
    with state.split_between_processes(list(items)) as shard:
        part = function(shard, progress and state.is_main_process) if shard else None
    parts = gather_object([part])     # one entry per process, in rank order
    return [p for p in parts if p is not None]


def is_main_process() -> bool:
    """True outside a distributed run, and on rank 0 inside one."""
    from accelerate import PartialState
    return PartialState().is_main_process


def process_device():
    """The device accelerate assigned to this process (cpu under `--cpu`)."""
    from accelerate import PartialState
    return PartialState().device
