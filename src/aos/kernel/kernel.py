"""The kernel: syscall dispatch, history subscriptions, the runtime log.

Owns no sockets and no processes (``server.py`` and ``daemon.py`` do), so tests can drive it
through a real socket or directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aos_sdk.connection import RpcConnection
from aos_sdk.errors import AosError, InvalidParams, MethodNotFound, Rejected

from .. import __version__
from ..config import Config, Paths
from ..db.store import SCHEMA_VERSION, Store
from ..logs import debug_enabled, get_logger
from ..loop import model_info, openai_wire
from ..loop.bash import setpriv_path
from ..loop.sandbox import Probe, SandboxSettings, resolve_settings
from ..loop.sandbox import probe as probe_sandbox
from ..loop.shell import write_tools
from ..pidlock import pid_namespace
from ..redact import scrub_values
from ..skills.index import SkillIndex, skill_roots
from ..skills.services import ServiceManager
from . import models as m
from .dispatch import Dispatcher
from .gateway import Gateway
from .hooks import Ask, HookBus, Reject
from .peers import Peers
from .runtime_log import RuntimeLog
from .streams import Streams, Subscription
from .syscalls import SYSCALLS, CallerKind, check_caller

__all__ = ["CallContext", "Caller", "DatabaseSettings", "Kernel"]

log = get_logger("aos.kernel")

#: Syscalls whose text params may hold NUL bytes (stored as bytes, not as PostgreSQL text).
_NUL_OK = frozenset({"content.put"})


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _nul_at(value: Any, loc: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """Where a NUL byte hides in a JSON-like value (PostgreSQL text and jsonb cannot hold one)."""
    if isinstance(value, str):
        return loc if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _nul_at(k, (*loc, k)) if isinstance(k, str) else None
            found = found or _nul_at(v, (*loc, k))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _nul_at(v, (*loc, i))
            if found is not None:
                return found
    return None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, decided by the socket the connection came in on."""

    kind: CallerKind
    name: str
    permissions: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(eq=False)
class CallContext:
    """A caller plus its connection (for pushes) and the connection's subscriptions."""

    caller: Caller
    conn: RpcConnection | None = None
    subscriptions: dict[str, Subscription] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseSettings:
    kind: str
    url: str
    unsafe_durability: bool


