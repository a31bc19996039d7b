"""The batched patching engine: every head's patched runs of one pair, in one batch, and `patch_pair`.

Head output `z[l, h]`: head h's slice of the input to layer l's attention output projection (`probing.hooks`).
Effects of head (l, h) on a pair: noising = 1 - m(clean run with z[l, h] from the corrupt run at every
position) (necessity); denoising = m(corrupt run with z[l, h] from the clean run) (sufficiency). The pattern
variants swap only the head's attention probabilities (its values stay the run's own): the whole pattern
(`pattern_*`), or only the source word's query rows (`row_*`: where the head looks *from* "not" / the pronoun).

Sanity checks in every pair: patching each run with its own z (all heads) and own patterns gives exactly 0;
patching the hidden states entering the first layer from the other run gives denoising 1 +- 1e-5.

The two texts have the same number of pieces, so there is no padding, and batch row r carries its own edit
(`probing.hooks.HeadPatch`). A row that edits layer l starts at layer l from the unpatched run's hidden states
there (the layers before l would compute exactly those: about half the work saved).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from probing import hooks
from probing.defaults import PATCH_KINDS
from probing.models import as_loaded
from probing.patching.pairs import Pair, PairSet, span_pieces, minimal_pair, usable
from probing.patching.readouts import ALL, SHARED, LogitReadout, Pooling, language_model, normalise
from probing.patching.results import PairRun
from probing.patching.runs import (PatchRow, all_heads, clean_attention, plan_rows, run_flat_rows,
                                   run_pair_rows, sanity_readings)

KINDS = PATCH_KINDS            # one list for the library and the command line (probing.defaults)
SANITY_TOLERANCE = 1e-5
LOGIT_SANITY_TOLERANCE = 1e-3    # in logits: see study.patch_heads


def check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    return kinds


def patch_ids(module, clean_ids: list[int], corrupt_ids: list[int], source: list[int], target: list[int],
              kinds, max_rows: int, readout: LogitReadout | None = None, heads=None,
              pooling: Pooling = SHARED) -> PairRun:
    """The batched core: one base run of both texts (caching z, patterns and layer inputs), then every head's
    patched runs.

    Returns raw readout values v (embedding: <e(run), e(clean) - e(corrupt)>; logits: the logit difference):
    `values[kind]` [layers, heads] of the patched runs, `clean`/`corrupt` of the unpatched runs and the sanity
    runs' values; `readouts.normalise` turns them into effects. heads: only these (layer, head)s are patched
    (the screen's confirmation); the others' values are NaN."""
    started = time.perf_counter()
    layout = hooks.head_layout(module)
    heads = all_heads(layout.n_layers, layout.n_heads) if heads is None else list(heads)
    rows = plan_rows(layout.n_layers, layout.n_heads, kinds, heads)
    run = run_pair_rows(module, clean_ids, corrupt_ids, rows, source, max_rows, readout, pooling)
    values = run.values
    n, where = len(heads), tuple(np.array(heads, dtype=int).reshape(-1, 2).T)
    by_kind = {}
    for i, kind in enumerate(kinds):
        by_kind[kind] = np.full((layout.n_layers, layout.n_heads), np.nan)
        by_kind[kind][where] = values[i * n:(i + 1) * n].numpy()
    return PairRun(values=by_kind, clean=float(run.base_values[0]), corrupt=float(run.base_values[1]),
                   sanity_readings=sanity_readings(rows, values), distance=run.distance,
                   seconds=time.perf_counter() - started, method="exact",
                   summary=clean_attention(run.base, source, target, layout.n_layers))


def sanity_summary(outs, scale, logit_readout: bool) -> dict:
    """The sanity checks over all pairs; RuntimeError when they fail (the hooks do not patch what they should)."""
    sanity = {"own_activations_max_abs": float(max(max(o.sanity["own_noising_max_abs"],
                                                        o.sanity["own_denoising_max_abs"]) for o in outs)),
              "embedding_denoising_max_error": float(max(abs(o.sanity["embedding_denoising"] - 1) for o in outs))}
    if scale is not None and abs(scale) <= 1e-12:
        sanity["note"] = "the mean clean - corrupt difference is 0: effects are not meaningful"
    if not logit_readout:
        sanity["passed"] = bool(sanity["own_activations_max_abs"] <= SANITY_TOLERANCE
                                and sanity["embedding_denoising_max_error"] <= SANITY_TOLERANCE)
    else:
        # float32 logits of a large vocabulary differ by ~1e-5 between batch sizes (other GEMM kernels): the
        # check is on the raw logit difference, in logits
        sanity["max_abs_error_logits"] = float(max(max(abs(o.clean - o.sanity_readings.own_clean),
                                                       abs(o.sanity_readings.own_corrupt - o.corrupt),
                                                       abs(o.sanity_readings.embedding - o.clean)) for o in outs))
        sanity["tolerance_logits"] = LOGIT_SANITY_TOLERANCE
        sanity["passed"] = bool(sanity["max_abs_error_logits"] <= LOGIT_SANITY_TOLERANCE)
    if not sanity["passed"]:
        raise RuntimeError(f"patching sanity checks failed: {sanity}; the hooks do not patch what they should")
    return sanity


def _layout_size(module) -> tuple[int, int]:
    layout = hooks.head_layout(module)
    return layout.n_layers, layout.n_heads


def set_rows(head_sets, kinds=("noising", "denoising")) -> list[PatchRow]:
    """One row per (kind, head set), then the sanity rows: a set's heads take the other run's z together, in one
    row that starts at the set's first layer. Only the z kinds (noising, denoising)."""
    bad = [k for k in kinds if k not in ("noising", "denoising")]
    if bad or not head_sets or any(not heads for heads in head_sets):
        raise ValueError(f"head sets patch z only (noising, denoising), and each set needs a head; got kinds "
                         f"{list(kinds)} and {len(head_sets)} sets")
    rows = [PatchRow(kind, min(layer for layer, _ in heads), -1, 1 if kind == "denoising" else 0, tuple(heads))
            for kind in kinds for heads in head_sets]
    return rows + plan_rows(0, 0, ())


def patch_set_ids(module, clean_ids: list[int], corrupt_ids: list[int], head_sets, kinds=("noising", "denoising"),
                  max_rows: int = 512, readout: LogitReadout | None = None, pooling: Pooling = SHARED) -> PairRun:
    """As `patch_ids`, with one row per head set: `values[kind]` [sets] of the runs where every head of a set
    takes the other run's z at once (sets: lists of (layer, head)); `readouts.normalise` turns them into
    effects, and a one-head set gives exactly that head's single-head number."""
    layout = hooks.head_layout(module)
    head_sets = [tuple(hooks.check_heads(heads, layout.n_layers, layout.n_heads)) for heads in head_sets]
    return run_flat_rows(module, clean_ids, corrupt_ids, set_rows(head_sets, kinds), len(head_sets), kinds,
                         max_rows, readout, pooling)


def run_pairs(loaded, pair_set: PairSet, kinds, max_rows, progress, lm=None,
              method: str = "exact", heads=None, pooling: Pooling = SHARED) -> tuple[list, list, PairSet]:
    """Patch every usable pair (through `lm` with the logit readout when given; the embedding readout leaves the
    swapped pieces out unless the pooling says otherwise), exactly or (method "attribution") by the first-order estimate
    of `attribution.py`; unusable ones join the skipped list with their reason. Effects are not normalised yet
    (see `readouts.normalise_all`). heads: patch only these (layer, head)s exactly (others NaN). pooling: how
    a readout without an LM head pools the final states (`readouts.Pooling`)."""
    from probing.parallel import launched_in_parallel, map_shards
    if not launched_in_parallel():
        outs, kept, skipped = _run_shard(loaded, pair_set.pairs, kinds, max_rows, progress, lm, method, heads,
                                         pooling)
        return outs, kept, pair_set.with_pairs(kept, list(pair_set.skipped) + skipped)
    # Under `accelerate launch`: each process patches its contiguous shard of pairs; every process gets all
    # shards back in rank order, i.e. the original order, so everything downstream sees one process's lists.
    parts = map_shards(lambda shard, show: _run_shard(loaded, shard, kinds, max_rows, show, lm, method, heads,
                                                        pooling),
                       pair_set.pairs, progress)
    outs = [o for part in parts for o in part[0]]
    kept = [p for part in parts for p in part[1]]
    skipped = [s for part in parts for s in part[2]]
    return outs, kept, pair_set.with_pairs(kept, list(pair_set.skipped) + skipped)


def _run_shard(loaded, pairs: list[Pair], kinds, max_rows, progress, lm, method, heads, pooling):
    """(outputs, kept pairs, skipped (id, reason)) of `pairs` in this process."""
    from tqdm import tqdm
    from probing.patching.attribution import attribute_ids
    patch_one = attribute_ids if method == "attribution" else (
        lambda *args, **kwargs: patch_ids(*args, **kwargs, heads=heads))
    outs, kept, skipped = [], [], []
    for pair in tqdm(pairs, disable=not progress, unit="pair", leave=False):
        ok, reason, info = usable(loaded, pair, check_answers=lm is not None)
        if not ok:
            skipped.append((pair.id, reason))
            continue
        readout = None if lm is None else LogitReadout(lm, info["answer_ids"], info["position"])
        outs.append(patch_one(loaded.model if lm is None else lm, *info["ids"], info["source"], info["target"],
                              kinds, max_rows, readout, pooling=pooling))
        kept.append(pair)
    return outs, kept, skipped


# ---- patch_pair: one pair, the demo's call --------------------------------------------------------------

def _table(effects: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per head: layer, head, then each [layers, heads] array flattened."""
    n_layers, n_heads = next(iter(effects.values())).shape
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                          "head": np.tile(np.arange(n_heads), n_layers)})
    for name, values in {**effects, **extra}.items():
        table[name] = values.reshape(-1)
    return table


@dataclass
class PairPatch:
    """Every head's effects on one pair. effects[kind]: [layers, heads]; attention: the clean run's attention
    from the source word (mean over its pieces) to the target word (sum over its pieces), [layers, heads], or
    None without a target (`attention_reversed`: a decoder's later target read target -> source);
    norm_attention: the same reading of Kobayashi et al.'s alpha ||f(x)|| (None where the model gives no value norms);
    source_pattern: from the source word to every piece, [layers, heads, pieces].
    `sanity` holds the two checks' numbers and `passed` (both within their tolerance)."""
    clean: str
    corrupt: str
    tokens: list[str]
    source: list[int]                      # the source word's pieces (default: the swapped word's)
    swapped: list[int]                     # the pieces where the two texts differ
    target: list[int]                      # the target word's pieces ([] without a target)
    effects: dict[str, np.ndarray]         # kind -> [layers, heads]
    sanity: dict
    distance: float
    attention: np.ndarray | None
    source_pattern: np.ndarray
    seconds: float
    readout: str = "embedding"
    attention_reversed: bool = False
    norm_attention: np.ndarray | None = None   # [layers, heads] the same reading of alpha ||f(x)|| (None: not available)
    method: str = "exact"                  # "attribution": effects are first-order estimates (attribution.py)

    @property
    def table(self) -> pd.DataFrame:
        extra = {} if self.attention is None else {"attention": self.attention}
        if self.norm_attention is not None:
            extra["norm_attention"] = self.norm_attention
        return _table(self.effects, extra)

    def top(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The k heads with the largest effect `by` (default: the first kind): layer, head, that effect, and the
        attention when there is a target."""
        by = by or next(iter(self.effects))
        if by not in self.effects:
            raise ValueError(f"by must be one of {list(self.effects)}, got {by!r}")
        columns = ["layer", "head", by] + (["attention"] if self.attention is not None else [])
        ranked = self.table.sort_values([by, "layer", "head"], ascending=[False, True, True])
        return ranked[columns].head(k).reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"clean": self.clean, "corrupt": self.corrupt, "tokens": self.tokens, "source": self.source,
                "swapped": self.swapped, "target": self.target, "distance": self.distance,
                "sanity": self.sanity, "seconds": self.seconds, "readout": self.readout,
                "effects": {k: v.tolist() for k, v in self.effects.items()},
                "attention": None if self.attention is None else self.attention.tolist(),
                "norm_attention": None if self.norm_attention is None else self.norm_attention.tolist(),
                "attention_reversed": self.attention_reversed, "method": self.method}


def _span_field(value, name: str, text: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(v, int) for v in value)
            or not 0 <= value[0] < value[1] <= len(text)):
        raise ValueError(f"{name} must be a (start, end) character span inside the clean text, got {value!r}")
    return tuple(value)


def _spans_as_pieces(offsets, source, target, swapped) -> tuple[list[int], list[int]]:
    """(source pieces: the span's, default the swapped word's; target pieces, [] without a target)."""
    source_pieces = swapped if source is None else sorted(span_pieces(offsets, source))
    target_pieces = [] if target is None else sorted(span_pieces(offsets, target))
    for name, span, pieces in (("source", source, source_pieces), ("target", target, target_pieces)):
        if span is not None and not pieces:
            raise ValueError(f"the {name} span covers no piece the model reads (past the token limit?)")
    return source_pieces, target_pieces


def _logit_readout(loaded, clean_text, corrupt_text, offsets, swapped, answers, relation):
    """(the LM, its LogitReadout) for a pair with answers; ValueError in words when it cannot have one."""
    if len(answers) != 2 or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError(f"answers must be two non-empty words, got {answers!r}")
    word = (offsets[swapped[0]][0], offsets[swapped[-1]][1])
    pair = Pair(id="pair", relation=relation or "", clean=clean_text, corrupt=corrupt_text,
                clean_source=word, corrupt_source=word, answers=tuple(answers))
    ok, reason, info = usable(loaded, pair)
    if not ok:
        raise ValueError(reason)
    lm = language_model(loaded)
    return lm, LogitReadout(lm, info["answer_ids"], info["position"])


def _pair_sanity(sanity: dict, scale: float, logits: bool) -> dict:
    """The pair's sanity numbers with `passed`: own activations give 0 and the first layer's input gives
    denoising 1, within SANITY_TOLERANCE in units of the pair's clean - corrupt difference (embedding), or
    within LOGIT_SANITY_TOLERANCE in logits (float32 logits of a large vocabulary differ by ~1e-5 between batch
    sizes, and a weak model's difference can be small)."""
    error = max(sanity["own_noising_max_abs"], sanity["own_denoising_max_abs"],
                abs(sanity["embedding_denoising"] - 1))
    if logits:
        error, tolerance = error * abs(scale), LOGIT_SANITY_TOLERANCE
    else:
        tolerance = SANITY_TOLERANCE
    return {**sanity, "max_error" + ("_logits" if logits else ""): float(error), "tolerance": tolerance,
            "passed": bool(error <= tolerance)}


def patch_pair(model, clean_text: str, corrupt_text: str, *, source: tuple[int, int] | None = None,
               target: tuple[int, int] | None = None, relation: str | None = None, kinds=KINDS,
               max_rows: int = 512, answers: tuple[str, str] | None = None, method: str = "exact",
               heads=None, check: bool = True, all_positions: bool = False) -> PairPatch:
    """Every head's patching effects for one clean/corrupt pair (the demo's call). The swapped word is found
    from the tokens: the pieces that differ, which must lie in one word. ValueError when the pair is not a
    minimal pair (`pairs.minimal_pair`).

    source, target: (start, end) character spans in the clean text. The source word is where the `row_*`
    patches and the attention are read from (default: the swapped word); with a target, `attention` is the
    clean run's attention from the source word (mean over its pieces) to the target (sum over its pieces); a
    decoder reads a later target the other way (target -> source: it cannot look ahead).
    answers=None: the embedding readout (the final states averaged over the pieces the two texts share, or over
    every piece with all_positions=True). answers=(clean answer, corrupt answer): the logit difference between
    their first pieces at the last position (decoders) or at the text's mask token (masked LMs), normalised by
    this pair's clean - corrupt difference.
    method: "exact" (every head's patched runs) or "attribution" (first-order estimates from one forward and
    one backward pass, `attribution.py`: a screen, not evidence). heads: with method "exact", patch only
    these (layer, head)s (the others' effects are NaN): the demo confirms its screen's top heads this way.
    check=False (method "attribution" only): skip the sanity runs; `sanity` is then {"passed": None}."""
    from probing.patching.attribution import attribute_ids, check_method
    check_method(method, ("exact", "attribution"))
    pooling = ALL if all_positions else SHARED
    loaded = as_loaded(model)
    kinds = check_kinds(kinds)
    for name, text in (("clean", clean_text), ("corrupt", corrupt_text)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {name} text is empty")
    source, target = _span_field(source, "source", clean_text), _span_field(target, "target", clean_text)
    pieces = minimal_pair(loaded, clean_text, corrupt_text)
    source_pieces, target_pieces = _spans_as_pieces(pieces.clean_offsets, source, target, pieces.swapped)
    module, readout = loaded.model, None
    if answers is not None:
        module, readout = _logit_readout(loaded, clean_text, corrupt_text, pieces.clean_offsets, pieces.swapped,
                                         answers, relation)
    if method == "attribution":
        out = attribute_ids(module, pieces.clean_ids, pieces.corrupt_ids, source_pieces, target_pieces, kinds,
                            max_rows, readout, check, pooling=pooling)
    else:
        heads = None if heads is None else hooks.check_heads(heads, *_layout_size(module))
        out = patch_ids(module, pieces.clean_ids, pieces.corrupt_ids, source_pieces, target_pieces, kinds,
                         max_rows, readout, heads, pooling)
    scale = out.difference
    if abs(scale) < 1e-9:
        raise ValueError("the two texts give the same readout: there is nothing to patch")
    effects, sanity = normalise(out, scale)
    return PairPatch(clean=clean_text, corrupt=corrupt_text, tokens=loaded.tokenizer.convert_ids_to_tokens(
                         pieces.clean_ids), source=source_pieces, swapped=pieces.swapped, target=target_pieces,
                     effects=effects, distance=out.distance,
                     sanity=_pair_sanity(sanity, scale, readout is not None) if check or method == "exact"
                     else {"passed": None},
                     attention=out.summary.attention, source_pattern=out.summary.source_pattern,
                     seconds=out.seconds, readout="embedding" if readout is None else "logits",
                     attention_reversed=out.summary.attention_reversed, norm_attention=out.summary.norm_attention,
                     method=method)
