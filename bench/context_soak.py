"""aos-context's memory as it sees more and more sessions (its per-session cache is bounded).

Each of ``--sessions`` sessions gets ``--turns`` command turns and one assemble through the real
service, as a dispatch's first step does; the service's RSS is sampled along the way. Bounded, it
levels off once the cache is full (64 most recently used sessions) instead of growing with every
session seen.

Usage: ``uv run python bench/context_soak.py [--sessions 600] [--turns 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from _harness import running_kernel
from aos.skills.supervisor import State
from assemble_bench import add_turn, assemble


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main(sessions: int, turns: int) -> None:
    async with running_kernel("aos-bench-soak-") as b:
        k, store = b.kernel, b.store
        runner = k.services.runners["aos-context"]
        await asyncio.wait_for(runner.wait_state(State.RUNNING), 30)
        assert runner.proc is not None
        pid = runner.proc.pid
        agent = await store.create_agent(
            name="soak", display_name=None, model=None, instructions="x", workspace=None, settings={}
        )
        skills = [
            {"name": s.name, "description": s.description, "path": str(s.path / "SKILL.md")}
            for s in k.skills.all()
        ]
        samples = [(0, rss_mib(pid))]
        every = max(1, sessions // 12)
        for i in range(1, sessions + 1):
            sid = (await store.create_session(agent_id=agent["id"], title=None, settings={}))["id"]
            for n in range(turns):
                await add_turn(k, sid, n)
            await assemble(k, sid, agent, {"since": 0, "context": [], "skills": skills}, whole=False)
            if i % every == 0 or i == sessions:
                samples.append((i, rss_mib(pid)))
        print(f"\naos-context RSS while assembling {sessions} sessions of {turns} turns each\n")
        print(f"| {'sessions seen':>13} | {'RSS MiB':>8} |")
        print(f"|{'-' * 15}|{'-' * 10}|")
        for seen, mib in samples:
            print(f"| {seen:13d} | {mib:8.1f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=600)
    ap.add_argument("--turns", type=int, default=20)
    a = ap.parse_args()
    asyncio.run(main(a.sessions, a.turns))
