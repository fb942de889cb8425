"""Escape attempts: a hostile agent's own bash, in a real dispatch, tries to cross each boundary of
its sandbox. Every test asserts that the attempt failed *and* that nothing changed.

These tests need bubblewrap; without it they skip, saying so. CI also runs this file as an
unprivileged user (see ``.ci/run``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.kernel.hooks import HookHandler
from aos.loop.sandbox import probe
from aos_sdk.connection import RpcConnection
from aos_sdk.errors import AosError, Rejected
from aos_sdk.testing import ScriptedModel

from .procutil import live_processes_mentioning
from .rpc import call, next_fact, scripted_session, workspace

_PROBE = probe()
pytestmark = pytest.mark.skipif(
    not _PROBE.available,
    reason=f"the sandbox tests need bubblewrap, which does not work here: {_PROBE.reason}",
)

CANARY = "sk-canary-0123456789abcdefghijklmnop"


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider key in the daemon's environment, as a real deployment has."""
    monkeypatch.setenv("OPENROUTER_API_KEY", CANARY)


async def run_commands(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, *commands: str
) -> list[dict[str, Any]]:
    """The agent runs ``commands`` in one step; returns their ``tool.result`` bodies."""
    model.add({"bash": list(commands)}, {"text": "done"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "try"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    assert facts[-1]["kind"] == "dispatch.end" and facts[-1]["body"]["status"] == "done", facts[-1]
    started_facts = [f["body"] for f in facts if f["kind"] == "tool.started"]
    assert started_facts and all(b["sandbox"] == "bwrap" for b in started_facts)
    return [f["body"] for f in facts if f["kind"] == "tool.result"]


def py(code: str) -> str:
    """A bash command running ``code`` with the Python skill CLIs use."""
    return f"aos-python -c {shlex.quote(code)}"


def output(results: list[dict[str, Any]]) -> str:
    return "\n".join(r["output"] for r in results)


async def test_the_kernel_socket_is_out_of_reach(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    sock = kernel.paths.kernel_sock
    connect = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock)!r}); print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('refused:', e)\n"
    )
    results = await run_commands(
        rpc,
        kernel,
        sid,
        model,
        py(connect),
        # Any descriptor inherited from the daemon: only stdin, stdout and stderr, none a socket.
        "for f in /proc/$$/fd/*; do readlink $f; done",
        f"ls -la {sock.parent} 2>&1; ls {kernel.paths.home} 2>&1",
    )
    assert "CONNECTED" not in results[0]["output"] and "refused:" in results[0]["output"]
    fds = results[1]["output"].split()
    assert fds and not any(fd.startswith("socket:") for fd in fds), fds
    assert "No such file or directory" in results[2]["output"]
    assert "kernel.sock" not in results[2]["output"]


