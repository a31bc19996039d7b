"""Head ablation: knock attention heads out with forward hooks and measure what the model loses.

How a head is knocked out. Every supported architecture concatenates its heads' outputs (head h at columns
[h*head_dim, (h+1)*head_dim)) and feeds them to one output projection: BERT/MiniLM
`attention.output.dense`, MPNet `attention.attn.o`, Gemma 3 `self_attn.o_proj`, GPT-2 `attn.c_proj`. That
projection is found by shape and data flow, not by name (see `head_layout`), and a forward pre-hook rewrites
the ablated heads' slices of its input:
- zero ablation (the default): the head's slice is set to 0, as if the head wrote nothing;
- mean ablation: the slice is set to its mean over every real token of a reference set of texts
  (`head_output_means`; `run_ablation` uses all the texts it analyses).
Transformers v5 has no `head_mask`, hence the hooks. `ablate_heads` always removes them, even on errors.

What is measured (`run_ablation`), per example, so that every CI is a bootstrap over examples or pairs:
- negation, sentence embeddings: cosine distance between the embeddings of a negated sentence and its
  affirmative twin (built-in pairs: the control puts an adverb where "not" stood; NEG-136: context_neg vs
  context_aff). Embedding = mean of the last hidden states over real tokens, then L2 normalisation, as
  sentence-transformers does for all-MiniLM-L6-v2 (a causal model's BOS is left out: it sees only itself,
  so its state is the same for every sentence);
- coreference: cos(pronoun, antecedent) - cos(pronoun, distractor) on last hidden states (mean over each
  word's pieces), on built-in examples with two candidates; and whether the antecedent is the closer one;
- NEG-136 language-model test (Ettinger 2020), for checkpoints with a trained LM head only: does the true
  completion beat the false one after the affirmative and after the negated context.

Conditions: no ablation; the top-k heads by the relation's main score (selectivity for negation, accuracy
for coreference); the top-k heads by raw mean attention; `draws` sets of k heads drawn at random (seeded,
uniformly from all heads, the targeted ones included). "Damage" is the change a loss of the relation would
cause, signed so that larger is worse (a smaller negated/affirmative distance, a smaller coreference
margin); the targeted set is compared with the random sets by `empirical_p_value`.
"""
from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from probing import stats
from probing.hooks import (HeadLayout, UnsupportedArchitectureError, ablate_heads, as_module, check_heads,  # noqa: F401
                           head_layout)
from probing.models import LoadedModel
from probing.runner import Encoded, encode, length_batches, pad_ids

MODES = ("zero", "mean")
DEFAULT_MODE = "zero"
REPORTS_DIR = Path(__file__).resolve().parents[1] / "reports"
RANKING_SETS = {"negation": "builtin-negation", "coreference": "builtin-coref"}
MAIN_SCORE = {"negation": "selectivity", "coreference": "accuracy"}
RAW_SCORE = "mean_attention"


# The hook machinery lives in probing.hooks; these names stay importable from here.
_as_module = as_module


def head_output_means(loaded: LoadedModel, texts: list[str], batch_tokens: int = 4096) -> torch.Tensor:
    """Each head's mean output (the input of the output projection) over every real token of `texts`:
    a (layers, heads, head_dim) tensor for mean ablation."""
    layout = head_layout(loaded)
    encoded = encode(loaded, texts)
    sums = torch.zeros(layout.n_layers, layout.n_heads * layout.head_dim, dtype=torch.float64)
    state = {"mask": None, "tokens": 0}

    def accumulate(layer):
        def hook(_module, args):
            mask = state["mask"].to(args[0].device, args[0].dtype)[..., None]
            sums[layer] += (args[0] * mask).sum((0, 1)).double().cpu()
        return hook

    handles = [p.register_forward_pre_hook(accumulate(i)) for i, p in enumerate(layout.projections)]
    try:
        for ids, mask, _rows in _batches(loaded, encoded, batch_tokens):
            state["mask"] = mask
            state["tokens"] += int(mask.sum())
            _forward_hidden(loaded.model, ids, mask)
    finally:
        for handle in handles:
            handle.remove()
    means = (sums / max(state["tokens"], 1)).float()
    return means.reshape(layout.n_layers, layout.n_heads, layout.head_dim)


