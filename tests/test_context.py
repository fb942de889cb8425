"""aos-context through real dispatches: valid ordered context, folding with ctx, compaction."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.skills.supervisor import State
from aos_sdk.connection import RpcConnection
from aos_sdk.testing import ScriptedModel

from .rpc import call, next_fact, scripted_session


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


def check_wire(messages: list[dict[str, Any]]) -> None:
    """What OpenAI- and Anthropic-style providers accept: one leading system message, user first,
    and every tool call answered by its result right after it."""
    assert messages[0]["role"] == "system"
    assert all(m["role"] != "system" for m in messages[1:]), "a system message mid-conversation"
    assert messages[1]["role"] == "user"
    i = 1
    while i < len(messages):
        m = messages[i]
        assert m["role"] != "tool", f"a tool result without its call at {i}"
        i += 1
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            got = []
            while i < len(messages) and messages[i]["role"] == "tool":
                got.append(messages[i]["tool_call_id"])
                i += 1
            assert got == ids, f"calls {ids} answered by {got}"


def check_anthropic(messages: list[dict[str, Any]]) -> None:
    """litellm's own Anthropic conversion accepts the context: roles alternate from a user turn,
    and each tool_use is answered by its tool_result in the very next turn."""
    from litellm.litellm_core_utils.prompt_templates.factory import anthropic_messages_pt

    turns = anthropic_messages_pt(messages[1:], model="claude-sonnet-4-5", llm_provider="anthropic")
    roles = [t["role"] for t in turns]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles)), roles
    for turn, after in zip(turns, [*turns[1:], None], strict=True):
        uses = [b["id"] for b in turn["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]
        if uses:
            assert after is not None
            answered = [b["tool_use_id"] for b in after["content"] if b.get("type") == "tool_result"]
            assert answered[: len(uses)] == uses


async def restart_context_service(kernel: Any) -> None:
    """Kill aos-context's process (its cache is lost) and wait until it serves again."""
    runner = kernel.kernel.services.runners["aos-context"]
    os.kill(runner.proc.pid, signal.SIGKILL)
    await asyncio.wait_for(runner.wait_state(State.BACKOFF, State.STARTING), 10)
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 20)


async def dispatch(rpc: RpcConnection, kernel: Any, sid: str, text: str = "go") -> list[dict[str, Any]]:
    started = await call(rpc, "session.dispatch", {"session": sid, "message": text})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"] - 1}))["facts"]
    return list(facts)


async def test_context_is_valid_and_ordered_across_steps_and_dispatches(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url, instructions="Be brief.")
    model.add(
        {"bash": ["echo one", "echo two"], "text": "two at once"}, {"bash": "echo three"}, {"text": "done"}
    )
    facts = await dispatch(rpc, kernel, sid, "count")
    assert facts[-1]["body"]["status"] == "done"
    for req in model.requests:
        check_wire(req["messages"])
        check_anthropic(req["messages"])
    last = model.requests[-1]["messages"]
    assert "Be brief." in last[0]["content"] and "aos-context" in last[0]["content"]
    assert [m["role"] for m in last[1:]] == ["user", "assistant", "tool", "tool", "assistant", "tool"]
    assert [m["content"] for m in last if m["role"] == "tool"] == ["one\n", "two\n", "three\n"]

    # The next dispatch continues the same conversation; so does one after the service restarted
    # (its cache is gone and is rebuilt from history, identical).
    model.add({"text": "again"})
    await dispatch(rpc, kernel, sid, "and again")
    second = model.requests[-1]["messages"]
    assert second[: len(last)] == last and second[-2:] == [
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "and again"},
    ]
    await restart_context_service(kernel)
    model.add({"text": "third"})
    await dispatch(rpc, kernel, sid, "third time")
    third = model.requests[-1]["messages"]
    assert third[:-2] == second and third[-1] == {"role": "user", "content": "third time"}


async def test_a_note_arriving_while_a_command_runs_waits_for_its_result(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    sid = await scripted_session(rpc, model.url)
    # In the workspace: the sandbox shows bash nothing else of this machine's files.
    workspace = kernel.paths.workspaces / "alice"
    workspace.mkdir(parents=True)
    fifo = workspace / "gate"
    os.mkfifo(fifo)
    model.add({"bash": f"cat {fifo}"}, {"text": "noted"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "wait for it"})
    # Wait until the command is running (its start is journaled), then a note arrives.
    await next_fact(kernel, sid, lambda f: f["kind"] == "tool.started", after=started["seq"])
    note = await call(
        rpc,
        "session.append",
        {
            "session": sid,
            "kind": "reminder",
            "body": {"notice": "[reminder] the build is at 3pm"},
            "inbound": True,
        },
    )
    assert note["seq"] > started["seq"]
    await asyncio.to_thread(fifo.write_text, "released\n")
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    messages = model.requests[-1]["messages"]
    check_wire(messages)
    check_anthropic(messages)
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "tool", "user"]
    assert (
        messages[3]["content"] == "released\n" and messages[4]["content"] == "[reminder] the build is at 3pm"
    )


