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
  start (``meta.queued_for``), and that dispatch starts when the running one ends, one queued
  message after another. Queued messages are durable: at start the daemon starts those whose
  dispatch never began. One that cannot start (its agent archived, a gate refuses it) gets a
  ``message.unqueued`` fact saying why, and is not tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import AosError, SessionBusy, Unavailable

from ..db.store import INBOUND, new_id
from ..logs import get_logger

if TYPE_CHECKING:
    from ..loop.react import ReActUnit
    from .dispatch import Dispatcher

__all__ = ["Steering"]

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

    async def steer(self, unit: ReActUnit, text: str, meta: dict[str, Any] | None) -> dict[str, Any]:
        """Append ``text`` to the running dispatch of ``unit``; the agent reads it next step."""
        spec = unit.spec
        sid = spec.session_id
        self._writing[sid] = self._writing.get(sid, 0) + 1
        try:
            res = await self.d.kernel.append(
                sid,
                epoch=INBOUND,
                kind="message",
                role="user",
                body={"text": text},
                meta={**(meta or {}), "dispatch_id": spec.dispatch_id, "steer": True},
                idempotency_key=new_id("st"),
                agent_id=spec.agent["id"],
            )
        finally:
            self._writing[sid] -= 1
            if not self._writing[sid]:
                del self._writing[sid]
        self._latest[sid] = max(self._latest.get(sid, 0), res.seq)
        return {
            "dispatch_id": spec.dispatch_id,
            "session_id": sid,
            "epoch": spec.epoch,
            "seq": res.seq,
            "delivery": "steered",
        }

    async def enqueue(self, session_id: str, text: str, meta: dict[str, Any] | None) -> dict[str, Any]:
        """Record ``text`` to start a dispatch of its own once the running one ends."""
        session = await self.d.store.get_session(session_id)
        planned = new_id("di")
        res = await self.d.kernel.append(
            session_id,
            epoch=INBOUND,
            kind="message.queued",
            role="user",
            body={"text": text},
            meta={**(meta or {}), "queued_for": planned},
            idempotency_key=f"queued:{planned}",
            agent_id=session["agent_id"],
        )
        self._queued.add(session_id)
        if session_id not in self.d.units:  # it ended meanwhile: nothing else will start it
            self.after_dispatch(session_id)
        return {
            "dispatch_id": planned,
            "session_id": session_id,
            "epoch": int(session["lease_epoch"]),
            "seq": res.seq,
            "delivery": "queued",
        }

    def after_dispatch(self, session_id: str) -> None:
        """A dispatch of ``session_id`` ended: start its next queued message, if any."""
        if session_id in self._queued:
            task = asyncio.create_task(self._start_next(session_id), name=f"queued-{session_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def resume(self) -> None:
        """At start: start the queued messages whose dispatch never began (one per session)."""
        for sid in {q["session_id"] for q in await self.d.store.queued_messages()}:
            self._queued.add(sid)
            if sid not in self.d.units:
                self.after_dispatch(sid)

    async def _start_next(self, session_id: str) -> None:
        if session_id in self.d.units or self.d.closing:
            return  # that dispatch's end comes back here
        try:
            pending = await self.d.store.queued_messages(session_id)
        except AosError as exc:
            log.error("queue.read_failed", session=session_id, error=exc.message)
            return
        if not pending:
            self._queued.discard(session_id)
            return
        q = pending[0]
        meta = dict(q["meta"] or {})
        planned = str(meta.pop("queued_for"))
        text = str((q["body"] or {}).get("text", ""))
        try:
            await self.d.start(
                session_id,
                text,
                {**meta, "queued_seq": q["seq"]},
                if_busy="refuse",
                dispatch_id=planned,
            )
        except (SessionBusy, Unavailable):
            return  # a dispatch began meanwhile (its end tries again), or the daemon is stopping
        except AosError as exc:
            log.warning("queue.not_started", session=session_id, seq=q["seq"], error=exc.message)
            with contextlib.suppress(AosError):
                await self.d.kernel.append(
                    session_id,
                    epoch=INBOUND,
                    kind="message.unqueued",
                    role=None,
                    body={"seq": q["seq"], "reason": exc.message, "error": exc.type},
                    meta={"queued_for": planned},
                    idempotency_key=f"unqueued:{planned}",
                )
            self.after_dispatch(session_id)  # the next one, if any

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
