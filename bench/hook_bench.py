"""Gate hook round trip: a resident skill service against a process spawned per hook.

- **resident**: the kernel's hook bus calls a ``tool.before`` gate of a real service subprocess
  (``define_service``, trivial handler) over its Unix socket, as every dispatch step does;
- **spawned**: the same gate as a Python one-liner started per call, reading the event as JSON on
  stdin and writing the verdict on stdout (how hook commands work in tools that spawn per hook);
- **hot reload**: a skill folder dropped into ``$AOS_HOME/skills`` until its service registered.

Usage: ``uv run python bench/hook_bench.py [--calls 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from _harness import pct, running_kernel
from aos.config import Paths
from aos.skills.supervisor import State

SKILL_MD = "---\nname: {name}\ndescription: Benchmark gate.\nmetadata:\n  aos-service: service.py\n---\nx\n"
SERVICE_PY = """from aos_sdk import define_service

@define_service
def service():
    def gate(input_data, output_data):
        return output_data
    return {"hooks": {"tool.before": gate}}
"""
ONE_LINER = "import json,sys; e=json.load(sys.stdin); json.dump(e['output'], sys.stdout)"


def prepare(paths: Paths) -> None:
    folder = paths.skills / "bench-gate"
    folder.mkdir()
    (folder / "SKILL.md").write_text(SKILL_MD.format(name="bench-gate"))
    (folder / "service.py").write_text(SERVICE_PY)


def watching(data: dict[str, Any]) -> dict[str, Any]:
    # Only the benchmark's gate: the built-in skills' hooks would be measured with it.
    builtin = ["aos-guard", "aos-context", "aos-skill", "aos-a2a"]
    return {**data, "skills": {**data["skills"], "watch": True, "disabled": builtin}}


async def main(calls: int) -> None:
    async with running_kernel("aos-bench-hooks-", config=watching, prepare=prepare) as b:
        k, paths, base = b.kernel, b.paths, b.base
        runner = k.services.runners["bench-gate"]
        await asyncio.wait_for(runner.wait_state(State.RUNNING), 30)
        ids = {"agent_id": "ag_x", "session_id": None, "dispatch_id": "di_x", "call_id": "c"}
        out = {"args": {"command": "ls -la"}, "cwd": "/tmp"}
        for _ in range(200):
            await k.hooks.gate("tool.before", ids, out)
        resident = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await k.hooks.gate("tool.before", ids, out)
            resident.append(time.perf_counter() - t0)

        spawned = []
        event = json.dumps({"hook": "tool.before", "input": ids, "output": out}).encode()
        for _ in range(max(20, calls // 40)):
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", ONE_LINER, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            await proc.communicate(event)
            spawned.append(time.perf_counter() - t0)

        staged = base / "staged"
        staged.mkdir()
        (staged / "SKILL.md").write_text(SKILL_MD.format(name="dropped"))
        (staged / "service.py").write_text(SERVICE_PY)
        t0 = time.perf_counter()
        shutil.copytree(staged, paths.skills / "dropped")
        await k.services.wait_until(lambda: "dropped" in k.services.runners)
        await k.services.runners["dropped"].wait_state(State.RUNNING)
        reload_ms = (time.perf_counter() - t0) * 1000

    r50, s50 = statistics.median(resident), statistics.median(spawned)
    print("| measure | p50 | p99 | budget |")
    print("|---|---|---|---|")
    print(
        f"| gate hook round trip, resident service | {r50 * 1e6:.0f} µs | {pct(resident, 0.99) * 1e6:.0f} µs | p50 < 300 µs, p99 < 2 ms |"
    )
    print(
        f"| gate hook, Python process spawned per call | {s50 * 1e3:.1f} ms | {pct(spawned, 0.99) * 1e3:.1f} ms | - |"
    )
    print(f"| ratio spawned / resident | {s50 / r50:.0f}x | | ≥ 50x |")
    print(f"| hot reload: folder dropped in → service registered | {reload_ms:.0f} ms | | < 1 s |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    asyncio.run(main(ap.parse_args().calls))
