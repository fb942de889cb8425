"""Dispatches: leases, ReActUnits, interrupts, durable approvals, crash recovery.

``session.dispatch`` runs the ``dispatch.before`` gate, claims the session's lease with a new
epoch (compare-and-set in PostgreSQL; a concurrent dispatch gets ``session_busy``), appends the
user message and returns the dispatch id at once; the unit runs in a task the dispatcher owns,
renewing the lease while it lives. A unit that loses its lease is cancelled and writes nothing
more.

Durable approvals are in :mod:`.approvals`, the recovery of dispatches whose kernel died in
:mod:`.recovery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import AosError, Archived, Conflict, NotFound, Rejected, SessionBusy, Unavailable

from ..db.store import Store, new_id
from ..logs import get_logger
from ..loop.bash import kill_leftovers
from ..loop.react import ReActUnit
from .approvals import Approvals
from .hooks import Ask, HookBus, Reject
from .recovery import Recovery
from .specs import Specs
from .steering import Elsewhere, Steering

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Dispatcher", "request_dispatch_id"]

log = get_logger("aos.dispatch")


#: How often recovery looks at every leased session, not only those with an open dispatch row.
_FULL_SCAN_S = 30.0


class _BusyElsewhere(Exception):
    """The session's lease is held by a live dispatch of another kernel (its lease owner)."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


def request_dispatch_id(session_id: str, request_id: str) -> str:
    """The dispatch a request id names in a session: the same on every kernel, so the request
    sent twice, or by two kernels, meets its first dispatch (or queued row) by primary key."""
    digest = hashlib.sha256(f"{session_id}\0{request_id}".encode()).hexdigest()
    return f"di_r{digest[:24]}"


