"""Counterfactual activation patching of heads and of attention patterns on minimal pairs, gated on behaviour.

Definitions (the contract of issue 13; tests and the command rely on them):
- Pairs: two rows with the same `meta.pair`. Negation: the negated row is *clean*, its adverb control *corrupt*.
  Twins (Winograd, WSC, WinoBias pro/anti, Winogender): rows sharing `meta.twin`, `meta.twin_role` "clean" or
  "corrupt". A pair is usable only when both texts have the same number of pieces and differ in the swapped
  word's (the source span's) pieces alone; other pairs are skipped and counted with the reason.
- Head output `z[l, h]`: head h's slice of the input to layer l's attention output projection (`probing.hooks`).
- Readout: the sentence embedding e(x) = mean of the final hidden states over all (non-padding) positions, and
  m(run) = <e(run) - e(corrupt), e(clean) - e(corrupt)> / ||e(clean) - e(corrupt)||², so clean = 1, corrupt = 0.
- Effects of head (l, h) per pair: noising = 1 - m(clean run with z[l, h] from the corrupt run at every
  position) (necessity); denoising = m(corrupt run with z[l, h] from the clean run) (sufficiency). The pattern
  variants swap only the head's attention probabilities (its values stay the run's own): the whole pattern
  (`pattern_*`), or only the source word's query rows (`row_*`: where the head looks *from* "not" / the pronoun).
- Sanity checks in every pair: patching each run with its own z (all heads) and own patterns gives exactly 0;
  patching the hidden states entering the first layer from the other run gives denoising 1 +- 1e-5.

All of one pair's patched runs go through the model as one batch (chunked at `max_rows`): the two texts have the
same number of pieces, so there is no padding, and row r carries its own edit (`probing.hooks.HeadPatch`).

Statistics: per head, the mean over pairs with a cluster bootstrap CI and the maxT step-down `p_fwer`
(`probing.stats`). Behaviour first: the embedding distance ||e(clean) - e(corrupt)|| on the relation's pairs
must beat the same distance on control pairs that change a word without changing the relation (adverb <->
adverb), by a paired CI above 0; otherwise no head is named. A head is relation-specific only where its effect
on relation pairs beats its effect on control pairs (paired, clustered, maxT-corrected sign-flip test).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from probing import hooks, stats
from probing.models import LoadedModel

KINDS = ("noising", "denoising", "pattern_noising", "pattern_denoising", "row_noising", "row_denoising")
# Control adverbs: one is swapped for the next of the same length in pieces (the built-in controls use these).
ADVERBS = ("really", "actually", "also", "certainly", "probably", "still", "already", "indeed", "surely")
TWIN_WORDS = {"not": "really", "really": "not", "he": "she", "she": "he", "him": "her", "his": "her",
              "her": "his", "himself": "herself", "herself": "himself"}
SANITY_TOLERANCE = 1e-5


# ---- Pairs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """A clean and a corrupt text that differ only in the swapped word; spans are character offsets."""
    id: str
    relation: str
    clean: str
    corrupt: str
    clean_source: tuple[int, int]          # the swapped word in the clean text ("not", the pronoun)
    corrupt_source: tuple[int, int]
    clean_target: tuple[int, int] | None = None   # what the source word should attend to (attention score)
    group: str = ""                        # resampling unit (defaults to the pair id)


@dataclass
class PairSet:
    """The usable pairs, and for every skipped pair its id and reason."""
    pairs: list[Pair]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _id, reason in self.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def _pair_from(clean, corrupt, pair_id: str) -> Pair:
    return Pair(id=pair_id, relation=clean.relation, clean=clean.text, corrupt=corrupt.text,
                clean_source=tuple(clean.source_span), corrupt_source=tuple(corrupt.source_span),
                clean_target=tuple(clean.target_span),
                group=str(clean.meta.get("group", clean.meta.get("template", pair_id))))


def collect_pairs(examples) -> PairSet:
    """Clean/corrupt pairs from `meta.pair` (negation: negated = clean, control = corrupt) and from `meta.twin`
    with `meta.twin_role`; rows in neither scheme are ignored, incomplete pairs are skipped with the reason."""
    by_pair: dict[str, dict[str, object]] = {}
    for example in examples:
        meta = example.meta or {}
        if "twin" in meta:
            role = str(meta.get("twin_role", ""))
            if role not in ("clean", "corrupt"):
                raise ValueError(f"example {example.id!r}: meta.twin_role must be 'clean' or 'corrupt', got {role!r}")
            by_pair.setdefault(f"twin:{meta['twin']}", {})[role] = example
        elif "pair" in meta and example.relation == "negation":
            role = {"negated": "clean", "control": "corrupt"}.get(example.role)
            if role is not None:
                by_pair.setdefault(str(meta["pair"]), {})[role] = example
    pairs, skipped = [], []
    for pair_id, rows in by_pair.items():
        if set(rows) != {"clean", "corrupt"}:
            skipped.append((pair_id, f"incomplete pair: has only {', '.join(sorted(rows))}"))
        else:
            pairs.append(_pair_from(rows["clean"], rows["corrupt"], pair_id))
    return PairSet(pairs, skipped)


def _pieces(loaded: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoded = loaded.tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=loaded.max_length)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _span_pieces(offsets, span) -> set[int]:
    return {i for i, (s, e) in enumerate(offsets) if e > s and s < span[1] and span[0] < e}


def usable(loaded: LoadedModel, pair: Pair) -> tuple[bool, str, dict]:
    """(usable, reason if not, token info): same number of pieces, differing only in the swapped word's pieces."""
    clean_ids, clean_offsets = _pieces(loaded, pair.clean)
    corrupt_ids, corrupt_offsets = _pieces(loaded, pair.corrupt)
    clean_word = pair.clean[slice(*pair.clean_source)]
    corrupt_word = pair.corrupt[slice(*pair.corrupt_source)]
    if len(clean_ids) != len(corrupt_ids):
        hint = " (a contraction)" if "'" in clean_word or "’" in clean_word else ""
        return False, (f"different number of pieces: {clean_word!r} vs {corrupt_word!r}{hint}"), {}
    differ = {i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b}
    if not differ:
        return False, "the two texts tokenise identically", {}
    swapped = _span_pieces(clean_offsets, pair.clean_source) & _span_pieces(corrupt_offsets, pair.corrupt_source)
    if not differ <= swapped:
        return False, "the texts differ outside the swapped word's pieces (or the word has a different number of pieces)", {}
    target = sorted(_span_pieces(clean_offsets, pair.clean_target)) if pair.clean_target else []
    return True, "", {"ids": (clean_ids, corrupt_ids), "source": sorted(swapped), "target": target}


