"""``aos start``, ``stop``, ``status``, ``logs`` and ``ui``: the daemon itself."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from aos_sdk.errors import ConnectionLost, Unavailable

from ..config import Paths
from .output import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    duration,
    echo,
    emit_json,
    fail,
    rpc,
    warn,
)


def cmd_start(args: argparse.Namespace, paths: Paths) -> int:
    from ..pidlock import PidLock

    if args.foreground:
        from ..kernel.daemon import run_daemon

        return run_daemon(
            unsafe_durability=args.unsafe_durability, ready_fd=args.ready_fd, foreground=args.ready_fd is None
        )
    pid = PidLock.holder(paths.pidfile)
    if pid is not None:
        say(args, {"running": True, "pid": pid, "started": False}, f"aos is already running (pid {pid})")
        return EXIT_OK
    from ..config import ConfigError, load_config

    try:  # a bad aoscb.json is a usage error, said here rather than from a daemon that exited
        config = load_config(paths)
    except ConfigError as exc:
        fail(str(exc), "config")
        return EXIT_USAGE
    for warning in config.warnings:
        warn(warning)
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
                fail(
                    f"the daemon did not report ready within {args.timeout:.0f} s (pid {proc.pid}); "
                    f"see {paths.log_file} and {out_path}",
                    "timeout",
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
        home = str(paths.home)
        say(
            args,
            {"running": True, "pid": proc.pid, "started": True, "home": home},
            f"aos started (pid {proc.pid}, home {home})",
        )
        return EXIT_OK
    if "already running" in line:
        say(
            args,
            {"running": True, "started": False, "message": line.removeprefix("error: ")},
            line.removeprefix("error: "),
        )
        return EXIT_OK
    fail(line.removeprefix("error: ") or f"the daemon exited with code {proc.wait()}; see {out_path}")
    return EXIT_ERROR


def say(args: argparse.Namespace, data: dict[str, object], text: str) -> None:
    """A command's result: ``data`` under ``--json``, else ``text``."""
    if getattr(args, "json", False):
        emit_json(data)
    else:
        echo(text)


def cmd_stop(args: argparse.Namespace, paths: Paths) -> int:
    import select
    import signal

    from ..pidlock import PidLock, pid_namespace

    got = PidLock.record(paths.pidfile)
    if got is None:
        say(args, {"running": False, "stopped": False}, "aos is not running")
        return EXIT_OK
    pid, ns = got
    if ns is not None and ns != pid_namespace():
        # Its pid is one of another PID namespace (a container's): it means another process
        # here, so it is asked over its socket, and the lock says when it has gone.
        t0 = time.monotonic()
        rpc(paths, "system.stop")
        if not PidLock.wait_released(paths.pidfile, args.timeout):
            fail(f"the daemon (pid {pid} in {ns}) did not stop within {args.timeout:.0f} s")
            return EXIT_ERROR
        took = round(time.monotonic() - t0, 1)
        say(args, {"stopped": True, "pid": pid, "pid_ns": ns, "seconds": took}, f"aos stopped ({took} s)")
        return EXIT_OK
    if pid <= 0:
        fail(f"a daemon holds {paths.pidfile} but its pid is unreadable")
        return EXIT_ERROR
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        say(args, {"running": False, "stopped": False}, "aos is not running")
        return EXIT_OK
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    ready, _, _ = select.select([pidfd], [], [], args.timeout)
    if ready:
        os.close(pidfd)
        took = round(time.monotonic() - t0, 1)
        say(args, {"stopped": True, "pid": pid, "seconds": took}, f"aos stopped (pid {pid}, {took} s)")
        return EXIT_OK
    warn(f"the daemon did not stop within {args.timeout:.0f} s; killing it (SIGKILL)")
    os.kill(pid, signal.SIGKILL)
    select.select([pidfd], [], [], 10)
    os.close(pidfd)
    say(
        args,
        {"stopped": True, "pid": pid, "killed": True},
        f"aos killed (pid {pid}); PostgreSQL shuts itself down when its parent dies",
    )
    return EXIT_OK


