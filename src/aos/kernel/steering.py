"""Messages that arrive while a session's dispatch runs: steered into it, or queued after it.

``session.dispatch`` on a session whose dispatch is running does not refuse (unless asked to,
``if_busy: refuse``):

- **steer** (the default): the message is appended at once as a user ``message`` fact of the
  running dispatch (``meta.steer: true``). The agent reads it at its next step, with the other
  facts that step assembles. A model that gives its final answer while a steered message is
  being written, or before the step that would read it, is not let finish: its answer is kept
  as an ordinary assistant fact and the unit takes one more step, so a steered message is
  always answered by the dispatch it was sent to.
- **queue**: the message is appended as a ``message.queued`` fact naming the dispatch it will
  start (``meta.queued_for``), with a row in the dispatch queue (migration 0010), and that
  dispatch starts when the running one ends, one queued message after another. One that cannot
  start (its agent archived, a gate refuses it) gets a ``message.unqueued`` fact saying why, and
  is not tried again.

A message to steer into a dispatch that runs on another kernel is appended while that dispatch
holds the lease (the session's row locked meanwhile), and that kernel is told (``steer <session>
<seq>``); one that lands as that dispatch ends is found by its end's transaction
(:class:`~aos.loop.journal.SteeredLate`), which gives way to one more step.

The queue is shared by every kernel on the database. A message queued for a session whose
dispatch runs on another kernel waits behind it, and so does one for an agent placed on another
kernel (``meta.waiting_for`` names it). Whichever kernel
frees the session starts the next row: it claims it (``FOR UPDATE SKIP LOCKED`` on the session),
and the row becomes ``started`` in the transaction that creates its dispatch, so it starts once.
Kernels tell each other of a new row (``queued <session>`` on the peers channel) and each looks
for claimable rows every recovery scan, so a lost notice or a dead kernel delays a row by about a
second, never forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import AosError, Conflict, SessionBusy, Unavailable

from ..db.store import new_id
from ..logs import get_logger

if TYPE_CHECKING:
    from ..loop.react import ReActUnit
    from .dispatch import Dispatcher

__all__ = ["Elsewhere", "Steering"]


class Elsewhere(Exception):
    """The agent's placement is another kernel (named): its dispatch waits for that one."""

    def __init__(self, home: str) -> None:
        super().__init__(home)
        self.home = home


log = get_logger("aos.dispatch")


