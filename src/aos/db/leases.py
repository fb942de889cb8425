"""Leases, dispatches and approvals: who may write a session, and the record of its runs."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from aos_sdk.errors import (
    Archived,
    Conflict,
    NotFound,
    SessionBusy,
)

from ..loop.journal import SteeredLate
from .base import (
    _APPEND_SQL,
    _APPROVAL_COLS,
    _CLAIM_SQL,
    _DISPATCH_COLS,
    _FACT_COLS,
    _RELEASE_SQL,
    _SESSION_COLS,
    INBOUND,
    StoreBase,
    _append_params,
    _Refused,
    _translate,
)

__all__ = ["LeaseStore"]


#: A message steered into the dispatch after the seq its last context read (``end_dispatch``).
_STEERED_SQL = (
    "SELECT 1 FROM history h WHERE h.session_id = %s AND h.seq > %s AND h.kind = 'message'"
    " AND h.role = 'user' AND h.meta->>'dispatch_id' = %s AND h.meta->>'steer' = 'true' LIMIT 1"
)
#: The lease given back unless such a message came: one statement, as without the look.
_RELEASE_UNLESS_STEERED_SQL = (
    _RELEASE_SQL.removesuffix(" RETURNING id")
    + " AND NOT EXISTS ("
    + _STEERED_SQL.removesuffix(" LIMIT 1")
    + ") RETURNING id"
)


class _AlreadyStarted(Exception):
    """The queued row a dispatch would start is no longer waiting."""


class LeaseStore(StoreBase):
    """Session leases, dispatch rows (a dispatch's start and end in one transaction each), approvals."""

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
        queued: bool = False,
    ) -> tuple[dict[str, Any], int, Any]:
        """Take the lease, append the input fact with its epoch and create the dispatch row, in one
        transaction (one commit); returns ``(session, seq, created_at)`` of the fact.

        ``fact`` has ``kind``, ``role``, ``body``, ``meta`` and ``idempotency_key``. ``queued``: the
        dispatch starts a row of the dispatch queue (its id), which is marked started in the
        same transaction.

        Raises:
            NotFound, Archived, SessionBusy (naming the holder); anything the fence refuses.
            Conflict: a dispatch of that id was started already (a queued row or a request id,
            started by this kernel or another); nothing was written.
        """
        row: dict[str, Any] | None = None
        kernel_id = owner.partition("/")[0]
        async with self.pool.connection() as conn:
            with _translate():
                try:
                    async with conn.transaction():
                        cur = await conn.execute(_CLAIM_SQL, (owner, ttl_s, session_id))
                        leased = await cur.fetchone()
                        if leased is not None:
                            epoch = int(leased["lease_epoch"])
                            if queued:
                                cur = await conn.execute(
                                    "UPDATE dispatch_queue SET state = 'started', started_by = %s,"
                                    " ended_at = now() WHERE id = %s AND state = 'queued' RETURNING id",
                                    (kernel_id, dispatch_id),
                                )
                                if await cur.fetchone() is None:
                                    raise _AlreadyStarted
                            cur = await conn.execute(
                                _APPEND_SQL,
                                _append_params({**fact, "session_id": session_id, "epoch": epoch}),
                            )
                            row = await cur.fetchone()
                            assert row is not None
                            await conn.execute(
                                "INSERT INTO dispatches (id, session_id, agent_id, epoch, owner, model, input_seq)"
                                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                (dispatch_id, session_id, agent_id, epoch, owner, model, row["seq"]),
                            )
                except (_AlreadyStarted, psycopg.errors.UniqueViolation) as exc:
                    raise Conflict(
                        f"dispatch {dispatch_id} was started already", dispatch=dispatch_id, started=True
                    ) from exc
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
        unread_after: int | None = None,
    ) -> list[tuple[int, Any]] | None:
        """Append a dispatch's last facts, close its row and give the lease back, in one
        transaction (one commit); returns each fact's ``(seq, created_at)``.

        ``unread_after``: the seq the unit's last context read up to. A message steered into this
        dispatch after it (steering holds the session's row while it writes one, and writes it
        only while this dispatch holds the lease, so it is either seen here or not written)
        makes the transaction roll back and raise :class:`~aos.loop.journal.SteeredLate`. The
        look is part of the lease's release: no statement more.

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
                if unread_after is None:
                    cur = await conn.execute(_RELEASE_SQL, (session_id, owner, epoch))
                else:  # the session's row is ours (the appends' fence updated it): no steer lands now
                    cur = await conn.execute(
                        _RELEASE_UNLESS_STEERED_SQL,
                        (session_id, owner, epoch, session_id, unread_after, dispatch_id),
                    )
                if await cur.fetchone() is None:
                    if unread_after is not None:
                        steered = await conn.execute(_STEERED_SQL, (session_id, unread_after, dispatch_id))
                        if await steered.fetchone() is not None:
                            raise SteeredLate
                    raise _Refused
        except (psycopg.Error, _Refused):
            return None
        return out

    async def append_if_leased(
        self, session_id: str, owner: str, fact: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Append an inbound fact while ``owner`` holds the session's lease, the session's row
        locked meanwhile (so the lease holder's end, which takes that row too, comes wholly before
        or after); returns ``{seq, epoch, created_at}``, or None when ``owner`` holds it no more."""
        async with self.pool.connection() as conn:
            with _translate():
                async with conn.transaction():
                    cur = await conn.execute(
                        "SELECT lease_owner = %s AND lease_until > now() AS held FROM sessions"
                        " WHERE id = %s FOR UPDATE",
                        (owner, session_id),
                    )
                    lease = await cur.fetchone()
                    if lease is None or not lease["held"]:
                        return None
                    cur = await conn.execute(
                        _APPEND_SQL, _append_params({**fact, "session_id": session_id, "epoch": INBOUND})
                    )
                    row: dict[str, Any] | None = await cur.fetchone()
                    return row

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

    async def leased_sessions(
        self, session_id: str | None = None, *, with_open_dispatch: bool = False
    ) -> list[dict[str, Any]]:
        """Sessions whose lease is held (all, this one, or those with an open dispatch row: an
        indexed look, where all is a scan), with whether it has expired and whether the kernel
        that holds it lives (``kernel_alive``: its heartbeat is within its ttl; null: an owner
        that is no registered kernel, from before kernels registered)."""
        cols = ", ".join(f"s.{c.strip()}" for c in _SESSION_COLS.split(","))
        sql = (
            f"SELECT {cols}, s.lease_until < now() AS expired,"
            " CASE WHEN k.id IS NULL THEN NULL"
            "  ELSE k.stopped_at IS NULL AND k.heartbeat_at > now() - make_interval(secs => k.ttl_s) END"
            "  AS kernel_alive"
            " FROM sessions s LEFT JOIN kernels k ON k.id = split_part(s.lease_owner, '/', 1)"
            " WHERE s.lease_owner IS NOT NULL"
        )
        if session_id is not None:
            return await self._all(sql + " AND s.id = %s", (session_id,))
        if with_open_dispatch:
            return await self._all(
                sql + " AND s.id IN (SELECT session_id FROM dispatches"
                " WHERE status IN ('running', 'waiting_approval'))"
            )
        return await self._all(sql)

    async def unleased_open_dispatches(self) -> list[dict[str, Any]]:
        """Dispatch rows still open (running, waiting for a person) whose session's lease is not
        theirs: free, or held by another dispatch. Nobody closed them."""
        return await self._all(
            "SELECT d.id, d.session_id FROM dispatches d JOIN sessions s ON s.id = d.session_id"
            " WHERE d.status IN ('running', 'waiting_approval')"
            " AND (s.lease_owner IS NULL"
            "  OR (s.lease_owner <> d.owner AND s.lease_owner IS DISTINCT FROM d.recovered_by))"
        )

    # -- kernels -------------------------------------------------------------------------------

    async def register_kernel(self, row: dict[str, Any]) -> list[str]:
        """A kernel starts: its row, with a first heartbeat. Earlier kernels of the same home on
        the same machine and PID namespace are over (this one holds the home's lock, so they
        cannot run): they are marked stopped at once, and their sessions taken over without
        waiting for their heartbeats to age. Returns their ids."""
        row = {"embedded_db": False, "name": f"{row['host']}:{row['home']}", **row}
        with _translate():
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "UPDATE kernels SET stopped_at = now() WHERE stopped_at IS NULL AND host = %(host)s"
                    " AND boot_id = %(boot_id)s AND home = %(home)s AND pid_ns IS NOT DISTINCT FROM %(pid_ns)s"
                    " RETURNING id",
                    row,
                )
                gone = [r["id"] for r in await cur.fetchall()]
                await conn.execute(
                    "INSERT INTO kernels (id, host, boot_id, pid, pid_ns, home, version, ttl_s, embedded_db, name)"
                    " VALUES (%(id)s, %(host)s, %(boot_id)s, %(pid)s, %(pid_ns)s, %(home)s, %(version)s,"
                    " %(ttl_s)s, %(embedded_db)s, %(name)s)",
                    row,
                )
        return gone

    async def kernel_heartbeat(self, kernel_id: str) -> list[str] | None:
        """Say this kernel lives; returns the names of the other kernels that live (None: its row
        says it stopped, or is gone)."""
        row = await self._one(
            "UPDATE kernels SET heartbeat_at = now() WHERE id = %s AND stopped_at IS NULL"
            " RETURNING ARRAY(SELECT coalesce(k.name, k.id) FROM kernels k WHERE k.id <> %s"
            "  AND k.stopped_at IS NULL AND k.heartbeat_at > now() - make_interval(secs => k.ttl_s)"
            "  ORDER BY 1) AS peers",
            (kernel_id, kernel_id),
        )
        return None if row is None else [str(n) for n in row["peers"]]

    async def kernel_names(self) -> list[str]:
        """The name of every kernel that ever registered on this database."""
        rows = await self._all("SELECT DISTINCT coalesce(name, host || ':' || home) AS name FROM kernels")
        return [str(r["name"]) for r in rows]

    async def kernel_stopped(self, kernel_id: str) -> None:
        await self._exec(
            "UPDATE kernels SET stopped_at = now() WHERE id = %s AND stopped_at IS NULL", (kernel_id,)
        )

    async def list_kernels(self, *, include_stopped_hours: float = 24) -> list[dict[str, Any]]:
        """Kernels that live, and those that stopped or died in the last hours, newest first."""
        return await self._all(
            "SELECT id, host, boot_id, pid, pid_ns, home, version, ttl_s, started_at, heartbeat_at, stopped_at,"
            " embedded_db, coalesce(name, host || ':' || home) AS name,"
            " CASE WHEN stopped_at IS NOT NULL THEN 'stopped'"
            "  WHEN heartbeat_at > now() - make_interval(secs => ttl_s) THEN 'alive' ELSE 'dead' END AS state,"
            " extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_s"
            " FROM kernels WHERE stopped_at IS NULL"
            "  OR stopped_at > now() - make_interval(secs => %s) ORDER BY started_at DESC",
            (include_stopped_hours * 3600,),
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
        recovered_by: str | None = None,
    ) -> None:
        sets: list[str] = []
        params: list[Any] = []
        for col, val in (
            ("status", status),
            ("steps", steps),
            ("epoch", epoch),
            ("recovered_by", recovered_by),
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

    # -- the dispatch queue (migration 0010) ------------------------------------------------------

    async def enqueue_dispatch(
        self,
        *,
        dispatch_id: str,
        session_id: str,
        agent_id: str,
        fact: dict[str, Any],
        kernel_id: str,
        request_id: str | None,
    ) -> tuple[dict[str, Any], bool]:
        """Queue a dispatch: its ``message.queued`` fact (inbound) and its row, in one commit.
        Returns ``(row, created)``; ``created`` is False when a dispatch or queued row of that id
        exists already (the same request again): nothing is written, and ``row`` says where it is
        (``state``: queued, started or dropped, with ``seq``)."""
        existing = await self.find_dispatch_request(dispatch_id)
        if existing is not None:
            return existing, False
        try:
            async with self.pool.connection() as conn:
                with _translate():
                    async with conn.transaction():
                        cur = await conn.execute(
                            _APPEND_SQL, _append_params({**fact, "session_id": session_id, "epoch": INBOUND})
                        )
                        stored = await cur.fetchone()
                        assert stored is not None
                        cur = await conn.execute(
                            "INSERT INTO dispatch_queue (id, session_id, agent_id, seq, request_id, queued_by)"
                            " SELECT %s, %s, %s, %s, %s, %s"
                            " WHERE NOT EXISTS (SELECT 1 FROM dispatches WHERE id = %s)"
                            " RETURNING id, session_id, seq, state, created_at",
                            (
                                dispatch_id,
                                session_id,
                                agent_id,
                                stored["seq"],
                                request_id,
                                kernel_id,
                                dispatch_id,
                            ),
                        )
                        row = await cur.fetchone()
                        if row is None:
                            raise _AlreadyStarted
                        return {
                            **row,
                            "epoch": stored["epoch"],
                            "fact_created_at": stored["created_at"],
                        }, True
        except (_AlreadyStarted, psycopg.errors.UniqueViolation):
            found = await self.find_dispatch_request(dispatch_id)
            if found is None:
                raise
            return found, False

    async def find_dispatch_request(self, dispatch_id: str) -> dict[str, Any] | None:
        """The dispatch of this id, or its queued row: ``{id, session_id, seq, state, epoch,
        reason}`` (state ``started`` for a dispatch; ``reason``: why a row was dropped), or None."""
        return await self._one(
            "SELECT d.id, d.session_id, d.input_seq AS seq, 'started' AS state, d.epoch, NULL AS reason"
            " FROM dispatches d WHERE d.id = %s"
            " UNION ALL SELECT q.id, q.session_id, q.seq, q.state, h.epoch, q.reason FROM dispatch_queue q"
            " JOIN history h ON h.session_id = q.session_id AND h.seq = q.seq"
            " WHERE q.id = %s AND NOT EXISTS (SELECT 1 FROM dispatches WHERE id = %s) LIMIT 1",
            (dispatch_id, dispatch_id, dispatch_id),
        )

    async def claim_queued(
        self, *, kernel_id: str, kernel_name: str, ttl_s: float, session_id: str | None = None, limit: int = 8
    ) -> list[dict[str, Any]]:
        """Claim the oldest queued dispatch of free sessions whose agent may run on this kernel
        (placement null, ``any`` or its name): of one session, or of up to ``limit``. A session
        another kernel is claiming right now is skipped (FOR UPDATE SKIP LOCKED), and a claim
        lasts ``ttl_s``: a kernel that dies holding one lets it go. Returns the rows with their
        fact's ``body`` and ``meta``."""
        one = "AND q.session_id = %(sid)s" if session_id is not None else ""
        return await self._all(
            "WITH heads AS ("
            " SELECT DISTINCT ON (q.session_id) q.id, q.session_id FROM dispatch_queue q"
            f" WHERE q.state = 'queued' {one} ORDER BY q.session_id, q.seq),"
            " free AS ("
            " SELECT s.id FROM sessions s JOIN agents a ON a.id = s.agent_id"
            " WHERE s.id IN (SELECT session_id FROM heads)"
            "  AND (s.lease_owner IS NULL OR s.lease_until < now())"
            "  AND (a.placement IS NULL OR a.placement IN ('any', %(name)s))"
            " LIMIT %(limit)s FOR UPDATE OF s SKIP LOCKED)"
            " UPDATE dispatch_queue q SET claimed_by = %(kernel)s,"
            "  claimed_until = now() + make_interval(secs => %(ttl)s)"
            " FROM heads h, free f, history m"
            " WHERE q.id = h.id AND f.id = h.session_id AND q.state = 'queued'"
            "  AND (q.claimed_until IS NULL OR q.claimed_until < now())"
            "  AND m.session_id = q.session_id AND m.seq = q.seq"
            " RETURNING q.id, q.session_id, q.agent_id, q.seq, q.request_id, m.body, m.meta",
            {"sid": session_id, "name": kernel_name, "limit": limit, "kernel": kernel_id, "ttl": ttl_s},
        )

    async def unclaim_queued(self, dispatch_id: str, kernel_id: str) -> None:
        """Let a claimed row go (it could not start now): any kernel may claim it again."""
        await self._exec(
            "UPDATE dispatch_queue SET claimed_by = NULL, claimed_until = NULL"
            " WHERE id = %s AND claimed_by = %s AND state = 'queued'",
            (dispatch_id, kernel_id),
        )

    async def drop_queued(self, dispatch_id: str, reason: str, fact: dict[str, Any]) -> bool:
        """Give a queued row up (it cannot start: its agent archived, a gate refused it), with its
        ``message.unqueued`` fact, in one commit (without it when its session is archived and takes
        no fact: the row, dropped all the same, keeps the reason); False if it was no longer
        waiting."""
        async with self.pool.connection() as conn:
            with _translate():
                async with conn.transaction():
                    cur = await conn.execute(
                        "UPDATE dispatch_queue SET state = 'dropped', reason = %s, ended_at = now()"
                        " WHERE id = %s AND state = 'queued' RETURNING session_id",
                        (reason, dispatch_id),
                    )
                    row = await cur.fetchone()
                    if row is None:
                        return False
                    try:
                        async with conn.transaction():  # a savepoint: the row is dropped anyway
                            await conn.execute(
                                _APPEND_SQL,
                                _append_params({**fact, "session_id": row["session_id"], "epoch": INBOUND}),
                            )
                    except psycopg.Error:
                        pass  # an archived session takes no fact; the row's reason says why
        return True

    async def queue_waiting(self) -> list[dict[str, Any]]:
        """Queued dispatches by the placement of their agent: how many wait, the oldest's age,
        and whether a live kernel may run them (``runnable``)."""
        return await self._all(
            "SELECT coalesce(a.placement, 'any') AS placement, count(*)::int AS waiting,"
            " extract(epoch FROM now() - min(q.created_at))::float8 AS oldest_s,"
            " EXISTS (SELECT 1 FROM kernels k WHERE k.stopped_at IS NULL"
            "  AND k.heartbeat_at > now() - make_interval(secs => k.ttl_s)"
            "  AND (a.placement IS NULL OR a.placement IN ('any', k.name))) AS runnable"
            " FROM dispatch_queue q JOIN agents a ON a.id = q.agent_id WHERE q.state = 'queued'"
            " GROUP BY 1, a.placement ORDER BY 1"
        )

    async def place_agent(self, agent_id: str, kernel_name: str) -> str:
        """Give an agent not placed yet this kernel as its home; returns its placement."""
        row = await self._one(
            "UPDATE agents SET placement = coalesce(placement, %s) WHERE id = %s RETURNING placement",
            (kernel_name, agent_id),
        )
        if row is None:
            raise NotFound(f"no agent {agent_id!r}", agent=agent_id)
        return str(row["placement"])

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
