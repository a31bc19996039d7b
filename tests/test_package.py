"""The library installs: `pip install .` and `pip install -e .` from a copy of the sources, offline (no index,
no build isolation, no dependencies: those come from the running environment), then `import probing` works from
another folder; the wheel claims no generic top-level name (`analysis` stays in the repository), an installed
copy asks for the data root instead of guessing one, and every dependency's range is the tested release."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_PIP = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
# Run from an unrelated folder with nothing of the checkout on the path: only the installed copy can answer.
CHECK = """
import json, sys
import probing
from probing.examples import load_examples
from probing.examples.format import ExampleError
from probing.views import _libraries_js
examples = load_examples("builtin-negation")
try:                      # a real dataset with no data root given: the installed copy must ask for one
    load_examples("gap-dev")
    data_root = "no error"
except ExampleError as err:
    data_root = str(err)
print(json.dumps({"probing": probing.__file__, "n_examples": len(examples), "libraries": len(_libraries_js()),
                  "data_root": data_root}))
"""


def requirement_pins() -> dict[str, Version]:
    """requirements.txt's exact pins for this platform (a pin's marker, e.g. torch's `+cpu` build off macOS, is
    evaluated), by normalised name: the versions the tests run on."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: requirements.txt pins exact versions"
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def test_every_dependency_range_is_the_tested_minor_release():
    """`pip install .` must resolve to what the tests ran on: each range holds requirements.txt's pin and stops
    before the next minor release (torch<3 once pulled torch 2.14 with 3 GB of CUDA libraries)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = requirement_pins()
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    assert {canonicalize_name(r.name) for r in declared} >= {"torch", "transformers", "gradio"}
    for requirement in declared:
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not pinned in requirements.txt, so no test ran on it"
        assert requirement.specifier.contains(pin), f"{requirement} excludes the tested {pin}"
        next_minor = Version(f"{pin.major}.{pin.minor + 1}")
        assert not requirement.specifier.contains(next_minor), f"{requirement} allows the untested {next_minor}"
    assert "plotly" not in {canonicalize_name(r.name) for r in declared}, "the demo does not use plotly"
    assert "scripts" not in project, "a console script would need the repository's `analysis` package installed"


def test_library_in_a_checkout_defaults_to_the_shared_data_folder(monkeypatch):
    from probing.examples.loaders import DATA_ROOT_ENV, default_data_root
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert default_data_root() == ROOT.parent / "shared" / "data"
    monkeypatch.setenv(DATA_ROOT_ENV, "/somewhere/else")
    assert default_data_root() == Path("/somewhere/else")


def copy_sources(tmp_path: Path) -> Path:
    """What a clone holds for building: the library, pyproject.toml and the README; no build leftovers."""
    source = tmp_path / "source"
    for package in ("probing",):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    return source


def run(command: list[str], cwd: Path, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} | env
    done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def check_import(python: str, elsewhere: Path, **env) -> dict:
    import json
    return json.loads(run([python, "-c", CHECK], elsewhere, **env).strip().splitlines()[-1])


@pytest.mark.slow
def test_pip_install_target_ships_the_library_and_its_data_but_no_datasets_or_reports(tmp_path):
    source, site, elsewhere = copy_sources(tmp_path), tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run([sys.executable, "-m", "pip", "install", *OFFLINE_PIP, "--target", str(site), str(source)], tmp_path)

    found = check_import(sys.executable, elsewhere, PYTHONPATH=str(site))
    assert found["probing"] == str(site / "probing" / "__init__.py")
    assert (found["n_examples"], found["libraries"]) == (1515, 3)
    assert "PROBING_DATA_ROOT" in found["data_root"] and "data_root=" in found["data_root"]
    assert "site-packages" not in found["data_root"] and str(site) not in found["data_root"]
    # Given a data root, the installed copy uses it (an empty folder: the error names that folder).
    empty = tmp_path / "my-data"
    empty.mkdir()
    given = check_import(sys.executable, elsewhere, PYTHONPATH=str(site), PROBING_DATA_ROOT=str(empty))
    assert str(empty) in given["data_root"]
    top_level = {p.name for p in site.iterdir()}
    assert "probing" in top_level
    assert not top_level & {"analysis", "bin", "reports", "tests", "notebooks", "app.py", "data", "shared"}
    shipped = {p.suffix for p in site.rglob("*") if p.is_file()}
    assert not shipped & {".tsv", ".png", ".csv", ".ipynb"}, "datasets or reports ended up in the wheel"
    assert (site / "probing" / "demo" / "about.md").is_file() and (site / "probing" / "static" / "VERSIONS.md").is_file()


@pytest.mark.slow
def test_fresh_venv_takes_pip_install_and_pip_install_editable(tmp_path):
    source, elsewhere = copy_sources(tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    # The dependencies (torch & co.) and setuptools come from this environment, by a .pth file: no download.
    venv_site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (venv_site / "outer-environment.pth").write_text("\n".join(sorted(here)) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", *OFFLINE_PIP]

    run(pip + [str(source)], tmp_path)
    installed = check_import(python, elsewhere)
    assert Path(installed["probing"]).is_relative_to(venv_site) and installed["n_examples"] == 1515
    assert "PROBING_DATA_ROOT" in installed["data_root"]
    assert not (venv / "bin" / "probing-analysis").exists() and not (venv_site / "analysis").exists()

    run(pip + ["--editable", str(source)], tmp_path)
    (source / "probing" / "added_after_install.py").write_text("ANSWER = 42\n")
    editable = check_import(python, elsewhere)
    assert editable["probing"] == str(source / "probing" / "__init__.py")
    # An editable install is a checkout: its default data root is ../shared/data beside it, not an error.
    assert str(source.parent / "shared" / "data") in editable["data_root"]
    assert run([python, "-c", "from probing.added_after_install import ANSWER; print(ANSWER)"], elsewhere).strip() == "42"
