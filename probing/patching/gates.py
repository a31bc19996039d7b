"""Behaviour first: before any head is named, the model must show the behaviour the heads would explain.

One function, `choose_gate`, decides which gate a run gets:
- logit readout (a trained LM head): the CI of v(clean) - v(corrupt) must lie above 0 (`logit_gate`; Ettinger
  2020: small LMs often ignore "not");
- embedding readout, negation with control pairs: the distance ||e(clean) - e(corrupt)|| must beat the same
  distance on adverb <-> adverb control pairs, paired, CI above 0 (`embedding_gate` with controls);
- embedding readout, coreference twins: each twin's embedding must sit nearer the reading with its own referent
  substituted for the pronoun (`twin_gate`, after Trinh & Le 2018);
- otherwise: the swap must move the embedding at all (`embedding_gate` without controls).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from probing import stats
from probing.models import LoadedModel
from probing.patching.pairs import Pair


@dataclass(frozen=True)
class Gate:
    """The behavioural gate's outcome. `passed`: whether heads may be named; `ci`: the 95% cluster-bootstrap CI
    of `clean_minus_corrupt`; the control fields only with control pairs, `n_pairs` only for twins."""
    measure: str
    clean_minus_corrupt: float
    ci: list[float]
    passed: bool
    note: str
    n_pairs: int | None = None
    control_mean: float | None = None
    relation_minus_control: float | None = None
    relation_minus_control_ci: list[float] | None = None

    # the order of the keys in summaries (kept as it was before the gate had a type)
    _ORDER = ("measure", "n_pairs", "clean_minus_corrupt", "ci", "control_mean", "relation_minus_control",
              "relation_minus_control_ci", "passed", "note")

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: values[name] for name in self._ORDER if values[name] is not None}


def _ci(values: np.ndarray, n_boot: int, seed: int, groups) -> list[float]:
    low, high = stats.bootstrap_ci(values[:, None], n_boot, seed=seed, groups=groups)
    return [float(low[0]), float(high[0])]


def embedding_gate(distances: np.ndarray, control_distances: np.ndarray | None, n_boot: int, seed: int,
                   groups) -> Gate:
    """Does the swap move the embedding more than a relation-preserving swap does (without controls: at all)?"""
    ci = _ci(distances, n_boot, seed, groups)
    measure, mean = "||e(clean) - e(corrupt)||, mean over pairs", float(distances.mean())
    if control_distances is None:
        return Gate(measure, mean, ci, passed=bool(ci[0] > 0), note="no control pairs: the gate only asks that "
                    "the swap moves the embedding at all, which any word swap does")
    diff = distances - control_distances
    diff_ci = _ci(diff, n_boot, seed, groups)
    return Gate(measure, mean, ci, passed=bool(diff_ci[0] > 0), control_mean=float(control_distances.mean()),
                relation_minus_control=float(diff.mean()), relation_minus_control_ci=diff_ci,
                note="passes when the relation's swap moves the embedding more than an adverb <-> adverb swap "
                     "(paired, cluster-bootstrap CI above 0)")


def logit_gate(differences: np.ndarray, n_boot: int, seed: int, groups, relation: str) -> Gate:
    """LM readout: does the swap move the logit difference toward the clean answer?"""
    ci = _ci(differences, n_boot, seed, groups)
    passed = bool(ci[0] > 0)
    measure = ("logit difference (target_neg - target_aff), clean (negated) minus corrupt (adverb)"
               if relation == "negation" else
               "logit difference (clean answer - corrupt answer) at the masked pronoun, clean twin minus corrupt twin")
    return Gate(measure + ", mean over pairs", float(differences.mean()), ci, passed,
                note="passes when the CI is above 0" + ("" if passed else
                     ": it is not, so there is no behaviour to localise and no head is named"))


TWIN_MEASURE = ("substitution preference: cos(e(twin), e(twin with its own referent for the pronoun)) - "
                "cos(e(twin), e(twin with the other referent)), summed over the two twins, mean over pairs")


def twin_gate(preferences: np.ndarray, n_boot: int, seed: int, groups) -> Gate:
    """Coreference twins, embedding readout: does the swap move each twin toward its own referent
    (`substitution_preferences`)? A control that can fail: a model blind to the swap scores 0."""
    keep = ~np.isnan(preferences)
    if not keep.any():
        return Gate(TWIN_MEASURE, float("nan"), [float("nan"), float("nan")], passed=False, n_pairs=0,
                    note="no pair's twins have different referents (e.g. WinoBias pro/anti keep the referent): "
                         "there is no coreference behaviour to localise, and no head is named")
    values = preferences[keep]
    ci = _ci(values, n_boot, seed, None if groups is None else [g for g, k in zip(groups, keep) if k])
    passed = bool(ci[0] > 0)
    return Gate(TWIN_MEASURE, float(values.mean()), ci, passed, n_pairs=int(keep.sum()),
                note="passes when the CI is above 0: the embedding moves toward the right referent"
                     + ("" if passed else "; it does not, so no head is named"))


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
    e = e.view(len(usable_rows), 2, 3, -1)                       # [pairs, twin (clean, corrupt), text, d_model]
    similarity = (e[:, :, :1] * e[:, :, 1:]).sum(-1)              # [pairs, twin, (own, other)]
    clean_pref = similarity[:, 0, 0] - similarity[:, 0, 1]        # the clean twin's referent is "own"
    corrupt_pref = similarity[:, 1, 1] - similarity[:, 1, 0]      # the corrupt twin's referent is "other"
    preferences[usable_rows] = (clean_pref + corrupt_pref).numpy()
    return preferences


def choose_gate(loaded: LoadedModel, pairs: list[Pair], outs: list[dict], *, logit_readout: bool,
                control_distances: np.ndarray | None, n_boot: int, seed: int, groups: list[str]) -> Gate:
    """The one place where a run's gate is decided (see the top of this file). `outs`: each kept pair's raw
    patching output (its `clean`, `corrupt` and `distance`); `control_distances`: per pair, its control pair's
    distance (NaN where it has none), or None when the run had no control pairs."""
    relation = pairs[0].relation
    if logit_readout:
        return logit_gate(np.array([o["clean"] - o["corrupt"] for o in outs]), n_boot, seed, groups, relation)
    distances = np.array([o["distance"] for o in outs])
    if control_distances is not None:
        matched = ~np.isnan(control_distances)     # pairs without a control pair are left out of the comparison
        return embedding_gate(distances[matched], control_distances[matched], n_boot, seed,
                              [g for g, m in zip(groups, matched) if m])
    if relation == "coreference":
        return twin_gate(substitution_preferences(loaded, pairs), n_boot, seed, groups)
    return embedding_gate(distances, None, n_boot, seed, groups)
