"""What the store's parts share: connections, error translation, ids, columns and SQL.

psycopg errors are translated here, at the boundary, into ``aos_sdk.errors`` classes, keyed by
SQLSTATE. :class:`StoreBase` holds the pool and the small query helpers every part uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import select
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Json, set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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

__all__ = ["INBOUND", "SCHEMA_VERSION", "StoreBase", "migrations", "new_id", "redact_dsn"]

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


#: How long a request waits for a pooled connection: enough for any queue of requests; past it
#: the database is down (or unreachable), and the request is answered ``unavailable``.
POOL_WAIT_S = 10.0
#: How long while the database is known to be away (see :class:`Pool`).
DOWN_WAIT_S = 1.0


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
        if isinstance(exc, PoolTimeout):
            raise Unavailable(
                "the database is unavailable: no connection to it (is PostgreSQL running and reachable?)"
            ) from exc
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
        Json(row["body"]),
        None if row["meta"] is None else Json(row["meta"]),
        row["idempotency_key"],
    )


class _Refused(Exception):
    """A transaction found a condition that must roll it back (not an SQL error)."""


@dataclass(slots=True)
class _PendingAppend:
    row: dict[str, Any]
    future: asyncio.Future[tuple[int, int, Any, bool]]


def _gone(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server closed ``conn`` while it sat idle (a restart, a failover): the goodbye
    it sent is read now, without waiting, so no request is sent on a dead connection only to
    fail. One select() of nothing on a live one: microseconds."""
    if conn.closed or conn.broken:
        return True
    # An idle connection of ours (no LISTEN, nothing in flight) gets nothing from the server but
    # its last words before it closes: anything to read says the connection is gone.
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable) or conn.pgconn.status != psycopg.pq.ConnStatus.OK


class Pool(AsyncConnectionPool[Any]):
    """The connection pool, aware of the database going away and coming back.

    A connection the server closed while it was idle (a restart, a failover) is never handed
    out: it is replaced. A request waits up to :data:`POOL_WAIT_S` for a connection; once the
    database is found away (a stale connection, a wait that ran out), only :data:`DOWN_WAIT_S`,
    until a new connection is made: requests are answered ``unavailable`` at once, not after
    seconds each.
    """

    def __init__(self, dsn: str, **kwargs: Any) -> None:
        self._aos_dsn = dsn
        self._aos_kwargs: dict[str, Any] = dict(kwargs.get("kwargs") or {})
        super().__init__(
            dsn, check=self._aos_check, configure=self._aos_configure, timeout=POOL_WAIT_S, **kwargs
        )

    async def _aos_check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if _gone(conn):
            self.timeout = DOWN_WAIT_S
            await conn.close()  # closed, the pool discards it (open, it would hand it out again)
            raise psycopg.OperationalError("the server closed this connection")

    async def _aos_configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await _in_utc(conn)
        self.timeout = POOL_WAIT_S  # a new connection: the database is here

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        try:
            conn: psycopg.AsyncConnection[Any] = await super().getconn(timeout)
            return conn
        except PoolTimeout:
            if not await self._aos_revive():
                self.timeout = DOWN_WAIT_S
                raise
        conn = await super().getconn(POOL_WAIT_S)
        return conn

    async def _aos_revive(self) -> bool:
        """The database may be back while the pool sits out its reconnection back-off (which
        grows with the outage): see for ourselves, and if it is back, have the pool connect now."""
        try:
            probe = await psycopg.AsyncConnection.connect(
                self._aos_dsn, connect_timeout=2, **self._aos_kwargs
            )
        except psycopg.Error:
            return False
        await probe.close()
        self.timeout = POOL_WAIT_S
        low, high = self.min_size, self.max_size
        await self.resize(low + 1, max(high, low + 1))  # grows by one connection, made at once
        await self.resize(low, high)
        return True


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    with _translate():
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
        await _in_utc(conn)
        return conn


async def _in_utc(conn: psycopg.AsyncConnection[Any]) -> None:
    """Times come back in UTC whatever the server's zone, so every path writes them alike."""
    await conn.execute("SET TIME ZONE 'UTC'")


# A fact as the JSON text history.list sends (Fact's shape, times as pydantic writes them), built
# by PostgreSQL: the kernel passes it through without parsing or re-encoding anything. Spelt out
# by concatenation rather than json_build_object: body and meta are json (migration 0005), so
# they go in as the text they are, and nothing builds an object only to print it.
_FACT_JSON = (
    "'{\"session_id\":' || to_json(session_id)::text || ',\"seq\":' || seq"
    " || ',\"epoch\":' || epoch || ',\"kind\":' || to_json(kind)::text"
    " || ',\"role\":' || coalesce(to_json(role)::text, 'null') || ',\"body\":' || body::text"
    " || ',\"meta\":' || coalesce(meta::text, 'null')"
    " || ',\"idempotency_key\":' || to_json(idempotency_key)::text"
    " || ',\"created_at\":\"' || to_char(created_at AT TIME ZONE 'UTC', CASE WHEN"
    " date_part('microseconds', created_at)::bigint %% 1000000 = 0 THEN 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"
    ' ELSE \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\' END) || \'"}\''
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
    "created_at, updated_at, placement"
)
_SESSION_COLS = (
    "id, agent_id, title, status, phase, settings, parent_id, forked_at_seq, lease_owner, lease_epoch, "
    "lease_until, last_seq, revision, created_at, updated_at"
)
_DISPATCH_COLS = (
    "id, session_id, agent_id, epoch, owner, status, model, steps, error, input_seq, started_at, ended_at,"
    " kernel_id, recovered_by"
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
    " SELECT x.session_id, NULL, x.epoch, x.kind, x.role, coalesce(x.body, 'null'::json), x.meta,"
    " x.idempotency_key"
    " FROM json_to_recordset(%s) AS x(i int, session_id text, epoch bigint, kind text, role text,"
    " body json, meta json, idempotency_key text)"
    " ORDER BY x.i"
    " RETURNING session_id, idempotency_key, seq, epoch, created_at"
)
_LOG_SQL = (
    "INSERT INTO runtime_log (ts, actor, op, args, outcome, error, result, duration_ms, kernel_id)"
    " SELECT to_timestamp(x.ts), x.actor, x.op, x.args, x.outcome, x.error, x.result, x.duration_ms,"
    " x.kernel_id FROM jsonb_to_recordset(%s) AS x(ts float8, actor text, op text, args jsonb, outcome text,"
    " error jsonb, result jsonb, duration_ms real, kernel_id text)"
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


class StoreBase:
    """The pool, and the query helpers and session lookup every part of the store uses."""

    pool: AsyncConnectionPool[Any]
    dsn: str
    #: The runtime log's own connection (see :mod:`.records`).
    _log_conn: psycopg.AsyncConnection[Any] | None
    #: Appends waiting for a writer connection, and what wakes the writers (see :mod:`.history`).
    _appends: list[_PendingAppend]
    _append_wake: asyncio.Event
    #: Bumped when the server restarted: writers reconnect before their next batch.
    _generation: int

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

    async def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        with _translate():
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                rows: list[dict[str, Any]] = await cur.fetchall()
                return rows

    async def get_session(self, session_id: str) -> dict[str, Any]:
        row = await self._one(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = %s", (session_id,))
        if row is None:
            raise NotFound(f"no session {session_id!r}", session=session_id)
        return row
