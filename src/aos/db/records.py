"""Content (command outputs kept whole), the runtime log and usage."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from aos_sdk.errors import (
    NotFound,
)

from ..redact import scrub_bytes
from .base import (
    _LOG_SQL,
    StoreBase,
    _gone,
    _translate,
)

__all__ = ["RecordStore"]


class RecordStore(StoreBase):
    """Content, the runtime log and usage."""

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
            if self._log_conn is None or _gone(self._log_conn):
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
            "SELECT id, ts, actor, op, args, outcome, error, result, duration_ms, kernel_id FROM runtime_log"
            f" WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
            params,
        )

    async def record_usage(self, row: dict[str, Any]) -> None:
        await self._exec(
            "INSERT INTO usage (agent_id, session_id, source, actor, model, prompt_tokens, completion_tokens, cost,"
            " latency_ms) VALUES (%(agent_id)s, %(session_id)s, %(source)s, %(actor)s, %(model)s, %(prompt_tokens)s,"
            " %(completion_tokens)s, %(cost)s, %(latency_ms)s)",
            row,
        )

    async def usage_report(
        self,
        *,
        group_by: str,
        agent_id: str | None,
        session_id: str | None,
        since_days: int,
        payer_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Tokens, cost and calls, from assistant facts (dispatch steps) plus compute calls.
        ``payer_id``: only what that agent pays for (a dispatch's ``payer``, else its agent)."""
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
        if payer_id is not None:
            filters.append("payer = %s")
            params.append(payer_id)
        sql = (
            "WITH calls AS ("
            " SELECT h.created_at AS ts, s.agent_id, h.session_id, a.name AS agent, h.session_id AS session,"
            "  coalesce(m.u->>'model', '?') AS model,"
            "  coalesce((m.u->>'prompt_tokens')::int, 0) AS prompt_tokens,"
            "  coalesce((m.u->>'completion_tokens')::int, 0) AS completion_tokens,"
            "  (m.u->>'cost')::float8 AS cost, coalesce(m.u->>'payer', s.agent_id) AS payer"
            " FROM history h JOIN sessions s ON s.id = h.session_id JOIN agents a ON a.id = s.agent_id"
            # meta is json (read whole, written once): parsed once per row here, not per key.
            " CROSS JOIN LATERAL (SELECT h.meta::jsonb -> 'usage' AS u) m"
            " WHERE h.kind = 'message' AND h.role = 'assistant' AND m.u IS NOT NULL"
            " UNION ALL"
            " SELECT u.ts, u.agent_id, u.session_id, a.name, u.session_id, u.model, u.prompt_tokens,"
            "  u.completion_tokens, u.cost, u.agent_id"
            " FROM usage u LEFT JOIN agents a ON a.id = u.agent_id)"
            f" SELECT {key} AS key, count(*) AS calls, sum(prompt_tokens)::bigint AS prompt_tokens,"
            " sum(completion_tokens)::bigint AS completion_tokens, sum(cost) AS cost"
            f" FROM calls WHERE {' AND '.join(filters)} GROUP BY 1 ORDER BY 1"
        )
        return await self._all(sql, params)
