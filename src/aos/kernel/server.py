"""The administrator socket: JSON-RPC over WebSocket over ``$AOS_HOME/run/kernel.sock``.

Identity comes from the socket: the file is 0600 in a 0700 folder, and the peer's uid (from
``SO_PEERCRED``) must be the daemon's own or root. Limits: frames above ``max_frame_bytes`` get
an ``invalid_request`` error (the connection stays open); frames above twice that are refused by
the WebSocket layer (close code 1009); more than ``max_in_flight`` concurrent requests on one
connection get ``overloaded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection

from aos_sdk.connection import RpcConnection
from aos_sdk.protocol import Request

from ..logs import get_logger
from .kernel import CallContext, Caller, Kernel
from .sockets import serve_private

__all__ = ["KernelServer", "serve_kernel_socket"]

log = get_logger("aos.server")


def _peer(ws: ServerConnection) -> tuple[int, int]:
    sock = ws.transport.get_extra_info("socket")
    if sock is None:
        return -1, -1
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class KernelServer:
    """The running socket server plus its live connections (for draining)."""

    def __init__(
        self, kernel: Kernel, path: Path, *, max_frame_bytes: int, max_in_flight: int, keepalive_s: float = 20
    ) -> None:
        self.kernel = kernel
        self.path = path
        #: A ping every this many seconds; a client that has not answered one this long is gone.
        self.keepalive_s = keepalive_s
        self.max_frame_bytes = max_frame_bytes
        self.max_in_flight = max_in_flight
        self.conns: set[RpcConnection] = set()
        self.server: Server | None = None
        self._changed = asyncio.Condition()

    async def _handle(self, ws: ServerConnection) -> None:
        pid, uid = _peer(ws)
        if uid not in (os.geteuid(), 0):
            await ws.close(1008, "only the daemon's user may use the kernel socket")
            return
        ctx = CallContext(Caller("admin", f"uid{uid}"))

        async def on_request(req: Request) -> object:
            return await self.kernel.invoke(ctx, req.method, req.params)

        def on_error(req: Request, exc: BaseException) -> None:
            log.error("syscall.crashed", method=req.method, peer_pid=pid, exc_info=exc)

        conn = RpcConnection(
            ws,
            on_request=on_request,
            on_internal_error=on_error,
            max_in_flight=self.max_in_flight,
            max_message_bytes=self.max_frame_bytes,
        )
        ctx.conn = conn
        self.conns.add(conn)
        self.kernel.connections += 1
        try:
            await conn.run()
        finally:
            self.kernel.close_context(ctx)
            self.conns.discard(conn)
            self.kernel.connections -= 1
            async with self._changed:
                self._changed.notify_all()

    async def wait_connections(self, count: int) -> None:
        """Return once exactly ``count`` connections are open (and closed ones cleaned up)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.conns) == count)

    async def start(self) -> None:
        # The pid-file lock guarantees no other daemon owns this path: a leftover is stale.
        self.server = await serve_private(
            self._handle,
            self.path,
            max_size=self.max_frame_bytes * 2,
            max_queue=64,
            ping_interval=self.keepalive_s,
            ping_timeout=self.keepalive_s,
            close_timeout=2,
        )

    @property
    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.conns)

    async def shutdown(self, drain_timeout: float, hurry: asyncio.Event | None = None) -> int:
        """Stop accepting, wait for in-flight requests (up to ``drain_timeout``), then close.

        Setting ``hurry`` (a second signal) ends the wait early.

        Returns the number of requests that were still running when the wait ended.
        """
        assert self.server is not None
        # Stop accepting (the listening socket only). Not websockets' close(close_connections=
        # False): that starts its one close task, and the close below would then be a no-op,
        # leaving every open connection (a chat, a follower) to the 5 s timeout.
        self.server.server.close()
        deadline = time.monotonic() + drain_timeout
        delay = 0.005
        while self.in_flight and time.monotonic() < deadline and not (hurry and hurry.is_set()):
            await asyncio.sleep(delay)  # in-flight counts have no event of their own
            delay = min(delay * 2, 0.1)
        left = self.in_flight
        self.server.close(close_connections=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 5)
        self.path.unlink(missing_ok=True)
        return left


@contextlib.asynccontextmanager
async def serve_kernel_socket(
    kernel: Kernel, path: Path, *, max_frame_bytes: int, max_in_flight: int, keepalive_s: float = 20
) -> AsyncIterator[KernelServer]:
    server = KernelServer(
        kernel, path, max_frame_bytes=max_frame_bytes, max_in_flight=max_in_flight, keepalive_s=keepalive_s
    )
    await server.start()
    try:
        yield server
    finally:
        if server.server is not None and server.server.is_serving():
            await server.shutdown(0)
