"""Several kernels on one PostgreSQL: invocations/s with one kernel, two and three, side by side on
the same database, and how long a killed kernel's running dispatch takes to be taken over.

Each invocation is a fresh session, a dispatch (one command, then the final answer, from the
scripted model) followed until its ``dispatch.end``. The takeover part starts a second daemon,
has it run a long command, kills it with SIGKILL, and times until the first daemon has closed
that dispatch (``dispatch.end``, status ``crashed``), from the kill and from the dead kernel's
last heartbeat (the database's clock, as the takeover rule uses).

Usage: ``uv run python bench/kernels_bench.py [--sessions 20] [--per-session 5] [--kills 20] [--ttl 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from _harness import AOS, aos_daemon, one_invocation, pct, scripted_model
from aos.db.embedded import EmbeddedPostgres
from aos.pidlock import PidLock
from aos_sdk.syncclient import SyncClient

CONFIG = {
    "skills": {
        "disabled": ["aos-guard", "aos-a2a", "aos-frontend", "aos-schedule", "aos-budget", "aos-router"]
    },
}


def home_at(base: Path, name: str, ttl: int) -> Path:
    home = base / name
    home.mkdir()
    (home / "aoscb.json").write_text(json.dumps({**CONFIG, "limits": {"lease_ttl_s": ttl}}))
    return home


def agent(sock: Path, name: str, api_base: str) -> str:
    with SyncClient(sock) as c:
        return str(
            c.call(
                "agent.create",
                {
                    "name": name,
                    "model": "openai/scripted",
                    "settings": {"model_params": {"api_base": api_base, "api_key": "x"}},
                },
            )["id"]
        )


def throughput(targets: list[tuple[Path, str]], sessions: int, per_session: int) -> tuple[float, list[float]]:
    """``sessions`` threads, spread over the kernels' sockets, each running ``per_session``
    invocations one after another; returns invocations/s and each invocation's ms."""
    times: list[float] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        sock, agent_id = targets[i % len(targets)]
        with SyncClient(sock, timeout=120) as client:
            for _ in range(per_session):
                t = time.perf_counter()
                one_invocation(client, sock, agent_id)
                with lock:
                    times.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(times) / (time.perf_counter() - t0), times


