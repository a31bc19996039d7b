"""Head ablation, the experiment only: knock a given set of heads out and compare what the model loses with
layer-matched random sets of heads.

Inputs are arguments: the examples to evaluate on and the head sets to knock out (`HeadSet`: a name, the
relation whose measures it is tested on, its heads). Choosing the heads (from a heads table scored on data
other than the evaluation data) is the command's job (`analysis ablate`). Knocking out uses
`probing.hooks.ablate_heads`: zero ablation sets a head's `z` to 0; mean ablation to its mean over the
evaluated texts.

What is measured, per example (so every CI is a bootstrap over examples or pairs):
- negation: cosine distance between the sentence embeddings of a negated sentence and its control (paired rows
  `meta.pair`, role negated/control: an adverb where "not" stood; NEG-136 rows: context_neg vs context_aff).
  Embedding = mean of the last hidden states over real tokens, L2-normalised (sentence-transformers' pooling;
  a causal model's BOS is left out: it sees only itself);
- coreference: cos(pronoun, antecedent) - cos(pronoun, distractor) on last hidden states (mean over each
  word's pieces), on examples with exactly two candidates, and whether the antecedent is the closer one;
- NEG-136 language-model test (Ettinger 2020), for checkpoints with a trained LM head only.

"Damage" is the change a loss of the relation would cause, signed so that larger is worse. Each head set with
`random=True` is compared with `draws` random sets that knock out as many heads in each layer as it does
(layer-matched: early and late layers differ in how much any head matters), drawn uniformly within each layer,
seeded; p_vs_random = (1 + #draws with damage >= the set's damage) / (1 + #draws).
"""
from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from probing.defaults import ABLATION_MODE, BATCH_TOKENS, N_BOOT, N_DRAWS, SEED
from probing import stats
from probing.hooks import MODES, ablate_heads, check_heads, head_layout
from probing.models import LoadedModel, as_loaded, load_lm_model
from probing.sites import Z, Site, intervene
from probing.runner import Encoded, encode, length_batches, pad_ids


def head_output_means(loaded: LoadedModel, texts: list[str], batch_tokens: int = BATCH_TOKENS) -> torch.Tensor:
    """Each head's mean output (the input of the output projection) over every real token of `texts`:
    a (layers, heads, head_dim) tensor for mean ablation."""
    layout = head_layout(loaded)
    encoded = encode(loaded, texts)
    sums = torch.zeros(layout.n_layers, layout.n_heads * layout.head_dim, dtype=torch.float64)
    state = {"mask": None, "tokens": 0}

    def accumulate(layer):
        def read(z):                                    # [batch, pos, head, d_head]
            flat = z.reshape(*z.shape[:2], -1)          # [batch, pos, head*d_head], the projection's input
            mask = state["mask"].to(flat.device, flat.dtype)[..., None]
            sums[layer] += (flat * mask).sum((0, 1)).double().cpu()
        return read

    with intervene(loaded, {Site(Z, layer): accumulate(layer) for layer in range(layout.n_layers)}):
        for ids, mask, _rows in _batches(loaded, encoded, batch_tokens):
            state["mask"] = mask
            state["tokens"] += int(mask.sum())
            _forward_hidden(loaded.model, ids, mask)
    means = (sums / max(state["tokens"], 1)).float()
    return means.reshape(layout.n_layers, layout.n_heads, layout.head_dim)


# ---- Forward passes ------------------------------------------------------------------------------------

def _batches(loaded: LoadedModel, encoded: list[Encoded], batch_tokens: int = BATCH_TOKENS, max_batch: int = 64):
    """(input_ids, attention_mask, row indices) for length-sorted, right-padded batches."""
    for rows in length_batches([len(e.input_ids) for e in encoded], batch_tokens, max_batch):
        ids, mask = pad_ids([encoded[r].input_ids for r in rows], loaded.tokenizer.pad_token_id)
        yield ids, mask, rows


