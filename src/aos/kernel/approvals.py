"""Durable approvals: a command held for a person, and the units waiting on one.

``tool.before`` may answer *ask*. The unit then records an approval row (it outlives the
daemon), appends an ``approval.requested`` fact and waits here until ``approval.resolve``
(a person, through the CLI or the web UI) decides it, the dispatch is interrupted (the approval
is cancelled), or the daemon stops (it stays pending and is waited on again after a restart,
never asked twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import Conflict

from ..db.store import Store, new_id
from ..loop.spec import Stop
from ..loop.tools import result_body
from .hooks import Ask, HookBus

if TYPE_CHECKING:
    from ..loop.model import ToolCall
    from ..loop.react import ReActUnit

__all__ = ["Approvals"]


class Approvals:
    """The approvals of one kernel's units."""

    def __init__(self, store: Store, hooks: HookBus) -> None:
        self.store = store
        self.hooks = hooks
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Told the id of an approval resolved here that no unit of this kernel waits for.
        self.on_resolved: Callable[[str], None] | None = None
        #: Dispatch ids waiting for a human (a stopping daemon leaves them pending).
        self.waiting: set[str] = set()

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
        return await self.wait(unit, row)

    async def wait(self, unit: ReActUnit, row: dict[str, Any], *, recorded: bool = False) -> str | None:
        """Wait until ``row`` is decided (at once if it already is); ``recorded``: its
        ``approval.resolved`` fact is already in history (a restart after the decision)."""
        spec = unit.spec
        await self._mark_waiting(unit)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[row["id"]] = fut
        self.waiting.add(spec.dispatch_id)
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
            self.waiting.discard(spec.dispatch_id)
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
        elif self.on_resolved is not None:
            self.on_resolved(approval_id)  # its unit may wait on another kernel
        return row

    async def resolved_elsewhere(self, approval_id: str) -> None:
        """Another kernel resolved ``approval_id``: wake our unit waiting for it, if any."""
        fut = self._waiters.get(approval_id)
        if fut is not None and not fut.done():
            row = await self.store.get_approval(approval_id)
            if not fut.done():
                fut.set_result(row)
