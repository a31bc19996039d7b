"""Counterfactual activation patching of heads and of attention patterns on minimal pairs, gated on behaviour.

Definitions (the contract of issue 13; tests and the command rely on them):
- Pairs (`pairs.py`): two rows with the same `meta.pair` (negation: the negated row is *clean*, its adverb
  control *corrupt*), or twins sharing `meta.twin` with `meta.twin_role` "clean"/"corrupt" (Winograd, WSC,
  WinoBias pro/anti, Winogender). A pair is usable only when it is a minimal pair (`pairs.minimal_pair`, the
  one check: as many pieces, differing in one word's pieces alone) with the source word at the same pieces.
- Readouts (`readouts.py`): the embedding projected on clean - corrupt (encoders without an LM head), or an
  LM's logit difference between two answers (NEG-136-style rows; masked-LM coreference twins, Kocijan et al.
  2019), normalised so clean = 1 and corrupt = 0.
- Effects (`engine.py`): noising = 1 - m(clean run with head (l, h)'s z from the corrupt run) (necessity),
  denoising = m(corrupt run with it from the clean run) (sufficiency), and the same for the head's whole
  pattern (`pattern_*`) or its source rows (`row_*`); every pair's patched runs go through the model as one
  batch, with sanity checks (own activations give 0, the first layer's input gives denoising 1).
- Behaviour first (`gates.py`, `choose_gate`): no head is named unless the model shows the behaviour.
- Many pairs (`study.py`, `patch_heads`): CIs, maxT `p_fwer`, control pairs, and the attention-vs-effect rank
  correlation (`correlation.py`).
"""
from probing.models import load_lm_model
from probing.patching.correlation import rank_correlation
from probing.patching.engine import KINDS, LOGIT_SANITY_TOLERANCE, SANITY_TOLERANCE, PairPatch, patch_pair
from probing.patching.gates import (Gate, choose_gate, embedding_gate, logit_gate, substitution_preferences,
                                    twin_gate)
from probing.patching.pairs import (ADVERBS, TWIN_WORDS, NotAMinimalPair, Pair, PairSet, PiecePair,
                                    collect_pairs, completion_pairs, control_pairs, masked_twin_pairs,
                                    minimal_pair, suggest_twin, usable)
from probing.patching.readouts import READOUTS, LogitReadout
from probing.patching.study import PatchingResult, patch_heads

__all__ = ["ADVERBS", "Gate", "KINDS", "LOGIT_SANITY_TOLERANCE", "LogitReadout", "NotAMinimalPair", "Pair",
           "PairPatch", "PairSet", "PatchingResult", "PiecePair", "READOUTS", "SANITY_TOLERANCE", "TWIN_WORDS",
           "choose_gate", "collect_pairs", "completion_pairs", "control_pairs", "embedding_gate", "load_lm_model",
           "logit_gate", "masked_twin_pairs", "minimal_pair", "patch_heads", "patch_pair", "rank_correlation",
           "substitution_preferences", "suggest_twin", "twin_gate", "usable"]
