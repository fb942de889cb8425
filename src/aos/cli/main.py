"""``aos``: start, stop and talk to the AOS daemon.

Kept fast on purpose: a CLI call imports argparse, the small sync client and nothing heavy
(no pydantic, psycopg or litellm); the daemon's modules load only for ``aos start``.

Exit codes: 0 success; 1 the daemon answered with an error; 2 bad usage or configuration;
3 the daemon is not running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aos_sdk.errors import AosError, ConnectionLost, Unavailable
from aos_sdk.syncclient import SyncClient

from ..config import Paths, load_dotenv

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"aos: {text}\n")


def _print_json(value: Any) -> None:
    _out(json.dumps(value, indent=2, ensure_ascii=False))


def _client(paths: Paths, timeout: float | None = 30.0) -> SyncClient:
    return SyncClient(paths.kernel_sock, timeout=timeout)


def _call(paths: Paths, method: str, params: dict[str, Any] | None = None) -> Any:
    with _client(paths) as c:
        return c.call(method, params or {})


# -- formatting --------------------------------------------------------------------------------


def _ago(iso: str | None) -> str:
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


def _duration(secs: float) -> str:
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


def _table(rows: list[list[str]], headers: list[str]) -> None:
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    _out("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in rows:
        _out("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _body_text(body: Any) -> str:
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        for key in ("text", "content", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return json.dumps(body, ensure_ascii=False)


def _fact_line(f: dict[str, Any]) -> str:
    ts = str(f.get("created_at", ""))[11:19]
    who = f["kind"] + (f"/{f['role']}" if f.get("role") else "")
    text = _body_text(f.get("body"))
    first, *more = text.splitlines() or [""]
    line = f"#{f['seq']:<4} {ts}  {who:<18} {first}"
    if more:
        line += "\n" + "\n".join(" " * 33 + m for m in more)
    return line


# -- commands: daemon ----------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace, paths: Paths) -> int:
    from ..pidlock import PidLock

    if args.foreground:
        from ..kernel.daemon import run_daemon

        return run_daemon(
            unsafe_durability=args.unsafe_durability, ready_fd=args.ready_fd, foreground=args.ready_fd is None
        )
    pid = PidLock.holder(paths.pidfile)
    if pid is not None:
        _out(f"aos is already running (pid {pid})")
        return EXIT_OK
    return _start_detached(args, paths)


def _start_detached(args: argparse.Namespace, paths: Paths) -> int:
    import select
    import subprocess

    paths.ensure()
    rfd, wfd = os.pipe()
    cmd = [sys.executable, "-m", "aos", "start", "--foreground", "--ready-fd", str(wfd)]
    if args.unsafe_durability:
        cmd.append("--unsafe-durability")
    out_path = paths.logs / "daemon.out"
    with open(out_path, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=(wfd,),
            start_new_session=True,
            cwd="/",
        )
    os.close(wfd)
    deadline = time.monotonic() + args.timeout
    data = b""
    with os.fdopen(rfd, "rb", buffering=0) as pipe:
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _err(
                    f"the daemon did not report ready within {args.timeout:.0f} s (pid {proc.pid}); "
                    f"see {paths.log_file} and {out_path}"
                )
                return EXIT_ERROR
            ready, _, _ = select.select([pipe], [], [], remaining)
            if not ready:
                continue
            chunk = pipe.read(4096)
            if not chunk:
                break
            data += chunk
    line = data.decode(errors="replace").strip()
    if line == "ready":
        _out(f"aos started (pid {proc.pid}, home {paths.home})")
        return EXIT_OK
    if "already running" in line:
        _out(line.removeprefix("error: "))
        return EXIT_OK
    _err(line.removeprefix("error: ") or f"the daemon exited with code {proc.wait()}; see {out_path}")
    return EXIT_ERROR


def cmd_stop(args: argparse.Namespace, paths: Paths) -> int:
    import select
    import signal

    from ..pidlock import PidLock

    pid = PidLock.holder(paths.pidfile)
    if pid is None:
        _out("aos is not running")
        return EXIT_OK
    if pid <= 0:
        _err(f"a daemon holds {paths.pidfile} but its pid is unreadable")
        return EXIT_ERROR
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        _out("aos is not running")
        return EXIT_OK
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    ready, _, _ = select.select([pidfd], [], [], args.timeout)
    if ready:
        os.close(pidfd)
        _out(f"aos stopped (pid {pid}, {time.monotonic() - t0:.1f} s)")
        return EXIT_OK
    _err(f"the daemon did not stop within {args.timeout:.0f} s; killing it (SIGKILL)")
    os.kill(pid, signal.SIGKILL)
    select.select([pidfd], [], [], 10)
    os.close(pidfd)
    _out(f"aos killed (pid {pid}); PostgreSQL shuts itself down when its parent dies")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace, paths: Paths) -> int:
    """Print the web UI's sign-in link (one use; each run of ``aos ui`` prints a fresh one)."""
    from ..pidlock import PidLock

    if PidLock.holder(paths.pidfile) is None:
        _err("aos is not running; start it with `aos start`")
        return EXIT_NOT_RUNNING
    link = paths.run / "ui.json"
    deadline = time.monotonic() + args.wait
    while True:  # right after `aos start`, the aos-frontend service may still be starting
        try:
            data = json.loads(link.read_text())
            os.kill(int(data["pid"]), 0)  # left behind by a service that died: wait for the new one
            break
        except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError, ProcessLookupError):
            if time.monotonic() >= deadline:
                _err(
                    "the web UI is not running: is the aos-frontend skill enabled? "
                    "`aos skills` shows its state, `aos skills logs aos-frontend` its log"
                )
                return EXIT_ERROR
            time.sleep(0.1)
    if data.get("error"):
        _err(str(data["error"]))
        return EXIT_ERROR
    _out(str(data["link"]))
    if args.open:
        import webbrowser

        if not webbrowser.open(str(data["link"])):
            _err("no browser to open here: copy the link above")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    from ..pidlock import PidLock

    pid = PidLock.holder(paths.pidfile)
    if pid is None:
        if args.json:
            _print_json({"running": False, "home": str(paths.home)})
        else:
            _out(f"aos is not running (home {paths.home})")
        return EXIT_NOT_RUNNING
    try:
        st = _call(paths, "system.status")
    except (Unavailable, ConnectionLost) as exc:
        if args.json:
            _print_json({"running": True, "pid": pid, "serving": False, "error": exc.message})
        else:
            _out(f"aos is starting or stopping (pid {pid}); the kernel socket does not answer: {exc.message}")
        return EXIT_ERROR
    st = {"running": True, **st}
    if args.json:
        _print_json(st)
        return EXIT_OK
    db = st["database"]
    c = st["counts"]
    _out(f"aos {st['version']} running, pid {st['pid']}, up {_duration(st['uptime_s'])}")
    _out(f"  home       {st['home']}")
    durability = "" if not db["unsafe_durability"] else "  (UNSAFE durability)"
    _out(f"  database   {db['kind']} PostgreSQL {db['server_version']}: {db['url']}{durability}")
    _out(f"  schema     version {st['schema_version']}")
    sb = st.get("sandbox") or {}
    if sb:
        flag = "" if sb["in_force"] == "bwrap" or sb["mode"] == "off" else "  (WARNING)"
        _out(f"  sandbox    {sb['in_force']} (mode {sb['mode']}): {sb['why']}{flag}")
    for name, path in st["sockets"].items():
        _out(f"  socket     {name}: {path}")
    _out(
        f"  counts     {c['agents']} agents, {c['sessions']} sessions, {c['facts']} facts, "
        f"{c['connections']} connections, {c['subscriptions']} subscriptions"
    )
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, paths: Paths) -> int:
    from ..logs import format_line

    path = paths.log_file
    if not path.exists():
        _err(f"no log yet at {path}")
        return EXIT_ERROR
    show: Callable[[str], str] = (lambda s: s.rstrip("\n")) if args.raw else format_line
    with open(path, errors="replace") as fh:
        lines = fh.readlines()
        for line in lines[-args.lines :] if args.lines else lines:
            _out(show(line))
        if not args.follow:
            return EXIT_OK
        try:
            while True:
                line = fh.readline()
                if line:
                    _out(show(line))
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)  # a human is watching; polling the file is enough
        except KeyboardInterrupt:
            return EXIT_OK


