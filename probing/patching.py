"""Counterfactual activation patching of heads and of attention patterns on minimal pairs, gated on behaviour.

Definitions (the contract of issue 13; tests and the command rely on them):
- Pairs: two rows with the same `meta.pair`. Negation: the negated row is *clean*, its adverb control *corrupt*.
  Twins (Winograd, WSC, WinoBias pro/anti, Winogender): rows sharing `meta.twin`, `meta.twin_role` "clean" or
  "corrupt". A pair is usable only when both texts have the same number of pieces and differ in one word's
  pieces alone: the source word itself ("not" <-> "really", he <-> she) or, for Winograd-style twins, another
  word ("too wide" <-> "too narrow") with the source (the pronoun) at the same pieces in both; other pairs are
  skipped and counted with the reason.
- Head output `z[l, h]`: head h's slice of the input to layer l's attention output projection (`probing.hooks`).
- Readout, embedding (encoders without an LM head): e(x) = mean of the final hidden states over all positions,
  m(run) = <e(run) - e(corrupt), e(clean) - e(corrupt)> / ||e(clean) - e(corrupt)||², so clean = 1, corrupt = 0.
- Readout, logits (models with a trained LM head, on NEG-136-style rows, `completion_pairs`): v(run) = logit of
  target_neg - logit of target_aff (first pieces) at the last position (decoders) or at a mask after the
  context (masked LMs); clean = "A trout is not a", corrupt = "A trout is really a". Effects are divided by the
  mean v(clean) - v(corrupt) over pairs (one pair's difference can be ~0), so clean = 1, corrupt = 0 on average.
  Behaviour gate: the CI of v(clean) - v(corrupt) must lie above 0, else no head is named (Ettinger 2020: small
  LMs often ignore "not"). Coreference twins, masked LMs (Kocijan et al. 2019): the pronoun becomes the mask in
  both twins, v(run) = logit of the clean twin's antecedent - logit of the corrupt twin's at the mask
  (`masked_twin_pairs`). Decoders have no coreference logit readout (the swap can follow the pronoun, which a
  left-to-right model cannot read at the pronoun); they and the encoders without an LM head use the embedding.
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

import inspect
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from probing import hooks, stats
from probing.models import LoadedModel

KINDS = ("noising", "denoising", "pattern_noising", "pattern_denoising", "row_noising", "row_denoising")
# Control adverbs: one is swapped for the next of the same length in pieces (the built-in controls use these).
ADVERBS = ("really", "actually", "also", "certainly", "probably", "still", "already", "indeed", "surely")
TWIN_WORDS = {"not": "really", "really": "not", "he": "she", "she": "he", "him": "her", "his": "her",
              "her": "his", "himself": "herself", "herself": "himself"}
SANITY_TOLERANCE = 1e-5
LOGIT_SANITY_TOLERANCE = 1e-3    # in logits: see patch_heads


# ---- Pairs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """A clean and a corrupt text that differ only in the swapped word; spans are character offsets."""
    id: str
    relation: str
    clean: str
    corrupt: str
    clean_source: tuple[int, int]          # the source word in the clean text ("not", the pronoun)
    corrupt_source: tuple[int, int]
    clean_target: tuple[int, int] | None = None   # what the source word should attend to (attention score)
    corrupt_target: tuple[int, int] | None = None  # the same in the corrupt text (twins: the other referent)
    group: str = ""                        # resampling unit (defaults to the pair id)
    answers: tuple[str, str] | None = None  # LM readout: (the answer the clean text favours, the corrupt's)


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
                clean_target=tuple(clean.target_span), corrupt_target=tuple(corrupt.target_span),
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


def completion_pairs(examples, loaded: LoadedModel, masked: bool) -> PairSet:
    """NEG-136-style pairs for a language-model readout, from negated rows whose meta has `context_neg`,
    `target_aff` and `target_neg`: clean = the negated context ("A trout is not a"), corrupt = the same with the
    cue swapped for the first adverb of as many pieces ("A trout is really a"); the answers are (target_neg,
    target_aff), so a model that reads "not" favours the first after the clean context. A masked LM reads a
    mask after the context ("A trout is not a [MASK]."); a decoder reads its last position."""
    mask = loaded.tokenizer.mask_token if masked else None
    if masked and mask is None:
        raise ValueError("this tokenizer has no mask token: a masked-LM readout is impossible")
    pairs, skipped = [], []
    for example in examples:
        meta = example.meta or {}
        if example.relation != "negation" or not {"context_neg", "target_aff", "target_neg"} <= set(meta):
            continue
        pair_id, context = str(meta.get("pair", example.id)), str(meta["context_neg"])
        cue = re.search(r"\bnot\b", context)
        if cue is None:
            skipped.append((pair_id, "the cue is a contraction (n't): no adverb swaps it piece for piece"
                            if "n't" in context or "n’t" in context else "no 'not' in the context"))
            continue
        suffix = f" {mask}." if masked else ""
        clean = context + suffix
        for adverb in ADVERBS:
            corrupt = context[:cue.start()] + adverb + context[cue.end():] + suffix
            pair = Pair(id=pair_id, relation="negation", clean=clean, corrupt=corrupt, clean_source=cue.span(),
                        corrupt_source=(cue.start(), cue.start() + len(adverb)), group=pair_id,
                        answers=(str(meta["target_neg"]), str(meta["target_aff"])))
            if usable(loaded, pair, check_answers=False)[0]:
                pairs.append(pair)
                break
        else:
            skipped.append((pair_id, "no adverb with as many pieces as 'not'"))
    return PairSet(pairs, skipped)


def masked_twin_pairs(examples, loaded: LoadedModel) -> PairSet:
    """Coreference twins for a masked LM's logit readout (Kocijan et al. 2019): in both twins the pronoun
    becomes the mask token, and the readout is the logit of the clean twin's antecedent minus the corrupt
    twin's (first pieces) at the mask. "The box would not fit through the door because [MASK] was too wide /
    narrow": a model that resolves the pronoun favours "box" after "wide". Twins whose answers are the same
    word (WinoBias pro/anti keep the referent and swap its gender) or that differ only in the pronoun (masked
    away) are skipped with the reason."""
    mask = loaded.tokenizer.mask_token
    if mask is None:
        raise ValueError("this tokenizer has no mask token: a masked-LM readout is impossible")
    twins = collect_pairs([e for e in examples if e.relation == "coreference"])
    by_id = {}
    for example in examples:
        if "twin" in (example.meta or {}):
            by_id[(f"twin:{example.meta['twin']}", example.meta.get("twin_role"))] = example
    pairs, skipped = [], list(twins.skipped)
    for twin in twins.pairs:
        clean, corrupt = by_id[(twin.id, "clean")], by_id[(twin.id, "corrupt")]
        answers = (clean.target, corrupt.target)
        if answers[0].lower() == answers[1].lower():
            skipped.append((twin.id, "both twins have the same answer: no contrast for a logit readout"))
            continue
        masked = []
        for example in (clean, corrupt):
            start, end = example.source_span
            text = example.text[:start] + mask + example.text[end:]
            shift = lambda span: span if span[1] <= start else (span[0] + len(mask) - (end - start),  # noqa: E731
                                                                span[1] + len(mask) - (end - start))
            masked.append((text, (start, start + len(mask)), shift(tuple(example.target_span))))
        if masked[0][0] == masked[1][0]:
            skipped.append((twin.id, "the twins differ only in the pronoun, which the masked-LM readout masks"))
            continue
        pairs.append(Pair(id=twin.id, relation="coreference", clean=masked[0][0], corrupt=masked[1][0],
                          clean_source=masked[0][1], corrupt_source=masked[1][1], clean_target=masked[0][2],
                          group=twin.group, answers=answers))
    return PairSet(pairs, skipped)


def _answer_ids(loaded: LoadedModel, answers: tuple[str, str]) -> tuple[int, int]:
    """Each answer's first piece as the model would write it next: after a space for a decoder."""
    prefix = " " if loaded.is_causal else ""
    return tuple(loaded.tokenizer(prefix + word, add_special_tokens=False)["input_ids"][0] for word in answers)


