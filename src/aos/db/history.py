"""SessionHistory: appends (group commit on writer connections) and reads."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Json

from aos_sdk.errors import (
    AosError,
    NotFound,
)

from .base import (
    _APPEND_BATCH_SQL,
    _APPEND_SQL,
    _DUPLICATE_SQL,
    _FACT_COLS,
    _FACT_JSON,
    _MAX_BATCH,
    StoreBase,
    _append_params,
    _connect,
    _gone,
    _history_range,
    _PendingAppend,
    _translate,
)

__all__ = ["HistoryStore"]


class HistoryStore(StoreBase):
    """Appending facts and reading them back."""

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
                if _gone(conn) or generation != self._generation:
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
                cur = await conn.execute(_APPEND_BATCH_SQL, (Json(rows),))
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
        # The page is cut first and its facts printed after, so the sort never carries their text.
        sql = (
            f"SELECT coalesce(string_agg({_FACT_JSON}, ',' ORDER BY seq) FILTER (WHERE rn <= %s), ''),"
            " max(seq) FILTER (WHERE rn <= %s), count(*)"
            " FROM (SELECT *, row_number() OVER (ORDER BY seq) AS rn"
            f" FROM history WHERE {where} ORDER BY seq LIMIT %s) history"
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
