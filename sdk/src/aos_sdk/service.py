"""Skill services: ``define_service`` and the loop that serves the kernel.

A service is a long-running process the kernel starts for a skill. It connects to the socket in
``$AOS_SOCKET``, registers its hooks and commands, then answers the kernel's calls::

    from aos_sdk import define_service

    @define_service
    def service():
        def guard(input_data, output_data):
            if "rm -rf /" in output_data["args"]["command"]:
                return {"verdict": "reject", "reason": "destructive"}
            return output_data
        return {"hooks": {"tool.before": guard}}

A hook's value may also be a dict: ``{"handler": fn, "priority": 10, "timeout_s": 2,
"failure": "open"}``. Commands (``{"commands": {"name": fn}}``) are what the skill's CLIs call
through the agent gateway. ``{"start": fn}`` runs ``fn()`` once registered (to pick up work left
from before a restart, say); its failure is printed to the skill's log and does not stop it. Handlers may be sync or async and get ``(input_data, output_data)``;
sync handlers run on the event loop, so keep them quick and use ``async def`` for I/O.
:attr:`Service.kernel` is the connection for calling syscalls (those in ``aos-permissions``).

The kernel runs a Python ``service.py`` as ``python -m aos_sdk.runner service.py``, so the file
needs no ``run()`` call of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .connection import RpcConnection, open_connection
from .errors import InvalidParams, MethodNotFound
from .protocol import Request

__all__ = ["CommandSpec", "HookSpec", "Service", "define_service", "registry"]


@dataclass(frozen=True)
class HookSpec:
    hook: str
    handler: Callable[..., Any]
    priority: int = 100
    timeout_s: float = 5.0
    failure: str = "closed"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    handler: Callable[..., Any]
    description: str = ""
    schema: dict[str, Any] | None = None


_registry: list[Service] = []


def registry() -> list[Service]:
    """Services defined so far in this process (the runner starts the last one)."""
    return list(_registry)


def _log_traceback(req: Request, exc: BaseException) -> None:
    """A handler raised: the caller gets ``internal``; the service's log (stderr, which the daemon
    keeps in ``$AOS_HOME/logs/skills/<skill>.log``) gets the traceback."""
    what = req.params.get("command") or req.params.get("hook") or req.method
    print(f"{req.method} {what!r} failed:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass
class Service:
    """A service defined with :func:`define_service`."""

    factory: Callable[[], dict[str, Any]]
    hooks: dict[str, HookSpec] = field(default_factory=dict)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    kernel: RpcConnection | None = None
    start: Callable[[], Any] | None = None

    def load(self) -> None:
        """Call the factory and read its hooks and commands.

        Raises:
            InvalidParams: the factory returned something else than ``{"hooks", "commands"}``.
        """
        spec = self.factory()
        if not isinstance(spec, dict) or set(spec) - {"hooks", "commands", "start"}:
            raise InvalidParams("a service must return {'hooks': {...}, 'commands': {...}, 'start': fn}")
        if spec.get("start") is not None:
            if not callable(spec["start"]):
                raise InvalidParams("'start' must be a function")
            self.start = spec["start"]
        for name, value in (spec.get("hooks") or {}).items():
            if callable(value):
                self.hooks[name] = HookSpec(name, value)
            elif isinstance(value, dict) and callable(value.get("handler")):
                opts = {k: value[k] for k in ("priority", "timeout_s", "failure") if k in value}
                self.hooks[name] = HookSpec(name, value["handler"], **opts)
            else:
                raise InvalidParams(f"hook {name!r}: give a function or {{'handler': fn, ...}}")
        for name, value in (spec.get("commands") or {}).items():
            if callable(value):
                doc = inspect.getdoc(value) or ""
                self.commands[name] = CommandSpec(name, value, doc.splitlines()[0] if doc else "")
            elif isinstance(value, dict) and callable(value.get("handler")):
                self.commands[name] = CommandSpec(
                    name, value["handler"], str(value.get("description", "")), value.get("schema")
                )
            else:
                raise InvalidParams(f"command {name!r}: give a function or {{'handler': fn, ...}}")

    def registration(self) -> dict[str, Any]:
        return {
            "hooks": [
                {"hook": h.hook, "priority": h.priority, "timeout_s": h.timeout_s, "failure": h.failure}
                for h in self.hooks.values()
            ],
            "commands": [
                {"name": c.name, "description": c.description, "schema": c.schema}
                for c in self.commands.values()
            ],
        }

    async def _serve_request(self, req: Request) -> Any:
        p = req.params
        if req.method == "hook.call":
            spec = self.hooks.get(str(p.get("hook")))
            if spec is None:
                raise MethodNotFound(f"this service has no handler for hook {p.get('hook')!r}")
            return await _call(spec.handler, p.get("input") or {}, p.get("output"))
        if req.method == "command.call":
            cmd = self.commands.get(str(p.get("command")))
            if cmd is None:
                raise MethodNotFound(f"this service has no command {p.get('command')!r}")
            return await _call(cmd.handler, p.get("args") or {}, p.get("caller") or {})
        if req.method == "service.ping":
            return {"ok": True}
        raise MethodNotFound(f"a service does not serve {req.method!r}")

    async def serve(self, socket_path: str) -> None:
        """Connect, register, and serve until the kernel closes the connection."""
        if not self.hooks and not self.commands:
            self.load()
        # No in-flight limit on what the kernel asks: under load (100 sessions through a gate) a
        # limit meant for untrusted clients made gates fail closed.
        async with open_connection(
            socket_path, on_request=self._serve_request, on_internal_error=_log_traceback, max_in_flight=None
        ) as conn:
            self.kernel = conn
            await conn.call("service.register", self.registration(), timeout=10)
            started = asyncio.create_task(self._start()) if self.start is not None else None
            await conn.wait_closed()
            if started is not None:
                started.cancel()

    async def report(self, problem: str | None) -> None:
        """Tell the daemon what is wrong with this service while it keeps running (``None``:
        nothing any more). ``aos skills`` and the web UI show it beside the service's state."""
        if self.kernel is None:
            raise RuntimeError("report() needs the service to be connected to the daemon")
        await self.kernel.call("service.report", {"problem": problem}, timeout=10)

    async def _start(self) -> None:
        assert self.start is not None
        try:
            await _call(self.start)
        except Exception as exc:  # the service keeps serving; the log says why
            print(f"start() failed: {type(exc).__name__}: {exc}", flush=True)

    def run(self) -> None:
        """Serve the kernel named by ``$AOS_SOCKET`` (what the runner calls)."""
        path = os.environ.get("AOS_SOCKET")
        if not path:
            raise SystemExit("AOS_SOCKET is not set: services are started by the AOS daemon")
        asyncio.run(self.serve(path))


def define_service(factory: Callable[[], dict[str, Any]]) -> Service:
    """Declare a service: ``factory`` returns ``{"hooks": {...}, "commands": {...}}``."""
    svc = Service(factory)
    _registry.append(svc)
    return svc
