"""One skill's service: its socket, its process, its registration, its supervision loop.

A :class:`ServiceRunner` listens on the skill's own socket, starts the service in a process group
of its own with a clean environment, accepts its ``service.register`` (hooks and commands) and
``service.report`` (a problem it has while running), proxies the kernel's hook and command calls
to it, checks its syscalls against its ``aos-permissions``, and restarts it per
:mod:`aos.skills.supervisor`. :class:`~aos.skills.services.ServiceManager` runs one per skill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection

from aos_sdk.connection import RpcConnection
from aos_sdk.errors import InvalidParams
from aos_sdk.protocol import Request

from ..kernel import procs
from ..kernel.hooks import HOOKS, HookError, HookHandler
from ..kernel.sockets import serve_private
from ..logs import get_logger
from .manifest import SkillManifest
from .supervisor import ServiceState, State

if TYPE_CHECKING:
    from .services import ServiceManager

__all__ = ["SERVICE_ENV", "ServiceRunner", "service_env"]

log = get_logger("aos.services")

#: What a service inherits of the daemon's environment, besides what its SKILL.md declares
#: (``metadata.aos-env``). Provider keys and everything else stay out.
SERVICE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPATH",
    "AOS_LOG_LEVEL",
)


def service_env(declared: tuple[str, ...] = ()) -> dict[str, str]:
    """A service's environment: :data:`SERVICE_ENV` plus the variables its skill declares."""
    return {k: os.environ[k] for k in (*SERVICE_ENV, *declared) if k in os.environ}


