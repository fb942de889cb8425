"""The agent gateway: skill CLIs reach their service from agent bash, and nothing else does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from aos.skills.supervisor import State
from aos_sdk.connection import RpcConnection
from aos_sdk.errors import NotFound
from aos_sdk.testing import ScriptedModel

from .rpc import call, scripted_session

NOTES_MD = """---
name: notes
description: Keeps short notes for the agent. Use `notes add <text>` and `notes list`.
metadata:
  aos-service: service.py
---
Run `notes add <text>` to keep a note and `notes list` to read them back.
"""
NOTES_PY = """from aos_sdk import define_service

NOTES = {}

@define_service
def service():
    def add(args, caller):
        NOTES.setdefault(caller["session_id"], []).append(" ".join(args["argv"]))
        return f"noted ({len(NOTES[caller['session_id']])} so far) for {caller['agent_id']}"

    def list_(args, caller):
        return {"notes": NOTES.get(caller["session_id"], []), "dispatch": caller["dispatch_id"]}

    return {"commands": {"add": add, "list": list_}}
"""
CLI = "#!/usr/bin/env aos-python\nfrom aos_sdk.cli import main; main('notes')\n"


def gateway_call(method: str, params: str = "{}") -> str:
    """Agent bash calling ``method`` straight on the gateway, with its own token."""
    return (
        'aos-python -c "import os; from aos_sdk.syncclient import SyncClient; from aos_sdk.errors import AosError\n'
        "try:\n"
        "    c = SyncClient(os.environ['AOS_GATEWAY'], headers={'X-AOS-Token': os.environ['AOS_TOKEN']})\n"
        f"    print(c.call('{method}', {params}))\n"
        "except AosError as e:\n"
        "    print('refused:', e.type, e.message)\""
    )


PROBE = gateway_call("agent.list")


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


async def setup(rpc: RpcConnection, kernel: Any, model: ScriptedModel) -> str:
    folder = kernel.paths.home / "skills" / "notes"
    (folder / "bin").mkdir(parents=True)
    (folder / "SKILL.md").write_text(NOTES_MD)
    (folder / "service.py").write_text(NOTES_PY)
    (folder / "bin" / "notes").write_text(CLI)
    (folder / "bin" / "notes").chmod(0o755)
    await call(rpc, "skill.reload")
    await asyncio.wait_for(kernel.kernel.services.runners["notes"].wait_state(State.RUNNING), 20)
    return await scripted_session(rpc, model.url)


async def run(rpc: RpcConnection, kernel: Any, sid: str) -> list[dict[str, Any]]:
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    return [f["body"] for f in facts if f["kind"] == "tool.result"]


async def test_agent_bash_uses_a_skill_cli(rpc: RpcConnection, kernel: Any, model: ScriptedModel) -> None:
    sid = await setup(rpc, kernel, model)
    model.add({"bash": ["notes add buy milk", "notes list --json", "which notes"]}, {"text": "done"})
    added, listed, which = await run(rpc, kernel, sid)
    agent_id = (await call(rpc, "agent.get", {"agent": "alice"}))["id"]
    assert added["output"] == f"noted (1 so far) for {agent_id}\n" and added["exit_code"] == 0
    got = json.loads(listed["output"])
    assert got["notes"] == ["buy milk"] and got["dispatch"].startswith("di_")
    assert which["output"].strip().endswith("skills/notes/bin/notes")


async def test_the_token_allows_nothing_but_skill_commands(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await setup(rpc, kernel, model)
    model.add({"bash": [PROBE, "echo $AOS_TOKEN"]}, {"text": "done"})
    probe, token = await run(rpc, kernel, sid)
    assert probe["output"].startswith("refused: permission_denied agent.list is not allowed here")

    # After the dispatch, its token is worthless.
    env = {**os.environ, "AOS_GATEWAY": str(kernel.paths.agent_sock), "AOS_TOKEN": token["output"].strip()}
    cli = kernel.paths.home / "skills" / "notes" / "bin" / "notes"
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(cli), "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "invalid or expired token" in r.stderr
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(cli), "list"],
        env={k: v for k, v in env.items() if k != "AOS_TOKEN"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 3 and "inside an AOS dispatch" in r.stderr


async def test_agent_bash_reaches_neither_probes_nor_the_persons_path_to_commands(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await setup(rpc, kernel, model)
    sock = kernel.paths.kernel_sock
    model.add(
        {
            "bash": [
                gateway_call("sandbox.exec", "{'agent': 'alice', 'session': 'x', 'command': 'id'}"),
                gateway_call("skill.command", "{'skill': 'notes', 'command': 'list'}"),
                # The person's way: the kernel's own socket. It is not in the sandbox at all.
                f"env -u AOS_TOKEN AOS_ADMIN_SOCKET={sock} notes list; echo exit=$?",
            ]
        },
        {"text": "done"},
    )
    exec_, command, admin = await run(rpc, kernel, sid)
    assert exec_["output"].startswith("refused: permission_denied sandbox.exec is not allowed here")
    assert command["output"].startswith("refused: permission_denied skill.command is not allowed here")
    assert "nothing is listening on" in admin["output"] and "exit=3" in admin["output"], admin["output"]


async def test_a_person_invokes_a_skill_command_for_an_agent(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    await setup(rpc, kernel, model)
    alice = (await call(rpc, "agent.get", {"agent": "alice"}))["id"]
    got = await call(
        rpc, "skill.command", {"skill": "notes", "command": "add", "args": {"argv": ["hi"]}, "agent": "alice"}
    )
    assert got["result"] == f"noted (1 so far) for {alice}"
    with pytest.raises(NotFound, match="has no command 'nope' \\(commands: add, list\\)"):
        await call(rpc, "skill.command", {"skill": "notes", "command": "nope"})
    with pytest.raises(NotFound, match="no service"):
        await call(rpc, "skill.command", {"skill": "nothing-here", "command": "list"})
    with pytest.raises(NotFound):
        await call(rpc, "skill.command", {"skill": "notes", "command": "add", "agent": "nobody"})


async def test_a_disabled_skill_cannot_be_invoked(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await setup(rpc, kernel, model)
    await call(rpc, "skill.disable", {"skill": "notes", "session": sid})
    # The skill's CLI is not even in the sandbox where the skill is off; the agent writes its own.
    own_cli = "aos-python -c 'from aos_sdk.cli import main; main(\"notes\")' add secret"
    model.add({"bash": [own_cli, "notes list"]}, {"text": "done"})
    direct, on_path = await run(rpc, kernel, sid)
    assert direct["exit_code"] == 1 and "skill 'notes' is not enabled in this session" in direct["output"]
    assert on_path["exit_code"] == 127  # its bin/ is not on PATH where the skill is off
    model.add({"bash": "notes nosuch"}, {"text": "done"})
    await call(rpc, "skill.enable", {"skill": "notes", "session": sid})
    (missing,) = await run(rpc, kernel, sid)
    assert missing["exit_code"] == 1 and "has no command 'nosuch' (commands: add, list)" in missing["output"]


async def test_agent_bash_can_neither_move_its_agent_nor_queue_work_of_its_own(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    """The dispatch queue and placements are the kernel's and people's: an agent that moves itself
    to another kernel, or queues a dispatch (a request id to make another's wake look done), is
    refused, and nothing is written."""
    sid = await setup(rpc, kernel, model)
    model.add(
        {
            "bash": [
                gateway_call("agent.update", "{'agent': 'alice', 'placement': 'any'}"),
                gateway_call(
                    "session.dispatch",
                    f"{{'session': '{sid}', 'message': 'x', 'request_id': 'a2a:m_1', 'if_busy': 'queue'}}",
                ),
            ]
        },
        {"text": "done"},
    )
    move, queue = await run(rpc, kernel, sid)
    assert move["output"].startswith("refused: permission_denied agent.update is not allowed here")
    assert queue["output"].startswith("refused: permission_denied session.dispatch is not allowed here")
    alice = await call(rpc, "agent.get", {"agent": "alice"})
    assert alice["placement"] == kernel.kernel.name
    assert (await call(rpc, "system.status", {}))["queue"] == []