# -- commands: objects ---------------------------------------------------------------------------


def cmd_agent(args: argparse.Namespace, paths: Paths) -> int:
    if args.agent_cmd == "create":
        instructions = args.instructions or ""
        if args.instructions_file:
            instructions = Path(args.instructions_file).read_text()
        params: dict[str, Any] = {"name": args.name, "instructions": instructions}
        for key in ("display_name", "model", "workspace"):
            if getattr(args, key):
                params[key] = getattr(args, key)
        a = _call(paths, "agent.create", params)
        if args.json:
            _print_json(a)
        else:
            _out(f"created agent {a['name']} ({a['id']})")
        return EXIT_OK
    if args.agent_cmd == "list":
        res = _call(paths, "agent.list", {"include_archived": args.all})
        if args.json:
            _print_json(res["agents"])
        elif not res["agents"]:
            _out("no agents yet; create one with `aos agent create <name>`")
        else:
            _table(
                [
                    [a["name"], a["id"], a["model"] or "(default)", a["status"], _ago(a["created_at"])]
                    for a in res["agents"]
                ],
                ["name", "id", "model", "status", "created"],
            )
        return EXIT_OK
    if args.agent_cmd == "show":
        a = _call(paths, "agent.get", {"agent": args.agent})
        if args.json:
            _print_json(a)
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
                _out(f"{key:<13} {a[key] if a[key] is not None else '-'}")
            _out(f"{'instructions':<13} {a['instructions'] or '-'}")
        return EXIT_OK
    if args.agent_cmd == "archive":
        a = _call(paths, "agent.archive", {"agent": args.agent})
        if args.json:
            _print_json(a)
        else:
            _out(f"archived agent {a['name']} ({a['id']}) and its sessions")
        return EXIT_OK
    raise AssertionError(args.agent_cmd)


