"""Several kernels on one PostgreSQL: each registers and beats its heart in ``kernels``; one in a
PID namespace of its own (as in a container) is stopped through its socket and, when killed,
taken over by another within its ttl plus 2 s of its last heartbeat, with nothing left running."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aos.loop.sandbox import probe
from aos.pidlock import PidLock, pid_namespace
from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel

from .conftest import run_aos
from .procutil import live_processes_mentioning, wait_until

TTL = 3
_PROBE = probe()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not _PROBE.available, reason=f"needs bubblewrap for a PID namespace: {_PROBE.reason}"),
]
CONFIG = {
    "skills": {
        "disabled": ["aos-guard", "aos-a2a", "aos-frontend", "aos-schedule", "aos-budget", "aos-router"]
    },
    "limits": {"lease_ttl_s": TTL},
}


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def other_home() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aos-home-b-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def env_for(home: Path, daemon_env: dict[str, str]) -> dict[str, str]:
    (home / "aoscb.json").write_text(json.dumps(CONFIG))
    return {**daemon_env, "AOS_HOME": str(home)}


def call(home: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    with SyncClient(home / "run" / "kernel.sock") as c:
        return c.call(method, params or {})


@contextlib.contextmanager
def daemons(*envs: dict[str, str]) -> Iterator[None]:
    """``aos start`` for each (in order), ``aos stop`` for each (in reverse) however it ends."""
    started: list[dict[str, str]] = []
    try:
        for env in envs:
            assert run_aos("start", env=env).returncode == 0
            started.append(env)
        yield
    finally:
        for env in reversed(started):
            run_aos("stop", env=env)


def scripted_agent(home: Path, url: str, name: str = "bo", **fields: Any) -> str:
    """An agent on the scripted model, made through ``home``'s kernel; returns a new session."""
    settings = {"model_params": {"api_base": url, "api_key": "k"}}
    call(home, "agent.create", {"name": name, "model": "openai/scripted", "settings": settings, **fields})
    return str(call(home, "session.create", {"agent": name})["id"])


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def start_in_pid_namespace(home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``aos start --foreground`` in a PID namespace (and /proc) of its own, as in a container."""
    bwrap = shutil.which("bwrap")
    assert bwrap
    argv = [bwrap, "--dev-bind", "/", "/", "--proc", "/proc", "--unshare-pid", "--die-with-parent"]
    proc = subprocess.Popen(
        [*argv, sys.executable, "-m", "aos", "start", "--foreground"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until(
        "the namespaced daemon", lambda: run_aos("status", env=env).returncode == 0 or proc.poll() is not None
    )
    assert proc.poll() is None, "the daemon in its own PID namespace did not start"
    return proc


def test_a_daemon_in_its_own_pid_namespace_is_stopped_through_its_socket(
    other_home: Path, daemon_env: dict[str, str]
) -> None:
    env = env_for(other_home, daemon_env)
    proc = start_in_pid_namespace(other_home, env)
    try:
        pid, ns = PidLock.record(other_home / "run" / "aos.pid") or (0, None)
        assert pid <= 2 and ns is not None and ns != pid_namespace(), "its pid is one of its own namespace"
        r = run_aos("stop", env=env)
        assert r.returncode == 0 and "aos stopped" in r.stdout, r.stderr
        assert proc.wait(10) == 0
        kernels = json.loads(run_aos("status", "--json", env=env).stdout)
        assert kernels == {"running": False, "home": str(other_home)}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_killed_kernel_is_taken_over_by_another_within_its_ttl(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    assert run_aos("start", env=env_a).returncode == 0
    b = start_in_pid_namespace(other_home, env_b)
    try:
        st = call(home, "system.status")
        kernels = {k["id"]: k for k in st["kernels"]}
        assert len(kernels) == 2 and {k["state"] for k in kernels.values()} == {"alive"}
        b_id = next(k for k in kernels if k != st["kernel_id"])
        assert kernels[b_id]["home"] == str(other_home) and kernels[b_id]["pid_ns"] != pid_namespace()
        shown = run_aos("status", env=env_a).stdout
        assert "kernels    sharing this database:" in shown and b_id in shown and "(this one)" in shown
        # B runs a command for an agent; then B dies (the whole namespace, as a container does).
        fifo = other_home / "workspaces" / "bo" / "started"
        fifo.parent.mkdir(parents=True)
        os.mkfifo(fifo)
        call(
            other_home,
            "agent.create",
            {
                "name": "bo",
                "model": "openai/scripted",
                "settings": {"model_params": {"api_base": model.url, "api_key": "k"}},
            },
        )
        sid = call(other_home, "session.create", {"agent": "bo"})["id"]
        model.add({"bash": "echo go > started; sleep 397"})
        started = call(other_home, "session.dispatch", {"session": sid, "message": "work"})
        fifo.read_text()  # the command runs
        os.killpg(b.pid, signal.SIGKILL)
        b.wait(10)
        killed = time.monotonic()
        # A notices B's heartbeat stop and finishes B's dispatch.
        end = wait_until(
            "the takeover",
            lambda: [
                f
                for f in call(home, "history.list", {"session": sid})["facts"]
                if f["kind"] == "dispatch.end"
            ],
            timeout=TTL + 10,
        )[0]
        took = time.monotonic() - killed
        facts = call(home, "history.list", {"session": sid, "after_seq": started["seq"]})["facts"]
        kinds = [f["kind"] for f in facts]
        assert kinds[-3:] == ["tool.result", "interrupt", "dispatch.end"], kinds
        assert facts[-3]["body"]["outcome"] == "unknown" and facts[-2]["body"]["cause"] == "crash"
        assert end["body"]["status"] == "crashed"
        last_beat = datetime.fromisoformat(
            next(k for k in call(home, "system.status")["kernels"] if k["id"] == b_id)["heartbeat_at"]
        )
        taken = datetime.fromisoformat(facts[-2]["created_at"])
        assert (taken - last_beat).total_seconds() <= TTL + 2, (taken, last_beat)
        assert took <= TTL + 2
        row = call(home, "dispatch.get", {"dispatch": started["dispatch_id"]})
        assert row["owner"].startswith(f"{b_id}/") and row["kernel_id"] == b_id, "the first owner stays"
        assert row["recovered_by"].startswith(st["kernel_id"] + "/")
        assert live_processes_mentioning("sleep 397") == [], "nothing of B's command is left running"
        states = {k["id"]: k["state"] for k in call(home, "system.status")["kernels"]}
        assert states[b_id] == "dead"
        call(home, "agent.create", {"name": "ann"})
        entries = wait_until(
            "the log entry", lambda: call(home, "log.list", {"op": "agent.create"})["entries"]
        )
        assert entries[-1]["kernel_id"] == st["kernel_id"], "the runtime log says which kernel served it"
    finally:
        if b.poll() is None:
            os.killpg(b.pid, signal.SIGKILL)
            b.wait(10)
        run_aos("stop", env=env_a)


def test_a_follower_on_one_kernel_sees_every_fact_another_kernel_writes(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """`history --follow` (history.subscribe) on A, of a session whose dispatch runs on B: every
    fact, in order, as B writes them (LISTEN/NOTIFY between the kernels, facts read back from
    history)."""
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    with daemons(env_a, env_b):
        sid = scripted_agent(other_home, model.url)

        def both_counted() -> bool:  # each kernel has beaten since both started: each counts the other
            kernels = call(home, "system.status")["kernels"]
            started = max(datetime.fromisoformat(k["started_at"]) for k in kernels)
            return all(datetime.fromisoformat(k["heartbeat_at"]) > started for k in kernels)

        wait_until("both heartbeats to count the other kernel", both_counted, TTL)
        model.add({"bash": "cat gate0; echo one; cat gate; echo two"}, {"text": "done on B"})
        gate = fifo(other_home / "workspaces" / "bo" / "gate")
        os.mkfifo(gate.with_name("gate0"))
        seen: list[dict[str, Any]] = []
        live: list[tuple[int, dict[str, Any]]] = []  # (facts seen before it, the event)
        with SyncClient(home / "run" / "kernel.sock", timeout=30) as follow:
            follow.call("history.subscribe", {"session": sid, "after_seq": 0, "live": True})
            call(other_home, "session.dispatch", {"session": sid, "message": "work on B"})
            for note in follow.notifications():
                if note.method == "history.live":
                    live.append((len(seen), note.params["event"]))
                    event = note.params["event"]
                    if event["type"] == "output" and event["text"] == "one\n":  # the command waits
                        gate.write_text("and\n")
                    continue
                seen.append(note.params["fact"])
                if seen[-1]["kind"] == "tool.started":  # A heard B's facts: B has heard A's watch
                    gate.with_name("gate0").write_text("")
                if seen[-1]["kind"] == "dispatch.end":
                    break
        stored = call(home, "history.list", {"session": sid})["facts"]
        assert [f["seq"] for f in seen] == [f["seq"] for f in stored] == list(range(1, len(stored) + 1))
        assert [f["kind"] for f in seen][-1] == "dispatch.end" and seen[-2]["body"]["text"] == "done on B"
        # B's command output reached A's live follower as it was printed, between its facts.
        kinds = [f["kind"] for f in seen]
        outputs = [(n, e) for n, e in live if e["type"] == "output"]
        assert "".join(e["text"] for _, e in outputs) == "one\nand\ntwo\n", (live, kinds)
        assert all(kinds.index("tool.started") < n <= kinds.index("tool.result") for n, _ in outputs), (
            live,
            kinds,
        )
        texts = "".join(e["text"] for _, e in live if e["type"] == "text")
        assert texts == "done on B", ("the model's text too", live, kinds)


def test_approve_and_interrupt_from_another_kernel(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """A person on kernel A decides an approval, and interrupts a run, of a dispatch on kernel B."""
    guarded = {
        **CONFIG,
        "skills": {"disabled": ["aos-a2a", "aos-frontend", "aos-schedule", "aos-budget", "aos-router"]},
    }
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    (other_home / "aoscb.json").write_text(json.dumps({**guarded, "limits": {"lease_ttl_s": TTL}}))
    with daemons(env_a, env_b):
        settings = {
            "model_params": {"api_base": model.url, "api_key": "k"},
            "guard": {"ask": ["^echo approved-by-a"]},
        }
        call(other_home, "agent.create", {"name": "bo", "model": "openai/scripted", "settings": settings})
        sid = call(other_home, "session.create", {"agent": "bo"})["id"]
        model.add({"bash": "echo approved-by-a"}, {"bash": "sleep 393"}, {"text": "never"})
        call(other_home, "session.dispatch", {"session": sid, "message": "work on B"})
        pending = wait_until("the approval", lambda: call(home, "approval.list", {})["approvals"])
        r = run_aos("approve", pending[0]["id"], env=env_a)  # on A; the unit waits on B
        assert r.returncode == 0, r.stderr
        wait_until("the command to run", lambda: live_processes_mentioning("sleep 393"), 20)
        r = run_aos("interrupt", sid, env=env_a)
        assert r.returncode == 0, r.stderr
        end = wait_until(
            "the end",
            lambda: [
                f
                for f in call(home, "history.list", {"session": sid})["facts"]
                if f["kind"] == "dispatch.end"
            ],
            20,
        )[0]
        assert end["body"]["status"] == "interrupted"
        results = [
            f["body"]
            for f in call(home, "history.list", {"session": sid})["facts"]
            if f["kind"] == "tool.result"
        ]
        assert results[0]["output"] == "approved-by-a\n" and results[1]["outcome"] == "interrupted"
        assert live_processes_mentioning("sleep 393") == []


def _ends(home: Path, sid: str) -> list[dict[str, Any]]:
    return [f for f in call(home, "history.list", {"session": sid})["facts"] if f["kind"] == "dispatch.end"]


def test_a_queued_dispatch_starts_once_whichever_kernel_frees_the_session(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """A wake for an agent busy on B is sent to A, then again to A and to B (as two kernels'
    services would, recovering it): one queued dispatch, started once, by B, when B's run ends.
    A message typed on A meanwhile is steered into B's run."""
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    with daemons(env_a, env_b):
        sid = scripted_agent(other_home, model.url)
        gate = fifo(other_home / "workspaces" / "bo" / "gate")
        model.add({"bash": "cat gate"}, {"text": "first done"}, {"text": "woken and done"})
        first = call(other_home, "session.dispatch", {"session": sid, "message": "work on B"})
        wait_until("B's command", lambda: live_processes_mentioning("cat gate"))
        wake = {"session": sid, "message": "wake up", "request_id": "a2a:m_1", "if_busy": "queue"}
        queued = call(home, "session.dispatch", wake)
        assert queued["delivery"] == "queued" and not queued["duplicate"]
        # Sent again, to either kernel: the same dispatch, nothing more queued.
        for h in (home, other_home):
            again = call(h, "session.dispatch", wake)
            assert again["duplicate"] and again["dispatch_id"] == queued["dispatch_id"]
        # A message typed on A while B's run works is steered into that run, across kernels.
        steer = call(home, "session.dispatch", {"session": sid, "message": "and this"})
        assert steer["delivery"] == "steered" and steer["dispatch_id"] == first["dispatch_id"]
        gate.write_text("go\n")
        wait_until("both runs", lambda: len(_ends(home, sid)) == 2, 30)
        ids = [f["meta"]["dispatch_id"] for f in _ends(home, sid)]
        assert ids == [first["dispatch_id"], queued["dispatch_id"]]
        facts = call(home, "history.list", {"session": sid})["facts"]
        inputs = [f["body"]["text"] for f in facts if f["kind"] == "message" and f["role"] == "user"]
        assert inputs == ["work on B", "and this", "wake up"], "each once, in order"
        steered = next(f for f in facts if f["body"].get("text") == "and this")
        assert steered["meta"]["steer"] and steered["meta"]["dispatch_id"] == first["dispatch_id"]
        read = model.requests[1]["messages"]  # B's second step, after the command
        assert any("and this" in str(m.get("content")) for m in read), "B's run read it"
        row = call(home, "dispatch.get", {"dispatch": queued["dispatch_id"]})
        assert row["status"] == "done" and row["kernel_id"] == first_kernel(other_home)
        again = call(home, "session.dispatch", wake)  # after it ran: still that one
        assert again["duplicate"] and again["delivery"] == "started"
        assert len(_ends(home, sid)) == 2
        assert call(home, "system.status")["queue"] == []


def first_kernel(home: Path) -> str:
    return str(call(home, "system.status")["kernel_id"])


def test_an_agent_whose_kernel_is_down_waits_for_it_visibly(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """An agent's workspace is on B. With B stopped, a dispatch asked of A waits (it would run in
    an empty folder on A), `aos status` says for what; when B is back, B runs it in its folder."""
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    assert run_aos("start", env=env_a).returncode == 0
    assert run_aos("start", env=env_b).returncode == 0
    settings = {"model_params": {"api_base": model.url, "api_key": "k"}}
    try:
        bo = call(
            other_home, "agent.create", {"name": "bo", "model": "openai/scripted", "settings": settings}
        )
        b_name = call(other_home, "system.status")["kernel_name"]
        assert bo["placement"] == b_name == f"{os.uname().nodename}:{other_home}"
        ws = other_home / "workspaces" / "bo"
        ws.mkdir(parents=True)
        (ws / "notes.txt").write_text("kept on B\n")
        sid = call(home, "session.create", {"agent": "bo"})["id"]
        assert run_aos("stop", env=env_b).returncode == 0
        r = run_aos("send", sid, "read your notes", env=env_a)
        assert r.returncode == 0, r.stderr
        assert f"bo runs on kernel {b_name}" in r.stdout, r.stdout
        shown = run_aos("status", env=env_a).stdout
        assert f"1 dispatch(es) for kernel {b_name}" in shown and "(that kernel is not running)" in shown, (
            shown
        )
        assert "WARNING" in shown and "aos agent update" in shown
        queued = [
            f for f in call(home, "history.list", {"session": sid})["facts"] if f["kind"] == "message.queued"
        ]
        assert queued[0]["meta"]["waiting_for"] == b_name
        assert not _ends(home, sid), "nothing ran on A"
        model.add({"bash": "pwd; cat notes.txt"}, {"text": "read"})
        assert run_aos("start", env=env_b).returncode == 0
        wait_until("B to run it", lambda: _ends(home, sid), 30)
        out = next(
            f["body"]["output"]
            for f in call(home, "history.list", {"session": sid})["facts"]
            if f["kind"] == "tool.result"
        )
        assert out == f"{ws}\nkept on B\n", "in its own folder, on B"
        assert call(home, "system.status")["queue"] == []
        # A placement that names no kernel is refused: its dispatches would wait forever.
        r = run_aos("agent", "set", "bo", "--placement", "nosuch:/x", env=env_a)
        assert r.returncode != 0 and "no kernel named 'nosuch:/x' has run on this database" in r.stderr
        assert b_name in r.stderr
        # Placed anywhere (its workspace on shared storage): A runs it at once.
        call(home, "agent.update", {"agent": "bo", "placement": "any", "workspace": str(ws)})
        model.add({"text": "on A"})
        started = call(home, "session.dispatch", {"session": sid, "message": "again"})
        assert started["delivery"] == "started"
        row = wait_until(
            "A's run",
            lambda: (d := call(home, "dispatch.get", {"dispatch": started["dispatch_id"]}))["ended_at"] and d,
        )
        assert row["kernel_id"] == first_kernel(home)
    finally:
        run_aos("stop", env=env_b)
        run_aos("stop", env=env_a)


def all_counted(home: Path, n: int) -> bool:
    """``n`` kernels live, and each has beaten since the last started: each counts the others."""
    kernels = [k for k in call(home, "system.status")["kernels"] if k["state"] == "alive"]
    if len(kernels) != n:
        return False
    started = max(datetime.fromisoformat(k["started_at"]) for k in kernels)
    return all(datetime.fromisoformat(k["heartbeat_at"]) > started for k in kernels)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("victim", [0, 1, 2], ids=["kill-A", "kill-B", "kill-C-in-its-pid-namespace"])
def test_three_kernels_survive_a_kill_and_a_database_restart(
    victim: int, home: Path, other_home: Path, own_pg: Any, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """The done-when of several kernels: A, B and C (C in a PID namespace of its own) share one
    PostgreSQL. One of them is killed mid-command with a wake queued behind it, then the database
    restarts under a command on another. Nothing dangles, nothing runs twice, and a follower on
    the third sees every fact, in order, from all of them."""
    third = Path(tempfile.mkdtemp(prefix="aos-home-c-"))
    shared = Path(tempfile.mkdtemp(prefix="aos-shared-"))  # the agent's workspace, on "shared storage"
    homes = [home, other_home, third]
    base = {**daemon_env, "AOS_DB_URL": own_pg.dsn("postgres")}
    envs = [env_for(h, base) for h in homes]
    assert run_aos("start", env=envs[0]).returncode == 0
    assert run_aos("start", env=envs[1]).returncode == 0
    c = start_in_pid_namespace(third, envs[2])
    dying, watcher, restarted = homes[victim], homes[(victim + 1) % 3], homes[(victim + 2) % 3]
    seen: list[dict[str, Any]] = []
    follower: threading.Thread | None = None
    try:
        settings = {"model_params": {"api_base": model.url, "api_key": "k"}}
        agent = {"name": "cy", "model": "openai/scripted", "settings": settings, "placement": "any"}
        call(home, "agent.create", {**agent, "workspace": str(shared)})
        sid = call(home, "session.create", {"agent": "cy"})["id"]
        wait_until("three kernels counting each other", lambda: all_counted(home, 3), 3 * TTL)
        subscribed = threading.Event()

        def follow() -> None:
            with SyncClient(watcher / "run" / "kernel.sock", timeout=120) as f:
                f.call("history.subscribe", {"session": sid, "after_seq": 0})
                subscribed.set()
                for note in f.notifications():
                    seen.append(note.params["fact"])
                    if sum(x["kind"] == "dispatch.end" for x in seen) == 4:
                        return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert subscribed.wait(30)
        for name in ("started", "started2"):
            os.mkfifo(shared / name)

        # 1. The victim runs a command; a wake is queued behind it, sent to both others.
        model.add({"bash": "echo go > started; sleep 391"}, {"text": "woken after the kill"})
        first = call(dying, "session.dispatch", {"session": sid, "message": "work"})
        (shared / "started").read_text()
        wake = {"session": sid, "message": "wake", "request_id": "a2a:m_3", "if_busy": "queue"}
        queued = call(restarted, "session.dispatch", wake)
        assert queued["delivery"] == "queued"
        assert call(watcher, "session.dispatch", wake)["duplicate"]
        if victim == 2:
            os.killpg(c.pid, signal.SIGKILL)  # C and everything in its namespace
            c.wait(10)
        else:
            pid = PidLock.holder(dying / "run" / "aos.pid")
            assert pid and pid > 1
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        crash = wait_until("the victim's run closed", lambda: _ends(watcher, sid), TTL + 10)[0]
        assert time.monotonic() - killed <= TTL + 2, "taken over within the ttl + 2 s"
        assert crash["body"]["status"] == "crashed" and crash["meta"]["dispatch_id"] == first["dispatch_id"]
        wait_until("the wake's run", lambda: len(_ends(watcher, sid)) == 2, 20)
        wait_until("its command gone", lambda: live_processes_mentioning("sleep 391") == [], 10)

        # 2. The database restarts under a command on another kernel.
        model.add({"bash": "echo go > started2; sleep 392"})
        second = call(restarted, "session.dispatch", {"session": sid, "message": "work on"})
        (shared / "started2").read_text()
        own_pg.stop()
        wait_until("its command stopped", lambda: live_processes_mentioning("sleep 392") == [], TTL + 2)
        own_pg.start()
        wait_until("that run closed", lambda: len(_ends(watcher, sid)) == 3, TTL + 15)

        # 3. A surviving kernel runs the agent again; the follower has everything.
        model.add({"text": "all good"})
        last = call(watcher, "session.dispatch", {"session": sid, "message": "still there?"})
        follower.join(30)
        assert not follower.is_alive(), f"the follower saw {len(seen)} facts"
        stored = call(watcher, "history.list", {"session": sid})["facts"]
        assert [f["seq"] for f in seen] == [f["seq"] for f in stored] == list(range(1, len(stored) + 1))
        ends = [f for f in stored if f["kind"] == "dispatch.end"]
        ids = [f["meta"]["dispatch_id"] for f in ends]
        assert ids == [
            first["dispatch_id"],
            queued["dispatch_id"],
            second["dispatch_id"],
            last["dispatch_id"],
        ]
        assert [f["body"]["status"] for f in ends][1::2] == ["done", "done"]
        inputs = [f["body"]["text"] for f in stored if f["kind"] == "message" and f["role"] == "user"]
        assert inputs == ["work", "wake", "work on", "still there?"], "nothing ran twice"
        started = {f["body"]["call_id"] for f in stored if f["kind"] == "tool.started"}
        results = {f["body"]["call_id"] for f in stored if f["kind"] == "tool.result"}
        assert len(started) == 2 and started == results, "no tool.started without its result"
        for d in ids:
            assert call(watcher, "dispatch.get", {"dispatch": d})["status"] not in (
                "running",
                "waiting_approval",
            )
        assert call(watcher, "session.get", {"session": sid})["lease_owner"] is None
        assert call(watcher, "system.status")["queue"] == []
        # The survivors beat again once the database is back (one whose last beat the outage
        # left stale looks dead to the others until its next).
        wait_until(
            "the two survivors alive",
            lambda: (
                sorted(k["state"] for k in call(watcher, "system.status")["kernels"])[:3]
                == ["alive", "alive", "dead"]
            ),
            2 * TTL,
        )
        assert live_processes_mentioning("sleep 39") == []
    finally:
        if c.poll() is None:
            os.killpg(c.pid, signal.SIGKILL)
            c.wait(10)
        run_aos("stop", env=envs[1])
        run_aos("stop", env=envs[0])
        shutil.rmtree(third, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_the_web_ui_of_one_kernel_streams_a_dispatch_running_on_another(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """The page's stream (aos-frontend on A, server-sent events) of a session whose dispatch runs
    on B: every fact once, in order, and B's command output live as it prints."""
    import httpx

    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    ui_on = {
        **CONFIG,
        "skills": {"disabled": [s for s in CONFIG["skills"]["disabled"] if s != "aos-frontend"]},
    }
    (home / "aoscb.json").write_text(json.dumps({**ui_on, "ui": {"port": 0}}))
    with daemons(env_a, env_b):
        sid = scripted_agent(other_home, model.url)
        gate = fifo(other_home / "workspaces" / "bo" / "gate")
        ui = wait_until("the UI on A", lambda: json.loads((home / "run" / "ui.json").read_text()), 60)
        origin = ui["url"].rstrip("/")
        facts: list[dict[str, Any]] = []
        output = ""
        with httpx.Client(base_url=origin, headers={"Origin": origin}, timeout=30) as page:
            assert page.get(ui["link"].removeprefix(origin)).status_code == 303
            model.add({"bash": "cat gate; echo one; echo two"}, {"text": "done on B"})
            with page.stream("GET", f"/api/stream/{sid}?after=0") as resp:
                assert resp.status_code == 200
                call(other_home, "session.dispatch", {"session": sid, "message": "work on B"})
                event: dict[str, str] = {}
                for line in resp.iter_lines():
                    if line:
                        key, _, value = line.partition(": ")
                        event[key] = value
                        continue
                    data = json.loads(event.get("data") or "null")
                    if event.get("event") == "fact":
                        facts.append(data)
                        if data["kind"] == "tool.started":  # A heard B: B has heard A's watch
                            gate.write_text("")
                        if data["kind"] == "dispatch.end":
                            break
                    elif event.get("event") == "live" and data["type"] == "output":
                        output += data["text"]
                    event = {}
        stored = call(home, "history.list", {"session": sid})["facts"]
        assert [f["seq"] for f in facts] == [f["seq"] for f in stored] == list(range(1, len(stored) + 1))
        assert facts[-2]["body"]["text"] == "done on B"
        assert output == "one\ntwo\n", output


def test_an_a2a_wake_reaches_its_recipient_on_the_kernel_that_holds_its_files(
    home: Path, other_home: Path, daemon_env: dict[str, str]
) -> None:
    """ann lives on A, bo on B. ann's own bash wakes bo and waits for the answer: the wake is
    queued for B, B runs bo in B's folder, once, and B's aos-a2a writes the reply into ann's
    session, where A's aos-a2a finds it for the waiting command."""
    from .test_a2a import Agents

    a2a_on = {**CONFIG, "skills": {"disabled": [s for s in CONFIG["skills"]["disabled"] if s != "aos-a2a"]}}
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    for h in (home, other_home):
        (h / "aoscb.json").write_text(json.dumps(a2a_on))
    agents = Agents()
    with agents.model:
        assert run_aos("start", env=env_a).returncode == 0
        assert run_aos("start", env=env_b).returncode == 0
        try:
            settings = {"model_params": {"api_base": agents.model.url, "api_key": "k"}}
            spec = {"model": "openai/scripted", "settings": settings}
            call(home, "agent.create", {"name": "ann", **spec})
            call(other_home, "agent.create", {"name": "bo", **spec})
            ann = call(home, "session.create", {"agent": "ann"})["id"]
            bo = call(other_home, "session.create", {"agent": "bo"})["id"]
            wait_until("both kernels counting each other", lambda: all_counted(home, 2), 3 * TTL)
            agents.add("bo", {"bash": "pwd"}, {"text": "bo here"})
            agents.add("ann", {"bash": 'a2a send --to bo --wake --wait 60 "where are you?"'}, {"text": "ok"})
            r = run_aos("send", ann, "ask bo", "--wait", env=env_a, timeout=90)
            assert r.returncode == 0, r.stderr
            results = call(home, "history.list", {"session": ann, "kinds": ["tool.result"]})["facts"]
            assert results[-1]["body"]["output"] == "bo replied:\nbo here\n", (
                "the answer, in the same command"
            )
            ends = _ends(home, bo)
            assert len(ends) == 1, "woken once"
            row = call(home, "dispatch.get", {"dispatch": ends[0]["meta"]["dispatch_id"]})
            assert row["kernel_id"] == first_kernel(other_home), "run by B"
            pwd = call(home, "history.list", {"session": bo, "kinds": ["tool.result"]})["facts"][0]
            assert pwd["body"]["output"] == f"{other_home / 'workspaces' / 'bo'}\n", "in B's folder"
        finally:
            run_aos("stop", env=env_b)
            run_aos("stop", env=env_a)


def test_one_session_dispatched_from_two_kernels_at_once(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """The same session asked of A and of B at the same moment, many times over: each time one
    dispatch starts and the other message is queued behind it (or refused, if asked to be);
    never two at once, nothing lost."""
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    (home / "aoscb.json").write_text(json.dumps({**CONFIG, "kernel": {"shared_workspaces": True}}))
    with daemons(env_a, env_b):
        settings = {"model_params": {"api_base": model.url, "api_key": "k"}}
        bo = call(home, "agent.create", {"name": "bo", "model": "openai/scripted", "settings": settings})
        assert bo["placement"] == "any"
        rounds = 6
        answers: list[dict[str, Any]] = []
        for _ in range(rounds):
            sid = call(home, "session.create", {"agent": "bo"})["id"]
            model.add({"text": "one"}, {"text": "two"})
            barrier = threading.Barrier(2)
            got: list[Any] = [None, None]

            def ask(
                j: int, h: Path, sid: str = sid, barrier: threading.Barrier = barrier, got: list[Any] = got
            ) -> None:
                with SyncClient(h / "run" / "kernel.sock") as c:
                    barrier.wait()
                    got[j] = c.call("session.dispatch", {"session": sid, "message": f"from {h.name}"})

            threads = [threading.Thread(target=ask, args=(j, h)) for j, h in enumerate((home, other_home))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(g["delivery"] for g in got) == ["queued", "started"], got
            answers += got
            wait_until("both messages answered", lambda sid=sid: len(_ends(home, sid)) == 2, 30)
            inputs = [
                f["body"]["text"]
                for f in call(home, "history.list", {"session": sid})["facts"]
                if f["kind"] == "message" and f["role"] == "user"
            ]
            assert sorted(inputs) == sorted(f"from {h.name}" for h in (home, other_home)), inputs
        assert call(home, "system.status")["queue"] == []
        assert len({a["dispatch_id"] for a in answers}) == 2 * rounds
        assert len({a["dispatch_id"] for a in answers}) == 2 * rounds


HOLD_END_MD = """---
name: hold-end
description: Test skill - holds a dispatch's end until a person lets it go.
metadata:
  aos-service: service.py
---
Nothing for agents here.
"""
HOLD_END_PY = """import asyncio
from pathlib import Path

from aos_sdk import define_service

HOLD = Path({hold!r})


@define_service
def service():
    async def gate(input_data, output_data):
        if input_data.get("kind") == "dispatch.end" and HOLD.exists():
            (HOLD.parent / "at-end").write_text("")
            await asyncio.to_thread(HOLD.read_text)  # a FIFO: until the test writes to it
            HOLD.unlink()
        return output_data

    return {{"hooks": {{"message.before_write": {{"handler": gate, "timeout_s": 60}}}}}}
"""


def test_a_message_steered_from_another_kernel_as_the_run_ends_is_still_answered_by_it(
    home: Path, other_home: Path, daemon_env: dict[str, str], model: ScriptedModel
) -> None:
    """B's run has its final answer and is writing its end when a message typed on A is steered
    into it. The end's transaction finds the message (A held the session's row while it wrote
    it), writes nothing, and B's run takes one more step that answers it: never a steered
    message left unanswered after its dispatch's end."""
    env_a, env_b = env_for(home, daemon_env), env_for(other_home, daemon_env)
    hold = other_home / "hold" / "go"
    hold.parent.mkdir()
    skill = other_home / "skills" / "hold-end"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(HOLD_END_MD)
    (skill / "service.py").write_text(HOLD_END_PY.format(hold=str(hold)))
    with daemons(env_a, env_b):
        sid = scripted_agent(other_home, model.url)
        wait_until("both kernels counting each other", lambda: all_counted(home, 2), 3 * TTL)
        os.mkfifo(hold)
        model.add({"text": "first answer"}, {"text": "answer to the late words"})
        first = call(other_home, "session.dispatch", {"session": sid, "message": "work on B"})
        wait_until("B's run at its end", lambda: (hold.parent / "at-end").exists(), 30)
        late = call(home, "session.dispatch", {"session": sid, "message": "late words"})
        assert late["delivery"] == "steered" and late["dispatch_id"] == first["dispatch_id"]
        hold.write_text("go\n")
        end = wait_until("the run's end", lambda: _ends(home, sid), 30)
        facts = call(home, "history.list", {"session": sid})["facts"]
        said = [
            (f["kind"], f["role"], (f["body"] or {}).get("text"))
            for f in facts
            if f["kind"] != "dispatch.end"
        ]
        # With other kernels alive the answer is stored before the end, so the message comes
        # after it, and the next step reads it as the next turn.
        assert said == [
            ("message", "user", "work on B"),
            ("message", "assistant", "first answer"),
            ("message", "user", "late words"),
            ("message", "assistant", "answer to the late words"),
        ], said
        assert model.requests[-1]["messages"][-1] == {"role": "user", "content": "late words"}
        assert len(end) == 1 and end[0]["seq"] == facts[-1]["seq"] and end[0]["body"]["status"] == "done"
        assert end[0]["meta"]["dispatch_id"] == first["dispatch_id"]
