"""PostgreSQL storage: the only module that imports psycopg.

Every write is one statement in autocommit mode. Appends are a single ``INSERT`` whose trigger
numbers, fences and counts each fact; appends waiting together are committed together (group
commit) on dedicated writer connections. psycopg errors are translated here, at the boundary,
into ``aos_sdk.errors`` classes, keyed by SQLSTATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from aos_sdk.errors import (
    AosError,
    Archived,
    Conflict,
    InternalError,
    NotFound,
    SessionBusy,
    StaleEpoch,
    Unavailable,
)

from ..redact import scrub_bytes

__all__ = ["Store", "new_id", "redact_dsn"]

set_json_dumps(orjson.dumps)
set_json_loads(orjson.loads)

_SQLSTATE: dict[str, type[AosError]] = {
    "AOS02": NotFound,
    "AOS03": Archived,
    "AOS04": StaleEpoch,
    "AOS05": Conflict,
    "AOS06": SessionBusy,
}


def new_id(prefix: str) -> str:
    """A short, time-ordered id: ``ag_18f3c2a9b41d2e6f0a1c``."""
    return f"{prefix}_{time.time_ns() // 1_000_000:011x}{secrets.token_hex(5)}"


def redact_dsn(dsn: str) -> str:
    """The connection string without its password (for status and logs)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable connection string)"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        state = exc.sqlstate or ""
        cls = _SQLSTATE.get(state)
        if cls is not None:
            msg = exc.diag.message_primary or str(exc)
            raise cls(msg) from exc
        if isinstance(exc, psycopg.OperationalError):
            raise Unavailable(f"the database is unavailable: {exc}") from exc
        raise InternalError(f"database error {state}: {exc.diag.message_primary or exc}") from exc


