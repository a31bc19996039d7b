"""Publishing result folders, for every command (`heads`, `patch`, `probe`, `ablate`, `report`), the demo's
report cache and the example sets alike: never overwrite results silently, never leave a half-written
file, and never let a reader trust a folder that a killed run left half old, half new.

- Every file goes to a temporary name in the same folder and is renamed into place (`atomic_write`), with
  the permissions the umask asks for (not the 0600 of a temporary file).
- A result folder is **complete** only when its marker `.done.json` (`DONE_MARKER`), written last, says so:
  `write_complete(out, files, produce)` lets `produce` write every file into a private staging folder, then
  removes the old marker and the previous result's files that the new one does not replace, renames the
  files into `out` (SIGTERM and SIGINT held back meanwhile) and writes the marker. A kill at any point
  leaves either the previous complete result, or files with no marker that no reader trusts
  (`is_complete`). Readers: the demo's report cache, `analysis report`'s model comparison.
- Temporary files and staging folders that a killed run left behind are removed by the next writer.
- One writer per folder: `write_complete` holds an exclusive lock on the folder (flock on its descriptor)
  from its start to its marker, so a second command on the same `--out` is refused at once
  (`OutputBusyError`) instead of both publishing into one folder.
- `--out` may name a folder that does not exist yet (parents included: they are made, and removed again when
  the run fails); an empty name, a file, or a place that cannot be written is refused in one line
  (`OutputPathError`, which the commands turn into exit code 2) before anything is computed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

DONE_MARKER = ".done.json"
_STAGING_PREFIX = ".staging-"
# The checkout's committed reports (reports/ beside probing/). Only the commands and the demo use this default;
# library functions take their paths as arguments.
COMMITTED_REPORTS = Path(__file__).resolve().parents[1] / "reports"


def safe_name(name: str) -> str:
    """A model or dataset name as one file-name part ("org/model" -> "org_model"): every run of other
    characters than letters, digits, `_`, `.` and `-` becomes `_`, and leading or trailing dots and underscores
    go (so never "", "." or ".."); the one cleaning that writers and readers of report folders share."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed"


class OutputExistsError(RuntimeError):
    """The output folder already holds results and --force was not given."""


class OutputPathError(ValueError):
    """The output folder cannot be made or written (a file is in the way, no permission)."""


class OutputBusyError(OutputPathError):
    """Another command is writing the same output folder right now."""


# ---- permissions --------------------------------------------------------------------------------------

def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary `open(path, "w")` would give a new file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


# ---- the output folder --------------------------------------------------------------------------------

def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder, or OutputPathError in one line when it cannot be one (nothing is created)."""
    if not str(out_dir).strip():
        raise OutputPathError("--out is empty: name the folder to write into (it is made if it does not exist)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out {out} is a file, not a folder")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"--out {out} cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"--out {out} cannot be written: no permission to write in {existing}")
    return out


def prepare_out_dir(out_dir: str | os.PathLike, expected: list[str], force: bool) -> Path:
    """Check the folder; refuse (naming the files) if any expected result is already there, unless force.

    Nothing is created here: `write_complete` makes the folder and removes it again if the run fails.
    """
    out = check_out_dir(out_dir)
    existing = [name for name in expected if (out / name).exists()]
    if existing and not force:
        raise OutputExistsError(f"{out} already holds {', '.join(existing)}; pass --force to overwrite them")
    return out


def make_writable_dir(out_dir: str | os.PathLike) -> Path:
    """Make the folder (parents included) and prove it can be written, by making and removing a temporary
    file in it; OutputPathError in one line otherwise. For a command that writes many sub-folders over a
    long run (`analysis report`): a read-only place fails now, not after the first hour."""
    out = check_out_dir(out_dir)
    _make_dirs(out)
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=f".write-check.p{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(f"--out {out} cannot be written: {err.strerror or err}") from None
    return out


def _make_dirs(out: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (deepest last), with permission errors in words."""
    created = []
    for folder in reversed([out, *out.parents]):
        if not folder.exists():
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise OutputPathError(f"--out {out} cannot be made: {err.strerror or err}") from None
            created.append(folder)
    return created


# ---- completion marker --------------------------------------------------------------------------------

