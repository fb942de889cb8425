"""One invocation, AOS against its peers, side by side in one run.

An invocation: a user message, the model asks for ``bash true``, its result, the model's final
answer (two model calls, one command, a fresh session or thread each time). The model is the
scripted OpenAI-compatible server in its own process, answering at once; every peer uses the same
server and the same PostgreSQL server (one database each):

- **AOS**: a real daemon (``aos start``) with its default skills, driven through the SDK's client
  over the kernel socket (``session.create``, ``session.dispatch``, following ``history.subscribe``
  to ``dispatch.end``);
- **LangGraph**: its prebuilt ReAct agent with ``PostgresSaver`` (sync), the same ``bash`` tool;
- **litellm loop**: the floor, two ``litellm.completion`` calls and a ``subprocess.run``, no
  persistence.

Blocks of each are interleaved. Reported per invocation: wall p50/p99; CPU (AOS: daemon, its
services and PostgreSQL's processes, from /proc; LangGraph and the loop: this process and
PostgreSQL's); rows written and WAL bytes (``pg_current_wal_lsn`` over each block, divided by its
invocations). Ratios are against LangGraph.

Needs the ``bench`` dependency group: ``uv run --group bench python bench/peers_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from _harness import aos_daemon, one_invocation, pct, scripted_model
from aos.db.embedded import EmbeddedPostgres
from aos_sdk.syncclient import SyncClient

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) of ``pids`` and their live descendants' own time."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


def descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, []))
    return out


class Measure:
    """Wall, CPU, rows and WAL of a block of invocations."""

    def __init__(self, admin_dsn: str, cpu_pids: Callable[[], list[int]], own_cpu: bool) -> None:
        self.admin_dsn, self.cpu_pids, self.own_cpu = admin_dsn, cpu_pids, own_cpu
        self.wall: list[float] = []
        self.cpu = 0.0
        self.n = 0
        self.wal = 0
        self.rows = 0

    def block(self, run: Callable[[], None], count: int, rows: Callable[[], int]) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            lsn0 = c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
            rows0 = rows()
            pids = self.cpu_pids()
            cpu0 = cpu_of(pids) + (time.process_time() if self.own_cpu else 0.0)
            for _ in range(count):
                t0 = time.perf_counter()
                run()
                self.wall.append((time.perf_counter() - t0) * 1000)
            cpu1 = cpu_of(pids) + (time.process_time() if self.own_cpu else 0.0)
            lsn1 = c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
            self.wal += int(c.execute("SELECT pg_wal_lsn_diff(%s, %s)", (lsn1, lsn0)).fetchone()[0])  # type: ignore[index]
        self.rows += rows() - rows0
        self.cpu += cpu1 - cpu0
        self.n += count

    def row(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "p50": statistics.median(self.wall),
            "p99": pct(self.wall, 0.99),
            "cpu": self.cpu / self.n * 1000,
            "rows": self.rows / self.n,
            "wal": self.wal / self.n,
        }


def count_rows(dsn: str, tables: list[str]) -> Callable[[], int]:
    def rows() -> int:
        with psycopg.connect(dsn, autocommit=True) as c:
            total = 0
            for t in tables:
                found = c.execute("SELECT to_regclass(%s)", (t,)).fetchone()
                if found and found[0]:
                    total += int(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            return total

    return rows


def lg_graph_async(api_base: str, workspace: Path, saver: Any) -> Any:
    """LangGraph's prebuilt ReAct agent with an async bash tool and the given checkpointer."""
    import warnings

    warnings.filterwarnings("ignore", message=".*create_react_agent has been moved.*")
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    @tool
    async def bash(command: str) -> str:
        """Run a bash command and return its output."""
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=str(workspace),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return out.decode()

    llm = ChatOpenAI(model="scripted", base_url=api_base, api_key="x", max_retries=0)  # type: ignore[arg-type]
    return create_react_agent(llm, [bash], checkpointer=saver)


