"""Errors that cross the AOS wire, each with a stable JSON-RPC code.

The tree::

    AosError
    ├── ProtocolError        -32700 parse_error, -32600 invalid_request
    ├── MethodNotFound       -32601 method_not_found
    ├── InvalidParams        -32602 invalid_params
    ├── InternalError        -32603 internal
    ├── NotFound             -32001 not_found
    ├── PermissionDenied     -32002 permission_denied
    ├── SessionBusy          -32003 session_busy
    ├── Conflict             -32004 conflict
    │   └── StaleEpoch       -32005 stale_epoch
    ├── Archived             -32006 archived
    ├── Overloaded           -32007 overloaded
    ├── Unavailable          -32008 unavailable
    ├── ConnectionLost       -32009 connection_lost (client side only)
    └── Rejected             -32010 rejected (a gate hook refused the operation)

A server turns an exception into ``{"code", "message", "data": {"type", ...}}``; a client turns
that back into the same class with :func:`from_error`, so ``except SessionBusy`` works on both
sides of a socket. Codes never change meaning once published.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AosError",
    "Archived",
    "Conflict",
    "ConnectionLost",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "MethodNotFound",
    "NotFound",
    "Overloaded",
    "ParseError",
    "PermissionDenied",
    "ProtocolError",
    "Rejected",
    "SessionBusy",
    "StaleEpoch",
    "Unavailable",
    "from_error",
    "lookup",
]


class AosError(Exception):
    """Base of every error AOS sends over the wire."""

    code: ClassVar[int] = -32603
    type: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object for this exception."""
        return {"code": self.code, "message": self.message, "data": {"type": self.type, **self.details}}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def _rebuild(cls: type[AosError], message: str, details: dict[str, Any]) -> AosError:
    return cls(message, **details)


class ProtocolError(AosError):
    """The frame was not valid JSON-RPC 2.0."""

    code = -32600
    type = "invalid_request"


class ParseError(ProtocolError):
    """The frame was not valid JSON."""

    code = -32700
    type = "parse_error"


class InvalidRequest(ProtocolError):
    """Valid JSON, but not a valid JSON-RPC request (or over a size limit)."""

    code = -32600
    type = "invalid_request"


class MethodNotFound(AosError):
    """No syscall (or command) of that name exists."""

    code = -32601
    type = "method_not_found"


class InvalidParams(AosError):
    """The params did not validate; ``details["errors"]`` lists each problem."""

    code = -32602
    type = "invalid_params"


class InternalError(AosError):
    """The server failed; the daemon log has the traceback."""

    code = -32603
    type = "internal"


class NotFound(AosError):
    """The agent, session, fact, content or other object does not exist."""

    code = -32001
    type = "not_found"


class PermissionDenied(AosError):
    """The caller may not do this (wrong socket, missing permission, foreign content)."""

    code = -32002
    type = "permission_denied"


class SessionBusy(AosError):
    """Another writer holds the session's lease."""

    code = -32003
    type = "session_busy"


class Conflict(AosError):
    """The request conflicts with current state (duplicate name, wrong revision)."""

    code = -32004
    type = "conflict"


class StaleEpoch(Conflict):
    """A history write carried a lease epoch that is no longer current."""

    code = -32005
    type = "stale_epoch"


class Archived(AosError):
    """The agent or session is archived and takes no more writes."""

    code = -32006
    type = "archived"


class Overloaded(AosError):
    """Too many requests in flight on this connection; retry later."""

    code = -32007
    type = "overloaded"


class Unavailable(AosError):
    """The daemon is not running, starting or stopping."""

    code = -32008
    type = "unavailable"


class ConnectionLost(AosError):
    """The connection closed before the answer arrived (the outcome is unknown)."""

    code = -32009
    type = "connection_lost"


class Rejected(AosError):
    """A gate hook refused the operation; ``details["skill"]`` names the skill."""

    code = -32010
    type = "rejected"


_BY_CODE: dict[int, type[AosError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        NotFound,
        PermissionDenied,
        SessionBusy,
        Conflict,
        StaleEpoch,
        Archived,
        Overloaded,
        Unavailable,
        ConnectionLost,
        Rejected,
    )
}


def lookup(code: int) -> type[AosError]:
    """The exception class for a JSON-RPC error code (``AosError`` for unknown codes)."""
    return _BY_CODE.get(code, AosError)


def from_error(error: Any) -> AosError:
    """Rebuild the exception a server sent as a JSON-RPC ``error`` object."""
    if not isinstance(error, dict):
        return InternalError(f"malformed error object: {error!r}")
    code = error.get("code")
    message = str(error.get("message", ""))
    data = error.get("data")
    details = {k: v for k, v in data.items() if k != "type"} if isinstance(data, dict) else {}
    cls = lookup(code) if isinstance(code, int) else AosError
    exc = cls(message, **details)
    if cls is AosError and isinstance(code, int):
        exc.code = code  # type: ignore[misc]
    return exc
