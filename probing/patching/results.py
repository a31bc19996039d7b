"""What one pair's patched runs give back (`PairRun`), passed between the patching modules: the engine and the
attribution estimates fill it, `readouts.normalise_all` adds the effects, the study, the gate, the correlation and
the head sets read it. Named fields instead of dict keys, so a missing or misspelt one fails where it is made.

Raw readout values v are those of `readouts.value_function`: the embedding readout's <e(run), e(clean) - e(corrupt)>
or the logit difference; `readouts.normalise` turns them into effects (clean = 1, corrupt = 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SanityReadings:
    """The raw readout values of a pair's three sanity runs (NaN where they were skipped): each run patched with
    its own z and patterns everywhere (must equal the unpatched clean / corrupt value), and the corrupt run
    started from the clean run's hidden states entering layer 0 (must equal the clean value)."""
    own_clean: float
    own_corrupt: float
    embedding: float


@dataclass(frozen=True)
class CleanAttention:
    """The clean run's attention from the source word. attention: to the target (mean over the source's pieces,
    sum over the target's) [layers, heads], None without a target; attention_reversed: a decoder read the later
    target -> source instead; norm_attention: the same reading of Kobayashi et al.'s alpha ||f(x)|| (None where
    the model gives no value norms); source_pattern: to every piece [layers, heads, pieces]."""
    attention: np.ndarray | None
    attention_reversed: bool
    norm_attention: np.ndarray | None
    source_pattern: np.ndarray


@dataclass
class PairRun:
    """One pair's patching output. values[kind]: the patched runs' raw readout values ([layers, heads] for single
    heads, NaN for heads not patched; [sets] for head sets); clean / corrupt: the unpatched runs' values;
    distance: the norm of the clean - corrupt readout direction; method: "exact" or "attribution" (values are
    first-order estimates). Filled later: effects and sanity (`readouts.normalise_all`), estimates (the screen:
    the attribution effects beside the exact ones)."""
    values: dict[str, np.ndarray]
    clean: float
    corrupt: float
    sanity_readings: SanityReadings
    distance: float
    seconds: float
    method: str = "exact"
    summary: CleanAttention | None = None      # None for head sets (no single source word is read)
    effects: dict[str, np.ndarray] = field(default_factory=dict)
    sanity: dict[str, float] = field(default_factory=dict)
    estimates: dict[str, np.ndarray] | None = None

    @property
    def difference(self) -> float:
        """clean - corrupt of the unpatched runs' readout (the behaviour the gate tests)."""
        return self.clean - self.corrupt

    @property
    def attention(self) -> np.ndarray | None:
        return None if self.summary is None else self.summary.attention

    @property
    def norm_attention(self) -> np.ndarray | None:
        return None if self.summary is None else self.summary.norm_attention
