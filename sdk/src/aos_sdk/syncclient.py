"""A small blocking JSON-RPC client for AOS sockets, for command-line tools.

Why not ``websockets.sync``: importing it costs ~160 ms on a 2-core machine, more than the whole
budget of ``aos status`` (and of the skill CLIs agents call on every step). This client speaks the
client side of RFC 6455 that AOS needs (one unextended connection over a Unix socket, masked text
frames out, text/ping/close frames in, fragmented messages reassembled) using only the standard
library; it is tested against the real ``websockets`` server the kernel runs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from .errors import AosError, ConnectionLost, InvalidRequest, Unavailable
from .protocol import Endpoint, ErrorResponse, Notification, Request, Response

__all__ = ["SyncClient"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    reps = key * (n // 4 + 1)
    return (int.from_bytes(payload, "little") ^ int.from_bytes(reps[:n], "little")).to_bytes(n, "little")


class SyncClient:
    """Blocking client: ``with SyncClient(path) as c: c.call("system.status")``.

    Args:
        path: the Unix socket (``$AOS_HOME/run/kernel.sock`` for administrators).
        timeout: seconds to wait for any single read; ``None`` waits forever.
        headers: extra HTTP headers for the opening handshake (the agent gateway's token).

    Raises:
        Unavailable: nothing listens on ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise Unavailable(
                f"nothing is listening on {self.path} (is the daemon running?)", not_running=True
            ) from exc
        self._buf = bytearray()
        self._ep = Endpoint()
        self._pending_notifications: list[Notification] = []
        self._closed = False
        try:
            self._handshake(headers or {})
        except BaseException:
            self._sock.close()
            raise

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Send a close frame (best effort) and close the socket."""
        if self._closed:
            return
        self._closed = True
        try:
            self._send_frame(_OP_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        self._sock.close()

    # -- calls ---------------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call ``method`` and return its result; a server error is raised as its ``AosError``."""
        rid, frame = self._ep.request(method, params)
        self._send_frame(_OP_TEXT, frame.encode())
        while True:
            for event in self._read_events():
                if isinstance(event, Response) and event.id == rid:
                    return event.result
                if isinstance(event, ErrorResponse) and event.id == rid:
                    raise event.error
                if isinstance(event, Notification):
                    self._pending_notifications.append(event)

    def notifications(self) -> Iterator[Notification]:
        """Yield server pushes (for example ``history.fact``) as they arrive, forever."""
        while True:
            while self._pending_notifications:
                yield self._pending_notifications.pop(0)
            for event in self._read_events():
                if isinstance(event, Notification):
                    yield event

    def set_timeout(self, timeout: float | None) -> None:
        """Change how long a read may block (``None``: forever, for following streams)."""
        self._sock.settimeout(timeout)

    # -- websocket framing ---------------------------------------------------------------------

    def _handshake(self, headers: dict[str, str]) -> None:
        key = base64.b64encode(os.urandom(16))
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        self._sock.sendall(request.encode())
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            reason = lines[0]
            raise InvalidRequest(f"the server refused the connection: {reason}")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if fields.get("sec-websocket-accept") != expected:
            raise InvalidRequest("the server's WebSocket handshake answer is invalid")

    def _fill(self) -> None:
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError as exc:
            raise ConnectionLost(f"no answer from {self.path} in time") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection to {self.path} failed: {exc}") from exc
        if not chunk:
            raise ConnectionLost(f"the daemon closed the connection on {self.path}")
        self._buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        key = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        self._sock.sendall(header + key + _mask(payload, key))

    def _read_message(self) -> bytes:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            key = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if key:
                payload = _mask(payload, key)
            if opcode == _OP_PING:
                self._send_frame(_OP_PONG, payload)
                continue
            if opcode == _OP_PONG:
                continue
            if opcode == _OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                reason = payload[2:].decode(errors="replace")
                self.close()
                raise ConnectionLost(
                    f"the daemon closed the connection (code {code}: {reason or 'no reason'})"
                )
            if opcode in (_OP_TEXT, _OP_BINARY, _OP_CONT):
                parts.append(payload)
                if fin:
                    return b"".join(parts)

    def _read_events(self) -> list[Request | Notification | Response | ErrorResponse]:
        events = self._ep.receive(self._read_message())
        for frame in self._ep.data_to_send():
            self._send_frame(_OP_TEXT, frame.encode())
        out: list[Request | Notification | Response | ErrorResponse] = []
        for event in events:
            if isinstance(event, Request):
                # Clients serve no methods.
                err = AosError(f"this client serves no methods ({event.method})")
                self._send_frame(_OP_TEXT, Endpoint.error(event.id, err).encode())
            else:
                out.append(event)
        return out
