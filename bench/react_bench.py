"""ReAct step benchmark: the kernel's own share of a step, for 1 and 100 concurrent sessions.

Each dispatch is one invocation: user message → the model asks for ``bash true`` → its result →
the model's final answer (2 model calls, 1 command). The model is the scripted OpenAI-compatible
server in its own process, answering at once, reached over HTTP by the model client (the direct
OpenAI-compatible path: an ``openai/`` model with an ``api_base``).

The kernel's share of a step is the dispatch's wall time minus the model calls' latency (as the
model client measured it, client included) minus the command's run time, divided by the steps. It
covers hooks, context assembly, journaling the facts in PostgreSQL, lease work and scheduling.
Usage: ``uv run python bench/react_bench.py [--dispatches 100] [--sessions 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from _harness import free_port, pct, running_kernel
from aos.kernel.kernel import Kernel


async def one_dispatch(k: Kernel, sid: str) -> tuple[float, float, float, int]:
    """Returns (wall ms, model ms, bash ms, steps) for one invocation."""
    t0 = time.perf_counter()
    started = await k.dispatcher.start(sid, "go")
    await k.dispatcher.wait_dispatch(sid)
    wall = (time.perf_counter() - t0) * 1000
    facts = await k.store.dispatch_facts(sid, started["dispatch_id"])
    model = sum(
        f["meta"]["usage"]["latency_ms"] for f in facts if f["kind"] == "message" and f["role"] == "assistant"
    )
    bash = sum(f["body"].get("duration_ms") or 0 for f in facts if f["kind"] == "tool.result")
    steps = next(f["body"]["steps"] for f in facts if f["kind"] == "dispatch.end")
    status = next(f["body"]["status"] for f in facts if f["kind"] == "dispatch.end")
    if status != "done":
        raise SystemExit(f"dispatch ended {status}: {facts[-2:]}")
    return wall, model, bash, steps


async def main(dispatches: int, sessions: int) -> None:
    port = free_port()
    model_proc = subprocess.Popen(
        [sys.executable, "-m", "aos_sdk.testing", "--react-loop", "true", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert model_proc.stdout is not None
    model_proc.stdout.readline()  # "scripted model on ..." once it listens

    def few_steps(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "limits": {**data["limits"], "max_steps": 10}}

    try:
        async with running_kernel("aos-bench-react-", config=few_steps, max_size=40, writers=2) as bench:
            k, store, base = bench.kernel, bench.store, bench.base
            params = {"api_base": f"http://127.0.0.1:{port}/v1", "api_key": "bench"}
            agent = await store.create_agent(
                name="bench",
                display_name=None,
                model="openai/scripted",
                instructions="",
                workspace=str(base / "ws"),
                settings={"model_params": params},
            )
            sids = [
                (await store.create_session(agent_id=agent["id"], title=None, settings={}))["id"]
                for _ in range(sessions)
            ]
            for _ in range(3):  # warm up the model client and the prepared statements
                await one_dispatch(k, sids[0])

            # One invocation per fresh session, as design §11 defines the measure: the
            # model client's cost grows with the context (see docs/benchmarks.md).
            lone = []
            for _ in range(dispatches):
                fresh = await store.create_session(agent_id=agent["id"], title=None, settings={})
                lone.append(await one_dispatch(k, fresh["id"]))

            per_session = max(1, dispatches // sessions * 2)

            async def loop(sid: str) -> list[tuple[float, float, float, int]]:
                return [await one_dispatch(k, sid) for _ in range(per_session)]

            t0 = time.perf_counter()
            many = [r for rs in await asyncio.gather(*(loop(s) for s in sids)) for r in rs]
            elapsed = time.perf_counter() - t0
    finally:
        model_proc.terminate()
        model_proc.wait()

    def share(rows: list[tuple[float, float, float, int]]) -> list[float]:
        return [(w - m - b) / s for w, m, b, s in rows]

    def stepwall(rows: list[tuple[float, float, float, int]]) -> list[float]:
        return [w / s for w, _, _, s in rows]

    lone_share, many_share = share(lone), share(many)
    out = [
        "| measure | p50 | p99 | budget |",
        "|---|---|---|---|",
        f"| kernel share of a step, 1 session | {statistics.median(lone_share):.2f} ms | {pct(lone_share, 0.99):.2f} ms | < 2 ms |",
        f"| step wall time, 1 session | {statistics.median(stepwall(lone)):.2f} ms | {pct(stepwall(lone), 0.99):.2f} ms | - |",
        f"| invocation wall time (2 steps, 1 command), 1 session | {statistics.median([r[0] for r in lone]):.2f} ms | {pct([r[0] for r in lone], 0.99):.2f} ms | - |",
        f"| kernel share of a step, {sessions} sessions at once | {statistics.median(many_share):.2f} ms | {pct(many_share, 0.99):.2f} ms | - |",
        f"| step wall time, {sessions} sessions at once | {statistics.median(stepwall(many)):.2f} ms | {pct(stepwall(many), 0.99):.2f} ms | no step slower than 2x a lone session's |",
    ]
    print("\n".join(out))
    print(
        f"\n{len(lone)} lone invocations; {len(many)} invocations over {sessions} sessions in {elapsed:.1f} s "
        f"({len(many) * 2 / elapsed:.0f} steps/s). Model latency includes the model client's own time."
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dispatches", type=int, default=100)
    ap.add_argument("--sessions", type=int, default=100)
    a = ap.parse_args()
    asyncio.run(main(a.dispatches, a.sessions))
