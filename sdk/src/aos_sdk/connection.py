"""JSON-RPC over an asyncio ``websockets`` connection, in both directions.

:class:`RpcConnection` drives :class:`~aos_sdk.protocol.Endpoint` over one WebSocket. Incoming
requests are served concurrently (each in its own task owned by :meth:`RpcConnection.run`), so a
peer that is waiting on our answer can still call us back: a service handling a hook may call a
syscall without deadlock. Outgoing calls are matched to their answers by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .errors import AosError, ConnectionLost, InternalError, Overloaded, Unavailable
from .protocol import Endpoint, ErrorResponse, Notification, Request, Response

__all__ = ["RequestHandler", "RpcConnection", "open_connection"]

RequestHandler = Callable[[Request], Awaitable[Any]]
NotificationHandler = Callable[[Notification], Awaitable[None] | None]


class RpcConnection:
    """A JSON-RPC peer over one WebSocket.

    Args:
        ws: an open ``websockets`` asyncio connection (client or server side).
        on_request: serves incoming requests; its return value is the result, an ``AosError`` it
            raises is sent as that error, any other exception as ``internal``.
        on_notification: called for each incoming notification.
        max_in_flight: incoming requests served at once; more are answered ``overloaded``. None:
            no limit (a service serving the kernel: its peer is trusted and paces itself).
        max_message_bytes: frames above this are answered ``invalid_request``.
    """

    def __init__(
        self,
        ws: ClientConnection | ServerConnection,
        *,
        on_request: RequestHandler | None = None,
        on_notification: NotificationHandler | None = None,
        on_internal_error: Callable[[Request, BaseException], None] | None = None,
        max_in_flight: int | None = 64,
        max_message_bytes: int | None = None,
    ) -> None:
        self.ws = ws
        self._ep = Endpoint(max_message_bytes=max_message_bytes)
        self._on_request = on_request
        self._on_notification = on_notification
        self._on_internal_error = on_internal_error
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: dict[int | str, asyncio.Future[Any]] = {}
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed.is_set()

    @property
    def in_flight(self) -> int:
        """Incoming requests being served right now."""
        return self._in_flight

    async def run(self) -> None:
        """Read frames until the connection closes; serve requests; then fail pending calls."""
        try:
            async with asyncio.TaskGroup() as tg:
                try:
                    async for message in self.ws:
                        for event in self._ep.receive(message):
                            self._route(event, tg)
                        for frame in self._ep.data_to_send():
                            await self._send(frame)
                except ConnectionClosed:
                    pass
                finally:
                    self._closed.set()
                    self._fail_pending()
        finally:
            self._closed.set()

    def _route(self, event: Request | Notification | Response | ErrorResponse, tg: asyncio.TaskGroup) -> None:
        if isinstance(event, Request):
            if self._on_request is None:
                tg.create_task(
                    self._send(Endpoint.error(event.id, InternalError("this peer serves no methods")))
                )
            elif self._max_in_flight is not None and self._in_flight >= self._max_in_flight:
                err = Overloaded(f"more than {self._max_in_flight} requests in flight on this connection")
                tg.create_task(self._send(Endpoint.error(event.id, err)))
            else:
                self._in_flight += 1
                tg.create_task(self._serve(event))
        elif isinstance(event, Notification):
            if self._on_notification is not None:
                res = self._on_notification(event)
                if res is not None:
                    tg.create_task(self._guard(res))
        else:
            fut = self._pending.pop(event.id, None)
            if fut is not None and not fut.done():
                if isinstance(event, Response):
                    fut.set_result(event.result)
                else:
                    fut.set_exception(event.error)

    async def _guard(self, aw: Awaitable[None]) -> None:
        # A failing notification handler must not take the connection down.
        with contextlib.suppress(Exception):
            await aw

    async def _serve(self, req: Request) -> None:
        try:
            assert self._on_request is not None
            try:
                result = await self._on_request(req)
                frame = Endpoint.result(req.id, result)
            except AosError as exc:
                frame = Endpoint.error(req.id, exc)
            except Exception as exc:
                if self._on_internal_error is not None:
                    self._on_internal_error(req, exc)
                frame = Endpoint.error(req.id, InternalError(f"{req.method} failed: {type(exc).__name__}"))
            await self._send(frame)
        finally:
            self._in_flight -= 1

    async def _send(self, frame: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)

    def _fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost("the connection closed before the answer arrived"))
        self._pending.clear()

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Call ``method`` on the peer and wait for its result.

        Raises:
            AosError: the peer's error, rebuilt as its class.
            ConnectionLost: the connection closed first (the call may or may not have run).
            TimeoutError: no answer within ``timeout`` seconds.
        """
        if self._closed.is_set():
            raise ConnectionLost("the connection is closed")
        rid, frame = self._ep.request(method, params)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.ws.send(frame)
        except ConnectionClosed as exc:
            self._pending.pop(rid, None)
            raise ConnectionLost("the connection closed before the request was sent") from exc
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification; silently dropped if the connection is closed."""
        await self._send(Endpoint.notification(method, params))

    async def wait_closed(self) -> None:
        """Return once the connection has closed."""
        await self._closed.wait()

    async def aclose(self) -> None:
        """Close the connection."""
        await self.ws.close()


@contextlib.asynccontextmanager
async def open_connection(
    path: str | os.PathLike[str],
    *,
    on_request: RequestHandler | None = None,
    on_notification: NotificationHandler | None = None,
    headers: dict[str, str] | None = None,
    max_message_bytes: int = 64 * 1024 * 1024,
    on_internal_error: Callable[[Request, BaseException], None] | None = None,
    max_in_flight: int | None = 64,
) -> AsyncIterator[RpcConnection]:
    """Connect to an AOS Unix socket; yields a running :class:`RpcConnection`.

    Raises:
        Unavailable: nothing listens on ``path``.
    """
    try:
        ws = await unix_connect(
            os.fspath(path),
            uri="ws://localhost/",
            compression=None,
            max_size=max_message_bytes,
            additional_headers=headers,
            ping_interval=None,
        )
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise Unavailable(
            f"nothing is listening on {os.fspath(path)} (is the daemon running?)", not_running=True
        ) from exc
    conn = RpcConnection(
        ws,
        on_request=on_request,
        on_notification=on_notification,
        on_internal_error=on_internal_error,
        max_in_flight=max_in_flight,
    )
    reader = asyncio.create_task(conn.run())
    try:
        yield conn
    finally:
        await ws.close()
        await reader
