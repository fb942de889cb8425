"""Dispatches: leases, ReActUnits, interrupts, durable approvals, crash recovery.

``session.dispatch`` runs the ``dispatch.before`` gate, claims the session's lease with a new
epoch (compare-and-set in PostgreSQL; a concurrent dispatch gets ``session_busy``), appends the
user message and returns the dispatch id at once; the unit runs in a task the dispatcher owns,
renewing the lease while it lives. A unit that loses its lease is cancelled and writes nothing
more.

Recovery (at start and every lease TTL) looks at dispatches still marked running or waiting for
approval whose owner is gone (another process of this host that is not alive, or an expired
lease). A dispatch that was waiting for a human resumes waiting; any other gets, for each command
that started without a result, a ``tool.result`` with outcome ``unknown`` (never re-run), then an
``interrupt`` fact with cause ``crash``, and its session goes back to idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import Archived, Conflict, NotFound, Rejected, Unavailable

from ..db.store import Store, new_id
from ..logs import get_logger
from ..loop.bash import kill_leftovers
from ..loop.model import CLIENTS, ToolCall
from ..loop.react import ReActUnit, Stop, result_body
from ..loop.sandbox import INSTALL_HINT, SandboxError, SandboxSettings, check_workspace
from ..loop.spec import UnitSpec
from ..skills.index import enabled
from .hooks import Ask, HookBus, Reject

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Dispatcher"]

log = get_logger("aos.dispatch")

UNKNOWN_OUTCOME = (
    "the daemon stopped while this command was running: it may or may not have finished, and its "
    "output is lost. It was not run again."
)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Dispatcher:
    """Owns every running unit of one kernel."""

    def __init__(self, kernel: Kernel, hooks: HookBus) -> None:
        self.kernel = kernel
        self.store: Store = kernel.store
        self.hooks = hooks
        self.host = socket.gethostname()
        #: Identifies this kernel process in lease owners: ``host:pid:nonce``.
        self.kernel_id = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.units: dict[str, ReActUnit] = {}
        #: Session -> the last seq given to ``session.assemble`` (the next dispatch sends what follows).
        self.assembled: dict[str, int] = {}
        #: Model -> its input window in tokens (0: unknown), looked up once per model.
        self.windows: dict[str, int] = {}
        #: Session -> the task of a dispatch that has written its end and is releasing the lease.
        self._ending: dict[str, asyncio.Task[None]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._lost: set[str] = set()
        self._waiting: set[str] = set()  # dispatch ids waiting for a human
        self._background: asyncio.Task[None] | None = None
        #: Set when the daemon stops: no new dispatch is accepted after it.
        self._closing = False
        self._starting = 0  # starts under way (close waits for them, then stops what they began)
        self._started = asyncio.Event()
        self.commands_dir = kernel.paths.run / "commands"

    # -- configuration -------------------------------------------------------------------------

    def _limit(self, name: str, default: int) -> int:
        try:
            return self.kernel.config.limit(name)
        except KeyError:
            return default

    @property
    def ttl(self) -> float:
        return float(self._limit("lease_ttl_s", 30))

    def _model(self, agent: dict[str, Any], session: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        cfg = self.kernel.config.data
        model = (session["settings"] or {}).get("model") or agent["model"] or cfg.get("model")
        params: dict[str, Any] = {}
        for layer in (cfg, agent["settings"] or {}, session["settings"] or {}):
            p = layer.get("model_params")
            if isinstance(p, dict):
                params.update(p)
        return str(model), params

    def model_client(self, agent: dict[str, Any], session: dict[str, Any]) -> str:
        """The ``model_client`` setting (session, agent, then aoscb.json; default ``auto``).

        Raises:
            Rejected: a value other than ``auto`` or ``litellm``.
        """
        cfg = self.kernel.config.data
        for layer in (session["settings"] or {}, agent["settings"] or {}, cfg):
            value = layer.get("model_client")
            if value is not None:
                if value not in CLIENTS:
                    raise Rejected(
                        f"model_client must be one of {', '.join(CLIENTS)}, not {value!r}",
                        setting="model_client",
                    )
                return str(value)
        return "auto"

    def _lenient_model_client(self, agent: dict[str, Any], session: dict[str, Any]) -> str:
        try:
            return self.model_client(agent, session)
        except Rejected:
            return "auto"  # a dispatch resumed after a restart keeps going

    def _workspace(self, agent: dict[str, Any]) -> Path:
        if agent["workspace"]:
            return Path(str(agent["workspace"])).expanduser()
        return self.kernel.paths.workspaces / str(agent["name"])

    def sandbox_for(self, agent: dict[str, Any]) -> SandboxSettings | None:
        """The sandbox the agent's commands run in, or None for none (mode off, or auto where
        bubblewrap does not work).

        Raises:
            Rejected: invalid settings, a required sandbox that cannot run here, or a workspace
                that would put AOS's own files within the agent's reach.
        """
        try:
            settings = self.kernel.sandbox_settings(agent["settings"])
        except SandboxError as exc:
            raise Rejected(f"agent {agent['name']!r}: {exc}") from None
        probe = self.kernel.sandbox_probe
        if settings.mode == "off" or (settings.mode == "auto" and not probe.available):
            return None
        if not probe.available:
            raise Rejected(
                f"agent {agent['name']!r} requires the sandbox (sandbox.mode: required), but it cannot "
                f"run here: {probe.reason}. To fix: {INSTALL_HINT}",
                sandbox=probe.reason,
            )
        paths = self.kernel.paths
        from ..config import CHECKOUT

        protected = [paths.home, *self.kernel.skills.roots, CHECKOUT / "src", CHECKOUT / "sdk"]
        protected.append(Path(sys.prefix))
        try:
            check_workspace(self._workspace(agent), protected=protected, workspaces_root=paths.workspaces)
        except SandboxError as exc:
            raise Rejected(f"agent {agent['name']!r}: {exc}") from None
        return settings

    # -- start ---------------------------------------------------------------------------------

    async def start(self, session_id: str, text: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a dispatch; returns ``{dispatch_id, session_id, epoch, seq}`` at once.

        Raises:
            Unavailable: the daemon is stopping (a dispatch started now would be cut off at once).
        """
        if self._closing:
            raise Unavailable("the daemon is stopping: dispatch again once it is back")
        self._starting += 1
        try:
            return await self._start(session_id, text, meta)
        finally:
            self._starting -= 1
            if not self._starting:
                self._started.set()

    async def _start(self, session_id: str, text: str, meta: dict[str, Any] | None) -> dict[str, Any]:
        session = await self.store.get_session(session_id)
        agent = await self.store.get_agent(session["agent_id"])
        if agent["status"] != "active":
            raise Archived(f"agent {agent['name']!r} is archived", agent=agent["id"])
        if session["status"] != "active":
            raise Archived(f"session {session_id} is archived", session=session_id)
        dispatch_id = new_id("di")
        ids = {"agent_id": agent["id"], "session_id": session_id, "dispatch_id": dispatch_id}
        gate = await self.hooks.gate("dispatch.before", ids, {"message": text})
        if isinstance(gate, Reject | Ask):
            raise Rejected(f"dispatch.before refused by {gate.skill}: {gate.reason}", skill=gate.skill)
        text = str(gate.get("message", text)) if isinstance(gate, dict) else text
        model, params = self._model(agent, session)
        self.model_client(agent, session)  # a bad value is refused before anything is written
        sandbox = self.sandbox_for(agent)
        owner = f"{self.kernel_id}/{dispatch_id}"
        # A client that saw the previous dispatch's end may ask again before its lease is given
        # back: wait for that (milliseconds) rather than answer session_busy.
        ending = self._ending.get(session_id)
        running = self.units.get(session_id)
        if ending is None and running is not None and running.ending:
            ending = self._tasks.get(session_id)
        if ending is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ending), 5)
        # The lease, the input message and the dispatch row that points at it: one transaction.
        key = f"{dispatch_id}:1"
        fact_meta = {**(meta or {}), "dispatch_id": dispatch_id}
        body, fact_meta = await self.kernel.prepare_fact(
            session_id, "message", "user", {"text": text}, fact_meta, agent["id"]
        )
        fact = {"kind": "message", "role": "user", "body": body, "meta": fact_meta, "idempotency_key": key}
        leased, seq, created_at = await self.store.start_dispatch(
            session_id=session_id,
            owner=owner,
            ttl_s=self.ttl,
            fact=fact,
            dispatch_id=dispatch_id,
            agent_id=agent["id"],
            model=model,
        )
        epoch = int(leased["lease_epoch"])
        self.kernel.publish(session_id, seq, epoch, "message", "user", body, fact_meta, key, created_at)
        unit = ReActUnit(self._spec(dispatch_id, session, agent, epoch, model, params, sandbox), self)
        unit.journal.keys = 1  # the input took the first key
        unit.spec.input_seq, unit.spec.input_meta = seq, meta or {}
        self._launch(unit, owner, resume=False)
        return {"dispatch_id": dispatch_id, "session_id": session_id, "epoch": epoch, "seq": seq}

    def catalog(self, agent: dict[str, Any], session: dict[str, Any]) -> list[dict[str, str]]:
        """The skills enabled for this session that agents see: name, description, where its
        SKILL.md is. A skill whose SKILL.md says ``metadata: aos-catalog: hidden`` (one that
        serves people or the kernel, such as the web UI) stays enabled but is left out."""
        out, on_names = [], set()
        for sk in self.kernel.skills.all():
            on, _ = enabled(sk, self.kernel.config, agent["settings"], session["settings"])
            if not on:
                continue
            on_names.add(sk.name)
            if sk.metadata.get("aos-catalog") != "hidden":
                out.append(
                    {"name": sk.name, "description": sk.description, "path": str(sk.path / "SKILL.md")}
                )
        self.kernel.enabled_cache[session["id"]] = on_names
        return out

    def _spec(
        self,
        dispatch_id: str,
        session: dict[str, Any],
        agent: dict[str, Any],
        epoch: int,
        model: str,
        params: dict[str, Any],
        sandbox: SandboxSettings | None = None,
    ) -> UnitSpec:
        return UnitSpec(
            sandbox=sandbox,
            dispatch_id=dispatch_id,
            session_id=session["id"],
            skills=self.catalog(agent, session),
            agent=agent,
            epoch=epoch,
            model=model,
            model_params=params,
            model_client=self._lenient_model_client(agent, session),
            workspace=self._workspace(agent),
            max_steps=self._limit("max_steps", 50),
            bash_timeout_s=float(self._limit("bash_timeout_s", 120)),
            output_cap_bytes=self._limit("output_cap_bytes", 65536),
            max_format_errors=self._limit("max_format_errors", 3),
            model_retries=self._limit("model_retries", 3),
            model_backoff_s=self._limit("model_backoff_ms", 500) / 1000,
            service_wait_s=float(self._limit("service_wait_s", 30)),
            content_cap_bytes=self._limit("content_cap_bytes", 8 * 1024 * 1024),
        )

    def _launch(self, unit: ReActUnit, owner: str, *, resume: bool) -> None:
        unit.spec.owner = owner
        sid = unit.spec.session_id
        self.units[sid] = unit
        self._tasks[sid] = asyncio.create_task(
            self._run(unit, owner, resume), name=f"dispatch-{unit.spec.dispatch_id}"
        )

    async def _run(self, unit: ReActUnit, owner: str, resume: bool) -> None:
        spec = unit.spec
        spec.token = self.kernel.gateway.issue(spec.dispatch_id, spec.session_id, spec.agent["id"])
        renew = asyncio.create_task(self._renew(unit, owner), name=f"lease-{spec.dispatch_id}")
        status = "failed"
        try:
            try:
                status = await unit.run(resume=resume)
            except asyncio.CancelledError:
                if spec.dispatch_id not in self._lost:
                    raise
                status = "lease_lost"
        finally:
            self.kernel.gateway.revoke(spec.token)
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            task = self._tasks.pop(spec.session_id, None)
            if task is not None:
                self._ending[spec.session_id] = task
            self.units.pop(spec.session_id, None)
            self._lost.discard(spec.dispatch_id)
        try:
            if not unit.released:  # else its end, its row and the lease went in one commit
                with contextlib.suppress(Exception):
                    await self.store.update_dispatch(
                        spec.dispatch_id, status=status, steps=spec.steps, ended=True
                    )
                if status != "lease_lost":
                    await self.store.release_lease(spec.session_id, owner, spec.epoch)
        finally:
            self._ending.pop(spec.session_id, None)
        self.hooks.event(
            "dispatch.after",
            {
                **unit.ids,
                "status": status,
                "steps": spec.steps,
                "usage": unit.usage.as_dict(),
                "input_seq": spec.input_seq,
                "input_meta": spec.input_meta,
                "reply": unit.reply,
            },
        )
        log.info("dispatch.ended", dispatch=spec.dispatch_id, status=status, steps=spec.steps)

    async def end(self, unit: ReActUnit, status: str, facts: list[dict[str, Any]]) -> bool:
        """Write a unit's last facts, close its dispatch row and give its lease back, in one
        commit. False when that was refused (nothing written): the unit writes them one by one."""
        spec = unit.spec
        prepared = []
        for f in facts:
            body, meta = await self.kernel.prepare_fact(
                spec.session_id, f["kind"], f["role"], f["body"], f["meta"], spec.agent["id"]
            )
            prepared.append({**f, "body": body, "meta": meta})
        stored = await self.store.end_dispatch(
            session_id=spec.session_id,
            owner=spec.owner,
            epoch=spec.epoch,
            facts=prepared,
            dispatch_id=spec.dispatch_id,
            status=status,
            steps=spec.steps,
        )
        if stored is None:
            return False
        for f, (seq, created_at) in zip(prepared, stored, strict=True):
            self.kernel.publish(
                spec.session_id,
                seq,
                spec.epoch,
                f["kind"],
                f["role"],
                f["body"],
                f["meta"],
                f["idempotency_key"],
                created_at,
            )
        return True

    async def _renew(self, unit: ReActUnit, owner: str) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            ok = await self.store.renew_lease(unit.spec.session_id, owner, unit.spec.epoch, self.ttl)
            if not ok and unit.ending:
                return  # it is writing its end, which gives the lease back (or finds it lost)
            if not ok:
                log.warning("dispatch.lease_lost", dispatch=unit.spec.dispatch_id)
                self._lost.add(unit.spec.dispatch_id)
                task = self._tasks.get(unit.spec.session_id)
                if task is not None:
                    task.cancel()
                return

    # -- interrupt -----------------------------------------------------------------------------

    async def interrupt(self, session_id: str, reason: str) -> dict[str, Any]:
        """Stop the session's dispatch at the next step boundary (killing a running command)."""
        unit = self.units.get(session_id)
        if unit is None:
            await self.store.get_session(session_id)
            return {"session_id": session_id, "interrupted": False, "dispatch_id": None}
        unit.interrupt(reason=reason, cause="user")
        return {"session_id": session_id, "interrupted": True, "dispatch_id": unit.spec.dispatch_id}

    async def wait_dispatch(self, session_id: str) -> None:
        """Return when the session's running dispatch (if any) has ended (tests, shutdown)."""
        task = self._tasks.get(session_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    # -- approvals -----------------------------------------------------------------------------

    async def ask(self, unit: ReActUnit, call: ToolCall, command: str, cwd: str, verdict: Ask) -> str | None:
        """Record a durable approval request and wait for a human; returns the command to run,
        or None when denied (a ``tool.result`` saying so is already written)."""
        # The call's assistant fact is durable before anything about the call is written.
        await unit.settle_appends()
        # Waiting before the approval is visible: whoever sees it pending sees the session wait.
        await self._mark_waiting(unit)
        row = await self.store.create_approval(
            {
                "id": new_id("ap"),
                "session_id": unit.spec.session_id,
                "dispatch_id": unit.spec.dispatch_id,
                "agent_id": unit.spec.agent["id"],
                "call_id": call.id,
                "command": command,
                "cwd": cwd,
                "reason": verdict.reason,
                "skill": verdict.skill,
            }
        )
        await unit.append(
            "approval.requested",
            None,
            {
                "approval_id": row["id"],
                "call_id": call.id,
                "command": command,
                "reason": verdict.reason,
                "skill": verdict.skill,
            },
        )
        self.hooks.event("approval.requested", {**unit.ids, "approval_id": row["id"], "command": command})
        return await self.wait_approval(unit, row)

    async def wait_approval(
        self, unit: ReActUnit, row: dict[str, Any], *, recorded: bool = False
    ) -> str | None:
        """Wait until ``row`` is decided (at once if it already is); ``recorded``: its
        ``approval.resolved`` fact is already in history (a restart after the decision)."""
        spec = unit.spec
        await self._mark_waiting(unit)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[row["id"]] = fut
        self._waiting.add(spec.dispatch_id)
        try:
            current = await self.store.get_approval(row["id"])  # resolved while we were down?
            if current["status"] != "pending" and not fut.done():
                fut.set_result(current)
            try:
                resolved = await unit.until_interrupted(fut)
            except Stop:
                with contextlib.suppress(Conflict):
                    await self.store.resolve_approval(
                        row["id"], "cancelled", "interrupt", unit.interrupt_reason
                    )
                await unit.append(
                    "tool.result",
                    "tool",
                    result_body(
                        row["call_id"], "interrupted", "not run: interrupted while waiting for approval"
                    ),
                )
                raise
        finally:
            self._waiters.pop(row["id"], None)
            self._waiting.discard(spec.dispatch_id)
        await self.store.update_dispatch(spec.dispatch_id, status="running")
        await self.store.set_phase(spec.session_id, spec.epoch, "dispatched")
        decision = resolved["status"]
        if decision == "cancelled":
            await unit.append(
                "tool.result",
                "tool",
                result_body(row["call_id"], "interrupted", "not run: its approval was cancelled"),
            )
            return None
        if not recorded:
            await unit.append(
                "approval.resolved",
                None,
                {
                    "approval_id": row["id"],
                    "decision": decision,
                    "by": resolved["resolved_by"],
                    "note": resolved["note"],
                },
            )
        self.hooks.event("approval.resolved", {**unit.ids, "approval_id": row["id"], "decision": decision})
        if decision == "approved":
            return str(row["command"])
        note = f": {resolved['note']}" if resolved.get("note") else ""
        await unit.append(
            "tool.result",
            "tool",
            result_body(row["call_id"], "denied", f"denied by a human ({resolved['resolved_by']}){note}"),
        )
        return None

    async def _mark_waiting(self, unit: ReActUnit) -> None:
        await self.store.update_dispatch(unit.spec.dispatch_id, status="waiting_approval")
        await self.store.set_phase(unit.spec.session_id, unit.spec.epoch, "waiting_approval")

    async def resolve(self, approval_id: str, decision: str, by: str, note: str | None) -> dict[str, Any]:
        status = {"approve": "approved", "deny": "denied"}[decision]
        row = await self.store.resolve_approval(approval_id, status, by, note)
        fut = self._waiters.get(approval_id)
        if fut is not None and not fut.done():
            fut.set_result(row)
        return row

    # -- recovery ------------------------------------------------------------------------------

    def _owner_dead(self, owner: str, expired: bool) -> bool:
        kernel, _, dispatch_id = owner.partition("/")
        if kernel == self.kernel_id:
            # Ours: dead only if no unit of ours runs it and its lease ran out (a unit that could
            # not give its lease back while the database was down).
            return expired and not any(u.spec.dispatch_id == dispatch_id for u in self.units.values())
        host, _, rest = kernel.partition(":")
        pid_text = rest.split(":", 1)[0]
        if host == self.host and pid_text.isdigit():
            pid = int(pid_text)
            return pid == os.getpid() or not _pid_alive(pid)
        return expired

    async def recover(self) -> list[str]:
        """Recover dispatches whose kernel died; returns their ids."""
        recovered = []
        for s in await self.store.leased_sessions():
            owner = s["lease_owner"]
            if not self._owner_dead(owner, bool(s["expired"])):
                continue
            dispatch_id = owner.split("/", 1)[1] if "/" in owner else None
            try:
                await self._recover_one(s, dispatch_id)
                recovered.append(dispatch_id or s["id"])
            except Exception:
                log.exception("recovery.failed", session=s["id"], owner=owner)
        return recovered

    async def _recover_one(self, session: dict[str, Any], dispatch_id: str | None) -> None:
        sid = session["id"]
        dispatch = None
        if dispatch_id:
            # The row is written after the lease is claimed and the input appended: a daemon that
            # stopped in between leaves a lease whose dispatch row never existed (see below).
            with contextlib.suppress(NotFound):
                dispatch = await self.store.get_dispatch(dispatch_id)
        new_owner = f"{self.kernel_id}/{dispatch_id or 'recovery'}"
        leased = await self.store.take_over_lease(sid, session["lease_owner"], new_owner, self.ttl)
        if leased is None:
            return  # someone else recovered it first
        epoch = int(leased["lease_epoch"])
        agent = await self.store.get_agent(session["agent_id"])
        if dispatch is None:
            if dispatch_id is not None and await self._start_unstarted(
                session, agent, dispatch_id, new_owner, epoch
            ):
                return
            await self.store.release_lease(sid, new_owner, epoch)
            return
        facts = await self.store.dispatch_facts(sid, dispatch["id"])
        results = {f["body"].get("call_id") for f in facts if f["kind"] == "tool.result"}
        started = {f["body"].get("call_id") for f in facts if f["kind"] == "tool.started"}
        # A call that was asked about and has not run: pending, or decided while no unit could
        # act on it. Resume it (never ask again); a decided one then runs or is denied at once.
        pending = next(
            (
                a
                for a in await self.store.approvals_for(dispatch["id"])
                if a["status"] != "cancelled" and a["call_id"] not in results and a["call_id"] not in started
            ),
            None,
        )
        model, params = self._model(agent, session)
        sandbox, refusal = None, None
        try:
            sandbox = self.sandbox_for(agent)
        except Rejected as exc:
            refusal = exc.message  # the resumed unit stops with it rather than run unsandboxed
        spec = self._spec(dispatch["id"], session, agent, epoch, model, params, sandbox)
        spec.sandbox_refusal = refusal
        spec.input_seq = dispatch.get("input_seq")
        unit = ReActUnit(spec, self)
        await self.store.update_dispatch(dispatch["id"], epoch=epoch, owner=new_owner)
        if pending is not None:
            log.info("recovery.resume_approval", dispatch=dispatch["id"], approval=pending["id"])
            self._launch(unit, new_owner, resume=True)
            return
        unit.journal.keys = len(facts) + 100  # never reuse a key
        for f in facts:
            if f["kind"] == "tool.started" and f["body"].get("call_id") not in results:
                await unit.append(
                    "tool.result",
                    "tool",
                    result_body(
                        f["body"]["call_id"], "unknown", UNKNOWN_OUTCOME, command=f["body"].get("command")
                    ),
                )
        await unit.append(
            "interrupt", None, {"cause": "crash", "reason": "the daemon stopped during this dispatch"}
        )
        # The row's step count is written at the end, which a crash never reached: count the
        # steps from the dispatch's facts.
        steps = max(
            (
                int((f.get("meta") or {}).get("step", 0))
                for f in facts
                if f["kind"] == "message" and f["role"] == "assistant"
            ),
            default=int(dispatch["steps"] or 0),
        )
        await unit.append(
            "dispatch.end",
            None,
            {"status": "crashed", "reason": "recovered after a crash", "steps": steps},
        )
        await self.store.update_dispatch(dispatch["id"], status="crashed", steps=steps, ended=True)
        await self.store.release_lease(sid, new_owner, epoch)
        log.info("recovery.crashed_dispatch", dispatch=dispatch["id"], session=sid)

    async def _start_unstarted(
        self, session: dict[str, Any], agent: dict[str, Any], dispatch_id: str, owner: str, epoch: int
    ) -> bool:
        """A dispatch whose input message is durable but whose row was never written (the daemon
        stopped in between): run it now, so the message is answered rather than silently dropped.
        Returns False when there is nothing to run (no input, or more than an input)."""
        sid = session["id"]
        facts = await self.store.dispatch_facts(sid, dispatch_id)
        if len(facts) != 1 or facts[0]["kind"] != "message" or facts[0]["role"] != "user":
            return False
        try:
            sandbox = self.sandbox_for(agent)
        except Rejected:
            return False
        model, params = self._model(agent, session)
        spec = self._spec(dispatch_id, session, agent, epoch, model, params, sandbox)
        spec.input_seq, spec.input_meta = int(facts[0]["seq"]), dict(facts[0].get("meta") or {})
        spec.key_counter = 100  # the input took the first key
        await self.store.create_dispatch(
            dispatch_id=dispatch_id,
            session_id=sid,
            agent_id=agent["id"],
            epoch=epoch,
            owner=owner,
            model=model,
            input_seq=spec.input_seq,
        )
        self._launch(ReActUnit(spec, self), owner, resume=False)
        log.info("recovery.started_unstarted_dispatch", dispatch=dispatch_id, session=sid)
        return True

    # -- life cycle ----------------------------------------------------------------------------

    async def start_background(self) -> None:
        self.commands_dir.mkdir(parents=True, exist_ok=True)
        killed = kill_leftovers(self.commands_dir)
        if killed:
            log.warning("recovery.killed_leftover_commands", process_groups=killed)
        await self.recover()
        self._background = asyncio.create_task(self._recovery_loop(), name="recovery")

    async def _recovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl)
            try:
                await self.recover()
            except Exception:
                log.exception("recovery.loop_failed")

    async def close(self, timeout: float) -> None:
        """Stop: interrupt running units (cause shutdown); units waiting for a human just stop
        (their approval stays pending and resumes at the next start). No dispatch starts once
        this begins; one that was starting is let finish starting, then stopped like the rest."""
        self._closing = True
        while self._starting:
            self._started.clear()
            await self._started.wait()
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        for sid, unit in list(self.units.items()):
            if unit.spec.dispatch_id in self._waiting:
                task = self._tasks.get(sid)
                if task is not None:
                    task.cancel()
            else:
                unit.interrupt(reason="the daemon is stopping", cause="shutdown")
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def running(self) -> int:
        return len(self.units)

    def get_unit(self, session_id: str) -> ReActUnit:
        unit = self.units.get(session_id)
        if unit is None:
            raise NotFound(f"session {session_id} has no running dispatch")
        return unit