class Dispatcher:
    """Owns every running unit of one kernel."""

    def __init__(self, kernel: Kernel, hooks: HookBus) -> None:
        self.kernel = kernel
        self.store: Store = kernel.store
        self.hooks = hooks
        #: This kernel's id (``kernels`` row): lease owners are ``<kernel id>/<dispatch id>``.
        self.kernel_id = kernel.id
        self.units: dict[str, ReActUnit] = {}
        #: Session -> the last seq given to ``session.assemble`` (the next dispatch sends what follows).
        self.assembled: dict[str, int] = {}
        #: Model -> its input window in tokens (0: unknown), looked up once per model.
        self.windows: dict[str, int] = {}
        #: Session -> the task of a dispatch that has written its end and is releasing the lease.
        self._ending: dict[str, asyncio.Task[None]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()
        self.specs = Specs(kernel)
        self.approvals = Approvals(self.store, hooks)
        self.recovery = Recovery(self)
        self.steering = Steering(self)
        self._background: asyncio.Task[None] | None = None
        #: Set when the daemon stops: no new dispatch is accepted after it.
        self._closing = False
        self._starting = 0  # starts under way (close waits for them, then stops what they began)
        self._started = asyncio.Event()
        self.commands_dir = kernel.paths.run / "commands"

    @property
    def ttl(self) -> float:
        return self.specs.ttl

    # -- start ---------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(
        self,
        session_id: str,
        text: str,
        meta: dict[str, Any] | None = None,
        *,
        if_busy: str = "steer",
        dispatch_id: str | None = None,
        request_id: str | None = None,
        queued: bool = False,
    ) -> dict[str, Any]:
        """Start a dispatch; returns ``{dispatch_id, session_id, epoch, seq, delivery}`` at once.

        While a dispatch of the session runs, ``if_busy`` says what becomes of the message:
        ``steer`` it into that dispatch, ``queue`` it for a dispatch of its own after it, or
        ``refuse`` it (``session_busy``); see :mod:`.steering`. A dispatch running on another
        kernel, or an agent placed on another kernel, queues it (unless refused).

        ``request_id``: the caller's id for this request; the same id again (from any kernel)
        answers with the dispatch it started or queued (``duplicate``), never a second one.
        ``queued``: ``dispatch_id`` is a claimed row of the dispatch queue.

        Raises:
            Unavailable: the daemon is stopping (a dispatch started now would be cut off at once).
        """
        if self._closing:
            raise Unavailable("the daemon is stopping: dispatch again once it is back")
        if request_id is not None:
            dispatch_id = request_dispatch_id(session_id, request_id)
            found = await self.store.find_dispatch_request(dispatch_id)
            if found is not None:
                return self.steering.answer(found, duplicate=True)
        running = self.units.get(session_id)
        if running is not None and not running.ending and if_busy != "refuse":
            if if_busy == "queue" or request_id is not None:
                return await self.steering.enqueue(
                    session_id, text, meta, dispatch_id=dispatch_id, request_id=request_id
                )
            steered = await self.steering.steer(running, text, meta)
            if steered is not None:
                return steered
            # It gave its lease back as the message came: a dispatch of its own, then.
        self._starting += 1
        try:
            for _ in range(3):
                try:
                    return await self._start(session_id, text, meta, dispatch_id, queued, if_busy)
                except _BusyElsewhere as busy:
                    if if_busy == "queue" or request_id is not None:
                        break
                    steered = await self.steering.steer_remote(session_id, busy.owner, text, meta)
                    if steered is not None:
                        return steered
                    # That dispatch ended as the message came: start one for it (or steer into
                    # whichever began meanwhile).
            return await self.steering.enqueue(
                session_id, text, meta, dispatch_id=dispatch_id, request_id=request_id
            )
        except SessionBusy:
            if if_busy == "refuse" or queued:
                raise
            # Another kernel took the lease between our look and our claim: behind it, then.
            return await self.steering.enqueue(
                session_id, text, meta, dispatch_id=dispatch_id, request_id=request_id
            )
        except Elsewhere as exc:
            if queued:
                raise
            return await self.steering.enqueue(
                session_id, text, meta, dispatch_id=dispatch_id, request_id=request_id, waiting_for=exc.home
            )
        except Conflict as exc:
            found = (
                await self.store.find_dispatch_request(dispatch_id)
                if dispatch_id and exc.details.get("started")
                else None
            )
            if found is None or queued:
                raise
            return self.steering.answer(found, duplicate=True)  # the same request, started meanwhile
        finally:
            self._starting -= 1
            if not self._starting:
                self._started.set()

    async def _start(
        self,
        session_id: str,
        text: str,
        meta: dict[str, Any] | None,
        dispatch_id: str | None,
        queued: bool,
        if_busy: str,
    ) -> dict[str, Any]:
        session = await self.store.get_session(session_id)
        owner_now = session["lease_owner"]
        if owner_now and await self.recovery.recover(session_id):
            # Its last dispatch's kernel died (or it stopped itself without a lease): that one is
            # closed first (unknown commands, crash, its end), in this session's order, before a
            # new one may claim the lease; never a new run over an unfinished one.
            session = await self.store.get_session(session_id)
        elif owner_now and not owner_now.startswith(self.kernel_id + "/") and if_busy != "refuse":
            raise _BusyElsewhere(owner_now)  # its dispatch runs on another kernel
        agent = await self.store.get_agent(session["agent_id"])
        if agent["status"] != "active":
            raise Archived(f"agent {agent['name']!r} is archived", agent=agent["id"])
        if session["status"] != "active":
            raise Archived(f"session {session_id} is archived", session=session_id)
        home = agent.get("placement")
        if home is None:  # not placed yet: this kernel's workspace is where it will work
            home = await self.store.place_agent(agent["id"], self.kernel.name)
        if home not in ("any", self.kernel.name):
            raise Elsewhere(home)
        dispatch_id = dispatch_id or new_id("di")
        ids = {"agent_id": agent["id"], "session_id": session_id, "dispatch_id": dispatch_id}
        gate = await self.hooks.gate("dispatch.before", ids, {"message": text})
        if isinstance(gate, Reject | Ask):
            raise Rejected(f"dispatch.before refused by {gate.skill}: {gate.reason}", skill=gate.skill)
        text = str(gate.get("message", text)) if isinstance(gate, dict) else text
        model, params = self.specs.model(agent, session)
        self.specs.model_client(agent, session)  # a bad value is refused before anything is written
        sandbox = self.specs.sandbox_for(agent)
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
            queued=queued,
        )
        epoch = int(leased["lease_epoch"])
        self.kernel.publish(session_id, seq, epoch, "message", "user", body, fact_meta, key, created_at)
        unit = ReActUnit(self.specs.spec(dispatch_id, session, agent, epoch, model, params, sandbox), self)
        unit.journal.keys = 1  # the input took the first key
        unit.spec.input_seq, unit.spec.input_meta = seq, meta or {}
        self._launch(unit, owner, resume=False)
        return {
            "dispatch_id": dispatch_id,
            "session_id": session_id,
            "epoch": epoch,
            "seq": seq,
            "delivery": "started",
        }

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
        self.steering.after_dispatch(spec.session_id)

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
            # A message steered in as it ends (from another kernel, or here after the unit looked)
            # is seen by the end's own transaction, which then gives way (SteeredLate).
            unread_after=unit.context.head if status == "done" else None,
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
        """Renew the unit's lease every third of the ttl. A renewal that fails (the database is
        away) is tried again every half second while the lease still holds; when it would run
        out before one succeeds, the unit stops itself first (its command killed, nothing more
        written), so no other kernel can take the session over while it still works."""
        loop = asyncio.get_running_loop()
        held_until = loop.time() + self.ttl  # a lower bound: the lease was taken before this
        margin = min(1.0, self.ttl / 6)
        while True:
            await asyncio.sleep(self.ttl / 3)
            while True:
                sent = loop.time()
                try:
                    ok = await asyncio.wait_for(
                        self.store.renew_lease(unit.spec.session_id, owner, unit.spec.epoch, self.ttl),
                        max(0.1, held_until - margin - sent),
                    )
                    held_until = sent + self.ttl
                    break
                except (AosError, TimeoutError) as exc:
                    why = exc.message if isinstance(exc, AosError) else "no answer"
                    if loop.time() + 0.5 >= held_until - margin:
                        log.error("dispatch.lease_unrenewable", dispatch=unit.spec.dispatch_id, error=why)
                        self._stop_lost(unit)
                        return
                    log.warning("dispatch.lease_renewal_failed", dispatch=unit.spec.dispatch_id, error=why)
                    await asyncio.sleep(0.5)
            if not ok and unit.ending:
                return  # it is writing its end, which gives the lease back (or finds it lost)
            if not ok:
                log.warning("dispatch.lease_lost", dispatch=unit.spec.dispatch_id)
                self._stop_lost(unit)
                return

    def _stop_lost(self, unit: ReActUnit) -> None:
        """The unit's lease is gone (or about to be): cancel it; it writes nothing more."""
        self._lost.add(unit.spec.dispatch_id)
        task = self._tasks.get(unit.spec.session_id)
        if task is not None:
            task.cancel()

    # -- interrupt -----------------------------------------------------------------------------

    async def interrupt(self, session_id: str, reason: str) -> dict[str, Any]:
        """Stop the session's dispatch at the next step boundary (killing a running command)."""
        unit = self.units.get(session_id)
        if unit is None:
            session = await self.store.get_session(session_id)
            owner = session["lease_owner"] or ""
            kernel_id, _, dispatch_id = owner.partition("/")
            if owner and kernel_id != self.kernel_id:  # its unit runs on another kernel: tell it
                self.kernel.peers.tell("interrupt", session_id, reason)
                return {"session_id": session_id, "interrupted": True, "dispatch_id": dispatch_id or None}
            return {"session_id": session_id, "interrupted": False, "dispatch_id": None}
        unit.interrupt(reason=reason, cause="user")
        return {"session_id": session_id, "interrupted": True, "dispatch_id": unit.spec.dispatch_id}

    async def wait_dispatch(self, session_id: str) -> None:
        """Return when the session's running dispatch (if any) has ended (tests, shutdown)."""
        task = self._tasks.get(session_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    # -- life cycle ----------------------------------------------------------------------------

    async def start_background(self) -> None:
        self.commands_dir.mkdir(parents=True, exist_ok=True)
        killed = kill_leftovers(self.commands_dir)
        if killed:
            log.warning("recovery.killed_leftover_commands", process_groups=killed)
        await self.recover()
        await self.steering.resume()  # queued dispatches that never began, this kernel may run
        self._background = asyncio.create_task(self._recovery_loop(), name="recovery")

    async def recover(self, *, every: bool = True) -> list[str]:
        """Recover dispatches whose kernel died (see :mod:`.recovery`); returns their ids."""
        return await self.recovery.recover(every=every)

    async def _recovery_loop(self) -> None:
        # Every second: a dead kernel's sessions are taken over within about its ttl plus this
        # of its last heartbeat. One indexed look at the leased sessions each time.
        every = float(self.specs.limit("recovery_scan_s", 1))
        loop = asyncio.get_running_loop()
        full_at = loop.time() + _FULL_SCAN_S
        while True:
            await asyncio.sleep(every)
            try:
                full = loop.time() >= full_at
                await self.recover(every=full)
                if full:
                    full_at = loop.time() + _FULL_SCAN_S
                await self.steering.resume()  # queued rows this kernel may start, missed so far
            except AosError as exc:
                log.warning("recovery.scan_failed", error=exc.message)
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
        await self.steering.close()
        for sid, unit in list(self.units.items()):
            if unit.spec.dispatch_id in self.approvals.waiting:
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
