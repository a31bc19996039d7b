"""The library installs: `pip install .` and `pip install -e .` from a copy of the sources, offline (no index,
no build isolation, no dependencies: those come from the running environment), then `import probing` and the
`probing-analysis` command work from another folder."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_PIP = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
# Run from an unrelated folder with nothing of the checkout on the path: only the installed copy can answer.
CHECK = """
import json, sys
import probing, analysis
from probing.examples import load_examples
from probing.views import _libraries_js
examples = load_examples("builtin-negation")
print(json.dumps({"probing": probing.__file__, "analysis": analysis.__file__, "n_examples": len(examples),
                  "libraries": len(_libraries_js())}))
"""


def copy_sources(tmp_path: Path) -> Path:
    """What a clone holds for building: the two packages, pyproject.toml and the README; no build leftovers."""
    source = tmp_path / "source"
    for package in ("probing", "analysis"):
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
    assert found == {"probing": str(site / "probing" / "__init__.py"), "analysis": str(site / "analysis" / "__init__.py"),
                     "n_examples": 372, "libraries": 3}
    top_level = {p.name for p in site.iterdir()}
    assert {"probing", "analysis", "bin"} <= top_level
    assert not top_level & {"reports", "tests", "notebooks", "app.py", "data", "shared"}
    shipped = {p.suffix for p in site.rglob("*") if p.is_file()}
    assert not shipped & {".tsv", ".png", ".csv", ".ipynb"}, "datasets or reports ended up in the wheel"
    assert (site / "probing" / "demo" / "about.md").is_file() and (site / "probing" / "static" / "VERSIONS.md").is_file()
    help_text = run([str(site / "bin" / "probing-analysis"), "report", "--help"], elsewhere, PYTHONPATH=str(site))
    assert "--commit-reports" in help_text


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
    assert Path(installed["probing"]).is_relative_to(venv_site) and installed["n_examples"] == 372
    assert "heads" in run([str(venv / "bin" / "probing-analysis"), "--help"], elsewhere)

    run(pip + ["--editable", str(source)], tmp_path)
    (source / "probing" / "added_after_install.py").write_text("ANSWER = 42\n")
    editable = check_import(python, elsewhere)
    assert editable["probing"] == str(source / "probing" / "__init__.py")
    assert run([python, "-c", "from probing.added_after_install import ANSWER; print(ANSWER)"], elsewhere).strip() == "42"
