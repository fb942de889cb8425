"""Context windows and prices, from the table litellm ships, without importing litellm.

litellm's model info (``get_model_info``) reads a JSON table bundled in its package; importing
litellm to ask takes seconds (about 10 without compiled bytecode), and the first step of the
first dispatch after a start used to wait for it. This module reads the same file directly
(~12 ms, once per process, off the event loop) and looks models up the way AOS always has:
the full name, then without each leading provider prefix (``openrouter/openai/gpt-4o-mini`` is
known as ``gpt-4o-mini``).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import orjson

__all__ = ["context_window", "info", "load", "prices"]

TABLE = "model_prices_and_context_window_backup.json"


@functools.cache
def _table() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return {}
    try:
        data = orjson.loads((Path(spec.submodule_search_locations[0]) / TABLE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def load() -> int:
    """Read the table now (at start, off the event loop); returns how many models it knows."""
    return len(_table())


def info(model: str) -> dict[str, Any] | None:
    """The table's entry for ``model`` (or for its name without leading provider prefixes)."""
    table = _table()
    parts = model.split("/")
    for i in range(len(parts)):
        entry = table.get("/".join(parts[i:]))
        if isinstance(entry, dict):
            return entry
    return None


@functools.lru_cache(maxsize=256)
def context_window(model: str) -> int | None:
    """The model's input window in tokens; None when unknown. Reads a file the first time:
    call it off the event loop."""
    parts = model.split("/")
    for i in range(len(parts)):
        entry = _table().get("/".join(parts[i:]))
        if isinstance(entry, dict):
            window = entry.get("max_input_tokens") or entry.get("max_tokens")
            if isinstance(window, int) and window > 0:
                return window
    return None


@functools.lru_cache(maxsize=256)
def prices(model: str) -> tuple[float, float] | None:
    """Input and output price per token; None when the table has none."""
    entry = info(model)
    if entry is None:
        return None
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if isinstance(inp, int | float) and isinstance(out, int | float):
        return float(inp), float(out)
    return None
