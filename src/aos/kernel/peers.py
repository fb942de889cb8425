"""Streams across kernels: a fact stored by one kernel reaches followers on the others.

Each kernel LISTENs on the channel ``aos_history`` on a connection of its own. While other
kernels live (its heartbeat counts them), a kernel NOTIFYs there what it stored: the newest seq
of each session it wrote, coalesced over a few milliseconds into one statement, after the commit.
A kernel that hears of a seq past what its followers of that session have wakes them, and their
pumps read the missing facts from history, in order, with no gaps or repeats (see
:mod:`.streams`). With no other kernel alive nothing is sent: one kernel pays nothing.

Control goes the same way: an approval resolved on one kernel wakes the unit waiting for it on
another (the decision itself is the durable row), and an interrupt asked of one kernel reaches
the kernel whose unit runs the session.

After its listening connection was lost (a database restart), a kernel wakes every followed
session once, so facts written meanwhile are read back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import psycopg

from ..logs import get_logger

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["CHANNEL", "Peers"]

CHANNEL = "aos_history"
_COALESCE_S = 0.002
log = get_logger("aos.kernel")


class Peers:
    """One kernel's side of the cross-kernel fact stream."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        #: Other kernels alive at the last heartbeat: facts are announced only while there are.
        self.count = 0
        self._pending: dict[str, int] = {}
        self._control: list[str] = []
        self._wake = asyncio.Event()

    def tell(self, kind: str, *words: str) -> None:
        """Announce a control message to every other kernel: ``approval <id>`` (resolved: its
        waiting unit may be theirs), ``interrupt <session> <reason>`` (its unit may be theirs),
        ``queued <session>`` (a dispatch was queued: whoever frees the session starts it)."""
        self._control.append(" ".join((kind, *words))[:4000])
        self._wake.set()

    def stored(self, session_id: str, seq: int) -> None:
        """A fact was stored (and committed) here: announce it to the other kernels."""
        if self.count <= 0:
            return
        if seq > self._pending.get(session_id, 0):
            self._pending[session_id] = seq
        self._wake.set()

    async def announcer(self) -> None:
        """Send what :meth:`stored` collected: one NOTIFY statement per few milliseconds."""
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(_COALESCE_S)
                self._wake.clear()
                batch, self._pending = self._pending, {}
                control, self._control = self._control, []
                payloads = [f"{self.kernel.id} fact {sid} {seq}" for sid, seq in batch.items()]
                payloads += [f"{self.kernel.id} {c}" for c in control]
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = await psycopg.AsyncConnection.connect(self.kernel.store.dsn, autocommit=True)
                    await conn.execute(
                        "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (CHANNEL, payloads)
                    )
                except psycopg.Error as exc:
                    # Followers elsewhere catch up at the next announcement (they read from seq).
                    log.warning("peers.announce_failed", error=str(exc))
        finally:
            if conn is not None:
                await conn.close()

    async def listener(self) -> None:
        """Hear the other kernels' announcements; reconnect after a loss, then catch up."""
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.kernel.store.dsn, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        await self._catch_up()
                    first = False
                    async for note in conn.notifies():
                        kernel_id, _, rest = note.payload.partition(" ")
                        if kernel_id != self.kernel.id:
                            await self._heard(rest)
            except psycopg.Error as exc:
                log.warning("peers.listen_lost", error=str(exc))
                await asyncio.sleep(1.0)

    async def _heard(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        if kind == "fact":
            session_id, _, seq = rest.partition(" ")
            if seq.isdigit():
                self.kernel.streams.nudge(session_id, int(seq))
        elif kind == "approval":
            await self.kernel.dispatcher.approvals.resolved_elsewhere(rest)
        elif kind == "queued":
            self.kernel.dispatcher.steering.hint(rest)
        elif kind == "interrupt":
            session_id, _, reason = rest.partition(" ")
            unit = self.kernel.dispatcher.units.get(session_id)
            if unit is not None:
                unit.interrupt(reason=reason or "interrupted", cause="user")

    async def _catch_up(self) -> None:
        """Wake every followed session to its newest seq (announcements may have been missed)."""
        for session_id in self.kernel.streams.sessions():
            with contextlib.suppress(Exception):
                session = await self.kernel.store.get_session(session_id)
                self.kernel.streams.nudge(session_id, int(session["last_seq"]))