async def test_aos_approve_from_the_sandbox_does_nothing(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    # alice's command waits for a person; bob, a hostile agent, tries to approve it himself.
    kernel.kernel.hooks.register(
        HookHandler(
            "tool.before",
            "cautious",
            lambda i, o: {"verdict": "ask", "reason": "risky"} if "RISKY" in o["args"]["command"] else o,
        )
    )
    alice = await scripted_session(rpc, model.url, "alice")
    model.add({"bash": "echo RISKY"}, {"text": "ok"})
    started = await call(rpc, "session.dispatch", {"session": alice, "message": "go"})
    asked = await next_fact(kernel, alice, lambda f: f["kind"] == "approval.requested", after=started["seq"])
    approval = str(asked["body"]["approval_id"])
    with ScriptedModel() as bobs_model:
        bob = await scripted_session(rpc, bobs_model.url, "bob")
        results = await attempt_approve(rpc, kernel, bob, bobs_model, approval)
    assert len(results) == 4 and all("exit=0" not in r["output"] for r in results), output(results)
    got = await call(rpc, "approval.list", {"session": alice})
    assert [a["id"] for a in got["approvals"]] == [approval], "still pending: only a person resolves it"
    await call(rpc, "approval.resolve", {"approval": approval, "decision": "deny"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(alice), 30)


async def attempt_approve(
    rpc: RpcConnection, kernel: Any, bob: str, model: ScriptedModel, approval: str
) -> list[dict[str, Any]]:
    home = kernel.paths.home
    return await run_commands(
        rpc,
        kernel,
        bob,
        model,
        f"aos approve {approval} 2>&1; echo exit=$?",
        f"AOS_HOME={home} aos approve {approval} 2>&1; echo exit=$?",
        f'AOS_HOME={home} aos call approval.resolve \'{{"approval": "{approval}", "decision": "approve"}}\' 2>&1; echo exit=$?',
        # Its own client, with the SDK skill CLIs use, straight at the kernel socket.
        py(
            "from aos_sdk.syncclient import SyncClient\n"
            f"c = SyncClient({str(kernel.paths.kernel_sock)!r})\n"
            f"c.call('approval.resolve', {{'approval': {approval!r}, 'decision': 'approve'}})\n"
        )
        + " 2>&1; echo exit=$?",
    )


async def test_postgresql_is_out_of_reach_and_wants_a_password(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, pg: Any
) -> None:
    sid = await scripted_session(rpc, model.url)
    socket_dir = pg.socket_dir
    # Even with the right password, the socket is not there to connect to.
    attempt = (
        "import psycopg\n"
        "try:\n"
        f"    psycopg.connect({pg.dsn('postgres')!r}, connect_timeout=3); print('LOGGED IN')\n"
        "except Exception as e:\n"
        "    print('refused:', e)\n"
    )
    results = await run_commands(rpc, kernel, sid, model, py(attempt), f"ls {socket_dir} 2>&1")
    assert "LOGGED IN" not in results[0]["output"] and "refused:" in results[0]["output"]
    assert "No such file or directory" in results[1]["output"]
    # And outside the sandbox, the socket asks for a password: no more trust.
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password"):
        await psycopg.AsyncConnection.connect(f"host={socket_dir} dbname=postgres user=postgres")
    assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600


async def test_no_process_of_the_host_is_visible_or_signalable(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    runner = kernel.kernel.services.runners["aos-context"]
    await runner.registered.wait()
    service_pid = runner.proc.pid
    daemon_pid = os.getpid()
    results = await run_commands(
        rpc,
        kernel,
        sid,
        model,
        f"cat /proc/{daemon_pid}/environ 2>&1; grep -l canary /proc/*/environ 2>&1; env | grep -c canary",
        "ls /proc | grep -E '^[0-9]+$' | wc -l; ps -eo pid,comm 2>&1 | head -20",
        f"kill -9 {daemon_pid} {service_pid} 2>&1; kill -9 -1 2>&1; echo tried",
    )
    text = output(results)
    assert CANARY not in text and "canary" not in text.replace("grep -l canary", "")
    assert "postgres" not in results[1]["output"] and "python" not in results[1]["output"]
    assert int(results[1]["output"].split()[0]) < 10, results[1]["output"]
    assert "tried" in results[2]["output"]
    # Nothing happened to the daemon (this process) or the service.
    assert runner.proc.pid == service_pid and runner.proc.returncode is None
    # And the canary never reached history in any form.
    facts = (await call(rpc, "history.list", {"session": sid}))["facts"]
    assert CANARY not in str(facts) and CANARY[::-1] not in str(facts)


async def test_skill_roots_and_other_workspaces_cannot_be_written(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    home = kernel.paths.home
    user_skills = home / "skills"
    checkout_skill = Path(kernel.kernel.skills.get("aos-context").path)
    bob_ws = workspace(home, "bob")
    (bob_ws / "notes.txt").write_text("bob's\n")
    before = sorted(p.name for p in user_skills.iterdir())
    sid = await scripted_session(rpc, model.url, "alice")
    evil = "---\nname: evil\ndescription: planted\nmetadata:\n  aos-service: service.py\n---\nx\n"
    results = await run_commands(
        rpc,
        kernel,
        sid,
        model,
        f"mkdir -p {user_skills}/evil && printf '{evil}' > {user_skills}/evil/SKILL.md; echo exit=$?",
        f"echo hacked >> {checkout_skill}/service.py; echo exit=$?",
        f"echo hacked >> {checkout_skill}/SKILL.md; echo exit=$?",
        f"cat {checkout_skill}/service.py 2>&1 | head -3",
        f"echo mine > {bob_ws}/notes.txt; ls {bob_ws} 2>&1",
        f"cat {checkout_skill}/SKILL.md | head -2",  # what the catalog tells it to read: allowed
    )
    assert sorted(p.name for p in user_skills.iterdir()) == before, "nothing was planted"
    assert "hacked" not in (checkout_skill / "service.py").read_text()
    assert "hacked" not in (checkout_skill / "SKILL.md").read_text()
    # (Where the checkout lies under /tmp, the first write lands in the agent's private /tmp.)
    assert "exit=0" not in results[2]["output"], "SKILL.md is read-only"
    assert "define_service" not in results[3]["output"], "a skill's service code is not visible"
    assert (bob_ws / "notes.txt").read_text() == "bob's\n"
    assert "No such file or directory" in results[4]["output"]
    assert results[5]["output"].startswith("---\nname: aos-context")


async def test_another_agents_content_is_refused_through_the_gateway(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    bob = await scripted_session(rpc, model.url, "bob")
    bob_id = (await call(rpc, "agent.get", {"agent": "bob"}))["id"]
    put = await kernel.store.put_content(
        agent_id=bob_id, session_id=bob, data=b"bob's secret plan\n", mime="text/plain"
    )
    alice = await scripted_session(rpc, model.url, "alice")
    results = await run_commands(
        rpc, kernel, alice, model, f"ctx read {put['content_id']} 2>&1; echo exit=$?"
    )
    assert "secret plan" not in results[0]["output"] and "exit=1" in results[0]["output"]


async def test_nothing_a_command_starts_outlives_it(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    results = await run_commands(
        rpc,
        kernel,
        sid,
        model,
        # Detached every way bash allows; each holds stdout open, too.
        "setsid sleep 391 & nohup sleep 392 & (sleep 393 &) ; (setsid bash -c 'sleep 394 &' &); echo started",
    )
    assert results[0]["outcome"] == "ok" and results[0]["output"] == "started\n", results[0]
    for n in (391, 392, 393, 394):
        assert live_processes_mentioning(f"sleep {n}") == []


@pytest.mark.parametrize("kernel", [{"bash_timeout_s": 30}], indirect=True)
async def test_a_background_job_holding_stdout_does_not_delay_the_end(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    results = await run_commands(rpc, kernel, sid, model, "sleep 395 & echo done")
    # Had the command waited for its background job, it would have timed out at 30 s.
    assert results[0]["outcome"] == "ok" and results[0]["exit_code"] == 0
    assert live_processes_mentioning("sleep 395") == []


async def test_the_file_size_limit_stops_a_disk_filler(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url, settings={"sandbox": {"limits": {"file_size_mb": 1}}})
    results = await run_commands(
        rpc, kernel, sid, model, "dd if=/dev/zero of=big bs=1M count=20 2>&1; echo exit=$?", "ulimit -f"
    )
    big = kernel.paths.workspaces / "alice" / "big"
    assert big.stat().st_size <= 1024 * 1024
    assert "File size limit exceeded" in results[0]["output"] or "exit=153" in results[0]["output"]
    assert results[1]["output"].strip() == "1024"


async def test_network_off_per_agent(rpc: RpcConnection, kernel: Any, model: ScriptedModel) -> None:
    port = model.url.rsplit(":", 1)[1].split("/")[0]
    probe_net = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('REACHED')\n"
        "except OSError as e:\n"
        "    print('unreachable:', e)\n"
    )
    on = await scripted_session(rpc, model.url, "online")
    off = await scripted_session(rpc, model.url, "offline", settings={"sandbox": {"network": False}})
    reached = await run_commands(rpc, kernel, on, model, py(probe_net))
    blocked = await run_commands(rpc, kernel, off, model, py(probe_net))
    assert "REACHED" in reached[0]["output"]
    assert "unreachable:" in blocked[0]["output"]


async def test_workspace_modes_are_normal_and_nested_folders_work(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    results = await run_commands(
        rpc,
        kernel,
        sid,
        model,
        "mkdir -p a/b && cd a/b && echo hi > f && cat f",
        "echo $HOME; touch ~/x && ls ~",
    )
    assert results[0]["output"] == "hi\n"
    umask = os.umask(0)
    os.umask(umask)
    ws = kernel.paths.workspaces / "alice"
    assert stat.S_IMODE(ws.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((ws / "a" / "b" / "f").stat().st_mode) == 0o666 & ~umask
    home = kernel.paths.agent_dir("alice") / "home"
    assert results[1]["output"] == f"{home}\nx\n" and (home / "x").exists()


async def test_a_workspace_holding_aos_files_is_refused(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url, workspace=str(kernel.paths.home))
    with pytest.raises(Rejected, match="contains"):
        await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    run_dir = await scripted_session(rpc, model.url, "bob", workspace=str(kernel.paths.run))
    with pytest.raises(Rejected, match="lies inside"):
        await call(rpc, "session.dispatch", {"session": run_dir, "message": "go"})


async def test_status_says_the_sandbox_is_in_force(rpc: RpcConnection, kernel: Any) -> None:
    st = await call(rpc, "system.status")
    assert st["sandbox"]["in_force"] == "bwrap" and st["sandbox"]["mode"] == "auto"


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without bubblewrap: PATH without it when the kernel probes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "true"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))


async def test_required_sandbox_without_bubblewrap_refuses_the_dispatch(
    no_bwrap: None, rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    st = await call(rpc, "system.status")
    assert st["sandbox"]["in_force"] == "off" and "bwrap was not found" in st["sandbox"]["why"]
    sid = await scripted_session(rpc, model.url, settings={"sandbox": "required"})
    with pytest.raises(Rejected, match="apt-get install bubblewrap"):
        await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    # auto (the default) runs the command unsandboxed, and history says so.
    other = await scripted_session(rpc, model.url, "bob")
    model.add({"bash": "echo plain"}, {"text": "ok"})
    started = await call(rpc, "session.dispatch", {"session": other, "message": "go"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(other), 30)
    facts = (await call(rpc, "history.list", {"session": other, "after_seq": started["seq"]}))["facts"]
    assert next(f["body"] for f in facts if f["kind"] == "tool.started")["sandbox"] == "off"


async def test_services_get_a_clean_environment(rpc: RpcConnection, kernel: Any) -> None:
    runner = kernel.kernel.services.runners["aos-context"]
    await runner.registered.wait()
    environ = await asyncio.to_thread(Path(f"/proc/{runner.proc.pid}/environ").read_bytes)
    assert CANARY.encode() not in environ and b"AOS_SOCKET=" in environ
    # A skill that declares the variable gets it.
    folder = kernel.paths.home / "skills" / "needs-key"
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(
        "---\nname: needs-key\ndescription: Uses a provider key.\nmetadata:\n"
        "  aos-service: service.py\n  aos-env: OPENROUTER_API_KEY\n---\nx\n"
    )
    (folder / "service.py").write_text(
        "from aos_sdk import define_service\n\n@define_service\ndef service():\n    return {}\n"
    )
    await call(rpc, "skill.reload")
    needs = kernel.kernel.services.runners["needs-key"]
    await asyncio.wait_for(needs.registered.wait(), 15)
    environ = await asyncio.to_thread(Path(f"/proc/{needs.proc.pid}/environ").read_bytes)
    assert CANARY.encode() in environ
    shown = await call(rpc, "skill.get", {"skill": "needs-key"})
    assert shown["env"] == ["OPENROUTER_API_KEY"]


async def test_the_agents_python_is_not_the_daemons(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    """AOS's own interpreter (its packages, aos_sdk) is not what an agent gets as ``python3``:
    only skill CLIs use it, through ``aos-python``; sandboxed or not."""
    import sys

    venv = str(Path(sys.executable).parent)
    probe_cmd = "command -v python3 || echo none; command -v aos-python; echo PATH=$PATH"
    for name, settings in (("boxed", {}), ("open", {"sandbox": "off"})):
        sid = await scripted_session(rpc, model.url, agent=name, settings=settings)
        model.add({"bash": [probe_cmd, py("import aos_sdk; print('sdk ok')")]}, {"text": "done"})
        started = await call(rpc, "session.dispatch", {"session": sid, "message": "which python?"})
        await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
        facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
        assert {f["body"]["sandbox"] for f in facts if f["kind"] == "tool.started"} == {
            "bwrap" if name == "boxed" else "off"
        }
        results = [f["body"] for f in facts if f["kind"] == "tool.result"]
        found, *rest = results[0]["output"].splitlines()
        assert not found.startswith(venv), f"{name}: python3 is the daemon's: {found}"
        assert venv not in results[0]["output"], f"{name}: the daemon's bin folder is on PATH"
        assert rest[0].endswith("/aos-python")
        assert results[1]["output"] == "sdk ok\n", results[1]


# -- probes: sandbox.exec ----------------------------------------------------------------------


async def test_a_probe_runs_in_the_agents_sandbox_with_no_model_and_no_gateway(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    """``sandbox.exec`` (what aos-schedule's probes use) gives a command exactly the agent's
    sandbox: its workspace, not the daemon's home; no token; secrets scrubbed."""
    sid = await scripted_session(rpc, model.url)
    ws = workspace(kernel.paths.home)
    home = kernel.paths.home
    command = (
        f"echo made > here; ls {home}/run 2>&1 | head -1; env | grep -c '^AOS_TOKEN\\|^AOS_GATEWAY';"
        f" echo key=$OPENROUTER_API_KEY; echo {CANARY}; exit 3"
    )
    res = await call(rpc, "sandbox.exec", {"agent": "alice", "session": sid, "command": command})
    assert (res["outcome"], res["exit_code"], res["sandbox"]) == ("error", 3, "bwrap")
    assert (ws / "here").read_text() == "made\n"
    lines = res["output"].splitlines()
    assert "No such file or directory" in lines[0], "the daemon's home is not in the sandbox"
    assert lines[1] == "0", "no gateway, no token"
    assert lines[2] == "key=" and CANARY not in res["output"] and "***" in lines[3]
    assert model.requests == [], "no model call"
    # Whatever it does, the clock stops it: the agent's limit is the most it may take.
    res = await call(
        rpc, "sandbox.exec", {"agent": "alice", "session": sid, "command": "sleep 5", "timeout_s": 0.3}
    )
    assert res["outcome"] == "timeout" and res["exit_code"] is None
    for bad, said in (
        ({"command": "echo \x00"}, "NUL"),
        ({"command": ""}, "at least 1 character"),
        ({"session": "se_nope", "command": "true"}, "se_nope"),
    ):
        with pytest.raises(AosError, match=said):
            await call(rpc, "sandbox.exec", {"agent": "alice", "session": sid, **bad})
    other = await scripted_session(rpc, model.url, agent="bob")
    with pytest.raises(AosError, match="does not belong to agent 'alice'"):
        await call(rpc, "sandbox.exec", {"agent": "alice", "session": other, "command": "true"})


@pytest.mark.parametrize("kernel", [{"guard": True}], indirect=True)
async def test_a_probe_passes_the_same_guards_as_the_agents_own_commands(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    guard = {"deny": ["^touch denied"], "ask": ["^touch asked"]}
    sid = await scripted_session(rpc, model.url, settings={"guard": guard})
    ws = workspace(kernel.paths.home)
    denied = await call(rpc, "sandbox.exec", {"agent": "alice", "session": sid, "command": "touch denied"})
    assert denied["outcome"] == "rejected" and "aos-guard" in denied["reason"]
    asked = await call(rpc, "sandbox.exec", {"agent": "alice", "session": sid, "command": "touch asked"})
    assert asked["outcome"] == "needs_approval" and "cannot wait for a person" in asked["reason"]
    assert not (ws / "denied").exists() and not (ws / "asked").exists(), "neither ran"
    assert (await call(rpc, "approval.list", {}))["approvals"] == [], "no approval left waiting"
    fine = await call(rpc, "sandbox.exec", {"agent": "alice", "session": sid, "command": "touch fine"})
    assert fine["outcome"] == "ok" and (ws / "fine").exists()