def _forward_hidden(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states (B, T, D) as float32 on the CPU, under inference_mode."""
    device = next(module.parameters()).device
    with torch.inference_mode():
        out = module(input_ids=ids.to(device), attention_mask=mask.to(device))
    return out.last_hidden_state.float().cpu()


def final_hidden_states(loaded: LoadedModel, encoded: list[Encoded], batch_tokens: int = BATCH_TOKENS) -> list[torch.Tensor]:
    """Each text's last hidden states over its real pieces, a (pieces, hidden) tensor per text."""
    states: list[torch.Tensor | None] = [None] * len(encoded)
    for ids, mask, rows in _batches(loaded, encoded, batch_tokens):
        hidden = _forward_hidden(loaded.model, ids, mask)
        for row, index in enumerate(rows):
            states[index] = hidden[row, :len(encoded[index].input_ids)]
    return states


def sentence_embeddings(states: list[torch.Tensor | None], skip_first: bool = False) -> torch.Tensor:
    """Mean over pieces (without the first when skip_first, e.g. a causal model's BOS), then L2 normalised;
    a text that was not run (None) gets a row of NaN."""
    width = next(s.shape[-1] for s in states if s is not None)
    pooled = torch.stack([torch.full((width,), float("nan")) if s is None else
                          (s[1:] if skip_first and len(s) > 1 else s).mean(0) for s in states])
    return torch.nn.functional.normalize(pooled, dim=-1)


def pair_cosine_distances(embeddings: torch.Tensor, pairs: list[tuple[int, int]]) -> np.ndarray:
    """1 - cos(a, b) per (a, b) pair of row indices into L2-normalised embeddings."""
    if not pairs:
        return np.zeros(0)
    first, second = map(list, zip(*pairs))
    return (1.0 - (embeddings[first] * embeddings[second]).sum(-1)).numpy().astype(np.float64)


# ---- The examples one run measures ---------------------------------------------------------------------

@dataclass(frozen=True)
class CorefItem:
    """A pronoun with exactly two candidate antecedents, as piece indices into text `text_index`."""
    id: str
    text_index: int
    pronoun: tuple[int, ...]
    antecedent: tuple[int, ...]
    distractor: tuple[int, ...]


@dataclass(frozen=True)
class NegItem:
    """One NEG-136 item: a true and a false completion for an affirmative and a negated context."""
    id: str
    context_aff: str
    context_neg: str
    target_aff: str     # true after context_aff, false after context_neg
    target_neg: str     # false after context_aff, true after context_neg


@dataclass
class Workload:
    """Every text one condition runs, tokenised once, with the items that read the outputs."""
    texts: list[str]
    encoded: list[Encoded]
    negation_pairs: list[tuple[int, int]]     # (negated text, affirmative text) indices
    coref_items: list[CorefItem]
    lm_items: list[NegItem]
    skipped: dict[str, str] = field(default_factory=dict)   # what was left out, and why


def negation_text_pairs(examples) -> list[tuple[str, str]]:
    """(negated sentence, its control) for rows paired by meta.pair with roles negated/control, and
    (context_neg, context_aff) for NEG-136 rows."""
    negated, controls, pairs = {}, {}, []
    for e in examples:
        meta = e.meta or {}
        if e.relation != "negation":
            continue
        if {"context_neg", "context_aff"} <= set(meta):
            pairs.append((meta["context_neg"], meta["context_aff"]))
        elif "pair" in meta and e.role in ("negated", "control"):
            (negated if e.role == "negated" else controls)[meta["pair"]] = e.text
    return pairs + [(text, controls[key]) for key, text in negated.items() if key in controls]


def neg136_items(examples) -> list[NegItem]:
    """NEG-136 items from rows whose meta has context_aff, context_neg, target_aff and target_neg."""
    keys = {"context_aff", "context_neg", "target_aff", "target_neg"}
    return [NegItem(id=str(e.meta.get("pair", e.id)), **{k: e.meta[k] for k in sorted(keys)})
            for e in examples if e.relation == "negation" and keys <= set(e.meta or {})]


def build_workload(loaded: LoadedModel, examples) -> Workload:
    """Tokenise the negation pairs, the NEG-136 items and the two-candidate coreference examples."""
    from probing.alignment import AlignmentError, make_layout
    index: dict[str, int] = {}
    add = lambda text: index.setdefault(text, len(index))  # noqa: E731
    negation_pairs = [(add(neg), add(aff)) for neg, aff in negation_text_pairs(examples)]
    coref_examples = [e for e in examples if e.relation == "coreference"]
    two = [e for e in coref_examples if e.candidate_spans and len(e.candidate_spans) == 2]
    skipped = {}
    if len(two) < len(coref_examples):
        skipped["coref_candidates"] = f"{len(coref_examples) - len(two)} coreference examples without exactly two candidates"
    for example in two:
        add(example.text)
    texts = list(index)
    encoded = encode(loaded, texts)
    coref_items, not_aligned = [], []
    for example in two:
        enc = encoded[index[example.text]]
        try:
            layout = make_layout(example.text, example.source_span, example.target_span, example.candidate_spans,
                                 enc.offsets, enc.word_ids, mention="span")     # whole mentions, as before
        except AlignmentError as err:
            not_aligned.append(f"{example.id}: {err}")
            continue
        coref_items.append(CorefItem(id=example.id, text_index=index[example.text],
                                     pronoun=tuple(layout.source.tolist()),
                                     antecedent=tuple(layout.units[layout.target].tolist()),
                                     distractor=tuple(layout.units[1 - layout.target].tolist())))
    if not_aligned:
        skipped["coref_alignment"] = f"{len(not_aligned)} coreference examples not aligned: {not_aligned[:3]}"
    return Workload(texts=texts, encoded=encoded, negation_pairs=negation_pairs, coref_items=coref_items,
                    lm_items=neg136_items(examples), skipped=skipped)


def coref_margins(states: list[torch.Tensor], items: list[CorefItem]) -> np.ndarray:
    """cos(pronoun, antecedent) - cos(pronoun, distractor) per item, each word the mean of its pieces' states."""
    cos = torch.nn.functional.cosine_similarity
    margins = []
    for item in items:
        state = states[item.text_index]
        pronoun, antecedent, distractor = (state[list(pieces)].mean(0) for pieces in
                                           (item.pronoun, item.antecedent, item.distractor))
        margins.append(float(cos(pronoun, antecedent, dim=0) - cos(pronoun, distractor, dim=0)))
    return np.array(margins, dtype=np.float64)


# ---- The NEG-136 language-model test -------------------------------------------------------------------

def _target_pieces(offsets, start: int, end: int) -> list[int]:
    """Pieces overlapping the character span [start, end); ValueError if one also covers text before it."""
    pieces = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and start < e]
    if not pieces or any(offsets[i][0] < start - 1 for i in pieces):
        raise ValueError("the completion does not start its own piece")
    return pieces