def _pieces(loaded: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoded = loaded.tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=loaded.max_length)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _span_pieces(offsets, span) -> set[int]:
    return {i for i, (s, e) in enumerate(offsets) if e > s and s < span[1] and span[0] < e}


def _word_of_pieces(loaded: LoadedModel, text: str, pieces) -> int | None:
    """The index of the one word (the tokenizer's pre-tokenised words) that holds all `pieces`, else None."""
    word_ids = loaded.tokenizer(text, truncation=True, max_length=loaded.max_length).word_ids()
    words = {word_ids[i] for i in pieces}
    return words.pop() if len(words) == 1 and None not in words else None


def usable(loaded: LoadedModel, pair: Pair, check_answers: bool = True) -> tuple[bool, str, dict]:
    """(usable, reason if not, token info): same number of pieces, differing in one word's pieces alone.

    The swapped word is the source word itself (negation: "not" <-> "really"; he <-> she), or, for twins
    such as Winograd's, another single word ("too wide" <-> "too narrow"), while the source (the pronoun)
    sits at the same pieces in both texts. Info: `ids` (clean, corrupt), `swapped` (the differing pieces),
    `source` (the source word's pieces: the query rows of the `row_*` patches), `target`; with answers,
    also `answer_ids` and the readout `position`."""
    clean_ids, clean_offsets = _pieces(loaded, pair.clean)
    corrupt_ids, corrupt_offsets = _pieces(loaded, pair.corrupt)
    clean_word = pair.clean[slice(*pair.clean_source)]
    corrupt_word = pair.corrupt[slice(*pair.corrupt_source)]
    if len(clean_ids) != len(corrupt_ids):
        hint = " (a contraction)" if "'" in clean_word or "’" in clean_word else ""
        return False, (f"different number of pieces: {clean_word!r} vs {corrupt_word!r}{hint}"), {}
    differ = sorted(i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b)
    if not differ:
        return False, "the two texts tokenise identically", {}
    source = _span_pieces(clean_offsets, pair.clean_source)
    if source != _span_pieces(corrupt_offsets, pair.corrupt_source):
        return False, "the source word sits at different pieces in the two texts", {}
    if not set(differ) <= source and _word_of_pieces(loaded, pair.clean, differ) is None:
        return False, "the texts differ in more than one word", {}
    target = sorted(_span_pieces(clean_offsets, pair.clean_target)) if pair.clean_target else []
    info = {"ids": (clean_ids, corrupt_ids), "swapped": differ, "source": sorted(source), "target": target}
    if pair.answers is not None and check_answers:
        answer_ids = _answer_ids(loaded, pair.answers)
        if answer_ids[0] == answer_ids[1]:
            return False, "the two answers start with the same piece", {}
        if loaded.is_causal:
            position = len(clean_ids) - 1
        elif loaded.tokenizer.mask_token_id in clean_ids:
            position = clean_ids.index(loaded.tokenizer.mask_token_id)
        else:
            return False, "no mask token in the text: a masked LM has nowhere to read the answer", {}
        info.update(answer_ids=answer_ids, position=position)
    return True, "", info


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

