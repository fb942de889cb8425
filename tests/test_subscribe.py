"""history.subscribe: replay plus live stream, with nothing missed or repeated."""

from __future__ import annotations

import asyncio
from typing import Any

from aos_sdk.connection import open_connection
from aos_sdk.syncclient import SyncClient


async def test_late_subscriber_during_appends_misses_nothing(kernel: Any) -> None:
    total = 300
    async with open_connection(kernel.paths.kernel_sock) as c:
        await c.call("agent.create", {"name": "alice"})
        sid = (await c.call("session.create", {"agent": "alice"}))["id"]

        midway = asyncio.Event()

        async def writer() -> None:
            for i in range(total):
                await c.call("session.append", {"session": sid, "body": i})
                if i == 50:
                    midway.set()

        got: list[int] = []
        done = asyncio.Event()

        def on_fact(note: Any) -> None:
            got.append(note.params["fact"]["seq"])
            if len(got) == total:
                done.set()

        task = asyncio.create_task(writer())
        # Subscribe while the writer is mid-stream, replaying from the start.
        await midway.wait()
        async with open_connection(kernel.paths.kernel_sock, on_notification=on_fact) as sub:
            await sub.call("history.subscribe", {"session": sid, "after_seq": 0})
            await task
            await asyncio.wait_for(done.wait(), 20)
        assert got == list(range(1, total + 1))


async def test_live_only_subscription_starts_after_current(kernel: Any) -> None:
    async with open_connection(kernel.paths.kernel_sock) as c:
        await c.call("agent.create", {"name": "alice"})
        sid = (await c.call("session.create", {"agent": "alice"}))["id"]
        await c.call("session.append", {"session": sid, "body": "old"})
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with open_connection(
            kernel.paths.kernel_sock, on_notification=lambda n: got.put_nowait(n.params)
        ) as sub:
            res = await sub.call("history.subscribe", {"session": sid})
            assert res["last_seq"] == 1
            await c.call("session.append", {"session": sid, "role": "user", "body": {"text": "new"}})
            note = await asyncio.wait_for(got.get(), 5)
        assert note["subscription"] == res["subscription"]
        assert note["fact"]["seq"] == 2 and note["fact"]["body"] == {"text": "new"}
        assert note["fact"]["epoch"] == 0 and note["fact"]["role"] == "user"
        assert got.empty()


async def test_subscriptions_end_with_their_connection(kernel: Any) -> None:
    async with open_connection(kernel.paths.kernel_sock) as c:
        await c.call("agent.create", {"name": "alice"})
        sid = (await c.call("session.create", {"agent": "alice"}))["id"]
        async with open_connection(kernel.paths.kernel_sock) as sub:
            await sub.call("history.subscribe", {"session": sid})
            assert (await c.call("system.status"))["counts"]["subscriptions"] == 1
        await asyncio.wait_for(kernel.server.wait_connections(1), 5)
        assert (await c.call("system.status"))["counts"]["subscriptions"] == 0


async def test_sync_client_follows_a_stream(kernel: Any) -> None:
    async with open_connection(kernel.paths.kernel_sock) as c:
        await c.call("agent.create", {"name": "alice"})
        sid = (await c.call("session.create", {"agent": "alice"}))["id"]
        await c.call("session.append", {"session": sid, "body": "first"})

        def follow() -> list[Any]:
            with SyncClient(kernel.paths.kernel_sock, timeout=10) as sc:
                sc.call("history.subscribe", {"session": sid, "after_seq": 0})
                out = []
                for note in sc.notifications():
                    out.append(note.params["fact"]["body"])
                    if len(out) == 3:
                        return out
            return out

        reader = asyncio.create_task(asyncio.to_thread(follow))
        # Big enough to span several WebSocket reads.
        await c.call("session.append", {"session": sid, "body": "x" * 200_000})
        await c.call("session.append", {"session": sid, "body": "third"})
        bodies = await asyncio.wait_for(reader, 10)
    assert bodies == ["first", "x" * 200_000, "third"]
