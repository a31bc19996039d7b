"""Counterfactual activation patching of heads and of attention patterns on minimal pairs, gated on behaviour.

Definitions (the contract of issue 13; tests and the command rely on them):
- Pairs (`pairs.py`): two rows with the same `meta.pair` (negation: the negated row is *clean*, its adverb
  control *corrupt*), or twins sharing `meta.twin` with `meta.twin_role` "clean"/"corrupt" (Winograd, WSC,
  WinoBias pro/anti, Winogender). A pair is usable only when it is a minimal pair (`pairs.minimal_pair`, the
  one check: as many pieces, differing in one word's pieces alone) with the source word at the same pieces.
- Readouts (`readouts.py`): the embedding over the pieces both texts share (the swapped word left out; or every
  piece with `all-positions`) projected on clean - corrupt (encoders without an LM head), or an
  LM's logit difference between two answers (NEG-136-style rows; masked-LM coreference twins, Kocijan et al.
  2019), normalised so clean = 1 and corrupt = 0.
- Effects (`engine.py`): noising = 1 - m(clean run with head (l, h)'s z from the corrupt run) (necessity),
  denoising = m(corrupt run with it from the clean run) (sufficiency), and the same for the head's whole
  pattern (`pattern_*`) or its source rows (`row_*`); every pair's patched runs go through the model as one
  batch, with sanity checks (own activations give 0, the first layer's input gives denoising 1).
- Behaviour first (`gates.py`, `choose_gate`): the readout's clean - corrupt difference must beat the same
  difference on relation-free control pairs (paired, clustered, >= 30 units) before any head is named.
- Many pairs (`study.py`, `patch_heads`): CIs (t-based below 50 units), maxT `p_fwer`, control pairs for every
  pair kind, heads named only when they beat their control, and the within-layer attention-vs-effect
  correlation (`correlation.py`).
"""
from probing.models import load_lm_model
from probing.patching.correlation import score_vs_effect
from probing.patching.engine import KINDS, LOGIT_SANITY_TOLERANCE, SANITY_TOLERANCE, PairPatch, patch_pair
from probing.patching.gates import Gate, choose_gate, controlled_gate
from probing.patching.pairs import (ADVERBS, TWIN_WORDS, NotAMinimalPair, Pair, PairSet, PiecePair,
                                    collect_pairs, completion_pairs, control_pairs, load_twin_controls,
                                    masked_twin_pairs, minimal_pair, relation_controls, suggest_twin,
                                    twin_control_pairs, usable)
from probing.patching.readouts import READOUTS, LogitReadout
from probing.patching.study import PatchingResult, patch_heads

__all__ = ["ADVERBS", "Gate", "KINDS", "LOGIT_SANITY_TOLERANCE", "LogitReadout", "NotAMinimalPair", "Pair",
           "PairPatch", "PairSet", "PatchingResult", "PiecePair", "READOUTS", "SANITY_TOLERANCE", "TWIN_WORDS",
           "choose_gate", "collect_pairs", "completion_pairs", "control_pairs", "controlled_gate",
           "load_lm_model", "load_twin_controls", "masked_twin_pairs", "minimal_pair", "patch_heads", "patch_pair",
           "relation_controls", "score_vs_effect", "suggest_twin", "twin_control_pairs", "usable"]
