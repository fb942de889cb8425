"""Dispatch through a real daemon process: crashes, restarts, approvals that outlive the daemon,
and the CLI a person uses (``aos send --wait``, ``aos chat``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.pidlock import PidLock
from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel

from .procutil import live_processes_mentioning
from .rpc import workspace

# Daemons started and stopped: slow, and slower where imports cannot be cached as bytecode.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


def setup_agent(home: Path, model: ScriptedModel, **settings: Any) -> str:
    with SyncClient(home / "run" / "kernel.sock") as c:
        c.call(
            "agent.create",
            {
                "name": "alice",
                "model": "openai/scripted",
                "settings": {"model_params": {"api_base": model.url, "api_key": "test-key"}, **settings},
            },
        )
        return str(c.call("session.create", {"agent": "alice"})["id"])


def follow_until(home: Path, sid: str, after: int, until: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Facts of ``sid`` after ``after`` until one of kind ``until`` (replay, then live)."""
    facts = []
    with SyncClient(home / "run" / "kernel.sock", timeout=timeout) as c:
        c.call("history.subscribe", {"session": sid, "after_seq": after})
        for note in c.notifications():
            f = note.params["fact"]
            facts.append(f)
            if f["kind"] == until:
                return facts
    return facts


# Sandboxed (bubblewrap ends the sandbox with the daemon) and not (setpriv's parent-death signal,
# then the next daemon kills the rest of the process group from its record).
@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_kill9_while_a_command_runs(
    aos: Any, home: Path, model: ScriptedModel, tmp_path: Path, sandbox: str
) -> None:
    count = workspace(home) / "count"
    fifo = workspace(home) / "started.fifo"
    os.mkfifo(fifo)
    # A duration no other test uses: the leftover check below looks for this very process (and
    # the background child that outlives bash unless its group is killed).
    model.add({"bash": f"echo run >> {count}; sleep 398 & echo go > {fifo}; sleep 397"})
    assert aos("start").returncode == 0
    sid = setup_agent(home, model, sandbox=sandbox)
    r = aos("send", sid, "run it")
    assert r.returncode == 0 and "dispatched di_" in r.stdout

    fifo.read_text()  # blocks until the command is running
    pid = PidLock.holder(home / "run" / "aos.pid")
    assert pid and pid > 0
    os.kill(pid, signal.SIGKILL)

    r = aos("start")
    assert r.returncode == 0, r.stderr
    facts = follow_until(home, sid, 0, "dispatch.end")
    kinds = [f["kind"] for f in facts]
    assert kinds[-3:] == ["tool.result", "interrupt", "dispatch.end"]
    result = facts[-3]["body"]
    assert result["outcome"] == "unknown" and "was not run again" in result["output"]
    assert facts[-2]["body"]["cause"] == "crash"
    assert facts[-1]["body"]["status"] == "crashed"
    assert facts[-1]["body"]["steps"] == 1, "the step it was in counts"
    with SyncClient(home / "run" / "kernel.sock") as c:
        assert c.call("dispatch.get", {"dispatch": facts[0]["meta"]["dispatch_id"]})["steps"] == 1
    assert count.read_text() == "run\n", "the command must have run exactly once"
    assert live_processes_mentioning("sleep 397") == [], "the crashed command must not keep running"
    assert live_processes_mentioning("sleep 398") == [], "nor anything it started"
    with SyncClient(home / "run" / "kernel.sock") as c:
        s = c.call("session.get", {"session": sid})
        assert s["phase"] == "idle" and s["lease_owner"] is None
        # The session works again.
        model.add({"text": "back"})
        c.call("history.subscribe", {"session": sid})
        c.call("session.dispatch", {"session": sid, "message": "again"})
        for note in c.notifications():
            if note.params["fact"]["kind"] == "dispatch.end":
                assert note.params["fact"]["body"]["status"] == "done"
                break


