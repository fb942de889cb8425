"""Structured logging: JSON lines in ``$AOS_HOME/logs/aos.log``, secrets redacted.

Only the daemon configures this; the CLI reads the file back (``aos logs``) and prints it for
people.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog

from .redact import redact

__all__ = [
    "configure",
    "debug_enabled",
    "format_line",
    "get_logger",
]


def _redact_processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    return redact(dict(event))  # type: ignore[no-any-return]


def _dumps(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


_LEVELS = ("debug", "info", "warning", "error")
_debug = False


def debug_enabled() -> bool:
    """Whether ``AOS_LOG_LEVEL=debug`` is in force: hot paths check this once, not per event."""
    return _debug


def configure(log_file: Path | None, *, level: str = "info", also_stderr: bool = False) -> None:
    """Send structlog events to ``log_file`` (and stderr in the foreground) as JSON lines.

    Raises:
        ValueError: a level other than debug, info, warning or error.
    """
    global _debug
    if level.lower() not in _LEVELS:
        raise ValueError(f"AOS_LOG_LEVEL must be one of {', '.join(_LEVELS)}, not {level!r}")
    _debug = level.lower() == "debug"
    streams: list[TextIO] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        streams.append(open(log_file, "a", buffering=1))  # noqa: SIM115 - lives as long as the daemon
    if also_stderr or not streams:
        streams.append(sys.stderr)

    class _Tee:
        def write(self, text: str) -> None:
            for s in streams:
                s.write(text)

        def flush(self) -> None:
            for s in streams:
                s.flush()

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Tee()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A structlog logger tagged with ``component=name``.

    Lazy: module-level loggers created before :func:`configure` still use its settings.
    """
    return structlog.get_logger(component=name)


def format_line(line: str) -> str:
    """One JSON log line as ``time level event key=value ...`` for people (``aos logs``)."""
    import json

    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return line.rstrip("\n")
    if not isinstance(rec, dict):
        return line.rstrip("\n")
    ts = str(rec.pop("timestamp", ""))[:23].replace("T", " ")
    level = str(rec.pop("level", "")).upper()
    event = rec.pop("event", "")
    rec.pop("component", None)
    exc = rec.pop("exception", None)
    rest = " ".join(f"{k}={v}" for k, v in rec.items())
    out = f"{ts} {level:<7} {event} {rest}".rstrip()
    if exc:
        out += "\n" + str(exc)
    return out