# ---- Forward passes ------------------------------------------------------------------------------------

def _batches(loaded: LoadedModel, encoded: list[Encoded], batch_tokens: int = 4096, max_batch: int = 64):
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


def final_hidden_states(loaded: LoadedModel, encoded: list[Encoded], batch_tokens: int = 4096) -> list[torch.Tensor]:
    """Each text's last hidden states over its real pieces, a (pieces, hidden) tensor per text."""
    states: list[torch.Tensor | None] = [None] * len(encoded)
    for ids, mask, rows in _batches(loaded, encoded, batch_tokens):
        hidden = _forward_hidden(loaded.model, ids, mask)
        for row, index in enumerate(rows):
            states[index] = hidden[row, :len(encoded[index].input_ids)]
    return states


def sentence_embeddings(states: list[torch.Tensor], skip_first: bool = False) -> torch.Tensor:
    """Mean over pieces (without the first when skip_first, e.g. a causal model's BOS), then L2 normalised."""
    pooled = torch.stack([(s[1:] if skip_first and len(s) > 1 else s).mean(0) for s in states])
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
    negation_pairs: dict[str, list[tuple[int, int]]]   # set -> (negated text, affirmative text) indices
    coref_items: list[CorefItem]
    lm_items: list[NegItem]
    skipped: dict[str, str] = field(default_factory=dict)   # section -> why it was left out


def _builtin_negation_pairs() -> list[tuple[str, str]]:
    """(negated sentence, its control with an adverb instead of "not") for every built-in pair."""
    from probing.examples import load_examples
    examples, _ = load_examples("builtin-negation")
    controls = {e.meta.get("pair"): e.text for e in examples if e.is_control}
    return [(e.text, controls[e.meta["pair"]]) for e in examples
            if e.role == "negated" and e.meta.get("pair") in controls]


def _neg136_items(data_root) -> tuple[list[NegItem], str | None]:
    """NEG-136-SIMP and -NAT items, or [] and the reason they could not be read."""
    from probing.examples import ExampleError, load_examples
    items, problems = [], []
    for name in ("neg136-simp", "neg136-nat"):
        try:
            examples, _ = load_examples(name, data_root=data_root)
        except ExampleError as err:
            problems.append(str(err))
            continue
        items += [NegItem(id=e.meta["pair"], context_aff=e.meta["context_aff"], context_neg=e.meta["context_neg"],
                          target_aff=e.meta["target_aff"], target_neg=e.meta["target_neg"]) for e in examples]
    return items, ("; ".join(problems) or None)


def build_workload(loaded: LoadedModel, data_root=None, limit: int | None = None) -> Workload:
    """Tokenise the built-in negation pairs, the NEG-136 contexts and the two-candidate coreference examples
    (only the first `limit` of each set when given)."""
    from probing.alignment import AlignmentError, make_layout
    from probing.examples import load_examples
    index: dict[str, int] = {}
    add = lambda text: index.setdefault(text, len(index))  # noqa: E731
    negation_pairs = {"builtin": [(add(neg), add(aff)) for neg, aff in _builtin_negation_pairs()[:limit]]}
    lm_items, neg136_problem = _neg136_items(data_root)
    lm_items = lm_items[:limit]
    skipped = {}
    if lm_items:
        negation_pairs["neg136"] = [(add(i.context_neg), add(i.context_aff)) for i in lm_items]
    if neg136_problem:
        skipped["neg136"] = f"NEG-136 not (fully) available: {neg136_problem}"
    coref_examples, _ = load_examples("builtin-coref")
    coref_examples = [e for e in coref_examples if e.candidate_spans and len(e.candidate_spans) == 2][:limit]
    for example in coref_examples:
        add(example.text)
    texts = list(index)
    encoded = encode(loaded, texts)
    coref_items, not_aligned = [], []
    for example in coref_examples:
        enc = encoded[index[example.text]]
        try:
            layout = make_layout(example.text, example.source_span, example.target_span, example.candidate_spans,
                                 enc.offsets, enc.word_ids)
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
                    lm_items=lm_items, skipped=skipped)


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