def _history_range(
    session_id: str, after_seq: int, upto_seq: int | None, kinds: Sequence[str] | None, limit: int
) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters (the LIMIT's last) of a page of a session's history."""
    where = ["session_id = %s", "seq > %s"]
    params: list[Any] = [session_id, after_seq]
    if upto_seq is not None:
        where.append("seq <= %s")
        params.append(upto_seq)
    if kinds:
        where.append("kind = ANY(%s)")
        params.append(list(kinds))
    params.append(limit)
    return " AND ".join(where), params


_MAX_BATCH = 256


def _append_params(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["session_id"],
        row["epoch"],
        row["kind"],
        row["role"],
        Jsonb(row["body"]),
        None if row["meta"] is None else Jsonb(row["meta"]),
        row["idempotency_key"],
    )


class _Refused(Exception):
    """A transaction found a condition that must roll it back (not an SQL error)."""


@dataclass(slots=True)
class _PendingAppend:
    row: dict[str, Any]
    future: asyncio.Future[tuple[int, int, Any, bool]]


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    with _translate():
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
        await _in_utc(conn)
        return conn


async def _in_utc(conn: psycopg.AsyncConnection[Any]) -> None:
    """Times come back in UTC whatever the server's zone, so every path writes them alike."""
    await conn.execute("SET TIME ZONE 'UTC'")


# A fact as the JSON text history.list sends (Fact's shape, times as pydantic writes them), built
# by PostgreSQL: the kernel passes it through without parsing or re-encoding anything.
_FACT_JSON = (
    "json_build_object('session_id', session_id, 'seq', seq, 'epoch', epoch, 'kind', kind,"
    " 'role', role, 'body', body, 'meta', meta, 'idempotency_key', idempotency_key,"
    " 'created_at', to_char(created_at AT TIME ZONE 'UTC', CASE WHEN date_part('microseconds',"
    ' created_at)::bigint %% 1000000 = 0 THEN \'YYYY-MM-DD"T"HH24:MI:SS"Z"\''
    ' ELSE \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\' END))::text'
)


_MIGRATION_RE = re.compile(r"^(\d{4})_(\w+)\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """The schema migrations shipped with AOS: ``(version, name, sql)`` in order."""
    out = []
    for entry in resources.files("aos.db.migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


SCHEMA_VERSION = max(v for v, _, _ in migrations())

_AGENT_COLS = (
    "id, name, display_name, model, instructions, workspace, settings, status, revision, "
    "created_at, updated_at"
)
_SESSION_COLS = (
    "id, agent_id, title, status, phase, settings, parent_id, forked_at_seq, lease_owner, lease_epoch, "
    "lease_until, last_seq, revision, created_at, updated_at"
)
_DISPATCH_COLS = (
    "id, session_id, agent_id, epoch, owner, status, model, steps, error, input_seq, started_at, ended_at"
)
#: The epoch of an inbound fact (see migration 0003): stamped with the current one, lease or not.
INBOUND = -1
_APPROVAL_COLS = (
    "id, session_id, dispatch_id, agent_id, call_id, command, cwd, reason, skill, status, resolved_by, note,"
    " created_at, resolved_at"
)
_FACT_COLS = "session_id, seq, epoch, kind, role, body, meta, idempotency_key, created_at"
# seq and epoch NULL: the fence trigger numbers the fact and stamps or checks the epoch.
_APPEND_SQL = (
    "INSERT INTO history (session_id, seq, epoch, kind, role, body, meta, idempotency_key)"
    " VALUES (%s, NULL, %s, %s, %s, %s, %s, %s) RETURNING seq, epoch, created_at"
)
# Group commit: every append waiting at the same moment goes in one statement (one commit).
# Rows keep their arrival order (i), so facts of one session are numbered in that order.
_APPEND_BATCH_SQL = (
    "INSERT INTO history (session_id, seq, epoch, kind, role, body, meta, idempotency_key)"
    " SELECT x.session_id, NULL, x.epoch, x.kind, x.role, coalesce(x.body, 'null'::jsonb), x.meta,"
    " x.idempotency_key"
    " FROM jsonb_to_recordset(%s) AS x(i int, session_id text, epoch bigint, kind text, role text,"
    " body jsonb, meta jsonb, idempotency_key text)"
    " ORDER BY x.i"
    " RETURNING session_id, idempotency_key, seq, epoch, created_at"
)
_LOG_SQL = (
    "INSERT INTO runtime_log (ts, actor, op, args, outcome, error, result, duration_ms)"
    " SELECT to_timestamp(x.ts), x.actor, x.op, x.args, x.outcome, x.error, x.result, x.duration_ms"
    " FROM jsonb_to_recordset(%s) AS x(ts float8, actor text, op text, args jsonb, outcome text,"
    " error jsonb, result jsonb, duration_ms real)"
)
_CLAIM_SQL = (
    f"UPDATE sessions SET lease_owner = %s, lease_epoch = lease_epoch + 1,"
    f" lease_until = now() + make_interval(secs => %s), phase = 'dispatched', updated_at = now()"
    f" WHERE id = %s AND status = 'active' AND (lease_owner IS NULL OR lease_until < now())"
    f" RETURNING {_SESSION_COLS}"
)
_RELEASE_SQL = (
    "UPDATE sessions SET lease_owner = NULL, lease_until = NULL, phase = 'idle', updated_at = now()"
    " WHERE id = %s AND lease_owner = %s AND lease_epoch = %s RETURNING id"
)
_DUPLICATE_SQL = "SELECT seq, epoch, created_at FROM history WHERE session_id = %s AND idempotency_key = %s"


class Store:
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
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=_in_utc,
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

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with _translate():
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                row = await cur.fetchone()
                return None if row is None else next(iter(row.values()))

    async def _exec(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        with _translate():
            async with self.pool.connection() as conn:
                await conn.execute(sql, params)

    async def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> dict[str, Any] | None:
        with _translate():
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                row: dict[str, Any] | None = await cur.fetchone()
                return row

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with _translate():
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                rows: list[dict[str, Any]] = await cur.fetchall()
                return rows

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
    ) -> dict[str, Any]:
        try:
            row = await self._one(
                f"INSERT INTO agents (id, name, display_name, model, instructions, workspace, settings)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_AGENT_COLS}",
                (new_id("ag"), name, display_name, model, instructions, workspace, Jsonb(settings)),
            )
        except InternalError as exc:
            if isinstance(exc.__cause__, pgerr.UniqueViolation):
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

    async def get_session(self, session_id: str) -> dict[str, Any]:
        row = await self._one(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = %s", (session_id,))
        if row is None:
            raise NotFound(f"no session {session_id!r}", session=session_id)
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

    # -- history -------------------------------------------------------------------------------

    async def append(
        self,
        session_id: str,
        *,
        epoch: int | None,
        kind: str,
        role: str | None,
        body: Any,
        meta: dict[str, Any] | None,
        idempotency_key: str,
    ) -> tuple[int, int, Any, bool]:
        """Append one fact durably; returns ``(seq, epoch, created_at, duplicate)``.

        Appends waiting at the same moment are committed together (group commit); each caller
        still gets its own answer. A retried ``idempotency_key`` returns the stored fact with
        ``duplicate=True``. ``epoch=None`` writes without a lease (administrators): refused
        while a lease is live. ``epoch=INBOUND`` writes an inbound fact (a message from outside
        the running dispatch): accepted whether or not a lease is held.

        Raises:
            NotFound, Archived, StaleEpoch, SessionBusy.
        """
        row = {
            "session_id": session_id,
            "epoch": epoch,
            "kind": kind,
            "role": role,
            "body": body,
            "meta": meta,
            "idempotency_key": idempotency_key,
        }
        fut: asyncio.Future[tuple[int, int, Any, bool]] = asyncio.get_running_loop().create_future()
        self._appends.append(_PendingAppend(row, fut))
        self._append_wake.set()
        return await fut

    async def _append_writer(self, conn: psycopg.AsyncConnection[Any]) -> None:
        generation = self._generation
        try:
            while True:
                await self._append_wake.wait()
                batch, self._appends = self._appends[:_MAX_BATCH], self._appends[_MAX_BATCH:]
                if not self._appends:
                    self._append_wake.clear()
                if not batch:
                    continue
                if conn.closed or conn.broken or generation != self._generation:
                    await conn.close()
                    generation = self._generation
                    try:
                        conn = await _connect(self.dsn)
                    except AosError as exc:  # the server is down: fail these, keep the writer
                        for p in batch:
                            if not p.future.done():
                                p.future.set_exception(exc)
                        continue
                await self._write_batch(conn, batch)
        finally:
            await conn.close()

    async def _write_batch(self, conn: psycopg.AsyncConnection[Any], batch: list[_PendingAppend]) -> None:
        if len(batch) > 1:
            rows = [{"i": i, **p.row} for i, p in enumerate(batch)]
            try:
                cur = await conn.execute(_APPEND_BATCH_SQL, (Jsonb(rows),))
                out = {(r["session_id"], r["idempotency_key"]): r for r in await cur.fetchall()}
            except psycopg.Error:
                out = {}  # something in the batch was refused: answer each append on its own
            if len(out) == len(batch):
                for p in batch:
                    r = out[(p.row["session_id"], p.row["idempotency_key"])]
                    if not p.future.done():
                        p.future.set_result((int(r["seq"]), int(r["epoch"]), r["created_at"], False))
                return
        for p in batch:
            try:
                result = await self._append_one(conn, p.row)
            except BaseException as exc:
                if not p.future.done():
                    p.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not p.future.done():
                    p.future.set_result(result)

    @staticmethod
    async def _append_one(
        conn: psycopg.AsyncConnection[Any], row: dict[str, Any]
    ) -> tuple[int, int, Any, bool]:
        params = _append_params(row)
        with _translate():
            try:
                cur = await conn.execute(_APPEND_SQL, params)
                found = await cur.fetchone()
                duplicate = False
            except psycopg.Error as exc:
                # 23505 (unique key) or AOS07 (refused, but already stored): a retry of a
                # fact whose first attempt was accepted. Answer with that fact.
                if exc.sqlstate not in ("23505", "AOS07"):
                    raise
                cur = await conn.execute(_DUPLICATE_SQL, (row["session_id"], row["idempotency_key"]))
                found = await cur.fetchone()
                duplicate = True
        assert found is not None
        return int(found["seq"]), int(found["epoch"]), found["created_at"], duplicate

    async def list_history(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        limit: int = 1000,
        kinds: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        where, params = _history_range(session_id, after_seq, upto_seq, kinds, limit)
        return await self._all(
            f"SELECT {_FACT_COLS} FROM history WHERE {where} ORDER BY seq LIMIT %s", params
        )

    async def list_history_json(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        limit: int = 1000,
        kinds: Sequence[str] | None = None,
    ) -> tuple[str, int | None]:
        """A page like :meth:`list_history`'s as one JSON array text, made by the server; and the
        seq to continue after (None: nothing follows the page).

        PostgreSQL builds each fact's JSON and joins them, so the page reaches the wire without
        a Python object per fact.
        """
        where, params = _history_range(session_id, after_seq, upto_seq, kinds, limit + 1)
        sql = (
            "SELECT coalesce(string_agg(j, ',' ORDER BY seq) FILTER (WHERE rn <= %s), ''),"
            " max(seq) FILTER (WHERE rn <= %s), count(*)"
            f" FROM (SELECT seq, {_FACT_JSON} AS j, row_number() OVER (ORDER BY seq) AS rn"
            f" FROM history WHERE {where} ORDER BY seq LIMIT %s) page"
        )
        with _translate():
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=tuple_row)
                await cur.execute(sql, [limit, limit, *params])
                row = await cur.fetchone()
        assert row is not None
        text, last, count = row
        return "[" + text + "]", (int(last) if count > limit and last is not None else None)

    async def get_fact(self, session_id: str, seq: int) -> dict[str, Any]:
        row = await self._one(
            f"SELECT {_FACT_COLS} FROM history WHERE session_id = %s AND seq = %s", (session_id, seq)
        )
        if row is None:
            raise NotFound(f"session {session_id} has no fact {seq}", session=session_id, seq=seq)
        return row

    # -- content -------------------------------------------------------------------------------

    async def put_content(
        self, *, agent_id: str, session_id: str | None, data: bytes, mime: str
    ) -> dict[str, Any]:
        data = scrub_bytes(data)  # secrets never reach the content table either
        cid = hashlib.sha256(data).hexdigest()
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        await self._exec(
            "INSERT INTO content (id, agent_id, session_id, data, size, line_count, mime)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (agent_id, id) DO NOTHING",
            (cid, agent_id, session_id, data, len(data), lines, mime),
        )
        return {"content_id": cid, "size": len(data), "line_count": lines, "mime": mime}

    async def get_content(self, content_id: str, agent_id: str | None) -> dict[str, Any]:
        """Content by id; with ``agent_id`` only that agent's (content is scoped to its owner)."""
        if agent_id is None:
            row = await self._one(
                "SELECT id, agent_id, data, size, line_count, mime FROM content WHERE id = %s LIMIT 1",
                (content_id,),
            )
        else:
            row = await self._one(
                "SELECT id, agent_id, data, size, line_count, mime FROM content"
                " WHERE id = %s AND agent_id = %s",
                (content_id, agent_id),
            )
        if row is None:
            raise NotFound(f"no content {content_id!r}", content=content_id)
        return row

    # -- runtime log ---------------------------------------------------------------------------

    async def write_log(self, entries: Sequence[dict[str, Any]]) -> None:
        """Insert runtime-log entries in one statement.

        On a connection of its own with ``synchronous_commit=off``: the log is advisory, so a
        command does not wait for a second fsync; a crash may lose the last few entries.
        """
        if not entries:
            return
        with _translate():
            if self._log_conn is None or self._log_conn.closed or self._log_conn.broken:
                self._log_conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, options="-c synchronous_commit=off"
                )
            await self._log_conn.execute(_LOG_SQL, (Jsonb(list(entries)),))

    async def list_log(
        self, *, op: str | None, actor: str | None, after_id: int, limit: int, outcome: str | None
    ) -> list[dict[str, Any]]:
        where = ["id > %s"]
        params: list[Any] = [after_id]
        if op is not None:
            if op.endswith(".*"):
                where.append("op LIKE %s")
                params.append(op[:-1] + "%")
            else:
                where.append("op = %s")
                params.append(op)
        if actor is not None:
            where.append("actor = %s")
            params.append(actor)
        if outcome is not None:
            where.append("outcome = %s")
            params.append(outcome)
        params.append(limit)
        return await self._all(
            "SELECT id, ts, actor, op, args, outcome, error, result, duration_ms FROM runtime_log"
            f" WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
            params,
        )

    # -- leases --------------------------------------------------------------------------------

    async def claim_lease(self, session_id: str, owner: str, ttl_s: float) -> dict[str, Any]:
        """Take the session's lease with a new epoch (compare-and-set); returns the session.

        Raises:
            NotFound, Archived, SessionBusy (naming the holder).
        """
        row = await self._one(_CLAIM_SQL, (owner, ttl_s, session_id))
        if row is not None:
            return row
        await self._not_claimed(session_id)
        raise AssertionError("unreachable")

    async def _not_claimed(self, session_id: str) -> None:
        """Raise why the session's lease could not be taken."""
        cur = await self.get_session(session_id)
        if cur["status"] != "active":
            raise Archived(f"session {session_id} is archived", session=session_id)
        raise SessionBusy(
            f"session {session_id} is busy: {cur['lease_owner']} holds its lease",
            session=session_id,
            holder=cur["lease_owner"],
        )

    async def start_dispatch(
        self,
        *,
        session_id: str,
        owner: str,
        ttl_s: float,
        fact: dict[str, Any],
        dispatch_id: str,
        agent_id: str,
        model: str,
    ) -> tuple[dict[str, Any], int, Any]:
        """Take the lease, append the input fact with its epoch and create the dispatch row, in one
        transaction (one commit); returns ``(session, seq, created_at)`` of the fact.

        ``fact`` has ``kind``, ``role``, ``body``, ``meta`` and ``idempotency_key``.

        Raises:
            NotFound, Archived, SessionBusy (naming the holder); anything the fence refuses.
        """
        row: dict[str, Any] | None = None
        async with self.pool.connection() as conn:
            with _translate():
                async with conn.transaction():
                    cur = await conn.execute(_CLAIM_SQL, (owner, ttl_s, session_id))
                    leased = await cur.fetchone()
                    if leased is not None:
                        epoch = int(leased["lease_epoch"])
                        cur = await conn.execute(
                            _APPEND_SQL, _append_params({**fact, "session_id": session_id, "epoch": epoch})
                        )
                        row = await cur.fetchone()
                        assert row is not None
                        await conn.execute(
                            "INSERT INTO dispatches (id, session_id, agent_id, epoch, owner, model, input_seq)"
                            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            (dispatch_id, session_id, agent_id, epoch, owner, model, row["seq"]),
                        )
        if leased is None or row is None:
            await self._not_claimed(session_id)
            raise AssertionError("unreachable")
        return leased, int(row["seq"]), row["created_at"]

    async def end_dispatch(
        self,
        *,
        session_id: str,
        owner: str,
        epoch: int,
        facts: list[dict[str, Any]],
        dispatch_id: str,
        status: str,
        steps: int,
    ) -> list[tuple[int, Any]] | None:
        """Append a dispatch's last facts, close its row and give the lease back, in one
        transaction (one commit); returns each fact's ``(seq, created_at)``.

        None when the transaction was refused (a lost lease, a retried key): nothing was
        written, and the caller takes the one-at-a-time path, which tells those cases apart.
        """
        try:
            async with self.pool.connection() as conn, conn.transaction():
                out = []
                for fact in facts:
                    cur = await conn.execute(
                        _APPEND_SQL, _append_params({**fact, "session_id": session_id, "epoch": epoch})
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    out.append((int(row["seq"]), row["created_at"]))
                await conn.execute(
                    "UPDATE dispatches SET status = %s, steps = %s, ended_at = now() WHERE id = %s",
                    (status, steps, dispatch_id),
                )
                cur = await conn.execute(_RELEASE_SQL, (session_id, owner, epoch))
                if await cur.fetchone() is None:
                    raise _Refused
        except (psycopg.Error, _Refused):
            return None
        return out

    async def take_over_lease(
        self, session_id: str, old_owner: str, owner: str, ttl_s: float
    ) -> dict[str, Any] | None:
        """Take a lease from a dead owner (new epoch); None if it changed hands meanwhile."""
        return await self._one(
            f"UPDATE sessions SET lease_owner = %s, lease_epoch = lease_epoch + 1,"
            f" lease_until = now() + make_interval(secs => %s), updated_at = now()"
            f" WHERE id = %s AND lease_owner = %s RETURNING {_SESSION_COLS}",
            (owner, ttl_s, session_id, old_owner),
        )

    async def renew_lease(self, session_id: str, owner: str, epoch: int, ttl_s: float) -> bool:
        """Extend a lease we hold; False if it is no longer ours."""
        row = await self._one(
            "UPDATE sessions SET lease_until = now() + make_interval(secs => %s)"
            " WHERE id = %s AND lease_owner = %s AND lease_epoch = %s RETURNING id",
            (ttl_s, session_id, owner, epoch),
        )
        return row is not None

    async def set_phase(self, session_id: str, epoch: int, phase: str) -> None:
        await self._exec(
            "UPDATE sessions SET phase = %s, updated_at = now() WHERE id = %s AND lease_epoch = %s",
            (phase, session_id, epoch),
        )

    async def release_lease(self, session_id: str, owner: str, epoch: int) -> bool:
        """Give the lease back (phase idle); False if it was no longer ours."""
        row = await self._one(_RELEASE_SQL, (session_id, owner, epoch))
        return row is not None

    async def leased_sessions(self) -> list[dict[str, Any]]:
        """Sessions whose lease is held, with whether it has expired."""
        return await self._all(
            f"SELECT {_SESSION_COLS}, lease_until < now() AS expired FROM sessions WHERE lease_owner IS NOT NULL"
        )

    # -- dispatches ----------------------------------------------------------------------------

    async def create_dispatch(
        self,
        *,
        dispatch_id: str,
        session_id: str,
        agent_id: str,
        epoch: int,
        owner: str,
        model: str,
        input_seq: int | None = None,
    ) -> None:
        await self._exec(
            "INSERT INTO dispatches (id, session_id, agent_id, epoch, owner, model, input_seq)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (dispatch_id, session_id, agent_id, epoch, owner, model, input_seq),
        )

    async def update_dispatch(
        self,
        dispatch_id: str,
        *,
        status: str | None = None,
        steps: int | None = None,
        error: dict[str, Any] | None = None,
        ended: bool = False,
        epoch: int | None = None,
        owner: str | None = None,
    ) -> None:
        sets: list[str] = []
        params: list[Any] = []
        for col, val in (
            ("status", status),
            ("steps", steps),
            ("epoch", epoch),
            ("owner", owner),
        ):
            if val is not None:
                sets.append(f"{col} = %s")
                params.append(val)
        if error is not None:
            sets.append("error = %s")
            params.append(Jsonb(error))
        if ended:
            sets.append("ended_at = now()")
        if not sets:
            return
        params.append(dispatch_id)
        await self._exec(f"UPDATE dispatches SET {', '.join(sets)} WHERE id = %s", params)

    async def get_dispatch(self, dispatch_id: str) -> dict[str, Any]:
        row = await self._one(f"SELECT {_DISPATCH_COLS} FROM dispatches WHERE id = %s", (dispatch_id,))
        if row is None:
            raise NotFound(f"no dispatch {dispatch_id!r}", dispatch=dispatch_id)
        return row

    async def last_dispatch(self, session_id: str) -> dict[str, Any] | None:
        return await self._one(
            f"SELECT {_DISPATCH_COLS} FROM dispatches WHERE session_id = %s ORDER BY started_at DESC, id DESC LIMIT 1",
            (session_id,),
        )

    async def dispatch_facts(self, session_id: str, dispatch_id: str) -> list[dict[str, Any]]:
        """The facts a dispatch wrote (meta.dispatch_id), in seq order."""
        return await self._all(
            f"SELECT {_FACT_COLS} FROM history WHERE session_id = %s AND meta->>'dispatch_id' = %s ORDER BY seq",
            (session_id, dispatch_id),
        )

    # -- approvals -----------------------------------------------------------------------------

    async def create_approval(self, row: dict[str, Any]) -> dict[str, Any]:
        out = await self._one(
            "INSERT INTO approvals (id, session_id, dispatch_id, agent_id, call_id, command, cwd, reason, skill)"
            f" VALUES (%(id)s, %(session_id)s, %(dispatch_id)s, %(agent_id)s, %(call_id)s, %(command)s, %(cwd)s,"
            f" %(reason)s, %(skill)s) RETURNING {_APPROVAL_COLS}",
            row,
        )
        assert out is not None
        return out

    async def get_approval(self, approval_id: str) -> dict[str, Any]:
        row = await self._one(f"SELECT {_APPROVAL_COLS} FROM approvals WHERE id = %s", (approval_id,))
        if row is None:
            raise NotFound(f"no approval {approval_id!r}", approval=approval_id)
        return row

    async def resolve_approval(
        self, approval_id: str, status: str, by: str, note: str | None
    ) -> dict[str, Any]:
        """Resolve a pending approval; a second resolution is a conflict."""
        row = await self._one(
            "UPDATE approvals SET status = %s, resolved_by = %s, note = %s, resolved_at = now()"
            f" WHERE id = %s AND status = 'pending' RETURNING {_APPROVAL_COLS}",
            (status, by, note, approval_id),
        )
        if row is None:
            cur = await self.get_approval(approval_id)
            raise Conflict(f"approval {approval_id} is already {cur['status']}", status=cur["status"])
        return row

    async def list_approvals(
        self, *, session_id: str | None, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            where.append("session_id = %s")
            params.append(session_id)
        if status is not None:
            where.append("status = %s")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(limit)
        return await self._all(
            f"SELECT {_APPROVAL_COLS} FROM approvals {clause} ORDER BY created_at, id LIMIT %s", params
        )

    async def approvals_for(self, dispatch_id: str) -> list[dict[str, Any]]:
        """Every approval asked in a dispatch, oldest first."""
        return await self._all(
            f"SELECT {_APPROVAL_COLS} FROM approvals WHERE dispatch_id = %s ORDER BY created_at",
            (dispatch_id,),
        )

    async def approval_for_call(self, dispatch_id: str, call_id: str) -> dict[str, Any] | None:
        """The newest approval asked for this tool call (any status but cancelled)."""
        return await self._one(
            f"SELECT {_APPROVAL_COLS} FROM approvals WHERE dispatch_id = %s AND call_id = %s"
            " AND status <> 'cancelled' ORDER BY created_at DESC LIMIT 1",
            (dispatch_id, call_id),
        )

    async def pending_approval_for(self, dispatch_id: str) -> dict[str, Any] | None:
        return await self._one(
            f"SELECT {_APPROVAL_COLS} FROM approvals WHERE dispatch_id = %s AND status = 'pending'"
            " ORDER BY created_at LIMIT 1",
            (dispatch_id,),
        )

    # -- usage ---------------------------------------------------------------------------------

    async def record_usage(self, row: dict[str, Any]) -> None:
        await self._exec(
            "INSERT INTO usage (agent_id, session_id, source, actor, model, prompt_tokens, completion_tokens, cost,"
            " latency_ms) VALUES (%(agent_id)s, %(session_id)s, %(source)s, %(actor)s, %(model)s, %(prompt_tokens)s,"
            " %(completion_tokens)s, %(cost)s, %(latency_ms)s)",
            row,
        )

    async def usage_report(
        self, *, group_by: str, agent_id: str | None, session_id: str | None, since_days: int
    ) -> list[dict[str, Any]]:
        """Tokens, cost and calls, from assistant facts (dispatch steps) plus compute calls."""
        key = {
            "day": "to_char(date_trunc('day', ts), 'YYYY-MM-DD')",
            "agent": "coalesce(agent, '-')",
            "session": "coalesce(session, '-')",
            "model": "model",
        }[group_by]
        filters: list[str] = ["ts > now() - make_interval(days => %s)"]
        params: list[Any] = [since_days]
        if agent_id is not None:
            filters.append("agent_id = %s")
            params.append(agent_id)
        if session_id is not None:
            filters.append("session_id = %s")
            params.append(session_id)
        sql = (
            "WITH calls AS ("
            " SELECT h.created_at AS ts, s.agent_id, h.session_id, a.name AS agent, h.session_id AS session,"
            "  coalesce(h.meta->'usage'->>'model', '?') AS model,"
            "  coalesce((h.meta->'usage'->>'prompt_tokens')::int, 0) AS prompt_tokens,"
            "  coalesce((h.meta->'usage'->>'completion_tokens')::int, 0) AS completion_tokens,"
            "  (h.meta->'usage'->>'cost')::float8 AS cost"
            " FROM history h JOIN sessions s ON s.id = h.session_id JOIN agents a ON a.id = s.agent_id"
            " WHERE h.kind = 'message' AND h.role = 'assistant' AND h.meta ? 'usage'"
            " UNION ALL"
            " SELECT u.ts, u.agent_id, u.session_id, a.name, u.session_id, u.model, u.prompt_tokens,"
            "  u.completion_tokens, u.cost"
            " FROM usage u LEFT JOIN agents a ON a.id = u.agent_id)"
            f" SELECT {key} AS key, count(*) AS calls, sum(prompt_tokens)::bigint AS prompt_tokens,"
            " sum(completion_tokens)::bigint AS completion_tokens, sum(cost) AS cost"
            f" FROM calls WHERE {' AND '.join(filters)} GROUP BY 1 ORDER BY 1"
        )
        return await self._all(sql, params)
