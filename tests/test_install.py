"""The install never pulls CUDA: pip resolves the README's set-up (`--dry-run --report`, nothing installed)
and no `nvidia-*`, `cuda-*` or `triton` package may be in what it would install.

"The public index configuration the README describes" is PyPI plus PyTorch's CPU index. Each test passes the
CPU index itself and keeps the machine's own pip configuration (a machine without internet may name a local
copy of the CPU wheel there, as pip's `find-links`). `--retries 1`: where the CPU index's host cannot be
reached, pip asks it for every package and the default 5 retries cost ~8 s each (over 15 minutes in all);
none at all would let one dropped connection to a reachable CPU index send pip to PyPI's CUDA build.
A resolution that cannot reach an index is skipped and says why; a resolution that finds CUDA fails.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow       # each resolution reads ~120 packages' metadata: tens of seconds

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_NAME = re.compile(r"^(nvidia[-_.].*|cuda[-_.].*|triton)$")
OFFLINE_SIGNS = ("No matching distribution found", "Could not find a version", "connection",
                 "Name or service not known", "Temporary failure in name resolution")


def normalized(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def cuda_packages(installs: dict[str, str]) -> list[str]:
    """The names among `installs` (name -> version) that are CUDA runtime packages or triton."""
    return sorted(name for name in installs if CUDA_NAME.match(name))


def resolve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`pip install --dry-run --ignore-installed --report -` with `args`; the report (JSON) is on stdout."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--retries", "1", "--report", "-", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def installs_of(done: subprocess.CompletedProcess, what: str) -> dict[str, str]:
    """name -> version of what pip would install; skip (saying why) when an index could not be reached."""
    if done.returncode != 0:
        if any(sign in done.stderr for sign in OFFLINE_SIGNS):
            pytest.skip(f"pip could not resolve {what} here (an index or the CPU wheel is out of reach): "
                        f"{done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip failed to resolve {what}:\n{done.stderr}")
    report = json.loads(done.stdout)
    return {normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}


def test_cuda_names_are_recognised():
    names = {"nvidia-cublas": "13", "cuda-toolkit": "13", "triton": "3", "cuda-bindings": "13", "numpy": "2",
             "tritonclient": "1", "torch": "2.13.0"}
    assert cuda_packages(names) == ["cuda-bindings", "cuda-toolkit", "nvidia-cublas", "triton"]


def readme_torch_step() -> list[str]:
    """The `pip install` arguments of the torch step in the README's first set-up command, as written there."""
    setup = (ROOT / "README.md").read_text(encoding="utf-8").split("## Set up", 1)[1]
    command = setup.split("```bash", 1)[1].split("```", 1)[0]
    steps = [shlex.split(step) for step in command.split("&&")]
    torch_steps = [step[2:] for step in steps if step[:2] == ["pip", "install"] and any("torch" in a for a in step)]
    assert len(torch_steps) == 1, f"the README's first command has no single torch step: {command}"
    return torch_steps[0]


def test_the_torch_step_installs_the_cpu_build():
    """The README's first step, as the README writes it: torch alone from PyTorch's CPU index."""
    step = readme_torch_step()
    assert CPU_INDEX in step and "--index-url" in step
    installs = installs_of(resolve(*step), "torch")
    assert list(installs) == ["torch"]
    if sys.platform != "darwin":
        assert installs["torch"] == "2.13.0+cpu"


def test_the_space_installs_the_cpu_build_first():
    """A Space installs pre-requirements.txt before requirements.txt: torch's CPU build from the CPU index."""
    text = (ROOT / "pre-requirements.txt").read_text(encoding="utf-8")
    assert f"--index-url {CPU_INDEX}" in text
    installs = installs_of(resolve("--no-deps", "-r", "pre-requirements.txt"), "pre-requirements.txt")
    if sys.platform != "darwin":
        assert installs == {"torch": "2.13.0+cpu"}


def test_requirements_resolve_without_cuda():
    requirements = "requirements-dev.txt"                # requirements.txt and the test tools
    installs = installs_of(resolve("--extra-index-url", CPU_INDEX, "-r", requirements), requirements)
    assert installs.get("torch", "").startswith("2.13.0")
    assert cuda_packages(installs) == [], f"{requirements} would install CUDA: {cuda_packages(installs)}"


def test_the_package_resolves_without_cuda():
    """`pip install .` with the CPU index the README names: pip ranks 2.13.0+cpu above PyPI's 2.13.0."""
    installs = installs_of(resolve("--extra-index-url", CPU_INDEX, "--no-build-isolation", ".[demo]"),
                           "the package (pyproject.toml)")
    if sys.platform != "darwin":
        assert installs["torch"].endswith("+cpu")
    assert cuda_packages(installs) == [], f"pip install . would install CUDA: {cuda_packages(installs)}"


def test_requirements_without_the_cpu_index_refuse_rather_than_pull_cuda():
    """PyPI alone, no pip configuration at all: requirements.txt stops at torch instead of taking CUDA."""
    sources = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")
    env = {key: value for key, value in os.environ.items() if key not in sources}   # PIP_CERT etc. stay
    env["PIP_CONFIG_FILE"] = os.devnull                  # pip then reads no configuration file
    done = resolve("-r", "requirements.txt", env=env)
    if done.returncode != 0 and "from versions: none" in done.stderr:
        pytest.skip("PyPI could not be reached (pip saw no torch at all): " + done.stderr.strip().splitlines()[-1])
    if done.returncode != 0 and "torch==2.13.0+cpu" in done.stderr:
        return                                           # refused, naming the CPU build it needs
    installs = installs_of(done, "requirements.txt from PyPI alone")
    assert cuda_packages(installs) == [], f"requirements.txt takes CUDA from PyPI: {cuda_packages(installs)}"