def cmd_session(args: argparse.Namespace, paths: Paths) -> int:
    if args.session_cmd == "create":
        params: dict[str, Any] = {"agent": args.agent}
        if args.title:
            params["title"] = args.title
        s = _call(paths, "session.create", params)
        if args.json:
            _print_json(s)
        else:
            _out(f"created session {s['id']} for agent {args.agent}")
        return EXIT_OK
    if args.session_cmd == "list":
        params = {"include_archived": args.all, "limit": args.limit}
        if args.agent:
            params["agent"] = args.agent
        res = _call(paths, "session.list", params)
        if args.json:
            _print_json(res["sessions"])
        elif not res["sessions"]:
            _out("no sessions")
        else:
            names = {
                a["id"]: a["name"] for a in _call(paths, "agent.list", {"include_archived": True})["agents"]
            }
            _table(
                [
                    [
                        s["id"],
                        names.get(s["agent_id"], s["agent_id"]),
                        s["title"] or "-",
                        s["phase"],
                        str(s["last_seq"]),
                        _ago(s["updated_at"]),
                    ]
                    for s in res["sessions"]
                ],
                ["id", "agent", "title", "phase", "facts", "updated"],
            )
        return EXIT_OK
    if args.session_cmd == "show":
        s = _call(paths, "session.get", {"session": args.session})
        if args.json:
            _print_json(s)
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
                _out(f"{key:<12} {s[key] if s[key] is not None else '-'}")
        return EXIT_OK
    raise AssertionError(args.session_cmd)


def cmd_history(args: argparse.Namespace, paths: Paths) -> int:
    with _client(paths) as c:
        if not args.follow:
            after = args.after
            while True:
                res = c.call("history.list", {"session": args.session, "after_seq": after, "limit": 1000})
                for f in res["facts"]:
                    _out(json.dumps(f, ensure_ascii=False) if args.json else _fact_line(f))
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
                    _out(json.dumps(f, ensure_ascii=False) if args.json else _fact_line(f))
                    sys.stdout.flush()
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK


def cmd_call(args: argparse.Namespace, paths: Paths) -> int:
    if args.list:
        from ..kernel.syscalls import SYSCALLS

        if args.json:
            _print_json([{"name": s.name, "kind": s.kind, "summary": s.summary} for s in SYSCALLS.values()])
        else:
            _table([[s.name, s.kind, s.summary] for s in SYSCALLS.values()], ["syscall", "kind", "summary"])
        return EXIT_OK
    if not args.syscall:
        _err("name a syscall (aos call agent.list) or use --list")
        return EXIT_USAGE
    raw = args.params
    if raw == "-":
        raw = sys.stdin.read()
    try:
        params = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        _err(f"params are not valid JSON: {exc}")
        return EXIT_USAGE
    if not isinstance(params, dict):
        _err('params must be a JSON object, e.g. \'{"agent": "alice"}\'')
        return EXIT_USAGE
    _print_json(_call(paths, args.syscall, params))
    return EXIT_OK


