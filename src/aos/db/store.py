"""PostgreSQL storage: the only package that imports psycopg.

:class:`Store` is the whole of it: its life cycle (pool, writer connections, migrations),
agents and sessions here; history in :mod:`.history`; leases, dispatches and approvals in
:mod:`.leases`; content, the runtime log and usage in :mod:`.records`; what they share in
:mod:`.base`. Most writes are one statement in autocommit mode; appends waiting together are
committed together (group commit); a dispatch starts and ends in one transaction each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from aos_sdk.errors import (
    Archived,
    Conflict,
    InternalError,
    NotFound,
    Unavailable,
)

from .base import (
    _AGENT_COLS,
    _SESSION_COLS,
    INBOUND,
    SCHEMA_VERSION,
    Pool,
    _connect,
    _PendingAppend,
    _translate,
    migrations,
    new_id,
    redact_dsn,
)
from .history import HistoryStore
from .leases import LeaseStore
from .records import RecordStore

__all__ = ["INBOUND", "SCHEMA_VERSION", "Store", "migrations", "new_id", "redact_dsn"]


class Store(HistoryStore, LeaseStore, RecordStore):
    """Typed access to the AOS tables over a connection pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn
        self._log_conn: psycopg.AsyncConnection[Any] | None = None
        self._appends: list[_PendingAppend] = []
        self._append_wake = asyncio.Event()
        self._writers: list[asyncio.Task[None]] = []
        #: Bumped when the server restarted: writers reconnect before their next batch.
        self._generation = 0

    # -- life cycle ----------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, dsn: str, *, min_size: int = 2, max_size: int = 16, writers: int = 2
    ) -> AsyncIterator[Store]:
        """Open a pool and ``writers`` append connections on ``dsn``.

        The database must exist (see :meth:`ensure_database`).
        """
        pool = Pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            name="aos",
        )
        with _translate():
            await pool.open(wait=True, timeout=30)
        store = cls(pool, dsn)
        try:
            for n in range(writers):
                conn = await _connect(dsn)
                store._writers.append(
                    asyncio.create_task(store._append_writer(conn), name=f"append-writer-{n}")
                )
            yield store
        finally:
            for task in store._writers:
                task.cancel()
            for task in store._writers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for pending in store._appends:
                if not pending.future.done():
                    pending.future.set_exception(Unavailable("the store is closing"))
            if store._log_conn is not None:
                await store._log_conn.close()
            await pool.close()

    async def drop_stale_connections(self) -> None:
        """After the server restarted: discard every connection to the old one (pooled, the
        append writers', the runtime log's), so no request fails on one."""
        self._generation += 1
        if self._log_conn is not None:
            await self._log_conn.close()
            self._log_conn = None
        with _translate():
            await self.pool.check()

    @staticmethod
    async def ensure_database(admin_dsn: str, dbname: str, *, template: str | None = None) -> bool:
        """Create database ``dbname`` (optionally from ``template``) unless it exists."""
        with _translate():
            async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
                cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
                if await cur.fetchone():
                    return False
                sql = f'CREATE DATABASE "{dbname}"'
                if template:
                    sql += f' TEMPLATE "{template}"'
                with contextlib.suppress(pgerr.DuplicateDatabase):
                    await conn.execute(sql)
                return True

    async def migrate(self) -> list[int]:
        """Apply pending migrations under an advisory lock; returns the versions applied."""
        applied: list[int] = []
        with _translate():
            async with self.pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_lock(7236001)")
                try:
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version ("
                        " version integer PRIMARY KEY, name text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    cur = await conn.execute("SELECT version FROM schema_version")
                    done = {r["version"] for r in await cur.fetchall()}
                    for version, name, sql in migrations():
                        if version in done:
                            continue
                        async with conn.transaction():
                            await conn.execute(sql)
                            await conn.execute(
                                "INSERT INTO schema_version (version, name) VALUES (%s, %s)", (version, name)
                            )
                        applied.append(version)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(7236001)")
        return applied

    async def durability(self) -> dict[str, str]:
        """The server's ``fsync`` and ``synchronous_commit`` settings."""
        with _translate():
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')"
                )
                return {r["name"]: r["setting"] for r in await cur.fetchall()}

    async def server_version(self) -> str:
        """``SHOW server_version``."""
        return str(await self._scalar("SHOW server_version"))

    async def counts(self) -> dict[str, int]:
        """How many agents, sessions and facts are stored."""
        row = await self._one(
            "SELECT (SELECT count(*) FROM agents WHERE status = 'active') AS agents,"
            " (SELECT count(*) FROM sessions WHERE status = 'active') AS sessions,"
            " (SELECT coalesce(sum(last_seq), 0) FROM sessions) AS facts"
        )
        assert row is not None
        return {k: int(v) for k, v in row.items()}

    # -- agents --------------------------------------------------------------------------------

    async def create_agent(
        self,
        *,
        name: str,
        display_name: str | None,
        model: str | None,
        instructions: str,
        workspace: str | None,
        settings: dict[str, Any],
        placement: str | None = None,
    ) -> dict[str, Any]:
        try:
            row = await self._one(
                "INSERT INTO agents (id, name, display_name, model, instructions, workspace, settings, placement)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_AGENT_COLS}",
                (
                    new_id("ag"),
                    name,
                    display_name,
                    model,
                    instructions,
                    workspace,
                    Jsonb(settings),
                    placement,
                ),
            )
        except InternalError as exc:
            if isinstance(exc.__cause__, pgerr.UniqueViolation):
                archived = await self._scalar(
                    "SELECT status = 'archived' FROM agents WHERE name = %s", (name,)
                )
                if archived:
                    raise Conflict(
                        f"an archived agent is named {name!r}: `aos agent restore {name}` brings it back"
                        " (syscall agent.restore), or choose another name",
                        name=name,
                        archived=True,
                    ) from exc
                raise Conflict(f"an agent named {name!r} already exists", name=name) from exc
            raise
        assert row is not None
        return row

    async def get_agent(self, ref: str) -> dict[str, Any]:
        """An agent by id or by name."""
        row = await self._one(f"SELECT {_AGENT_COLS} FROM agents WHERE id = %s OR name = %s", (ref, ref))
        if row is None:
            raise NotFound(f"no agent {ref!r}", agent=ref)
        return row

    async def list_agents(self, *, include_archived: bool) -> list[dict[str, Any]]:
        where = "" if include_archived else "WHERE status = 'active'"
        return await self._all(f"SELECT {_AGENT_COLS} FROM agents {where} ORDER BY created_at, id")

    async def update_agent(
        self, agent_id: str, changes: dict[str, Any], revision: int | None
    ) -> dict[str, Any]:
        sets = []
        params: list[Any] = []
        for col, value in changes.items():
            sets.append(f"{col} = %s")
            params.append(Jsonb(value) if col == "settings" else value)
        sets.append("revision = revision + 1")
        sets.append("updated_at = now()")
        sql = f"UPDATE agents SET {', '.join(sets)} WHERE id = %s AND status = 'active'"
        params.append(agent_id)
        if revision is not None:
            sql += " AND revision = %s"
            params.append(revision)
        row = await self._one(sql + f" RETURNING {_AGENT_COLS}", params)
        if row is None:
            cur = await self.get_agent(agent_id)
            if cur["status"] != "active":
                raise Archived(f"agent {cur['name']!r} is archived", agent=agent_id)
            raise Conflict(
                f"agent {cur['name']!r} is at revision {cur['revision']}, not {revision}",
                revision=cur["revision"],
            )
        return row

    async def archive_agent(self, agent_id: str) -> dict[str, Any]:
        with _translate():
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    f"UPDATE agents SET status = 'archived', revision = revision + 1, updated_at = now()"
                    f" WHERE id = %s RETURNING {_AGENT_COLS}",
                    (agent_id,),
                )
                row = await cur.fetchone()
                await conn.execute(
                    "UPDATE sessions SET status = 'archived', revision = revision + 1, updated_at = now()"
                    " WHERE agent_id = %s AND status = 'active'",
                    (agent_id,),
                )
        if row is None:
            raise NotFound(f"no agent {agent_id!r}", agent=agent_id)
        return row  # type: ignore[no-any-return]

    async def restore_agent(self, agent_id: str) -> dict[str, Any]:
        """An archived agent active again (its sessions stay archived: history is kept as it was)."""
        row = await self._one(
            f"UPDATE agents SET status = 'active', revision = revision + 1, updated_at = now()"
            f" WHERE id = %s RETURNING {_AGENT_COLS}",
            (agent_id,),
        )
        if row is None:
            raise NotFound(f"no agent {agent_id!r}", agent=agent_id)
        return row

    # -- sessions ------------------------------------------------------------------------------

    async def create_session(
        self, *, agent_id: str, title: str | None, settings: dict[str, Any]
    ) -> dict[str, Any]:
        row = await self._one(
            f"INSERT INTO sessions (id, agent_id, title, settings) VALUES (%s, %s, %s, %s)"
            f" RETURNING {_SESSION_COLS}",
            (new_id("se"), agent_id, title, Jsonb(settings)),
        )
        assert row is not None
        return row

    async def list_sessions(
        self, *, agent_id: str | None, include_archived: bool, limit: int, before: str | None
    ) -> list[dict[str, Any]]:
        where = []
        params: list[Any] = []
        if agent_id is not None:
            where.append("agent_id = %s")
            params.append(agent_id)
        if not include_archived:
            where.append("status = 'active'")
        if before is not None:
            where.append("id < %s")
            params.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(limit)
        return await self._all(
            f"SELECT {_SESSION_COLS} FROM sessions {clause} ORDER BY id DESC LIMIT %s", params
        )

    async def update_session_settings(self, session_id: str, settings: dict[str, Any]) -> dict[str, Any]:
        row = await self._one(
            f"UPDATE sessions SET settings = %s, revision = revision + 1, updated_at = now() WHERE id = %s"
            f" RETURNING {_SESSION_COLS}",
            (Jsonb(settings), session_id),
        )
        if row is None:
            raise NotFound(f"no session {session_id!r}", session=session_id)
        return row

    async def archive_session(self, session_id: str) -> dict[str, Any]:
        row = await self._one(
            f"UPDATE sessions SET status = 'archived', revision = revision + 1, updated_at = now()"
            f" WHERE id = %s RETURNING {_SESSION_COLS}",
            (session_id,),
        )
        if row is None:
            raise NotFound(f"no session {session_id!r}", session=session_id)
        return row

    async def fork_session(self, session_id: str, upto_seq: int, title: str | None) -> dict[str, Any]:
        """A new session of the same agent whose history is a copy of facts 1..upto_seq."""
        with _translate():
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    f"SELECT {_SESSION_COLS} FROM sessions WHERE id = %s FOR SHARE", (session_id,)
                )
                src = await cur.fetchone()
                if src is None:
                    raise NotFound(f"no session {session_id!r}", session=session_id)
                if upto_seq > src["last_seq"]:
                    raise Conflict(
                        f"session {session_id} has {src['last_seq']} facts; cannot fork at {upto_seq}",
                        last_seq=src["last_seq"],
                    )
                new = new_id("se")
                cur = await conn.execute(
                    f"INSERT INTO sessions (id, agent_id, title, settings, parent_id, forked_at_seq)"
                    f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_SESSION_COLS}",
                    (
                        new,
                        src["agent_id"],
                        title or src["title"],
                        Jsonb(src["settings"]),
                        session_id,
                        upto_seq,
                    ),
                )
                row = await cur.fetchone()
                # Rows go in seq order so the fence trigger sees a dense sequence.
                await conn.execute(
                    "INSERT INTO history (session_id, seq, epoch, kind, role, body, meta, idempotency_key,"
                    " created_at)"
                    " SELECT %s, seq, 0, kind, role, body, meta, idempotency_key, created_at"
                    " FROM history WHERE session_id = %s AND seq <= %s ORDER BY seq",
                    (new, session_id, upto_seq),
                )
                cur = await conn.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = %s", (new,))
                row = await cur.fetchone()
        assert row is not None
        return row  # type: ignore[no-any-return]