def _coarse_reason(reason: str) -> str:
    """Reasons counted in summaries: the kind of problem, without the words."""
    if reason.startswith("different number of pieces"):
        return ("different number of pieces (a contraction)" if "contraction" in reason
                else "different number of pieces (the swapped words split differently)")
    return reason


def _coarse_counts(skipped: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _id, reason in skipped:
        counts[_coarse_reason(reason)] = counts.get(_coarse_reason(reason), 0) + 1
    return counts


def control_pairs(pairs: list[Pair], loaded: LoadedModel) -> PairSet:
    """Adverb <-> adverb pairs built from the negation pairs' corrupt (adverb) texts: the adverb is swapped for
    the next one in ADVERBS that keeps the pair usable, so the relation does not change but a word does."""
    controls, skipped = [], []
    for pair in pairs:
        start, end = pair.corrupt_source
        adverb = pair.corrupt[start:end]
        if adverb.lower() not in ADVERBS:
            skipped.append((pair.id, f"the corrupt word {adverb!r} is not a known adverb"))
            continue
        index = ADVERBS.index(adverb.lower())
        for other in ADVERBS[index + 1:] + ADVERBS[:index]:
            text = pair.corrupt[:start] + other + pair.corrupt[end:]
            candidate = Pair(id=f"{pair.id}:control", relation="control", clean=pair.corrupt, corrupt=text,
                             clean_source=(start, end), corrupt_source=(start, start + len(other)),
                             clean_target=None, group=pair.group)
            if usable(loaded, candidate)[0]:
                controls.append(candidate)
                break
        else:
            skipped.append((pair.id, "no other adverb with the same number of pieces"))
    return PairSet(controls, skipped)


def suggest_twin(text: str) -> tuple[str, str] | None:
    """A minimal twin for a sentence, and what was swapped: "not" <-> "really", he <-> she (him/his/her,
    himself/herself). The first swappable word wins; None when there is none."""
    for match in re.finditer(r"[A-Za-z]+", text):
        word = match.group()
        swap = TWIN_WORDS.get(word.lower())
        if swap is None:
            continue
        if word[0].isupper():
            swap = swap.capitalize()
        return text[:match.start()] + swap + text[match.end():], f"{word} -> {swap}"
    return None


# ---- One pair: every head's patched runs in one batch -------------------------------------------------

def _forward(module, ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states [batch, pos, d_model] (no padding: a pair's texts have the same length)."""
    with torch.inference_mode():
        return module(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.float()


def _readout(hidden: torch.Tensor, e_clean: torch.Tensor, e_corrupt: torch.Tensor) -> torch.Tensor:
    """m per row: the mean-pooled embedding projected on clean - corrupt, normalised so clean = 1, corrupt = 0."""
    direction = e_clean - e_corrupt
    embedding = hidden.double().mean(1)
    return ((embedding - e_corrupt) @ direction) / (direction @ direction)


@dataclass(frozen=True)
class _Row:
    kind: str         # one of KINDS, or a sanity row
    layer: int
    head: int


def _plan(n_layers: int, n_heads: int, kinds) -> list[_Row]:
    return [_Row(kind, layer, head) for kind in kinds for layer in range(n_layers) for head in range(n_heads)]


def _chunk_patches(rows: list[_Row], offset: int, z: dict, patterns: dict, inputs: list[int],
                   source: torch.Tensor, n_layers: int, n_heads: int):
    """HeadPatches for one chunk of rows: z patches and pattern patches (whole or source rows), by layer.
    `inputs[i]` is the run (0 clean, 1 corrupt) row i starts from; patches take the other run's values."""
    z_rows: dict[int, list] = {}
    pattern_rows: dict[tuple[int, bool], list] = {}
    for local, row in enumerate(rows):
        run = inputs[offset + local]
        other = 1 - run
        if row.kind in ("noising", "denoising"):
            z_rows.setdefault(row.layer, []).append((local, row.head, z[row.layer][other, :, row.head]))
        elif row.kind in ("pattern_noising", "pattern_denoising"):
            pattern_rows.setdefault((row.layer, False), []).append(
                (local, row.head, patterns[row.layer][other, row.head]))
        elif row.kind in ("row_noising", "row_denoising"):
            pattern_rows.setdefault((row.layer, True), []).append(
                (local, row.head, patterns[row.layer][other, row.head][source]))
        elif row.kind == "sanity_own":
            # every head of every layer gets the run's own z and own pattern
            for layer in range(n_layers):
                for head in range(n_heads):
                    z_rows.setdefault(layer, []).append((local, head, z[layer][run, :, head]))
                    pattern_rows.setdefault((layer, False), []).append((local, head, patterns[layer][run, head]))
    as_patch = lambda layer, items, query=None: hooks.HeadPatch(  # noqa: E731
        layer=layer, rows=torch.tensor([i[0] for i in items]), heads=torch.tensor([i[1] for i in items]),
        values=torch.stack([i[2] for i in items]), query=query)
    z_patches = [as_patch(layer, items) for layer, items in z_rows.items()]
    pattern_patches = [as_patch(layer, items, source if only_source else None)
                       for (layer, only_source), items in pattern_rows.items()]
    return z_patches, pattern_patches


@dataclass
class PairPatch:
    """Every head's effects on one pair. effects[kind]: [layers, heads]; attention: the clean run's attention
    from the source word (mean over its pieces) to the target word (sum over its pieces), [layers, heads], or
    None without a target; source_pattern: from the source word to every piece, [layers, heads, pieces]."""
    clean: str
    corrupt: str
    tokens: list[str]
    source: list[int]
    effects: dict[str, np.ndarray]
    sanity: dict[str, float]
    distance: float
    attention: np.ndarray | None
    source_pattern: np.ndarray
    seconds: float

    @property
    def table(self) -> pd.DataFrame:
        n_layers, n_heads = next(iter(self.effects.values())).shape
        table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads),
                              "head": np.tile(np.arange(n_heads), n_layers)})
        for kind, values in self.effects.items():
            table[kind] = values.reshape(-1)
        if self.attention is not None:
            table["attention"] = self.attention.reshape(-1)
        return table

    def to_dict(self) -> dict:
        return {"clean": self.clean, "corrupt": self.corrupt, "tokens": self.tokens, "source": self.source,
                "distance": self.distance, "sanity": self.sanity, "seconds": self.seconds,
                "effects": {k: v.tolist() for k, v in self.effects.items()},
                "attention": None if self.attention is None else self.attention.tolist()}


def _patch_ids(loaded: LoadedModel, clean_ids: list[int], corrupt_ids: list[int], source: list[int],
               target: list[int], kinds, max_rows: int) -> dict:
    """The batched core: one base run of both texts (caching z and patterns), then every head's patched runs."""
    started = time.perf_counter()
    module = hooks.as_module(loaded)
    layout = hooks.head_layout(loaded)
    device = next(module.parameters()).device
    ids = torch.tensor([clean_ids, corrupt_ids], device=device)
    first_layer_input = {}
    with hooks.cache_z(loaded) as z, hooks.cache_pattern(loaded) as patterns:
        # records the hidden states entering the first layer (for the embedding sanity check)
        def remember(_module, args, kwargs):
            first_layer_input["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        handle = layout.layers[0].register_forward_pre_hook(remember, with_kwargs=True)
        try:
            hidden = _forward(module, ids)
        finally:
            handle.remove()
    e_clean, e_corrupt = hidden.double().mean(1)
    source_t = torch.tensor(source)
    rows = _plan(layout.n_layers, layout.n_heads, kinds)
    rows += [_Row("sanity_own", -1, -1), _Row("sanity_own", -1, -1), _Row("sanity_embeddings", -1, -1)]
    # noising and the first own-run row start from clean; denoising, the second own row and the embedding
    # check start from corrupt
    inputs = [1 if r.kind.endswith("denoising") else 0 for r in rows[:-3]] + [0, 1, 1]
    readouts = torch.empty(len(rows), dtype=torch.float64)
    for start in range(0, len(rows), max_rows):
        chunk = rows[start:start + max_rows]
        z_patches, pattern_patches = _chunk_patches(chunk, start, z, patterns, inputs, source_t,
                                                    layout.n_layers, layout.n_heads)
        embed_rows = [i for i, r in enumerate(chunk) if r.kind == "sanity_embeddings"]
        batch = ids[[inputs[start + i] for i in range(len(chunk))]]
        embed_values = first_layer_input["h"][0].expand(len(embed_rows), -1, -1)
        with hooks.replace_z(loaded, z_patches), hooks.replace_pattern(loaded, pattern_patches), \
                hooks.replace_layer_input(loaded, 0, torch.tensor(embed_rows, dtype=torch.long), embed_values):
            readouts[start:start + len(chunk)] = _readout(_forward(module, batch), e_clean, e_corrupt).cpu()
    n = layout.n_layers * layout.n_heads
    effects = {}
    for index, kind in enumerate(kinds):
        m = readouts[index * n:(index + 1) * n].numpy().reshape(layout.n_layers, layout.n_heads)
        effects[kind] = m if kind.endswith("denoising") else 1.0 - m
    sanity = {"own_noising_max_abs": float(abs(1.0 - readouts[-3])),
              "own_denoising_max_abs": float(abs(readouts[-2])),
              "embedding_denoising": float(readouts[-1])}
    clean_patterns = torch.stack([patterns[l][0] for l in range(layout.n_layers)]).float()   # [L, H, q, k]
    source_pattern = clean_patterns[:, :, source].mean(2)                                   # [L, H, k]
    attention = source_pattern[:, :, target].sum(-1).numpy() if target else None
    return {"effects": effects, "sanity": sanity, "distance": float(torch.linalg.norm(e_clean - e_corrupt)),
            "attention": attention, "source_pattern": source_pattern.numpy(),
            "seconds": time.perf_counter() - started}


def _check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    return kinds


def _loaded(model) -> LoadedModel:
    from probing.models import load_model
    return model if isinstance(model, LoadedModel) else load_model(model)


def patch_pair(model, clean_text: str, corrupt_text: str, *, relation: str | None = None,
               kinds=KINDS, max_rows: int = 512) -> PairPatch:
    """Every head's patching effects for one clean/corrupt pair (the demo's call). The swapped word is found
    from the tokens: the pieces that differ. ValueError when the pair is not a minimal pair."""
    loaded = _loaded(model)
    kinds = _check_kinds(kinds)
    for name, text in (("clean", clean_text), ("corrupt", corrupt_text)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {name} text is empty")
    clean_ids, clean_offsets = _pieces(loaded, clean_text)
    corrupt_ids, _ = _pieces(loaded, corrupt_text)
    if len(clean_ids) != len(corrupt_ids):
        raise ValueError(f"the two texts have different numbers of pieces ({len(clean_ids)} vs {len(corrupt_ids)}); "
                         "patching needs a minimal pair that swaps one word for a word of as many pieces")
    differ = [i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b]
    if not differ:
        raise ValueError("the two texts are the same after tokenisation; change one word")
    encoded = loaded.tokenizer(clean_text)
    word_ids = encoded.word_ids()
    if len({word_ids[i] for i in differ}) > 1:
        raise ValueError("the two texts differ in more than one word; patching needs a minimal pair")
    out = _patch_ids(loaded, clean_ids, corrupt_ids, differ, [], kinds, max_rows)
    tokens = loaded.tokenizer.convert_ids_to_tokens(clean_ids)
    return PairPatch(clean=clean_text, corrupt=corrupt_text, tokens=tokens, source=differ,
                     effects=out["effects"], sanity=out["sanity"], distance=out["distance"],
                     attention=None, source_pattern=out["source_pattern"], seconds=out["seconds"])


# ---- Many pairs: effects, statistics, behaviour gate, controls, attention vs effect --------------------

@dataclass
class PatchingResult:
    """Per-head patching effects over a set of pairs. `table`: one row per head (layer, head, each kind's
    mean with CI and p_fwer, control effects and the specificity test, attention); `per_pair[kind]`:
    [pairs, layers*heads]; `gate`: the behavioural gate; `named`: heads named per effect (empty when the
    gate fails)."""
    model: str
    relation: str
    readout: str
    n_layers: int
    n_heads: int
    pair_ids: list[str]
    table: pd.DataFrame
    per_pair: dict[str, np.ndarray]
    gate: dict
    skipped: dict[str, int]
    skipped_pairs: list[tuple[str, str]]
    sanity: dict
    correlation: dict
    named: dict[str, list[tuple[int, int]]]
    control: dict
    seconds: float
    notes: list[str] = field(default_factory=list)

    def top(self, kind: str, k: int = 5) -> list[tuple[int, int, float]]:
        ranked = self.table.sort_values([kind, "layer", "head"], ascending=[False, True, True]).head(k)
        return [(int(r.layer), int(r.head), float(getattr(r, kind))) for r in ranked.itertuples()]

    def to_dict(self) -> dict:
        return {"model": self.model, "relation": self.relation, "readout": self.readout,
                "n_layers": self.n_layers, "n_heads": self.n_heads, "n_pairs": len(self.pair_ids),
                "gate": self.gate, "skipped": self.skipped, "sanity": self.sanity, "correlation": self.correlation,
                "named": {k: [list(h) for h in v] for k, v in self.named.items()},
                "top": {kind: [list(t) for t in self.top(kind)] for kind in self.per_pair},
                "control": self.control, "seconds": self.seconds, "notes": self.notes}


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of x (heads,) with every row of y (draws, heads), average ranks for ties."""
    from scipy.stats import rankdata
    rx = rankdata(x)
    ry = rankdata(y, axis=-1)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ry = ry - ry.mean(-1, keepdims=True)
    norms = np.linalg.norm(ry, axis=-1)
    return np.where(norms > 0, (ry @ rx) / np.where(norms > 0, norms, 1), np.nan)


def rank_correlation(attention: np.ndarray, per_pair: np.ndarray, n_boot: int, seed: int, groups) -> dict:
    """Spearman correlation between each head's attention score and its mean effect, with a cluster-bootstrap
    CI over pairs (the attention scores stay fixed; the effects are resampled)."""
    effect = np.nanmean(per_pair, 0)
    rho = float(_spearman_rows(attention, effect[None])[0])
    codes = stats.group_codes(groups, len(per_pair))
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(codes == g) for g in range(n_groups)]
    draws = np.stack([np.nanmean(per_pair[np.concatenate([members[g] for g in rng.integers(0, n_groups, n_groups)])], 0)
                      for _ in range(n_boot)])
    boot = _spearman_rows(attention, draws)
    return {"spearman": rho, "ci_low": float(np.nanquantile(boot, 0.025)),
            "ci_high": float(np.nanquantile(boot, 0.975)), "n_heads": int(len(attention))}


def _run_pairs(loaded, pair_set: PairSet, kinds, max_rows, progress) -> tuple[list, list, PairSet]:
    """Patch every usable pair; unusable ones join the skipped list with their reason."""
    from tqdm import tqdm
    outs, kept, skipped = [], [], list(pair_set.skipped)
    for pair in tqdm(pair_set.pairs, disable=not progress, unit="pair", leave=False):
        ok, reason, info = usable(loaded, pair)
        if not ok:
            skipped.append((pair.id, reason))
            continue
        outs.append(_patch_ids(loaded, *info["ids"], info["source"], info["target"], kinds, max_rows))
        kept.append(pair)
    return outs, kept, PairSet(kept, skipped)


def _check_options(n_boot, n_perm, alpha, max_pairs):
    for name, value in (("n_boot", n_boot), ("n_perm", n_perm)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    if max_pairs is not None and (not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be a positive integer, got {max_pairs!r}")


def _gate(distances: np.ndarray, control_distances: np.ndarray | None, n_boot: int, seed: int, groups) -> dict:
    """Behaviour first: does the swap move the readout more than a relation-preserving swap does?"""
    low, high = stats.bootstrap_ci(distances[:, None], n_boot, seed=seed, groups=groups)
    gate = {"measure": "||e(clean) - e(corrupt)||, mean over pairs", "clean_minus_corrupt": float(distances.mean()),
            "ci": [float(low[0]), float(high[0])]}
    if control_distances is None:
        gate.update(passed=bool(low[0] > 0), note="no control pairs: the gate only asks that the swap moves the "
                    "embedding at all, which any word swap does")
        return gate
    diff = distances - control_distances
    dlow, dhigh = stats.bootstrap_ci(diff[:, None], n_boot, seed=seed, groups=groups)
    gate.update(control_mean=float(control_distances.mean()), relation_minus_control=float(diff.mean()),
                relation_minus_control_ci=[float(dlow[0]), float(dhigh[0])], passed=bool(dlow[0] > 0),
                note="passes when the relation's swap moves the embedding more than an adverb <-> adverb swap "
                     "(paired, cluster-bootstrap CI above 0)")
    return gate


def patch_heads(model, examples, *, kinds=KINDS, attention_scores=None, controls: bool = True,
                n_boot: int = 1000, n_perm: int = 10000, alpha: float = 0.05, seed: int = 0,
                max_pairs: int | None = None, max_rows: int = 512, progress: bool = False) -> PatchingResult:
    """Noising and denoising effects of every head (and of its pattern, and of its source rows) on the minimal
    pairs in `examples`, with CIs, maxT p_fwer, the behavioural gate, control pairs (negation: adverb <->
    adverb) and the attention-vs-effect rank correlation.

    attention_scores: optional per-head scores to correlate with (a heads table with layer, head and one score
    column named in `attention_scores.attrs["score"]`, or a [layers, heads] array); without it, the clean
    run's attention from the source word to the target word is used."""
    started = time.perf_counter()
    loaded = _loaded(model)
    kinds = _check_kinds(kinds)
    _check_options(n_boot, n_perm, alpha, max_pairs)
    hooks.head_layout(loaded)   # fail early on an unsupported architecture
    pair_set = collect_pairs(examples)
    if max_pairs is not None:
        pair_set = PairSet(pair_set.pairs[:max_pairs], pair_set.skipped)
    if not pair_set.pairs:
        raise ValueError("no clean/corrupt pairs in these examples: patching needs rows paired by meta.pair "
                         "(negation: role negated + control) or meta.twin with meta.twin_role")
    relation = pair_set.pairs[0].relation
    outs, kept, pair_set = _run_pairs(loaded, pair_set, kinds, max_rows, progress)
    if not outs:
        raise ValueError(f"none of the {len(pair_set.skipped)} pairs is usable: "
                         f"{pair_set.skipped_counts()}")
    n_layers, n_heads = hooks.head_layout(loaded).n_layers, hooks.head_layout(loaded).n_heads
    groups = [p.group or p.id for p in kept]
    per_pair = {kind: np.stack([o["effects"][kind].reshape(-1) for o in outs]) for kind in kinds}
    table = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers)})
    for index, kind in enumerate(kinds):
        low, high = stats.bootstrap_ci(per_pair[kind], n_boot, seed=seed, groups=groups)
        _p, p_fwer = stats.sign_flip_tests(per_pair[kind], n_perm, seed + index, groups=groups)
        table[kind], table[f"{kind}_ci_low"], table[f"{kind}_ci_high"] = per_pair[kind].mean(0), low, high
        table[f"{kind}_p_fwer"] = p_fwer
    raw_attention = [o["attention"] for o in outs if o["attention"] is not None]
    if raw_attention and len(raw_attention) == len(outs):
        table["attention"] = np.stack(raw_attention).reshape(len(outs), -1).mean(0)
    distances = np.array([o["distance"] for o in outs])
    control, control_distances = {}, None
    if controls and relation == "negation":
        control_set = control_pairs(kept, loaded)
        control_outs, control_kept, control_set = _run_pairs(loaded, control_set, kinds[:2] if len(kinds) >= 2
                                                             else kinds, max_rows, False)
        control = {"built_from": "each negation pair's adverb control, with its adverb swapped for the next adverb "
                                 f"in {list(ADVERBS)} of as many pieces", "n_pairs": len(control_outs),
                   "skipped": control_set.skipped_counts()}
        if control_outs:
            by_id = {p.id[:-len(':control')]: o for p, o in zip(control_kept, control_outs)}
            matched = [i for i, p in enumerate(kept) if p.id in by_id]
            control_distances = np.full(len(kept), np.nan)
            for i in matched:
                control_distances[i] = by_id[kept[i].id]["distance"]
            for index, kind in enumerate(k for k in ("noising", "denoising") if k in kinds):
                ctrl = np.stack([by_id[kept[i].id]["effects"][kind].reshape(-1) for i in matched])
                table[f"control_{kind}"] = ctrl.mean(0)
                diff = per_pair[kind][matched] - ctrl
                _p, p_fwer = stats.sign_flip_tests(diff, n_perm, seed + 100 + index,
                                                   groups=[groups[i] for i in matched])
                table[f"{kind}_minus_control"] = diff.mean(0)
                table[f"{kind}_specific_p_fwer"] = p_fwer
            if len(matched) < len(kept):
                keep = np.array(matched)
                distances_g, control_g = distances[keep], control_distances[keep]
            else:
                distances_g, control_g = distances, control_distances
    if control_distances is not None:
        gate = _gate(distances_g, control_g, n_boot, seed, [groups[i] for i in range(len(kept))
                                                             if not np.isnan(control_distances[i])])
    else:
        gate = _gate(distances, None, n_boot, seed, groups)
    score, score_name = _attention_vector(attention_scores, table, n_layers, n_heads)
    correlation = {}
    if score is not None:
        correlation = {kind: {"attention_score": score_name,
                              **rank_correlation(score, per_pair[kind], n_boot, seed, groups)}
                       for kind in kinds if kind in ("noising", "denoising")}
    named = {}
    for kind in kinds:
        column = f"{kind}_specific_p_fwer" if f"{kind}_specific_p_fwer" in table else f"{kind}_p_fwer"
        significant = table[(table[f"{kind}_p_fwer"] < alpha) & (table[column] < alpha)] if gate["passed"] else table[:0]
        named[kind] = [(int(r.layer), int(r.head)) for r in
                       significant.sort_values(kind, ascending=False).itertuples()]
    sanity = {"own_activations_max_abs": float(max(max(o["sanity"]["own_noising_max_abs"],
                                                        o["sanity"]["own_denoising_max_abs"]) for o in outs)),
              "embedding_denoising_max_error": float(max(abs(o["sanity"]["embedding_denoising"] - 1) for o in outs))}
    sanity["passed"] = bool(sanity["own_activations_max_abs"] <= SANITY_TOLERANCE
                            and sanity["embedding_denoising_max_error"] <= SANITY_TOLERANCE)
    if not sanity["passed"]:
        raise RuntimeError(f"patching sanity checks failed: {sanity}; the hooks do not patch what they should")
    notes = ["readout: mean-pooled final hidden states projected on clean - corrupt (clean = 1, corrupt = 0)",
             f"named heads: p_fwer < {alpha} (maxT over all heads, one-sided effect > 0)"
             + (" and, for negation, effect > control-pair effect at p_fwer < alpha" if control else "")
             + "; none are named when the behavioural gate fails"]
    return PatchingResult(model=loaded.name, relation=relation, readout="embedding", n_layers=n_layers,
                          n_heads=n_heads, pair_ids=[p.id for p in kept], table=table, per_pair=per_pair, gate=gate,
                          skipped=_coarse_counts(pair_set.skipped),
                          skipped_pairs=pair_set.skipped, sanity=sanity, correlation=correlation, named=named,
                          control=control, seconds=round(time.perf_counter() - started, 1), notes=notes)


def _attention_vector(attention_scores, table: pd.DataFrame, n_layers: int, n_heads: int):
    """(per-head attention score in table order, its name), or (None, "") when there is none."""
    if attention_scores is None:
        if "attention" in table:
            return table["attention"].to_numpy(), "mean attention source -> target in the clean texts"
        return None, ""
    if isinstance(attention_scores, pd.DataFrame):
        score = attention_scores.attrs.get("score")
        if score not in attention_scores:
            raise ValueError("attention_scores as a table needs attrs['score'] naming one of its columns")
        ordered = attention_scores.set_index(["layer", "head"]).reindex(
            list(zip(table["layer"], table["head"])))[score].to_numpy()
        if np.isnan(ordered).any():
            raise ValueError(f"attention_scores lacks some heads of this {n_layers}x{n_heads} model")
        return ordered, score
    values = np.asarray(attention_scores, dtype=np.float64)
    if values.shape != (n_layers, n_heads):
        raise ValueError(f"attention_scores must have shape ({n_layers}, {n_heads}), got {values.shape}")
    return values.reshape(-1), "given"
