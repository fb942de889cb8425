"""Recovery: dispatches whose kernel died.

At start and every second (``limits.recovery_scan_s``) the dispatcher looks at sessions still
leased by an owner that is gone: a kernel whose heartbeat (the ``kernels`` table) is older than
its ttl, wherever it ran, or an expired lease of an owner that is no registered kernel. A dispatch that was
waiting for a human resumes waiting; any other gets, for each command that started without a
result, a ``tool.result`` with outcome ``unknown`` (never re-run), then an ``interrupt`` fact
with cause ``crash``, and its session goes back to idle. A dispatch whose input message is
durable but whose row was never written is started now, so the message is answered.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import Archived, NotFound, Rejected, SessionBusy

from ..logs import get_logger
from ..loop.react import ReActUnit
from ..loop.tools import result_body

if TYPE_CHECKING:
    from .dispatch import Dispatcher

__all__ = ["Recovery"]

log = get_logger("aos.dispatch")

UNKNOWN_OUTCOME = (
    "the daemon stopped while this command was running: it may or may not have finished, and its "
    "output is lost. It was not run again."
)


class Recovery:
    """Finds and ends (or resumes) the dispatches of dead kernels, for one dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher

    def owner_dead(self, owner: str, expired: bool, kernel_alive: bool | None) -> bool:
        """Whether the lease's owner is gone. Another kernel is, once its heartbeat is older than
        its ttl (``kernel_alive`` false), on whatever host or PID namespace it ran; an owner that
        is no registered kernel (a lease from before kernels registered) once its lease expired."""
        kernel, _, dispatch_id = owner.partition("/")
        if kernel == self.d.kernel_id:
            # Ours: dead only if no unit of ours runs it and its lease ran out (a unit that could
            # not give its lease back while the database was down).
            return expired and not any(u.spec.dispatch_id == dispatch_id for u in self.d.units.values())
        if kernel_alive is None:
            return expired
        # A live kernel never lets a unit's lease run out while the unit works (it stops the
        # unit first: Dispatcher._renew), so an expired lease of one has no unit left either.
        return expired or not kernel_alive

    async def recover(self, session_id: str | None = None, *, every: bool = True) -> list[str]:
        """Recover dispatches whose kernel died (of every session, or of this one, as a new
        dispatch claims it); returns their ids. ``every=False``: only sessions with an open
        dispatch row (an indexed look, made every second; a lease with no open row is left to
        the full look, made at start and every 30 s)."""
        recovered = []
        leased = await self.d.store.leased_sessions(session_id, with_open_dispatch=not every)
        for s in leased:
            owner = s["lease_owner"]
            if not self.owner_dead(owner, bool(s["expired"]), s["kernel_alive"]):
                continue
            dispatch_id = owner.split("/", 1)[1] if "/" in owner else None
            try:
                await self._recover_one(s, dispatch_id)
                recovered.append(dispatch_id or s["id"])
            except Exception:
                log.exception("recovery.failed", session=s["id"], owner=owner)
        if session_id is None:
            recovered += await self._close_orphans()
        return recovered

    async def _close_orphans(self) -> list[str]:
        """Dispatch rows left open on a session that is free (nobody holds its lease for them):
        close them as after a crash. One on a session busy with another dispatch waits for it."""
        closed = []
        mine = {u.spec.dispatch_id for u in self.d.units.values()}
        for row in await self.d.store.unleased_open_dispatches():
            if row["id"] in mine:
                continue
            owner = f"{self.d.kernel_id}/{row['id']}"
            try:
                leased = await self.d.store.claim_lease(row["session_id"], owner, self.d.ttl)
            except (SessionBusy, Archived):
                continue
            try:
                await self._recover_one(leased, row["id"], taken=(owner, leased))
                closed.append(row["id"])
            except Exception:
                log.exception("recovery.failed", session=row["session_id"], dispatch=row["id"])
        return closed

    async def _recover_one(
        self,
        session: dict[str, Any],
        dispatch_id: str | None,
        *,
        taken: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """End (or resume) ``dispatch_id`` of ``session``, taking its lease from the dead owner
        (or with the lease already ``taken``: ``(owner, session row)``)."""
        sid = session["id"]
        dispatch = None
        if dispatch_id:
            # The row is written after the lease is claimed and the input appended: a daemon that
            # stopped in between leaves a lease whose dispatch row never existed (see below).
            with contextlib.suppress(NotFound):
                dispatch = await self.d.store.get_dispatch(dispatch_id)
        if taken is not None:
            new_owner, leased = taken
        else:
            new_owner = f"{self.d.kernel_id}/{dispatch_id or 'recovery'}"
            got = await self.d.store.take_over_lease(sid, session["lease_owner"], new_owner, self.d.ttl)
            if got is None:
                return  # someone else recovered it first
            leased = got
        epoch = int(leased["lease_epoch"])
        agent = await self.d.store.get_agent(session["agent_id"])
        if dispatch is None:
            if dispatch_id is not None and await self._start_unstarted(
                session, agent, dispatch_id, new_owner, epoch
            ):
                return
            await self.d.store.release_lease(sid, new_owner, epoch)
            return
        facts = await self.d.store.dispatch_facts(sid, dispatch["id"])
        results = {f["body"].get("call_id") for f in facts if f["kind"] == "tool.result"}
        started = {f["body"].get("call_id") for f in facts if f["kind"] == "tool.started"}
        # A call that was asked about and has not run: pending, or decided while no unit could
        # act on it. Resume it (never ask again); a decided one then runs or is denied at once.
        pending = next(
            (
                a
                for a in await self.d.store.approvals_for(dispatch["id"])
                if a["status"] != "cancelled" and a["call_id"] not in results and a["call_id"] not in started
            ),
            None,
        )
        model, params = self.d.specs.model(agent, session)
        sandbox, refusal = None, None
        try:
            sandbox = self.d.specs.sandbox_for(agent)
        except Rejected as exc:
            refusal = exc.message  # the resumed unit stops with it rather than run unsandboxed
        spec = self.d.specs.spec(dispatch["id"], session, agent, epoch, model, params, sandbox)
        spec.sandbox_refusal = refusal
        spec.input_seq = dispatch.get("input_seq")
        unit = ReActUnit(spec, self.d)
        # Its first owner stays on the row (the kernel it ran on); who recovered it goes beside.
        await self.d.store.update_dispatch(dispatch["id"], epoch=epoch, recovered_by=new_owner)
        if pending is not None:
            log.info("recovery.resume_approval", dispatch=dispatch["id"], approval=pending["id"])
            self.d._launch(unit, new_owner, resume=True)
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
        await self.d.store.update_dispatch(dispatch["id"], status="crashed", steps=steps, ended=True)
        await self.d.store.release_lease(sid, new_owner, epoch)
        log.info("recovery.crashed_dispatch", dispatch=dispatch["id"], session=sid)

    async def _start_unstarted(
        self, session: dict[str, Any], agent: dict[str, Any], dispatch_id: str, owner: str, epoch: int
    ) -> bool:
        """A dispatch whose input message is durable but whose row was never written (the daemon
        stopped in between): run it now, so the message is answered rather than silently dropped.
        Returns False when there is nothing to run (no input, or more than an input)."""
        sid = session["id"]
        facts = await self.d.store.dispatch_facts(sid, dispatch_id)
        if len(facts) != 1 or facts[0]["kind"] != "message" or facts[0]["role"] != "user":
            return False
        try:
            sandbox = self.d.specs.sandbox_for(agent)
        except Rejected:
            return False
        model, params = self.d.specs.model(agent, session)
        spec = self.d.specs.spec(dispatch_id, session, agent, epoch, model, params, sandbox)
        spec.input_seq, spec.input_meta = int(facts[0]["seq"]), dict(facts[0].get("meta") or {})
        spec.key_counter = 100  # the input took the first key
        await self.d.store.create_dispatch(
            dispatch_id=dispatch_id,
            session_id=sid,
            agent_id=agent["id"],
            epoch=epoch,
            owner=owner,
            model=model,
            input_seq=spec.input_seq,
        )
        self.d._launch(ReActUnit(spec, self.d), owner, resume=False)
        log.info("recovery.started_unstarted_dispatch", dispatch=dispatch_id, session=sid)
        return True
