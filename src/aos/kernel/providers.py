"""In-process hook providers, loaded from ``aoscb.json`` ``"providers"``.

Until skills run as services (with their own sockets), hook handlers come from Python files
named in the configuration: each defines ``register(bus)`` and calls ``bus.register(...)``.
Paths are relative to the checkout. A provider that fails to load is reported and skipped; it
never stops the daemon.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..config import CHECKOUT
from ..logs import get_logger
from .hooks import HookBus

__all__ = ["load_providers"]

log = get_logger("aos.providers")


def load_providers(bus: HookBus, entries: list[Any]) -> list[dict[str, str]]:
    """Load each provider file and call its ``register(bus)``; returns diagnostics."""
    problems = []
    for entry in entries:
        path = Path(str(entry)).expanduser()
        if not path.is_absolute():
            path = CHECKOUT / path
        try:
            spec = importlib.util.spec_from_file_location(
                f"aos_provider_{path.parent.name}_{path.stem}", path
            )
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            register = getattr(module, "register", None)
            if not callable(register):
                raise ImportError(f"{path} defines no register(bus) function")
            register(bus)
            log.info("provider.loaded", path=str(path))
        except Exception as exc:
            problems.append({"provider": str(path), "error": f"{type(exc).__name__}: {exc}"})
            log.error("provider.failed", path=str(path), error=str(exc))
    return problems
