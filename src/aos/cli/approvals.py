"""``aos approvals``, ``approve``/``deny`` and ``hooks``."""

from __future__ import annotations

import argparse
import re
from typing import Any

from aos_sdk.errors import AosError

from ..config import Paths
from .output import (
    EXIT_OK,
    ago,
    clip,
    connect,
    echo,
    emit_json,
    rpc,
    table,
)


def cmd_hooks(args: argparse.Namespace, paths: Paths) -> int:
    hooks = rpc(paths, "hook.list")["hooks"]
    if args.json:
        emit_json(hooks)
        return EXIT_OK
    for h in hooks:
        tag = f"{h['class']}{', required' if h['required'] else ''}"
        echo(f"{h['hook']} ({tag})")
        if not h["handlers"]:
            echo("    (no handlers)")
        for i, x in enumerate(h["handlers"], 1):
            echo(
                f"    {i}. {x['skill']}  scope={x['scope']} priority={x['priority']} "
                f"timeout={x['timeout_s']}s failure={x['failure']}"
            )
    return EXIT_OK


def cmd_approvals(args: argparse.Namespace, paths: Paths) -> int:
    params: dict[str, Any] = {"status": None if args.all else "pending"}
    if args.session:
        params["session"] = args.session
    rows = rpc(paths, "approval.list", params)["approvals"]
    if args.json:
        emit_json(rows)
    elif not rows:
        echo("no pending approvals" if not args.all else "no approvals")
    else:
        table(
            [
                [
                    a["id"],
                    a["status"],
                    a["session_id"],
                    f"{a['skill']}: {a['reason']}",
                    clip(a["command"]),
                    ago(a["created_at"]),
                ]
                for a in rows
            ],
            ["id", "status", "session", "why", "command", "asked"],
        )
    return EXIT_OK


def with_allow_rule(settings: dict[str, Any], command: str) -> dict[str, Any]:
    """``settings`` with ``command`` (exactly) in ``guard.allow``: aos-guard lets it through
    without asking (``aos approve --always``, ``a`` in ``aos chat``)."""
    rule = f"^{re.escape(command)}$"
    guard = dict(settings.get("guard") or {})
    guard["allow"] = [r for r in guard.get("allow", []) if r != rule] + [rule]
    return {**settings, "guard": guard}


def cmd_resolve(args: argparse.Namespace, paths: Paths) -> int:
    decision = "approve" if args.cmd == "approve" else "deny"
    with connect(paths) as c:
        a = c.call("approval.resolve", {"approval": args.approval, "decision": decision, "note": args.note})
        if getattr(args, "always", False):
            for _ in range(3):  # another writer changed the agent meanwhile: read it again
                agent = c.call("agent.get", {"agent": a["agent_id"]})
                settings = with_allow_rule(agent.get("settings") or {}, a["command"])
                try:
                    c.call(
                        "agent.update",
                        {"agent": agent["id"], "settings": settings, "revision": agent["revision"]},
                    )
                    break
                except AosError as exc:
                    if exc.type != "conflict":
                        raise
    if args.json:
        emit_json(a)
    else:
        echo(f"{a['status']}: {a['command']}")
        if getattr(args, "always", False):
            echo(f"always allowed for this agent from now on: {a['command']}")
    return EXIT_OK