def load_lm_model(loaded: LoadedModel):
    """The checkpoint with its language-modelling head (causal or masked), or (None, reason) when it has none
    trained (a sentence-embedding checkpoint: the head's weights are missing and would be random)."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    auto = AutoModelForCausalLM if loaded.is_causal else AutoModelForMaskedLM
    if not loaded.is_causal and loaded.tokenizer.mask_token_id is None:
        return None, "the tokenizer has no mask token, so a masked-LM test is impossible"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        lm, info = auto.from_pretrained(loaded.path, attn_implementation="eager", output_loading_info=True)
    except Exception as err:  # an architecture without an LM class, a missing file...
        return None, f"no {auto.__name__[len('AutoModelFor'):]} head could be loaded ({type(err).__name__}: " \
                     f"{str(err).splitlines()[0] if str(err) else ''})"
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys", []))
    if missing:
        return None, (f"the checkpoint has no trained language-modelling head ({len(missing)} weights missing, "
                      f"e.g. {missing[0]}): a sentence-embedding model cannot score completions")
    lm.eval()
    return lm, None


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


# ---- Measures and conditions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Measure:
    """One number per example; damage_sign orients it: damage = damage_sign * (ablated - unablated)."""
    name: str
    relation: str       # whose head ranking the measure tests
    title: str
    damage_sign: int
    description: str


MEASURES = {m.name: m for m in (
    Measure("negation_distance_builtin", "negation", "negation: embedding distance, built-in pairs", -1,
            "cosine distance between a negated sentence's embedding and its control's (adverb instead of 'not')"),
    Measure("negation_distance_neg136", "negation", "negation: embedding distance, NEG-136 contexts", -1,
            "cosine distance between the embeddings of context_neg and context_aff (NEG-136-SIMP and -NAT)"),
    Measure("coref_margin", "coreference", "coreference: cos(pronoun, antecedent) - cos(pronoun, distractor)", -1,
            "last-hidden-state cosine of the pronoun to its antecedent minus to the other candidate"),
    Measure("coref_antecedent_closer", "coreference", "coreference: share where the antecedent is closer", -1,
            "1 when the pronoun's state is closer (cosine) to the antecedent than to the distractor"),
    Measure("lm_negation_shift", "negation", "NEG-136 LM: log-odds shift toward target_neg caused by 'not'", -1,
            "[lp(target_neg) - lp(target_aff)] after context_neg minus the same after context_aff"),
    Measure("lm_affirmative_correct", "negation", "NEG-136 LM: true completion wins, affirmative", -1,
            "1 when target_aff scores above target_neg after context_aff"),
    Measure("lm_negated_correct", "negation", "NEG-136 LM: true completion wins, negated", -1,
            "1 when target_neg scores above target_aff after context_neg"),
)}


@dataclass(frozen=True)
class Condition:
    """A set of heads to knock out: kind none, targeted (top-k by the main score), raw (top-k by mean
    attention) or random; `relation` says whose ranking chose a targeted or raw set."""
    kind: str
    k: int
    heads: tuple[tuple[int, int], ...]
    relation: str = ""
    draw: int = -1

    @property
    def key(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "random":
            return f"k{self.k}:random:{self.draw}"
        return f"k{self.k}:{self.relation}:{self.kind}"

    @property
    def label(self) -> str:
        if self.kind == "none":
            return "no ablation"
        if self.kind == "random":
            return f"{self.k} random heads (draw {self.draw})"
        score = MAIN_SCORE[self.relation] if self.kind == "targeted" else RAW_SCORE
        return f"top-{self.k} {self.relation} heads by {score}"


def evaluate(loaded: LoadedModel, workload: Workload, heads, mode: str = DEFAULT_MODE, means=None,
             lm: nn.Module | None = None) -> dict[str, np.ndarray]:
    """Every measure's per-example values with `heads` knocked out (in the base model, and in the LM if given)."""
    with ablate_heads(loaded, heads, mode, means):
        states = final_hidden_states(loaded, workload.encoded)
    embeddings = sentence_embeddings(states, skip_first=loaded.is_causal)
    values = {f"negation_distance_{name}": pair_cosine_distances(embeddings, pairs)
              for name, pairs in workload.negation_pairs.items()}
    margins = coref_margins(states, workload.coref_items)
    values["coref_margin"] = margins
    values["coref_antecedent_closer"] = (margins > 0).astype(np.float64)
    if lm is not None and workload.lm_items:
        with ablate_heads(lm, heads, mode, means):
            values.update(lm_negation_scores(lm, loaded, workload.lm_items))
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


