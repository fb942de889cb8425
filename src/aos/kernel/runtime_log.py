"""The runtime log: every command syscall, with its caller, outcome and duration.

Entries are buffered and written in batches (one insert per :data:`_LOG_WINDOW_S` window, or
sooner when :data:`_LOG_BATCH` are waiting), and flushed when the daemon stops. The log is
advisory: a crash may lose the last window. History is never batched this way.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import AosError, Unavailable

from ..logs import get_logger
from ..redact import redact

if TYPE_CHECKING:
    from ..db.store import Store

__all__ = ["RuntimeLog"]

log = get_logger("aos.kernel")

_LOG_WINDOW_S = 0.05  # entries are written at most this late (flushed on stop)
_LOG_BATCH = 500


class RuntimeLog:
    """The runtime log's buffer and writer."""

    def __init__(self, store: Store, kernel_id: str | None = None) -> None:
        self.store = store
        self.kernel_id = kernel_id
        self._buffer: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def record(
        self,
        actor: str,
        op: str,
        params: dict[str, Any],
        result: Any,
        error: AosError | None,
        seconds: float,
    ) -> None:
        """Buffer one command's entry (written within :data:`_LOG_WINDOW_S`)."""
        summary = None
        if isinstance(result, dict):
            # Ids and seqs, not payloads: the log says what changed, history holds the data.
            summary = {
                k: v for k, v in result.items() if k in ("id", "name", "seq", "session_id", "content_id")
            }
        self._buffer.append(
            {
                "ts": time.time(),
                "actor": actor,
                "op": op,
                "args": redact(params),
                "outcome": "error" if error else "ok",
                "error": None if error is None else {"type": error.type, "message": error.message},
                "result": summary,
                "duration_ms": round(seconds * 1000, 3),
                "kernel_id": self.kernel_id,
            }
        )
        self._wake.set()

    async def writer(self) -> None:
        """Write buffered entries as they come, until cancelled (the kernel's task)."""
        while True:
            await self._wake.wait()
            # Coalesce: one insert per window rather than per command. The runtime log is
            # advisory; a crash may lose the last window (history is never batched this way).
            if len(self._buffer) < _LOG_BATCH:
                await asyncio.sleep(_LOG_WINDOW_S)
            self._wake.clear()
            try:
                await self.flush()
            except AosError as exc:
                log.error("runtime_log.write_failed", error=exc.message)

    async def flush(self) -> None:
        """Write buffered runtime-log entries now.

        If the database refuses the batch (not unavailable: refuses), the entries are written one
        by one and any that is refused alone is dropped with an error line, so one bad entry never
        blocks the log. Unavailable: everything is kept for the next try.
        """
        async with self._lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return
            try:
                await self.store.write_log(batch)
                return
            except Unavailable:
                self._buffer[:0] = batch
                raise
            except AosError as exc:
                if len(batch) == 1:
                    log.error("runtime_log.entry_dropped", op=batch[0].get("op"), error=exc.message)
                    return
            except BaseException:
                self._buffer[:0] = batch
                raise
            for i, entry in enumerate(batch):
                try:
                    await self.store.write_log([entry])
                except Unavailable:
                    self._buffer[:0] = batch[i:]
                    raise
                except AosError as exc:
                    log.error("runtime_log.entry_dropped", op=entry.get("op"), error=exc.message)