def test_approval_survives_a_daemon_restart(
    aos: Any, home: Path, model: ScriptedModel, tmp_path: Path
) -> None:
    (home / "aoscb.json").write_text("{}")  # aos-guard on, as it is out of the box
    count = workspace(home) / "count"
    model.add({"bash": f"echo approved >> {count} # NEEDS-OK"}, {"text": "done after approval"})
    assert aos("start").returncode == 0
    sid = setup_agent(home, model, guard={"ask": ["NEEDS-OK"]})
    aos("send", sid, "do the risky thing")
    facts = follow_until(home, sid, 0, "approval.requested")
    approval = facts[-1]["body"]["approval_id"]
    r = aos("approvals")
    assert approval in r.stdout and "aos-guard: the agent's rules ask for approval" in r.stdout

    assert aos("stop").returncode == 0
    assert aos("start").returncode == 0
    r = aos("approvals", "--json")
    assert [a["id"] for a in json.loads(r.stdout)] == [approval]
    assert not count.exists()
    r = aos("approve", approval, "--note", "checked", "--always")
    assert r.returncode == 0 and r.stdout.startswith("approved:")
    assert "always allowed for this agent" in r.stdout

    facts = follow_until(home, sid, facts[-1]["seq"], "dispatch.end")
    kinds = [f["kind"] for f in facts]
    assert kinds == ["approval.resolved", "tool.started", "tool.result", "message", "dispatch.end"]
    assert facts[-1]["body"]["status"] == "done"
    assert count.read_text() == "approved\n"
    # --always: the same command runs without asking from now on.
    model.add({"bash": f"echo approved >> {count} # NEEDS-OK"}, {"text": "done at once"})
    r = aos("send", sid, "again", "--wait")
    assert r.returncode == 0 and "approval" not in r.stdout, r.stdout
    assert count.read_text() == "approved\napproved\n"


