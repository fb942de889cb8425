"""History streams: ``history.subscribe`` pushes a session's facts to a connection.

Each subscription replays what it missed from the database, then follows live facts, which the
kernel offers as it stores them (the last few hundred are kept in memory, so live delivery skips
the database). A pump per subscription delivers strictly in seq order, without gaps or repeats:
a fact it does not hold in memory is read back from history.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aos_sdk.connection import RpcConnection
from aos_sdk.errors import InvalidParams, NotFound

from . import models as m

if TYPE_CHECKING:
    from ..db.store import Store
    from .kernel import CallContext

__all__ = ["Streams", "Subscription"]

_RECENT_FACTS = 512  # per subscription: facts kept in memory so live delivery skips the database
_LIVE_BACKLOG = 1000  # per subscription: live events waiting to be sent (the oldest go first)


@dataclass(eq=False)
class Subscription:
    """One live history stream on one connection."""

    id: str
    session_id: str
    next_seq: int
    conn: RpcConnection
    latest: int = 0
    recent: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: Wants live events (``history.live``): transient progress, never stored or replayed.
    live: bool = False
    pending_live: deque[dict[str, Any]] = field(default_factory=deque)


class Streams:
    """Every live subscription of one kernel, by session."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._watchers: dict[str, set[Subscription]] = {}

    def watched(self, session_id: str) -> bool:
        """Whether anyone follows ``session_id`` (the kernel builds a fact's JSON only then)."""
        return session_id in self._watchers

    def count(self) -> int:
        return sum(len(s) for s in self._watchers.values())

    def live_watched(self, session_id: str) -> bool:
        """Whether a subscription of ``session_id`` wants live events (else none is made)."""
        return any(sub.live for sub in self._watchers.get(session_id, ()))

    def offer_live(self, session_id: str, event: dict[str, Any]) -> None:
        """Hand a live event to the session's live subscriptions. Each gets it after the facts
        stored before it, so a command's output follows its ``tool.started``. A subscriber that
        cannot keep up loses the oldest events (they are progress, not record: the facts that
        follow hold everything)."""
        for sub in self._watchers.get(session_id, ()):
            if sub.live:
                if len(sub.pending_live) >= _LIVE_BACKLOG:
                    sub.pending_live.popleft()
                sub.pending_live.append(event)
                sub.wake.set()

    def live_sessions(self) -> list[str]:
        """The sessions someone follows with live events."""
        return [sid for sid, subs in self._watchers.items() if any(sub.live for sub in subs)]

    def sessions(self) -> list[str]:
        """The sessions someone follows."""
        return list(self._watchers)

    def nudge(self, session_id: str, seq: int) -> None:
        """Another kernel stored ``seq`` of ``session_id``: followers read up to it from history."""
        for sub in self._watchers.get(session_id, ()):
            if seq > sub.latest:
                sub.latest = seq
                sub.wake.set()

    def offer(self, session_id: str, fact: dict[str, Any]) -> None:
        """Hand a fact that was just stored to the session's subscriptions."""
        for sub in self._watchers.get(session_id, ()):
            self._offer(sub, fact)

    def _offer(self, sub: Subscription, fact: dict[str, Any]) -> None:
        seq = fact["seq"]
        sub.recent[seq] = fact
        while len(sub.recent) > _RECENT_FACTS:
            sub.recent.popitem(last=False)
        sub.latest = max(sub.latest, seq)
        sub.wake.set()

    async def subscribe(
        self, ctx: CallContext, session_id: str, after_seq: int | None, live: bool = False
    ) -> m.SubscribeResult:
        """Start streaming facts of ``session_id`` to the caller as ``history.fact`` notifications.

        Facts after ``after_seq`` are replayed from the database first; the subscription is
        registered before the replay is read, so nothing appended meanwhile is missed, and the
        pump delivers strictly in seq order without gaps or repeats.
        """
        if ctx.conn is None:
            raise InvalidParams("history.subscribe needs a connection to push to")
        sub = Subscription(
            id=f"sub_{secrets.token_hex(6)}", session_id=session_id, next_seq=0, conn=ctx.conn, live=live
        )
        self._watchers.setdefault(session_id, set()).add(sub)
        try:
            session = await self.store.get_session(session_id)
        except NotFound:
            self._drop(sub)
            raise
        last = session["last_seq"]
        sub.next_seq = (last if after_seq is None else min(after_seq, last)) + 1
        sub.latest = max(sub.latest, last)
        ctx.subscriptions[sub.id] = sub
        sub.task = asyncio.create_task(self._pump(ctx, sub), name=f"pump-{sub.id}")
        if sub.latest >= sub.next_seq:
            sub.wake.set()
        return m.SubscribeResult(subscription=sub.id, last_seq=last)

    def unsubscribe(self, ctx: CallContext, subscription: str) -> None:
        sub = ctx.subscriptions.pop(subscription, None)
        if sub is None:
            raise NotFound(f"no subscription {subscription!r} on this connection")
        self._end(sub)

    def close_context(self, ctx: CallContext) -> None:
        """End every subscription of a connection that closed."""
        for sub in ctx.subscriptions.values():
            self._end(sub)
        ctx.subscriptions.clear()

    def _end(self, sub: Subscription) -> None:
        if sub.task is not None:
            sub.task.cancel()
        self._drop(sub)

    def _drop(self, sub: Subscription) -> None:
        watchers = self._watchers.get(sub.session_id)
        if watchers is not None:
            watchers.discard(sub)
            if not watchers:
                del self._watchers[sub.session_id]

    async def _pump(self, ctx: CallContext, sub: Subscription) -> None:
        try:
            while True:
                await sub.wake.wait()
                sub.wake.clear()
                while sub.next_seq <= sub.latest:
                    fact = sub.recent.pop(sub.next_seq, None)
                    batch = [fact] if fact is not None else await self._read_facts(sub)
                    for f in batch:
                        await sub.conn.notify("history.fact", {"subscription": sub.id, "fact": f})
                        sub.next_seq = f["seq"] + 1
                    if not batch:
                        break
                # Drop facts the pump has already passed.
                for seq in [s for s in sub.recent if s < sub.next_seq]:
                    del sub.recent[seq]
                while sub.pending_live and sub.next_seq > sub.latest:
                    event = sub.pending_live.popleft()
                    await sub.conn.notify("history.live", {"subscription": sub.id, "event": event})
        finally:
            self._drop(sub)
            ctx.subscriptions.pop(sub.id, None)

    async def _read_facts(self, sub: Subscription) -> list[dict[str, Any]]:
        rows = await self.store.list_history(
            sub.session_id, after_seq=sub.next_seq - 1, upto_seq=sub.latest, limit=500
        )
        return [m.Fact.model_validate(r).model_dump(mode="json") for r in rows]