class Kernel:
    """Dispatches syscalls against a :class:`Store`."""

    def __init__(self, store: Store, config: Config, paths: Paths, db: DatabaseSettings) -> None:
        self.store = store
        self.config = config
        self.paths = paths
        self.db = db
        self.started_at = datetime.now(UTC)
        self._t0 = time.monotonic()
        #: This kernel among those sharing the database: in its row of ``kernels``, its lease
        #: owners (``<id>/<dispatch>``) and its runtime-log entries. New at every start.
        self.id = f"k_{secrets.token_hex(6)}"
        #: Its stable name (config ``kernel.name``, else ``host:home``): agents' placements name it.
        self.name = str(
            (config.data.get("kernel") or {}).get("name") or f"{socket.gethostname()}:{paths.home}"
        )
        #: The names of the other kernels alive at the last heartbeat.
        self.peer_names: list[str] = []
        self.streams = Streams(store)
        self.runtime_log = RuntimeLog(store, self.id)
        self.peers = Peers(self)
        #: AOS_LOG_LEVEL=debug: each syscall, hook call, model call and command is logged too.
        self.debug = debug_enabled()
        self.connections = 0
        self.pid = os.getpid()
        self.hooks = HookBus()
        self.dispatcher = Dispatcher(self, self.hooks)
        # An approval resolved here whose unit waits on another kernel: tell the others.
        self.dispatcher.approvals.on_resolved = lambda approval_id: self.peers.tell("approval", approval_id)
        self.skills = SkillIndex(skill_roots(config, paths))
        self.services = ServiceManager(self)
        self.gateway = Gateway(self)
        #: Skills enabled per session, refreshed at each dispatch (hooks of a skill fire only
        #: where it is enabled).
        self.enabled_cache: dict[str, set[str]] = {}
        self._reload_lock = asyncio.Lock()
        #: Set by the daemon: begin a graceful stop (``system.stop``), given who asked.
        self.request_stop: Callable[[str], None] | None = None
        #: Whether bubblewrap works here (probed once at start).
        self.sandbox_probe = Probe(False, "not probed yet")

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, store: Store, config: Config, paths: Paths, db: DatabaseSettings
    ) -> AsyncIterator[Kernel]:
        """A kernel with its skills' services, dispatcher (recovery first) and runtime-log writer.

        On exit: running dispatches are interrupted (cause ``shutdown``), dispatches waiting for a
        human are left waiting (they resume at the next start), and the log is flushed.
        """
        kernel = cls(store, config, paths, db)
        kernel.skills.scan()
        writer = asyncio.create_task(kernel.runtime_log.writer(), name="runtime-log")
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(kernel.watch_skills(stop_watch), name="skill-watcher")
        try:
            await asyncio.to_thread(write_tools, paths.tools)
            await kernel.probe_sandbox()
            # Windows, prices and the HTTP client loaded before the first step, not in it.
            await asyncio.to_thread(model_info.load)
            await asyncio.to_thread(openai_wire.load)
            await kernel.gateway.start()
            await kernel.register()
            heart = asyncio.create_task(kernel.heartbeat(), name="heartbeat")
            peer_tasks = [
                asyncio.create_task(kernel.peers.listener(), name="peers-listener"),
                asyncio.create_task(kernel.peers.announcer(), name="peers-announcer"),
            ]
            await kernel.services.sync()
            await kernel.dispatcher.start_background()
            yield kernel
        finally:
            stop_watch.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await kernel.dispatcher.close(timeout=float(config.data["limits"].get("drain_timeout_s", 10)))
            await openai_wire.aclose()
            await kernel.services.close()
            await kernel.gateway.close()
            if "heart" in locals():
                for task in [heart, *peer_tasks]:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                with contextlib.suppress(AosError):
                    await store.kernel_stopped(kernel.id)
            await kernel.hooks.wait_events()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await kernel.runtime_log.flush()

    # -- among other kernels --------------------------------------------------------------------

    async def register(self) -> None:
        """Enter this kernel in ``kernels`` (see migration 0007)."""
        superseded = await self.store.register_kernel(
            {
                "id": self.id,
                "host": socket.gethostname(),
                "boot_id": _read("/proc/sys/kernel/random/boot_id") or "unknown",
                "pid": os.getpid(),
                "pid_ns": pid_namespace(),
                "home": str(self.paths.home),
                "version": __version__,
                "ttl_s": self.dispatcher.ttl,
                "embedded_db": self.db.kind == "embedded",
                "name": self.name,
            }
        )
        log.info(
            "kernel.registered",
            kernel=self.id,
            name=self.name,
            ttl_s=self.dispatcher.ttl,
            superseded=superseded,
        )
        kernels = [m.KernelInfo.model_validate(r) for r in await self.store.list_kernels()]
        for warning in self.shared_embedded_warnings(kernels):
            log.warning("kernel.on_another_kernels_database", warning=warning)

    def runs_here(self, placement: str | None) -> bool:
        """Whether this kernel runs the own work (schedules) of an agent placed so: on its home
        kernel; for ``any`` (or not yet placed), on the first live kernel by name, so one kernel
        does it whatever their number."""
        if placement not in (None, "any"):
            return placement == self.name
        return all(self.name <= other for other in self.peer_names)

    async def heartbeat(self) -> None:
        """Say this kernel lives, every third of its ttl: one whose heartbeat is older than its
        ttl is dead to the others, which take its sessions over. A failed beat is tried again
        within a second."""
        interval = self.dispatcher.ttl / 3
        while True:
            try:
                peers = await self.store.kernel_heartbeat(self.id)
                if peers is None:
                    log.error("kernel.heartbeat_refused", kernel=self.id, why="its row says it stopped")
                elif peers != self.peer_names:
                    log.info("kernel.peers", kernel=self.id, alive=len(peers), names=peers)
                    self.peer_names = peers
                    self.peers.count = len(peers)  # facts are announced to other kernels while > 0
                if peers:  # live followers here: their sessions' events are wanted from the others
                    for session_id in self.streams.live_sessions():
                        self.peers.tell("watch", session_id)
                await asyncio.sleep(interval)
            except AosError as exc:
                log.warning("kernel.heartbeat_failed", kernel=self.id, error=exc.message)
                await asyncio.sleep(min(1.0, interval))
            except Exception:  # never let the heartbeat die: the others would take a live kernel for dead
                log.exception("kernel.heartbeat_failed", kernel=self.id)
                await asyncio.sleep(min(1.0, interval))

    # -- sandbox -------------------------------------------------------------------------------

    async def probe_sandbox(self) -> None:
        """Find out once whether agent commands can be sandboxed, and say so loudly if not."""
        self.sandbox_probe = await asyncio.to_thread(probe_sandbox)
        await asyncio.to_thread(setpriv_path)  # looked up once, off the loop (unsandboxed commands)
        mode = self.sandbox_settings().mode
        if self.sandbox_probe.available:
            log.info("sandbox.ready", bwrap=self.sandbox_probe.version, mode=mode)
        elif mode == "auto":
            log.warning(
                "sandbox.unavailable",
                reason=self.sandbox_probe.reason,
                effect="agent commands run UNSANDBOXED, as the daemon's user, with its whole filesystem in view",
            )
        elif mode == "required":
            log.error(
                "sandbox.unavailable", reason=self.sandbox_probe.reason, effect="dispatches are refused"
            )

    def sandbox_settings(self, agent_settings: dict[str, Any] | None = None) -> SandboxSettings:
        """The sandbox settings for an agent (``aoscb.json`` under its own ``settings.sandbox``)."""
        return resolve_settings(self.config.data.get("sandbox"), (agent_settings or {}).get("sandbox"))

    def sandbox_status(self) -> dict[str, Any]:
        mode = self.sandbox_settings().mode
        p = self.sandbox_probe
        in_force = "bwrap" if p.available and mode != "off" else "off"
        if mode == "off":
            why = "turned off in aoscb.json (sandbox.mode: off)"
        elif p.available:
            why = f"{p.version or 'bubblewrap'} works here"
        elif mode == "required":
            why = f"required but unavailable, dispatches are refused: {p.reason}"
        else:
            why = f"unavailable, commands run unsandboxed: {p.reason}"
        return {"mode": mode, "in_force": in_force, "why": why, "bwrap": p.bwrap, "version": p.version}

    # -- syscalls ------------------------------------------------------------------------------

    async def invoke(self, ctx: CallContext, method: str, params: dict[str, Any]) -> Any:
        """Validate, authorise and run one syscall; commands are written to the runtime log."""
        sc = SYSCALLS.get(method)
        if sc is None:
            close = difflib.get_close_matches(method, SYSCALLS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; `aos call --list` shows them all"
            raise MethodNotFound(f"unknown syscall {method!r}{hint}", method=method)
        t0 = time.perf_counter()
        error: AosError | None = None
        result: Any = None
        try:
            check_caller(sc, ctx.caller.kind, ctx.caller.permissions)
            nul = None if method in _NUL_OK else _nul_at(params)
            if nul is not None:
                where = ".".join(map(str, nul)) or "params"
                raise InvalidParams(
                    f"invalid params for {method}: {where}: text may not contain NUL bytes (\\u0000)",
                    errors=[{"loc": list(nul), "msg": "NUL byte in text", "type": "nul_byte"}],
                )
            try:
                p = sc.params.model_validate(params)
            except ValidationError as exc:
                errors = [
                    {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                    for e in exc.errors(include_url=False, include_input=False)
                ]
                detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in errors)
                raise InvalidParams(f"invalid params for {method}: {detail}", errors=errors) from None
            out = await sc.handler(self, ctx, p)
            # A handler on a hot read path may return its result already as JSON-ready data (the
            # shape of its result model, which the docs and tests hold it to).
            result = out if isinstance(out, dict) else out.model_dump(mode="json")
            return result
        except AosError as exc:
            error = exc
            raise
        finally:
            took = time.perf_counter() - t0
            if sc.kind == "command" or (error is not None and error.type == "permission_denied"):
                self.runtime_log.record(ctx.caller.actor, method, params, result, error, took)
            if self.debug:
                log.debug(
                    "syscall",
                    method=method,
                    actor=ctx.caller.actor,
                    ms=round(took * 1000, 2),
                    error=None if error is None else error.type,
                )

    # -- skills --------------------------------------------------------------------------------

    async def reload_skills(self) -> dict[str, list[str]]:
        """Re-scan the skill roots and bring services in line (hot reload and skill.reload)."""
        async with self._reload_lock:
            diff = self.skills.scan()
            self.enabled_cache.clear()
            await self.services.sync(diff["changed"])
        for name in [*diff["added"], *diff["changed"]]:
            self.hooks.event("skill.loaded", {"skill": name})
        for name in diff["removed"]:
            self.hooks.event("skill.removed", {"skill": name})
        if any(diff.values()):
            log.info("skills.reloaded", **diff)
        return diff

    async def watch_skills(self, stop: asyncio.Event) -> None:
        """Hot reload: any change under a skill root re-scans the roots (watchfiles)."""
        from watchfiles import awatch

        roots = [str(r) for r in self.skills.roots if r.is_dir()]
        if not roots or not self.config.data.get("skills", {}).get("watch", True):
            return
        async for _changes in awatch(*roots, debounce=50, step=10, stop_event=stop):
            try:
                diff = await self.reload_skills()
                if diff["added"] or diff["changed"]:
                    # Files of a folder just dropped in may still be arriving (and inotify can
                    # miss the first ones in a new folder): look again a moment later.
                    await asyncio.sleep(0.2)
                    await self.reload_skills()
            except Exception:
                log.exception("skills.reload_failed")

    def globally_disabled(self) -> set[str]:
        return {str(x) for x in self.config.data.get("skills", {}).get("disabled", [])}

    def skill_applies(self, skill: str, input_data: dict[str, Any]) -> bool:
        """Whether a skill's hooks fire for this input: only in sessions where it is enabled."""
        session = input_data.get("session_id")
        if session is None:
            return True
        cached = self.enabled_cache.get(str(session))
        if cached is not None:
            return skill in cached
        m = self.skills.get(skill)
        return m is not None and m.usable and m.default_enabled and skill not in self.globally_disabled()

    # -- history -------------------------------------------------------------------------------

    async def append(
        self,
        session_id: str,
        *,
        epoch: int | None,
        kind: str,
        role: str | None,
        body: Any,
        meta: dict[str, Any] | None,
        idempotency_key: str,
        agent_id: str | None = None,
    ) -> m.AppendResult:
        """Append a fact (secret values scrubbed) and wake the session's subscribers.

        The ``message.before_write`` gate may rewrite the fact's body and meta, or refuse it.
        """
        body, meta = await self.prepare_fact(session_id, kind, role, body, meta, agent_id)
        seq, stored_epoch, created_at, duplicate = await self.store.append(
            session_id,
            epoch=epoch,
            kind=kind,
            role=role,
            body=body,
            meta=meta,
            idempotency_key=idempotency_key,
        )
        if not duplicate:
            self.publish(session_id, seq, stored_epoch, kind, role, body, meta, idempotency_key, created_at)
        return m.AppendResult(session_id=session_id, seq=seq, created_at=created_at, duplicate=duplicate)

    async def prepare_fact(
        self,
        session_id: str,
        kind: str,
        role: str | None,
        body: Any,
        meta: dict[str, Any] | None,
        agent_id: str | None,
    ) -> tuple[Any, Any]:
        """A fact's body and meta as they are stored: secret values scrubbed, then what the
        ``message.before_write`` gate makes of them.

        Raises:
            Rejected: the gate refused the fact.
        """
        body = scrub_values(body)
        meta = scrub_values(meta)
        if self.hooks.handlers("message.before_write"):
            ids = {
                "agent_id": agent_id,
                "session_id": session_id,
                "dispatch_id": (meta or {}).get("dispatch_id"),
                "kind": kind,
                "role": role,
            }
            verdict = await self.hooks.gate("message.before_write", ids, {"body": body, "meta": meta})
            if isinstance(verdict, Reject | Ask):
                raise Rejected(
                    f"message.before_write refused by {verdict.skill}: {verdict.reason}", skill=verdict.skill
                )
            body, meta = verdict.get("body", body), verdict.get("meta", meta)
        return body, meta

    def publish(
        self,
        session_id: str,
        seq: int,
        epoch: int,
        kind: str,
        role: str | None,
        body: Any,
        meta: Any,
        idempotency_key: str,
        created_at: Any,
    ) -> None:
        """Wake the session's subscribers with a fact that was just stored (and those on other
        kernels: :mod:`.peers`)."""
        self.peers.stored(session_id, seq)
        if self.streams.watched(session_id):
            fact = m.Fact(
                session_id=session_id,
                seq=seq,
                epoch=epoch,
                kind=kind,
                role=role,
                body=body,
                meta=meta,
                idempotency_key=idempotency_key,
                created_at=created_at,
            ).model_dump(mode="json")
            self.streams.offer(session_id, fact)

    async def subscribe(
        self, ctx: CallContext, session_id: str, after_seq: int | None, live: bool = False
    ) -> m.SubscribeResult:
        """Stream the facts of ``session_id`` to the caller (see :mod:`.streams`)."""
        result = await self.streams.subscribe(ctx, session_id, after_seq, live)
        if live:  # its dispatch may run on another kernel: ask for its live events (see peers)
            self.peers.tell("watch", session_id)
        return result

    def live(self, session_id: str, event: dict[str, Any]) -> None:
        """A live event (progress: command output, a model retry) for the session's live
        subscribers, here and on other kernels; dropped when there is none. Never stored:
        history keeps the facts."""
        if self.streams.live_watched(session_id):
            self.streams.offer_live(session_id, event)
        if self.peers.watching:
            self.peers.forward_live(session_id, event)

    def live_wanted(self, session_id: str) -> bool:
        """Whether anyone, on this kernel or another, follows the session's live events (else
        none is made: no model streaming, nothing done per output chunk)."""
        return self.streams.live_watched(session_id) or self.peers.watched(session_id)

    def unsubscribe(self, ctx: CallContext, subscription: str) -> None:
        self.streams.unsubscribe(ctx, subscription)

    def close_context(self, ctx: CallContext) -> None:
        """End every subscription of a connection that closed."""
        self.streams.close_context(ctx)

    # -- status --------------------------------------------------------------------------------

    async def status(self) -> m.StatusResult:
        kernels = [m.KernelInfo.model_validate(r) for r in await self.store.list_kernels()]
        queue = [m.QueueInfo.model_validate(r) for r in await self.store.queue_waiting()]
        settings = await self.store.durability()
        counts = await self.store.counts()
        counts["connections"] = self.connections
        counts["subscriptions"] = self.streams.count()
        counts["dispatches"] = self.dispatcher.running()
        return m.StatusResult(
            version=__version__,
            pid=os.getpid(),
            started_at=self.started_at,
            uptime_s=round(time.monotonic() - self._t0, 3),
            home=str(self.paths.home),
            schema_version=SCHEMA_VERSION,
            database=m.DatabaseInfo(
                kind=self.db.kind,  # type: ignore[arg-type]
                url=self.db.url,
                server_version=await self.store.server_version(),
                fsync=settings.get("fsync", "?"),
                synchronous_commit=settings.get("synchronous_commit", "?"),
                unsafe_durability=self.db.unsafe_durability,
            ),
            sockets={"kernel": str(self.paths.kernel_sock), "agent": str(self.paths.agent_sock)},
            counts=counts,
            sandbox=self.sandbox_status(),
            kernel_id=self.id,
            kernel_name=self.name,
            kernels=kernels,
            warnings=self.shared_embedded_warnings(kernels) + self.queue_warnings(queue),
            queue=queue,
        )

    @staticmethod
    def queue_warnings(queue: list[m.QueueInfo]) -> list[str]:
        """Dispatches that wait for a kernel that is down: they start only when it is back."""
        return [
            f"{q.waiting} dispatch(es) wait for kernel {q.placement}, which is not running (the oldest"
            f" for {q.oldest_s:.0f} s): start it, or move its agents (aos agent update NAME --placement"
            " here) once their workspace is here"
            for q in queue
            if not q.runnable
        ]

    def shared_embedded_warnings(self, kernels: list[m.KernelInfo]) -> list[str]:
        """A kernel on another kernel's embedded PostgreSQL lives only as long as that one."""
        if self.db.kind == "embedded":
            return []
        return [
            f"this database is the embedded PostgreSQL of kernel {k.id} (home {k.home} on {k.host}):"
            " it stops when that kernel stops. For several kernels, use an external PostgreSQL"
            " (docs/deployment.md)."
            for k in kernels
            if k.embedded_db and k.state == "alive" and k.id != self.id
        ]
