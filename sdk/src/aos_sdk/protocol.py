"""JSON-RPC 2.0 endpoint, sans I/O.

Both sides of an AOS socket are peers: either may send requests and notifications at any time.
:class:`Endpoint` turns incoming frames into events and outgoing calls into frames; it never
touches a socket, so the asyncio transport, the small sync client and tests all drive the same
code::

    ep = Endpoint()
    rid, frame = ep.request("agent.get", {"agent": "alice"})   # send frame
    for event in ep.receive(incoming_frame):                   # Request / Notification / Response
        ...
    for frame in ep.data_to_send():                            # protocol errors to answer with
        ...

Batches are not supported (they are answered with ``invalid_request``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import AosError, InvalidRequest, ParseError, from_error

try:  # orjson is a kernel dependency; the SDK works without it.
    import orjson

    def dumps(obj: Any) -> str:
        """Encode ``obj`` as compact JSON text."""
        return orjson.dumps(obj).decode()

    loads = orjson.loads
except ImportError:  # pragma: no cover - exercised only where orjson is missing

    def dumps(obj: Any) -> str:
        """Encode ``obj`` as compact JSON text."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    loads = json.loads  # type: ignore[assignment]

__all__ = ["Endpoint", "ErrorResponse", "Event", "Notification", "Request", "Response", "dumps", "loads"]


@dataclass(frozen=True, slots=True)
class Request:
    """An incoming call that expects an answer."""

    id: int | str
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notification:
    """An incoming message that expects no answer (server pushes, events)."""

    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    """The successful answer to one of our requests."""

    id: int | str
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """The failed answer to one of our requests, already turned into an exception."""

    id: int | str
    error: AosError


Event = Request | Notification | Response | ErrorResponse


def _error_frame(id_: int | str | None, exc: AosError) -> str:
    return dumps({"jsonrpc": "2.0", "id": id_, "error": exc.to_error()})


class Endpoint:
    """One side of a JSON-RPC conversation.

    Args:
        max_message_bytes: frames longer than this are answered with ``invalid_request``
            instead of being parsed. ``None`` means no limit.
    """

    def __init__(self, *, max_message_bytes: int | None = None) -> None:
        self.max_message_bytes = max_message_bytes
        self._next_id = 1
        self._outgoing: list[str] = []

    # -- sending -------------------------------------------------------------------------------

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, str]:
        """Make a request frame; returns its id and its text."""
        rid = self._next_id
        self._next_id += 1
        return rid, dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})

    @staticmethod
    def notification(method: str, params: dict[str, Any] | None = None) -> str:
        """Make a notification frame (no id, no answer)."""
        return dumps({"jsonrpc": "2.0", "method": method, "params": params or {}})

    @staticmethod
    def result(id_: int | str, result: Any) -> str:
        """Make the frame answering request ``id_`` with ``result``."""
        return dumps({"jsonrpc": "2.0", "id": id_, "result": result})

    @staticmethod
    def error(id_: int | str | None, exc: AosError) -> str:
        """Make the frame answering request ``id_`` with an error."""
        return _error_frame(id_, exc)

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, data: str | bytes) -> list[Event]:
        """Parse one frame. Malformed frames produce no event but queue an error answer."""
        size = len(data)
        if self.max_message_bytes is not None and size > self.max_message_bytes:
            self._outgoing.append(
                _error_frame(
                    None,
                    InvalidRequest(
                        f"frame of {size} bytes exceeds the limit of {self.max_message_bytes} bytes",
                        limit=self.max_message_bytes,
                        size=size,
                    ),
                )
            )
            return []
        try:
            msg = loads(data)
        except (ValueError, TypeError) as exc:
            self._outgoing.append(_error_frame(None, ParseError(f"frame is not valid JSON: {exc}")))
            return []
        if isinstance(msg, list):
            self._outgoing.append(_error_frame(None, InvalidRequest("batch requests are not supported")))
            return []
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            self._outgoing.append(
                _error_frame(None, InvalidRequest('frame must be a JSON object with "jsonrpc": "2.0"'))
            )
            return []
        event = self._classify(msg)
        return [] if event is None else [event]

    def _classify(self, msg: dict[str, Any]) -> Event | None:
        id_ = msg.get("id")
        if id_ is not None and (isinstance(id_, bool) or not isinstance(id_, int | str)):
            self._outgoing.append(_error_frame(None, InvalidRequest("id must be a string or an integer")))
            return None
        if "method" in msg:
            method = msg["method"]
            params = msg.get("params", {})
            if params is None:
                params = {}
            if not isinstance(method, str) or not method:
                self._outgoing.append(_error_frame(id_, InvalidRequest("method must be a non-empty string")))
                return None
            if not isinstance(params, dict):
                self._outgoing.append(
                    _error_frame(id_, InvalidRequest("params must be an object (named parameters)"))
                )
                return None
            if id_ is None:
                return Notification(method, params)
            return Request(id_, method, params)
        if id_ is None:
            # An error answer to something we could not parse; nothing to match it to.
            return None
        if "error" in msg:
            return ErrorResponse(id_, from_error(msg["error"]))
        if "result" in msg:
            return Response(id_, msg["result"])
        self._outgoing.append(_error_frame(id_, InvalidRequest("frame has neither method, result nor error")))
        return None

    def data_to_send(self) -> list[str]:
        """Frames the endpoint produced itself (answers to malformed input); clears the queue."""
        out, self._outgoing = self._outgoing, []
        return out
