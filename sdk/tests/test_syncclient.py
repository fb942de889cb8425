"""The stdlib sync client against the real websockets server (the kernel's transport)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, unix_serve

from aos_sdk.errors import ConnectionLost, InvalidParams, Unavailable
from aos_sdk.protocol import Endpoint
from aos_sdk.syncclient import SyncClient


async def handler(ws: ServerConnection) -> None:
    ep = Endpoint()
    async for message in ws:
        for req in ep.receive(message):
            method, params = req.method, req.params  # type: ignore[union-attr]
            rid = req.id  # type: ignore[union-attr]
            if method == "echo":
                await ws.send(Endpoint.result(rid, params))
            elif method == "fragmented":
                text = Endpoint.result(rid, {"big": "y" * 100_000})
                await ws.send([text[i : i + 7000] for i in range(0, len(text), 7000)])
            elif method == "ping-then-answer":
                await ws.ping(b"are you there")
                await ws.send(Endpoint.notification("note", {"n": 1}))
                await ws.send(Endpoint.result(rid, "ok"))
            elif method == "fail":
                await ws.send(Endpoint.error(rid, InvalidParams("bad thing", errors=[1])))
            elif method == "close":
                await ws.close(1011, "going away now")
        for out in ep.data_to_send():
            await ws.send(out)


@pytest.fixture
async def sock() -> AsyncIterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aos-sdk-"))
    path = d / "s.sock"
    async with unix_serve(handler, str(path), compression=None, max_size=None):
        yield path
    shutil.rmtree(d, ignore_errors=True)


async def in_thread(path: Path, fn: Any) -> Any:
    def run() -> Any:
        with SyncClient(path, timeout=5) as c:
            return fn(c)

    return await asyncio.to_thread(run)


async def test_small_and_large_payloads(sock: Path) -> None:
    for size in (0, 10, 125, 126, 65535, 65536, 1_000_000):
        payload = {"s": "x" * size}
        assert await in_thread(sock, lambda c, p=payload: c.call("echo", p)) == payload


async def test_fragmented_message_is_reassembled(sock: Path) -> None:
    result = await in_thread(sock, lambda c: c.call("fragmented"))
    assert result == {"big": "y" * 100_000}


async def test_pings_are_answered_and_notifications_kept(sock: Path) -> None:
    def run(c: SyncClient) -> Any:
        answer = c.call("ping-then-answer")
        note = next(iter(c.notifications()))
        return answer, note.method, note.params

    assert await in_thread(sock, run) == ("ok", "note", {"n": 1})


async def test_errors_are_raised_as_their_class(sock: Path) -> None:
    def run(c: SyncClient) -> Any:
        with pytest.raises(InvalidParams, match="bad thing") as info:
            c.call("fail")
        return info.value.details

    assert await in_thread(sock, run) == {"errors": [1]}


async def test_server_close_raises_connection_lost(sock: Path) -> None:
    def run(c: SyncClient) -> str:
        with pytest.raises(ConnectionLost, match="1011") as info:
            c.call("close")
        return str(info.value)

    assert "going away now" in await in_thread(sock, run)


def test_no_daemon_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="is the daemon running"):
        SyncClient(tmp_path / "nothing.sock")
