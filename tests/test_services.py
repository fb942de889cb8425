"""Skill services as real subprocesses over real sockets: the guard example, crashes,
quarantine, permissions."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.skills.supervisor import Policy, State
from aos_sdk.connection import RpcConnection
from aos_sdk.testing import ScriptedModel

from .procutil import gone
from .rpc import call, scripted_session, workspace

# The example of the original design, exactly as written.
GUARD_MD = """---
name: my-guard
description: Blocks dangerous bash commands before they execute
service: ./service.py
---
This skill intercepts all bash commands and rejects destructive patterns.
"""
GUARD_PY = """from aos_sdk import define_service

@define_service
def service():
    def guard(input_data, output_data):
        cmd = output_data['args'].get('command', '')
        for pattern in ['rm -rf /', 'DROP TABLE', ':(){ :|:& };:']:
            if pattern in cmd:
                return {'verdict': 'reject', 'reason': f'blocked: {pattern}'}
        return output_data
    return {'hooks': {'tool.before': guard}}
"""


def write(home: Path, name: str, md: str, py: str | None = None) -> Path:
    folder = home / "skills" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SKILL.md").write_text(md)
    if py is not None:
        (folder / "service.py").write_text(py)
    return folder


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


async def agent_session(rpc: RpcConnection, model: ScriptedModel, name: str = "alice") -> str:
    return await scripted_session(rpc, model.url, name)


async def dispatch(rpc: RpcConnection, kernel: Any, sid: str) -> list[dict[str, Any]]:
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    return (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]  # type: ignore[no-any-return]


async def test_the_guard_example_blocks_rm_rf(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    write(kernel.paths.home, "my-guard", GUARD_MD, GUARD_PY)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["my-guard"]
    assert await asyncio.wait_for(runner.wait_state(State.RUNNING), 20) == State.RUNNING
    listed = {s["name"]: s for s in (await call(rpc, "skill.list"))["skills"]}["my-guard"]
    assert listed["usable"] and not listed["spec_valid"]
    assert listed["service_status"]["state"] == "running" and listed["service_status"]["hooks"] == [
        "tool.before"
    ]

    marker = workspace(kernel.paths.home) / "ran"
    sid = await agent_session(rpc, model)
    # Harmless even if the guard failed: the pattern is only echoed.
    model.add({"bash": f"echo 'rm -rf /' > /dev/null; touch {marker}"}, {"bash": "echo fine"}, {"text": "ok"})
    facts = await dispatch(rpc, kernel, sid)
    results = [f["body"] for f in facts if f["kind"] == "tool.result"]
    assert (
        results[0]["outcome"] == "rejected"
        and results[0]["output"] == "refused by my-guard: blocked: rm -rf /"
    )
    assert not marker.exists(), "a refused command never runs"
    assert results[1]["output"] == "fine\n"
    log = (kernel.paths.logs / "skills" / "my-guard.log").read_text()
    assert "starting my-guard" in log


async def test_a_killed_guard_is_waited_for_then_judges(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    kernel.kernel.services.policy = Policy(backoff_first_s=2.0)
    write(kernel.paths.home, "my-guard", GUARD_MD, GUARD_PY)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["my-guard"]
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)
    pid = runner.proc.pid
    os.kill(pid, signal.SIGKILL)
    assert await asyncio.wait_for(runner.wait_state(State.BACKOFF), 10) == State.BACKOFF
    sid = await agent_session(rpc, model)
    model.add({"bash": "echo harmless"}, {"text": "ok"})
    facts = await dispatch(rpc, kernel, sid)
    # The command was not run unjudged: the step waited for the guard to come back, said so, and
    # the restarted guard let it through.
    waiting = next(f["body"] for f in facts if f["kind"] == "dispatch.waiting")
    assert waiting["hook"] == "tool.before" and waiting["skills"] == ["my-guard"]
    result = next(f["body"] for f in facts if f["kind"] == "tool.result")
    assert result["outcome"] == "ok" and result["output"] == "harmless\n"
    assert runner.state.state == State.RUNNING  # restarted
    assert runner.state.restarts == 1 and runner.proc.pid != pid and gone(pid)


async def test_a_crashing_service_is_quarantined_without_disturbing_others(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    kernel.kernel.services.policy = Policy(backoff_first_s=0.01, backoff_max_s=0.05)
    md = "---\nname: crasher\ndescription: Dies at once.\nmetadata:\n  aos-service: service.py\n---\nx\n"
    write(kernel.paths.home, "crasher", md, "import sys\nprint('dying', flush=True)\nsys.exit(3)\n")
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["crasher"]
    assert await asyncio.wait_for(runner.wait_state(State.QUARANTINED), 30) == State.QUARANTINED
    assert runner.state.restarts == 4 and "exited with code 3 before registering" in (
        runner.state.last_error or ""
    )
    status = {s["name"]: s for s in (await call(rpc, "skill.list"))["skills"]}["crasher"]["service_status"]
    assert status["state"] == "quarantined" and status["pid"] is None
    assert (kernel.paths.logs / "skills" / "crasher.log").read_text().count("dying") == 5
    sid = await agent_session(rpc, model)
    model.add({"bash": "echo unaffected"}, {"text": "ok"})
    facts = await dispatch(rpc, kernel, sid)
    assert next(f["body"] for f in facts if f["kind"] == "tool.result")["output"] == "unaffected\n"


async def test_a_person_starts_a_quarantined_service_again(rpc: RpcConnection, kernel: Any) -> None:
    kernel.kernel.services.policy = Policy(backoff_first_s=0.01, backoff_max_s=0.05)
    md = "---\nname: flaky\ndescription: Dies until fixed.\nmetadata:\n  aos-service: service.py\n---\nx\n"
    # It dies while a marker file exists outside its folder (so fixing it is not a skill change).
    broken = kernel.paths.home / "flaky-broken"
    broken.write_text("")
    py = f"import pathlib, sys\nif pathlib.Path({str(broken)!r}).exists():\n    sys.exit(3)\n" + GUARD_PY
    write(kernel.paths.home, "flaky", md, py)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["flaky"]
    assert await asyncio.wait_for(runner.wait_state(State.QUARANTINED), 30) == State.QUARANTINED
    # A plain re-scan changes nothing: the skill did not change.
    assert (await call(rpc, "skill.reload"))["revived"] == []
    assert runner.state.state == State.QUARANTINED
    broken.unlink()  # the person fixed what it needed, then:
    res = await call(rpc, "skill.reload", {"skill": "flaky"})
    assert res["revived"] == ["flaky"]
    assert await asyncio.wait_for(runner.wait_state(State.RUNNING), 30) == State.RUNNING
    shown = await call(rpc, "skill.get", {"skill": "flaky"})
    assert shown["service_status"]["state"] == "running" and shown["permissions"] == []


async def test_a_command_that_raises_leaves_its_traceback_in_the_skill_log(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    md = "---\nname: divider\ndescription: Divides badly.\nmetadata:\n  aos-service: service.py\n---\nx\n"
    py = (
        "from aos_sdk import define_service\n\n@define_service\ndef service():\n"
        "    def boom(args, caller):\n        return 1 / 0\n"
        "    return {'commands': {'boom': boom}}\n"
    )
    write(kernel.paths.home, "divider", md, py)
    await call(rpc, "skill.reload")
    await asyncio.wait_for(kernel.kernel.services.runners["divider"].registered.wait(), 15)
    sid = await agent_session(rpc, model)
    model.add(
        {"bash": "aos-python -c 'from aos_sdk.cli import main; main(\"divider\")' boom"}, {"text": "ok"}
    )
    facts = await dispatch(rpc, kernel, sid)
    result = next(f["body"] for f in facts if f["kind"] == "tool.result")
    assert result["exit_code"] == 1 and "ZeroDivisionError" in result["output"]
    log_text = (kernel.paths.logs / "skills" / "divider.log").read_text()
    assert "command.call 'boom' failed" in log_text and "Traceback" in log_text
    assert "return 1 / 0" in log_text


async def test_services_may_call_only_their_permitted_syscalls(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    py = """from aos_sdk import define_service
from aos_sdk.errors import AosError

