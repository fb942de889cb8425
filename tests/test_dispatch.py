"""Dispatch end to end: the ReActUnit with litellm (to a scripted model server), real bash,
hooks, approvals, interrupts, limits, and leases."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.kernel.hooks import HookHandler
from aos_sdk.connection import RpcConnection, open_connection
from aos_sdk.errors import InvalidParams, NotFound, Rejected, SessionBusy
from aos_sdk.testing import ScriptedModel

from .procutil import live_processes_mentioning
from .rpc import call, next_fact

FAST = {"model_backoff_ms": 10, "lease_ttl_s": 30}


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def kernel_limits() -> dict[str, Any]:
    return {}


@pytest.fixture
async def sid(rpc: RpcConnection, model: ScriptedModel, tmp_path: Path) -> AsyncIterator[str]:
    await call(
        rpc,
        "agent.create",
        {
            "name": "alice",
            "model": "openai/scripted",
            "instructions": "Be brief.",
            "workspace": str(tmp_path / "ws"),
            "settings": {"model_params": {"api_base": model.url, "api_key": "test-key"}},
        },
    )
    yield (await call(rpc, "session.create", {"agent": "alice"}))["id"]


async def run(rpc: RpcConnection, kernel: Any, sid: str, text: str = "go") -> list[dict[str, Any]]:
    """Dispatch, wait for the end, return the dispatch's facts."""
    started = await call(rpc, "session.dispatch", {"session": sid, "message": text})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"] - 1}))["facts"]
    assert facts[-1]["kind"] == "dispatch.end", [f["kind"] for f in facts]
    return facts  # type: ignore[no-any-return]


def kinds(facts: list[dict[str, Any]]) -> list[str]:
    return [f["kind"] + (f"/{f['role']}" if f["kind"] == "message" else "") for f in facts]


def end(facts: list[dict[str, Any]]) -> dict[str, Any]:
    return facts[-1]["body"]  # type: ignore[no-any-return]


