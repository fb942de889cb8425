"""Keep secrets out of history, the runtime log and log files.

Two rules, applied recursively to any JSON-like value (:func:`redact`, for logs); history gets
only the second (:func:`scrub_values`), so facts keep their shape:

- a value under a key whose whole name is a secret's (``api_key``, ``auth_token``, ``password``,
  ``client_secret``, ``authorization``, ``credentials``, ``private_key``) becomes ``"***"``
  (``prompt_tokens`` is not a secret);
- any occurrence, inside any string, of the value of a secret environment variable (names ending
  in ``_KEY``, ``_TOKEN``, ``_SECRET``, ``_PASSWORD`` or containing ``API_KEY``) becomes
  ``"***"``, so a key pasted into a command or a message is not written out either.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["SECRET", "redact", "refresh_secret_values", "scrub_values"]

SECRET = "***"
# Whole key names only: "api_key", "auth_token", "password" are secrets; "prompt_tokens" is not.
_KEY_RE = re.compile(
    r"^(.*[_-])?(api|secret|access|private|signing)[_-]?key$"
    r"|^(.*[_-])?(token|passw(or)?d|secret|authorization|credentials?)$",
    re.I,
)
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


def scrub_values(value: Any) -> Any:
    """A copy of ``value`` with secret environment values replaced; keys are left alone.

    For history: a fact keeps its shape, but a key pasted into it is not stored.
    """
    if not _values:
        return value
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict):
        return {k: scrub_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_values(v) for v in value]
    return value


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