async def test_large_output_is_folded_and_read_back_with_ctx(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    full = "".join(f"{i}\n" for i in range(1, 8001))  # 38,893 bytes: over the 16 KiB default
    cid = hashlib.sha256(full.encode()).hexdigest()
    model.add(
        {"bash": "seq 1 8000"},
        {
            "bash": [
                f"ctx read {cid} --lines 10:12",
                f"ctx grep '^7777$' {cid}",
                f"ctx head {cid} -n 2",
                "ctx list",
            ]
        },
        {"bash": ["ctx read nope", f"ctx read {cid} --lines 5:1"]},
        {"text": "read it"},
    )
    facts = await dispatch(rpc, kernel, sid)
    results = [f["body"] for f in facts if f["kind"] == "tool.result"]
    folded = results[0]
    assert folded["folded"] is True and folded["content_id"] == cid and folded["size"] == len(full)
    assert folded["output"].startswith(f"[output folded: 38,893 bytes, 8,000 lines, stored as {cid}]\n1\n2\n")
    assert f"ctx read {cid}" in folded["output"] and "7999\n8000" in folded["output"]
    seen = model.requests[1]["messages"][-1]["content"]
    assert len(seen) < 1000 and "4000\n" not in seen  # the model never got the whole output
    # The full text stays in content.
    stored = await call(rpc, "content.read", {"content_id": cid, "limit": 100000})
    assert stored["text"] == full
    read, grep, head, listing = (r["output"] for r in results[1:5])
    assert read == "10\n11\n12\n"
    assert grep == f"{cid}:7777: 7777\n"
    assert head == "1\n2\n[8000 lines in all]\n"
    assert cid in listing and "38,893 B" in listing and "seq 1 8000" in listing
    bad_id, bad_range = results[5], results[6]
    assert bad_id["exit_code"] == 1 and "ctx: no stored output 'nope' for this agent" in bad_id["output"]
    assert bad_range["exit_code"] == 1 and "need 1 <= a <= b" in bad_range["output"]
    for req in model.requests:
        check_wire(req["messages"])


async def test_fold_threshold_is_configurable_per_agent(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url, agent="terse", settings={"context": {"fold_bytes": 100}})
    model.add({"bash": ["seq 1 10", "seq 1 100"]}, {"text": "ok"})
    facts = await dispatch(rpc, kernel, sid)
    small, large = (f["body"] for f in facts if f["kind"] == "tool.result")
    assert "folded" not in small and small["output"] == "".join(f"{i}\n" for i in range(1, 11))
    assert large["folded"] is True and large["output"].startswith("[output folded: 292 bytes, 100 lines")


async def test_output_over_the_kernel_cap_is_folded_with_its_full_figures(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    full = "".join(f"{i}\n" for i in range(1, 20001))  # 108,894 bytes: over the 64 KiB cap too
    cid = hashlib.sha256(full.encode()).hexdigest()
    model.add({"bash": "seq 1 20000"}, {"bash": f"ctx grep '^15000$' {cid}"}, {"text": "found"})
    facts = await dispatch(rpc, kernel, sid)
    folded, found = (f["body"] for f in facts if f["kind"] == "tool.result")
    assert folded["truncated"] is True and folded["folded"] is True and folded["content_id"] == cid
    assert folded["output"].startswith(f"[output folded: 108,894 bytes, 20,000 lines, stored as {cid}]\n1\n")
    assert "19999\n20000" in folded["output"]  # the preview's tail is the real end
    assert "cut to its first and last parts" not in model.requests[1]["messages"][-1]["content"]
    assert found["output"] == f"{cid}:15000: 15000\n"  # line 15000 was never in the capped output


async def test_long_session_is_compacted_and_the_agent_keeps_working(rpc: RpcConnection, kernel: Any) -> None:
    steps = [{"bash": f"printf 'step {i} '; head -c 1500 /dev/zero | tr '\\0' x; echo"} for i in range(12)]
    steps.append({"text": "all twelve done"})
    summaries: list[dict[str, Any]] = []

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        if messages[0]["content"].startswith("You compress"):
            summaries.append(request)
            return {"text": f"SUMMARY-{len(summaries)}: ran steps, all printed x's."}
        return steps.pop(0)

    with ScriptedModel(respond=respond) as model:
        context = {"window": 3000, "compact_at": 0.8, "keep_share": 0.3}
        sid = await scripted_session(rpc, model.url, agent="longrunner", settings={"context": context})
        facts = await dispatch(rpc, kernel, sid, "run the twelve steps")
        assert facts[-1]["body"]["status"] == "done" and steps == []
        assert facts[-2]["body"]["text"] == "all twelve done"
        compactions = [f for f in facts if f["kind"] == "context.summary"]
        assert compactions and summaries
        assert "step 0 " in summaries[0]["messages"][1]["content"]  # the summariser saw the start
        first = compactions[0]["body"]
        assert first["text"].startswith("SUMMARY-1") and first["upto_seq"] < compactions[0]["seq"]
        agent_requests = [
            r for r in model.requests if not r["messages"][0]["content"].startswith("You compress")
        ]
        for req in agent_requests:
            check_wire(req["messages"])
            check_anthropic(req["messages"])
            assert sum(len(json.dumps(m)) for m in req["messages"]) < 3000 * 4 * 1.2
        last = agent_requests[-1]["messages"]
        assert last[1]["content"].startswith("[summary of the earlier conversation")
        assert "SUMMARY-" in last[1]["content"] and "run the twelve steps" not in json.dumps(last)
        assert "step 11 " in last[-1]["content"]

        # A later dispatch, from a restarted service, starts from the newest summary too.
        await restart_context_service(kernel)
        steps.append({"text": "still here"})
        facts = await dispatch(rpc, kernel, sid, "anything left?")
        assert facts[-1]["body"]["status"] == "done"
        again = model.requests[-1]["messages"]
        check_wire(again)
        assert (
            again[1]["content"].startswith("[summary of the earlier conversation")
            and "SUMMARY-" in again[1]["content"]
        )
        assert again[-1] == {"role": "user", "content": "anything left?"}


async def test_an_empty_summary_never_compacts(rpc: RpcConnection, kernel: Any) -> None:
    """The summariser answering without text (a tool call, say) once dropped the older turns with
    nothing in their place. Now the context stays whole, the stream says why, and a later try
    compacts."""
    steps = [{"bash": f"printf 'step {i} '; head -c 1500 /dev/zero | tr '\\0' x; echo"} for i in range(30)]
    steps.append({"text": "all done"})
    summaries: list[dict[str, Any]] = []

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        if request["messages"][0]["content"].startswith("You compress"):
            summaries.append(request)
            if len(summaries) == 1:
                return {"bash": "echo a tool call instead of a summary"}
            return {"text": "SUMMARY-OK: steps ran."}
        return steps.pop(0)

    with ScriptedModel(respond=respond) as model:
        context = {"window": 3000, "compact_at": 0.8, "keep_share": 0.3}
        sid = await scripted_session(rpc, model.url, agent="longrunner", settings={"context": context})
        facts = await dispatch(rpc, kernel, sid, "run the steps")
        assert facts[-1]["body"]["status"] == "done"
        skipped = [f for f in facts if f["kind"] == "context.compaction_skipped"]
        summaries_written = [f for f in facts if f["kind"] == "context.summary"]
        assert len(skipped) == 1 and skipped[0]["body"]["reason"] == "the summariser returned no text"
        assert summaries_written and all(
            f["body"]["text"].startswith("SUMMARY-OK") for f in summaries_written
        ), "no summary of nothing"
        assert summaries_written[0]["seq"] > skipped[0]["body"]["retry_after_seq"]
        # Right after the failed try, the model still saw the conversation from its start.
        after_skip = next(
            r["messages"]
            for r in model.requests
            if not r["messages"][0]["content"].startswith("You compress")
            and any("step 0 " in str(m.get("content")) for m in r["messages"])
            and len(r["messages"]) > 20
        )
        assert "run the steps" in json.dumps(after_skip)


BAD_CONTEXT_SKILL = """---
name: bad-context
description: Returns a context delta that does not fit.
metadata:
  aos-service: service.py
---
test skill
"""
BAD_CONTEXT_SERVICE = """from aos_sdk import define_service

@define_service
def service():
    def assemble(input_data, output_data):
        return {"base": output_data["base"] + 5, "messages": []}
    return {"hooks": {"session.assemble": {"handler": assemble, "priority": 200}}}
"""


async def test_a_context_delta_that_does_not_fit_fails_the_dispatch_clearly(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    folder = kernel.paths.home / "skills" / "bad-context"
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(BAD_CONTEXT_SKILL)
    (folder / "service.py").write_text(BAD_CONTEXT_SERVICE)
    assert (await call(rpc, "skill.reload"))["added"] == ["bad-context"]
    await asyncio.wait_for(kernel.kernel.services.runners["bad-context"].wait_state(State.RUNNING), 20)
    sid = await scripted_session(rpc, model.url)
    facts = await dispatch(rpc, kernel, sid)
    assert facts[-1]["body"]["status"] == "failed" and model.requests == []
    error = next(f for f in facts if f["kind"] == "error")["body"]["message"]
    assert "session.assemble returned no valid context" in error and "base at most the length" in error
