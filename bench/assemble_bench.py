"""Per-step ``session.assemble`` at 500 facts, through the real aos-context service.

A session is filled with ``--facts`` facts shaped like real work (user messages, assistant
messages with bash calls, ``tool.started``, results of a few hundred bytes). Then each measured
step appends what a ReAct step appends (an assistant fact and a tool result) and assembles the
way the ReActUnit does: read the facts since the last step from PostgreSQL, run the
``session.assemble`` hook over the service's socket with only those facts, apply the
``{base, messages}`` delta.

Peers, run in the same process tree:
- **whole context back**: the same, but the service returns the whole context every step (what a
  stateless hook protocol does: ``first`` set on every call);
- **cold**: a session the service has not seen (after a restart): it rebuilds the context from
  history through ``history.list``.

Usage: ``uv run python bench/assemble_bench.py [--facts 500] [--steps 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from _harness import pct, running_kernel
from aos.kernel.kernel import Kernel
from aos.skills.supervisor import State


async def add_turn(k: Kernel, sid: str, n: int) -> None:
    """One ReAct step's facts: an assistant message with a bash call, then its result."""
    call = f"call_{n}"
    command = json.dumps({"command": f"grep -n 'def ' src/module_{n}.py | head -20"})
    for kind, role, body in (
        (
            "message",
            "assistant",
            {"text": None, "tool_calls": [{"id": call, "name": "bash", "arguments": command}]},
        ),
        (
            "tool.result",
            "tool",
            {"call_id": call, "outcome": "ok", "exit_code": 0, "output": f"{n}: def f():\n" * 12},
        ),
    ):
        await k.append(
            sid, epoch=None, kind=kind, role=role, body=body, meta=None, idempotency_key=f"{sid}:{n}:{kind}"
        )


async def assemble(
    k: Kernel, sid: str, agent: dict[str, Any], state: dict[str, Any], *, whole: bool
) -> float:
    t0 = time.perf_counter()
    facts = await k.store.list_history(sid, after_seq=state["since"], limit=100_000)
    prev = state["context"]
    out = await k.hooks.transform(
        "session.assemble",
        {
            "agent_id": agent["id"],
            "session_id": sid,
            "dispatch_id": "di_bench",
            "agent": agent,
            "skills": state["skills"],
            "facts": [{**f, "created_at": f["created_at"].isoformat()} for f in facts],
            "since": state["since"],
            "first": whole or not prev,
            "model": "openai/bench",
            "window": 1_000_000,
            "last_prompt_tokens": None,
        },
        {"base": len(prev), "messages": []},
    )
    base = out.get("base", 0)
    state["context"] = prev[:base] + out["messages"] if base else out["messages"]
    if facts:
        state["since"] = facts[-1]["seq"]
    return time.perf_counter() - t0


async def main(n_facts: int, steps: int) -> None:
    async with running_kernel("aos-bench-asm-") as b:
        k, store = b.kernel, b.store
        runner = k.services.runners["aos-context"]
        await asyncio.wait_for(runner.wait_state(State.RUNNING), 30)
        agent = await store.create_agent(
            name="bench",
            display_name=None,
            model=None,
            instructions="Be quick.",
            workspace=None,
            settings={},
        )
        sid = (await store.create_session(agent_id=agent["id"], title=None, settings={}))["id"]
        skills = [
            {"name": s.name, "description": s.description, "path": str(s.path / "SKILL.md")}
            for s in k.skills.all()
        ]
        await k.append(
            sid,
            epoch=None,
            kind="message",
            role="user",
            body={"text": "refactor the modules"},
            meta=None,
            idempotency_key="u0",
        )
        n = 0
        while (await store.get_session(sid))["last_seq"] < n_facts:
            n += 1
            await add_turn(k, sid, n)
        facts = (await store.get_session(sid))["last_seq"]

        results: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        for label, whole in (("incremental (delta)", False), ("whole context back", True)):
            state = {"since": 0, "context": [], "skills": skills}
            await assemble(k, sid, agent, state, whole=whole)  # the dispatch's first step
            times = []
            for _ in range(steps):
                n += 1
                await add_turn(k, sid, n)
                times.append(await assemble(k, sid, agent, state, whole=whole))
            results[label] = times
            sizes[label] = len(state["context"])

        cold = []
        for i in range(max(10, steps // 20)):
            fork = await store.fork_session(sid, facts, f"cold {i}")
            state = {"since": facts, "context": [], "skills": skills}
            cold.append(await assemble(k, fork["id"], agent, state, whole=False))
        results["cold (rebuilt from history)"] = cold

        lone = statistics.median(results["incremental (delta)"])
        print(
            f"\nsession.assemble per step, {facts} facts at the start ({sizes['incremental (delta)']} messages at the end), 2 cores\n"
        )
        print(f"| {'measure':<32} | {'p50':>10} | {'p99':>10} | {'vs incremental':>14} |")
        print(f"|{'-' * 34}|{'-' * 12}|{'-' * 12}|{'-' * 16}|")
        for label, xs in results.items():
            med = statistics.median(xs)
            print(
                f"| {label:<32} | {med * 1e3:7.2f} ms | {pct(xs, 0.99) * 1e3:7.2f} ms | {med / lone:13.1f}x |"
            )
        print("\nbudget: incremental p50 < 2 ms at 500 facts")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--facts", type=int, default=500)
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    asyncio.run(main(a.facts, a.steps))
