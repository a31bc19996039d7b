"""`probing.outputs`: atomic, completion-marked output folders. The end-to-end guarantees (a killed run
leaves the previous result or nothing trusted; out-path errors in one line) are tested through the command in
tests/test_cli.py; here the pieces called directly."""
import os


def test_stale_temporary_files_are_removed(tmp_path):
    from probing.outputs import remove_stale_temporaries
    (tmp_path / ".heads.csv.abc123.tmp").write_text("old code, no pid")
    (tmp_path / ".report.md.p999999999.x.tmp").write_text("a dead pid")
    (tmp_path / f".summary.json.p{os.getpid()}.y.tmp").write_text("this process: still writing")
    (tmp_path / ".staging-999999999-zz").mkdir()
    (tmp_path / "heads.csv").write_text("a result")
    assert sorted(remove_stale_temporaries(tmp_path)) == [".heads.csv.abc123.tmp", ".report.md.p999999999.x.tmp",
                                                          ".staging-999999999-zz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".summary.json.p{os.getpid()}.y.tmp", "heads.csv"]


# ---- a kill at every point of a publish, then a re-run ---------------------------------------------------

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# A child process publishes `files`, each holding `tag`, and SIGKILLs itself just before its N-th rename
# (N = 0: while producing, after the first file): every point of a publish, deterministically.
PUBLISH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from probing.outputs import write_complete
out, tag, kill_at, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
renames = 0
real_replace = os.replace
def replace(src, dst):
    global renames
    renames += 1
    if renames == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace
def produce(staging):
    for number, name in enumerate(files):
        (Path(staging) / name).write_text(tag)
        if kill_at == 0 and number == 0:
            os.kill(os.getpid(), signal.SIGKILL)
write_complete(out, files, produce)
"""


def _publish(out: Path, tag: str, files: list[str], kill_at: int = -1) -> int:
    return subprocess.run([sys.executable, "-c", PUBLISH_SCRIPT, str(out), tag, str(kill_at), ",".join(files)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60).returncode


def _result_files(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}


def _assert_whole_or_untrusted(out: Path) -> None:
    """A folder marked complete holds exactly the files its marker lists, all from one run."""
    from probing.outputs import DONE_MARKER, is_complete
    if not is_complete(out):
        return
    listed = json.loads((out / DONE_MARKER).read_text())["files"]
    present = _result_files(out)
    assert sorted(present) == sorted(listed), f"stray files beside a complete result: {sorted(present)}"
    assert len(set(present.values())) == 1, f"a complete result with mixed runs: {present}"


OLD, NEW = ["a.csv", "b.json", "c.png"], ["a.csv", "b.json", "d.md"]


@pytest.mark.parametrize("kill_at", range(0, len(NEW) + 2))      # while producing, before each rename, before the marker
def test_a_kill_at_any_point_of_a_publish_never_leaves_a_mixed_complete_folder(tmp_path, kill_at):
    from probing.outputs import is_complete
    out = tmp_path / "new" / "deeper"                               # parents made by the first publish
    assert _publish(out, "old", OLD) == 0 and is_complete(out) and _result_files(out) == dict.fromkeys(OLD, "old")
    assert _publish(out, "new", NEW, kill_at) == -signal.SIGKILL
    _assert_whole_or_untrusted(out)
    if kill_at == 0:                                                # killed while producing: the old result stands
        assert is_complete(out) and _result_files(out) == dict.fromkeys(OLD, "old")
    else:                                                           # killed while publishing: no reader trusts it
        assert not is_complete(out)
    # The re-run publishes the new result whole: no file of the old one (c.png) left beside it, no staging.
    assert _publish(out, "new", NEW) == 0
    assert is_complete(out) and _result_files(out) == dict.fromkeys(NEW, "new")
    assert not any(p.name.startswith(".staging-") or p.name.endswith(".tmp") for p in out.iterdir())


def test_an_empty_out_is_refused_in_words(tmp_path):
    from probing.outputs import OutputPathError, check_out_dir
    with pytest.raises(OutputPathError, match="--out is empty"):
        check_out_dir("")
    with pytest.raises(OutputPathError, match="--out is empty"):
        check_out_dir("  ")


def test_files_none_publishes_every_file_the_run_wrote(tmp_path):
    from probing.outputs import DONE_MARKER, is_complete, write_complete

    def produce(staging):
        (staging / "one.csv").write_text("1")
        (staging / "two.md").write_text("2")

    write_complete(tmp_path / "out", None, produce)
    assert is_complete(tmp_path / "out")
    assert json.loads((tmp_path / "out" / DONE_MARKER).read_text())["files"] == ["one.csv", "two.md"]


def test_make_writable_dir_makes_the_folder_and_proves_it_can_be_written(tmp_path):
    from probing.outputs import OutputPathError, make_writable_dir
    out = make_writable_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []                 # the probe file is gone again
    if os.geteuid() != 0:                                             # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputPathError, match="cannot be"):
            make_writable_dir(locked / "out")
    if Path("/sys").is_dir():                                         # no folder can be made there, even by root
        with pytest.raises(OutputPathError, match=r"^--out /sys/probing-x cannot be (made|written): "):
            make_writable_dir("/sys/probing-x")


def test_two_writers_of_one_out_cannot_both_publish(tmp_path):
    """The second command on the same --out is refused at once, while the first runs; the first publishes its
    own files only. The lock is on the folder itself: no lock file is left among the results."""
    import threading
    from probing.outputs import OutputBusyError, OutputPathError, is_complete, write_complete
    out = tmp_path / "new-out"
    started, finish = threading.Event(), threading.Event()

    def first(staging):
        (staging / "a.txt").write_text("first")
        started.set()
        finish.wait(30)

    writer = threading.Thread(target=write_complete, args=(out, ["a.txt"], first))
    writer.start()
    assert started.wait(30)
    with pytest.raises(OutputBusyError, match=r"being written by another command"):
        write_complete(out, ["a.txt"], lambda staging: (staging / "a.txt").write_text("second"))
    assert issubclass(OutputBusyError, OutputPathError)          # the commands' exit code 2
    finish.set()
    writer.join(30)
    assert is_complete(out) and (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in out.iterdir()) == [".done.json", "a.txt"]
    write_complete(out, ["a.txt"], lambda staging: (staging / "a.txt").write_text("later"))   # released after
    assert (out / "a.txt").read_text() == "later"
