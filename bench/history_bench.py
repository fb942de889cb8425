"""Reading history: ``history.list`` of 10,000 facts through the kernel socket, as a client does.

The session holds facts shaped like a dispatch's (user message, assistant with a tool call,
tool.started, tool.result with some output). Each read asks for all 10,000 in one page (the
maximum), through the real socket, JSON-RPC and the store; the floor is the same rows fetched
with psycopg alone.

Usage: ``uv run python bench/history_bench.py [--facts 10000] [--reads 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from _harness import pct, running_kernel
from aos.kernel.server import serve_kernel_socket
from aos_sdk.connection import open_connection


def fact(i: int) -> tuple[str, str | None, Any]:
    step = i % 4
    if step == 0:
        return "message", "user", {"text": f"please look at module {i}"}
    if step == 1:
        return (
            "message",
            "assistant",
            {
                "text": None,
                "tool_calls": [
                    {"id": f"c{i}", "name": "bash", "arguments": '{"command": "grep -n def src/m.py"}'}
                ],
            },
        )
    if step == 2:
        return (
            "tool.started",
            None,
            {"call_id": f"c{i - 1}", "command": "grep -n def src/m.py", "cwd": "/w", "sandbox": "bwrap"},
        )
    return (
        "tool.result",
        "tool",
        {
            "call_id": f"c{i - 2}",
            "outcome": "ok",
            "exit_code": 0,
            "output": "12: def f():\n" * 8,
            "size": 112,
        },
    )


async def main(n: int, reads: int) -> None:
    async with running_kernel("aos-bench-hist-") as b:
        k, store = b.kernel, b.store
        agent = await store.create_agent(
            name="h", display_name=None, model=None, instructions="", workspace=None, settings={}
        )
        sid = (await store.create_session(agent_id=agent["id"], title=None, settings={}))["id"]
        batch = []
        for i in range(n):
            kind, role, body = fact(i)
            batch.append(
                store.append(
                    sid,
                    epoch=None,
                    kind=kind,
                    role=role,
                    body=body,
                    meta={"dispatch_id": "di_x"},
                    idempotency_key=f"k{i}",
                )
            )
            if len(batch) == 200:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
        sock = b.paths.kernel_sock
        async with (
            serve_kernel_socket(k, sock, max_frame_bytes=64 << 20, max_in_flight=64),
            open_connection(sock) as c,
        ):
            socket_ms = []
            for _ in range(reads):
                t0 = time.perf_counter()
                res = await c.call("history.list", {"session": sid, "limit": 10000}, timeout=60)
                socket_ms.append((time.perf_counter() - t0) * 1000)
                assert len(res["facts"]) == min(n, 10000)
        store_ms = []
        for _ in range(reads):
            t0 = time.perf_counter()
            rows = await store.list_history(sid, limit=10000)
            store_ms.append((time.perf_counter() - t0) * 1000)
            assert len(rows) == min(n, 10000)
        print(f"\nhistory.list of {min(n, 10000)} facts, {reads} reads, 2 cores\n")
        print(f"| {'path':34} | {'p50 ms':>7} | {'p99 ms':>7} |")
        print(f"|{'-' * 36}|{'-' * 9}|{'-' * 9}|")
        for name, xs in (
            ("history.list through the socket", socket_ms),
            ("store.list_history (rows only)", store_ms),
        ):
            print(f"| {name:34} | {statistics.median(xs):7.1f} | {pct(xs, 0.99):7.1f} |")
        print("\nbudget: history.list of 10,000 facts < 60 ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--facts", type=int, default=10000)
    ap.add_argument("--reads", type=int, default=30)
    a = ap.parse_args()
    asyncio.run(main(a.facts, a.reads))