# -- commands: dispatch ------------------------------------------------------------------------


class _Render:
    """Prints a dispatch's facts for people as they arrive (``aos chat``, ``aos send --wait``)."""

    def __init__(self, agent: str, *, lines: int = 20) -> None:
        self.agent = agent
        self.lines = lines

    def fact(self, f: dict[str, Any]) -> None:
        kind, body = f["kind"], f.get("body") or {}
        if kind == "message" and f.get("role") == "assistant":
            if body.get("text"):
                _out(f"{self.agent}> {body['text']}")
        elif kind == "tool.started":
            _out(f"  $ {body['command']}")
        elif kind == "tool.result":
            outcome = body.get("outcome")
            text = str(body.get("output", ""))
            shown = text.splitlines()
            for line in shown[: self.lines]:
                _out(f"  │ {line}")
            if len(shown) > self.lines:
                _out(f"  │ … {len(shown) - self.lines} more lines")
            if outcome not in ("ok", None) or body.get("exit_code") not in (0, None):
                detail = f"exit {body['exit_code']}" if body.get("exit_code") not in (0, None) else outcome
                _out(f"  └ [{detail}]")
        elif kind == "approval.requested":
            _out(
                f"  ? approval {body['approval_id']} needed ({body['skill']}: {body['reason']}): {body['command']}"
            )
        elif kind == "approval.resolved":
            _out(f"  ✓ approval {body['approval_id']}: {body['decision']}")
        elif kind == "error":
            _out(f"  ! {body.get('message')}")
        elif kind == "interrupt":
            _out(f"  [interrupted: {body.get('reason')}]")
        elif kind in ("dispatch.waiting", "context.compaction_skipped"):
            _out(f"  … {body.get('reason')}")
        elif isinstance(body, dict) and isinstance(body.get("notice"), str):
            # A skill speaking to the agent (a message from another agent, a reply): shown too.
            first, _, rest = body["notice"].partition("\n")
            _out(f"  ✉ {first}")
            for line in rest.splitlines()[: self.lines]:
                _out(f"  │ {line}")
        elif kind == "dispatch.end":
            u = body.get("usage") or {}
            cost = f", ${u['cost']:.4f}" if u.get("cost") else ""
            _out(
                f"  — {body.get('status')} in {body.get('steps')} steps, "
                f"{u.get('prompt_tokens', 0)}+{u.get('completion_tokens', 0)} tokens{cost}"
            )
        sys.stdout.flush()