def takeover(
    base: Path, a_sock: Path, env: dict[str, str], ttl: int, kills: int
) -> tuple[list[float], list[float]]:
    """Seconds from each kill, and from the dead kernel's last heartbeat, to the takeover."""
    from_kill, from_beat = [], []
    script = base / "long.json"
    script.write_text(json.dumps([{"bash": "echo go > started; sleep 394"}] * kills))
    home_b = home_at(base, "b", ttl)
    b_env = {**env, "AOS_HOME": str(home_b)}
    with scripted_model("--script", str(script)) as api_base:
        for i in range(kills):
            subprocess.run([*AOS, "start"], env=b_env, check=True, capture_output=True)
            sock_b = home_b / "run" / "kernel.sock"
            name = f"k{i}"
            agent(sock_b, name, api_base)
            ws = home_b / "workspaces" / name
            ws.mkdir(parents=True, exist_ok=True)
            os.mkfifo(ws / "started")
            with SyncClient(sock_b) as c:
                b_id = c.call("system.status", {})["kernel_id"]
                sid = c.call("session.create", {"agent": name})["id"]
                c.call("session.dispatch", {"session": sid, "message": "work"})
            (ws / "started").read_text()  # the command runs
            pid = PidLock.holder(home_b / "run" / "aos.pid")
            assert pid and pid > 0
            with SyncClient(a_sock, timeout=ttl + 30) as follow:
                follow.call("history.subscribe", {"session": sid, "after_seq": 0})
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                for note in follow.notifications():
                    fact = note.params["fact"]
                    if fact["kind"] == "interrupt":
                        taken_at = datetime.fromisoformat(fact["created_at"])
                    if fact["kind"] == "dispatch.end":
                        from_kill.append(time.monotonic() - killed)
                        break
            with SyncClient(a_sock) as c:
                beat = next(k for k in c.call("system.status", {})["kernels"] if k["id"] == b_id)[
                    "heartbeat_at"
                ]
            from_beat.append((taken_at - datetime.fromisoformat(beat)).total_seconds())
    return from_kill, from_beat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--per-session", type=int, default=5)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--ttl", type=int, default=3, help="limits.lease_ttl_s of every kernel")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="aos-kernels-"))
    pg = EmbeddedPostgres(base / "pg", base / "pg.log")
    pg.start()
    stack = contextlib.ExitStack()
    try:
        api_base = stack.enter_context(scripted_model("--react-loop", "true"))
        env = {"AOS_DB_URL": pg.dsn("postgres")}
        home_a, home_c, home_d = (home_at(base, n, args.ttl) for n in ("a", "c", "d"))
        full = stack.enter_context(aos_daemon(home_a, **env))
        a_sock = home_a / "run" / "kernel.sock"
        a_agent = agent(a_sock, "on-a", api_base)
        one_invocation(SyncClient(a_sock), a_sock, a_agent)  # warm
        rows = []
        one, one_ms = throughput([(a_sock, a_agent)], args.sessions, args.per_session)
        rows.append(("1 kernel", one, one_ms))
        stack.enter_context(aos_daemon(home_c, **env))  # (stopped again before the takeover part)
        c_sock = home_c / "run" / "kernel.sock"
        c_agent = agent(c_sock, "on-c", api_base)
        one_invocation(SyncClient(c_sock), c_sock, c_agent)  # warm
        two, two_ms = throughput([(a_sock, a_agent), (c_sock, c_agent)], args.sessions, args.per_session)
        rows.append(("2 kernels", two, two_ms))
        stack.enter_context(aos_daemon(home_d, **env))
        d_sock = home_d / "run" / "kernel.sock"
        d_agent = agent(d_sock, "on-d", api_base)
        one_invocation(SyncClient(d_sock), d_sock, d_agent)  # warm
        three, three_ms = throughput(
            [(a_sock, a_agent), (c_sock, c_agent), (d_sock, d_agent)], args.sessions, args.per_session
        )
        rows.append(("3 kernels", three, three_ms))
        print(
            f"\n{args.sessions} sessions x {args.per_session} invocations, one PostgreSQL, {os.cpu_count()} cores\n"
        )
        print("| kernels | invocations/s | vs 1 kernel | median ms | p99 ms |")
        print("|---|---|---|---|---|")
        for name, rate, ms in rows:
            print(
                f"| {name} | {rate:.1f} | {rate / one:.2f}x | {statistics.median(ms):.1f} | {pct(ms, 0.99):.1f} |"
            )
        # Only the first kernel is left to take over: the time measured is its own, not that of
        # an announcement from another kernel.
        for other in (home_c, home_d):
            subprocess.run([*AOS, "stop"], env={**full, "AOS_HOME": str(other)}, capture_output=True)
        from_kill, from_beat = takeover(base, a_sock, {**full, **env}, args.ttl, args.kills)
        print(
            f"\ntakeover of a killed kernel's dispatch, {args.kills} kills, ttl {args.ttl} s (target: ttl + 2 s)\n"
        )
        print("| measured from | median s | p99 s | max s |")
        print("|---|---|---|---|")
        for name, xs in (("the kill", from_kill), ("its last heartbeat", from_beat)):
            print(f"| {name} | {statistics.median(xs):.2f} | {pct(xs, 0.99):.2f} | {max(xs):.2f} |")
    finally:
        stack.close()
        with contextlib.suppress(Exception):
            subprocess.run(
                [*AOS, "stop"], env={**os.environ, "AOS_HOME": str(base / "b")}, capture_output=True
            )
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
