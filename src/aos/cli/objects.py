"""``aos agent``, ``session``, ``history`` and ``call``: the kernel's objects."""

from __future__ import annotations

import argparse
import json
import re
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


class UsageError(Exception):
    """Bad input on the command line: exit code 2, with this message."""


def _instructions(args: argparse.Namespace) -> str | None:
    if args.instructions is not None and args.instructions_file:
        raise UsageError("give --instructions or --instructions-file, not both")
    if args.instructions_file:
        try:
            return Path(args.instructions_file).read_text()
        except OSError as exc:
            raise UsageError(
                f"cannot read --instructions-file {args.instructions_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise UsageError(f"--instructions-file {args.instructions_file} is not UTF-8 text") from None
    return args.instructions  # type: ignore[no-any-return]


def _workspace(path: str | None) -> str | None:
    """A workspace as the daemon needs it: absolute (a relative one is taken from here, where
    the person typed it, not from the daemon's own folder)."""
    if not path:
        return path
    return str(Path(path).expanduser().absolute())


def _set_path(settings: dict[str, Any], dotted: str, value: Any, *, remove: bool = False) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise UsageError(f"--set/--unset needs a setting's name, not {dotted!r}")
    node = settings
    for k in keys[:-1]:
        child = node.get(k)
        if not isinstance(child, dict):
            if remove:
                return
            child = node[k] = {}
        node = child
    if remove:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string


def cmd_agent(args: argparse.Namespace, paths: Paths) -> int:
    try:
        return _cmd_agent(args, paths)
    except UsageError as exc:
        if getattr(args, "json", False):
            emit_json({"error": {"type": "usage", "message": str(exc)}})
        else:
            fail(str(exc))
        return EXIT_USAGE


def _cmd_agent(args: argparse.Namespace, paths: Paths) -> int:
    if args.agent_cmd == "set":
        return _agent_set(args, paths)
    if args.agent_cmd == "create":
        params: dict[str, Any] = {"name": args.name, "instructions": _instructions(args) or ""}
        for key in ("display_name", "model"):
            if getattr(args, key):
                params[key] = getattr(args, key)
        if args.workspace:
            params["workspace"] = _workspace(args.workspace)
        if args.placement:
            params["placement"] = args.placement
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
                "placement",
                "status",
                "revision",
                "created_at",
            ):
                echo(f"{key:<13} {a[key] if a[key] is not None else '-'}")
            echo(
                f"{'settings':<13} {json.dumps(a['settings'], ensure_ascii=False) if a['settings'] else '-'}"
            )
            echo(f"{'instructions':<13} {a['instructions'] or '-'}")
        return EXIT_OK
    said = {
        "restore": "restored agent {name} ({id}); its old sessions stay archived",
        "archive": "archived agent {name} ({id}) and its sessions",
    }
    a = rpc(paths, f"agent.{args.agent_cmd}", {"agent": args.agent})
    if args.json:
        emit_json(a)
    else:
        echo(said[args.agent_cmd].format(name=a["name"], id=a["id"]))
    return EXIT_OK


def _agent_set(args: argparse.Namespace, paths: Paths) -> int:
    with connect(paths) as c:
        agent = c.call("agent.get", {"agent": args.agent})
        params: dict[str, Any] = {"agent": agent["id"], "revision": agent["revision"]}
        instructions = _instructions(args)
        if instructions is not None:
            params["instructions"] = instructions
        if args.model is not None:
            params["model"] = args.model or None
        if args.display_name is not None:
            params["display_name"] = args.display_name or None
        if args.workspace is not None:
            params["workspace"] = _workspace(args.workspace) or None
        if args.placement:
            params["placement"] = args.placement
        settings = json.loads(json.dumps(agent.get("settings") or {}))  # a copy to change
        changed = False
        for verdict in ("allow", "ask", "deny"):
            for rule in getattr(args, f"guard_{verdict}"):
                try:
                    re.compile(rule)
                except re.error as exc:
                    raise UsageError(
                        f"--guard-{verdict} {rule!r} is not a regular expression: {exc}"
                    ) from None
                guard = settings.setdefault("guard", {})
                rules = guard.setdefault(verdict, [])
                if rule not in rules:
                    rules.append(rule)
                changed = True
        for item in args.set:
            key, sep, raw = item.partition("=")
            if not sep:
                raise UsageError(f"--set takes KEY=JSON, not {item!r}")
            _set_path(settings, key, _json_value(raw))
            changed = True
        for key in args.unset:
            _set_path(settings, key, None, remove=True)
            changed = True
        if changed:
            params["settings"] = settings  # secrets left as *** keep their stored value
        if len(params) == 2:
            raise UsageError(
                "nothing to change: give --model, --instructions, --placement, --guard-allow, --set, …"
            )
        a = c.call("agent.update", params)
    if args.json:
        emit_json(a)
    else:
        names = [
            k
            for k in ("instructions", "model", "display_name", "workspace", "placement", "settings")
            if k in params
        ]
        echo(f"updated agent {a['name']} (revision {a['revision']}): {', '.join(names)}")
    return EXIT_OK


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
        c.call("history.subscribe", {"session": args.session, "after_seq": args.after, "live": True})
        c.set_timeout(None)
        streamed: set[str] = set()  # commands whose output was shown as it printed
        try:
            for note in c.notifications():
                if note.method == "history.live":
                    event = note.params["event"]
                    if args.json:
                        echo(json.dumps({"live": event}, ensure_ascii=False))
                    elif event.get("type") == "output":
                        streamed.add(str(event.get("call_id")))
                        for line in str(event.get("text", "")).splitlines():
                            echo(" " * 33 + f"│ {line}")
                    elif event.get("type") == "model.retry":
                        echo(
                            " " * 33
                            + f"… model call failed ({event.get('error')}); retrying in {event.get('wait_s')} s"
                        )
                    sys.stdout.flush()
                elif note.method == "history.fact":
                    f = note.params["fact"]
                    if args.json:
                        echo(json.dumps(f, ensure_ascii=False))
                    elif f["kind"] == "tool.result" and str((f.get("body") or {}).get("call_id")) in streamed:
                        # Its output is already on screen: the line says how it ended.
                        echo(fact_line({**f, "body": {**f["body"], "output": "(output above)"}}))
                    else:
                        echo(fact_line(f))
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