def _follow_dispatch(
    c: SyncClient,
    session: str,
    dispatch_id: str,
    render: _Render | None,
    *,
    json_out: bool = False,
    on_approval: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Print the dispatch's facts until its ``dispatch.end``; Ctrl-C interrupts it, twice leaves."""
    interrupted = False
    notes = c.notifications()
    while True:
        # Ctrl-C may land anywhere in here (waiting, printing, asking): it always interrupts.
        try:
            note = next(notes)
            if note.method != "history.fact":
                continue
            f = note.params["fact"]
            mine = (f.get("meta") or {}).get("dispatch_id") == dispatch_id
            notice = isinstance(f.get("body"), dict) and "notice" in f["body"]
            if not mine and not notice:
                continue
            if json_out:
                _out(json.dumps(f, ensure_ascii=False))
                sys.stdout.flush()
            elif render is not None:
                render.fact(f)
            if f["kind"] == "approval.requested" and on_approval is not None:
                on_approval(f["body"])
            if f["kind"] == "dispatch.end":
                return dict(f["body"])
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            _err("interrupting (Ctrl-C again to leave)")
            c.call("session.interrupt", {"session": session, "reason": "Ctrl-C"})
            notes = c.notifications()  # the interrupt closed the old generator


def _subscribe(c: SyncClient, session: str) -> None:
    """Follow the session's new facts on this connection (once: every dispatch comes through it)."""
    c.call("history.subscribe", {"session": session})
    c.set_timeout(None)


def cmd_send(args: argparse.Namespace, paths: Paths) -> int:
    with _client(paths) as c:
        if not args.wait:
            started = c.call("session.dispatch", {"session": args.session, "message": args.text})
            if args.json:
                _print_json(started)
            else:
                _out(
                    f"dispatched {started['dispatch_id']}; follow it with: aos history {args.session} --follow"
                )
            return EXIT_OK
        session = c.call("session.get", {"session": args.session})
        agent = c.call("agent.get", {"agent": session["agent_id"]})
        _subscribe(c, args.session)
        dispatch_id = c.call("session.dispatch", {"session": args.session, "message": args.text})[
            "dispatch_id"
        ]
        end = _follow_dispatch(c, args.session, dispatch_id, _Render(agent["name"]), json_out=args.json)
    return EXIT_OK if end.get("status") == "done" else EXIT_ERROR


def cmd_interrupt(args: argparse.Namespace, paths: Paths) -> int:
    res = _call(paths, "session.interrupt", {"session": args.session, "reason": args.reason})
    if args.json:
        _print_json(res)
    elif res["interrupted"]:
        _out(f"interrupting dispatch {res['dispatch_id']}")
    else:
        _out(f"session {args.session} has no running dispatch")
    return EXIT_OK


def cmd_chat(args: argparse.Namespace, paths: Paths) -> int:
    with _client(paths) as c:
        agent = c.call("agent.get", {"agent": args.agent})
        session_id = args.session
        if session_id is None and not args.new:
            recent = c.call("session.list", {"agent": agent["id"], "limit": 1})["sessions"]
            session_id = recent[0]["id"] if recent else None
        if session_id is None:
            session_id = c.call("session.create", {"agent": agent["id"], "title": "chat"})["id"]
            _out(f"new session {session_id} with {agent['name']}")
        else:
            _out(f"session {session_id} with {agent['name']} (--new starts a fresh one)")
        _out("Type a message; Ctrl-C interrupts a reply, Ctrl-D leaves.")
        render = _Render(agent["name"])

        def approve(body: dict[str, Any]) -> None:
            try:
                answer = input(f"  approve {body['command']!r}? [y/N] ").strip().lower()
            except EOFError:
                answer = ""
            decision = "approve" if answer in ("y", "yes") else "deny"
            c.call(
                "approval.resolve",
                {"approval": body["approval_id"], "decision": decision, "note": "aos chat"},
            )

        _subscribe(c, session_id)
        while True:
            try:
                text = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                _out("")
                return EXIT_OK
            if not text:
                continue
            dispatch_id = c.call("session.dispatch", {"session": session_id, "message": text})["dispatch_id"]
            try:
                _follow_dispatch(c, session_id, dispatch_id, render, on_approval=approve)
            except KeyboardInterrupt:
                _out("")
                return EXIT_OK


def cmd_hooks(args: argparse.Namespace, paths: Paths) -> int:
    hooks = _call(paths, "hook.list")["hooks"]
    if args.json:
        _print_json(hooks)
        return EXIT_OK
    for h in hooks:
        tag = f"{h['class']}{', required' if h['required'] else ''}"
        _out(f"{h['hook']} ({tag})")
        if not h["handlers"]:
            _out("    (no handlers)")
        for i, x in enumerate(h["handlers"], 1):
            _out(
                f"    {i}. {x['skill']}  scope={x['scope']} priority={x['priority']} "
                f"timeout={x['timeout_s']}s failure={x['failure']}"
            )
    return EXIT_OK


def cmd_approvals(args: argparse.Namespace, paths: Paths) -> int:
    params: dict[str, Any] = {"status": None if args.all else "pending"}
    if args.session:
        params["session"] = args.session
    rows = _call(paths, "approval.list", params)["approvals"]
    if args.json:
        _print_json(rows)
    elif not rows:
        _out("no pending approvals" if not args.all else "no approvals")
    else:
        _table(
            [
                [
                    a["id"],
                    a["status"],
                    a["session_id"],
                    f"{a['skill']}: {a['reason']}",
                    _clip(a["command"]),
                    _ago(a["created_at"]),
                ]
                for a in rows
            ],
            ["id", "status", "session", "why", "command", "asked"],
        )
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace, paths: Paths) -> int:
    decision = "approve" if args.cmd == "approve" else "deny"
    a = _call(paths, "approval.resolve", {"approval": args.approval, "decision": decision, "note": args.note})
    if args.json:
        _print_json(a)
    else:
        _out(f"{a['status']}: {a['command']}")
    return EXIT_OK


