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
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from _harness import pct
from aos.db.embedded import EmbeddedPostgres
from aos_sdk.syncclient import SyncClient
from react_bench import free_port

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


def main() -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no price-list fetch at import
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--block", type=int, default=25)
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="aos-peers-"))
    pg = EmbeddedPostgres(base / "pg", base / "pg.log")
    pg.start()
    port = free_port()
    model = subprocess.Popen(
        [sys.executable, "-m", "aos_sdk.testing", "--react-loop", "true", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert model.stdout is not None
    model.stdout.readline()  # "scripted model on …": it serves
    api_base = f"http://127.0.0.1:{port}/v1"
    home = base / "home"
    env = {
        **os.environ,
        "AOS_HOME": str(home),
        "AOS_DB_URL": pg.dsn("aos"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    try:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE aos")
            c.execute("CREATE DATABASE lg")
        subprocess.run([sys.executable, "-m", "aos", "start"], env=env, check=True, capture_output=True)
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

        def aos_once() -> None:
            sid = client.call("session.create", {"agent": agent["id"]})["id"]
            with SyncClient(sock, timeout=60) as follow:
                follow.call("history.subscribe", {"session": sid})
                client.call("session.dispatch", {"session": sid, "message": "go"})
                for note in follow.notifications():
                    if note.params["fact"]["kind"] == "dispatch.end":
                        assert note.params["fact"]["body"]["status"] == "done", note.params
                        return

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
        saver_cm.__exit__(None, None, None)
        client.close()
    finally:
        subprocess.run([sys.executable, "-m", "aos", "stop"], env=env, capture_output=True)
        model.send_signal(signal.SIGINT)
        model.wait(10)
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
