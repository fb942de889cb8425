"""Streams across kernels: a fact stored by one kernel reaches followers on the others.

Each kernel LISTENs on the channel ``aos_history`` on a connection of its own. While other
kernels live (its heartbeat counts them), a kernel NOTIFYs there what it stored: the newest seq
of each session it wrote, coalesced over a few milliseconds into one statement, after the commit.
A kernel that hears of a seq past what its followers of that session have wakes them, and their
pumps read the missing facts from history, in order, with no gaps or repeats (see
:mod:`.streams`). With no other kernel alive nothing is sent: one kernel pays nothing.

Control goes the same way: an approval resolved on one kernel wakes the unit waiting for it on
another (the decision itself is the durable row), an interrupt asked of one kernel reaches the
kernel whose unit runs the session, and a dispatch queued on one kernel is started by whichever
frees its session.

Live events (command output, model text) are never stored, so they cross only where wanted: a
kernel with a live follower of a session says ``watch <session>`` when it subscribes and at each
heartbeat, and a kernel running that session's dispatch forwards its live events on the channel
(``live <session> <json>``) until a ttl passes without a ``watch``. A NOTIFY payload holds at most
8000 bytes: a longer event's text is cut (``truncated: true``); the facts keep it all.

After its listening connection was lost (a database restart), a kernel wakes every followed
session once, so facts written meanwhile are read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import psycopg

from ..logs import get_logger

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["CHANNEL", "Peers"]

CHANNEL = "aos_history"
_COALESCE_S = 0.002
#: Bytes of a NOTIFY payload the channel may carry (PostgreSQL's limit is 8000), kept clear of it.
_PAYLOAD_MAX = 7900
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
        #: Session -> until when (loop time) a kernel elsewhere follows its live events.
        self.watching: dict[str, float] = {}

    def tell(self, kind: str, *words: str) -> None:
        """Announce a control message to every other kernel: ``approval <id>`` (resolved: its
        waiting unit may be theirs), ``interrupt <session> <reason>`` (its unit may be theirs),
        ``queued <session>`` (a dispatch was queued: whoever frees the session starts it),
        ``steer <session> <seq>`` (a message was steered into their unit of that session)."""
        self._queue(_fit(" ".join((kind, *words)), _PAYLOAD_MAX - 20))

    def _queue(self, message: str) -> None:
        """A control message (or live event), after the facts stored before it: the others hear
        them in that order (a command's output after its ``tool.started``, text before the answer)."""
        if self._pending:
            self._control.extend(f"fact {sid} {seq}" for sid, seq in self._pending.items())
            self._pending = {}
        self._control.append(message)
        self._wake.set()

    def watched(self, session_id: str) -> bool:
        """Whether a kernel elsewhere follows ``session_id``'s live events now."""
        until = self.watching.get(session_id)
        if until is None:
            return False
        if until < asyncio.get_running_loop().time():
            del self.watching[session_id]
            return False
        return True

    def forward_live(self, session_id: str, event: dict[str, Any]) -> None:
        """Send a live event of a session followed elsewhere (ASCII JSON, cut to fit)."""
        if not self.watched(session_id):
            return
        head = f"live {session_id} "
        room = _PAYLOAD_MAX - 20 - len(head)
        data = json.dumps(event, separators=(",", ":"))
        if len(data) > room and isinstance(event.get("text"), str):
            over = len(data) - room
            text = event["text"]
            while text and len(data) > room:  # escapes make the JSON longer than the text
                text = text[: max(0, len(text) - over - 16)]
                data = json.dumps({**event, "text": text, "truncated": True}, separators=(",", ":"))
                over = len(data) - room
        if len(data) > room:
            return  # no text to cut: an event this big is not live progress worth a payload
        self._queue(head + data)

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
                control, self._control = self._control, []
                batch, self._pending = self._pending, {}
                payloads = [f"{self.kernel.id} {c}" for c in control]  # in the order they came
                payloads += [f"{self.kernel.id} fact {sid} {seq}" for sid, seq in batch.items()]
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
        elif kind == "live":
            session_id, _, data = rest.partition(" ")
            if self.kernel.streams.live_watched(session_id):
                with contextlib.suppress(ValueError):
                    self.kernel.streams.offer_live(session_id, json.loads(data))
        elif kind == "watch":
            self.watching[rest] = asyncio.get_running_loop().time() + self.kernel.dispatcher.ttl
        elif kind == "steer":
            session_id, _, seq = rest.partition(" ")
            if seq.isdigit():
                self.kernel.dispatcher.steering.heard_steer(session_id, int(seq))
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


def _fit(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (a NOTIFY payload's limit is in bytes)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")
