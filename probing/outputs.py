"""Writing result files safely: never overwrite results silently, never leave a half-written file.

Every file goes to a temporary name in the same folder and is renamed into place, so Ctrl-C or SIGTERM
in the middle of a run leaves either the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path


class OutputExistsError(RuntimeError):
    """The output folder already holds results and --force was not given."""


def prepare_out_dir(out_dir: str | os.PathLike, expected: list[str], force: bool) -> Path:
    """Create the folder; refuse (naming the files) if any expected result is already there, unless force."""
    out = Path(out_dir)
    existing = [name for name in expected if (out / name).exists()]
    if existing and not force:
        raise OutputExistsError(f"{out} already holds {', '.join(existing)}; pass --force to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    return out


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path, text: str) -> None:
    def _write(tmp):
        Path(tmp).write_text(text, encoding="utf-8")
    atomic_write(path, _write)


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):       # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):     # numpy arrays
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sigterm_as_interrupt() -> None:
    """Turn SIGTERM into KeyboardInterrupt so `finally` blocks remove temporary files."""
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _raise)