def _effect(values: np.ndarray, baseline: np.ndarray, measure: Measure, n_boot: int, seed: int) -> dict:
    """Mean of the condition, its effect (mean paired difference from no ablation) with CIs, and the damage."""
    mean, low, high = mean_ci(values, n_boot, seed)
    effect, effect_low, effect_high = mean_ci(values - baseline, n_boot, seed)
    return {"mean": mean, "ci": [low, high], "effect": effect, "effect_ci": [effect_low, effect_high],
            "damage": measure.damage_sign * effect}


def summarise_measure(measure: Measure, values: dict[str, dict[str, np.ndarray]], conditions: list[Condition],
                      k: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """One measure at one k: every condition's effect with CIs, the random distribution, and where the
    targeted and raw-attention sets rank among the random draws."""
    baseline = values["none"][measure.name]
    mean, low, high = mean_ci(baseline, n_boot, seed)
    summary = {"measure": measure.name, "title": measure.title, "relation": measure.relation,
               "description": measure.description, "damage_sign": measure.damage_sign, "k": k,
               "n": int(len(baseline)), "baseline": {"mean": mean, "ci": [low, high]}, "conditions": {}}
    chosen = [c for c in conditions if c.k == k and c.kind in ("targeted", "raw")]
    for condition in chosen:
        summary["conditions"][condition.key] = {"label": condition.label, "kind": condition.kind,
                                                "relation": condition.relation, "heads": condition.heads,
                                                **_effect(values[condition.key][measure.name], baseline, measure,
                                                          n_boot, seed)}
    randoms = [c for c in conditions if c.k == k and c.kind == "random"]
    if randoms:
        summary["random"] = _random_summary(measure, values, randoms, baseline, n_boot, seed)
        for condition in chosen:
            entry = summary["conditions"][condition.key]
            damages = summary["random"]["damages"]
            entry["p_vs_random"] = empirical_p_value(entry["damage"], damages)
            entry["n_random_at_least_as_damaging"] = int(np.sum(np.asarray(damages) >= entry["damage"]))
            entry["rank_among_random"] = entry["n_random_at_least_as_damaging"] + 1
    summary["verdict"] = verdict(summary)
    return summary


def _random_summary(measure, values, randoms, baseline, n_boot, seed) -> dict:
    """The random draws' effects, their spread, and the mean effect of a random set with a bootstrap CI."""
    per_draw = np.stack([values[c.key][measure.name] - baseline for c in randoms])   # (draws, examples)
    effects = per_draw.mean(1)
    effect, low, high = mean_ci(per_draw.mean(0), n_boot, seed)
    return {"n_draws": len(randoms), "heads": [c.heads for c in randoms], "effects": effects.tolist(),
            "damages": (measure.damage_sign * effects).tolist(), "effect_mean": effect, "effect_ci": [low, high],
            "effect_2.5_97.5_percent_of_draws": np.percentile(effects, [2.5, 97.5]).tolist()}


def _fmt(x: float) -> str:
    return f"{x:+.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:+.2e}"


def verdict(summary: dict) -> str:
    """The result for the targeted ablation in plain words: did it hurt, did it beat random heads, and did the
    other relation's heads hurt as much (specificity)?"""
    targeted = next((c for c in summary["conditions"].values()
                     if c["kind"] == "targeted" and c["relation"] == summary["relation"]), None)
    if targeted is None:
        return "no targeted condition was run"
    low, high = targeted["effect_ci"]
    damage_low, damage_high = sorted(summary["damage_sign"] * x for x in (low, high))
    text = (f"{targeted['label']} changed it by {_fmt(targeted['effect'])} (95% CI {_fmt(low)} to {_fmt(high)}; "
            f"no ablation: {summary['baseline']['mean']:.4f}): ")
    if damage_low > 0:
        text += "a reliable loss. "
    elif damage_high < 0:
        text += "it moved the OPPOSITE way (the relation got stronger by this measure, not weaker). "
    else:
        text += "no reliable change (the CI includes 0). "
    if "random" in summary:
        n_worse, n_draws = targeted["n_random_at_least_as_damaging"], summary["random"]["n_draws"]
        p = targeted["p_vs_random"]
        beats = p < 0.05 and targeted["damage"] > 0
        text += (f"It {'beats' if beats else 'does NOT beat'} random heads: {n_worse} of {n_draws} random "
                 f"{summary['k']}-head sets did at least as much damage (empirical p = {p:.3f}). ")
    other = next((c for c in summary["conditions"].values()
                  if c["kind"] == "targeted" and c["relation"] != summary["relation"]), None)
    if other is not None and targeted["damage"] > 0 and other["damage"] >= targeted["damage"]:
        text += (f"Not specific: {other['label']} did at least as much damage ({_fmt(other['effect'])}).")
    return text.strip()


# ---- Head rankings -------------------------------------------------------------------------------------

def head_rankings(loaded: LoadedModel, progress: bool = False,
                  limit: int | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Head tables for negation and coreference: the committed reports/<model>/heads/<set>/heads.csv when it
    exists and matches the model's shape (only for short names like minilm), else computed with score_heads
    (on the first `limit` examples when given)."""
    from probing.examples import load_examples
    from probing.heads import score_heads
    tables, sources = {}, {}
    for relation, data in RANKING_SETS.items():
        committed = REPORTS_DIR / loaded.name / "heads" / data / "heads.csv"
        table = pd.read_csv(committed) if committed.is_file() and "/" not in loaded.name else None
        if table is not None and len(table) == loaded.n_layers * loaded.n_heads:
            tables[relation], sources[relation] = table, str(committed.relative_to(REPORTS_DIR.parent))
            continue
        if progress:
            print(f"scoring {relation} heads on {data} ...", file=sys.stderr)
        examples, _ = load_examples(data, limit=limit)
        scores = score_heads(loaded, examples, relation=relation, n_boot=100, n_perm=100)
        tables[relation] = scores.table
        sources[relation] = f"computed with score_heads on {data}" + (f" (first {limit})" if limit else "")
    return tables, sources


def top_heads(table: pd.DataFrame, by: str, k: int) -> tuple[tuple[int, int], ...]:
    """The k heads with the highest `by` (ties broken by layer, then head)."""
    ranked = table.sort_values([by, "layer", "head"], ascending=[False, True, True], kind="stable")
    return tuple((int(r.layer), int(r.head)) for r in ranked.head(k).itertuples())


def random_head_sets(n_layers: int, n_heads: int, k: int, draws: int, seed: int) -> list[tuple[tuple[int, int], ...]]:
    """`draws` sets of k distinct heads, uniform over all heads; seeded by (seed, k) so each k is reproducible."""
    rng = np.random.default_rng([seed, k])
    sets = []
    for _ in range(draws):
        flat = np.sort(rng.choice(n_layers * n_heads, size=k, replace=False))
        sets.append(tuple((int(i) // n_heads, int(i) % n_heads) for i in flat))
    return sets


def build_conditions(tables: dict[str, pd.DataFrame], n_layers: int, n_heads: int, ks: list[int],
                     main_k: int, draws: int, sweep_draws: int, seed: int) -> list[Condition]:
    """No ablation, then for each k: targeted and raw sets per relation, and the random draws."""
    conditions = [Condition("none", 0, ())]
    for k in ks:
        for relation, table in tables.items():
            conditions.append(Condition("targeted", k, top_heads(table, MAIN_SCORE[relation], k), relation))
            conditions.append(Condition("raw", k, top_heads(table, RAW_SCORE, k), relation))
        n_draws = draws if k == main_k else sweep_draws
        conditions += [Condition("random", k, heads, draw=i)
                       for i, heads in enumerate(random_head_sets(n_layers, n_heads, k, n_draws, seed))]
    return conditions


# ---- The whole analysis --------------------------------------------------------------------------------

@dataclass
class AblationResult:
    """Everything `run_ablation` found. `measures` holds the main k; `sweep` one entry per k and measure;
    `rows` one row per condition (and random draw) with each measure's mean and effect."""
    model: str
    n_layers: int
    n_heads: int
    k: int
    mode: str
    seed: int
    draws: int
    sweep_ks: list[int]
    sweep_draws: int
    rankings: dict[str, dict]
    measures: dict[str, dict]
    sweep: list[dict]
    rows: pd.DataFrame
    skipped: dict[str, str]
    counts: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Everything but the per-condition rows, as JSON-ready data."""
        return {name: getattr(self, name) for name in
                ("model", "n_layers", "n_heads", "k", "mode", "seed", "draws", "sweep_ks", "sweep_draws",
                 "rankings", "counts", "skipped", "notes", "seconds", "measures", "sweep")}

    def verdicts(self) -> dict[str, str]:
        return {name: m["verdict"] for name, m in self.measures.items()}


def _check_arguments(loaded: LoadedModel, k: int, draws: int, mode: str, sweep_ks, sweep_draws: int) -> list[int]:
    """Validate the run's parameters up front; returns the sorted k values to run."""
    total = loaded.n_layers * loaded.n_heads
    for name, value in (("k", k), ("draws", draws), ("sweep_draws", sweep_draws)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 1 <= k <= total:
        raise ValueError(f"k must be between 1 and {total} (this model has {loaded.n_layers} layers x "
                         f"{loaded.n_heads} heads), got {k}")
    if draws < 1 or sweep_draws < 0:
        raise ValueError(f"draws must be >= 1 and sweep_draws >= 0, got {draws} and {sweep_draws}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ks = sorted({int(x) for x in (sweep_ks or ())} | {k})
    bad = [x for x in ks if not 1 <= x <= total]
    if bad:
        raise ValueError(f"sweep k values {bad} are out of range 1-{total}")
    return ks


def run_ablation(model: str | LoadedModel | None = "minilm", k: int = 3, draws: int = 20, mode: str = DEFAULT_MODE,
                 seed: int = 0, data_root=None, sweep_ks=(1, 2, 3, 4, 5), sweep_draws: int = 10,
                 n_boot: int = 1000, limit: int | None = None, progress: bool = False) -> AblationResult:
    """Knock out the top-k negation and coreference heads, their raw-attention counterparts and `draws` random
    k-head sets; measure the embedding, coreference and (with a trained LM head) NEG-136 effects.
    `limit` keeps the first N pairs / examples / items of each set: a quick check, not a result."""
    from probing.models import load_model
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    ks = _check_arguments(loaded, k, draws, mode, sweep_ks, sweep_draws)
    head_layout(loaded)  # fail early on an unsupported architecture
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    tables, sources = head_rankings(loaded, progress, limit)
    workload = build_workload(loaded, data_root, limit)
    skipped = dict(workload.skipped)
    lm = None
    if workload.lm_items:
        lm, reason = load_lm_model(loaded)
        if lm is None:
            skipped["lm"] = f"NEG-136 language-model test skipped: {reason}"
    else:
        skipped["lm"] = "NEG-136 language-model test skipped: the NEG-136 data could not be read"
    means = head_output_means(loaded, workload.texts) if mode == "mean" else None
    conditions = build_conditions(tables, loaded.n_layers, loaded.n_heads, ks, k, draws, sweep_draws, seed)
    values = _evaluate_all(loaded, workload, conditions, mode, means, lm, k, progress)
    measures = [m for m in MEASURES.values() if m.name in values["none"]]
    main = {m.name: summarise_measure(m, values, conditions, k, n_boot, seed) for m in measures}
    sweep = [_sweep_entry(m, values, conditions, x, n_boot, seed) for x in ks for m in measures
             if m.name in values[next(c.key for c in conditions if c.k == x and c.kind == "targeted")]]
    rankings = {relation: {"source": sources[relation], "main_score": MAIN_SCORE[relation],
                           "top_by_main_score": top_heads(tables[relation], MAIN_SCORE[relation], max(ks)),
                           "top_by_mean_attention": top_heads(tables[relation], RAW_SCORE, max(ks))}
                for relation in tables}
    counts = {"texts": len(workload.texts), "coref_items": len(workload.coref_items),
              "neg136_items": len(workload.lm_items),
              **{f"negation_pairs_{n}": len(p) for n, p in workload.negation_pairs.items()},
              "conditions": len(conditions)}
    return AblationResult(model=loaded.name, n_layers=loaded.n_layers, n_heads=loaded.n_heads, k=k, mode=mode,
                          seed=seed, draws=draws, sweep_ks=ks, sweep_draws=sweep_draws, rankings=rankings,
                          measures=main, sweep=sweep, rows=_rows(conditions, values), skipped=skipped,
                          counts=counts, seconds=round(time.perf_counter() - started, 1),
                          notes=_notes(loaded, mode))


def _evaluate_all(loaded, workload, conditions, mode, means, lm, main_k, progress) -> dict[str, dict]:
    """Run every condition; the LM test (slow for big vocabularies) runs for no ablation and the main k only."""
    from tqdm import tqdm
    values = {}
    for condition in tqdm(conditions, disable=not progress, file=sys.stderr, unit="condition", leave=False):
        use_lm = lm if condition.k in (0, main_k) else None
        values[condition.key] = evaluate(loaded, workload, condition.heads, mode, means, use_lm)
    return values


def _sweep_entry(measure: Measure, values, conditions, k: int, n_boot: int, seed: int) -> dict:
    """The compact per-k summary: targeted, raw and mean-random effects with p-values vs random."""
    summary = summarise_measure(measure, values, conditions, k, n_boot=200, seed=seed)
    entry = {"k": k, "measure": measure.name, "n_draws": summary.get("random", {}).get("n_draws", 0)}
    for c in summary["conditions"].values():
        if c["relation"] == measure.relation:
            entry[f"{c['kind']}_heads"] = c["heads"]
            entry[f"{c['kind']}_effect"] = c["effect"]
            entry[f"{c['kind']}_effect_ci"] = c["effect_ci"]
            entry[f"{c['kind']}_p_vs_random"] = c.get("p_vs_random")
    if "random" in summary:
        entry["random_effect_mean"] = summary["random"]["effect_mean"]
    return entry


def _rows(conditions: list[Condition], values: dict[str, dict]) -> pd.DataFrame:
    """One row per condition: which heads, and each measure's mean and effect (mean difference from none)."""
    baseline = values["none"]
    rows = []
    for c in conditions:
        row = {"k": c.k, "condition": c.kind, "relation": c.relation, "draw": c.draw if c.kind == "random" else "",
               "heads": " ".join(f"{l}-{h}" for l, h in c.heads), "label": c.label}
        for name in MEASURES:
            if name in values[c.key]:
                row[f"{name}_mean"] = float(np.mean(values[c.key][name]))
                row[f"{name}_effect"] = float(np.mean(values[c.key][name] - baseline[name]))
            elif name in baseline:
                row[f"{name}_mean"] = row[f"{name}_effect"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _notes(loaded: LoadedModel, mode: str) -> list[str]:
    notes = [
        ("zero ablation: each knocked-out head's slice of the attention output projection's input is set to 0"
         if mode == "zero" else
         "mean ablation: each knocked-out head's slice of the output projection's input is set to its mean over "
         "every real token of the analysed texts"),
        "random sets are drawn uniformly from all heads (the targeted heads included), seeded by (seed, k)",
        "damage = the change a loss of the relation would cause (smaller distance / margin / accuracy), so "
        "p_vs_random = (1 + #random draws with damage >= targeted damage) / (1 + #draws)",
        "the NEG-136 LM test runs for no ablation and the main k only",
    ]
    if loaded.is_causal:
        notes.append("sentence embeddings are mean-pooled last hidden states without the first token; this is "
                     "not how a causal model was trained to embed sentences")
    elif loaded.name != "minilm":
        notes.append("sentence embeddings are mean-pooled last hidden states (sentence-transformers' pooling)")
    return notes
