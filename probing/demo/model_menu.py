"""The demo's model list: offline models first, hub ids only where the hub can be reached.

A hub id with no network fails only after about 23 s of retries, so the demo checks once at start, with one
bounded connection attempt (`probing.models.hub_reachable`, `HUB_CHECK_TIMEOUT_S`, 2 s), whether
huggingface.co answers. Where it does not,
the hub ids are left out of the list and the page says so (local folders on the allow-list stay). `PROBING_HUB_CHECK=0` skips the check (the list
is shown as configured); `HF_HUB_OFFLINE=1` means unreachable without trying.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from probing.demo.guard import ALLOW_ANY_ENV, allowed_models, installed_short_names
from probing.models import HUB_CHECK_TIMEOUT_S, HUB_HOST, hub_answers, hub_reachable  # noqa: F401 (re-exported)

HUB_CHECK_ENV = "PROBING_HUB_CHECK"


def hub_state() -> bool:
    """Whether the hub answered, checked once per process (`probing.models.hub_answers`; `PROBING_HUB_CHECK=0`:
    taken as reachable): the menu, every later request (the API's included) and the library's loads read the
    same answer, and none waits on retries."""
    if os.environ.get(HUB_CHECK_ENV) == "0":
        return True
    return hub_answers()


def needs_hub(name: str) -> bool:
    """A model that must be downloaded: neither installed here (a short name) nor a local folder."""
    return name not in installed_short_names() and not Path(name).expanduser().is_dir()


def refuse_if_offline(name: str) -> None:
    """DemoError at once, in words, for a hub model when the hub was unreachable at start (no 25 s of retries)."""
    if needs_hub(name) and not hub_state():
        from probing.demo.guard import DemoError
        installed = [m for m in allowed_models() if not needs_hub(m)]
        raise DemoError(f"{name} is downloaded from the Hugging Face hub, which this server could not reach when "
                        f"the demo started; use a model installed here ({', '.join(installed) or 'none'}).")


@dataclass
class ModelMenu:
    """What the model dropdown offers, whether it takes typed ids, and a line for the page."""
    choices: list[str]
    allow_typed: bool        # PROBING_ALLOW_ANY_MODEL=1: any hub id or local path may be typed
    note: str


def install_hint() -> str:
    """How to add the optional offline models that are not installed yet (empty when all are)."""
    from probing.install_models import OPTIONAL_MODELS
    missing = [name for name in OPTIONAL_MODELS if name not in installed_short_names()]
    if not missing:
        return ""
    return (f" To add {' and '.join(missing)} offline, run `python -m probing.install_models {' '.join(missing)}` "
            "on the server and restart the demo.")


def model_menu(reachable: bool | None = None) -> ModelMenu:
    """The dropdown's content; `reachable` None runs the start-up check (unless PROBING_HUB_CHECK=0)."""
    menu = _menu(reachable)
    menu.note += install_hint()
    return menu


def _menu(reachable: bool | None) -> ModelMenu:
    allowed = allowed_models()
    # Installed short names and local folders need no hub; everything else is a hub id.
    offline = [m for m in allowed if not needs_hub(m)]
    hub = [m for m in allowed if m not in offline]
    allow_typed = os.environ.get(ALLOW_ANY_ENV) == "1"
    typed = " You may also type a hub id or a local folder." if allow_typed else ""
    if not hub:
        return ModelMenu(offline, allow_typed, "Models installed on this machine." + typed)
    if reachable is None:
        reachable = hub_state()
    if reachable:
        return ModelMenu(allowed, allow_typed, "Models installed here first; the hub models after them are "
                                               "downloaded on first use." + typed)
    return ModelMenu(offline, allow_typed,
                     f"The Hugging Face hub could not be reached when the demo started, so the hub models "
                     f"({', '.join(hub)}) are left out; only models installed here are listed." + typed)
