"""PostgreSQL storage: the only module that imports psycopg.

Every write is one statement in autocommit mode (appends go through the ``aos_append`` SQL
function: one round trip, one commit). psycopg errors are translated here, at the boundary, into
``aos_sdk.errors`` classes, keyed by SQLSTATE.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
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
_FACT_COLS = "session_id, seq, epoch, kind, role, body, meta, idempotency_key, created_at"


class Store:
    """Typed access to the AOS tables over a connection pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn

    # -- life cycle ----------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, dsn: str, *, min_size: int = 2, max_size: int = 16) -> AsyncIterator[Store]:
        """Open a pool on ``dsn``; the database must exist (see :func:`ensure_database`)."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            name="aos",
        )
        with _translate():
            await pool.open(wait=True, timeout=30)
        try:
            yield cls(pool, dsn)
        finally:
            await pool.close()

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

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
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
        """Append one fact; returns ``(seq, epoch, created_at, duplicate)``.

        A retried ``idempotency_key`` returns the stored fact's seq with ``duplicate=True``.
        ``epoch=None`` writes without a lease (administrators): refused while a lease is live.

        Raises:
            NotFound, Archived, StaleEpoch, SessionBusy.
        """
        with _translate():
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT * FROM aos_append(%s, %s, %s, %s, %s, %s, %s)",
                    (
                        session_id,
                        epoch,
                        kind,
                        role,
                        Jsonb(body),
                        None if meta is None else Jsonb(meta),
                        idempotency_key,
                    ),
                )
                row = await cur.fetchone()
        assert row is not None
        return int(row["seq"]), int(row["epoch"]), row["created_at"], bool(row["duplicate"])

    async def list_history(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        limit: int = 1000,
        kinds: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        where = ["session_id = %s", "seq > %s"]
        params: list[Any] = [session_id, after_seq]
        if upto_seq is not None:
            where.append("seq <= %s")
            params.append(upto_seq)
        if kinds:
            where.append("kind = ANY(%s)")
            params.append(list(kinds))
        params.append(limit)
        return await self._all(
            f"SELECT {_FACT_COLS} FROM history WHERE {' AND '.join(where)} ORDER BY seq LIMIT %s", params
        )

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
        cid = hashlib.sha256(data).hexdigest()
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        await self._one(
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
        """Insert runtime-log entries in one batch (not waiting for fsync: the log is advisory)."""
        if not entries:
            return
        with _translate():
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO runtime_log (ts, actor, op, args, outcome, error, result, duration_ms)"
                        " VALUES (to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s)",
                        [
                            (
                                e["ts"],
                                e["actor"],
                                e["op"],
                                Jsonb(e.get("args")),
                                e["outcome"],
                                None if e.get("error") is None else Jsonb(e["error"]),
                                None if e.get("result") is None else Jsonb(e["result"]),
                                e.get("duration_ms"),
                            )
                            for e in entries
                        ],
                    )

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