def cmd_usage(args: argparse.Namespace, paths: Paths) -> int:
    params: dict[str, Any] = {"group_by": args.by, "since_days": args.days}
    if args.agent:
        params["agent"] = args.agent
    if args.session:
        params["session"] = args.session
    res = _call(paths, "usage.get", params)
    if args.json:
        _print_json(res)
        return EXIT_OK

    def cost(v: float | None) -> str:
        return "-" if v is None else f"${v:.4f}"

    rows = [
        [r["key"], str(r["calls"]), str(r["prompt_tokens"]), str(r["completion_tokens"]), cost(r["cost"])]
        for r in res["rows"]
    ]
    if not rows:
        _out(f"no model calls in the last {args.days} days")
        return EXIT_OK
    t = res["total"]
    rows.append(
        ["total", str(t["calls"]), str(t["prompt_tokens"]), str(t["completion_tokens"]), cost(t["cost"])]
    )
    _table(rows, [args.by, "calls", "prompt", "completion", "cost"])
    return EXIT_OK


def _service_cell(sk: dict[str, Any]) -> str:
    st = sk.get("service_status")
    if not sk["service"]:
        return "-"
    if not st:
        return f"{sk['service']} (not started)"
    extra = f", {st['restarts']} restarts" if st["restarts"] else ""
    if st.get("reload_failed"):
        extra += f", RELOAD FAILED (the previous version serves): {st['reload_failed']}"
    if st["state"] in ("quarantined", "backoff") and st.get("last_error"):
        extra += f": {st['last_error']}"
    if st.get("problem"):
        extra += f", PROBLEM: {st['problem']}"
    hooks = f", hooks: {' '.join(st['hooks'])}" if st["hooks"] else ""
    cmds = f", commands: {' '.join(st['commands'])}" if st["commands"] else ""
    return f"{st['state']}{extra}{hooks}{cmds}"