async def test_multi_step_tool_loop(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    model.add(
        {"bash": "echo hello > f.txt && pwd"}, {"bash": "cat f.txt; echo err >&2; exit 3"}, {"text": "done"}
    )
    facts = await run(rpc, kernel, sid, "write and read a file")
    assert kinds(facts) == [
        "message/user",
        "message/assistant",
        "tool.started",
        "tool.result",
        "message/assistant",
        "tool.started",
        "tool.result",
        "message/assistant",
        "dispatch.end",
    ]
    first, second = facts[3]["body"], facts[6]["body"]
    assert first["exit_code"] == 0 and first["output"].strip() == str(tmp_path / "ws")
    assert second["exit_code"] == 3 and second["output"] == "hello\nerr\n" and second["outcome"] == "ok"
    assert facts[2]["body"]["command"] == "echo hello > f.txt && pwd"
    assert facts[7]["body"]["text"] == "done"
    usage = facts[1]["meta"]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0 and usage["model"]
    assert end(facts)["status"] == "done" and end(facts)["steps"] == 3
    assert end(facts)["usage"]["calls"] == 3
    # Every fact carries the dispatch's epoch and id.
    assert {f["epoch"] for f in facts} == {1} and {f["meta"]["dispatch_id"] for f in facts} == {
        facts[0]["meta"]["dispatch_id"]
    }

    # What the model got: exactly one tool, bash; tool results right after their calls.
    reqs = model.requests
    assert [t["function"]["name"] for t in reqs[0]["tools"]] == ["bash"]
    roles = [m["role"] for m in reqs[2]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert "Be brief." in reqs[0]["messages"][0]["content"]
    assert reqs[2]["messages"][3]["tool_call_id"] == reqs[2]["messages"][2]["tool_calls"][0]["id"]
    assert "[exit code 3]" in reqs[2]["messages"][5]["content"]

    session = await call(rpc, "session.get", {"session": sid})
    assert session["phase"] == "idle" and session["lease_owner"] is None
    d = await call(rpc, "dispatch.get", {"dispatch": facts[0]["meta"]["dispatch_id"]})
    assert d["status"] == "done" and d["steps"] == 3 and d["ended_at"]
    # The lease is released: an administrator may append again.
    await call(rpc, "session.append", {"session": sid, "body": "after"})


async def test_bash_runs_in_a_clean_environment(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak-0123456789")
    from aos import redact

    redact.refresh_secret_values()
    model.add({"bash": "env | sort"}, {"text": "ok"})
    try:
        facts = await run(rpc, kernel, sid)
    finally:
        monkeypatch.delenv("OPENAI_API_KEY")
        redact.refresh_secret_values()
    env = dict(line.split("=", 1) for line in facts[3]["body"]["output"].splitlines() if "=" in line)
    assert env["AOS_SESSION_ID"] == sid and env["AOS_AGENT"] == "alice"
    assert env["AOS_DISPATCH_ID"] == facts[0]["meta"]["dispatch_id"]
    assert "OPENAI_API_KEY" not in env and "AOS_HOME" not in env
    assert env["LANG"] == "C.UTF-8"


async def test_hooks_fire_once_per_step_in_order_with_ids(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    bus = kernel.kernel.hooks

    def recorder(name: str) -> Any:
        def fn(inp: dict[str, Any], out: Any) -> Any:
            seen.append((name, inp))
            return out

        return fn

    for name in (
        "dispatch.before",
        "session.assemble",
        "compute.model",
        "compute.before",
        "compute.after",
        "tool.env",
        "tool.before",
        "tool.after",
        "tool.after_event",
        "dispatch.after",
        "message.before_write",
    ):
        bus.register(HookHandler(name, "zz-recorder", recorder(name), priority=999))
    model.add({"bash": "true"}, {"text": "ok"})
    await run(rpc, kernel, sid)
    await bus.wait_events()
    names = [n for n, _ in seen if n != "message.before_write"]
    # Events run concurrently, so only the awaited hooks have a fixed order; events are counted.
    gated = [n for n in names if n not in ("compute.after", "tool.after_event", "dispatch.after")]
    assert gated == [
        "dispatch.before",
        "session.assemble",
        "compute.model",
        "compute.before",
        "tool.env",
        "tool.before",
        "tool.after",
        "session.assemble",
        "compute.model",
        "compute.before",
    ]
    assert (
        names.count("compute.after") == 2
        and names.count("tool.after_event") == 1
        and names.count("dispatch.after") == 1
    )
    for name, inp in seen:
        assert inp["session_id"] == sid and inp["agent_id"].startswith("ag_"), name
        assert inp["dispatch_id"] and inp["dispatch_id"].startswith("di_"), name
    writes = [inp for n, inp in seen if n == "message.before_write"]
    assert [w["kind"] for w in writes] == [
        "message",
        "message",
        "tool.started",
        "tool.result",
        "message",
        "dispatch.end",
    ]


async def test_handlers_fire_by_scope_then_priority_then_name(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    order: list[str] = []
    bus = kernel.kernel.hooks

    def gate(tag: str) -> Any:
        def fn(inp: dict[str, Any], out: Any) -> Any:
            order.append(tag)
            return out

        return fn

    bus.register(HookHandler("tool.before", "b-skill", gate("session/1"), priority=1, scope="session"))
    bus.register(HookHandler("tool.before", "b-skill", gate("system/50/b"), priority=50))
    bus.register(HookHandler("tool.before", "a-skill", gate("system/50/a"), priority=50))
    bus.register(HookHandler("tool.before", "c-skill", gate("agent/0"), priority=0, scope="agent"))
    bus.register(HookHandler("tool.before", "d-skill", gate("system/10"), priority=10))
    model.add({"bash": "true"}, {"text": "ok"})
    await run(rpc, kernel, sid)
    assert order == ["system/10", "system/50/a", "system/50/b", "agent/0", "session/1"]
    table = {h["hook"]: h for h in (await call(rpc, "hook.list"))["hooks"]}
    assert [(x["skill"], x["scope"]) for x in table["tool.before"]["handlers"]] == [
        ("d-skill", "system"),
        ("a-skill", "system"),
        ("b-skill", "system"),
        ("c-skill", "agent"),
        ("b-skill", "session"),
    ]
    assert table["session.assemble"]["handlers"][0]["skill"] == "aos-context"
    assert table["session.assemble"]["required"] is True and table["tool.before"]["class"] == "gate"


def test_unknown_hook_names_are_refused(kernel: Any) -> None:
    from aos.kernel.hooks import HookError

    with pytest.raises(HookError, match=r"unknown hook 'tool\.befor'"):
        kernel.kernel.hooks.register(HookHandler("tool.befor", "x", lambda i, o: o))


async def test_gate_reject_rewrite_and_failure_modes(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    marker = tmp_path / "ws" / "ran"  # the workspace: the only place sandboxed bash may write
    marker.parent.mkdir()
    bus = kernel.kernel.hooks

    def guard(inp: dict[str, Any], out: dict[str, Any]) -> Any:
        cmd = out["args"]["command"]
        if "forbidden" in cmd:
            return {"verdict": "reject", "reason": "no forbidden things"}
        if cmd == "echo a":
            out["args"]["command"] = "echo b"
        return out

    async def slow(inp: dict[str, Any], out: Any) -> Any:
        if "slow" in out["args"]["command"]:
            await asyncio.sleep(5)
        return out

    def broken(inp: dict[str, Any], out: Any) -> Any:
        if "broken" in out["args"]["command"]:
            raise RuntimeError("guard bug")
        return out

    bus.register(HookHandler("tool.before", "guard", guard))
    bus.register(HookHandler("tool.before", "slowpoke", slow, timeout_s=0.2))
    bus.register(HookHandler("tool.before", "buggy", broken))
    model.add(
        {
            "bash": [
                f"touch {marker} # forbidden",
                "echo a",
                f"touch {marker} # slow",
                f"touch {marker} # broken",
            ]
        },
        {"text": "ok"},
    )
    facts = await run(rpc, kernel, sid)
    results = [f["body"] for f in facts if f["kind"] == "tool.result"]
    assert (
        results[0]["outcome"] == "rejected"
        and "refused by guard: no forbidden things" in results[0]["output"]
    )
    assert results[1]["output"] == "b\n"
    assert (
        results[2]["outcome"] == "rejected"
        and "slowpoke" in results[2]["output"]
        and "timed out" in results[2]["output"]
    )
    assert results[3]["outcome"] == "rejected" and "guard bug" in results[3]["output"]
    assert not marker.exists(), "a refused command must never run"
    assert [f["body"]["command"] for f in facts if f["kind"] == "tool.started"] == ["echo b"]


async def test_gate_that_fails_open_lets_the_command_run(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    def broken(inp: dict[str, Any], out: Any) -> Any:
        raise RuntimeError("observer-ish gate bug")

    kernel.kernel.hooks.register(HookHandler("tool.before", "lenient", broken, failure="open"))
    model.add({"bash": "echo ran"}, {"text": "ok"})
    facts = await run(rpc, kernel, sid)
    assert [f["body"]["output"] for f in facts if f["kind"] == "tool.result"] == ["ran\n"]
    assert {
        "hook": "tool.before",
        "skill": "lenient",
        "error": "failed: RuntimeError: observer-ish gate bug",
    } in kernel.kernel.hooks.diagnostics


async def test_failing_transform_is_skipped_and_reported(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    def bad_after(inp: dict[str, Any], out: Any) -> Any:
        raise ValueError("redactor broke")

    def good_after(inp: dict[str, Any], out: dict[str, Any]) -> Any:
        return {"output": out["output"].upper()}

    kernel.kernel.hooks.register(HookHandler("tool.after", "a-bad", bad_after, priority=1))
    kernel.kernel.hooks.register(HookHandler("tool.after", "b-good", good_after, priority=2))
    model.add({"bash": "echo quiet"}, {"text": "ok"})
    facts = await run(rpc, kernel, sid)
    assert [f["body"]["output"] for f in facts if f["kind"] == "tool.result"] == ["QUIET\n"]
    assert any(
        d["skill"] == "a-bad" and "redactor broke" in d["error"] for d in kernel.kernel.hooks.diagnostics
    )


async def test_event_handler_failure_never_touches_the_dispatch(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    def boom(inp: dict[str, Any], out: Any) -> None:
        raise RuntimeError("observer crashed")

    kernel.kernel.hooks.register(HookHandler("compute.after", "observer", boom))
    model.add({"text": "fine"})
    facts = await run(rpc, kernel, sid)
    await kernel.kernel.hooks.wait_events()
    assert end(facts)["status"] == "done"
    assert any(d["skill"] == "observer" for d in kernel.kernel.hooks.diagnostics)


async def test_dispatch_without_session_assemble_fails_clearly(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    await call(rpc, "skill.disable", {"skill": "aos-context", "session": sid})
    facts = await run(rpc, kernel, sid)
    assert end(facts)["status"] == "failed"
    error = next(f for f in facts if f["kind"] == "error")["body"]["message"]
    assert "no skill provides the required hook session.assemble" in error and "aos-context" in error
    assert model.requests == []  # nothing was sent to the model without a context


async def test_dispatch_before_can_refuse_and_rewrite(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    def gate(inp: dict[str, Any], out: dict[str, Any]) -> Any:
        if "spam" in out["message"]:
            return {"verdict": "reject", "reason": "no spam"}
        return {"message": out["message"] + " (checked)"}

    kernel.kernel.hooks.register(HookHandler("dispatch.before", "filter", gate))
    with pytest.raises(Rejected, match="no spam"):
        await call(rpc, "session.dispatch", {"session": sid, "message": "buy spam"})
    assert (await call(rpc, "session.get", {"session": sid}))["phase"] == "idle"
    model.add({"text": "ok"})
    facts = await run(rpc, kernel, sid, "hello")
    assert facts[0]["body"] == {"text": "hello (checked)"}


async def test_ask_approved_and_denied(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    def ask(inp: dict[str, Any], out: dict[str, Any]) -> Any:
        if "danger" in out["args"]["command"]:
            return {"verdict": "ask", "reason": "looks dangerous"}
        return out

    kernel.kernel.hooks.register(HookHandler("tool.before", "cautious", ask))
    marker = tmp_path / "ws" / "m"  # in the workspace: the only place the sandbox lets bash write
    model.add({"bash": [f"echo 1 >> {marker} # danger", f"echo 2 >> {marker} # danger"]}, {"text": "ok"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})

    seen = [started["seq"]]

    async def pending() -> dict[str, Any]:
        """The next approval asked for, as the pending list shows it."""
        asked = await next_fact(kernel, sid, lambda f: f["kind"] == "approval.requested", after=seen[-1])
        seen.append(asked["seq"])
        got = (await call(rpc, "approval.list", {"session": sid}))["approvals"]
        return next(a for a in got if a["id"] == asked["body"]["approval_id"])  # type: ignore[no-any-return]

    first = await asyncio.wait_for(pending(), 10)
    assert (
        first["reason"] == "looks dangerous" and first["skill"] == "cautious" and "echo 1" in first["command"]
    )
    assert (await call(rpc, "session.get", {"session": sid}))["phase"] == "waiting_approval"
    assert not marker.exists()
    resolved = await call(
        rpc, "approval.resolve", {"approval": first["id"], "decision": "approve", "note": "fine"}
    )
    assert resolved["status"] == "approved" and resolved["resolved_by"].startswith("admin:")
    second = await asyncio.wait_for(pending(), 10)
    assert "echo 2" in second["command"]
    await call(
        rpc, "approval.resolve", {"approval": second["id"], "decision": "deny", "note": "not this one"}
    )
    with pytest.raises(Exception, match="already denied"):
        await call(rpc, "approval.resolve", {"approval": second["id"], "decision": "approve"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 10)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"] - 1}))["facts"]
    assert marker.read_text() == "1\n"
    results = [f["body"] for f in facts if f["kind"] == "tool.result"]
    assert (
        results[0]["outcome"] == "ok"
        and results[1]["outcome"] == "denied"
        and "not this one" in results[1]["output"]
    )
    decisions = [f["body"]["decision"] for f in facts if f["kind"] == "approval.resolved"]
    assert decisions == ["approved", "denied"]
    assert len([f for f in facts if f["kind"] == "approval.requested"]) == 2
    assert end(facts)["status"] == "done"


async def test_interrupt_kills_a_long_command(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    (tmp_path / "ws").mkdir()
    fifo = tmp_path / "ws" / "pid.fifo"
    os.mkfifo(fifo)
    # The command says through a FIFO that its child runs: reading it waits for exactly that event.
    # (A duration no other test uses: the check below looks for this very process.)
    model.add({"bash": f"echo printed-before; sleep 386 & echo $! > {fifo}; wait"}, {"text": "never"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from aos_sdk.connection import open_connection

    async with open_connection(
        kernel.paths.kernel_sock, on_notification=lambda n: got.put_nowait(n.params["fact"])
    ) as sub:
        await sub.call("history.subscribe", {"session": sid, "after_seq": started["seq"]})
        while (await asyncio.wait_for(got.get(), 10))["kind"] != "tool.started":
            pass
        await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 10)
        assert live_processes_mentioning("sleep 386"), "the child runs"
        res = await call(rpc, "session.interrupt", {"session": sid, "reason": "stop now"})
        assert res["interrupted"] is True and res["dispatch_id"] == started["dispatch_id"]
        await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 10)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    assert kinds(facts)[-3:] == ["tool.result", "interrupt", "dispatch.end"]
    assert facts[-3]["body"]["outcome"] == "interrupted"
    # What it printed before it was killed is kept.
    assert facts[-3]["body"]["output"].startswith("printed-before\n")
    assert facts[-3]["body"]["output"].endswith("[interrupted: the command was killed]")
    assert facts[-2]["body"] == {"cause": "user", "reason": "stop now"}
    assert end(facts)["status"] == "interrupted"
    assert live_processes_mentioning("sleep 386") == [], "the interrupted command's processes are killed"
    assert len(model.requests) == 1
    res = await call(rpc, "session.interrupt", {"session": sid})
    assert res["interrupted"] is False


@pytest.mark.parametrize("kernel", [{"bash_timeout_s": 1, "output_cap_bytes": 1000}], indirect=True)
async def test_timeout_and_output_cap(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    model.add({"bash": ["sleep 30", "head -c 10000 /dev/zero | tr '\\0' x; echo; echo END"]}, {"text": "ok"})
    facts = await run(rpc, kernel, sid)
    slow, big = [f["body"] for f in facts if f["kind"] == "tool.result"]
    assert (
        slow["outcome"] == "timeout"
        and slow["exit_code"] is None
        and "killed after 1 s timeout" in slow["output"]
    )
    assert big["truncated"] is True and big["size"] == 10005
    assert (
        big["output"].startswith("x" * 500)
        and big["output"].endswith("END\n")
        and "bytes omitted of 10005" in big["output"]
    )
    full = await call(rpc, "content.read", {"content_id": big["content_id"], "agent": "alice"})
    assert full["total_bytes"] == 10005 and full["text"].endswith("END\n")


async def test_malformed_tool_calls_are_fed_back_and_capped(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    model.add(
        {"tool_calls": [{"name": "bash", "arguments": "{not json"}]},
        {"tool_calls": [{"name": "python", "arguments": "{}"}]},
        {"text": "sorry"},
    )
    facts = await run(rpc, kernel, sid)
    results = [f["body"] for f in facts if f["kind"] == "tool.result"]
    assert [r["outcome"] for r in results] == ["format_error", "format_error"]
    assert "not valid JSON" in results[0]["output"] and "unknown tool 'python'" in results[1]["output"]
    assert (
        model.requests[1]["messages"][-1]["role"] == "tool"
        and "not valid JSON" in model.requests[1]["messages"][-1]["content"]
    )
    assert end(facts)["status"] == "done"

    bad = {"tool_calls": [{"name": "bash", "arguments": "{}"}]}
    model.add(bad, bad, bad, {"text": "unreachable"})
    facts = await run(rpc, kernel, sid)
    assert end(facts)["status"] == "failed" and "3 malformed tool calls in a row" in end(facts)["reason"]


@pytest.mark.parametrize("kernel", [FAST], indirect=True)
async def test_model_errors_are_retried_then_end_cleanly(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    model.add({"status": 503, "error": "overloaded"}, {"status": 500, "error": "oops"}, {"text": "recovered"})
    facts = await run(rpc, kernel, sid)
    assert end(facts)["status"] == "done"
    assert facts[1]["meta"]["usage"]["attempts"] == 3

    model.add({"status": 400, "error": "bad request, never retried"})
    facts = await run(rpc, kernel, sid)
    assert end(facts)["status"] == "failed"
    err = next(f for f in facts if f["kind"] == "error")["body"]
    assert err["kind"] == "BadRequestError" and "never retried" in err["message"] and err["attempts"] == 1
    assert (await call(rpc, "session.get", {"session": sid}))["phase"] == "idle"


@pytest.mark.parametrize("kernel", [{"max_steps": 2}], indirect=True)
async def test_step_limit(rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel) -> None:
    model.add({"bash": "true"}, {"bash": "true"}, {"bash": "true"})
    facts = await run(rpc, kernel, sid)
    assert end(facts)["status"] == "max_steps" and len(model.requests) == 2


async def test_second_dispatch_on_a_busy_session_gets_session_busy_when_it_asks_to(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    """``if_busy: refuse`` (the default steers it in: see test_steering.py)."""
    model.add({"delay": 0.5, "text": "slow answer"}, {"text": "second"})
    first = await call(rpc, "session.dispatch", {"session": sid, "message": "one"})
    with pytest.raises(SessionBusy, match="busy"):
        await call(rpc, "session.dispatch", {"session": sid, "message": "two", "if_busy": "refuse"})
    with pytest.raises(SessionBusy):
        await call(rpc, "session.append", {"session": sid, "body": "admin write during a dispatch"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 10)
    second = await call(rpc, "session.dispatch", {"session": sid, "message": "two"})
    assert second["epoch"] == first["epoch"] + 1
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 10)


async def test_dispatch_errors(rpc: RpcConnection, sid: str) -> None:
    with pytest.raises(NotFound):
        await call(rpc, "session.dispatch", {"session": "se_nope", "message": "x"})
    with pytest.raises(InvalidParams):
        await call(rpc, "session.dispatch", {"session": sid, "message": ""})
    with pytest.raises(NotFound):
        await call(rpc, "dispatch.get", {"dispatch": "di_nope"})


async def test_compute_complete_and_usage(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    model.add({"text": "a summary", "usage": {"prompt_tokens": 100, "completion_tokens": 7}})
    res = await call(
        rpc, "compute.complete", {"messages": [{"role": "user", "content": "summarise"}], "agent": "alice"}
    )
    assert res["text"] == "a summary" and res["usage"]["prompt_tokens"] == 100
    model.add(
        {"bash": "true", "usage": {"prompt_tokens": 10, "completion_tokens": 1}},
        {"text": "ok", "usage": {"prompt_tokens": 20, "completion_tokens": 2}},
    )
    await run(rpc, kernel, sid)
    by_agent = await call(rpc, "usage.get", {"group_by": "agent"})
    assert by_agent["rows"] == [
        {"key": "alice", "calls": 3, "prompt_tokens": 130, "completion_tokens": 10, "cost": None}
    ]
    by_session = await call(rpc, "usage.get", {"group_by": "session", "session": sid})
    assert by_session["total"]["prompt_tokens"] == 30 and by_session["total"]["calls"] == 2
    by_day = await call(rpc, "usage.get", {})
    assert len(by_day["rows"]) == 1 and by_day["total"]["calls"] == 3


def test_scripted_model_records_requests_over_real_http(model: ScriptedModel) -> None:
    import urllib.request

    model.add({"text": "hi"})
    req = urllib.request.Request(
        model.url + "/chat/completions",
        data=json.dumps({"model": "m", "messages": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = json.load(resp)
    assert body["choices"][0]["message"]["content"] == "hi"
    assert model.requests == [{"model": "m", "messages": []}]
    assert os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP") in (None, "True")


@pytest.mark.parametrize("kernel", [{"lease_ttl_s": 1}], indirect=True)
async def test_a_dispatch_that_loses_its_lease_stops_writing(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    (tmp_path / "ws").mkdir()
    fifo = tmp_path / "ws" / "started.fifo"
    os.mkfifo(fifo)
    model.add({"bash": f"echo go > {fifo}; sleep 30"}, {"text": "must never be asked for"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 10)
    # Another kernel takes the session over (as after an expiry): new owner, new epoch.
    async with kernel.store.pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET lease_owner = 'elsewhere:1:x/di_other', lease_epoch = lease_epoch + 1,"
            " lease_until = now() + interval '1 minute' WHERE id = %s",
            (sid,),
        )
    before = (await call(rpc, "session.get", {"session": sid}))["last_seq"]
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 10)
    d = await call(rpc, "dispatch.get", {"dispatch": started["dispatch_id"]})
    assert d["status"] == "lease_lost"
    s = await call(rpc, "session.get", {"session": sid})
    assert s["last_seq"] == before, "a unit without its lease must write nothing more"
    assert s["lease_owner"] == "elsewhere:1:x/di_other"
    assert len(model.requests) == 1


async def command_started(k: Any, sid: str, dispatch_id: str) -> None:
    """The ``tool.started`` of ``make`` that a dispatch wrote before its kernel died."""
    await k.append(
        sid,
        epoch=5,
        kind="tool.started",
        role=None,
        body={"call_id": "c1", "command": "make"},
        meta={"dispatch_id": dispatch_id},
        idempotency_key=f"{dispatch_id}:started",
    )


async def test_recovery_takes_over_an_expired_lease_of_a_dead_kernel(
    rpc: RpcConnection, kernel: Any, sid: str
) -> None:
    store, k = kernel.store, kernel.kernel
    session = await store.get_session(sid)
    owner = "other-host:4242:abc/di_ghost"
    async with store.pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET lease_owner = %s, lease_epoch = 5, lease_until = now() - interval '1 second',"
            " phase = 'dispatched' WHERE id = %s",
            (owner, sid),
        )
    await store.create_dispatch(
        dispatch_id="di_ghost", session_id=sid, agent_id=session["agent_id"], epoch=5, owner=owner, model="m"
    )
    await command_started(k, sid, "di_ghost")
    assert await k.dispatcher.recover() == ["di_ghost"]
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": 1}))["facts"]
    assert [f["kind"] for f in facts] == ["tool.result", "interrupt", "dispatch.end"]
    assert facts[0]["body"]["outcome"] == "unknown" and facts[0]["body"]["command"] == "make"
    assert facts[1]["body"]["cause"] == "crash" and {f["epoch"] for f in facts} == {6}
    s = await call(rpc, "session.get", {"session": sid})
    assert s["phase"] == "idle" and s["lease_owner"] is None
    assert (await call(rpc, "dispatch.get", {"dispatch": "di_ghost"}))["status"] == "crashed"
    # A lease of another host that has not expired is left alone.
    async with store.pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET lease_owner = 'other-host:1:x/di_live', lease_until = now() + interval '1 minute'"
            " WHERE id = %s",
            (sid,),
        )
    assert await k.dispatcher.recover() == []


KERNEL_ROW = {"host": "h", "boot_id": "b", "pid": 1, "pid_ns": None, "version": "0", "ttl_s": 5}


async def lease_to(store: Any, sid: str, owner: str, *, expired: bool) -> None:
    """Give the session's lease to ``owner`` (``<kernel>/<dispatch>``), as its claim would have."""
    async with store.pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET lease_owner = %s, lease_epoch = 5, phase = 'dispatched',"
            " lease_until = now() + make_interval(secs => %s) WHERE id = %s",
            (owner, -1 if expired else 60, sid),
        )


async def open_dispatch(store: Any, sid: str, owner: str) -> None:
    """A dispatch row of ``owner``'s, open (``running``), as its start wrote it."""
    agent_id = (await store.get_session(sid))["agent_id"]
    dispatch_id = owner.split("/")[1]
    await store.create_dispatch(
        dispatch_id=dispatch_id, session_id=sid, agent_id=agent_id, epoch=5, owner=owner, model="m"
    )


async def test_a_registered_kernel_is_dead_when_its_heartbeat_is_old_even_if_its_lease_is_not(
    rpc: RpcConnection, kernel: Any, sid: str
) -> None:
    """Kernels that registered are judged by their heartbeat (migration 0007), on any host."""
    store, k = kernel.store, kernel.kernel
    await store.register_kernel({**KERNEL_ROW, "id": "k_alive", "home": "/a"})
    # A later kernel of the same home on the same machine ends the earlier one at once.
    await store.register_kernel({**KERNEL_ROW, "id": "k_old", "home": "/d"})
    assert await store.register_kernel({**KERNEL_ROW, "id": "k_dead", "home": "/d"}) == ["k_old"]
    async with store.pool.connection() as conn:
        await conn.execute(
            "UPDATE kernels SET heartbeat_at = now() - interval '6 seconds' WHERE id = 'k_dead'"
        )
    # A live kernel's lease with time left is its own.
    await lease_to(store, sid, "k_alive/di_a", expired=False)
    assert await k.dispatcher.recover() == []
    # The dead one's lease has time left, but its heartbeat is older than its ttl: taken over.
    await lease_to(store, sid, "k_dead/di_d", expired=False)
    await open_dispatch(store, sid, "k_dead/di_d")
    assert await k.dispatcher.recover() == ["di_d"]
    d = await call(rpc, "dispatch.get", {"dispatch": "di_d"})
    assert d["status"] == "crashed" and d["kernel_id"] == "k_dead" and d["owner"] == "k_dead/di_d"
    assert d["recovered_by"] == f"{k.id}/di_d"
    states = {x["id"]: x["state"] for x in (await call(rpc, "system.status"))["kernels"]}
    assert states["k_dead"] == "dead" and states["k_alive"] == "alive" and states[k.id] == "alive"


async def test_a_dispatch_sent_the_moment_the_previous_one_ends_is_not_refused(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    """A client answering at once on seeing dispatch.end (as aos chat does) is not told session_busy
    while the previous run is still giving its lease back."""
    rounds = 20
    outcomes: asyncio.Queue[str] = asyncio.Queue()
    for i in range(rounds):
        model.add({"text": f"answer {i}"})

    async with open_connection(kernel.paths.kernel_sock) as client:

        async def again() -> None:
            try:
                await client.call("session.dispatch", {"session": sid, "message": "next"})
                outcomes.put_nowait("started")
            except SessionBusy as exc:
                outcomes.put_nowait(f"refused: {exc.message}")

        sent = [0]

        def on_fact(note: Any) -> None:
            if note.params["fact"]["kind"] == "dispatch.end" and sent[0] < rounds - 1:
                sent[0] += 1
                asyncio.get_running_loop().create_task(again())  # at once, from the notification

        async with open_connection(kernel.paths.kernel_sock, on_notification=on_fact) as sub:
            await sub.call("history.subscribe", {"session": sid})
            await call(rpc, "session.dispatch", {"session": sid, "message": "first"})
            got: list[str] = []
            while len(got) < rounds - 1 and not any(g.startswith("refused") for g in got):
                got.append(await asyncio.wait_for(outcomes.get(), 30))
            await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    assert got == ["started"] * (rounds - 1)


async def test_a_dispatch_starts_and_ends_in_one_commit_each(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    """The lease, the input message and the dispatch row are one transaction; so are the final
    answer, dispatch.end, the row's end and the lease's release (a transaction's facts share
    its timestamp). Whoever sees dispatch.end finds the session free."""
    model.add({"bash": "true"}, {"text": "done"})
    freed: list[dict[str, Any]] = []
    seen = asyncio.Event()

    async def on_note(note: Any) -> None:
        if note.params["fact"]["kind"] == "dispatch.end":
            async with open_connection(kernel.paths.kernel_sock) as other:
                freed.append(await other.call("session.get", {"session": sid}))
            seen.set()

    async with open_connection(kernel.paths.kernel_sock, on_notification=on_note) as follow:
        await follow.call("history.subscribe", {"session": sid})
        facts = await run(rpc, kernel, sid)
        await asyncio.wait_for(seen.wait(), 10)
    assert kinds(facts) == [
        "message/user",
        "message/assistant",
        "tool.started",
        "tool.result",
        "message/assistant",
        "dispatch.end",
    ]
    d = await call(rpc, "dispatch.get", {"dispatch": facts[0]["meta"]["dispatch_id"]})
    assert d["started_at"] == facts[0]["created_at"]
    assert facts[-2]["created_at"] == facts[-1]["created_at"] == d["ended_at"]
    assert freed[0]["lease_owner"] is None and freed[0]["phase"] == "idle"


async def test_a_new_dispatch_first_closes_the_one_whose_lease_ran_out(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel
) -> None:
    """A unit that could not renew its lease stops itself (Dispatcher._renew); the next dispatch
    of the session closes what it left (issue 14: it used to claim the lease over it, leaving a
    tool.started without a result and the row running for ever)."""
    store, k = kernel.store, kernel.kernel
    await store.register_kernel({**KERNEL_ROW, "id": "k_other", "home": "/o", "ttl_s": 60})  # alive
    await lease_to(store, sid, "k_other/di_cut", expired=True)
    await open_dispatch(store, sid, "k_other/di_cut")
    await command_started(k, sid, "di_cut")
    model.add({"text": "fresh start"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "again"})
    await asyncio.wait_for(k.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": 1}))["facts"]
    kinds = [f["kind"] for f in facts]
    assert kinds[:4] == ["tool.result", "interrupt", "dispatch.end", "message"], kinds
    assert facts[0]["body"]["outcome"] == "unknown" and facts[3]["seq"] == started["seq"]
    assert (await call(rpc, "dispatch.get", {"dispatch": "di_cut"}))["status"] == "crashed"
    assert facts[-1]["kind"] == "dispatch.end" and facts[-1]["body"]["status"] == "done"


async def test_recovery_closes_a_dispatch_row_left_open_on_a_free_session(
    rpc: RpcConnection, kernel: Any, sid: str
) -> None:
    store, k = kernel.store, kernel.kernel
    await open_dispatch(store, sid, "k_gone/di_left")
    assert (await call(rpc, "dispatch.get", {"dispatch": "di_left"}))["status"] == "running"
    assert await k.dispatcher.recover() == ["di_left"]
    d = await call(rpc, "dispatch.get", {"dispatch": "di_left"})
    assert d["status"] == "crashed" and d["recovered_by"] == f"{k.id}/di_left"
    facts = (await call(rpc, "history.list", {"session": sid}))["facts"]
    assert [f["kind"] for f in facts] == ["interrupt", "dispatch.end"]
    assert (await call(rpc, "session.get", {"session": sid}))["lease_owner"] is None


async def test_a_kernel_on_another_kernels_embedded_database_is_warned(
    rpc: RpcConnection, kernel: Any
) -> None:
    store = kernel.store
    row = {**KERNEL_ROW, "home": "/owner"}
    assert (await call(rpc, "system.status"))["warnings"] == []
    await store.register_kernel({**row, "id": "k_owner", "embedded_db": True})
    (warning,) = (await call(rpc, "system.status"))["warnings"]
    assert "the embedded PostgreSQL of kernel k_owner (home /owner on h)" in warning
    assert "it stops when that kernel stops" in warning
