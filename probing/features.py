"""Batched feature extraction for the probes: attention between word units, and word hidden states.

Three extractors, each one forward pass per length-sorted batch with the reduction done in torch on the
batch (never the dataset's attention tensors), as in `probing.heads._score_batch`:

- `candidate_features` (coreference): for every (pronoun, candidate) pair and every head, the word-level
  attention pronoun -> candidate and candidate -> pronoun (mean over attending pieces, sum over attended-to
  pieces, as in `probing.alignment`). Direction index 0 is pronoun -> candidate, 1 is candidate -> pronoun.
  Only examples with `candidate_spans` are used. For a causal model, attention to a later word is 0.
- `adjacent_pair_features` (negation): for every adjacent word pair (w, w+1) of every sentence, the
  word-level attention w -> w+1 (direction 0) and w+1 -> w (direction 1) for every head, with the pair's
  label (w is the negation cue of a negated sentence), its word, its position, and whether it is the
  substitute adverb of a control sentence (a hard negative). A cue that spans several tokenizer words
  ("didn ' t" for "n't") is labelled at its last word; pairs that start inside the cue before that word
  carry no clean label and are left out.
- `word_hidden_states`: the hidden state of the word after the source at every layer (embeddings = layer 0),
  mean over the word's pieces.

Features are read as the model sees them: the tokenizer's words, special tokens in no word. Examples that
cannot be aligned are skipped and listed with a reason, never dropped silently.

Grouping (`fold_groups`): cross-validation folds must never split related examples. Two examples are in one
fold group when they share meta["group"] (or meta[group_by]) or are twins (meta["twin"]): the connected
components of those links. `DEFAULT_GROUP_BY` is the scientific default per dataset: Winogender's
meta["group"] is one template, and the template with the other answer for the same occupation is its
minimal pair, so its folds group by occupation (a notebook call gets this default too).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from probing.defaults import BATCH_TOKENS
from probing.alignment import AlignmentError, Layout, adjacent_word_attention, drop_special_columns, unit_attention
from probing.examples import Example
from probing.lexicon import word_type
from probing.models import LoadedModel
from probing.runner import encode_and_align, forward_attentions, length_batches, pad_ids

DIRECTIONS_COREF = ("pronoun->candidate", "candidate->pronoun")
DIRECTIONS_ADJACENT = ("w->w+1", "w+1->w")
DEFAULT_GROUP_BY = {"winogender": "occupation"}
# The built-in coreference set's categories, for sets written before meta["agreement_decides"] existed:
# pronoun gender, number or animacy alone picks the answer in every category but the Winograd pairs.
_AGREEMENT_BY_CATEGORY = {"two-candidate": True, "plural": True, "possessive": True, "winograd": False}


def example_group(example: Example, group_by: str | None = None) -> str:
    """The grouping key for cross-validation: meta[group_by] if given and present, else meta["group"], else
    meta["pair"], else the example id."""
    if group_by and example.meta.get(group_by) not in (None, ""):
        return f"{group_by}:{example.meta[group_by]}"
    return str(example.meta.get("group") or example.meta.get("pair") or example.id)


def dataset_of(example: Example) -> str:
    """The dataset an example came from, read from its id ("winogender:technician..." -> "winogender")."""
    return example.id.split(":", 1)[0] if ":" in example.id else ""


def resolve_group_by(examples: list[Example], group_by: str | None) -> str | None:
    """group_by as given, else DEFAULT_GROUP_BY of the examples' one dataset (None when mixed or unknown)."""
    if group_by:
        return group_by
    datasets = {dataset_of(e) for e in examples}
    return DEFAULT_GROUP_BY.get(datasets.pop()) if len(datasets) == 1 else None


