"""Kernel benchmark: syscall round trips and history appends against the real daemon.

Starts a real ``aos`` daemon (embedded PostgreSQL) in a temporary ``AOS_HOME``, and, in the
same process tree, the peers it is compared with:

- a bare WebSocket-over-Unix-socket JSON echo server (``websockets``, compression off): the floor
  for a syscall round trip;
- a raw psycopg single-row INSERT into a plain table on the same PostgreSQL: the floor for a
  durable append.

Prints one table: median and p99 per call, throughput, the design budget, and the ratio to the
peer. Usage: ``uv run python bench/kernel_bench.py [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from websockets.asyncio.server import ServerConnection, unix_serve

from aos.db.store import Store
from aos_sdk.connection import RpcConnection, open_connection
from aos_sdk.protocol import Endpoint

Row = dict[str, Any]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n > 1 else ''}"


def row(measure: str, lat: list[float], rate: float, budget: str, peer: str, peer_lat: list[float]) -> Row:
    """One table row: latencies in seconds become µs."""
    return {
        "measure": measure,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": pct(lat, 0.99) * 1e6,
        "per_s": rate,
        "budget": budget,
        "peer": peer,
        "peer_p50_us": statistics.median(peer_lat) * 1e6,
    }


async def timed_loop(
    clients: int, seconds: float, make: Callable[[int], Awaitable[Callable[[], Awaitable[Any]]]]
) -> tuple[list[float], float]:
    """Run ``clients`` concurrent loops for ``seconds``; returns per-call latencies and calls/s."""
    fns = [await make(i) for i in range(clients)]
    for fn in fns:  # warm up
        for _ in range(20):
            await fn()
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def loop(fn: Callable[[], Awaitable[Any]]) -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await fn()
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(fn) for fn in fns))
    return lat, len(lat) / (time.perf_counter() - t0)


async def echo_handler(ws: ServerConnection) -> None:
    ep = Endpoint()
    async for message in ws:
        for req in ep.receive(message):
            await ws.send(Endpoint.result(req.id, req.params))  # type: ignore[union-attr]


async def main(seconds: float) -> list[Row]:
    home = Path(tempfile.mkdtemp(prefix="aos-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")} | {"AOS_HOME": str(home)}
    start = subprocess.run([sys.executable, "-m", "aos", "start"], env=env, capture_output=True, text=True)
    if start.returncode != 0:
        raise SystemExit(f"aos start failed: {start.stderr}")
    rows: list[Row] = []
    conns: list[Any] = []
    try:
        sock = home / "run" / "kernel.sock"
        peer_sock = home / "run" / "peer.sock"
        # The peer runs in its own process, like the daemon, so neither shares the client's loop.
        peer = subprocess.Popen([sys.executable, __file__, "--serve-echo", str(peer_sock)])
        while not peer_sock.exists():
            await asyncio.sleep(0.01)  # a bench harness waiting for its peer to listen

        async def connect(path: Path) -> RpcConnection:
            cm = open_connection(path)
            conn = await cm.__aenter__()
            conns.append(cm)
            return conn

        for size, label in ((200, "200 B"), (65536, "64 KiB")):
            payload = "x" * (size - 60)
            for clients in (1, 10):

                async def make_kernel(i: int, payload: str = payload) -> Callable[[], Awaitable[Any]]:
                    c = await connect(sock)
                    return lambda: c.call("system.ping", {"payload": payload})

                async def make_peer(i: int, payload: str = payload) -> Callable[[], Awaitable[Any]]:
                    c = await connect(peer_sock)
                    return lambda: c.call("echo", {"payload": payload})

                lat, rate = await timed_loop(clients, seconds, make_kernel)
                plat, _ = await timed_loop(clients, seconds, make_peer)
                budget = {"200 B": "p50 < 250 µs, p99 < 1 ms", "64 KiB": "p50 < 1 ms"}[label]
                rows.append(
                    row(
                        f"syscall round trip {label}, {plural(clients, 'client')}",
                        lat,
                        rate,
                        budget if clients == 1 else "-",
                        "bare WS echo",
                        plat,
                    )
                )
        peer.terminate()
        peer.wait()

        admin = await connect(sock)
        await admin.call("agent.create", {"name": "bench"})
        for sessions in (1, 50):
            sids = [(await admin.call("session.create", {"agent": "bench"}))["id"] for _ in range(sessions)]

            async def make_append(i: int, sids: list[str] = sids) -> Callable[[], Awaitable[Any]]:
                c = await connect(sock)
                sid = sids[i]
                return lambda: c.call(
                    "session.append", {"session": sid, "role": "user", "body": {"text": "hi"}}
                )

            lat, rate = await timed_loop(sessions, seconds, make_append)

            pg_dsn = f"host={home / 'pg'} dbname=aos user=postgres"
            with psycopg.connect(pg_dsn, autocommit=True) as pc:
                pc.execute("CREATE TABLE IF NOT EXISTS bench_peer (id bigserial PRIMARY KEY, body jsonb)")
            peer_conns = [
                await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) for _ in range(sessions)
            ]

            async def make_insert(i: int, pcs: list[Any] = peer_conns) -> Callable[[], Awaitable[Any]]:
                pc = pcs[i]
                return lambda: pc.execute("INSERT INTO bench_peer (body) VALUES (%s)", ('{"text": "hi"}',))

            plat, prate = await timed_loop(sessions, seconds, make_insert)
            for pc in peer_conns:
                await pc.close()

            # The same durable append without the socket hop: the store the kernel uses, in this
            # process, on the daemon's database (what a dispatch pays per fact).
            async with Store.open(pg_dsn, writers=2) as store:

                async def make_store_append(
                    i: int, sids: list[str] = sids, st: Store = store
                ) -> Callable[[], Awaitable[Any]]:
                    sid = sids[i]
                    return lambda: st.append(
                        sid,
                        epoch=None,
                        kind="message",
                        role="user",
                        body={"text": "hi"},
                        meta=None,
                        idempotency_key=uuid.uuid4().hex,
                    )

                slat, srate = await timed_loop(sessions, seconds, make_store_append)
            budget = "p50 < 500 µs" if sessions == 1 else "≥ 8,000 appends/s"
            peer_name = f"raw INSERT ({prate:,.0f}/s)"
            n = plural(sessions, "session")
            rows.append(row(f"store append, {n}", slat, srate, budget, peer_name, plat))
            rows.append(row(f"session.append syscall, {n}", lat, rate, budget, peer_name, plat))
    finally:
        for cm in reversed(conns):
            await cm.__aexit__(None, None, None)
        subprocess.run([sys.executable, "-m", "aos", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return rows


def render(rows: list[Row]) -> str:
    head = f"| {'measure':<40} | {'p50':>9} | {'p99':>9} | {'calls/s':>9} | {'budget':<25} | {'peer':<22} | {'peer p50':>9} | {'ratio':>5} |"
    sep = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    out = [head, sep]
    out.extend(
        f"| {r['measure']:<40} | {r['p50_us']:>6.0f} µs | {r['p99_us']:>6.0f} µs | {r['per_s']:>9,.0f} | "
        f"{r['budget']:<25} | {r['peer']:<22} | {r['peer_p50_us']:>6.0f} µs | {r['p50_us'] / r['peer_p50_us']:>5.2f} |"
        for r in rows
    )
    return "\n".join(out)


async def serve_echo(path: str) -> None:
    async with unix_serve(echo_handler, path, compression=None, max_size=None) as server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-echo":
        asyncio.run(serve_echo(sys.argv[2]))
        raise SystemExit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    a = ap.parse_args()
    result = asyncio.run(main(a.seconds))
    print(render(result))
    if a.json:
        print(json.dumps(result, indent=2))
