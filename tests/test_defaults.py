"""`probing.defaults`: one place for every default and shared constant. Every signature in probing/ that takes a
shared parameter (n_boot, n_perm, batch_tokens, seed, source_pieces, mention, alpha) defaults to its value, and
the library's enumerations are the very tuples the command line checks (tests/test_cli.py checks the parsers)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_import_nothing():
    """`--help` and the parse-time checks read probing.defaults: it must not pull in numpy or torch."""
    shown = subprocess.run([sys.executable, "-c", "import sys, probing.defaults; "
                            "print(sorted(m for m in ('numpy', 'torch', 'pandas') if m in sys.modules))"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == "[]", shown.stderr[-800:]


def test_the_library_uses_the_choices_the_parsers_check():
    """The command line checks choices against probing.defaults; the library's own tables are those very tuples."""
    import probing.alignment
    import probing.hooks
    import probing.models
    from probing import defaults
    from probing.patching import KINDS
    from probing.patching.attribution import METHODS
    from probing.patching.readouts import READOUTS
    from analysis.patch import READOUT_CHOICES
    assert (KINDS, METHODS) == (defaults.PATCH_KINDS, defaults.PATCH_METHODS)
    # The two pooled readouts (sentence, probe) extend defaults.READOUTS until the next full regeneration moves
    # them there (editing probing.defaults re-keys every committed report); the parser checks the same tuple.
    assert READOUTS[:len(defaults.READOUTS)] == defaults.READOUTS and READOUTS == READOUT_CHOICES
    assert probing.hooks.MODES is defaults.ABLATION_MODES and probing.models.DTYPES is defaults.DTYPES
    assert probing.alignment.SOURCE_PIECE_RULES is defaults.SOURCE_PIECE_RULES
    assert probing.alignment.MENTION_RULES is defaults.MENTION_RULES


# parameter name -> its one default in probing.defaults
SHARED_DEFAULTS = {"n_boot": "N_BOOT", "n_perm": "N_PERM", "batch_tokens": "BATCH_TOKENS", "seed": "SEED",
                   "source_pieces": "SOURCE_PIECES", "mention": "MENTION", "alpha": "ALPHA"}


def _library_functions():
    """Every function and method defined in probing/ (modules imported by name from their files)."""
    import importlib
    import inspect
    for path in sorted((ROOT / "probing").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name in ("probing.install_models",) or "static" in path.parts:
            continue
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module):
            if inspect.isclass(value) and value.__module__ == name:
                yield from ((f"{name}.{value.__name__}.{m}", f) for m, f in vars(value).items() if inspect.isfunction(f))
            elif inspect.isfunction(value) and value.__module__ == name:
                yield f"{name}.{value.__name__}", value


def test_every_library_default_comes_from_probing_defaults():
    """One place for every default: a signature that says `n_boot=`, `source_pieces=`, ... without taking the value
    of probing.defaults (e.g. a "mean" where the default rule is "last") fails here."""
    import inspect
    from probing import defaults
    checked, wrong = 0, []
    for qualified, function in _library_functions():
        for name, parameter in inspect.signature(function).parameters.items():
            if name in SHARED_DEFAULTS and parameter.default is not inspect.Parameter.empty \
                    and parameter.default is not None:
                checked += 1
                expected = getattr(defaults, SHARED_DEFAULTS[name])
                if parameter.default != expected:
                    wrong.append(f"{qualified}({name}={parameter.default!r}), not {expected!r}")
    assert checked > 50, checked          # the walk does see the library's signatures
    assert not wrong, "defaults that differ from probing.defaults:\n" + "\n".join(wrong)