def fold_groups(examples: list[Example], group_by: str | None = None) -> list[str]:
    """One fold group per example: connected components of shared `example_group` keys and meta["twin"]."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    keys = []
    for e in examples:
        own = [example_group(e, group_by)] + ([f"twin:{e.meta['twin']}"] if e.meta.get("twin") else [])
        for other in own[1:]:
            a, b = find(own[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
        keys.append(own[0])
    return [find(k) for k in keys]


def agreement_decides(example: Example) -> bool | None:
    """Whether pronoun agreement alone (gender, number, animacy) picks the answer; None when unknown."""
    value = example.meta.get("agreement_decides")
    if isinstance(value, bool):
        return value
    return _AGREEMENT_BY_CATEGORY.get(example.meta.get("category"))


# ---- Coreference: (pronoun, candidate) attention in both directions --------------------------------

@dataclass
class CandidateFeatures:
    """Per example, per candidate, the attention features; padded to the largest candidate count."""
    model: str
    ids: list[str]
    groups: list[str]
    features: np.ndarray        # [example, candidate, direction, layer, head]; direction 0 pronoun->candidate, 1 candidate->pronoun
    candidate_mask: np.ndarray  # [example, candidate] bool: the candidate exists
    target: np.ndarray          # [example] gold candidate index
    nearest: np.ndarray         # [example] candidate closest to the pronoun
    first: np.ndarray           # [example] candidate that comes first in the text
    skipped: list[str] = field(default_factory=list)
    candidate_words: list[tuple[str, ...]] = field(default_factory=list)  # word type of each candidate
    twins: list[str | None] = field(default_factory=list)                # meta["twin"] per example
    agreement: list[bool | None] = field(default_factory=list)           # agreement_decides per example

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_candidates(self) -> np.ndarray:
        return self.candidate_mask.sum(1)

    def subset(self, rows) -> "CandidateFeatures":
        """The examples at `rows` (an index array), same model and layout."""
        rows = np.asarray(rows)
        return CandidateFeatures(model=self.model, ids=[self.ids[i] for i in rows],
                                 groups=[self.groups[i] for i in rows], features=self.features[rows],
                                 candidate_mask=self.candidate_mask[rows], target=self.target[rows],
                                 nearest=self.nearest[rows], first=self.first[rows], skipped=list(self.skipped),
                                 candidate_words=[self.candidate_words[i] for i in rows] if self.candidate_words else [],
                                 twins=[self.twins[i] for i in rows] if self.twins else [],
                                 agreement=[self.agreement[i] for i in rows] if self.agreement else [])


def _source_columns(attention: torch.Tensor, from_index: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
    """Attention from every piece into the source's pieces, summed: [batch, head, pos]. Reads only the source columns."""
    batch, heads, n_pieces, _ = attention.shape
    index = from_index[:, None, None, :].expand(batch, heads, n_pieces, from_index.shape[1])
    return (attention.gather(3, index) * source_mask[:, None, None, :]).sum(-1)


def _coref_batch(loaded: LoadedModel, layouts: list[Layout], input_ids, renormalize: bool) -> np.ndarray:
    """Forward one batch; return [batch, candidate, direction, layer, head] pronoun<->candidate word-level attention."""
    ids, mask = pad_ids(input_ids, loaded.tokenizer.pad_token_id)
    width, n_units = ids.shape[1], max(len(l.units) for l in layouts)
    n_source = max(len(l.source) for l in layouts)
    from_index = torch.zeros(len(layouts), n_source, dtype=torch.long)   # the pronoun's pieces, padded
    source_mask = torch.zeros(len(layouts), n_source)                     # 1 for real entries of from_index
    to_units = torch.zeros(len(layouts), width, n_units)                  # 0/1 over each candidate's pieces
    words = torch.full((len(layouts), width), -1, dtype=torch.long)
    for row, layout in enumerate(layouts):
        from_index[row, :len(layout.source)] = torch.from_numpy(layout.source)
        source_mask[row, :len(layout.source)] = 1.0
        for c, pieces in enumerate(layout.units):
            to_units[row, pieces, c] = 1.0
        words[row, :layout.n_pieces] = torch.from_numpy(layout.words)
    from_weights = source_mask / source_mask.sum(1, keepdim=True)          # mean over the pronoun's pieces
    from_units = to_units / to_units.sum(1, keepdim=True).clamp_min(1)   # columns sum to 1: mean over pieces
    attentions = forward_attentions(loaded, ids, mask)
    device = attentions[0].device
    from_index, source_mask, from_weights, to_units, from_units, words = (
        t.to(device) for t in (from_index, source_mask, from_weights, to_units, from_units, words))
    per_layer = []
    for layer_att in attentions:
        layer_att = layer_att.float()
        if renormalize:
            layer_att = drop_special_columns(layer_att, words >= 0)
        forward = unit_attention(layer_att, from_index, from_weights, to_units)              # [batch, head, candidate]
        backward = torch.bmm(_source_columns(layer_att, from_index, source_mask), from_units)  # [batch, head, candidate]
        per_layer.append(torch.stack([forward, backward], 1))                                 # (B, 2, H, C)
    stacked = torch.stack(per_layer, 2)                                                       # (B, 2, L, H, C)
    return stacked.permute(0, 4, 1, 2, 3).cpu().numpy()                                       # [batch, candidate, direction, layer, head]


