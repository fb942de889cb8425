"""aos-guard, the built-in safety skill, through real dispatches."""

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

from .rpc import call, next_fact, scripted_session, workspace

GUARDED = [{"guard": True}]


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


async def ready(kernel: Any) -> Any:
    runner = kernel.kernel.services.runners["aos-guard"]
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)
    return runner


async def results(
    rpc: RpcConnection, kernel: Any, sid: str, *, approve: list[str] | None = None
) -> list[dict[str, Any]]:
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    after = started["seq"]
    for decision in approve or []:
        asked = await next_fact(kernel, sid, lambda f: f["kind"] == "approval.requested", after=after)
        after = asked["seq"]
        await call(rpc, "approval.resolve", {"approval": asked["body"]["approval_id"], "decision": decision})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    return [f["body"] for f in facts if f["kind"] == "tool.result"]


@pytest.mark.parametrize("kernel", GUARDED, indirect=True)
async def test_destructive_commands_are_refused(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    await ready(kernel)
    sid = await scripted_session(rpc, model.url)
    marker = workspace(kernel.paths.home) / "ran"
    # Each would be refused before running; each also only touches a marker if it ever did run.
    model.add(
        {
            "bash": [
                f"touch {marker}; rm -rf / --no-preserve-root",
                f"touch {marker}; :(){{ :|:& }};:",
                f"touch {marker}; dd if=/dev/zero of=/dev/sda bs=1M count=0",
                "echo safe; rm -rf ./build",
            ]
        },
        {"text": "ok"},
    )
    out = await results(rpc, kernel, sid)
    assert [r["outcome"] for r in out] == ["rejected", "rejected", "rejected", "ok"]
    assert out[0]["output"].startswith("refused by aos-guard: recursive delete of / (")
    assert "fork bomb" in out[1]["output"] and "raw write to a disk device" in out[2]["output"]
    assert not marker.exists() and out[3]["output"] == "safe\n"


@pytest.mark.parametrize("kernel", GUARDED, indirect=True)
async def test_risky_commands_go_to_a_person(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    await ready(kernel)
    sid = await scripted_session(rpc, model.url)
    # Outside the workspace, in the agent's private home (/tmp would be a safe place to delete in).
    home = kernel.paths.agent_dir("alice") / "home"
    a, b = home / "a", home / "b"
    a.mkdir(parents=True)
    b.mkdir()
    model.add({"bash": ["rm -rf ~/a", "rm -rf ~/b"]}, {"text": "ok"})
    out = await results(rpc, kernel, sid, approve=["approve", "deny"])
    assert [r["outcome"] for r in out] == ["ok", "denied"]
    assert not a.exists() and b.exists()
    asked = (await call(rpc, "approval.list", {"session": sid, "status": None}))["approvals"]
    assert [x["reason"] for x in asked] == [
        f"recursive delete outside the workspace (~/{n}): those files would be lost" for n in "ab"
    ]


@pytest.mark.parametrize("kernel", GUARDED, indirect=True)
async def test_rules_per_agent(rpc: RpcConnection, kernel: Any, model: ScriptedModel) -> None:
    await ready(kernel)
    sid = await scripted_session(
        rpc,
        model.url,
        settings={
            "model_params": {"api_base": model.url, "api_key": "k"},
            "guard": {"deny": [r"\bcurl\b"], "allow": [r"^sudo -n true;"]},
        },
    )
    model.add({"bash": ["curl --version", "sudo -n true; echo allowed"]}, {"text": "ok"})
    out = await results(rpc, kernel, sid)
    assert out[0]["outcome"] == "rejected" and "denied by the agent's rules" in out[0]["output"]
    assert out[1]["outcome"] == "ok"  # allowed by the agent's rule, though sudo normally asks


# A restarting guard is waited for (service_wait_s); one that stays down refuses.
@pytest.mark.parametrize("kernel", [{"guard": True, "service_wait_s": 1}], indirect=True)
async def test_guard_down_means_refused(rpc: RpcConnection, kernel: Any, model: ScriptedModel) -> None:
    kernel.kernel.services.policy = Policy(backoff_first_s=30.0)
    await call(rpc, "skill.reload")
    runner = kernel.kernel.services.runners["aos-guard"]
    # The runner started before the policy change; restart it under the slow backoff.
    await kernel.kernel.services.replace(runner.manifest)
    runner = await ready(kernel)
    os.kill(runner.proc.pid, signal.SIGKILL)
    await asyncio.wait_for(runner.wait_state(State.BACKOFF), 10)
    sid = await scripted_session(rpc, model.url)
    model.add({"bash": "echo harmless"}, {"text": "ok"})
    out = await results(rpc, kernel, sid)
    assert (
        out[0]["outcome"] == "rejected"
        and "aos-guard" in out[0]["output"]
        and "not running" in out[0]["output"]
    )
