"""`probing.report.outputs`: atomic, completion-marked output folders. The end-to-end guarantees (a killed run
leaves the previous result or nothing trusted; out-path errors in one line) are tested through the command in
tests/test_cli.py; here the pieces called directly."""
import os


def test_stale_temporary_files_are_removed(tmp_path):
    from probing.report.outputs import remove_stale_temporaries
    (tmp_path / ".heads.csv.abc123.tmp").write_text("old code, no pid")
    (tmp_path / ".report.md.p999999999.x.tmp").write_text("a dead pid")
    (tmp_path / f".summary.json.p{os.getpid()}.y.tmp").write_text("this process: still writing")
    (tmp_path / ".staging-999999999-zz").mkdir()
    (tmp_path / "heads.csv").write_text("a result")
    assert sorted(remove_stale_temporaries(tmp_path)) == [".heads.csv.abc123.tmp", ".report.md.p999999999.x.tmp",
                                                          ".staging-999999999-zz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".summary.json.p{os.getpid()}.y.tmp", "heads.csv"]
