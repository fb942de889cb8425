"""A recording syscall helper: the final coverage test checks every syscall was round-tripped."""

from __future__ import annotations

from typing import Any

from aos_sdk.connection import RpcConnection

COVERED: set[str] = set()


async def call(
    rpc: RpcConnection, method: str, params: dict[str, Any] | None = None, timeout: float = 10
) -> Any:
    COVERED.add(method)
    return await rpc.call(method, params or {}, timeout=timeout)