def cmd_ui(args: argparse.Namespace, paths: Paths) -> int:
    """Print the web UI's sign-in link (one use; each run of ``aos ui`` prints a fresh one)."""
    from ..pidlock import PidLock

    if PidLock.holder(paths.pidfile) is None:
        fail("aos is not running; start it with `aos start`", "not_running")
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
                fail(
                    "the web UI is not running: is the aos-frontend skill enabled? "
                    "`aos skills` shows its state, `aos skills logs aos-frontend` its log"
                )
                return EXIT_ERROR
            time.sleep(0.1)
    if data.get("error"):
        fail(str(data["error"]), "ui_unavailable")
        return EXIT_ERROR
    opened = None
    if args.open:
        import webbrowser

        opened = bool(webbrowser.open(str(data["link"])))
    if args.json:
        emit_json({"url": data["url"], "link": data["link"], "opened": opened})
        return EXIT_OK
    echo(str(data["link"]))
    if opened is False:
        warn("no browser to open here: copy the link above")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    from ..pidlock import PidLock

    pid = PidLock.holder(paths.pidfile)
    if pid is None:
        if args.json:
            emit_json({"running": False, "home": str(paths.home)})
        else:
            echo(f"aos is not running (home {paths.home})")
        return EXIT_NOT_RUNNING
    try:
        st = rpc(paths, "system.status")
    except (Unavailable, ConnectionLost) as exc:
        answered = isinstance(exc, Unavailable) and not exc.details.get("not_running")
        if args.json:
            emit_json({"running": True, "pid": pid, "serving": answered, "error": exc.message})
        elif answered:  # it answered: something it needs is away (its database)
            echo(f"aos is running (pid {pid}) but cannot serve: {exc.message}")
        else:
            echo(f"aos is starting or stopping (pid {pid}); the kernel socket does not answer: {exc.message}")
        return EXIT_ERROR
    st = {"running": True, **st}
    if args.json:
        emit_json(st)
        return EXIT_OK
    db = st["database"]
    c = st["counts"]
    echo(f"aos {st['version']} running, pid {st['pid']}, up {duration(st['uptime_s'])}")
    echo(f"  home       {st['home']}")
    durability = "" if not db["unsafe_durability"] else "  (UNSAFE durability)"
    echo(f"  database   {db['kind']} PostgreSQL {db['server_version']}: {db['url']}{durability}")
    echo(f"  schema     version {st['schema_version']}")
    sb = st.get("sandbox") or {}
    if sb:
        flag = "" if sb["in_force"] == "bwrap" or sb["mode"] == "off" else "  (WARNING)"
        echo(f"  sandbox    {sb['in_force']} (mode {sb['mode']}): {sb['why']}{flag}")
    for name, path in st["sockets"].items():
        echo(f"  socket     {name}: {path}")
    echo(
        f"  counts     {c['agents']} agents, {c['sessions']} sessions, {c['facts']} facts, "
        f"{c['connections']} connections, {c['subscriptions']} subscriptions"
    )
    for warning in st.get("warnings") or []:
        echo(f"  WARNING    {warning}")
    kernels = st.get("kernels") or []
    if len(kernels) > 1 or any(k["id"] != st.get("kernel_id") for k in kernels):
        echo("  kernels    sharing this database:")
        for k in kernels:
            me = "  (this one)" if k["id"] == st.get("kernel_id") else ""
            age = f"heartbeat {k['heartbeat_age_s']:.1f} s ago" if k["state"] != "stopped" else "stopped"
            name = k.get("name") or f"{k['host']}:{k['home']}"
            echo(f"    {k['id']}  {k['state']:<7} {name}  pid {k['pid']}  {age}{me}")
    else:
        echo(
            f"  kernel     {st.get('kernel_id')} {st.get('kernel_name', '')} (the only one on this database)"
        )
    for q in st.get("queue") or []:
        where = "any kernel" if q["placement"] == "any" else f"kernel {q['placement']}"
        state = "" if q["runnable"] else "  (that kernel is not running)"
        echo(f"  queued     {q['waiting']} dispatch(es) for {where}, oldest {duration(q['oldest_s'])}{state}")
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, paths: Paths) -> int:
    from ..logs import format_line

    path = paths.log_file
    if not path.exists():
        fail(f"no log yet at {path}")
        return EXIT_ERROR
    # The log is JSON lines: --raw and --json print them as stored.
    show: Callable[[str], str] = (lambda s: s.rstrip("\n")) if args.raw or args.json else format_line
    with open(path, errors="replace") as fh:
        lines = fh.readlines()
        for line in lines[-args.lines :] if args.lines else lines:
            echo(show(line))
        if not args.follow:
            return EXIT_OK
        try:
            while True:
                line = fh.readline()
                if line:
                    echo(show(line))
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)  # a human is watching; polling the file is enough
        except KeyboardInterrupt:
            return EXIT_OK