@define_service
def service():
    async def check(input_data, output_data):
        try:
            await service.kernel.call("agent.list", {})
            first = "agent.list ok"
        except AosError as exc:
            first = f"agent.list {exc.type}"
        try:
            await service.kernel.call("session.list", {})
            second = "session.list ok"
        except AosError as exc:
            second = f"session.list {exc.type}"
        return {"verdict": "reject", "reason": f"{first}; {second}"}
    return {"hooks": {"tool.before": check}}
"""
    md = "---\nname: nosy\ndescription: Probes permissions.\nmetadata:\n  aos-service: service.py\n  aos-permissions: agent.list\n---\nx\n"
    write(kernel.paths.home, "nosy", md, py)
    await call(rpc, "skill.reload")
    await asyncio.wait_for(kernel.kernel.services.runners["nosy"].wait_state(State.RUNNING), 20)
    sid = await agent_session(rpc, model)
    model.add({"bash": "echo x"}, {"text": "ok"})
    facts = await dispatch(rpc, kernel, sid)
    result = next(f["body"] for f in facts if f["kind"] == "tool.result")
    assert result["output"] == "refused by nosy: agent.list ok; session.list permission_denied"
    denied = (await call(rpc, "log.list", {"actor": "service:nosy", "outcome": "error"}))["entries"]
    assert [e["op"] for e in denied] == ["session.list"] and denied[0]["error"]["type"] == "permission_denied"


async def test_removing_the_skill_stops_its_service(rpc: RpcConnection, kernel: Any) -> None:
    import shutil

    folder = write(kernel.paths.home, "my-guard", GUARD_MD, GUARD_PY)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["my-guard"]
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)
    pid = runner.proc.pid
    shutil.rmtree(folder)
    assert (await call(rpc, "skill.reload"))["removed"] == ["my-guard"]
    assert "my-guard" not in kernel.kernel.services.runners and gone(pid)
    assert not [h for h in kernel.kernel.hooks.handlers("tool.before") if h.skill == "my-guard"]


@pytest.mark.parametrize("kernel", [{"watch": True}], indirect=True)
async def test_hot_reload_drop_edit_break_remove(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    import shutil
    import time

    services = kernel.kernel.services
    staged = tmp_path / "my-guard"
    staged.mkdir()
    (staged / "SKILL.md").write_text(GUARD_MD)
    (staged / "service.py").write_text(GUARD_PY)
    target = kernel.paths.home / "skills" / "my-guard"

    # Drop the folder in: no reload call, the watcher notices.
    t0 = time.monotonic()
    shutil.copytree(staged, target)
    await asyncio.wait_for(services.wait_until(lambda: "my-guard" in services.runners), 10)
    first = services.runners["my-guard"]
    await asyncio.wait_for(first.wait_state(State.RUNNING), 20)
    print(f"drop-in to registered service: {(time.monotonic() - t0) * 1000:.0f} ms")

    sid = await agent_session(rpc, model)

    async def refusal() -> str:
        model.add({"bash": "echo 'DROP TABLE users' > /dev/null"}, {"text": "ok"})
        facts = await dispatch(rpc, kernel, sid)
        return str(next(f["body"] for f in facts if f["kind"] == "tool.result")["output"])

    assert await refusal() == "refused by my-guard: blocked: DROP TABLE"

    # Edit the service: the new version registers, then the old one stops.
    (target / "service.py").write_text(GUARD_PY.replace("blocked:", "blocked (v2):"))
    await asyncio.wait_for(services.wait_until(lambda: services.runners["my-guard"] is not first), 20)
    second = services.runners["my-guard"]
    assert second.state.state == State.RUNNING and first.proc.returncode is not None
    assert await refusal() == "refused by my-guard: blocked (v2): DROP TABLE"

    # Break it: the broken version never registers, and v2 keeps serving.
    (target / "service.py").write_text("this is not python (\n")
    await asyncio.wait_for(services.wait_until(lambda: "my-guard" in services.reload_failures), 30)
    assert "before registering" in services.reload_failures["my-guard"]
    assert services.runners["my-guard"] is second and second.state.state == State.RUNNING
    assert await refusal() == "refused by my-guard: blocked (v2): DROP TABLE"
    # ... and it says so: the last good version serves, the failed reload is shown, with its cause.
    status = (await call(rpc, "skill.get", {"skill": "my-guard"}))["service_status"]
    assert status["state"] == "running" and "before registering" in status["reload_failed"]
    log_text = (kernel.paths.logs / "skills" / "my-guard.log").read_text()
    assert "SyntaxError" in log_text

    # Remove it: the service stops and its hook is gone.
    shutil.rmtree(target)
    await asyncio.wait_for(services.wait_until(lambda: "my-guard" not in services.runners), 10)
    assert gone(second.proc.pid)
    model.add({"bash": "echo 'DROP TABLE users' > /dev/null; echo through"}, {"text": "ok"})
    facts = await dispatch(rpc, kernel, sid)
    assert next(f["body"] for f in facts if f["kind"] == "tool.result")["output"] == "through\n"


def test_aos_skills_logs_shows_a_service_log(aos: Any, home: Path) -> None:
    md = "---\nname: talker\ndescription: Says hello in its log.\nmetadata:\n  aos-service: service.py\n---\nx\n"
    py = GUARD_PY.replace("def service():", "def service():\n    print('hello from talker', flush=True)")
    write(home, "talker", md, py)
    assert aos("start").returncode == 0
    import json as _json

    def registered() -> bool:
        skills = _json.loads(aos("skills", "--json").stdout)
        status = next(s for s in skills if s["name"] == "talker")["service_status"]
        return bool(status and status["state"] == "running")

    for _ in range(100):  # the CLI is what a user polls; each call is a full round trip
        if registered():
            break
    r = aos("skills", "logs", "talker")
    assert r.returncode == 0 and "hello from talker" in r.stdout and "starting talker" in r.stdout
    r = aos("skills", "logs", "nobody")
    assert r.returncode == 1 and "no log for skill 'nobody'" in r.stderr


async def test_a_hanging_service_times_out_and_a_forking_one_leaves_nothing(
    rpc: RpcConnection, kernel: Any, tmp_path: Path
) -> None:
    kernel.kernel.services.policy = Policy(register_timeout_s=1.0, backoff_first_s=5.0, stop_grace_s=1.0)
    hang = "---\nname: hanger\ndescription: Never registers.\nmetadata:\n  aos-service: service.py\n---\nx\n"
    write(kernel.paths.home, "hanger", hang, "import time\nwhile True:\n    time.sleep(3600)\n")
    pidfile = tmp_path / "child.pid"
    fork_py = GUARD_PY.replace(
        "def service():",
        "def service():\n"
        "    import subprocess\n"
        f"    child = subprocess.Popen(['sleep', '600'])\n"
        f"    open({str(pidfile)!r}, 'w').write(str(child.pid))\n",
    )
    fork = "---\nname: forker\ndescription: Starts a child.\nmetadata:\n  aos-service: service.py\n---\nx\n"
    write(kernel.paths.home, "forker", fork, fork_py)
    await call(rpc, "skill.reload")
    hanger, forker = kernel.kernel.services.runners["hanger"], kernel.kernel.services.runners["forker"]
    assert await asyncio.wait_for(hanger.wait_state(State.BACKOFF), 15) == State.BACKOFF
    assert "did not register within 1 s" in (hanger.state.last_error or "")
    assert gone(hanger.proc.pid), "a service that failed to register is killed"
    await asyncio.wait_for(forker.wait_state(State.RUNNING), 20)
    child = int(pidfile.read_text())
    service_pid = forker.proc.pid
    await kernel.kernel.services.close()  # what aos stop does
    assert gone(service_pid) and gone(child), "stopping a service kills its whole process group"


def test_kill9_of_the_daemon_leaves_no_service_behind(aos: Any, home: Path) -> None:
    import json as _json
    import select

    from aos.pidlock import PidLock

    write(home, "my-guard", GUARD_MD, GUARD_PY)
    assert aos("start").returncode == 0
    status: dict[str, Any] = {}
    for _ in range(200):  # polling the CLI a user would poll
        skills = _json.loads(aos("skills", "--json").stdout)
        status = next(s for s in skills if s["name"] == "my-guard")["service_status"] or {}
        if status.get("state") == "running":
            break
    service_pid = status["pid"]
    daemon = PidLock.holder(home / "run" / "aos.pid")
    assert daemon and daemon > 0
    fd = os.pidfd_open(service_pid)
    os.kill(daemon, signal.SIGKILL)
    ready, _, _ = select.select([fd], [], [], 15)  # the service exits when its socket closes
    os.close(fd)
    assert ready, "the service outlived the daemon"
    assert aos("start").returncode == 0  # and the next daemon starts it again


async def test_a_service_hook_fires_only_where_its_skill_is_enabled(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    write(kernel.paths.home, "my-guard", GUARD_MD, GUARD_PY)
    await call(rpc, "skill.reload")
    await asyncio.wait_for(kernel.kernel.services.runners["my-guard"].wait_state(State.RUNNING), 20)
    guarded = await agent_session(rpc, model)
    free = str((await call(rpc, "session.create", {"agent": "alice"}))["id"])
    await call(rpc, "skill.disable", {"skill": "my-guard", "session": free})
    model.add({"bash": "echo 'DROP TABLE x' > /dev/null; echo ran"}, {"text": "ok"})
    assert (
        next(f["body"]["outcome"] for f in await dispatch(rpc, kernel, guarded) if f["kind"] == "tool.result")
        == "rejected"
    )
    model.add({"bash": "echo 'DROP TABLE x' > /dev/null; echo ran"}, {"text": "ok"})
    assert (
        next(f["body"]["output"] for f in await dispatch(rpc, kernel, free) if f["kind"] == "tool.result")
        == "ran\n"
    )


async def test_a_service_that_drops_its_connection_is_restarted(rpc: RpcConnection, kernel: Any) -> None:
    kernel.kernel.services.policy = Policy(backoff_first_s=0.05)
    py = GUARD_PY.replace(
        "    return {'hooks': {'tool.before': guard}}",
        "    async def hang_up(args, caller):\n"
        "        await service.kernel.aclose()\n"
        "        return 'bye'\n"
        "    return {'hooks': {'tool.before': guard}, 'commands': {'hang-up': hang_up}}",
    )
    write(kernel.paths.home, "my-guard", GUARD_MD, py)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["my-guard"]
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)
    first = runner.proc.pid
    assert runner.conn is not None
    # The service closes its own connection but keeps its process alive (as a hung one would).
    from contextlib import suppress

    from aos_sdk.errors import AosError

    with suppress(AosError):
        await runner.conn.call("command.call", {"command": "hang-up", "args": {}, "caller": {}}, timeout=5)
    await asyncio.wait_for(runner.wait_state(State.BACKOFF, State.STARTING), 10)
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)
    assert runner.proc.pid != first and gone(first)


async def test_a_gate_under_load_is_never_refused_by_an_in_flight_limit(
    rpc: RpcConnection, kernel: Any
) -> None:
    """At 100 concurrent sessions, guards once refused commands with 'Overloaded: more than 64
    requests in flight' (a limit meant for untrusted clients, applied to the kernel's hook calls)."""
    slow = GUARD_PY.replace(
        "    def guard(input_data, output_data):",
        "    async def guard(input_data, output_data):\n        import asyncio\n        await asyncio.sleep(0.3)",
    )
    write(kernel.paths.home, "slow-guard", GUARD_MD.replace("my-guard", "slow-guard"), slow)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["slow-guard"]
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)
    bus = kernel.kernel.hooks
    verdicts = await asyncio.gather(
        *(
            bus.gate(
                "tool.before",
                {"agent_id": None, "session_id": None},
                {"args": {"command": f"echo {i}"}, "cwd": "/"},
            )
            for i in range(150)
        )
    )
    assert all(isinstance(v, dict) for v in verdicts), [v for v in verdicts if not isinstance(v, dict)][:1]


async def test_a_hook_whose_service_calls_the_kernel_under_load_is_never_refused(
    rpc: RpcConnection, kernel: Any
) -> None:
    """At 100 concurrent sessions, session.assemble failed with 'Overloaded: more than 64
    requests in flight': aos-context reads history from its hook, and the kernel applied the
    in-flight limit meant for untrusted clients to the syscalls of its own services."""
    md = GUARD_MD.replace("my-guard", "reader").replace(
        "service: ./service.py", "service: ./service.py\nmetadata:\n  aos-permissions: history.list"
    )
    py = """import asyncio
