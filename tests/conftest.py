"""Shared fixtures: the real default model, and a tiny random causal model built on disk (no hub).

One torch thread per test process (OMP_NUM_THREADS=1 unless set): the tests' forward passes are a few short
sentences, where a second thread costs more in hand-offs than it saves, and on a shared or loaded machine its
spin-waiting multiplies the CPU a run takes (measured: 4 test files, 65 s CPU with 2 threads, 14 s with 1).
Set before any test module imports torch; the CLI and app subprocesses that tests start inherit it. Speed is
measured by `analysis bench`, not here.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from probing.examples import Example, find_span
from probing.examples.loaders import DATA_ROOT_ENV, default_data_root

# Tests that read the real datasets (../shared/data, or $PROBING_DATA_ROOT) skip in a bare clone, and say why.
needs_datasets = pytest.mark.skipif(
    not default_data_root().is_dir(),
    reason=f"the datasets are not at {default_data_root()} (a bare clone; set {DATA_ROOT_ENV} to run these)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (`item.report_call`), so that a fixture's teardown can tell
    whether its test failed (the browser tests then print the demo server's log)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def minilm():
    from probing.models import load_model
    return load_model("minilm")


@pytest.fixture
def default_allow_list(monkeypatch):
    """The demo's allow-list as a public demo ships it: no overrides from the environment."""
    from probing.demo import guard
    monkeypatch.delenv(guard.ALLOW_ANY_ENV, raising=False)
    monkeypatch.delenv(guard.ALLOWED_ENV, raising=False)


@pytest.fixture(scope="session")
def tiny_causal_path(tmp_path_factory):
    """A 2-layer x 2-head GPT-2 with random weights and MiniLM's tokenizer, saved to a folder."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
    from probing.models import resolve_path
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("minilm"))
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def negation(text: str, cue: str, target: str, **kw) -> Example:
    """A negation example; cue "n't" is found inside its contraction."""
    source = (text.index("n't"), text.index("n't") + 3) if cue == "n't" else find_span(text, cue)
    return Example(text=text, relation="negation", source_span=source, target_span=find_span(text, target),
                   id=kw.pop("id", text[:20]), **kw)


def coreference(text: str, pronoun: str, antecedent: str, candidates=None, **kw) -> Example:
    spans = tuple(find_span(text, c) for c in candidates) if candidates else None
    return Example(text=text, relation="coreference", source_span=find_span(text, pronoun),
                   target_span=find_span(text, antecedent), candidate_spans=spans,
                   id=kw.pop("id", text[:20]), **kw)


NEGATION_EXAMPLES = [
    negation("The lawyer did not sign the contract.", "not", "sign", id="n1", meta={"pair": "p1", "role": "negated"}),
    negation("The lawyer did really sign the contract.", "really", "sign", id="n1c",
             meta={"pair": "p1", "role": "control"}),
    negation("The dogs weren't barking at night.", "n't", "barking", id="n2"),
    negation("Mary could not understand the unbelievably complicated instructions.", "not", "understand", id="n3",
             meta={"pair": "p3", "role": "negated"}),
    negation("Mary could also understand the unbelievably complicated instructions.", "also", "understand",
             id="n3c", meta={"pair": "p3", "role": "control"}),
]
COREF_EXAMPLES = [
    coreference("The doctor called the nurse because she was late.", "she", "nurse", ["doctor", "nurse"], id="c1"),
    coreference("The trophy did not fit in the suitcase because it was too big.", "it", "trophy",
                ["trophy", "suitcase"], id="c2"),
    coreference("John thanked his sister because she had helped him with the move.", "him", "John", id="c3"),
]
