"""A recording syscall helper: the final coverage test checks every syscall was round-tripped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aos_sdk.connection import RpcConnection

COVERED: set[str] = set()


async def call(
    rpc: RpcConnection, method: str, params: dict[str, Any] | None = None, timeout: float = 10
) -> Any:
    COVERED.add(method)
    return await rpc.call(method, params or {}, timeout=timeout)


def workspace(home: Path, agent: str = "alice") -> Path:
    """The agent's default workspace, made now: the only place of this machine its sandboxed bash
    can write, so tests hand files and FIFOs to commands there."""
    ws = home / "workspaces" / agent
    ws.mkdir(parents=True, exist_ok=True)
    return ws


async def scripted_session(
    rpc: RpcConnection,
    model_url: str,
    agent: str = "alice",
    settings: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    """An agent whose model is the scripted server at ``model_url`` (created if new, with these
    extra ``settings``), and a fresh session of it; returns the session id."""
    existing = {a["name"] for a in (await call(rpc, "agent.list"))["agents"]}
    if agent not in existing:
        await call(
            rpc,
            "agent.create",
            {
                "name": agent,
                "model": "openai/scripted",
                "settings": {
                    "model_params": {"api_base": model_url, "api_key": "test-key"},
                    **(settings or {}),
                },
                **fields,
            },
        )
    return str((await call(rpc, "session.create", {"agent": agent}))["id"])


async def next_fact(
    kernel: Any, sid: str, pred: Any, *, after: int = 0, timeout: float = 30
) -> dict[str, Any]:
    """The first fact of ``sid`` after seq ``after`` for which ``pred`` holds, as the session's
    stream delivers it (it replays what is already there, then follows): a wait on the event."""
    from aos_sdk.connection import open_connection

    found: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_fact(note: Any) -> None:
        fact = note.params["fact"]
        if not found.done() and pred(fact):
            found.set_result(fact)

    async with open_connection(kernel.paths.kernel_sock, on_notification=on_fact) as sub:
        await sub.call("history.subscribe", {"session": sid, "after_seq": after})
        return await asyncio.wait_for(found, timeout)