def candidate_features(loaded: LoadedModel, examples: list[Example], batch_tokens: int = BATCH_TOKENS,
                       renormalize: bool = False, progress: bool = False,
                       group_by: str | None = None) -> CandidateFeatures:
    """Pronoun<->candidate attention features for coreference examples that have candidate_spans.

    group_by: the meta key whose value is the cross-validation group (default: DEFAULT_GROUP_BY for the
    examples' dataset, else meta["group"]); twins always share a group (see `fold_groups`).
    """
    if not examples:
        raise ValueError("no examples to extract features from")
    if any(e.relation != "coreference" for e in examples):
        raise ValueError("candidate_features needs coreference examples only")
    skipped = [f"{e.id}: no candidate_spans" for e in examples if not e.candidate_spans]
    examples = [e for e in examples if e.candidate_spans]
    if not examples:
        raise ValueError("none of the examples has candidate_spans; the coreference probe needs them")
    # whole spans (the layout default is the coreference-mention rule, probing.defaults)
    encoded, layouts, align_skipped = encode_and_align(loaded, examples, mention="span")
    skipped += align_skipped
    usable = [i for i, layout in enumerate(layouts) if layout is not None]
    if not usable:
        raise ValueError(f"none of the {len(examples)} examples could be aligned: {skipped[:3]}")
    n_units = max(len(layouts[i].units) for i in usable)
    features = np.zeros((len(usable), n_units, 2, loaded.n_layers, loaded.n_heads), np.float32)
    bar = _progress(len(usable), progress, "coref features")
    for batch in length_batches([len(encoded[i].input_ids) for i in usable], batch_tokens):
        rows = [usable[i] for i in batch]
        values = _coref_batch(loaded, [layouts[r] for r in rows], [encoded[r].input_ids for r in rows], renormalize)
        for position, i in enumerate(batch):
            features[i, :values.shape[1]] = values[position]
        bar.update(len(batch))
    bar.close()
    kept = [layouts[i] for i in usable]
    groups = fold_groups(examples, resolve_group_by(examples, group_by))
    mask = np.zeros((len(usable), n_units), bool)
    for row, layout in enumerate(kept):
        mask[row, :len(layout.units)] = True
    features[~mask] = 0.0
    return CandidateFeatures(model=loaded.name, ids=[examples[i].id for i in usable],
                             groups=[groups[i] for i in usable], features=features,
                             candidate_mask=mask, target=np.array([l.target for l in kept]),
                             nearest=np.array([l.nearest for l in kept]), first=np.array([l.first for l in kept]),
                             skipped=skipped,
                             candidate_words=[tuple(word_type(examples[i].text[a:b]) for a, b in
                                                    examples[i].candidate_spans) for i in usable],
                             twins=[examples[i].meta.get("twin") for i in usable],
                             agreement=[agreement_decides(examples[i]) for i in usable])


# ---- Negation: attention within every adjacent word pair --------------------------------------------

@dataclass
class AdjacentPairFeatures:
    """One row per adjacent word pair (w, w+1) of every usable sentence."""
    model: str
    features: np.ndarray        # (P, 2, L, H); direction 0 w->w+1, 1 w+1->w
    label: np.ndarray           # [pair] bool: w is the negation cue of a negated sentence
    hard_negative: np.ndarray   # [pair] bool: w is the substitute adverb of a control sentence
    word: list[str]             # lowercased text of w
    position: np.ndarray        # [pair] index of w among the sentence's words
    n_words: np.ndarray         # [pair] words in the sentence
    example: np.ndarray         # [pair] row of the pair's sentence in `ids`
    ids: list[str]              # one per sentence
    groups: list[str]           # one per sentence: meta["pair"] (negated and control together), else the id
    roles: list[str]            # one per sentence: "negated", "control" or ""
    skipped: list[str] = field(default_factory=list)
    cue_forms: list[str] = field(default_factory=list)  # one per sentence: its pair's cue ("not", "n't", "never")

    def __len__(self) -> int:
        return len(self.label)

    @property
    def pair_groups(self) -> np.ndarray:
        """The group of every pair row (its sentence's group)."""
        return np.asarray(self.groups, dtype=object)[self.example]


def negation_group(example: Example) -> str:
    """Negation folds keep a negated sentence with its control: meta["pair"], else the group, else the id."""
    return str(example.meta.get("pair") or example.meta.get("group") or example.id)


def cue_form(text: str) -> str:
    """A cue's form: lowercased, curly apostrophe straightened, any contraction as "n't" ("didn't" -> "n't")."""
    form = text.strip().lower().replace("\u2019", "'")
    return "n't" if form.endswith("n't") else form


