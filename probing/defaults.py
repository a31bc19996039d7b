"""Every default and shared constant of the library and the command line, defined once.

A function's signature and a command's option both take their default from here (`n_boot: int = N_BOOT`,
`--n-boot` with `default=N_BOOT`), so the two cannot drift apart. The enumerations (patching kinds, readouts,
methods, ablation modes, the source-piece and mention rules) are here too: the command line checks a choice
against them when it parses its arguments, before any model or dataset loads.

This module imports nothing (not even numpy): `python -m analysis ... --help` and the parse-time checks read it
without loading torch.
"""
from __future__ import annotations

# ---- resampling ----------------------------------------------------------------------------------------
N_BOOT = 1000            # bootstrap resamples behind every confidence interval
N_PERM = 10000           # sign flips (or label permutations) behind every permutation test
SEED = 0                 # seed of the resampling and of every random draw
ALPHA = 0.05             # family-wise level: `significant`, the flags, the confirmation and the patching names
MIN_UNITS = 30           # below this many independent units no head is named, no gate passes, no claim is made

# ---- running the model ---------------------------------------------------------------------------------
BATCH_TOKENS = 4096      # padded pieces per batch (batch size x longest sequence)
DTYPES = ("float32", "bfloat16", "float16")    # the model weights' dtypes `load_model` accepts (float32 default)

# ---- reading attention from words ----------------------------------------------------------------------
SOURCE_PIECE_RULES = ("last", "mean")   # a source word of several pieces: its last piece, or their mean (Clark et al.)
SOURCE_PIECES = "last"                  # the rule every function and command uses unless told (probing.heads says why)
MENTION_RULES = ("head", "span")        # a multi-word mention: its last word, or the sum over the span
MENTION = "head"

# ---- ablation and head sets ----------------------------------------------------------------------------
ABLATION_MODES = ("zero", "mean")       # a knocked-out head's z set to 0, or to its mean over the texts
ABLATION_MODE = "zero"
N_DRAWS = 100            # layer-matched random head sets per chosen set in `ablate`
N_RANDOM = 1000          # layer-matched random head sets per chosen set in `patch --sets`: p = (1 + b) / (1 + n) can reach 0.001

# ---- patching ------------------------------------------------------------------------------------------
PATCH_KINDS = ("noising", "denoising", "pattern_noising", "pattern_denoising", "row_noising", "row_denoising")
PATCH_METHODS = ("exact", "attribution", "screen")
READOUTS = ("auto", "embedding", "logits", "all-positions")
