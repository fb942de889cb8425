"""What the sandbox costs per command: ``true`` run by the daemon's spawn path, sandboxed or not.

- **bwrap**: the sandboxed path (no ``preexec_fn``: CPython spawns with vfork), a full argv as a
  dispatch builds it (system binds, workspace, home, /tmp, namespaces, ulimits);
- **unsandboxed**: ``bash -c`` under util-linux's ``setpriv --pdeathsig KILL`` (also vfork);
- **unsandboxed, preexec_fn**: the fallback where ``setpriv`` is missing: a ``preexec_fn`` sets
  the parent-death signal, so CPython must fork the whole process.

All are measured in a process holding ``--ballast-mib`` of memory (default 240, the daemon's size
once litellm is loaded), because a fork copies the page tables of all of it.

Usage: ``uv run python bench/sandbox_bench.py [--runs 200] [--ballast-mib 240]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from _harness import pct
from aos.loop.bash import base_env, run_bash, setpriv_path
from aos.loop.sandbox import SandboxSettings, build_argv, probe


async def measure(runs: int, sandboxed: bool, ws: Path) -> list[float]:
    p = probe()
    if sandboxed and not p.available:
        raise SystemExit(f"bubblewrap does not work here: {p.reason}")
    home, tmp = ws / "home", ws / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env, out = base_env(), []
    for _ in range(runs):
        argv = None
        if sandboxed:
            assert p.bwrap is not None
            argv = build_argv(
                "true", bwrap=p.bwrap, settings=SandboxSettings(), workspace=ws, cwd=ws, home=home,
                tmp=tmp, gateway=None, skill_paths=[],
            )  # fmt: skip
        t0 = time.perf_counter()
        res = await run_bash("true", cwd=str(ws), env=env, timeout=10, cap=65536, argv=argv)
        out.append((time.perf_counter() - t0) * 1000)
        assert res.exit_code == 0, res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--ballast-mib", type=int, default=240)
    args = ap.parse_args()
    ballast = bytearray(args.ballast_mib * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # touch every page, as a daemon's heap is
    ws = Path(tempfile.mkdtemp(prefix="aos-sbx-bench-"))
    rows = []
    paths = (
        ("bwrap (vfork)", True, False),
        ("unsandboxed (setpriv, vfork)", False, False),
        ("unsandboxed, preexec_fn (fork)", False, True),
    )
    for name, sandboxed, fallback in paths:
        if fallback:
            setpriv_path.cache_clear()
            os.environ["PATH"] = "/nonexistent"  # no setpriv: the preexec_fn fallback
        ms = asyncio.run(measure(args.runs, sandboxed, ws))
        rows.append((name, statistics.median(ms), pct(ms, 0.99)))
    base = rows[0][1]
    print(f"one `true` command, {args.runs} runs, process of {args.ballast_mib} MiB")
    print(f"| {'path':32} | {'p50 ms':>7} | {'p99 ms':>7} | {'vs bwrap':>8} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    for name, p50, p99 in rows:
        print(f"| {name:32} | {p50:7.2f} | {p99:7.2f} | {p50 / base:7.2f}x |")
    del ballast


if __name__ == "__main__":
    main()
