"""The agent gateway: how an agent's bash reaches skills, and nothing else.

Each dispatch gets a random token, valid only while the dispatch lives, given to its commands as
``AOS_TOKEN`` (with ``AOS_GATEWAY``, the socket ``$AOS_HOME/run/agent.sock``). A client presents
it in the ``X-AOS-Token`` header of the WebSocket handshake. The only call allowed is
``command.invoke {skill, command, args}`` for a skill enabled in the dispatch's session; the kernel
forwards it to that skill's service with the caller's agent, session and dispatch. The agent never
holds a kernel credential and cannot call any syscall.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection

from aos_sdk.connection import RpcConnection
from aos_sdk.errors import InvalidParams, NotFound, PermissionDenied, Unavailable
from aos_sdk.protocol import Request

from ..logs import get_logger
from ..skills.supervisor import State
from .sockets import serve_private

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Gateway", "Grant"]

log = get_logger("aos.gateway")


@dataclass(frozen=True)
class Grant:
    """What a token stands for."""

    dispatch_id: str
    session_id: str
    agent_id: str


class Gateway:
    """Dispatch-scoped tokens and the socket agents' skill CLIs connect to."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.path: Path = kernel.paths.agent_sock
        self.grants: dict[str, Grant] = {}
        self.server: Server | None = None

    def issue(self, dispatch_id: str, session_id: str, agent_id: str) -> str:
        token = secrets.token_urlsafe(24)
        self.grants[token] = Grant(dispatch_id, session_id, agent_id)
        return token

    def revoke(self, token: str) -> None:
        self.grants.pop(token, None)

    async def start(self) -> None:
        self.server = await serve_private(self._handle, self.path, max_size=16 * 1024 * 1024)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _handle(self, ws: ServerConnection) -> None:
        token = ws.request.headers.get("X-AOS-Token", "") if ws.request is not None else ""
        if token not in self.grants:
            await ws.close(1008, "invalid or expired token: skill CLIs work only inside a running dispatch")
            return

        async def on_request(req: Request) -> Any:
            grant = self.grants.get(token)
            if grant is None:
                raise PermissionDenied("the dispatch this token belonged to has ended")
            if req.method != "command.invoke":
                raise PermissionDenied(
                    f"{req.method} is not allowed here: the agent gateway only invokes skill commands"
                )
            return await self.invoke(grant, req.params)

        await RpcConnection(ws, on_request=on_request).run()

    async def invoke(self, grant: Grant, params: dict[str, Any]) -> Any:
        skill, command = params.get("skill"), params.get("command")
        if not isinstance(skill, str) or not isinstance(command, str):
            raise InvalidParams("command.invoke needs {skill, command, args}")
        if not self.kernel.skill_applies(skill, {"session_id": grant.session_id}):
            raise PermissionDenied(f"skill {skill!r} is not enabled in this session", skill=skill)
        runner = self.kernel.services.runners.get(skill)
        if runner is None:
            raise NotFound(f"skill {skill!r} has no service", skill=skill)
        if runner.conn is None or runner.state.state != State.RUNNING:
            raise Unavailable(f"the service of skill {skill!r} is {runner.state.state.value}", skill=skill)
        if command not in {c["name"] for c in runner.commands}:
            names = ", ".join(sorted(c["name"] for c in runner.commands)) or "none"
            raise NotFound(f"skill {skill!r} has no command {command!r} (commands: {names})", skill=skill)
        caller = {
            "agent_id": grant.agent_id,
            "session_id": grant.session_id,
            "dispatch_id": grant.dispatch_id,
        }
        return await runner.conn.call(
            "command.call",
            {"command": command, "args": params.get("args") or {}, "caller": caller},
            timeout=120,
        )
