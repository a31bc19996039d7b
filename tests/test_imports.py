"""The package's shape: no import cycle (imports inside functions count too), no import from a lower floor to a
higher one, every module importable on its own, a light `import probing` whose `__all__` is the public API, and a
test file for every library module."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("probing", "analysis")

# Library modules covered by tests in files of other names, each with the reason.
NO_TEST_FILE_OF_ITS_OWN = {
    "probing/__init__.py": "the API map: tests/test_imports.py",
    "probing/sites.py": "the site map and `intervene`, exercised through every function of tests/test_hooks.py, "
                        "which also scans the package for interception outside it",
    "probing/naive.py": "the independent per-sentence reference the scorer is checked against "
                        "(test_heads.py, test_features.py)",
    "probing/report/ablation.py": "written and read back by the command tests in test_ablation.py",
    "probing/report/patching.py": "written and read back by test_patching.py::test_cli_end_to_end",
}


def module_files(packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (the bertviz assets in static/ are no code)."""
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "static" in relative.parts or "__pycache__" in relative.parts:
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file names (inside functions too),
    relative imports resolved; `from a import b` names both `a` and `a.b` (b may be a submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of `modules` it imports (a module importing itself does not count)."""
    return {name: {m for m in imported_names(name, path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


# ---- the cycle check ------------------------------------------------------------------------------------

def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import thing\n")
    (tmp_path / "pkg" / "b.py").write_text("def thing():\n    from . import c\n")
    (tmp_path / "pkg" / "c.py").write_text("import os\n\ndef late():\n    from .a import x\n")
    modules = {"pkg": tmp_path / "pkg" / "__init__.py",
               **{f"pkg.{m}": tmp_path / "pkg" / f"{m}.py" for m in "abc"}}
    graph = import_graph(modules)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg", "pkg.c"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (tmp_path / "pkg" / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(modules)) is None


def test_no_import_cycle_in_probing_or_analysis():
    graph = import_graph(module_files())
    assert "probing.heads" in graph and "probing.parallel" in graph["probing.heads"]   # the graph sees inside functions
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ---- floors: imports run down (or sideways), never up ---------------------------------------------------

# The house, lowest floor first. A module may import from its own floor or any floor below, never from above.
# Every module must be placed (a new module fails `test_every_module_has_a_floor` until it is). Entries are
# dotted names; an entry covers its submodules ("probing.report" covers probing.report.heads).
FLOORS = (
    ("ground: defaults, word lists, files, statistics, alignment, the example format",
     ("probing.defaults", "probing.lexicon", "probing.outputs", "probing.stats", "probing.alignment",
      "probing.parallel", "probing.install_models", "probing.examples")),
    ("engine: loading models, running them, reading their attention",
     ("probing.models", "probing.sites", "probing.attention", "probing.hooks", "probing.runner")),
    ("measures: scores, features, probes, patching, ablation",
     ("probing.controls", "probing.heads", "probing.naive", "probing.features", "probing.probes",
      "probing.patching", "probing.ablation", "probing.confirm")),
    ("presentation: reports, views, the demo's plain functions",
     ("probing.report", "probing.views", "probing.demo")),
    ("entry points: the commands, the app, the package's API map",
     ("analysis", "app", "probing")),
)


def floor_of(module: str) -> int | None:
    """The floor of a module: that of the longest FLOORS entry that is the module or a package above it."""
    best, floor = -1, None
    for number, (_, entries) in enumerate(FLOORS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best:
                best, floor = len(entry), number
    return floor


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` a file imports, resolved exactly: `from probing import stats` is probing.stats
    (a submodule), not the package `probing` (whose __init__ is the API map, top floor)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def with_app(modules: dict[str, Path]) -> dict[str, Path]:
    return {**modules, "app": ROOT / "app.py"}


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """Every import from a lower floor to a higher one, as "a (floor) -> b (floor)"."""
    found = []
    for name, path in sorted(modules.items()):
        for target in sorted(imported_modules(name, path, modules)):
            if floor_of(target) > floor_of(name):
                found.append(f"{name} ({FLOORS[floor_of(name)][0].split(':')[0]}) -> "
                             f"{target} ({FLOORS[floor_of(target)][0].split(':')[0]})")
    return found


def test_the_floor_check_finds_an_import_that_runs_up(tmp_path):
    (tmp_path / "probing").mkdir()
    (tmp_path / "probing" / "__init__.py").write_text("")
    (tmp_path / "probing" / "stats.py").write_text("def f():\n    from probing.heads import score_heads\n")
    (tmp_path / "probing" / "heads.py").write_text("from probing import stats\n")
    modules = {"probing": tmp_path / "probing" / "__init__.py",
               **{f"probing.{m}": tmp_path / "probing" / f"{m}.py" for m in ("stats", "heads")}}
    assert imported_modules("probing.heads", modules["probing.heads"], modules) == {"probing.stats"}
    assert upward_imports(modules) == ["probing.stats (ground) -> probing.heads (measures)"]
    (tmp_path / "probing" / "stats.py").write_text("import math\n")
    assert upward_imports(modules) == []


def test_every_module_has_a_floor():
    unplaced = [m for m in with_app(module_files()) if floor_of(m) is None]
    assert not unplaced, f"modules on no floor (add them to FLOORS): {unplaced}"


def test_no_import_runs_from_a_lower_floor_to_a_higher_one():
    """File publishing (atomic writes) is ground floor (probing/outputs.py), so examples/format.py may use it."""
    upward = upward_imports(with_app(module_files()))
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


# ---- importable on its own, and a light `import probing` ------------------------------------------------

# Run in a child interpreter: import the third-party libraries the package uses (numpy, torch, transformers, ...)
# once, then fork a fresh child per module of ours, so each of our modules is imported with none of the others
# loaded before it, without paying torch's import 40 times.
ALONE = r"""
import importlib, json, os, sys, traceback
modules, third_party = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name, attribute in third_party:
    try:
        # `from transformers import AutoModel` loads a submodule lazily, on first access: access it here, once,
        # so that each fork below pays for our module only, not for the same third-party imports again
        loaded = importlib.import_module(name)
        if attribute:
            getattr(loaded, attribute)
    except Exception:
        pass                      # optional (accelerate, gguf): the module that needs it says so when it runs
assert not any(m == "probing" or m.startswith(("probing.", "analysis")) for m in sys.modules)
failed = {}
for module in modules:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        failed[module] = os.waitstatus_to_exitcode(status)
print(json.dumps(failed))
"""


def third_party_imports(modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(module, name or None) for every non-standard-library import of the modules: `import a.b` gives
    ("a.b", None), `from a import b` gives ("a", "b"); sorted."""
    found = set()
    for path in modules.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update((alias.name, None) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                found.update((node.module, alias.name) for alias in node.names)
    outside = lambda name: (name.split(".")[0] not in sys.stdlib_module_names       # noqa: E731
                            and name.split(".")[0] not in PACKAGES and name != "__future__")
    return sorted((pair for pair in found if outside(pair[0])), key=lambda pair: (pair[0], pair[1] or ""))


def test_third_party_imports_name_each_module_and_each_name_taken_from_it(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\nimport numpy.linalg\nfrom transformers import AutoModel, AutoTokenizer\n"
                    "from . import sibling\nfrom probing import stats\n\ndef late():\n    import sklearn\n")
    assert third_party_imports({"pkg.m": path}) == [("numpy.linalg", None), ("sklearn", None),
                                                    ("transformers", "AutoModel"), ("transformers", "AutoTokenizer")]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_library_module_imports_on_its_own_in_a_fresh_interpreter():
    """Each module of probing/ imported first, in a process that has imported none of our modules: an import
    that only works after another module of ours was imported first fails here."""
    library = module_files(("probing",))
    modules = [m for m in library if m != "probing"]
    result = subprocess.run([sys.executable, "-c", ALONE, json.dumps(modules), json.dumps(third_party_imports(library))],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads(result.stdout.strip().splitlines()[-1])
    assert failed == {}, f"modules that do not import on their own: {failed}\n{result.stderr[-3000:]}"


def _fresh(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_import_probing_is_light_and_lists_its_api():
    seen = _fresh("import json, sys, probing; print(json.dumps({'heavy': sorted(m for m in ('torch', "
                  "'transformers', 'sklearn', 'pandas') if m in sys.modules), 'all': probing.__all__, "
                  "'dir': dir(probing)}))")
    assert seen["heavy"] == []
    assert len(seen["all"]) >= 40 and set(seen["all"]) <= set(seen["dir"])
    assert {"load_model", "score_heads", "coref_probe", "patch_heads", "ablate", "head_view", "Estimate"} \
        <= set(seen["all"])


def test_every_name_in_all_resolves_to_what_its_module_defines():
    import importlib
    import probing
    for name in probing.__all__:
        target = probing._EXPORTS[name]
        module, attribute = target if isinstance(target, tuple) else (target, name)
        assert getattr(probing, name) is getattr(importlib.import_module(module), attribute), name
        assert f"`{name}`" in probing.__doc__, f"{name} is exported but the docstring's map does not name it"
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        probing.no_such_thing


# ---- tests mirror the library ---------------------------------------------------------------------------

def expected_test_file(path: Path) -> str:
    """probing/heads.py -> test_heads.py, probing/report/heads.py -> test_report_heads.py,
    probing/demo/backend.py -> test_demo_backend.py, probing/examples/__init__.py -> test_examples.py."""
    parts = list(path.relative_to(ROOT / "probing").with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "test_" + "_".join(parts or ["probing"]) + ".py"


def defines_something(path: Path) -> bool:
    """A package `__init__` that is only a docstring has nothing to test."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def test_every_library_module_has_a_test_file_named_after_it():
    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    modules = [p for p in module_files(("probing",)).values() if defines_something(p)]
    missing = [f"{p.relative_to(ROOT).as_posix()} (expected tests/{expected_test_file(p)})" for p in modules
               if expected_test_file(p) not in tests and p.relative_to(ROOT).as_posix() not in NO_TEST_FILE_OF_ITS_OWN]
    assert not missing, "library modules without a test file: " + ", ".join(missing)
    stale = [m for m in NO_TEST_FILE_OF_ITS_OWN
             if not (ROOT / m).exists() or expected_test_file(ROOT / m) in tests]
    assert not stale, f"exemptions no longer needed: {stale}"