from aos_sdk import define_service
from aos_sdk.errors import NotFound

@define_service
def service():
    async def guard(input_data, output_data):
        await asyncio.sleep(0.2)  # every call is in flight at once, then each reads history
        try:
            await service.kernel.call("history.list", {"session": "se_none"})
        except NotFound:
            pass
        return output_data
    return {'hooks': {'tool.before': guard}}
"""
    write(kernel.paths.home, "reader", md, py)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["reader"]
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)
    verdicts = await asyncio.gather(
        *(
            kernel.kernel.hooks.gate(
                "tool.before",
                {"agent_id": None, "session_id": None},
                {"args": {"command": f"echo {i}"}, "cwd": "/"},
            )
            for i in range(150)
        )
    )
    refused = [v for v in verdicts if not isinstance(v, dict)]
    assert not refused, refused[:1]


async def test_a_service_reports_a_problem_and_a_bad_report_is_refused(
    rpc: RpcConnection, kernel: Any
) -> None:
    """``service.report``: what a running service says is wrong shows beside its state; a
    malformed report gets a clear error and changes nothing."""
    py = """from aos_sdk import define_service
from aos_sdk.errors import AosError

@define_service
def service():
    async def start():
        for bad in (42, "   ", "nul\\x00byte"):
            try:
                await service.report(bad)
            except AosError as exc:
                print(f"refused: {exc.message}", flush=True)
        await service.report("the upstream feed is unreachable")
    return {"start": start, "commands": {"noop": lambda a, c: {}}}
"""
    md = (
        "---\nname: reporter\ndescription: Reports a problem.\nmetadata:\n  aos-service: service.py\n---\nx\n"
    )
    write(kernel.paths.home, "reporter", md, py)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["reporter"]
    await asyncio.wait_for(runner.wait_for(lambda: runner.problem is not None), 20)
    st = (await call(rpc, "skill.get", {"skill": "reporter"}))["service_status"]
    assert st["state"] == "running" and st["problem"] == "the upstream feed is unreachable"
    log_text = (kernel.paths.logs / "skills" / "reporter.log").read_text()
    assert log_text.count("refused: service.report: problem must be a non-empty string or null") == 2
    assert "refused: service.report: problem holds a NUL byte" in log_text