async def concurrency(
    levels: list[int],
    per_session: int,
    sock: Path,
    agent_id: str,
    lg_dsn: str,
    api_base: str,
    workspace: Path,
) -> None:
    """Throughput and step latency with N sessions at once, each running invocations back to back.

    A step is one model call and what it asked for, seen from the client: the time from the
    dispatch (or the previous step's answer) to the model's answer being durable (AOS: its
    assistant fact arriving on the subscription; LangGraph: the agent node's update in
    ``astream``).
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    from aos_sdk.connection import open_connection

    async def aos_session(steps: list[float]) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_note(note: Any) -> None:
            if "fact" in (note.params or {}):
                queue.put_nowait(note.params["fact"])

        async with open_connection(sock, on_notification=on_note) as conn:
            for _ in range(per_session):
                sid = (await conn.call("session.create", {"agent": agent_id}))["id"]
                await conn.call("history.subscribe", {"session": sid})
                t = time.perf_counter()
                await conn.call("session.dispatch", {"session": sid, "message": "go"})
                while True:
                    fact = await queue.get()
                    if fact["kind"] == "message" and fact["role"] == "assistant":
                        now = time.perf_counter()
                        steps.append((now - t) * 1000)
                        t = now
                    elif fact["kind"] == "dispatch.end":
                        assert fact["body"]["status"] == "done", fact
                        break

    pool = AsyncConnectionPool(
        lg_dsn,
        max_size=20,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    await pool.open()
    saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
    await saver.setup()
    graph = lg_graph_async(api_base, workspace, saver)
    counter = iter(range(10**9))

    async def lg_session(steps: list[float]) -> None:
        for _ in range(per_session):
            t = time.perf_counter()
            cfg = {"configurable": {"thread_id": f"c{next(counter)}"}}
            async for update in graph.astream({"messages": [("user", "go")]}, cfg, stream_mode="updates"):
                if "agent" in update:
                    now = time.perf_counter()
                    steps.append((now - t) * 1000)
                    t = now

    peers = {"AOS": aos_session, "LangGraph (async)": lg_session}
    for run in peers.values():  # warm both
        await run([])
    results: dict[tuple[str, int], dict[str, float]] = {}
    for n in levels:
        for name, run in peers.items():
            steps: list[float] = []
            t0 = time.perf_counter()
            await asyncio.gather(*(run(steps) for _ in range(n)))
            elapsed = time.perf_counter() - t0
            results[(name, n)] = {
                "throughput": n * per_session / elapsed,
                "p50": statistics.median(steps),
                "p99": pct(steps, 0.99),
            }
            print(f"{name} at {n} sessions done", file=sys.stderr)
    await pool.close()
    print(f"\nconcurrent sessions, {per_session} invocations each, one after another (2 cores)\n")
    print(
        f"| {'sessions':>8} | {'peer':18} | {'invocations/s':>13} | {'step p50':>9} | {'step p99':>9} | {'throughput vs LG':>16} |"
    )
    print(f"|{'-' * 10}|{'-' * 20}|{'-' * 15}|{'-' * 11}|{'-' * 11}|{'-' * 18}|")
    for n in levels:
        lg = results[("LangGraph (async)", n)]
        for name in peers:
            r = results[(name, n)]
            print(
                f"| {n:>8} | {name:18} | {r['throughput']:13.1f} | {r['p50']:6.1f} ms | {r['p99']:6.1f} ms |"
                f" {r['throughput'] / lg['throughput']:15.2f}x |"
            )
    lone = results[("AOS", levels[0])]["p50"]
    print(
        f"\ntargets: at 100 sessions ≥ 2x LangGraph's throughput; no step slower than 2x a lone session's"
        f" p50 ({2 * lone:.1f} ms) plus the machine's share"
    )


def main() -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no price-list fetch at import
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--block", type=int, default=25)
    ap.add_argument(
        "--concurrency", default="1,10,50,100", help="session counts for the throughput part ('' skips it)"
    )
    ap.add_argument(
        "--per-session", type=int, default=4, help="invocations each session runs, one after another"
    )
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="aos-peers-"))
    pg = EmbeddedPostgres(base / "pg", base / "pg.log")
    pg.start()
    home = base / "home"
    stack = contextlib.ExitStack()
    try:
        api_base = stack.enter_context(scripted_model("--react-loop", "true"))
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE aos")
            c.execute("CREATE DATABASE lg")
        stack.enter_context(aos_daemon(home, AOS_DB_URL=pg.dsn("aos")))
        daemon_pid = int((home / "run" / "aos.pid").read_text().split()[0])
        sock = home / "run" / "kernel.sock"
        client = SyncClient(sock, timeout=60)
        agent = client.call(
            "agent.create",
            {
                "name": "bench",
                "model": "openai/scripted",
                "settings": {"model_params": {"api_base": api_base, "api_key": "x"}},
            },
        )
        workspace = home / "workspaces" / "bench"
        t0 = time.perf_counter()

        def aos_once() -> None:
            one_invocation(client, sock, agent["id"])

        aos_once()
        first_ms = (time.perf_counter() - t0) * 1000  # agent.create and the first dispatch after start

        # LangGraph: the prebuilt ReAct agent, PostgresSaver, the same tool.
        import warnings

        warnings.filterwarnings("ignore", message=".*create_react_agent has been moved.*")
        from langchain_core.tools import tool
        from langchain_openai import ChatOpenAI
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.prebuilt import create_react_agent

        @tool
        def bash(command: str) -> str:
            """Run a bash command and return its output."""
            res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=str(workspace))
            return res.stdout + res.stderr

        lg_dsn = pg.dsn("lg")
        saver_cm = PostgresSaver.from_conn_string(lg_dsn)
        saver = saver_cm.__enter__()
        saver.setup()
        llm = ChatOpenAI(model="scripted", base_url=api_base, api_key="x", max_retries=0)  # type: ignore[arg-type]
        graph = create_react_agent(llm, [bash], checkpointer=saver)
        counter = iter(range(10**9))

        def lg_once() -> None:
            out = graph.invoke(
                {"messages": [("user", "go")]}, {"configurable": {"thread_id": f"t{next(counter)}"}}
            )
            assert out["messages"][-1].content == "done"

        import litellm

        tools = [
            {
                "type": "function",
                "function": {
                    "name": "bash",
                    "description": "run bash",
                    "parameters": {
                        "type": "object",
                        "properties": {"command": {"type": "string"}},
                        "required": ["command"],
                    },
                },
            }
        ]

        def loop_once() -> None:
            messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
            r = litellm.completion(
                model="openai/scripted", api_base=api_base, api_key="x", messages=messages, tools=tools
            )
            call = r.choices[0].message.tool_calls[0]
            res = subprocess.run(
                ["bash", "-c", json.loads(call.function.arguments)["command"]], capture_output=True, text=True
            )
            messages += [
                r.choices[0].message.model_dump(),
                {"role": "tool", "tool_call_id": call.id, "content": res.stdout},
            ]
            r = litellm.completion(
                model="openai/scripted", api_base=api_base, api_key="x", messages=messages, tools=tools
            )
            assert r.choices[0].message.content == "done"

        pg_pids = lambda: descendants(pg.pid or 0)  # noqa: E731
        measures = {
            "AOS (daemon, default skills)": (
                Measure(pg.dsn("postgres"), lambda: descendants(daemon_pid) + pg_pids(), own_cpu=False),
                aos_once,
                count_rows(
                    pg.dsn("aos"),
                    ["history", "dispatches", "sessions", "runtime_log", "content", "usage", "approvals"],
                ),
            ),
            "LangGraph (prebuilt, PostgresSaver)": (
                Measure(pg.dsn("postgres"), pg_pids, own_cpu=True),
                lg_once,
                count_rows(lg_dsn, ["checkpoints", "checkpoint_writes", "checkpoint_blobs"]),
            ),
            "litellm loop (no persistence)": (
                Measure(pg.dsn("postgres"), pg_pids, own_cpu=True),
                loop_once,
                lambda: 0,
            ),
        }
        for _, run, _ in measures.values():
            for _ in range(3):
                run()  # warm: imports, connections, the model client
        for r in range(args.rounds):
            for m, run, rows in measures.values():
                m.block(run, args.block, rows)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        table = [m.row(name) for name, (m, _, _) in measures.items()]
        lg = table[1]
        print(
            f"\none invocation (user → bash true → answer), {args.rounds} x {args.block} each, interleaved, 2 cores\n"
        )
        print(
            f"| {'peer':36} | {'wall p50':>9} | {'wall p99':>9} | {'CPU':>8} | {'rows':>5} | {'WAL B':>7} | {'wall vs LG':>10} | {'CPU vs LG':>9} | {'WAL vs LG':>9} |"
        )
        print(
            f"|{'-' * 38}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 7}|{'-' * 9}|{'-' * 12}|{'-' * 11}|{'-' * 11}|"
        )
        for t in table:
            wal_ratio = f"{t['wal'] / lg['wal']:8.2f}x" if lg["wal"] else "-"
            print(
                f"| {t['name']:36} | {t['p50']:6.1f} ms | {t['p99']:6.1f} ms | {t['cpu']:5.1f} ms | {t['rows']:5.1f} | {t['wal']:7.0f} |"
                f" {t['p50'] / lg['p50']:9.2f}x | {t['cpu'] / lg['cpu']:8.2f}x | {wal_ratio} |"
            )
        print("\ntargets (design): AOS wall and CPU ≤ 0.75x LangGraph's; WAL bytes ≤ 1/5 of LangGraph's")
        print(
            f"\nfirst dispatch after `aos start`: {first_ms:.1f} ms (a warm one: {table[0]['p50']:.1f} ms p50)"
        )
        saver_cm.__exit__(None, None, None)
        client.close()
        if args.concurrency:
            levels = [int(x) for x in args.concurrency.split(",")]
            asyncio.run(concurrency(levels, args.per_session, sock, agent["id"], lg_dsn, api_base, workspace))
    finally:
        stack.close()  # the daemon, then the model
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
