"""Keep secrets out of history, the runtime log and log files.

Two rules, applied recursively to any JSON-like value (:func:`redact`, for logs); history gets
only the second (:func:`scrub_values`), so facts keep their shape:

- a value under a key whose whole name is a secret's (``api_key``, ``auth_token``, ``password``,
  ``client_secret``, ``authorization``, ``credentials``, ``private_key``) becomes ``"***"``
  (``prompt_tokens`` is not a secret);
- any occurrence, inside any string, of the value of a secret environment variable (names ending
  in ``_KEY``, ``_TOKEN``, ``_SECRET``, ``_PASSWORD`` or containing ``API_KEY``) becomes
  ``"***"``, so a key pasted into a command or a message is not written out either;
- a NUL byte becomes the four characters ``\\x00`` (PostgreSQL text cannot hold one; raw output
  keeps its bytes in ``content``);
- well-known credential shapes, whoever's they are, become ``"***"`` too: AWS access key ids
  (``AKIA…``/``ASIA…``), GitHub tokens (``ghp_…``, ``github_pat_…``), ``sk-…`` API keys (OpenAI,
  Anthropic, OpenRouter), Slack tokens (``xox…-``), Google API keys (``AIza…``) and PEM private key
  blocks.

:func:`scrub_bytes` applies the last two to raw command output before it is stored in ``content``.
:class:`StreamScrubber` applies them to text that arrives in pieces (live output, a model's
streamed text), holding back what could be the start of a secret until the piece that ends it.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = [
    "SECRET",
    "StreamScrubber",
    "keep_secrets",
    "redact",
    "refresh_secret_values",
    "scrub_bytes",
    "scrub_values",
]

SECRET = "***"
# Whole key names only: "api_key", "auth_token", "password" are secrets; "prompt_tokens" is not.
_KEY_RE = re.compile(
    r"^(.*[_-])?(api|secret|access|private|signing)[_-]?key$"
    r"|^(.*[_-])?(token|passw(or)?d|secret|authorization|credentials?)$",
    re.I,
)
_ENV_RE = re.compile(r"(_KEY|_TOKEN|_SECRET|_PASSWORD|API_KEY)$|API_KEY", re.I)
_values: list[str] = []
# Each credential shape with the substrings that must be present for it to match: the cheap
# substring test runs first, so text without any of them (nearly all output) costs a few scans.
_SHAPE_RULES: list[tuple[tuple[str, ...], str]] = [
    (("PRIVATE KEY-----",), r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?-----END[A-Z0-9 ]*PRIVATE KEY-----"),
    (("AKIA", "ASIA"), r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    (("github_pat_",), r"\bgithub_pat_[A-Za-z0-9_]{40,}"),
    (("sk-",), r"\bsk-[A-Za-z0-9_-]{20,}"),
    (("xox",), r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    (("AIza",), r"\bAIza[0-9A-Za-z_-]{35}"),
]
_SHAPES = [(triggers, re.compile(src, re.S)) for triggers, src in _SHAPE_RULES]
_SHAPES_B = [
    (tuple(t.encode() for t in triggers), re.compile(src.encode(), re.S)) for triggers, src in _SHAPE_RULES
]
_values_b: list[bytes] = []


def refresh_secret_values() -> None:
    """Re-read which environment values are secrets (call after loading ``.env``)."""
    global _values, _values_b
    found = {v for k, v in os.environ.items() if _ENV_RE.search(k) and len(v) >= 8}
    # Longest first, so a secret that contains another is replaced whole.
    _values = sorted(found, key=len, reverse=True)
    _values_b = [v.encode() for v in _values]


refresh_secret_values()


def _scrub(text: str) -> str:
    if "\x00" in text:  # PostgreSQL text cannot hold NUL: kept visible, escaped
        text = text.replace("\x00", "\\x00")
    for value in _values:
        if value in text:
            text = text.replace(value, SECRET)
    for triggers, rx in _SHAPES:
        if any(t in text for t in triggers):
            text = rx.sub(SECRET, text)
    return text


class StreamScrubber:
    """Scrubs text that arrives in pieces, so that a secret split across two pieces never shows.

    :meth:`feed` returns what may be shown now: everything up to the last whitespace (credential
    shapes are runs without it), less any tail that begins a secret value, less an unfinished
    ``-----BEGIN …`` block (a private key's lines have whitespace between them); that is held
    until a later piece completes it, or :meth:`flush` at the end.
    Command output thus shows line by line, a model's text word by word. A run of more than
    ``HOLD_MAX`` characters without whitespace is let through but for its last ``HOLD_TAIL``.
    """

    HOLD_MAX = 4096
    HOLD_TAIL = 256

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        data = self._held + text
        cut = len(data)
        while cut and not data[cut - 1].isspace():
            cut -= 1
        if len(data) - cut > self.HOLD_MAX:  # one endless word (a blob): keep only its tail back
            cut = len(data) - self.HOLD_TAIL
        cut = min(cut, _secret_prefix_at(data, cut))
        begin = data.rfind("-----BEGIN", 0, cut)
        if begin != -1 and len(data) - begin <= 16 * self.HOLD_MAX:
            end = _PEM_END.search(data, begin)
            if end is None or end.end() > cut:
                cut = begin  # a key (or certificate) block not ended before the cut: all of it waits
        out, self._held = data[:cut], data[cut:]
        return _scrub(out) if out else ""

    def flush(self) -> str:
        """The rest, scrubbed (the text ended)."""
        out, self._held = self._held, ""
        return _scrub(out) if out else ""


_PEM_END = re.compile(r"-----END[A-Z0-9 ]*-----")


def _secret_prefix_at(data: str, cut: int) -> int:
    """Where ``data[:cut]`` must end instead so that no secret value begun before ``cut`` is
    cut in two (a value may hold whitespace): the start of the earliest such beginning."""
    best = cut
    for value in _values:
        # A value that starts before cut and does not end by it: its beginning is a suffix of
        # data[:cut] that continues into what follows (or is still to come).
        for k in range(min(len(value) - 1, cut), 0, -1):
            start = cut - k
            if data.startswith(value[:k], start) and data[start:].startswith(value[: len(data) - start]):
                best = min(best, start)
                break
    return best


def scrub_bytes(data: bytes) -> bytes:
    """Raw output with secret values and credential shapes replaced (for ``content``)."""
    for value in _values_b:
        if value in data:
            data = data.replace(value, SECRET.encode())
    for triggers, rx in _SHAPES_B:
        if any(t in data for t in triggers):
            data = rx.sub(SECRET.encode(), data)
    return data


def scrub_values(value: Any) -> Any:
    """A copy of ``value`` with secret values and credential shapes replaced; keys are left alone.

    For history: a fact keeps its shape, but a key pasted into it is not stored.
    """
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
        return _scrub(value)
    if isinstance(value, dict):
        return {
            k: (SECRET if isinstance(k, str) and _KEY_RE.search(k) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def keep_secrets(new: Any, old: Any) -> Any:
    """``new`` (settings a client read redacted and sends back), with each secret left as
    ``"***"`` replaced by the value stored at the same place in ``old``: a client that edits one
    setting does not erase a key it was never shown."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = {}
        for k, v in new.items():
            if v == SECRET and isinstance(k, str) and _KEY_RE.search(k) and k in old:
                out[k] = old[k]
            else:
                out[k] = keep_secrets(v, old.get(k))
        return out
    return new