def test_send_wait_and_chat_stream_a_reply(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    model.add({"bash": "echo hello from $AOS_AGENT"}, {"text": "said hello"})
    assert aos("start").returncode == 0
    sid = setup_agent(home, model)
    r = aos("send", sid, "greet", "--wait")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "  $ echo hello from $AOS_AGENT"
    assert lines[1] == "  │ hello from alice"
    assert lines[2] == "alice> said hello"
    assert lines[3].startswith("  — done in 2 steps")

    model.add({"bash": "seq 1 3"}, {"text": "counted"})
    chat = subprocess.run(
        [sys.executable, "-m", "aos", "chat", "alice"],
        input="count to three\n",
        env=daemon_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chat.returncode == 0, chat.stderr
    assert f"session {sid} with alice" in chat.stdout
    assert "  $ seq 1 3\n  │ 1\n  │ 2\n  │ 3\nalice> counted\n" in chat.stdout
    r = aos("usage", "--by", "agent")
    assert "alice" in r.stdout and "4" in r.stdout


def test_chat_ctrl_c_interrupts_the_reply(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    model.add({"bash": "echo started; sleep 60"})
    assert aos("start").returncode == 0
    setup_agent(home, model)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aos", "chat", "alice"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=daemon_env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("take your time\n")
        proc.stdin.flush()
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "$ echo started; sleep 60" in line:
                break
        proc.send_signal(signal.SIGINT)
        ended = threading.Event()
        out: list[str] = []

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.append(line)
                if "— interrupted" in line:
                    ended.set()
                    return

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        assert ended.wait(90), "".join(seen + out)
        assert any("[interrupted: Ctrl-C]" in line for line in out)
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_guard_example_dropped_into_a_running_daemon(
    aos: Any, home: Path, model: ScriptedModel, tmp_path: Path
) -> None:
    from .test_services import GUARD_MD, GUARD_PY

    assert aos("start").returncode == 0
    sid = setup_agent(home, model)
    staged = tmp_path / "my-guard"
    staged.mkdir()
    (staged / "SKILL.md").write_text(GUARD_MD)
    (staged / "service.py").write_text(GUARD_PY)
    import shutil

    shutil.copytree(staged, home / "skills" / "my-guard")  # dropped in while the daemon runs
    with SyncClient(home / "run" / "kernel.sock") as c:
        while True:  # each look is a round trip to the daemon, which reloads on its own
            status = (
                c.call("skill.get", {"skill": "my-guard"}).get("service_status")
                if any(s["name"] == "my-guard" for s in c.call("skill.list", {})["skills"])
                else None
            )
            if status and status["state"] == "running":
                break
    marker = workspace(home) / "ran"
    # The pattern is only echoed: harmless even if the guard failed.
    model.add({"bash": f"echo 'rm -rf /' > /dev/null; touch {marker}"}, {"text": "refused, as expected"})
    aos("send", sid, "clean up")
    facts = follow_until(home, sid, 0, "dispatch.end")
    result = next(f["body"] for f in facts if f["kind"] == "tool.result")
    assert result["outcome"] == "rejected" and result["output"] == "refused by my-guard: blocked: rm -rf /"
    assert not marker.exists(), "the refused command never ran"


def test_send_wait_shows_notes_that_arrive_during_the_reply(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str], tmp_path: Path
) -> None:
    fifo = workspace(home) / "gate"
    os.mkfifo(fifo)
    model.add({"bash": f"cat {fifo}"}, {"text": "ok"})
    assert aos("start").returncode == 0
    sid = setup_agent(home, model)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aos", "send", sid, "wait for the gate", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=daemon_env,
        text=True,
    )
    try:
        follow_until(home, sid, 0, "tool.started")
        with SyncClient(home / "run" / "kernel.sock") as c:
            note = {"notice": "[a2a message m_1 from bob]\nstandup in 5 minutes"}
            c.call("session.append", {"session": sid, "kind": "a2a.message", "body": note, "inbound": True})
        fifo.write_text("open\n")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "  ✉ [a2a message m_1 from bob]\n  │ standup in 5 minutes\n" in out


def test_the_daemon_restarts_a_killed_postgresql(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    """kill -9 of the embedded PostgreSQL once left the daemon hanging with a zombie postmaster."""
    del daemon_env["AOS_DB_URL"]  # this daemon runs its own embedded server (the fixture's env)
    assert aos("start").returncode == 0
    sid = setup_agent(home, model)
    old = int((home / "pg" / "postmaster.pid").read_text().split()[0])
    os.kill(old, signal.SIGKILL)
    # Wait for the event: the daemon logs the restart (follow the log as a person would).
    follow = subprocess.Popen(
        [sys.executable, "-m", "aos", "logs", "-f", "--raw"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AOS_HOME": str(home)},
    )
    try:
        assert follow.stdout is not None
        for line in follow.stdout:
            if '"postgres.restarted"' in line or '"postgres.restart_failed"' in line:
                assert "restarted" in line, line
                break
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()
    st = aos("status", "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    assert Path(f"/proc/{old}").exists() is False, "the dead postmaster was reaped, not left a zombie"
    model.add({"text": "still working"})
    r = aos("send", sid, "are you there?", "--wait")
    assert r.returncode == 0 and "still working" in r.stdout, r.stdout + r.stderr
    log = (home / "logs" / "aos.log").read_text()
    assert '"postgres.died"' in log


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_restart_right_after_an_approval_never_asks_twice(
    aos: Any, home: Path, model: ScriptedModel, how: str
) -> None:
    """A restart between a person's decision and the command: one command, one approval.

    The daemon is stopped (or killed) the moment the approval is decided, wherever its unit is
    then: the command runs exactly once, or is recorded as unknown if it may have; it is never
    asked about again."""
    (home / "aoscb.json").write_text("{}")  # aos-guard on, as it is out of the box
    count = workspace(home) / "count"
    model.add({"bash": f"echo approved >> {count} # NEEDS-OK"}, {"text": "done after approval"})
    assert aos("start").returncode == 0
    sid = setup_agent(home, model, guard={"ask": ["NEEDS-OK"]})
    aos("send", sid, "do the risky thing")
    approval = follow_until(home, sid, 0, "approval.requested")[-1]["body"]["approval_id"]
    pid = PidLock.holder(home / "run" / "aos.pid")
    assert pid
    with SyncClient(home / "run" / "kernel.sock") as c:
        c.call("approval.resolve", {"approval": approval, "decision": "approve"})
    if how == "kill":
        os.kill(pid, signal.SIGKILL)
    else:
        assert aos("stop").returncode == 0
    assert aos("start").returncode == 0, "restarted"
    facts = follow_until(home, sid, 0, "dispatch.end")
    asked = [f for f in facts if f["kind"] == "approval.requested"]
    assert len(asked) == 1, "asked once"
    with SyncClient(home / "run" / "kernel.sock") as c:
        every = c.call("approval.list", {"session": sid, "status": None})["approvals"]
    assert [a["id"] for a in every] == [approval] and every[0]["status"] == "approved"
    results = [f["body"] for f in facts if f["kind"] == "tool.result"]
    assert len(results) == 1
    ran = count.read_text() if count.exists() else ""
    if results[0]["outcome"] == "ok":
        assert ran == "approved\n"
    else:  # killed while it may have been running: recorded as such, never re-run
        assert results[0]["outcome"] in ("unknown", "interrupted") and ran in ("", "approved\n")


def test_send_to_an_agent_steers_or_queues_and_a_queued_message_survives_a_restart(
    aos: Any, home: Path, model: ScriptedModel
) -> None:
    """`aos send <agent>` goes to its latest session. While it works, a message joins the running
    dispatch; with --queue it waits for a dispatch of its own, and that holds across a daemon
    restart (the running dispatch is cut off by the stop; the queued one runs after the start)."""
    gate = workspace(home) / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"cat {gate}"})
    assert aos("start").returncode == 0
    sid = setup_agent(home, model)
    r = aos("send", "alice", "wait at the gate")
    assert r.returncode == 0 and f"in session {sid}" in r.stdout, r.stdout + r.stderr
    follow_until(home, sid, 0, "tool.started")
    r = aos("send", "alice", "also note the time")
    assert r.returncode == 0 and "reads it at its next step" in r.stdout, r.stdout + r.stderr
    r = aos("send", "alice", "then write the report", "--queue", "--json")
    queued = json.loads(r.stdout)
    assert queued["delivery"] == "queued" and queued["session_id"] == sid
    assert aos("stop").returncode == 0  # the running dispatch is interrupted; the queue stays
    model.add({"text": "report written"})
    assert aos("start").returncode == 0
    facts = follow_until(home, sid, 0, "dispatch.end")
    while not (
        facts[-1]["kind"] == "dispatch.end" and facts[-1]["meta"]["dispatch_id"] == queued["dispatch_id"]
    ):
        facts += follow_until(home, sid, facts[-1]["seq"], "dispatch.end")
    assert facts[-1]["body"]["status"] == "done"
    users = [f["body"]["text"] for f in facts if f["kind"] == "message" and f["role"] == "user"]
    assert users == ["wait at the gate", "also note the time", "then write the report"]
    assert model.requests[-1]["messages"][-1] == {"role": "user", "content": "then write the report"}


def test_debug_logging_says_what_each_step_did(
    home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    from .conftest import run_aos

    r = run_aos("start", env={**daemon_env, "AOS_LOG_LEVEL": "verbose"})
    assert r.returncode == 2 and "AOS_LOG_LEVEL must be debug, info, warning or error" in r.stderr
    env = {**daemon_env, "AOS_LOG_LEVEL": "debug"}
    try:
        assert run_aos("start", env=env).returncode == 0
        sid = setup_agent(home, model)
        model.add({"bash": "echo hi"}, {"text": "done"})
        assert run_aos("send", sid, "say hi", "--wait", env=env).returncode == 0
        events = [
            json.loads(line) for line in run_aos("logs", "--json", "-n", "0", env=env).stdout.splitlines()
        ]
        debug = {e["event"] for e in events if e["level"] == "debug"}
        assert {"syscall", "hook.call", "model.call", "command.run"} <= debug, debug
        command = next(e for e in events if e["event"] == "command.run")
        assert command["exit_code"] == 0 and command["ms"] > 0
    finally:
        run_aos("stop", env=env)


def test_send_wait_streams_command_output_as_it_prints(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    gate = workspace(home) / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"echo first; cat {gate}; echo second"}, {"text": "all printed"})
    assert aos("start").returncode == 0
    sid = setup_agent(home, model)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aos", "send", sid, "print", "--wait"],
        env=daemon_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        # Shown while the command still waits at the gate: live, not when it ends.
        assert lines == [f"  $ echo first; cat {gate}; echo second\n", "  │ first\n"]
        gate.write_text("middle\n")
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert rest.splitlines()[:3] == ["  │ middle", "  │ second", "alice> all printed"], rest
    assert proc.returncode == 0