def sentence_cue_forms(examples: list[Example]) -> list[str]:
    """Each example's cue form; a control gets its negated partner's (same meta pair), else meta["cue"]."""
    by_pair = {negation_group(e): cue_form(e.source) for e in examples if e.role != "control"}
    return [by_pair.get(negation_group(e)) or cue_form(str(e.meta.get("cue", ""))) if e.role == "control"
            else cue_form(e.source) for e in examples]


def _word_texts(text: str, layout: Layout, offsets) -> list[str]:
    """The lowercased text of each tokenizer word, from its first piece's start to its last piece's end."""
    spans: dict[int, list[int]] = {}
    for (s, e), w in zip(offsets, layout.words):
        if w >= 0:
            spans.setdefault(int(w), [s, e])
            spans[int(w)][1] = max(spans[int(w)][1], e)
    return [text[spans[w][0]:spans[w][1]].lower() for w in range(len(spans))]


def _adjacent_batch(loaded: LoadedModel, layouts: list[Layout], input_ids, renormalize: bool) -> np.ndarray:
    """Forward one batch; return [batch, word_pair, direction, layer, head] attention within each adjacent word pair."""
    ids, mask = pad_ids(input_ids, loaded.tokenizer.pad_token_id)
    words = torch.full(ids.shape, -1, dtype=torch.long)
    for row, layout in enumerate(layouts):
        words[row, :layout.n_pieces] = torch.from_numpy(layout.words)
    attentions = forward_attentions(loaded, ids, mask)
    words = words.to(attentions[0].device)
    per_layer = []
    for layer_att in attentions:
        layer_att = layer_att.float()
        if renormalize:
            layer_att = drop_special_columns(layer_att, words >= 0)
        # the probe's pair features read the attending word as the mean over its pieces (Clark et al.), not the
        # library's default source-piece rule: said here so that the committed probe numbers stay as they are
        forward = adjacent_word_attention(layer_att, words, source_pieces="mean")                # [batch, head, word_pair]
        backward = adjacent_word_attention(layer_att, words, reverse=True, source_pieces="mean")  # [batch, head, word_pair]
        per_layer.append(torch.stack([forward, backward], 1))                 # (B, 2, H, W-1)
    return torch.stack(per_layer, 2).permute(0, 4, 1, 2, 3).cpu().numpy()     # [batch, word_pair, direction, layer, head]


def _cue_word(example: Example, layout: Layout) -> int:
    """The cue's last word; AlignmentError when the target is not the very next word."""
    cue = layout.source_words[-1]
    if layout.target_words[0] != cue + 1:
        raise AlignmentError("the target is not the word right after the cue")
    return cue


def adjacent_pair_features(loaded: LoadedModel, examples: list[Example], batch_tokens: int = BATCH_TOKENS,
                           renormalize: bool = False, progress: bool = False) -> AdjacentPairFeatures:
    """Attention features of every adjacent word pair of negation sentences (negated and control)."""
    if not examples:
        raise ValueError("no examples to extract features from")
    if any(e.relation != "negation" for e in examples):
        raise ValueError("adjacent_pair_features needs negation examples only")
    # whole spans (the layout default is the coreference-mention rule, probing.defaults)
    encoded, layouts, skipped = encode_and_align(loaded, examples, mention="span")
    cues: dict[int, int] = {}
    for i, (example, layout) in enumerate(zip(examples, layouts)):
        if layout is None:
            continue
        try:
            cues[i] = _cue_word(example, layout)
        except AlignmentError as err:
            layouts[i] = None
            skipped.append(f"{example.id}: {err}")
    usable = [i for i in range(len(examples)) if layouts[i] is not None and int(layouts[i].words.max()) >= 1]
    skipped += [f"{examples[i].id}: fewer than two words" for i in range(len(examples))
                if layouts[i] is not None and i not in usable]
    if not usable:
        raise ValueError(f"none of the {len(examples)} examples could be aligned: {skipped[:3]}")
    per_example: dict[int, np.ndarray] = {}
    bar = _progress(len(usable), progress, "pair features")
    for batch in length_batches([len(encoded[i].input_ids) for i in usable], batch_tokens):
        rows = [usable[i] for i in batch]
        values = _adjacent_batch(loaded, [layouts[r] for r in rows], [encoded[r].input_ids for r in rows], renormalize)
        for position, r in enumerate(rows):
            per_example[r] = values[position, :int(layouts[r].words.max())]
        bar.update(len(batch))
    bar.close()
    return _assemble_pairs(loaded.name, examples, usable, layouts, encoded, cues, per_example, skipped)


