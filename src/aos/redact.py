"""Keep secrets out of history, the runtime log and log files.

Two rules, applied recursively to any JSON-like value:

- a value under a key that names a secret (``api_key``, ``token``, ``password``, ``secret``,
  ``authorization``, ``credential``, ``private_key``) becomes ``"***"``;
- any occurrence, inside any string, of the value of a secret environment variable (names ending
  in ``_KEY``, ``_TOKEN``, ``_SECRET``, ``_PASSWORD`` or containing ``API_KEY``) becomes
  ``"***"``, so a key pasted into a command or a message is not written out either.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["SECRET", "redact", "refresh_secret_values"]

SECRET = "***"
_KEY_RE = re.compile(r"(api[_-]?key|token|passw(or)?d|secret|authorization|credential|private[_-]?key)", re.I)
_ENV_RE = re.compile(r"(_KEY|_TOKEN|_SECRET|_PASSWORD|API_KEY)$|API_KEY", re.I)
_values: list[str] = []


def refresh_secret_values() -> None:
    """Re-read which environment values are secrets (call after loading ``.env``)."""
    global _values
    found = {v for k, v in os.environ.items() if _ENV_RE.search(k) and len(v) >= 8}
    # Longest first, so a secret that contains another is replaced whole.
    _values = sorted(found, key=len, reverse=True)


refresh_secret_values()


def _scrub(text: str) -> str:
    for value in _values:
        if value in text:
            text = text.replace(value, SECRET)
    return text


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets replaced by ``"***"``."""
    if isinstance(value, str):
        return _scrub(value) if _values else value
    if isinstance(value, dict):
        return {
            k: (SECRET if isinstance(k, str) and _KEY_RE.search(k) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