def cmd_skills(args: argparse.Namespace, paths: Paths) -> int:
    scope: dict[str, Any] = {}
    if getattr(args, "session", None):
        scope["session"] = args.session
    if getattr(args, "agent", None):
        scope["agent"] = args.agent
    if args.skills_cmd == "reload":
        res = _call(paths, "skill.reload", {"skill": args.name} if args.name else {})
        if args.json:
            _print_json(res)
        else:
            for name in res.get("revived", []):
                _out(f"{name}: its quarantined service is starting again")
            _out(
                f"{res['count']} skills; added {res['added'] or '-'}, removed {res['removed'] or '-'}, changed {res['changed'] or '-'}"
            )
        return EXIT_OK
    if args.skills_cmd == "logs":
        log_path = paths.logs / "skills" / f"{args.name}.log"
        if not log_path.exists():
            _err(f"no log for skill {args.name!r} at {log_path} (has its service ever started?)")
            return EXIT_ERROR
        lines = log_path.read_text(errors="replace").splitlines()
        for line in lines[-args.lines :] if args.lines else lines:
            _out(line)
        return EXIT_OK
    if args.skills_cmd == "show":
        sk = _call(paths, "skill.get", {"skill": args.name, **scope})
        if args.json:
            _print_json(sk)
            return EXIT_OK
        _out(f"{sk['name']}  ({sk['path']})")
        _out(f"  {sk['description']}")
        verdict = "spec-valid" if sk["spec_valid"] else "NOT spec-valid"
        _out(f"  {verdict}; {'usable' if sk['usable'] else 'NOT usable'} by AOS")
        if sk["enabled"] is not None:
            _out(f"  {'enabled' if sk['enabled'] else 'disabled'} ({sk['why']})")
        if sk["service"]:
            _out(f"  service: {sk['service']}")
            _out(f"  may call: {' '.join(sk['permissions']) or 'no syscalls'}")
            _out(f"  environment from the daemon: {' '.join(sk['env']) or 'none declared (aos-env)'}")
            st = sk.get("service_status")
            if st:
                _out(f"  state: {_service_cell(sk)}")
                if st.get("last_error"):
                    _out(f"  last error: {st['last_error']}")
                if st["state"] == "quarantined":
                    _out(f"  quarantined: fix it, then `aos skills reload {sk['name']}` starts it again")
                _out(f"  log: aos skills logs {sk['name']}")
        for d in sk["diagnostics"]:
            _out(f"  {d['level']}: {d['message']}")
        _out("")
        _out(sk["body"])
        return EXIT_OK
    res = _call(paths, "skill.list", scope)
    if args.json:
        _print_json(res["skills"])
        return EXIT_OK
    rows = []
    for sk in res["skills"]:
        state = "-" if sk["enabled"] is None else ("on" if sk["enabled"] else "off")
        if sk["enabled"] is None:
            state = "on" if sk["usable"] and sk["default_enabled"] else "off"
        problems = "; ".join(d["message"] for d in sk["diagnostics"]) or "-"
        rows.append(
            [
                sk["name"],
                state,
                "yes" if sk["spec_valid"] else "no",
                "yes" if sk["usable"] else "no",
                _service_cell(sk),
                (" ".join(sk["permissions"]) or "-") if sk["service"] else "-",
                _clip(problems, 70),
            ]
        )
    if not rows:
        _out(f"no skills in {', '.join(res['roots'])}")
        return EXIT_OK
    _table(rows, ["skill", "state", "spec", "usable", "service", "may call", "diagnostics"])
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of human output")

    p = argparse.ArgumentParser(
        prog="aos",
        description="AOS, a local operating system for LLM agents. The daemon keeps state in PostgreSQL "
        "under $AOS_HOME (default ~/.aos).",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not running.",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("start", help="start the daemon (returns once it serves)")
    s.add_argument("--foreground", action="store_true", help="stay attached (for systemd and debugging)")
    s.add_argument(
        "--unsafe-durability",
        action="store_true",
        help="run even if the database has fsync or synchronous_commit off",
    )
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")
    s.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_start)

    s = sub.add_parser("stop", help="stop the daemon and everything it started")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL (default 30)")
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("status", parents=[common], help="is the daemon running; pid, uptime, database")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("logs", help="show the daemon log readably")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    s.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0: all; default 50)")
    s.add_argument("--raw", action="store_true", help="print the JSON lines as stored")
    s.set_defaults(func=cmd_logs)

    a = sub.add_parser("agent", help="create, list, show, archive agents")
    asub = a.add_subparsers(dest="agent_cmd", required=True, metavar="ACTION")
    x = asub.add_parser("create", parents=[common], help="create an agent")
    x.add_argument("name", help="unique name: lowercase letters, digits, - and _")
    x.add_argument("--model", help="litellm model id (default: aoscb.json's model)")
    x.add_argument("--instructions", help="standing instructions for the agent")
    x.add_argument("--instructions-file", help="read the instructions from a file")
    x.add_argument("--display-name")
    x.add_argument("--workspace", help="bash working folder (default $AOS_HOME/workspaces/<name>)")
    x = asub.add_parser("list", parents=[common], help="list agents")
    x.add_argument("--all", action="store_true", help="include archived agents")
    x = asub.add_parser("show", parents=[common], help="show one agent")
    x.add_argument("agent", help="name or id")
    x = asub.add_parser("archive", parents=[common], help="archive an agent and its sessions")
    x.add_argument("agent", help="name or id")
    a.set_defaults(func=cmd_agent)

    se = sub.add_parser("session", help="create, list, show sessions")
    ssub = se.add_subparsers(dest="session_cmd", required=True, metavar="ACTION")
    x = ssub.add_parser("create", parents=[common], help="create a session for an agent")
    x.add_argument("agent", help="agent name or id")
    x.add_argument("--title")
    x = ssub.add_parser("list", parents=[common], help="list sessions, newest first")
    x.add_argument("--agent", help="only this agent's")
    x.add_argument("--all", action="store_true", help="include archived sessions")
    x.add_argument("--limit", type=int, default=50)
    x = ssub.add_parser("show", parents=[common], help="show one session")
    x.add_argument("session")
    se.set_defaults(func=cmd_session)

    h = sub.add_parser("history", parents=[common], help="print a session's history")
    h.add_argument("session")
    h.add_argument("-f", "--follow", action="store_true", help="keep printing new facts as they are appended")
    h.add_argument("--after", type=int, default=0, help="start after this seq (default 0: everything)")
    h.set_defaults(func=cmd_history)

    x = sub.add_parser("send", parents=[common], help="send a message to a session (runs the agent)")
    x.add_argument("session")
    x.add_argument("text")
    x.add_argument("--wait", action="store_true", help="stream the reply until the dispatch ends")
    x.set_defaults(func=cmd_send)

    x = sub.add_parser("chat", help="talk to an agent interactively")
    x.add_argument("agent", help="agent name or id")
    x.add_argument("--session", help="resume this session (default: the agent's latest)")
    x.add_argument("--new", action="store_true", help="start a new session")
    x.set_defaults(func=cmd_chat)

    x = sub.add_parser("interrupt", parents=[common], help="stop a session's running dispatch")
    x.add_argument("session")
    x.add_argument("--reason", default="interrupted by the user")
    x.set_defaults(func=cmd_interrupt)

    x = sub.add_parser("hooks", parents=[common], help="every hook and its handlers, in firing order")
    x.set_defaults(func=cmd_hooks)

    x = sub.add_parser("approvals", parents=[common], help="commands waiting for a human decision")
    x.add_argument("--all", action="store_true", help="include resolved ones")
    x.add_argument("--session")
    x.set_defaults(func=cmd_approvals)
    for verb, what in (("approve", "let a command run"), ("deny", "refuse a command")):
        x = sub.add_parser(verb, parents=[common], help=what)
        x.add_argument("approval", help="approval id (aos approvals lists them)")
        x.add_argument("--note", help="a note for the agent and the record")
        x.set_defaults(func=cmd_resolve)

    x = sub.add_parser("usage", parents=[common], help="tokens and cost of model calls")
    x.add_argument("--by", choices=["day", "agent", "session", "model"], default="day")
    x.add_argument("--agent")
    x.add_argument("--session")
    x.add_argument("--days", type=int, default=30)
    x.set_defaults(func=cmd_usage)

    sk = sub.add_parser("skills", parents=[common], help="every skill: verdicts, state, diagnostics")
    sk.add_argument("--session", help="show what is enabled for this session")
    sk.add_argument("--agent", help="show what is enabled for this agent")
    sksub = sk.add_subparsers(dest="skills_cmd", metavar="ACTION")
    x = sksub.add_parser("show", parents=[common], help="one skill, with its SKILL.md text")
    x.add_argument("name")
    x = sksub.add_parser(
        "reload",
        parents=[common],
        help="re-scan the skill roots now; with a name, also restart that skill's quarantined service",
    )
    x.add_argument("name", nargs="?", help="a skill whose quarantined service should start again")
    x = sksub.add_parser("logs", help="the last lines of a skill service's log")
    x.add_argument("name")
    x.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0: all; default 50)")
    sk.set_defaults(func=cmd_skills)

    x = sub.add_parser(
        "ui",
        help="print the web UI's sign-in link (good for one sign-in)",
        description="Print a link that signs this browser in to the web UI (aos-frontend). "
        "Each link works once; run `aos ui` again for another browser.",
    )
    x.add_argument("--open", action="store_true", help="also open it in a browser, when there is one")
    x.add_argument("--wait", type=float, default=10, help="seconds to wait for the UI to start (default 10)")
    x.set_defaults(func=cmd_ui)

    c = sub.add_parser("call", parents=[common], help="call a syscall with JSON params (raw access)")
    c.add_argument("syscall", nargs="?", help="e.g. agent.list")
    c.add_argument("params", nargs="?", default="", help="JSON object, or - to read it from stdin")
    c.add_argument("--list", action="store_true", help="list every syscall")
    c.set_defaults(func=cmd_call)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_dotenv()
    paths = Paths.from_env()
    try:
        return int(args.func(args, paths))
    except Unavailable as exc:
        if exc.details.get("not_running"):  # no daemon to answer at all (raised by the client)
            _err(f"aos is not running (no daemon on {paths.kernel_sock}); start it with `aos start`")
            return EXIT_NOT_RUNNING
        # The daemon answered: something it needs is down (the database, a model), or it is stopping.
        if getattr(args, "json", False):
            _print_json({"error": exc.to_error()})
        else:
            _err(f"{exc.type}: {exc.message}")
        return EXIT_ERROR
    except AosError as exc:
        if getattr(args, "json", False):
            _print_json({"error": exc.to_error()})
        else:
            _err(f"{exc.type}: {exc.message}")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