class Steering:
    """The steered and queued messages of one dispatcher's sessions."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        #: Session -> steered messages being written now.
        self._writing: dict[str, int] = {}
        #: Session -> the seq of its newest steered message.
        self._latest: dict[str, int] = {}
        #: Sessions that may have queued messages waiting (checked when their dispatch ends).
        self._queued: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def unread(self, unit: ReActUnit) -> bool:
        """Whether a steered message has reached the unit's session that its context has not
        assembled yet (or one is being written): then it may not end yet."""
        sid = unit.spec.session_id
        return self._writing.get(sid, 0) > 0 or self._latest.get(sid, 0) > unit.context.head

    async def steer(self, unit: ReActUnit, text: str, meta: dict[str, Any] | None) -> dict[str, Any] | None:
        """Append ``text`` to the running dispatch of ``unit``; the agent reads it next step.
        None when that dispatch gave its lease back meanwhile (the message then needs a
        dispatch of its own)."""
        spec = unit.spec
        sid = spec.session_id
        self._writing[sid] = self._writing.get(sid, 0) + 1
        try:
            out = await self._append_steer(sid, spec.owner, text, meta, spec.agent["id"])
        finally:
            self._writing[sid] -= 1
            if not self._writing[sid]:
                del self._writing[sid]
        if out is not None:
            self._latest[sid] = max(self._latest.get(sid, 0), out["seq"])
        return out

    async def steer_remote(
        self, session_id: str, owner: str, text: str, meta: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Steer ``text`` into a dispatch another kernel runs (lease ``owner``), and tell that
        kernel, so its unit reads it before it ends. None if that dispatch no longer holds the
        lease (it ended)."""
        if not owner.partition("/")[2].startswith("di_"):
            return None  # a recovery holds it, not a dispatch: nothing to steer into
        session = await self.d.store.get_session(session_id)
        out = await self._append_steer(session_id, owner, text, meta, session["agent_id"])
        if out is not None:
            self.d.kernel.peers.tell("steer", session_id, str(out["seq"]))
        return out

    async def _append_steer(
        self, session_id: str, owner: str, text: str, meta: dict[str, Any] | None, agent_id: str
    ) -> dict[str, Any] | None:
        """The steered message, stored only while ``owner``'s dispatch holds the lease, with the
        session's row locked: the dispatch's end (which takes that row too) comes wholly before
        it (then None) or after it, and then sees it (``LeaseStore.end_dispatch``)."""
        dispatch_id = owner.partition("/")[2]
        fact_meta = {**(meta or {}), "dispatch_id": dispatch_id, "steer": True}
        body, fact_meta = await self.d.kernel.prepare_fact(
            session_id, "message", "user", {"text": text}, fact_meta, agent_id
        )
        key = new_id("st")
        fact = {"kind": "message", "role": "user", "body": body, "meta": fact_meta, "idempotency_key": key}
        row = await self.d.store.append_if_leased(session_id, owner, fact)
        if row is None:
            return None
        seq, epoch = int(row["seq"]), int(row["epoch"])
        self.d.kernel.publish(
            session_id, seq, epoch, "message", "user", body, fact_meta, key, row["created_at"]
        )
        return {
            "dispatch_id": dispatch_id,
            "session_id": session_id,
            "epoch": epoch,
            "seq": seq,
            "delivery": "steered",
        }

    def heard_steer(self, session_id: str, seq: int) -> None:
        """Another kernel steered a message (``seq``) into this kernel's dispatch of the session."""
        if session_id in self.d.units:
            self._latest[session_id] = max(self._latest.get(session_id, 0), seq)

    async def enqueue(
        self,
        session_id: str,
        text: str,
        meta: dict[str, Any] | None,
        *,
        dispatch_id: str | None = None,
        request_id: str | None = None,
        waiting_for: str | None = None,
    ) -> dict[str, Any]:
        """Queue ``text`` to start a dispatch of its own once the session is free (and, with
        ``waiting_for``, on the kernel named so). The same ``dispatch_id`` queued twice (a request
        id sent again) is one row: the second answer says ``duplicate``."""
        session = await self.d.store.get_session(session_id)
        planned = dispatch_id or new_id("di")
        fact_meta = {**(meta or {}), "queued_for": planned}
        if waiting_for:
            fact_meta["waiting_for"] = waiting_for
        if request_id:
            fact_meta["request_id"] = request_id
        body, fact_meta = await self.d.kernel.prepare_fact(
            session_id, "message.queued", "user", {"text": text}, fact_meta, session["agent_id"]
        )
        row, created = await self.d.store.enqueue_dispatch(
            dispatch_id=planned,
            session_id=session_id,
            agent_id=session["agent_id"],
            fact={
                "kind": "message.queued",
                "role": "user",
                "body": body,
                "meta": fact_meta,
                "idempotency_key": f"queued:{planned}",
            },
            kernel_id=self.d.kernel_id,
            request_id=request_id,
        )
        if not created:
            return self.answer(row, duplicate=True)
        self.d.kernel.publish(
            session_id,
            row["seq"],
            int(row["epoch"]),
            "message.queued",
            "user",
            body,
            fact_meta,
            f"queued:{planned}",
            row["fact_created_at"],
        )
        self._queued.add(session_id)
        self.d.kernel.peers.tell("queued", session_id)
        if session_id not in self.d.units:  # it may be free now: nothing else would start it
            self.after_dispatch(session_id)
        out = self.answer({**row, "state": "queued"})
        if waiting_for:
            out["waiting_for"] = waiting_for
        return out

    @staticmethod
    def answer(row: dict[str, Any], *, duplicate: bool = False) -> dict[str, Any]:
        """``session.dispatch``'s answer for a queued (or, sent again, started) dispatch."""
        return {
            "dispatch_id": row["id"],
            "session_id": row["session_id"],
            "epoch": int(row.get("epoch") or 0),
            "seq": int(row.get("seq") or 0),
            "delivery": "started" if row["state"] == "started" else "queued",
            "duplicate": duplicate,
        }

    def hint(self, session_id: str) -> None:
        """Another kernel queued a dispatch of ``session_id``: start it when the session frees
        here (or now, if it is free and its agent may run here)."""
        self._queued.add(session_id)
        if session_id not in self.d.units:
            self.after_dispatch(session_id)

    def after_dispatch(self, session_id: str) -> None:
        """A dispatch of ``session_id`` ended: start its next queued message, if any."""
        if session_id in self._queued:
            self._spawn(self._start_next(session_id), f"queued-{session_id}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> None:
        """At start, and every recovery scan: start the queued dispatches of free sessions this
        kernel may run (queued before a restart, by a kernel that died, or whose notice was lost)."""
        if self.d.closing:
            return
        for q in await self.d.store.claim_queued(
            kernel_id=self.d.kernel_id, kernel_name=self.d.kernel.name, ttl_s=self.d.ttl
        ):
            self._spawn(self._start_claimed(q), f"queued-{q['session_id']}")

    async def _start_next(self, session_id: str) -> None:
        if session_id in self.d.units or self.d.closing:
            return  # that dispatch's end comes back here
        try:
            claimed = await self.d.store.claim_queued(
                kernel_id=self.d.kernel_id,
                kernel_name=self.d.kernel.name,
                ttl_s=self.d.ttl,
                session_id=session_id,
            )
        except AosError as exc:
            log.error("queue.read_failed", session=session_id, error=exc.message)
            return
        if not claimed:  # none waits, or not for this kernel now (the scan looks again)
            self._queued.discard(session_id)
            return
        await self._start_claimed(claimed[0])

    async def _start_claimed(self, q: dict[str, Any]) -> None:
        session_id, planned = str(q["session_id"]), str(q["id"])
        meta = {k: v for k, v in (q["meta"] or {}).items() if k not in ("queued_for", "waiting_for")}
        text = str((q["body"] or {}).get("text", ""))
        try:
            await self.d.start(
                session_id,
                text,
                {**meta, "queued_seq": q["seq"]},
                if_busy="refuse",
                dispatch_id=planned,
                queued=True,
            )
        except (SessionBusy, Unavailable, Elsewhere):
            # A dispatch began meanwhile (its end tries again), the daemon is stopping, or the
            # agent was placed elsewhere: let the row go for whoever may start it.
            with contextlib.suppress(AosError):
                await self.d.store.unclaim_queued(planned, self.d.kernel_id)
            return
        except Conflict as exc:
            if not exc.details.get("started"):
                raise
            self.after_dispatch(session_id)  # started already (by another kernel): the next one
            return
        except AosError as exc:
            log.warning("queue.not_started", session=session_id, seq=q["seq"], error=exc.message)
            with contextlib.suppress(AosError):
                await self.d.store.drop_queued(
                    planned,
                    exc.message,
                    {
                        "kind": "message.unqueued",
                        "role": None,
                        "body": {"seq": q["seq"], "reason": exc.message, "error": exc.type},
                        "meta": {"queued_for": planned},
                        "idempotency_key": f"unqueued:{planned}",
                    },
                )
            self.after_dispatch(session_id)  # the next one, if any

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
