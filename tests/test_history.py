"""SessionHistory guarantees, enforced by PostgreSQL itself: append-only, dense, fenced, idempotent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import psycopg
import pytest

from aos_sdk.connection import open_connection
from aos_sdk.errors import NotFound, StaleEpoch


async def new_session(kernel: Any) -> str:
    async with open_connection(kernel.paths.kernel_sock) as c:
        await c.call("agent.create", {"name": "alice"})
        sid = (await c.call("session.create", {"agent": "alice"}))["id"]
        for i in range(3):
            await c.call("session.append", {"session": sid, "body": i})
    return str(sid)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE history SET body = '\"changed\"' WHERE session_id = %s",
        "DELETE FROM history WHERE session_id = %s",
        "TRUNCATE history CASCADE",
    ],
)
async def test_history_rows_cannot_be_changed_or_removed(kernel: Any, sql: str) -> None:
    sid = await new_session(kernel)
    with psycopg.connect(kernel.db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.DatabaseError, match="history is append-only") as info:
            conn.execute(sql, (sid,) if "%s" in sql else None)  # type: ignore[arg-type]
        assert info.value.sqlstate == "AOS01"
        bodies = [
            r[0] for r in conn.execute("SELECT body FROM history WHERE session_id = %s ORDER BY seq", (sid,))
        ]
    assert bodies == [0, 1, 2]


async def test_direct_inserts_are_fenced_and_dense(kernel: Any) -> None:
    sid = await new_session(kernel)
    insert = (
        "INSERT INTO history (session_id, seq, epoch, kind, body, idempotency_key)"
        " VALUES (%s, %s, %s, 'note', '1', %s)"
    )
    with psycopg.connect(kernel.db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.DatabaseError, match="not the next seq") as gap:
            conn.execute(insert, (sid, 5, 0, "a"))
        assert gap.value.sqlstate == "AOS05"
        with pytest.raises(psycopg.DatabaseError, match="not the next seq"):
            conn.execute(insert, (sid, 3, 0, "b"))  # a duplicate seq
        conn.execute("UPDATE sessions SET lease_epoch = 2 WHERE id = %s", (sid,))
        with pytest.raises(psycopg.DatabaseError, match="stale lease epoch 1") as stale:
            conn.execute(insert, (sid, 4, 1, "c"))
        assert stale.value.sqlstate == "AOS04"
        conn.execute(insert, (sid, 4, 2, "d"))  # current epoch, next seq: accepted
        assert conn.execute("SELECT last_seq FROM sessions WHERE id = %s", (sid,)).fetchone() == (4,)


async def test_stale_epoch_append_is_rejected(kernel: Any) -> None:
    sid = await new_session(kernel)
    async with kernel.store.pool.connection() as conn:
        await conn.execute("UPDATE sessions SET lease_epoch = 7 WHERE id = %s", (sid,))
    with pytest.raises(StaleEpoch, match="stale lease epoch 6"):
        await kernel.kernel.append(
            sid, epoch=6, kind="note", role=None, body="late", meta=None, idempotency_key=uuid.uuid4().hex
        )
    r = await kernel.kernel.append(
        sid, epoch=7, kind="note", role=None, body="current", meta=None, idempotency_key=uuid.uuid4().hex
    )
    assert r.seq == 4


async def test_twenty_concurrent_clients_leave_seq_dense(kernel: Any) -> None:
    sid = await new_session(kernel)
    per_client = 25

    async def client(n: int) -> list[int]:
        seqs = []
        async with open_connection(kernel.paths.kernel_sock) as c:
            for i in range(per_client):
                r = await c.call("session.append", {"session": sid, "body": {"client": n, "i": i}})
                seqs.append(r["seq"])
        return seqs

    results = await asyncio.gather(*(client(n) for n in range(20)))
    acked = sorted(s for seqs in results for s in seqs)
    assert acked == list(range(4, 4 + 20 * per_client))  # every ack distinct, no gaps
    with psycopg.connect(kernel.db_url) as conn:
        rows = conn.execute(
            "SELECT seq, body FROM history WHERE session_id = %s ORDER BY seq", (sid,)
        ).fetchall()
        last = conn.execute("SELECT last_seq FROM sessions WHERE id = %s", (sid,)).fetchone()
    assert [r[0] for r in rows] == list(range(1, 4 + 20 * per_client))
    assert last == (3 + 20 * per_client,)
    # Each client's own appends are in its order.
    for n in range(20):
        mine = [r[1]["i"] for r in rows if isinstance(r[1], dict) and r[1]["client"] == n]
        assert mine == list(range(per_client))


async def test_concurrent_retries_of_one_key_store_one_fact(kernel: Any) -> None:
    sid = await new_session(kernel)

    async def retry() -> dict[str, Any]:
        async with open_connection(kernel.paths.kernel_sock) as c:
            r: dict[str, Any] = await c.call(
                "session.append", {"session": sid, "body": "in doubt", "idempotency_key": "retry-1"}
            )
            return r

    results = await asyncio.gather(*(retry() for _ in range(20)))
    assert {r["seq"] for r in results} == {4}
    assert sum(not r["duplicate"] for r in results) == 1
    with psycopg.connect(kernel.db_url) as conn:
        n = conn.execute("SELECT count(*) FROM history WHERE session_id = %s", (sid,)).fetchone()
    assert n == (4,)


async def test_retry_of_a_stored_fact_is_answered_even_after_the_session_changed(kernel: Any) -> None:
    sid = await new_session(kernel)
    k = kernel.kernel
    first = await k.append(sid, epoch=None, kind="note", role=None, body="x", meta=None, idempotency_key="r1")
    async with kernel.store.pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET lease_owner = 'd2', lease_epoch = 5, lease_until = now() + interval '1 minute'"
            " WHERE id = %s",
            (sid,),
        )
    # A lease-less retry while another writer holds the lease, and a retry with an old epoch:
    # both were accepted the first time, so both get the stored fact back.
    again = await k.append(sid, epoch=None, kind="note", role=None, body="x", meta=None, idempotency_key="r1")
    stale = await k.append(sid, epoch=0, kind="note", role=None, body="x", meta=None, idempotency_key="r1")
    assert again.seq == stale.seq == first.seq and again.duplicate and stale.duplicate
    async with kernel.store.pool.connection() as conn:
        await conn.execute("UPDATE sessions SET status = 'archived' WHERE id = %s", (sid,))
    archived = await k.append(sid, epoch=5, kind="note", role=None, body="x", meta=None, idempotency_key="r1")
    assert archived.seq == first.seq and archived.duplicate
    with psycopg.connect(kernel.db_url) as conn:
        assert conn.execute("SELECT last_seq FROM sessions WHERE id = %s", (sid,)).fetchone() == (4,)


async def test_a_refused_append_in_a_group_commit_fails_alone(kernel: Any) -> None:
    k = kernel.kernel
    sids = []
    async with open_connection(kernel.paths.kernel_sock) as c:
        await c.call("agent.create", {"name": "bob"})
        for _ in range(4):
            sids.append((await c.call("session.create", {"agent": "bob"}))["id"])
        await c.call("session.archive", {"session": sids[0]})

    async def one(sid: str, i: int) -> Any:
        try:
            return await k.append(
                sid, epoch=None, kind="note", role=None, body=i, meta=None, idempotency_key=f"g{i}"
            )
        except Exception as exc:
            return exc

    # Submitted together, so the writers see them as one batch.
    results = await asyncio.gather(*(one(sids[i % 4], i) for i in range(40)))
    refused = [r for i, r in enumerate(results) if i % 4 == 0]
    accepted = [r for i, r in enumerate(results) if i % 4 != 0]
    assert all(type(r).__name__ == "Archived" for r in refused)
    assert all(not isinstance(r, Exception) for r in accepted)
    for sid in sids[1:]:
        seqs = sorted(r.seq for i, r in enumerate(results) if sids[i % 4] == sid)
        assert seqs == list(range(1, 11))


async def test_history_list_gives_facts_in_the_shape_of_history_get(kernel: Any) -> None:
    """history.list skips pydantic on its hot path: each fact must still be exactly a Fact."""
    from aos.kernel import models as m

    async with open_connection(kernel.paths.kernel_sock) as c:
        agent = await c.call("agent.create", {"name": "shape"})
        sid = (await c.call("session.create", {"agent": agent["id"]}))["id"]
        # PostgreSQL spells each fact's JSON itself: quotes, escapes, bare values and nulls too.
        bodies = [{"n": 0, "é": "ü"}, {"q": 'say "hi"\n\\ \t'}, "a bare string", [1, None, 2.5]]
        for i, body in enumerate(bodies):
            await c.call(
                "session.append",
                {
                    "session": sid,
                    "kind": "note",
                    "body": body,
                    "meta": {"m": [i]} if i % 2 else None,
                    "idempotency_key": f'key "{i}"',
                },
            )
        listed = (await c.call("history.list", {"session": sid}))["facts"]
        assert [f["seq"] for f in listed] == [1, 2, 3, 4]
        assert [f["body"] for f in listed] == bodies
        for f in listed:
            assert m.Fact.model_validate(f).model_dump(mode="json") == f
            assert await c.call("history.get", {"session": sid, "seq": f["seq"]}) == f


async def test_no_fact_is_stored_for_a_session_that_does_not_exist(kernel: Any) -> None:
    """history has no foreign key to sessions (each check cost a WAL record per fact): the fence
    trigger refuses a fact whose session it cannot find, by any path, raw SQL included."""
    await new_session(kernel)
    async with open_connection(kernel.paths.kernel_sock) as c:
        with pytest.raises(NotFound, match="se_nowhere"):
            await c.call("session.append", {"session": "se_nowhere", "body": "lost?"})
    with psycopg.connect(kernel.db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.DatabaseError, match="no session se_nowhere") as info:
            conn.execute(
                "INSERT INTO history (session_id, seq, epoch, kind, body, idempotency_key)"
                " VALUES ('se_nowhere', NULL, NULL, 'note', '1', 'k')"
            )
        assert info.value.sqlstate == "AOS02"
        orphans = conn.execute(
            "SELECT count(*) FROM history WHERE session_id NOT IN (SELECT id FROM sessions)"
        )
        assert orphans.fetchone() == (0,)


async def test_facts_written_before_the_json_migration_read_back_unchanged(pg: Any) -> None:
    """A database from before migration 0005 (jsonb history) upgrades in place: its facts are
    listed exactly as written, and new facts follow them."""
    from aos.db.base import migrations
    from aos.db.store import Store

    name = f"up{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, mname, sql in migrations():
            if version < 5:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_version VALUES (%s, %s)", (version, mname))
        conn.execute("INSERT INTO agents (id, name) VALUES ('ag_old', 'old')")
        conn.execute("INSERT INTO sessions (id, agent_id) VALUES ('se_old', 'ag_old')")
        conn.execute(
            "INSERT INTO history (session_id, seq, epoch, kind, role, body, meta, idempotency_key)"
            " VALUES ('se_old', NULL, NULL, 'message', 'user', %s, %s, 'k1')",
            ('{"text": "written under jsonb", "n": [1, 2]}', '{"usage": {"model": "m"}}'),
        )
    async with Store.open(pg.dsn(name), min_size=1, max_size=2) as store:
        assert 5 in await store.migrate()
        await store.append(
            "se_old",
            epoch=None,
            kind="note",
            role=None,
            body={"after": True},
            meta=None,
            idempotency_key="k2",
        )
        text, more = await store.list_history_json("se_old")
        assert more is None
        facts = orjson.loads(text)
        assert [(f["seq"], f["body"]) for f in facts] == [
            (1, {"text": "written under jsonb", "n": [1, 2]}),
            (2, {"after": True}),
        ]
        assert facts[0]["meta"] == {"usage": {"model": "m"}}
