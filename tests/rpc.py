"""A recording syscall helper: the final coverage test checks every syscall was round-tripped."""

from __future__ import annotations

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