def _assemble_pairs(model, examples, usable, layouts, encoded, cues, per_example, skipped) -> AdjacentPairFeatures:
    """Flatten per-sentence pair features into labelled pair rows, dropping pairs inside a multi-word cue."""
    chunks, label, hard, word, position, n_words, sentence = [], [], [], [], [], [], []
    forms = sentence_cue_forms(examples)
    for row, i in enumerate(usable):
        example, layout = examples[i], layouts[i]
        texts = _word_texts(example.text, layout, encoded[i].offsets)
        inside_cue = set(layout.source_words[:-1])
        keep = [w for w in range(len(texts) - 1) if w not in inside_cue]
        chunks.append(per_example[i][keep])
        for w in keep:
            at_cue = w == cues[i]
            label.append(at_cue and example.role != "control")
            hard.append(at_cue and example.role == "control")
            word.append(texts[w])
            position.append(w)
            n_words.append(len(texts))
            sentence.append(row)
    return AdjacentPairFeatures(
        model=model, features=np.concatenate(chunks).astype(np.float32), label=np.array(label),
        hard_negative=np.array(hard), word=word, position=np.array(position), n_words=np.array(n_words),
        example=np.array(sentence), ids=[examples[i].id for i in usable],
        groups=[negation_group(examples[i]) for i in usable], roles=[examples[i].role for i in usable],
        skipped=skipped, cue_forms=[forms[i] for i in usable])


# ---- Hidden states of the word after the source -----------------------------------------------------

@dataclass
class WordStates:
    """Hidden state of the word after each example's source, at every layer (0 = embeddings)."""
    model: str
    ids: list[str]
    states: np.ndarray          # [example, layer+1, d_model]
    kept: list[int]             # index of each row's example in the input list
    skipped: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)   # lowercased text of the probed word, one per row


def _hidden_states_by_layer(loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Per-layer hidden states (embeddings first), a tuple of [batch, pos, band] tensors."""
    device = next(loaded.model.parameters()).device
    with torch.inference_mode():
        out = loaded.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                           output_hidden_states=True)
    return out.hidden_states


def word_hidden_states(loaded: LoadedModel, examples: list[Example], batch_tokens: int = BATCH_TOKENS,
                       progress: bool = False) -> WordStates:
    """The word right after the source span, mean over its pieces, at every layer."""
    if not examples:
        raise ValueError("no examples to extract hidden states from")
    # whole spans (the layout default is the coreference-mention rule, probing.defaults)
    encoded, layouts, skipped = encode_and_align(loaded, examples, mention="span")
    pieces: dict[int, np.ndarray] = {}
    texts: dict[int, str] = {}
    for i, layout in enumerate(layouts):
        if layout is None:
            continue
        after = layout.source_words[-1] + 1
        if after > int(layout.words.max()):
            skipped.append(f"{examples[i].id}: no word after the source")
            continue
        pieces[i] = np.flatnonzero(layout.words == after)
        start, end = encoded[i].offsets[pieces[i][0]][0], encoded[i].offsets[pieces[i][-1]][1]
        texts[i] = examples[i].text[start:end].lower()
    usable = sorted(pieces)
    if not usable:
        raise ValueError(f"none of the {len(examples)} examples has a usable word after the source: {skipped[:3]}")
    states = None
    bar = _progress(len(usable), progress, "hidden states")
    for batch in length_batches([len(encoded[i].input_ids) for i in usable], batch_tokens):
        rows = [usable[i] for i in batch]
        ids, mask = pad_ids([encoded[r].input_ids for r in rows], loaded.tokenizer.pad_token_id)
        weights = torch.zeros(ids.shape, dtype=torch.float32)
        for position, r in enumerate(rows):
            weights[position, pieces[r]] = 1.0 / len(pieces[r])
        hidden = torch.stack([h.float() for h in _hidden_states_by_layer(loaded, ids, mask)], 1)   # [batch, layer+1, pos, d_model]
        pooled = torch.einsum("bltd,bt->bld", hidden, weights.to(hidden.device)).cpu().numpy()
        if states is None:
            states = np.zeros((len(usable),) + pooled.shape[1:], np.float32)
        states[batch] = pooled
        bar.update(len(batch))
    bar.close()
    return WordStates(model=loaded.name, ids=[examples[i].id for i in usable], states=states, kept=usable,
                      skipped=skipped, words=[texts[i] for i in usable])


def _progress(total: int, enabled: bool, what: str):
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="ex", leave=False, desc=what)
