"""A dispatch's journal: how the loop writes its facts.

Every fact carries the dispatch's lease epoch, ``meta.dispatch_id`` and a deterministic
idempotency key (``<dispatch>:<n>``, in the order the facts are made), so a retried append
after an unknown outcome is stored once, and a dispatch that lost its lease cannot write (the
database refuses the stale epoch). Order is kept: a fact started with :meth:`Journal.append_soon`
is durable before the next one is written.

The journal stands on two narrow interfaces: :class:`Writer` (append one fact: the kernel's
append, which scrubs, gates and notifies) and :class:`Ender` (write the last facts, close the
dispatch row and give the lease back, in one commit: the dispatcher).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["Ender", "Journal", "Writer"]


class Writer(Protocol):
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
        agent_id: str | None = None,
    ) -> Any:
        """Append one fact durably; the result has its ``seq``."""
        ...


class SteeredLate(Exception):
    """A message steered into the dispatch (from another kernel) was stored after the context of
    its final step was read: the end was not written, and the unit takes one more step."""


class Ender(Protocol):
    async def end(self, status: str, facts: list[dict[str, Any]]) -> bool:
        """Write ``facts``, close the dispatch and release its lease in one commit; False when
        that was refused (nothing written)."""
        ...


class Journal:
    """The facts of one dispatch, in order, each durable before what it precedes."""

    def __init__(
        self, writer: Writer, *, session_id: str, dispatch_id: str, agent_id: str, epoch: int, keys: int = 0
    ) -> None:
        self.writer = writer
        self.session_id = session_id
        self.dispatch_id = dispatch_id
        self.agent_id = agent_id
        self.epoch = epoch
        #: How many keys were taken (the next fact's key is ``<dispatch>:<keys + 1>``).
        self.keys = keys
        self._deferred: asyncio.Future[int] | None = None

    def fact(
        self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A fact to write later, its key taken now (keys follow the order facts are made)."""
        self.keys += 1
        return {
            "kind": kind,
            "role": role,
            "body": body,
            "meta": {**(meta or {}), "dispatch_id": self.dispatch_id},
            "idempotency_key": f"{self.dispatch_id}:{self.keys}",
        }

    async def append(self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None = None) -> int:
        """Append a fact durably (after any fact still being written); returns its seq."""
        fact = self.fact(kind, role, body, meta)
        await self.settle()
        return await self.write(fact)

    def append_soon(self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None = None) -> None:
        """Start appending a fact and go on; the next :meth:`append` (or :meth:`settle`) waits
        for it first. Its commit then overlaps whatever runs in between, and nothing with a side
        effect happens before it is durable."""
        fact = self.fact(kind, role, body, meta)
        self._deferred = asyncio.ensure_future(self.write(fact))

    async def settle(self) -> None:
        """Wait until a fact started with :meth:`append_soon` is durable (raises its error)."""
        if self._deferred is not None:
            task, self._deferred = self._deferred, None
            await task

    async def write(self, fact: dict[str, Any]) -> int:
        """Write a fact made by :meth:`fact`; returns its seq."""
        res = await self.writer.append(
            self.session_id,
            epoch=self.epoch,
            kind=fact["kind"],
            role=fact["role"],
            body=fact["body"],
            meta=fact["meta"],
            idempotency_key=fact["idempotency_key"],
            agent_id=self.agent_id,
        )
        return int(res.seq)

    async def end(self, ender: Ender | None, status: str, facts: list[dict[str, Any]]) -> bool:
        """Write the dispatch's last facts: with its end and the lease's release in one commit
        when ``ender`` can (returns True), else one by one (False)."""
        await self.settle()
        if ender is not None and await ender.end(status, facts):
            return True
        for fact in facts:  # refused together: one by one, which says why (a lost lease, a retry)
            await self.write(fact)
        return False