def is_complete(folder: str | os.PathLike) -> bool:
    """True when the folder's marker exists, parses, and every file it lists is there.

    Markers written by `mark_complete` list their files; `analysis report` also writes `.done.json` (with
    its step key) after a step finished, which counts as complete.
    """
    try:
        record = json.loads((Path(folder) / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    files = record.get("files", [])
    return isinstance(files, list) and all(isinstance(f, str) and (Path(folder) / f).is_file() for f in files)


def marker_run(folder: str | os.PathLike) -> str | None:
    """The run id in a folder's marker (None when there is no readable marker)."""
    try:
        record = json.loads((Path(folder) / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("run") if isinstance(record, dict) else None


def mark_complete(folder: str | os.PathLike, files: list[str], run: str | None = None) -> str:
    """Write the marker (last): the folder's `files` form one complete result. Returns the run id."""
    run = run or uuid.uuid4().hex
    write_json(Path(folder) / DONE_MARKER, {"complete": True, "run": run, "files": list(files),
                                             "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return run


def mark_incomplete(folder: str | os.PathLike) -> None:
    (Path(folder) / DONE_MARKER).unlink(missing_ok=True)


# ---- stale temporaries ----------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove `.*.tmp` files and staging folders left by killed runs (their writer's pid is gone, or their
    name carries none); those of running processes stay. Returns the names removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        name = path.name
        if not (name.startswith(".") and (name.endswith(".tmp") or name.startswith(_STAGING_PREFIX))):
            continue
        pid = re.search(r"\.p(\d+)\.", name) or re.match(rf"{re.escape(_STAGING_PREFIX)}(\d+)-", name)
        if pid and _pid_alive(int(pid.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(name)
    return removed


# ---- writing a complete result --------------------------------------------------------------------------

# What this process did to each folder it wrote (for the message after an interrupt):
# folder -> (run id of the marker before, run id of the marker this process wrote or None)
_written: dict[Path, tuple[str | None, str | None]] = {}


@contextmanager
def _signals_held():
    """Hold SIGTERM and SIGINT back for a few renames and deliver them right after.

    Done with Python-level handlers (which always run in the main thread): blocking the signal in the
    thread's mask is not enough in a process with other threads (torch's), which would take it instead.
    Off the main thread (the demo's workers) signals are not ours to handle, and this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


def _marked_files(folder: Path) -> list[str]:
    """The plain file names the folder's marker lists (none without a readable marker)."""
    try:
        record = json.loads((folder / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = record.get("files", []) if isinstance(record, dict) else []
    return [f for f in files if isinstance(f, str) and f == Path(f).name and f not in ("", ".", "..", DONE_MARKER)] \
        if isinstance(files, list) else []


def written_files(staging: Path) -> list[str]:
    """The files a run wrote into its staging folder (for commands whose file list depends on the data)."""
    return sorted(p.name for p in staging.iterdir() if p.is_file() and not p.name.startswith("."))


def publish(staging: Path, out: Path, files: list[str]) -> str:
    """Move `files` from staging into `out` under the completion protocol; returns the new run id."""
    missing = [f for f in files if not (staging / f).is_file()]
    if missing:
        raise RuntimeError(f"the run wrote no {', '.join(missing)}; nothing was published to {out}")
    run = uuid.uuid4().hex
    previous = _marked_files(out)
    with _signals_held():
        mark_incomplete(out)                       # from here until the marker, the folder is not trusted
        for name in previous:                      # the old result's files the new one does not replace:
            if name not in files:                  # left in place, they would sit beside the new ones
                (out / name).unlink(missing_ok=True)
        for name in files:
            os.replace(staging / name, out / name)
        mark_complete(out, files, run)
        _written[out] = (_written.get(out, (None, None))[0], run)   # before a held signal is delivered
    return run


def write_complete(out_dir: str | os.PathLike, files: list[str] | None, produce, publish_result: bool = True):
    """Run `produce(staging)`, which writes `files` into a private staging folder inside `out`, then publish
    them with the marker last (`files=None`: every file `produce` wrote). A failure or interrupt before publishing leaves `out` as it was (and removes
    folders this call created, when they are empty). Returns what `produce` returned.

    publish_result=False (e.g. a non-main process of a parallel run, which writes nothing) only cleans up.
    """
    out = check_out_dir(out_dir)
    created = _make_dirs(out)
    lock = _lock_folder(out) if publish_result else None     # one publisher per folder at a time
    try:
        remove_stale_temporaries(out)
        _written[out] = (marker_run(out), None)
        try:
            staging = Path(tempfile.mkdtemp(dir=out, prefix=f"{_STAGING_PREFIX}{os.getpid()}-"))
        except OSError as err:
            raise OutputPathError(f"--out {out} cannot be written: {err.strerror or err}") from None
        try:
            result = produce(staging)
            if publish_result:
                publish(staging, out, written_files(staging) if files is None else files)
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if lock is not None:
            os.close(lock)                           # closing the descriptor releases the lock
        for folder in reversed(created):
            try:
                folder.rmdir()                       # only when empty: a failed run leaves no empty folder
            except OSError:
                break


def _lock_folder(out: Path) -> int | None:
    """An exclusive lock on the folder itself (flock on its descriptor: no lock file in anyone's results),
    held until the descriptor returned is closed: two commands writing one `--out` at once would otherwise
    both publish, and the folder could hold files of two runs under one marker. The second is refused at
    once with OutputBusyError. The lock dies with its process, so a killed run never leaves the folder locked.
    None where the platform has no flock (the folder is then not locked)."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputBusyError(f"--out {out} is being written by another command right now; wait for it to "
                              "finish, or choose another folder") from None
    return fd


def interrupted_message() -> str:
    """After an interrupt: for each folder this process was writing, which result it now holds."""
    parts = []
    for out, (before, after) in _written.items():
        now = marker_run(out) if is_complete(out) else None
        if now is not None and now == after:
            parts.append(f"{out} holds the new complete result (it was finished before the interrupt)")
        elif now is not None and now == before:
            parts.append(f"{out} still holds the previous complete result, untouched")
        elif not out.exists():
            parts.append(f"nothing was written ({out} does not exist)")
        else:
            parts.append(f"{out} holds no complete result (no {DONE_MARKER} marker): no reader trusts "
                         "the files there")
    return "; ".join(parts) if parts else "no result folder was being written"


# ---- single files ---------------------------------------------------------------------------------------

def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it into place (umask permissions)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.p{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
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
