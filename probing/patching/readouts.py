"""What a patched run is measured by (the readout), and which readout a dataset and model get.

- Embedding (encoders without an LM head): e(x) = mean of the final hidden states over the positions whose
  piece is the same in both texts of the pair (the swapped word's own state left out: about a third of the
  all-positions projection was that state, so a head that merely carries the swapped word scored as "used");
  `all-positions` averages every position (the earlier readout). A run's value is <e(run), e(clean) -
  e(corrupt)>, and effects are divided by the pair's own clean - corrupt value, so clean = 1, corrupt = 0.
- Sentence (`sentence`): the model's actual output as a sentence encoder, n(x) = the final states averaged
  over every position and scaled to length 1 (sentence-transformers' mean pooling and normalisation); a run's
  value is <n(run), n(clean) - n(corrupt)>, divided by the pair's own difference (clean = 1, corrupt = 0). The
  embedding readout above is a projection of the unnormalised states: magnitudes differ between the two.
- Probe (`probe`): the final states averaged over every position, projected on a negation direction (a linear
  probe's weight vector trained on sentences disjoint from the patched pairs, `direction.py`). The direction
  is fixed, not the pair's own, so a pair's difference can be near 0: effects are divided by the mean
  difference over pairs, as for logits.
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

# probing.defaults' readouts and the two pooled ones added since (they move into probing.defaults at the next full
# regeneration: editing defaults re-keys every report); analysis.patch's choices are tested equal to this.
READOUTS = defaults.READOUTS + ("sentence", "probe")


@dataclass(frozen=True, eq=False)
class Pooling:
    """How a readout without an LM head turns a run's final states [batch, pos, d_model] into one number:
    `shared` (mean over the pieces both texts share, projected on the pair's clean - corrupt), `all` (mean over
    every piece, likewise), `sentence` (mean over every piece, unit length, likewise) or `probe` (mean over every
    piece, projected on the fixed `direction` [d_model])."""
    name: str = "shared"
    direction: np.ndarray | None = None
    about: str = ""          # probe: where the direction comes from (`direction.Direction.source`)

    def __post_init__(self):
        if self.name not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.name!r}")
        if (self.name == "probe") != (self.direction is not None):
            raise ValueError("the probe pooling needs a direction, and only it takes one")

    @property
    def per_pair_scale(self) -> bool:
        """Whether effects are divided by each pair's own difference (a pair-own direction: always > 0) rather
        than by the mean over pairs (a fixed direction, where one pair's difference can be ~0)."""
        return self.name != "probe"


POOLINGS = ("shared", "all", "sentence", "probe")
SHARED, ALL = Pooling("shared"), Pooling("all")


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


def value_function(base: torch.Tensor, readout: LogitReadout | None, pooling: Pooling = SHARED,
                   clean_ids=None, corrupt_ids=None):
    """(fn turning a run's output into its value [batch] (float64), the base values [2], the pair's distance)
    from the unpatched clean and corrupt runs' outputs `base` (rows 0 and 1). Without an LM readout, `pooling`
    says how the final states become a value (the `shared` pooling needs the two texts' ids)."""
    if readout is not None:
        return (lambda out: out), base, float(base[0] - base[1])
    if pooling.name == "probe":
        from probing.patching.direction import pooled_projection
        value = lambda hidden: pooled_projection(hidden, pooling.direction)        # noqa: E731
        values = value(base)
        return value, values, float(abs(values[0] - values[1]))
    if pooling.name == "sentence":
        pool = lambda hidden: torch.nn.functional.normalize(hidden.double().mean(1), dim=-1)    # noqa: E731
    else:
        positions = None if pooling.name == "all" else pooled_positions(clean_ids, corrupt_ids)
        keep = slice(None) if positions is None else torch.tensor(positions, device=base.device)
        pool = lambda hidden: hidden.double()[:, keep].mean(1)                    # noqa: E731
    e_clean, e_corrupt = pool(base)
    direction = e_clean - e_corrupt
    value = lambda hidden: pool(hidden) @ direction                               # noqa: E731
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


def _has_professions(examples) -> bool:
    return any(e.relation == "coreference" and {"occupation", "answer", "pronoun"} <= set(e.meta or {})
               for e in examples)


def _has_masked_twins(examples) -> bool:
    return any(e.relation == "coreference" and "twin" in (e.meta or {}) for e in examples)


def choose_readout(loaded, examples, readout: str, pooling: Pooling | None = None, data_root=None
                   ) -> tuple[PairSet, nn.Module | None, str]:
    """(pairs, the LM for a logit readout or None, the readout's description). `auto` takes the logit readout
    when the model has a trained language-modelling head and the rows allow one: NEG-136-style answers
    (decoders and masked LMs), coreference twins (masked LMs: the pronoun masked, Kocijan-style), or Winogender's
    profession contexts (decoders: `professions.py`, Vig et al. 2020). pooling: the pooling of a readout
    without an LM head, when the caller has built it (the probe's needs its direction); else from `readout`.
    data_root: where Winogender's occupation statistics are (default: the loaders' data root)."""
    if loaded.is_causal and readout in ("auto", "logits") and _has_professions(examples):
        from probing.patching.professions import profession_pairs
        lm, problem = load_lm_model(loaded)
        if lm is not None:
            return (profession_pairs(examples, loaded, data_root=data_root), lm,
                    "logit difference stereotypical - anti-stereotypical pronoun (first pieces) at the last position "
                    "of the context before an occupation's pronoun; corrupt: the occupation swapped for 'man' or "
                    "'woman', the gender against its majority (Vig et al. 2020)")
        if readout == "logits":
            raise ValueError(f"the logit readout is impossible here: {problem}")
    completions = _has_completions(examples)
    twins = not completions and not loaded.is_causal and _has_masked_twins(examples)
    lm, problem = (None, "the rows carry no answers (NEG-136-style context_neg, target_aff, target_neg) and no "
                         "coreference twins for a masked LM (a decoder cannot read a swap that follows the pronoun)")
    if readout in ("auto", "logits") and (completions or twins):
        lm, problem = load_lm_model(loaded)
    if readout == "logits" and lm is None:
        raise ValueError(f"the logit readout is impossible here: {problem}; use --readout embedding "
                         "(readout='embedding')")
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
    return pair_set, None, describe_pooling(pooling or pooling_for(readout))


def check_probe_readout(examples, readout: str) -> None:
    """ValueError, in words, when the probe readout does not fit the examples: its direction is a negation
    direction, so it reads negation pairs only. Cheap: callers run it before fitting a direction."""
    other = sorted({e.relation for e in examples} - {"negation"})
    if readout == "probe" and other:
        raise ValueError(f"--readout probe projects on a negation direction, so it reads negation pairs only; "
                         f"these examples include {', '.join(other)}: use --readout sentence or embedding")


def pooling_for(readout: str, direction=None, about: str = "") -> Pooling:
    """The pooling a readout name asks for (`probe` takes the direction [d_model])."""
    if readout == "probe":
        if direction is None:
            raise ValueError("the probe readout needs a negation direction (direction.cdsco_direction, or "
                             "direction.negation_direction on sentences disjoint from the pairs)")
        return Pooling("probe", np.asarray(direction, dtype=np.float64), about)
    return {"all-positions": ALL, "sentence": Pooling("sentence")}.get(readout, SHARED)


def describe_pooling(pooling: Pooling) -> str:
    if pooling.name == "probe":
        return ("probe: final hidden states averaged over every position, projected on a negation direction "
                f"(a linear probe's weights: {pooling.about or 'given by the caller'})")
    if pooling.name == "sentence":
        return ("sentence: the model's normalised output (final hidden states averaged over every position, scaled "
                "to length 1), projected on clean - corrupt")
    where = ("every position" if pooling.name == "all" else
             "the positions whose piece is the same in both texts (the swapped word left out)")
    return f"embedding: final hidden states averaged over {where}, projected on clean - corrupt"
