"""What every ``aos`` command shares: printing, JSON, the exit codes, the daemon's client, and
the few formats people read (times, tables, facts)."""

from __future__ import annotations

import json
import sys
from typing import Any

from aos_sdk.syncclient import SyncClient

from ..config import Paths

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_USAGE",
    "ago",
    "body_text",
    "clip",
    "connect",
    "duration",
    "echo",
    "emit_json",
    "fact_line",
    "fact_text",
    "fail",
    "json_errors",
    "rpc",
    "table",
    "warn",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


def echo(text: str = "") -> None:
    sys.stdout.write(text + "\n")


#: Set by ``--json``: errors are then printed as ``{"error": {type, message}}`` on stdout too.
_json_errors = False


def json_errors(on: bool) -> None:
    global _json_errors
    _json_errors = on


def fail(text: str, type_: str = "error") -> None:
    """An error for the person (stderr), or, under ``--json``, ``{"error": …}`` on stdout."""
    if _json_errors:
        emit_json({"error": {"type": type_, "message": text}})
    else:
        sys.stderr.write(f"aos: {text}\n")


def warn(text: str) -> None:
    """A warning: always on stderr, so ``--json`` output stays one JSON document."""
    sys.stderr.write(f"aos: warning: {text}\n")


def emit_json(value: Any) -> None:
    echo(json.dumps(value, indent=2, ensure_ascii=False))


def connect(paths: Paths, timeout: float | None = 30.0) -> SyncClient:
    return SyncClient(paths.kernel_sock, timeout=timeout)


def rpc(paths: Paths, method: str, params: dict[str, Any] | None = None) -> Any:
    with connect(paths) as c:
        return c.call(method, params or {})


def ago(iso: str | None) -> str:
    if not iso:
        return "-"
    from datetime import UTC, datetime

    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    secs = (datetime.now(UTC) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit} ago"
    return f"{int(max(secs, 0))}s ago"


def duration(secs: float) -> str:
    secs = int(secs)
    d, rem = divmod(secs, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{d}d"] if d else []
    if h or d:
        parts.append(f"{h}h")
    if m or h or d:
        parts.append(f"{m}m")
    parts.append(f"{s}s")
    return " ".join(parts)


def table(rows: list[list[str]], headers: list[str]) -> None:
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in rows:
        echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def body_text(body: Any) -> str:
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        for key in ("text", "content", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return json.dumps(body, ensure_ascii=False)


def fact_text(f: dict[str, Any]) -> str:
    """What a fact says, for people: a message's text, a command, its output and exit code, an
    approval, a dispatch's end; other facts as compact JSON."""
    kind, body = f["kind"], f.get("body")
    b = body if isinstance(body, dict) else {}
    if kind == "message" and b.get("tool_calls"):
        calls = []
        for c in b["tool_calls"]:
            try:
                args = json.loads(c.get("arguments") or "{}")
            except (TypeError, ValueError):
                args = {}
            calls.append(f"→ {c.get('name')}: {args.get('command', c.get('arguments'))}")
        return "\n".join([*([str(b["text"])] if b.get("text") else []), *calls])
    if kind == "tool.started":
        return f"$ {b.get('command')}" + (f"   (in {b['cwd']})" if b.get("cwd") else "")
    if kind == "tool.result":
        code = b.get("exit_code")
        head = b.get("outcome", "?") + ("" if code in (None, 0) else f", exit {code}")
        extra = ", folded" if b.get("folded") else (", truncated" if b.get("truncated") else "")
        return f"[{head}{extra}]\n{str(b.get('output', '')).rstrip()}".rstrip()
    if kind == "approval.requested":
        return f"? {b.get('command')}   ({b.get('skill')}: {b.get('reason')})"
    if kind == "approval.resolved":
        note = f": {b['note']}" if b.get("note") else ""
        return f"{b.get('decision')} by {b.get('by')}{note}"
    if kind == "dispatch.end":
        u = b.get("usage") or {}
        cost = f", ${u['cost']:.4f}" if u.get("cost") else ""
        reason = f" ({b['reason']})" if b.get("reason") else ""
        return (
            f"{b.get('status')}{reason} in {b.get('steps')} steps, "
            f"{u.get('prompt_tokens', 0)}+{u.get('completion_tokens', 0)} tokens{cost}"
        )
    if isinstance(b.get("notice"), str):
        return str(b["notice"])
    return body_text(body)


def fact_line(f: dict[str, Any]) -> str:
    ts = str(f.get("created_at", ""))[11:19]
    who = f["kind"] + (f"/{f['role']}" if f.get("role") else "")
    text = fact_text(f)
    first, *more = text.splitlines() or [""]
    line = f"#{f['seq']:<4} {ts}  {who:<18} {first}"
    if more:
        line += "\n" + "\n".join(" " * 33 + m for m in more)
    return line