class ServiceRunner:
    """One skill's service: its socket, its process, its registration."""

    def __init__(self, manager: ServiceManager, manifest: SkillManifest, *, generation: int = 0) -> None:
        self.manager = manager
        self.manifest = manifest
        self.name = manifest.name
        self.state = ServiceState(self.name, manager.policy)
        # A replacement (hot reload) listens on a socket of its own until it takes over.
        suffix = f".{generation}" if generation else ""
        self.sock = manager.kernel.paths.services / f"{self.name}{suffix}.sock"
        self._handlers: list[HookHandler] = []
        self.conn: RpcConnection | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.server: Server | None = None
        self.registered = asyncio.Event()
        self.hooks: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._changed = asyncio.Event()
        #: A problem the running service reported about itself (``service.report``), e.g. a port
        #: it could not bind; None when it reported none. Cleared when it registers again.
        self.problem: str | None = None

    def _moved(self) -> None:
        self._changed.set()
        self.manager._changed.set()

    async def wait_state(self, *targets: State) -> State:
        """Return once the service is in one of ``targets`` (tests, tools)."""
        await self.wait_for(lambda: self.state.state in targets)
        return self.state.state

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked whenever the service's state, registration
        or reported problem changes (tests, tools)."""
        while not condition():
            self._changed.clear()
            if condition():
                break
            await self._changed.wait()

    # -- the socket ----------------------------------------------------------------------------

    async def open_socket(self) -> None:
        self.server = await serve_private(
            self._handle, self.sock, max_size=64 * 1024 * 1024, ping_interval=20
        )

    async def _handle(self, ws: ServerConnection) -> None:
        from ..kernel.kernel import CallContext, Caller

        ctx = CallContext(Caller("service", self.name, self.manifest.permissions))

        async def on_request(req: Request) -> Any:
            if req.method == "service.register":
                return self._register(conn, req.params)
            if req.method == "service.report":
                return self._report(req.params)
            return await self.manager.kernel.invoke(ctx, req.method, req.params)

        # No in-flight limit: a service's syscalls mostly serve the kernel's own hook calls (aos-context
        # reads history while assembling), so under load a limit meant for untrusted clients made
        # hooks fail. Services are trusted code the operator installed; agents never get this socket.
        conn = RpcConnection(ws, on_request=on_request, max_in_flight=None)
        ctx.conn = conn
        try:
            await conn.run()
        finally:
            self.manager.kernel.close_context(ctx)
            if self.conn is conn:
                self.conn = None
                proc = self.proc
                if not self._stopping and proc is not None and proc.returncode is None:
                    # Registered, but its connection died (keepalive pings unanswered, or it
                    # closed the socket): the process is of no use; end it so it is restarted.
                    log.warning("service.connection_lost", skill=self.name)
                    self._kill(proc)

    def _register(self, conn: RpcConnection, params: dict[str, Any]) -> dict[str, Any]:
        hooks = params.get("hooks") or []
        for h in hooks:
            if h.get("hook") not in HOOKS:
                raise InvalidParams(
                    f"unknown hook {h.get('hook')!r}; known hooks: {', '.join(sorted(HOOKS))}"
                )
        bus = self.manager.kernel.hooks
        try:
            handlers = [
                HookHandler(
                    h["hook"],
                    self.name,
                    self._proxy(h["hook"]),
                    priority=int(h.get("priority", 100)),
                    timeout_s=float(h.get("timeout_s", 5.0)),
                    failure=h.get("failure", "closed"),
                    applies=self.manager.applies(self.name),
                )
                for h in hooks
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParams(f"malformed hook registration: {exc}") from exc
        # Replace every handler of this skill (an older version's too) in one go.
        bus.unregister_skill(self.name)
        try:
            for handler in handlers:
                bus.register(handler)
        except HookError as exc:
            bus.unregister_skill(self.name)
            raise InvalidParams(str(exc)) from exc
        self._handlers = handlers
        self.hooks = hooks
        self.commands = list(params.get("commands") or [])
        self.conn = conn
        self.problem = None
        self.state.registered(time.monotonic())
        self.registered.set()
        self._moved()
        log.info(
            "service.registered",
            skill=self.name,
            hooks=[h["hook"] for h in hooks],
            commands=len(self.commands),
        )
        return {"ok": True, "skill": self.name}

    def reinstate(self) -> None:
        """Register this runner's handlers again (after a failed replacement removed them)."""
        bus = self.manager.kernel.hooks
        bus.unregister_skill(self.name)
        for handler in self._handlers:
            bus.register(handler)

    def _proxy(self, hook: str) -> Any:
        async def call(input_data: dict[str, Any], output_data: Any) -> Any:
            conn = self.conn
            if conn is None:
                raise RuntimeError(
                    f"the service of skill {self.name} is not running ({self.state.state.value})"
                )
            return await conn.call("hook.call", {"hook": hook, "input": input_data, "output": output_data})

        return call

    # -- the process ---------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        assert self.manifest.service is not None
        parts = shlex.split(self.manifest.service)
        target = str(self.manifest.path / parts[0])
        if target.endswith(".py"):
            return [sys.executable, "-m", "aos_sdk.runner", target, *parts[1:]]
        return [target, *parts[1:]]

    async def _spawn(self) -> asyncio.subprocess.Process:
        logs = self.manager.kernel.paths.logs / "skills"
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            **service_env(self.manifest.env),
            "AOS_SOCKET": str(self.sock),
            "AOS_SKILL": self.name,
            "AOS_HOME": str(self.manager.kernel.paths.home),
        }
        with open(logs / f"{self.name}.log", "ab") as out:  # noqa: ASYNC230 - local, once per (re)start
            out.write(f"--- starting {self.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            out.flush()
            with procs.spawning():
                proc = await asyncio.create_subprocess_exec(
                    *self._argv(),
                    cwd=str(self.manifest.path),
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
                procs.track(proc.pid)
        return proc

    def revive(self) -> bool:
        """Start a quarantined service again (a person asked: ``aos skills reload <name>``)."""
        if self.state.state != State.QUARANTINED:
            return False
        self.state.start(time.monotonic())
        self._moved()
        self._wake.set()
        log.info("service.revived", skill=self.name)
        return True

    async def supervise(self) -> None:
        """Keep the service up per the state machine until stopped."""
        await self.open_socket()
        try:
            while not self._stopping:
                if self.state.state == State.QUARANTINED:
                    log.error("service.quarantined", skill=self.name, error=self.state.last_error)
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self.state.start(time.monotonic())
                self._moved()
                self.registered.clear()
                try:
                    self.proc = await self._spawn()
                except OSError as exc:
                    self.state.exited(time.monotonic(), f"cannot start: {exc}", random.random())
                    await self._backoff()
                    continue
                reason = await self._run_once(self.proc)
                procs.untrack(self.proc.pid)
                self.conn = None
                if self._stopping:
                    return
                self.state.exited(time.monotonic(), reason, random.random())
                self._moved()
                log.warning("service.exited", skill=self.name, reason=reason, state=self.state.state.value)
                self.manager.kernel.hooks.event("skill.crashed", {"skill": self.name, "reason": reason})
                await self._backoff()
        finally:
            if self.server is not None:
                self.server.close()
            self.sock.unlink(missing_ok=True)

    async def _run_once(self, proc: asyncio.subprocess.Process) -> str:
        exited = asyncio.ensure_future(proc.wait())
        registered = asyncio.ensure_future(self.registered.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, registered},
                timeout=self.state.policy.register_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                self._kill(proc)
                await proc.wait()
                return f"did not register within {self.state.policy.register_timeout_s:g} s"
            if exited in done and not self.registered.is_set():
                return f"exited with code {proc.returncode} before registering (see its log)"
            self.manager.kernel.hooks.event("skill.started", {"skill": self.name})
            code = await exited
            return f"exited with code {code}"
        finally:
            registered.cancel()

    async def _backoff(self) -> None:
        if self.state.state != State.BACKOFF or self.state.next_start is None:
            return
        delay = max(0.0, self.state.next_start - time.monotonic())
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    async def stop(self) -> None:
        """SIGTERM the service's group, SIGKILL after the grace period; unregister its hooks."""
        self._stopping = True
        self.state.stop(time.monotonic())
        self._wake.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            self._kill(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.state.policy.stop_grace_s)
            except TimeoutError:
                self._kill(proc)
                await proc.wait()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.manager.kernel.hooks.unregister(self._handlers)  # only ours: a newer version may serve now
        self.state.exited(time.monotonic(), "stopped")
        self._moved()
        self.manager.kernel.hooks.event("skill.stopped", {"skill": self.name})

    def _report(self, params: dict[str, Any]) -> dict[str, Any]:
        """``service.report``: the service says what is wrong with it while it runs (or that
        nothing is, with ``problem: null``). Shown by ``aos skills`` and the web UI."""
        problem = params.get("problem")
        if problem is not None and (not isinstance(problem, str) or not problem.strip()):
            raise InvalidParams("service.report: problem must be a non-empty string or null")
        if problem is not None and "\x00" in problem:
            raise InvalidParams("service.report: problem holds a NUL byte")
        self.problem = None if problem is None else problem.strip()[:2000]
        if self.problem:
            log.warning("service.problem", skill=self.name, problem=self.problem)
        self._moved()
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.state.value,
            "pid": self.proc.pid if self.proc is not None and self.proc.returncode is None else None,
            "restarts": self.state.restarts,
            "last_error": self.state.last_error,
            "problem": self.problem,
            # A changed version that failed to start: the one above still serves.
            "reload_failed": self.manager.reload_failures.get(self.name),
            "hooks": [h["hook"] for h in self.hooks],
            "permissions": sorted(self.manifest.permissions),
            "env": list(self.manifest.env),
            "commands": [c["name"] for c in self.commands],
        }
