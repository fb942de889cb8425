"""Several kernels on one PostgreSQL: each registers and beats its heart in ``kernels``; one in a
PID namespace of its own (as in a container) is stopped through its socket and, when killed,
taken over by another within its ttl plus 2 s of its last heartbeat, with nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
    assert run_aos("start", env=env_a).returncode == 0
    assert run_aos("start", env=env_b).returncode == 0
    try:
        settings = {"model_params": {"api_base": model.url, "api_key": "k"}}
        call(other_home, "agent.create", {"name": "bo", "model": "openai/scripted", "settings": settings})
        sid = call(other_home, "session.create", {"agent": "bo"})["id"]

        def both_counted() -> bool:  # each kernel has beaten since both started: each counts the other
            kernels = call(home, "system.status")["kernels"]
            started = max(datetime.fromisoformat(k["started_at"]) for k in kernels)
            return all(datetime.fromisoformat(k["heartbeat_at"]) > started for k in kernels)

        wait_until("both heartbeats to count the other kernel", both_counted, TTL)
        model.add({"bash": "echo one; echo two"}, {"text": "done on B"})
        seen: list[dict[str, Any]] = []
        with SyncClient(home / "run" / "kernel.sock", timeout=30) as follow:
            follow.call("history.subscribe", {"session": sid, "after_seq": 0})
            call(other_home, "session.dispatch", {"session": sid, "message": "work on B"})
            for note in follow.notifications():
                seen.append(note.params["fact"])
                if seen[-1]["kind"] == "dispatch.end":
                    break
        stored = call(home, "history.list", {"session": sid})["facts"]
        assert [f["seq"] for f in seen] == [f["seq"] for f in stored] == list(range(1, len(stored) + 1))
        assert [f["kind"] for f in seen][-1] == "dispatch.end" and seen[-2]["body"]["text"] == "done on B"
    finally:
        run_aos("stop", env=env_b)
        run_aos("stop", env=env_a)


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
    assert run_aos("start", env=env_a).returncode == 0
    assert run_aos("start", env=env_b).returncode == 0
    try:
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
    finally:
        run_aos("stop", env=env_b)
        run_aos("stop", env=env_a)
