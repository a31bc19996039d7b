"""What a patched run is measured by (the readout), and which readout a dataset and model get.

- Embedding (encoders without an LM head): e(x) = mean of the final hidden states over the positions whose
  piece is the same in both texts of the pair (the swapped word's own state left out: about a third of the
  all-positions projection was that state, so a head that merely carries the swapped word scored as "used");
  `all-positions` averages every position (the earlier readout). A run's value is <e(run), e(clean) -
  e(corrupt)>, and effects are divided by the pair's own clean - corrupt value, so clean = 1, corrupt = 0.
- Logits (models with a trained LM head): v(run) = logit of answers[0] - logit of answers[1] (first pieces) at
  the readout position (a decoder's last piece, a masked LM's mask); effects are divided by the mean
  v(clean) - v(corrupt) over pairs (one pair's difference can be ~0), so clean = 1, corrupt = 0 on average.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from probing import defaults
from probing.models import LoadedModel, load_lm_model
from probing.patching.pairs import PairSet, collect_pairs, completion_pairs, masked_twin_pairs
from probing.patching.results import PairRun

READOUTS = defaults.READOUTS     # (probing.defaults: the command line checks --readout against it)


@dataclass(frozen=True)
class LogitReadout:
    """The logit difference answers[0] - answers[1] (token ids) at piece `position` of a language model's output:
    a decoder's last position, or a masked LM's mask."""
    lm: nn.Module
    answers: tuple[int, int]
    position: int


def run_readout(module, ids: torch.Tensor, readout: LogitReadout | None) -> torch.Tensor:
    """Embedding readout (readout None): the final hidden states [batch, pos, d_model]; logit readout: the logit
    difference per row [batch] (float64). No padding: a pair's texts have the same length."""
    with torch.inference_mode():
        if readout is None:
            return module(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.float()
        keep = ids.shape[1] - readout.position       # only the readout position's logits (a 262k vocabulary)
        kwargs = {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(module.forward).parameters else {}
        logits = module(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits[:, -keep].double()
        return logits[:, readout.answers[0]] - logits[:, readout.answers[1]]


def pooled_positions(clean_ids, corrupt_ids, all_positions: bool = False) -> list[int] | None:
    """The positions the embedding readout averages: those whose piece is the same in both texts (None: all)."""
    if all_positions:
        return None
    return [i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a == b]


def value_function(base: torch.Tensor, readout: LogitReadout | None, positions: list[int] | None = None):
    """(fn turning a run's output into its value [batch] (float64), the base values [2], the pair's distance)
    from the unpatched clean and corrupt runs' outputs `base` (rows 0 and 1). The embedding readout averages
    the final states at `positions` (None: every position)."""
    if readout is not None:
        return (lambda out: out), base, float(base[0] - base[1])
    keep = slice(None) if positions is None else torch.tensor(positions, device=base.device)
    e_clean, e_corrupt = base.double()[:, keep].mean(1)
    direction = e_clean - e_corrupt
    value = lambda hidden: hidden.double()[:, keep].mean(1) @ direction          # noqa: E731
    return value, value(base), float(torch.linalg.norm(direction))


def normalise(out: PairRun, scale: float) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Effects in units of `scale` (the clean - corrupt difference of the readout): noising = (v_clean - v) /
    scale, denoising = (v - v_corrupt) / scale; with the pair's own difference as scale, clean = 1, corrupt = 0."""
    effects = {kind: ((v - out.corrupt) if kind.endswith("denoising") else (out.clean - v)) / scale
               for kind, v in out.values.items()}
    readings = out.sanity_readings
    sanity = {"own_noising_max_abs": abs(out.clean - readings.own_clean) / abs(scale),
              "own_denoising_max_abs": abs(readings.own_corrupt - out.corrupt) / abs(scale),
              "embedding_denoising": 1.0 + (readings.embedding - out.clean) / scale}
    return effects, sanity


def normalise_all(outs: list[PairRun], per_pair_scale: bool) -> float | None:
    """Adds effects and sanity to every pair's output. The embedding readout divides by each pair's own
    clean - corrupt difference (> 0 for any real swap); the logit readout by the mean difference over pairs,
    because one pair's difference can be near 0 and would blow its effects up (Wang et al. 2022 normalise the
    same way). Returns the common scale, or None."""
    scale = None if per_pair_scale else float(np.mean([o.difference for o in outs]))
    if scale is not None and abs(scale) < 1e-12:
        scale = 1e-12 if scale >= 0 else -1e-12      # no behaviour: effects are meaningless, the gate says so
    for o in outs:
        o.effects, o.sanity = normalise(o, o.difference if per_pair_scale else scale)
    return scale


def language_model(loaded: LoadedModel) -> nn.Module:
    lm, problem = load_lm_model(loaded)
    if lm is None:
        raise ValueError(f"the logit readout needs a language-modelling head: {problem}")
    return lm


def _has_completions(examples) -> bool:
    return any(e.relation == "negation" and {"context_neg", "target_aff", "target_neg"} <= set(e.meta or {})
               for e in examples)


def _has_masked_twins(examples) -> bool:
    return any(e.relation == "coreference" and "twin" in (e.meta or {}) for e in examples)


def choose_readout(loaded, examples, readout: str) -> tuple[PairSet, nn.Module | None, str]:
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
    where = ("every position" if readout == "all-positions" else
             "the positions whose piece is the same in both texts (the swapped word left out)")
    return pair_set, None, f"embedding: final hidden states averaged over {where}, projected on clean - corrupt"
