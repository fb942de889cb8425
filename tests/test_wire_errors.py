"""Bad input on the kernel socket gets a clear JSON-RPC error and the daemon keeps serving."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed

from aos_sdk.connection import open_connection

SMALL = {"max_frame_bytes": 4096, "max_in_flight": 4}


async def raw(kernel: Any) -> ClientConnection:
    return await unix_connect(
        str(kernel.paths.kernel_sock), uri="ws://localhost/", compression=None, max_size=None
    )


async def ask(ws: ClientConnection, frame: str | bytes) -> dict[str, Any]:
    await ws.send(frame)
    return json.loads(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[no-any-return]


async def still_serving(kernel: Any) -> None:
    async with open_connection(kernel.paths.kernel_sock) as conn:
        st = await conn.call("system.status", timeout=5)
        assert st["pid"] > 0


async def test_malformed_frames_get_errors_and_connection_survives(kernel: Any) -> None:
    ws = await raw(kernel)
    cases: list[tuple[str | bytes, int, str]] = [
        ("{not json", -32700, "not valid JSON"),
        ("[1, 2]", -32600, "batch"),
        ("42", -32600, "JSON object"),
        ('{"jsonrpc": "1.0", "id": 1, "method": "system.status"}', -32600, '"jsonrpc": "2.0"'),
        (
            '{"jsonrpc": "2.0", "id": 1, "method": "agent.list", "params": [1]}',
            -32600,
            "params must be an object",
        ),
        ('{"jsonrpc": "2.0", "id": true, "method": "agent.list"}', -32600, "id must be"),
        ('{"jsonrpc": "2.0", "id": 2, "method": ""}', -32600, "method"),
        (b"\xff\xfe binary garbage", -32700, "not valid JSON"),
    ]
    for frame, code, text in cases:
        reply = await ask(ws, frame)
        assert reply["error"]["code"] == code, frame
        assert text in reply["error"]["message"], (frame, reply)
    # The same connection still answers a proper request.
    ok = await ask(ws, '{"jsonrpc": "2.0", "id": 7, "method": "agent.list", "params": {}}')
    assert ok == {"jsonrpc": "2.0", "id": 7, "result": {"agents": []}}
    await ws.close()


async def test_unknown_method_and_bad_params(kernel: Any) -> None:
    ws = await raw(kernel)
    r = await ask(ws, '{"jsonrpc": "2.0", "id": 1, "method": "agent.gett", "params": {}}')
    assert r["error"]["code"] == -32601
    assert "did you mean 'agent.get'" in r["error"]["message"]
    r = await ask(ws, '{"jsonrpc": "2.0", "id": 2, "method": "agent.get", "params": {"agnet": "x"}}')
    assert r["error"]["code"] == -32602
    locs = sorted(tuple(e["loc"]) for e in r["error"]["data"]["errors"])
    assert locs == [("agent",), ("agnet",)]
    r = await ask(ws, '{"jsonrpc": "2.0", "id": 3, "method": "session.list", "params": {"limit": 0}}')
    assert r["error"]["code"] == -32602 and "limit" in r["error"]["message"]
    await ws.close()


@pytest.mark.parametrize("kernel", [SMALL], indirect=True)
async def test_oversized_frame_is_refused_clearly(kernel: Any) -> None:
    ws = await raw(kernel)
    big = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "agent.create",
            "params": {"name": "a", "instructions": "x" * 5000},
        }
    )
    r = await ask(ws, big)
    assert r["error"]["code"] == -32600
    assert "exceeds the limit of 4096 bytes" in r["error"]["message"]
    assert r["error"]["data"]["limit"] == 4096
    ok = await ask(ws, '{"jsonrpc": "2.0", "id": 2, "method": "agent.list"}')
    assert ok["result"] == {"agents": []}

    # Past twice the limit, the WebSocket layer closes the connection (code 1009)...
    await ws.send("x" * 10000)
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    # ...and the daemon keeps serving everyone else.
    await still_serving(kernel)


@pytest.mark.parametrize("kernel", [SMALL], indirect=True)
async def test_in_flight_limit_answers_overloaded(kernel: Any) -> None:
    ws = await raw(kernel)
    n = 40
    for i in range(n):
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "system.status"}))
    replies = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(n)]
    assert sorted(r["id"] for r in replies) == list(range(n))
    overloaded = [r for r in replies if "error" in r]
    assert overloaded, "more than 4 requests at once must be refused"
    assert all(r["error"]["code"] == -32007 for r in overloaded)
    assert "more than 4 requests in flight" in overloaded[0]["error"]["message"]
    assert any("result" in r for r in replies)
    await ws.close()
    await still_serving(kernel)


async def test_non_websocket_client_does_not_hurt_the_daemon(kernel: Any) -> None:
    def garbage() -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(kernel.paths.kernel_sock))
            s.sendall(b"HELLO THERE\r\n\r\n")
            return s.recv(1000)

    answer = await asyncio.to_thread(garbage)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4")  # refused or closed, never served
    await still_serving(kernel)


async def test_socket_is_private(kernel: Any) -> None:
    mode = kernel.paths.kernel_sock.stat().st_mode & 0o777
    assert mode == 0o600
    assert kernel.paths.run.stat().st_mode & 0o777 == 0o700
