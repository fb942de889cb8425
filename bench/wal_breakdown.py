"""What one invocation writes to PostgreSQL's WAL, record type by record type.

The invocation of ``peers_bench.py`` (user message → ``bash true`` → final answer, a fresh
session each time) through a real daemon with its default skills, driven over the kernel socket.
Over a block of invocations, ``pg_walinspect`` (shipped with PostgreSQL) sums the WAL between the
block's first and last LSN per resource manager and record type; the table shows each type's
records and bytes per invocation, and the commits.

To compare with another version of AOS, run the same script with that version's ``src`` and
``sdk/src`` first on ``PYTHONPATH`` (the daemon is started with ``python -m aos``)::

    uv run python bench/wal_breakdown.py [--invocations 100]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from _harness import aos_daemon, one_invocation, scripted_model
from aos.db.embedded import EmbeddedPostgres
from aos_sdk.syncclient import SyncClient


def measure(dsn: str, sock: Path, api_base: str, n: int) -> tuple[list[Any], list[Any]]:
    """WAL stats (by record type, and by relation) of ``n`` invocations through the daemon."""
    client = SyncClient(sock, timeout=60)
    agent = client.call(
        "agent.create",
        {
            "name": "bench",
            "model": "openai/scripted",
            "settings": {"model_params": {"api_base": api_base, "api_key": "x"}},
        },
    )

    def once() -> None:
        one_invocation(client, sock, agent["id"])

    for _ in range(5):
        once()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CHECKPOINT")  # full-page images after a checkpoint would be counted otherwise
        lsn0 = c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        for _ in range(n):
            once()
        lsn1 = c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        rows = c.execute(
            'SELECT "resource_manager/record_type", count, record_size, fpi_size, combined_size'
            " FROM pg_get_wal_stats(%s, %s, true) WHERE count > 0 ORDER BY combined_size DESC",
            (lsn0, lsn1),
        ).fetchall()
        # Which table or index each record touched (a record is counted once per relation).
        per_rel = c.execute(
            "SELECT coalesce(r.relname, b.relfilenode::text), count(*), sum(b.record_length)"
            " FROM (SELECT DISTINCT ON (start_lsn, relfilenode) start_lsn, relfilenode, record_length"
            "       FROM pg_get_wal_block_info(%s, %s)) b"
            " LEFT JOIN pg_class r ON r.relfilenode = b.relfilenode"
            " GROUP BY 1 ORDER BY 3 DESC",
            (lsn0, lsn1),
        ).fetchall()
    client.close()
    return rows, per_rel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--invocations", type=int, default=100)
    ap.add_argument("--top", type=int, default=14, help="record types shown (the rest are summed)")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="aos-wal-"))
    pg = EmbeddedPostgres(base / "pg", base / "pg.log")
    pg.start()
    try:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE aos")
        with psycopg.connect(pg.dsn("aos"), autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_walinspect")
        with (
            scripted_model("--react-loop", "true") as api_base,
            aos_daemon(base / "home", AOS_DB_URL=pg.dsn("aos")),
        ):
            rows, per_rel = measure(
                pg.dsn("aos"), base / "home" / "run" / "kernel.sock", api_base, args.invocations
            )
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)

    n = args.invocations
    total = sum(int(r[4]) for r in rows)
    commits = sum(int(r[1]) for r in rows if r[0] == "Transaction/COMMIT")
    print(f"\nWAL of one invocation ({n} invocations, after a checkpoint)\n")
    print(f"| {'record type':32} | {'records':>7} | {'bytes':>7} | {'share':>6} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    shown = rows[: args.top]
    for name, count, _rec, _fpi, combined in shown:
        print(f"| {name:32} | {count / n:7.1f} | {combined / n:7.0f} | {combined / total:6.1%} |")
    rest = rows[args.top :]
    if rest:
        rc, rb = sum(int(r[1]) for r in rest), sum(int(r[4]) for r in rest)
        print(f"| {'(the rest)':32} | {rc / n:7.1f} | {rb / n:7.0f} | {rb / total:6.1%} |")
    records = sum(int(r[1]) for r in rows)
    print(f"| {'total':32} | {records / n:7.1f} | {total / n:7.0f} | 100.0% |")
    print(f"\ncommits per invocation: {commits / n:.1f}")
    print("\n| table or index | records | bytes |")
    print("|---|---|---|")
    for name, count, size in per_rel[: args.top]:
        print(f"| {name} | {count / n:.1f} | {int(size) / n:.0f} |")


if __name__ == "__main__":
    main()
