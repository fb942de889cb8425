"""``aos agent``, ``session``, ``history`` and ``call``: the kernel's objects."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import Paths
from .output import (
    EXIT_OK,
    EXIT_USAGE,
    ago,
    connect,
    echo,
    emit_json,
    fact_line,
    fail,
    rpc,
    table,
)


def cmd_agent(args: argparse.Namespace, paths: Paths) -> int:
    if args.agent_cmd == "create":
        instructions = args.instructions or ""
        if args.instructions_file:
            instructions = Path(args.instructions_file).read_text()
        params: dict[str, Any] = {"name": args.name, "instructions": instructions}
        for key in ("display_name", "model", "workspace"):
            if getattr(args, key):
                params[key] = getattr(args, key)
        a = rpc(paths, "agent.create", params)
        if args.json:
            emit_json(a)
        else:
            echo(f"created agent {a['name']} ({a['id']})")
        return EXIT_OK
    if args.agent_cmd == "list":
        res = rpc(paths, "agent.list", {"include_archived": args.all})
        if args.json:
            emit_json(res["agents"])
        elif not res["agents"]:
            echo("no agents yet; create one with `aos agent create <name>`")
        else:
            table(
                [
                    [a["name"], a["id"], a["model"] or "(default)", a["status"], ago(a["created_at"])]
                    for a in res["agents"]
                ],
                ["name", "id", "model", "status", "created"],
            )
        return EXIT_OK
    if args.agent_cmd == "show":
        a = rpc(paths, "agent.get", {"agent": args.agent})
        if args.json:
            emit_json(a)
        else:
            for key in (
                "name",
                "id",
                "display_name",
                "model",
                "workspace",
                "status",
                "revision",
                "created_at",
            ):
                echo(f"{key:<13} {a[key] if a[key] is not None else '-'}")
            echo(f"{'instructions':<13} {a['instructions'] or '-'}")
        return EXIT_OK
    if args.agent_cmd == "archive":
        a = rpc(paths, "agent.archive", {"agent": args.agent})
        if args.json:
            emit_json(a)
        else:
            echo(f"archived agent {a['name']} ({a['id']}) and its sessions")
        return EXIT_OK
    raise AssertionError(args.agent_cmd)


def cmd_session(args: argparse.Namespace, paths: Paths) -> int:
    if args.session_cmd == "create":
        params: dict[str, Any] = {"agent": args.agent}
        if args.title:
            params["title"] = args.title
        s = rpc(paths, "session.create", params)
        if args.json:
            emit_json(s)
        else:
            echo(f"created session {s['id']} for agent {args.agent}")
        return EXIT_OK
    if args.session_cmd == "list":
        params = {"include_archived": args.all, "limit": args.limit}
        if args.agent:
            params["agent"] = args.agent
        res = rpc(paths, "session.list", params)
        if args.json:
            emit_json(res["sessions"])
        elif not res["sessions"]:
            echo("no sessions")
        else:
            names = {
                a["id"]: a["name"] for a in rpc(paths, "agent.list", {"include_archived": True})["agents"]
            }
            table(
                [
                    [
                        s["id"],
                        names.get(s["agent_id"], s["agent_id"]),
                        s["title"] or "-",
                        s["phase"],
                        str(s["last_seq"]),
                        ago(s["updated_at"]),
                    ]
                    for s in res["sessions"]
                ],
                ["id", "agent", "title", "phase", "facts", "updated"],
            )
        return EXIT_OK
    if args.session_cmd == "show":
        s = rpc(paths, "session.get", {"session": args.session})
        if args.json:
            emit_json(s)
        else:
            for key in (
                "id",
                "agent_id",
                "title",
                "status",
                "phase",
                "last_seq",
                "lease_epoch",
                "parent_id",
                "created_at",
                "updated_at",
            ):
                echo(f"{key:<12} {s[key] if s[key] is not None else '-'}")
        return EXIT_OK
    raise AssertionError(args.session_cmd)


def cmd_history(args: argparse.Namespace, paths: Paths) -> int:
    with connect(paths) as c:
        if not args.follow:
            after = args.after
            while True:
                res = c.call("history.list", {"session": args.session, "after_seq": after, "limit": 1000})
                for f in res["facts"]:
                    echo(json.dumps(f, ensure_ascii=False) if args.json else fact_line(f))
                if res["next_after"] is None:
                    break
                after = res["next_after"]
            return EXIT_OK
        c.call("history.subscribe", {"session": args.session, "after_seq": args.after})
        c.set_timeout(None)
        try:
            for note in c.notifications():
                if note.method == "history.fact":
                    f = note.params["fact"]
                    echo(json.dumps(f, ensure_ascii=False) if args.json else fact_line(f))
                    sys.stdout.flush()
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK


def cmd_call(args: argparse.Namespace, paths: Paths) -> int:
    if args.list:
        from ..kernel.syscalls import SYSCALLS

        if args.json:
            emit_json([{"name": s.name, "kind": s.kind, "summary": s.summary} for s in SYSCALLS.values()])
        else:
            table([[s.name, s.kind, s.summary] for s in SYSCALLS.values()], ["syscall", "kind", "summary"])
        return EXIT_OK
    if not args.syscall:
        fail("name a syscall (aos call agent.list) or use --list")
        return EXIT_USAGE
    raw = args.params
    if raw == "-":
        raw = sys.stdin.read()
    try:
        params = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        fail(f"params are not valid JSON: {exc}")
        return EXIT_USAGE
    if not isinstance(params, dict):
        fail('params must be a JSON object, e.g. \'{"agent": "alice"}\'')
        return EXIT_USAGE
    emit_json(rpc(paths, args.syscall, params))
    return EXIT_OK
