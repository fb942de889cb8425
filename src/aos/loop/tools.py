"""A dispatch's tool calls: from the model's call to its ``tool.result`` fact.

Each call goes: ``tool.env`` (what its environment adds), ``tool.before`` (a guard may rewrite
it, refuse it or ask a person: :class:`~aos.kernel.approvals.Approvals`), a ``tool.started``
fact (durable before the command runs), the command in the agent's :class:`~aos.loop.shell.Shell`,
``tool.after`` (a skill may fold long output into content) and the ``tool.result`` fact. After a
restart, :meth:`ToolCalls.resume_pending` finishes the calls of the last step that have no result.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, Any

from ..kernel.hooks import Ask, Reject
from ..logs import debug_enabled, get_logger
from ..redact import StreamScrubber
from .model import ToolCall
from .spec import Stop

if TYPE_CHECKING:
    from ..db.store import Store
    from ..kernel.approvals import Approvals
    from ..kernel.hooks import HookBus
    from .react import ReActUnit

__all__ = ["ToolCalls", "result_body"]

log = get_logger("aos.react")


class ToolCalls:
    """The tool calls of one unit; it stands on the hook bus, the approvals, the store (for
    whole outputs and, after a restart, the dispatch's facts) and the unit's journal and shell."""

    def __init__(self, unit: ReActUnit, hooks: HookBus, approvals: Approvals, store: Store) -> None:
        self.unit = unit
        self.hooks = hooks
        self.approvals = approvals
        self.store = store
        self._format_errors = 0

    async def call(self, call: ToolCall) -> None:
        """Run one of the model's tool calls through its hooks to its ``tool.result`` fact."""
        try:
            command = call.command()
        except ValueError as exc:
            self._format_errors += 1
            await self.unit.append(
                "tool.result", "tool", result_body(call.id, "format_error", f"error: {exc}")
            )
            if self._format_errors >= self.unit.spec.max_format_errors:
                raise Stop("failed", f"{self._format_errors} malformed tool calls in a row") from exc
            return
        self._format_errors = 0
        cwd = str(self.unit.spec.workspace)
        env = await self.env(call.id)
        before = {**self.unit.ids, "call_id": call.id}
        verdict = await self.hooks.gate("tool.before", before, {"args": {"command": command}, "cwd": cwd})
        if isinstance(verdict, Reject) and await self.unit.wait_for_services("tool.before"):
            # Refused because a guard was restarting: ask it again now that it runs.
            verdict = await self.hooks.gate("tool.before", before, {"args": {"command": command}, "cwd": cwd})
        if isinstance(verdict, Reject):
            await self.unit.append(
                "tool.result",
                "tool",
                result_body(
                    call.id, "rejected", f"refused by {verdict.skill}: {verdict.reason}", skill=verdict.skill
                ),
            )
            return
        if isinstance(verdict, Ask):
            decision = await self.approvals.ask(self.unit, call, command, cwd, verdict)
            if decision is None:
                return
            command = decision
        else:
            command = str(verdict.get("args", {}).get("command", command))
            cwd = str(verdict.get("cwd", cwd))
        await self.execute(call.id, command, cwd, env)

    async def env(self, call_id: str) -> dict[str, str]:
        """The command's environment: the shell's, with what ``tool.env`` adds and the ``AOS_*``
        identity (which wins)."""
        extra = await self.hooks.transform("tool.env", {**self.unit.ids, "call_id": call_id}, {"env": {}})
        added = extra.get("env") if isinstance(extra, dict) and isinstance(extra.get("env"), dict) else None
        identity = {
            "AOS_SESSION_ID": self.unit.spec.session_id,
            "AOS_AGENT_ID": self.unit.spec.agent["id"],
            "AOS_AGENT": self.unit.spec.agent["name"],
            "AOS_DISPATCH_ID": self.unit.spec.dispatch_id,
            "AOS_TOKEN": self.unit.spec.token,
        }
        return self.unit.shell.env(added, identity)

    async def execute(self, call_id: str, command: str, cwd: str, env: dict[str, str]) -> None:
        argv = self.unit.shell.argv(command, cwd)
        await self.unit.append(
            "tool.started",
            None,
            {"call_id": call_id, "command": command, "cwd": cwd, "sandbox": "bwrap" if argv else "off"},
        )
        live = self.live_output(call_id)
        try:
            res = await self.unit.shell.run(
                command,
                cwd,
                env,
                argv,
                on_output=live,
                timeout=self.unit.spec.bash_timeout_s,
                cap=self.unit.spec.output_cap_bytes,
                keep=self.unit.spec.content_cap_bytes,
                stop=self.unit.interrupted,
            )
        finally:
            if live is not None:
                live.flush()
        if debug_enabled():
            log.debug(
                "command.run",
                dispatch=self.unit.spec.dispatch_id,
                call_id=call_id,
                sandbox="bwrap" if argv else "off",
                exit_code=res.exit_code,
                ms=round(res.duration_ms, 1),
                bytes=res.size,
            )
        if res.stopped:
            # What it printed before it was killed is kept: the model and the person see it.
            await self.unit.append(
                "tool.result",
                "tool",
                result_body(
                    call_id,
                    "interrupted",
                    res.output
                    + ("\n" if res.output and not res.output.endswith("\n") else "")
                    + "[interrupted: the command was killed]",
                    size=res.size,
                    truncated=res.truncated,
                    duration_ms=round(res.duration_ms, 1),
                ),
            )
            raise self.unit.stopped()
        content_id = None
        if res.full is not None:  # capped, or with NUL bytes: the exact output goes to content
            put = await self.store.put_content(
                agent_id=self.unit.spec.agent["id"],
                session_id=self.unit.spec.session_id,
                data=res.full,
                mime="text/plain",
            )
            content_id = put["content_id"]
        visible = await self.hooks.transform(
            "tool.after",
            {
                **self.unit.ids,
                "call_id": call_id,
                "command": command,
                "exit_code": res.exit_code,
                "content_id": content_id,
                "size": res.size,
                "truncated": res.truncated,
            },
            {"output": res.output},
        )
        output = str(visible.get("output", res.output)) if isinstance(visible, dict) else res.output
        if isinstance(visible, dict) and isinstance(visible.get("content_id"), str):
            content_id = visible["content_id"]  # a skill folded the output into content
        folded = isinstance(visible, dict) and visible.get("folded") is True
        if res.timed_out:
            output += f"\n[killed after {self.unit.spec.bash_timeout_s:g} s timeout]"
        body = result_body(
            call_id,
            res.outcome,
            output,
            exit_code=res.exit_code,
            size=res.size,
            truncated=res.truncated,
            duration_ms=round(res.duration_ms, 1),
        )
        if content_id:
            body["content_id"] = content_id
        if folded:
            body["folded"] = True
        await self.unit.append("tool.result", "tool", body)
        self.hooks.event(
            "tool.after_event",
            {**self.unit.ids, "call_id": call_id, "command": command, "exit_code": res.exit_code},
        )

    async def resume_pending(self) -> None:
        """After a restart: finish the tool calls of the last assistant fact that have no result
        (the one waiting for approval is asked again, from its durable row)."""
        facts = await self.store.dispatch_facts(self.unit.spec.session_id, self.unit.spec.dispatch_id)
        self.unit.journal.keys = max(self.unit.journal.keys, len(facts) + 100)  # never reuse a key
        assistant = next(
            (f for f in reversed(facts) if f["kind"] == "message" and f["role"] == "assistant"), None
        )
        if assistant is None:
            return
        done = {
            f["body"].get("call_id")
            for f in facts
            if f["kind"] == "tool.result" and f["seq"] > assistant["seq"]
        }
        self.unit.spec.steps = int((assistant.get("meta") or {}).get("step", 0))
        resolved = {f["body"].get("approval_id") for f in facts if f["kind"] == "approval.resolved"}
        for raw in assistant["body"].get("tool_calls") or []:
            if raw["id"] in done:
                continue
            call = ToolCall(raw["id"], raw["name"], raw["arguments"])
            # One command, one approval: a call that was asked about is never asked again,
            # whether its approval is still pending or was decided while no unit acted on it.
            asked = await self.store.approval_for_call(self.unit.spec.dispatch_id, call.id)
            if asked is not None:
                decision = await self.approvals.wait(self.unit, asked, recorded=asked["id"] in resolved)
                if decision is not None:
                    await self.execute(call.id, decision, asked["cwd"], await self.env(call.id))
            else:
                await self.call(call)

    def live_output(self, call_id: str) -> LiveOutput | None:
        """What a command prints, as it prints it, for live followers (see :class:`LiveOutput`).
        None when nobody follows live, here or on another kernel: nothing is done per chunk."""
        kernel = self.unit.dispatcher.kernel
        if not kernel.live_wanted(self.unit.spec.session_id) and kernel.peers.count <= 0:
            return None
        return LiveOutput(self.unit, call_id)


class LiveOutput:
    """A command's output for live followers, as it prints it: decoded, scrubbed like the stored
    output (a secret split across two chunks included: :class:`~aos.redact.StreamScrubber`), at
    most the output cap of it (the ``tool.result`` has the rest). A follower on another kernel is
    asked of each chunk (a dict lookup), so one whose watch arrives mid-command gets the rest."""

    def __init__(self, unit: ReActUnit, call_id: str) -> None:
        self.unit = unit
        self.call_id = call_id
        self.budget = unit.spec.output_cap_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.scrubber = StreamScrubber()

    def __call__(self, data: bytes) -> None:
        if self.budget <= 0:
            return
        data = data[: self.budget]
        self.budget -= len(data)
        text = self.scrubber.feed(self.decoder.decode(data))
        if self.budget <= 0:
            text += self.scrubber.flush() + "\n[… more in the result]\n"
        self._send(text)

    def flush(self) -> None:
        """The command ended: what was held back (an unfinished last line)."""
        self._send(self.scrubber.feed(self.decoder.decode(b"", final=True)) + self.scrubber.flush())

    def _send(self, text: str) -> None:
        if text and self.unit.dispatcher.kernel.live_wanted(self.unit.spec.session_id):
            self.unit.live("output", call_id=self.call_id, text=text)


def result_body(call_id: str, outcome: str, output: str, **extra: Any) -> dict[str, Any]:
    """The body of a ``tool.result`` fact."""
    return {"call_id": call_id, "outcome": outcome, "output": output, **extra}