@dataclass(frozen=True)
class LogitReadout:
    """The logit difference answers[0] - answers[1] (token ids) at piece `position` of a language model's output:
    a decoder's last position, or a masked LM's mask."""
    lm: nn.Module
    answers: tuple[int, int]
    position: int


def _run(module, ids: torch.Tensor, readout: LogitReadout | None) -> torch.Tensor:
    """Embedding readout (readout None): the final hidden states [batch, pos, d_model]; logit readout: the logit
    difference per row [batch] (float64). No padding: a pair's texts have the same length."""
    with torch.inference_mode():
        if readout is None:
            return module(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.float()
        keep = ids.shape[1] - readout.position       # only the readout position's logits (a 262k vocabulary)
        kwargs = {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(module.forward).parameters else {}
        logits = module(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits[:, -keep].double()
        return logits[:, readout.answers[0]] - logits[:, readout.answers[1]]


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


def _chunk_patches(rows: list[_Row], inputs: list[int], z: dict, patterns: dict, source: torch.Tensor,
                   n_layers: int, n_heads: int):
    """HeadPatches for one chunk of rows: z patches and pattern patches (whole or source rows), by layer.
    `inputs[i]` is the run (0 clean, 1 corrupt) row i starts from; patches take the other run's values."""
    z_rows: dict[int, list] = {}
    pattern_rows: dict[tuple[int, bool], list] = {}
    for local, row in enumerate(rows):
        run = inputs[local]
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
    source: list[int]                      # the source word's pieces (default: the swapped word's)
    swapped: list[int]                     # the pieces where the two texts differ
    target: list[int]                      # the target word's pieces ([] without a target)
    effects: dict[str, np.ndarray]         # kind -> [layers, heads]
    sanity: dict[str, float]
    distance: float
    attention: np.ndarray | None
    source_pattern: np.ndarray
    seconds: float
    readout: str = "embedding"

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
                "swapped": self.swapped, "target": self.target, "distance": self.distance, "sanity": self.sanity, "seconds": self.seconds, "readout": self.readout,
                "effects": {k: v.tolist() for k, v in self.effects.items()},
                "attention": None if self.attention is None else self.attention.tolist()}


def _patch_ids(module, clean_ids: list[int], corrupt_ids: list[int], source: list[int], target: list[int],
               kinds, max_rows: int, readout: LogitReadout | None = None) -> dict:
    """The batched core: one base run of both texts (caching z and patterns), then every head's patched runs.

    Returns raw readout values v (embedding: <e(run), e(clean) - e(corrupt)>; logits: the logit difference):
    `values[kind]` [layers, heads] of the patched runs, `clean`/`corrupt` of the unpatched runs and the sanity
    runs' values; `_normalise` turns them into effects."""
    started = time.perf_counter()
    layout = hooks.head_layout(module)
    device = next(module.parameters()).device
    ids = torch.tensor([clean_ids, corrupt_ids], device=device)
    layer_inputs: dict[int, torch.Tensor] = {}     # l -> the hidden states entering layer l  # [2, pos, d_model]
    returns_tuple = []
    owner = threading.get_ident()   # the demo scores on the same model meanwhile: only this thread's pass counts

    def remember(layer):
        def hook(_module, args, kwargs):
            if threading.get_ident() == owner:
                layer_inputs[layer] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    with hooks.cache_z(module) as z, hooks.cache_pattern(module) as patterns:
        handles = [block.register_forward_pre_hook(remember(l), with_kwargs=True) for l, block in enumerate(layout.layers)]
        handles.append(layout.layers[0].register_forward_hook(
            lambda _m, _a, out: returns_tuple.append(isinstance(out, tuple)) if threading.get_ident() == owner else None))
        try:
            base = _run(module, ids, readout)
        finally:
            for handle in handles:
                handle.remove()
    if readout is None:
        e_clean, e_corrupt = base.double().mean(1)
        direction = e_clean - e_corrupt
        value = lambda hidden: hidden.double().mean(1) @ direction          # noqa: E731
        base_values, distance = value(base), float(torch.linalg.norm(direction))
    else:
        value = lambda out: out                                              # noqa: E731
        base_values, distance = base, float(base[0] - base[1])
    source_t = torch.tensor(source)
    rows = _plan(layout.n_layers, layout.n_heads, kinds)
    rows += [_Row("sanity_own", -1, -1), _Row("sanity_own", -1, -1), _Row("sanity_embeddings", -1, -1)]
    # noising and the first own-run row start from clean; denoising, the second own row and the embedding
    # check start from corrupt
    inputs = [1 if r.kind.endswith("denoising") else 0 for r in rows[:-3]] + [0, 1, 1]
    values = torch.empty(len(rows), dtype=torch.float64)
    # Rows that edit layer l run from layer l on, from the unpatched run's hidden states there: the layers
    # before l would compute exactly those (about half the work saved). The sanity rows run whole, as their
    # own small batch (the own-pattern row edits every layer's pattern).
    by_layer: dict[int, list[int]] = {}
    for index, row in enumerate(rows[:-3]):
        by_layer.setdefault(row.layer, []).append(index)
    chunks = [(layer, indices[start:start + max_rows]) for layer, indices in by_layer.items()
              for start in range(0, len(indices), max_rows)]
    for layer, indices in chunks + [(0, list(range(len(rows) - 3, len(rows))))]:
        chunk, chunk_inputs = [rows[i] for i in indices], [inputs[i] for i in indices]
        z_patches, pattern_patches = _chunk_patches(chunk, chunk_inputs, z, patterns, source_t,
                                                    layout.n_layers, layout.n_heads)
        batch = ids[chunk_inputs]
        if layer == 0:
            # the embedding check: the hidden states entering layer 0 from the clean run, in a corrupt row
            embed_rows = [i for i, r in enumerate(chunk) if r.kind == "sanity_embeddings"]
            start = hooks.replace_layer_input(module, 0, torch.tensor(embed_rows, dtype=torch.long),
                                              layer_inputs[0][0].expand(len(embed_rows), -1, -1))
        else:
            start = hooks.start_at_layer(module, layer, layer_inputs[layer][chunk_inputs], returns_tuple[0])
        with hooks.replace_z(module, z_patches), hooks.replace_pattern(module, pattern_patches), start:
            values[indices] = value(_run(module, batch, readout)).cpu()
    n = layout.n_layers * layout.n_heads
    by_kind = {kind: values[i * n:(i + 1) * n].numpy().reshape(layout.n_layers, layout.n_heads)
               for i, kind in enumerate(kinds)}
    clean_patterns = torch.stack([patterns[l][0] for l in range(layout.n_layers)]).float()   # [L, H, q, k]
    source_pattern = clean_patterns[:, :, source].mean(2)                                   # [L, H, k]
    attention = source_pattern[:, :, target].sum(-1).numpy() if target else None
    return {"values": by_kind, "clean": float(base_values[0]), "corrupt": float(base_values[1]),
            "own_clean": float(values[-3]), "own_corrupt": float(values[-2]), "embedding": float(values[-1]),
            "distance": distance, "attention": attention, "source_pattern": source_pattern.numpy(),
            "seconds": time.perf_counter() - started}


def _normalise(out: dict, scale: float) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Effects in units of `scale` (the clean - corrupt difference of the readout): noising = (v_clean - v) /
    scale, denoising = (v - v_corrupt) / scale; with the pair's own difference as scale, clean = 1, corrupt = 0."""
    effects = {kind: ((v - out["corrupt"]) if kind.endswith("denoising") else (out["clean"] - v)) / scale
               for kind, v in out["values"].items()}
    sanity = {"own_noising_max_abs": abs(out["clean"] - out["own_clean"]) / abs(scale),
              "own_denoising_max_abs": abs(out["own_corrupt"] - out["corrupt"]) / abs(scale),
              "embedding_denoising": 1.0 + (out["embedding"] - out["clean"]) / scale}
    return effects, sanity


def _check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    return kinds


def _loaded(model) -> LoadedModel:
    from probing.models import load_model
    return model if isinstance(model, LoadedModel) else load_model(model)


_LM_CACHE: dict[str, tuple[nn.Module | None, str | None]] = {}


def load_lm_model(loaded: LoadedModel):
    """The checkpoint with its language-modelling head (causal or masked), or (None, reason) when it has none
    trained (a sentence-embedding checkpoint: the head's weights are missing and would be random). The last
    one loaded is kept."""
    if loaded.path in _LM_CACHE:
        return _LM_CACHE[loaded.path]
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    auto = AutoModelForCausalLM if loaded.is_causal else AutoModelForMaskedLM
    if not loaded.is_causal and loaded.tokenizer.mask_token_id is None:
        return None, "the tokenizer has no mask token, so a masked-LM readout is impossible"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        lm, info = auto.from_pretrained(loaded.path, attn_implementation="eager", output_loading_info=True,
                                        trust_remote_code=False)
    except Exception as err:  # an architecture without an LM class, a missing file...
        return None, f"no {auto.__name__[len('AutoModelFor'):]} head could be loaded ({type(err).__name__}: " \
                     f"{str(err).splitlines()[0] if str(err) else ''})"
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys", []))
    if missing:
        result = None, (f"the checkpoint has no trained language-modelling head ({len(missing)} weights missing, "
                        f"e.g. {missing[0]}): a sentence-embedding model cannot score completions")
    else:
        result = lm.eval().to(next(loaded.model.parameters()).device), None
    _LM_CACHE.clear()
    _LM_CACHE[loaded.path] = result
    return result


def _language_model(loaded: LoadedModel) -> nn.Module:
    lm, problem = load_lm_model(loaded)
    if lm is None:
        raise ValueError(f"the logit readout needs a language-modelling head: {problem}")
    return lm


def _span_field(value, name: str, text: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(v, int) for v in value)
            or not 0 <= value[0] < value[1] <= len(text)):
        raise ValueError(f"{name} must be a (start, end) character span inside the clean text, got {value!r}")
    return tuple(value)


def patch_pair(model, clean_text: str, corrupt_text: str, *, source: tuple[int, int] | None = None,
               target: tuple[int, int] | None = None, relation: str | None = None, kinds=KINDS,
               max_rows: int = 512, answers: tuple[str, str] | None = None) -> PairPatch:
    """Every head's patching effects for one clean/corrupt pair (the demo's call). The swapped word is found
    from the tokens: the pieces that differ, which must lie in one word. ValueError when the pair is not a
    minimal pair.

    source, target: (start, end) character spans in the clean text. The source word is where the `row_*`
    patches and the attention are read from (default: the swapped word); with a target, `attention` is the
    clean run's attention from the source word (mean over its pieces) to the target (sum over its pieces).
    answers=None: the embedding readout. answers=(clean answer, corrupt answer): the logit difference between
    their first pieces at the last position (decoders) or at the text's mask token (masked LMs), normalised by
    this pair's clean - corrupt difference."""
    loaded = _loaded(model)
    kinds = _check_kinds(kinds)
    for name, text in (("clean", clean_text), ("corrupt", corrupt_text)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {name} text is empty")
    source, target = _span_field(source, "source", clean_text), _span_field(target, "target", clean_text)
    clean_ids, clean_offsets = _pieces(loaded, clean_text)
    corrupt_ids, _ = _pieces(loaded, corrupt_text)
    if len(clean_ids) != len(corrupt_ids):
        raise ValueError(f"the two texts have different numbers of pieces ({len(clean_ids)} vs {len(corrupt_ids)}); "
                         "patching needs a minimal pair that swaps one word for a word of as many pieces")
    swapped = [i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b]
    if not swapped:
        raise ValueError("the two texts are the same after tokenisation; change one word")
    if _word_of_pieces(loaded, clean_text, swapped) is None:
        raise ValueError("the two texts differ in more than one word; patching needs a minimal pair")
    source_pieces = swapped if source is None else sorted(_span_pieces(clean_offsets, source))
    target_pieces = [] if target is None else sorted(_span_pieces(clean_offsets, target))
    for name, pieces in (("source", source_pieces), ("target", target_pieces)):
        if (source if name == "source" else target) is not None and not pieces:
            raise ValueError(f"the {name} span covers no piece the model reads (past the token limit?)")
    module, readout = loaded.model, None
    if answers is not None:
        if len(answers) != 2 or not all(isinstance(a, str) and a.strip() for a in answers):
            raise ValueError(f"answers must be two non-empty words, got {answers!r}")
        word = (clean_offsets[swapped[0]][0], clean_offsets[swapped[-1]][1])
        pair = Pair(id="pair", relation=relation or "", clean=clean_text, corrupt=corrupt_text,
                    clean_source=word, corrupt_source=word, answers=tuple(answers))
        ok, reason, info = usable(loaded, pair)
        if not ok:
            raise ValueError(reason)
        module = _language_model(loaded)
        readout = LogitReadout(module, info["answer_ids"], info["position"])
    out = _patch_ids(module, clean_ids, corrupt_ids, source_pieces, target_pieces, kinds, max_rows, readout)
    scale = out["clean"] - out["corrupt"]
    if abs(scale) < 1e-9:
        raise ValueError("the two texts give the same readout: there is nothing to patch")
    effects, sanity = _normalise(out, scale)
    tokens = loaded.tokenizer.convert_ids_to_tokens(clean_ids)
    return PairPatch(clean=clean_text, corrupt=corrupt_text, tokens=tokens, source=source_pieces,
                     swapped=swapped, target=target_pieces, effects=effects, sanity=sanity,
                     distance=out["distance"], attention=out["attention"], source_pattern=out["source_pattern"],
                     seconds=out["seconds"], readout="embedding" if readout is None else "logits")


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


def _run_pairs(loaded, pair_set: PairSet, kinds, max_rows, progress, lm=None) -> tuple[list, list, PairSet]:
    """Patch every usable pair (through `lm` with the logit readout when given); unusable ones join the skipped
    list with their reason. Effects are not normalised yet (see `_normalise`)."""
    from tqdm import tqdm
    outs, kept, skipped = [], [], list(pair_set.skipped)
    for pair in tqdm(pair_set.pairs, disable=not progress, unit="pair", leave=False):
        ok, reason, info = usable(loaded, pair, check_answers=lm is not None)
        if not ok:
            skipped.append((pair.id, reason))
            continue
        readout = None if lm is None else LogitReadout(lm, info["answer_ids"], info["position"])
        outs.append(_patch_ids(loaded.model if lm is None else lm, *info["ids"], info["source"], info["target"],
                               kinds, max_rows, readout))
        kept.append(pair)
    return outs, kept, PairSet(kept, skipped)


def _normalise_all(outs: list[dict], per_pair_scale: bool) -> float | None:
    """Adds effects and sanity to every pair's output. The embedding readout divides by each pair's own
    clean - corrupt difference (> 0 for any real swap); the logit readout by the mean difference over pairs,
    because one pair's difference can be near 0 and would blow its effects up (Wang et al. 2022 normalise the
    same way). Returns the common scale, or None."""
    scale = None if per_pair_scale else float(np.mean([o["clean"] - o["corrupt"] for o in outs]))
    if scale is not None and abs(scale) < 1e-12:
        scale = 1e-12 if scale >= 0 else -1e-12      # no behaviour: effects are meaningless, the gate says so
    for o in outs:
        o["effects"], o["sanity"] = _normalise(o, o["clean"] - o["corrupt"] if per_pair_scale else scale)
    return scale


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


def _mention(text: str, span: tuple[int, int]) -> str:
    """The target word with its article when the text has one before it ("the trophy"), for substitution."""
    before = text[:span[0]].rstrip().rsplit(" ", 1)[-1]
    word = text[span[0]:span[1]]
    return f"the {word}" if before.lower() in ("the", "a", "an") else word


def _embeddings(loaded: LoadedModel, texts: list[str], batch: int = 64) -> torch.Tensor:
    """Mean-pooled final hidden states over the non-padding pieces  # [texts, d_model], float64."""
    out = []
    device = next(loaded.model.parameters()).device
    for start in range(0, len(texts), batch):
        encoded = loaded.tokenizer(texts[start:start + batch], padding=True, truncation=True,
                                   max_length=loaded.max_length, return_tensors="pt").to(device)
        with torch.inference_mode():
            hidden = loaded.model(input_ids=encoded["input_ids"],
                                  attention_mask=encoded["attention_mask"]).last_hidden_state.double()
        mask = encoded["attention_mask"].unsqueeze(-1).double()
        out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
    return torch.cat(out)


def substitution_preferences(loaded: LoadedModel, pairs: list[Pair]) -> np.ndarray:
    """Per twin pair, whether the embedding tells the two referents apart the right way round (a substitution
    test after Trinh & Le 2018): each twin with its pronoun replaced by its own referent, and by the other
    twin's. preference = [cos(e(clean), e(clean, own)) - cos(e(clean), e(clean, other))] + the same for the
    corrupt twin; > 0 when both twins sit nearer the reading with their own referent. NaN for pairs whose
    twins share the referent (WinoBias pro/anti) or lack a target."""
    texts, usable_rows = [], []
    for index, pair in enumerate(pairs):
        if pair.clean_target is None or pair.corrupt_target is None:
            continue
        own, other = _mention(pair.clean, pair.clean_target), _mention(pair.corrupt, pair.corrupt_target)
        if own.lower() == other.lower():
            continue
        for text, (start, end) in ((pair.clean, pair.clean_source), (pair.corrupt, pair.corrupt_source)):
            texts += [text, text[:start] + own + text[end:], text[:start] + other + text[end:]]
        usable_rows.append(index)
    preferences = np.full(len(pairs), np.nan)
    if not texts:
        return preferences
    e = torch.nn.functional.normalize(_embeddings(loaded, texts), dim=-1)
    e = e.view(len(usable_rows), 2, 3, -1)                       # [pairs, twin (clean, corrupt), text, d]
    similarity = (e[:, :, :1] * e[:, :, 1:]).sum(-1)              # [pairs, twin, (own, other)]
    clean_pref = similarity[:, 0, 0] - similarity[:, 0, 1]        # the clean twin's referent is "own"
    corrupt_pref = similarity[:, 1, 1] - similarity[:, 1, 0]      # the corrupt twin's referent is "other"
    preferences[usable_rows] = (clean_pref + corrupt_pref).numpy()
    return preferences


def _twin_gate(preferences: np.ndarray, n_boot: int, seed: int, groups) -> dict:
    """Behaviour first, coreference twins with the embedding readout: does the swap move each twin toward its
    own referent (`substitution_preferences`)? A control that can fail: a model blind to the swap scores 0."""
    keep = ~np.isnan(preferences)
    gate = {"measure": "substitution preference: cos(e(twin), e(twin with its own referent for the pronoun)) "
                       "- cos(e(twin), e(twin with the other referent)), summed over the two twins, mean over "
                       "pairs", "n_pairs": int(keep.sum())}
    if not keep.any():
        gate.update(clean_minus_corrupt=float("nan"), ci=[float("nan"), float("nan")], passed=False,
                    note="no pair's twins have different referents (e.g. WinoBias pro/anti keep the referent): "
                         "there is no coreference behaviour to localise, and no head is named")
        return gate
    values = preferences[keep]
    low, high = stats.bootstrap_ci(values[:, None], n_boot, seed=seed,
                                   groups=None if groups is None else [g for g, k in zip(groups, keep) if k])
    passed = bool(low[0] > 0)
    gate.update(clean_minus_corrupt=float(values.mean()), ci=[float(low[0]), float(high[0])], passed=passed,
                note="passes when the CI is above 0: the embedding moves toward the right referent"
                     + ("" if passed else "; it does not, so no head is named"))
    return gate


READOUTS = ("auto", "embedding", "logits")


def _has_completions(examples) -> bool:
    return any(e.relation == "negation" and {"context_neg", "target_aff", "target_neg"} <= set(e.meta or {})
               for e in examples)


def _has_masked_twins(examples) -> bool:
    return any(e.relation == "coreference" and "twin" in (e.meta or {}) for e in examples)


def _choose_pairs(loaded, examples, readout: str) -> tuple[PairSet, nn.Module | None, str]:
    """(pairs, the LM for a logit readout or None, the readout's description). `auto` takes the logit readout
    when the model has a trained language-modelling head and the rows allow one: NEG-136-style answers
    (decoders and masked LMs), or coreference twins (masked LMs: the pronoun masked, Kocijan-style)."""
    completions = _has_completions(examples)
    twins = not completions and not loaded.is_causal and _has_masked_twins(examples)
    lm, problem = (None, "the rows carry no answers (NEG-136-style context_neg, target_aff, target_neg) and no "
                         "coreference twins for a masked LM (a decoder cannot read a swap that follows the pronoun)")
    if readout in ("auto", "logits") and (completions or twins):
        lm, problem = load_lm_model(loaded)
    if readout == "logits" and lm is None:
        raise ValueError(f"the logit readout is impossible here: {problem}; use readout='embedding'")
    if lm is not None and twins:
        return (masked_twin_pairs(examples, loaded), lm,
                "logit difference clean answer - corrupt answer (first pieces) at the masked pronoun")
    if lm is not None:
        where = "the last position" if loaded.is_causal else "the mask after the context"
        return (completion_pairs(examples, loaded, masked=not loaded.is_causal), lm,
                f"logit difference target_neg - target_aff (first pieces) at {where}")
    pair_set = collect_pairs(examples)
    if not pair_set.pairs and completions:
        pair_set = completion_pairs(examples, loaded, masked=False)
    return pair_set, None, "embedding: mean-pooled final hidden states projected on clean - corrupt"


def _logit_gate(differences: np.ndarray, n_boot: int, seed: int, groups, relation: str) -> dict:
    """Behaviour first, LM readout: does the swap move the logit difference toward the clean answer?"""
    low, high = stats.bootstrap_ci(differences[:, None], n_boot, seed=seed, groups=groups)
    passed = bool(low[0] > 0)
    measure = ("logit difference (target_neg - target_aff), clean (negated) minus corrupt (adverb)"
               if relation == "negation" else
               "logit difference (clean answer - corrupt answer) at the masked pronoun, clean twin minus corrupt twin")
    return {"measure": measure + ", mean over pairs", "clean_minus_corrupt": float(differences.mean()),
            "ci": [float(low[0]), float(high[0])], "passed": passed,
            "note": "passes when the CI is above 0" + ("" if passed else
                    ": it is not, so there is no behaviour to localise and no head is named")}


def patch_heads(model, examples, *, kinds=KINDS, readout: str = "auto", attention_scores=None,
                controls: bool = True, n_boot: int = 1000, n_perm: int = 10000, alpha: float = 0.05, seed: int = 0,
                max_pairs: int | None = None, max_rows: int = 512, progress: bool = False) -> PatchingResult:
    """Noising and denoising effects of every head (and of its pattern, and of its source rows) on the minimal
    pairs in `examples`, with CIs, maxT p_fwer, the behavioural gate, control pairs (negation: adverb <->
    adverb) and the attention-vs-effect rank correlation.

    readout: "embedding" (mean-pooled final hidden states), "logits" (the LM's logit difference between the
    two answers of NEG-136-style rows: meta context_neg, target_aff, target_neg) or "auto" (logits when the
    rows have answers and the model a trained LM head). Control pairs run with the embedding readout only.
    attention_scores: optional per-head scores to correlate with (a heads table with layer, head and one score
    column named in `attention_scores.attrs["score"]`, or a [layers, heads] array); without it, the clean
    run's attention from the source word to the target word is used."""
    started = time.perf_counter()
    loaded = _loaded(model)
    kinds = _check_kinds(kinds)
    _check_options(n_boot, n_perm, alpha, max_pairs)
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    hooks.head_layout(loaded)   # fail early on an unsupported architecture
    pair_set, lm, readout_text = _choose_pairs(loaded, examples, readout)
    if max_pairs is not None:
        pair_set = PairSet(pair_set.pairs[:max_pairs], pair_set.skipped)
    if not pair_set.pairs:
        raise ValueError("no clean/corrupt pairs in these examples: patching needs rows paired by meta.pair "
                         "(negation: role negated + control), meta.twin with meta.twin_role, or NEG-136-style "
                         f"rows; skipped: {_coarse_counts(pair_set.skipped)}")
    relation = pair_set.pairs[0].relation
    outs, kept, pair_set = _run_pairs(loaded, pair_set, kinds, max_rows, progress, lm)
    if not outs:
        raise ValueError(f"none of the {len(pair_set.skipped)} pairs is usable: "
                         f"{pair_set.skipped_counts()}")
    scale = _normalise_all(outs, per_pair_scale=lm is None)
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
    if controls and relation == "negation" and lm is None:
        control_set = control_pairs(kept, loaded)
        control_outs, control_kept, control_set = _run_pairs(loaded, control_set, kinds[:2] if len(kinds) >= 2
                                                             else kinds, max_rows, False)
        _normalise_all(control_outs, per_pair_scale=True)
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
    if lm is not None:
        gate = _logit_gate(np.array([o["clean"] - o["corrupt"] for o in outs]), n_boot, seed, groups, relation)
    elif control_distances is not None:
        gate = _gate(distances_g, control_g, n_boot, seed, [groups[i] for i in range(len(kept))
                                                             if not np.isnan(control_distances[i])])
    elif relation == "coreference":
        gate = _twin_gate(substitution_preferences(loaded, kept), n_boot, seed, groups)
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
    if scale is not None and abs(scale) <= 1e-12:
        sanity["note"] = "the mean clean - corrupt difference is 0: effects are not meaningful"
    if lm is None:
        sanity["passed"] = bool(sanity["own_activations_max_abs"] <= SANITY_TOLERANCE
                                and sanity["embedding_denoising_max_error"] <= SANITY_TOLERANCE)
    else:
        # float32 logits of a large vocabulary differ by ~1e-5 between batch sizes (other GEMM kernels): the
        # check is on the raw logit difference, in logits
        sanity["max_abs_error_logits"] = float(max(max(abs(o["clean"] - o["own_clean"]), abs(o["own_corrupt"] - o["corrupt"]),
                                                       abs(o["embedding"] - o["clean"])) for o in outs))
        sanity["tolerance_logits"] = LOGIT_SANITY_TOLERANCE
        sanity["passed"] = bool(sanity["max_abs_error_logits"] <= LOGIT_SANITY_TOLERANCE)
    if not sanity["passed"]:
        raise RuntimeError(f"patching sanity checks failed: {sanity}; the hooks do not patch what they should")
    notes = [f"readout: {readout_text}; "
             + ("each pair's effects divided by its own clean - corrupt difference (clean = 1, corrupt = 0)"
                if scale is None else f"effects divided by the mean clean - corrupt difference over pairs "
                f"({scale:.4g}), so clean = 1 and corrupt = 0 on average"),
             f"named heads: p_fwer < {alpha} (maxT over all heads, one-sided effect > 0)"
             + (" and, for negation, effect > control-pair effect at p_fwer < alpha" if control else "")
             + "; none are named when the behavioural gate fails"]
    if lm is not None and controls and relation == "negation":
        notes.append("no adverb <-> adverb control pairs with the logit readout: the answers' contrast is the "
                     "control (an adverb swap does not change which answer is true)")
    return PatchingResult(model=loaded.name, relation=relation, readout=readout_text, n_layers=n_layers,
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