def completion_logprobs(lm: nn.Module, loaded: LoadedModel, pairs: list[tuple[str, str]],
                        batch_size: int = 16) -> np.ndarray:
    """log P(completion | context) summed over the completion's pieces, per (context, completion) pair.

    Causal: the text is "context completion" and piece p is scored from position p-1. Masked: the text is
    "context completion." with the completion's pieces masked, each scored at its own position."""
    tokenizer, causal = loaded.tokenizer, loaded.is_causal
    texts = [f"{c} {t}" if causal else f"{c} {t}." for c, t in pairs]
    batch = tokenizer(texts, return_offsets_mapping=True, truncation=True, max_length=loaded.max_length)
    pieces = [_target_pieces(batch["offset_mapping"][i], len(c) + 1, len(c) + 1 + len(t))
              for i, (c, t) in enumerate(pairs)]
    keeps_logits = "logits_to_keep" in inspect.signature(lm.forward).parameters
    device = next(lm.parameters()).device
    scores = np.zeros(len(pairs))
    for rows in length_batches([len(ids) for ids in batch["input_ids"]], 10 ** 9, batch_size):
        ids, mask = pad_ids([batch["input_ids"][r] for r in rows], tokenizer.pad_token_id)
        targets = ids.clone()
        read_at = [[p - 1 for p in pieces[r]] if causal else pieces[r] for r in rows]
        if not causal:
            for row, r in enumerate(rows):
                ids[row, pieces[r]] = tokenizer.mask_token_id
        kwargs = {}
        positions = sorted({p for ps in read_at for p in ps})
        if causal and keeps_logits:
            kwargs["logits_to_keep"] = torch.tensor(positions, device=device)
        with torch.inference_mode():
            logits = lm(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits.float().cpu()
        column = {p: i for i, p in enumerate(positions)} if "logits_to_keep" in kwargs else None
        logprobs = torch.log_softmax(logits, -1)
        for row, r in enumerate(rows):
            total = 0.0
            for read, piece in zip(read_at[row], pieces[r]):
                total += float(logprobs[row, column[read] if column else read, targets[row, piece]])
            scores[r] = total
    return scores


def lm_negation_scores(lm: nn.Module, loaded: LoadedModel, items: list[NegItem]) -> dict[str, np.ndarray]:
    """Per item: affirmative_correct (target_aff beats target_neg after context_aff), negated_correct (target_neg
    beats target_aff after context_neg), and negation_shift: how far "not" moves the log-odds of target_neg
    over target_aff, [lp(neg|neg ctx) - lp(aff|neg ctx)] - [lp(neg|aff ctx) - lp(aff|aff ctx)]."""
    pairs = [(ctx, t) for i in items for ctx in (i.context_aff, i.context_neg) for t in (i.target_aff, i.target_neg)]
    lp = completion_logprobs(lm, loaded, pairs).reshape(len(items), 2, 2)   # item, context (aff, neg), target
    margin_aff = lp[:, 0, 0] - lp[:, 0, 1]           # true minus false after the affirmative context
    margin_neg = lp[:, 1, 1] - lp[:, 1, 0]           # true minus false after the negated context
    return {"lm_affirmative_correct": (margin_aff > 0).astype(np.float64),
            "lm_negated_correct": (margin_neg > 0).astype(np.float64),
            "lm_negation_shift": (lp[:, 1, 1] - lp[:, 1, 0]) - (lp[:, 0, 1] - lp[:, 0, 0])}


# ---- Measures -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measure:
    """One number per example; damage = damage_sign * (ablated - unablated)."""
    name: str
    relation: str       # the head sets it tests
    title: str
    damage_sign: int


MEASURES = {m.name: m for m in (
    Measure("negation_distance", "negation", "negation: embedding distance, negated vs control", -1),
    Measure("coref_margin", "coreference", "coreference: cos(pronoun, antecedent) - cos(pronoun, distractor)", -1),
    Measure("coref_antecedent_closer", "coreference", "coreference: share where the antecedent is closer", -1),
    Measure("lm_negation_shift", "negation", "NEG-136 LM: log-odds shift toward target_neg caused by 'not'", -1),
    Measure("lm_negated_correct", "negation", "NEG-136 LM: true completion wins, negated", -1),
)}


def evaluate(loaded: LoadedModel, workload: Workload, heads, relation: str, mode: str = ABLATION_MODE, means=None,
             lm: nn.Module | None = None) -> dict[str, np.ndarray]:
    """The relation's measures, per example, with `heads` knocked out (in the base model and in the LM)."""
    values = {}
    texts_needed = workload.negation_pairs if relation == "negation" else workload.coref_items
    if texts_needed:
        # only the texts this relation reads: a random draw per set makes this the hot loop
        needed = sorted({i for pair in workload.negation_pairs for i in pair} if relation == "negation"
                        else {item.text_index for item in workload.coref_items})
        with ablate_heads(loaded, heads, mode, means):
            computed = final_hidden_states(loaded, [workload.encoded[i] for i in needed])
        states = [None] * len(workload.encoded)
        for i, state in zip(needed, computed):
            states[i] = state
        if relation == "negation":
            embeddings = sentence_embeddings(states, skip_first=loaded.is_causal)
            values["negation_distance"] = pair_cosine_distances(embeddings, workload.negation_pairs)
        else:
            margins = coref_margins(states, workload.coref_items)
            values["coref_margin"] = margins
            values["coref_antecedent_closer"] = (margins > 0).astype(np.float64)
    if relation == "negation" and lm is not None and workload.lm_items:
        with ablate_heads(lm, heads, mode, means):
            scores = lm_negation_scores(lm, loaded, workload.lm_items)
        values["lm_negation_shift"] = scores["lm_negation_shift"]
        values["lm_negated_correct"] = scores["lm_negated_correct"]
    return values


# ---- Statistics ----------------------------------------------------------------------------------------

def empirical_p_value(targeted_damage: float, random_damages) -> float:
    """(1 + #random draws with damage >= the targeted damage) / (1 + #draws): small when the targeted heads
    do more damage than almost every random set; never 0, at least 1 / (1 + #draws)."""
    random_damages = np.asarray(random_damages, dtype=np.float64)
    if random_damages.ndim != 1 or len(random_damages) == 0:
        raise ValueError("empirical_p_value needs a non-empty 1-D sequence of random-draw damages")
    return float((1 + np.sum(random_damages >= targeted_damage)) / (1 + len(random_damages)))


def mean_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(mean, CI low, CI high): percentile bootstrap over examples."""
    low, high = stats.bootstrap_ci(np.asarray(values, dtype=np.float64)[:, None], n_boot, seed=seed)
    return float(np.mean(values)), float(low[0]), float(high[0])


def layer_matched_sets(heads, n_heads: int, draws: int, seed: int) -> list[tuple[tuple[int, int], ...]]:
    """`draws` random head sets with as many heads in each layer as `heads`, uniform within each layer (the
    given heads may be drawn too), seeded."""
    per_layer: dict[int, int] = {}
    for layer, _head in heads:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(draws):
        chosen = [(layer, int(h)) for layer, count in sorted(per_layer.items())
                  for h in np.sort(rng.choice(n_heads, size=count, replace=False))]
        sets.append(tuple(chosen))
    return sets


@dataclass(frozen=True)
class HeadSet:
    """Heads to knock out, tested on `relation`'s measures; `random`: compare with layer-matched random sets."""
    name: str
    relation: str
    heads: tuple[tuple[int, int], ...]
    random: bool = True
    chosen_by: str = ""


@dataclass
class AblationResult:
    """`table`: one row per (head set, measure): baseline, effect with CI, damage, the layer-matched random
    draws' mean and 95% range, and p_vs_random. `random_effects`: one row per (head set, draw, measure)."""
    model: str
    mode: str
    seed: int
    draws: int
    head_sets: list[HeadSet]
    table: pd.DataFrame
    random_effects: pd.DataFrame
    counts: dict[str, int]
    skipped: dict[str, str]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[str, str]:
        return {f"{r.head_set}:{r.measure}": r.verdict for r in self.table.itertuples()}

    def top(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The k (head set, measure) rows with the largest `by` (default: damage, the loss the ablation
        caused, signed so that larger is worse): the set, its measure, the effect with its CI, the damage and
        the p-value against layer-matched random sets."""
        by = by or "damage"
        numeric = [c for c in self.table if pd.api.types.is_numeric_dtype(self.table[c])]
        if by not in numeric:
            raise ValueError(f"by must be one of {numeric}, got {by!r}")
        columns = ["head_set", "measure", "effect", "effect_ci_low", "effect_ci_high", "damage", "p_vs_random"]
        columns += [] if by in columns else [by]
        return self.table.sort_values(by, ascending=False)[columns].head(k).reset_index(drop=True)

    def to_dict(self) -> dict:
        return stats.strict_json({
            "model": self.model, "mode": self.mode, "seed": self.seed, "draws": self.draws,
            "head_sets": [{"name": s.name, "relation": s.relation, "heads": [list(h) for h in s.heads],
                           "random": s.random, "chosen_by": s.chosen_by} for s in self.head_sets],
            "results": self.table.to_dict(orient="records"), "counts": self.counts, "skipped": self.skipped,
            "seconds": self.seconds, "notes": self.notes})


def _fmt(x: float) -> str:
    return f"{x:+.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:+.2e}"


def verdict(row: dict) -> str:
    """One (head set, measure) row in words: did it hurt, and did it beat layer-matched random heads?"""
    low, high = row["effect_ci_low"], row["effect_ci_high"]
    damage_low, damage_high = sorted(row["damage_sign"] * x for x in (low, high))
    text = f"changed it by {_fmt(row['effect'])} (95% CI {_fmt(low)} to {_fmt(high)}): "
    text += ("a reliable loss. " if damage_low > 0 else "it moved the OPPOSITE way. " if damage_high < 0
             else "no reliable change (the CI includes 0). ")
    if not np.isnan(row.get("p_vs_random", np.nan)):
        beats = row["p_vs_random"] < 0.05 and row["damage"] > 0
        text += (f"It {'beats' if beats else 'does NOT beat'} layer-matched random heads: "
                 f"{row['n_random_at_least_as_damaging']} of {row['n_random']} random sets did at least as much "
                 f"damage (empirical p = {row['p_vs_random']:.3f}).")
    return text.strip()


def _check(loaded, head_sets, draws, mode, n_boot) -> list[HeadSet]:
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 0:
        raise ValueError(f"draws must be a non-negative integer, got {draws!r}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not head_sets:
        raise ValueError("no head sets to ablate: pass head_sets=[HeadSet(name, relation, heads), ...]")
    checked = []
    for s in head_sets:
        if s.relation not in ("negation", "coreference"):
            raise ValueError(f"head set {s.name!r}: relation must be negation or coreference, got {s.relation!r}")
        if not s.heads:
            raise ValueError(f"head set {s.name!r} is empty")
        heads = tuple(check_heads(s.heads, loaded.n_layers, loaded.n_heads))
        checked.append(HeadSet(s.name, s.relation, heads, s.random, s.chosen_by))
    return checked


def ablate(model, examples, *, head_sets, draws: int = N_DRAWS, mode: str = ABLATION_MODE, seed: int = SEED,
           n_boot: int = N_BOOT, lm_test: bool = True, progress: bool = False) -> AblationResult:
    """Knock out each head set and `draws` layer-matched random sets; measure the relation's effects on
    `examples` (negation pairs, NEG-136 rows, two-candidate coreference examples)."""
    from tqdm import tqdm
    started = time.perf_counter()
    loaded = as_loaded(model)
    head_layout(loaded)  # fail early on an unsupported architecture
    head_sets = _check(loaded, list(head_sets), draws, mode, n_boot)
    workload = build_workload(loaded, examples)
    skipped = dict(workload.skipped)
    lm = None
    if lm_test and workload.lm_items:
        lm, reason = load_lm_model(loaded)
        if lm is None:
            skipped["lm"] = f"NEG-136 language-model test skipped: {reason}"
    means = head_output_means(loaded, workload.texts) if mode == "mean" else None
    relations = sorted({s.relation for s in head_sets})
    baseline = {r: evaluate(loaded, workload, (), r, mode, means, lm) for r in relations}
    for relation in relations:
        if not baseline[relation]:
            raise ValueError(f"the examples hold nothing to measure {relation} on (negation: paired rows or NEG-136 "
                             "rows; coreference: examples with exactly two candidates)")
    rows, random_rows = [], []
    jobs = [(s, None, s.heads) for s in head_sets]
    jobs += [(s, i, heads) for s in head_sets if s.random
             for i, heads in enumerate(layer_matched_sets(s.heads, loaded.n_heads, draws, seed))]
    values = {}
    for s, draw, heads in tqdm(jobs, disable=not progress, file=sys.stderr, unit="set", leave=False):
        values[(s.name, draw)] = evaluate(loaded, workload, heads, s.relation, mode, means, lm)
    for s in head_sets:
        base = baseline[s.relation]
        for name, measure in MEASURES.items():
            if name not in base:
                continue
            effect, low, high = mean_ci(values[(s.name, None)][name] - base[name], n_boot, seed)
            row = {"head_set": s.name, "relation": s.relation, "heads": " ".join(f"{l}-{h}" for l, h in s.heads),
                   "measure": name, "title": measure.title, "n": len(base[name]),
                   "baseline": float(np.mean(base[name])), "effect": effect, "effect_ci_low": low,
                   "effect_ci_high": high, "damage_sign": measure.damage_sign, "damage": measure.damage_sign * effect}
            if s.random and draws:
                effects = np.array([np.mean(values[(s.name, i)][name] - base[name]) for i in range(draws)])
                damages = measure.damage_sign * effects
                random_rows += [{"head_set": s.name, "draw": i, "measure": name, "effect": float(e),
                                 "heads": " ".join(f"{l}-{h}" for l, h in heads)}
                                for i, (e, heads) in enumerate(zip(effects, layer_matched_sets(
                                    s.heads, loaded.n_heads, draws, seed)))]
                row.update(n_random=draws, random_effect_mean=float(effects.mean()),
                           random_effect_p2_5=float(np.percentile(effects, 2.5)),
                           random_effect_p97_5=float(np.percentile(effects, 97.5)),
                           n_random_at_least_as_damaging=int(np.sum(damages >= row["damage"])),
                           p_vs_random=empirical_p_value(row["damage"], damages))
            else:
                row.update(n_random=0, random_effect_mean=np.nan, random_effect_p2_5=np.nan,
                           random_effect_p97_5=np.nan, n_random_at_least_as_damaging=-1, p_vs_random=np.nan)
            row["verdict"] = verdict(row)
            rows.append(row)
    counts = {"texts": len(workload.texts), "negation_pairs": len(workload.negation_pairs),
              "coref_items": len(workload.coref_items), "neg136_items": len(workload.lm_items) if lm else 0,
              "ablated_sets": len(jobs)}
    return AblationResult(model=loaded.name, mode=mode, seed=seed, draws=draws, head_sets=head_sets,
                          table=pd.DataFrame(rows), random_effects=pd.DataFrame(random_rows), counts=counts,
                          skipped=skipped, seconds=round(time.perf_counter() - started, 1),
                          notes=_notes(loaded, mode, draws))


def _notes(loaded: LoadedModel, mode: str, draws: int) -> list[str]:
    notes = [
        ("zero ablation: each knocked-out head's z (its slice of the attention output projection's input) is set "
         "to 0" if mode == "zero" else
         "mean ablation: each knocked-out head's z is set to its mean over every real token of the evaluated texts"),
        f"random sets: {draws} per head set, layer-matched (as many heads in each layer as the set), uniform "
        "within each layer, seeded",
        "damage = the change a loss of the relation would cause (smaller distance / margin / accuracy); "
        f"p_vs_random = (1 + #random sets with damage >= the set's) / (1 + #draws), at least {1 / (1 + max(draws, 1)):.3f}",
    ]
    if loaded.is_causal:
        notes.append("sentence embeddings are mean-pooled last hidden states without the first token; this is "
                     "not how a causal model was trained to embed sentences")
    return notes
