"""The ReActUnit: one LLM + bash loop per dispatch.

Every step: ``session.assemble`` → ``compute.model`` → ``compute.before`` → the model → an
assistant fact with usage → for each tool call: ``tool.env``, ``tool.before`` (may rewrite, refuse
or ask a human), ``tool.started`` fact, bash, ``tool.after``, ``tool.result`` fact. Interrupts,
lease loss and limits are checked between every step. Control flow that ends the loop is an
exception carrying its reason (:class:`Stop`), caught in one place, :meth:`ReActUnit.run`.

The unit stands on narrow parts: the model client (:func:`aos.loop.model.complete`), the
:class:`~aos.loop.journal.Journal` it writes facts through (epoch-fenced, idempotent, in order),
the :class:`~aos.loop.context.Context` it assembles the model's input with, its
:class:`~aos.loop.tools.ToolCalls` (each call from its hooks to its result, in the
:class:`~aos.loop.shell.Shell` its commands run in), and the hook bus. The dispatcher that
launches it gives it the end of a dispatch in one commit and the session's services to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import AosError

from ..kernel.hooks import HookError
from ..logs import debug_enabled, get_logger
from ..redact import StreamScrubber
from .compute import call_model
from .context import Context, InvalidContext
from .journal import Journal, SteeredLate
from .shell import Shell
from .spec import Stop, UnitSpec, Usage
from .tools import ToolCalls, result_body

if TYPE_CHECKING:
    from ..kernel.dispatch import Dispatcher

__all__ = ["ReActUnit", "Stop", "UnitSpec", "result_body"]

log = get_logger("aos.react")


@dataclass
class ReActUnit:
    spec: UnitSpec
    dispatcher: Dispatcher
    interrupt_reason: str | None = None
    interrupt_cause: str = "user"
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    usage: Usage = field(default_factory=Usage)
    #: The model's final answer (the text of its last message without tool calls).
    reply: str | None = None
    #: Set once the unit writes its end: what is left is giving the lease back.
    ending: bool = False
    #: Set when its end, its dispatch row and the lease's release were committed together.
    released: bool = False
    #: The final answer's fact, held back to be committed with the dispatch's end.
    _final: dict[str, Any] | None = None
    journal: Journal = field(init=False)
    shell: Shell = field(init=False)
    context: Context = field(init=False)
    tools: ToolCalls = field(init=False)
    _catalog: list[dict[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        spec, kernel = self.spec, self.dispatcher.kernel
        self.journal = Journal(
            kernel,
            session_id=spec.session_id,
            dispatch_id=spec.dispatch_id,
            agent_id=spec.agent["id"],
            epoch=spec.epoch,
            keys=spec.key_counter,
        )
        store = self.dispatcher.store
        self.context = Context(
            spec.session_id,
            spec.model,
            lambda sid, after: store.list_history(sid, after_seq=after, limit=100_000),
            self.dispatcher.assembled,
            self.dispatcher.windows,
        )
        self.shell = Shell(
            workspace=spec.workspace,
            agent_dir=kernel.paths.agent_dir(str(spec.agent["name"])),
            skills=spec.skills,
            gateway=kernel.gateway.path,
            track_dir=self.dispatcher.commands_dir,
            tools=kernel.paths.tools,
            sandbox=spec.sandbox,
            bwrap=kernel.sandbox_probe.bwrap,
        )
        self.tools = ToolCalls(self, self.dispatcher.hooks, self.dispatcher.approvals, store)
        #: The skills the prompt's catalog lists (hidden ones are enabled, on PATH, not listed).
        self._catalog = [s for s in spec.skills if not s.get("hidden")]

    # -- identity / helpers --------------------------------------------------------------------

    @property
    def ids(self) -> dict[str, Any]:
        ids = {
            "agent_id": self.spec.agent["id"],
            "session_id": self.spec.session_id,
            "dispatch_id": self.spec.dispatch_id,
        }
        payer = self.spec.input_meta.get("payer") if self.spec.input_meta else None
        if payer:  # another agent's budget pays for this dispatch (a woken chain's initiator)
            ids["payer"] = payer
        return ids

    async def append(self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None = None) -> int:
        """Append a fact durably, in order (see :class:`~aos.loop.journal.Journal`)."""
        return await self.journal.append(kind, role, body, meta)

    async def settle_appends(self) -> None:
        """Wait until the fact being written in the background is durable."""
        await self.journal.settle()

    def interrupt(self, *, reason: str, cause: str) -> None:
        """Ask the unit to stop at the next step boundary (a running command is killed)."""
        self.interrupt_reason = reason
        self.interrupt_cause = cause
        self.interrupted.set()

    def live(self, type_: str, **fields: Any) -> None:
        """A live event for whoever follows the session now (see ``history.subscribe``)."""
        self.dispatcher.kernel.live(
            self.spec.session_id, {"type": type_, "dispatch_id": self.spec.dispatch_id, **fields}
        )

    def live_text(self) -> LiveText | None:
        """The model's text as it comes, for live followers; None (no streaming at all) when
        nobody follows live."""
        if not self.dispatcher.kernel.live_wanted(self.spec.session_id):
            return None
        return LiveText(self, self.spec.steps + 1)

    def stopped(self) -> Stop:
        """The :class:`Stop` an interrupt ends the loop with."""
        return Stop("interrupted", self.interrupt_reason or "interrupted", cause=self.interrupt_cause)

    def check(self) -> None:
        """Between steps: stop on interrupt or step limit."""
        if self.interrupted.is_set():
            raise self.stopped()
        if self.spec.steps >= self.spec.max_steps:
            raise Stop("max_steps", f"the step limit ({self.spec.max_steps}) was reached")

    async def until_interrupted(self, aw: Any) -> Any:
        """Await ``aw`` unless an interrupt comes first (then cancel it and stop)."""
        task = asyncio.ensure_future(aw)
        waiter = asyncio.ensure_future(self.interrupted.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise self.stopped()

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, resume: bool = False) -> str:
        """Run to the end; returns the final status. Never raises except on cancellation."""
        started = False
        while True:
            status, reason, details = await self._steps(resume, started)
            started = True
            try:
                return await self.finish(status, reason, details)
            except SteeredLate:
                # A message steered in from another kernel was stored after the final step read
                # its context: nothing of the end was written. The answer stays an ordinary
                # fact, and the unit takes one more step, which reads the message.
                log.info("dispatch.steered_late", dispatch=self.spec.dispatch_id)
                final, self._final, self.reply, self.ending = self._final, None, None, False
                if final is not None:
                    await self.journal.write(final)  # (stored already where another kernel lives)

    async def _steps(self, resume: bool, started: bool) -> tuple[str, str, dict[str, Any]]:
        """Steps until the final answer or a stop: ``(status, reason, details)``."""
        status, reason, details = "done", "", {}
        try:
            if not started:
                # Right after a start or a reload, wait for this session's services to register.
                names = {s["name"] for s in self.spec.skills}
                await self.dispatcher.kernel.services.settle(names, timeout=12)
                if self.spec.sandbox_refusal:
                    raise Stop("refused", self.spec.sandbox_refusal)
                if resume:
                    await self.tools.resume_pending()
            while True:
                self.check()
                if await self.step():
                    break
        except Stop as stop:
            status, reason, details = stop.status, stop.reason, stop.details
        except AosError as exc:
            status, reason = (
                ("lease_lost", exc.message) if exc.type == "stale_epoch" else ("failed", exc.message)
            )
            log.error("dispatch.failed", dispatch=self.spec.dispatch_id, error=exc.message)
        except Exception as exc:
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("dispatch.crashed", dispatch=self.spec.dispatch_id)
        return status, reason, details

    async def finish(self, status: str, reason: str, details: dict[str, Any]) -> str:
        """Write the dispatch's end; returns its final status (``lease_lost`` if that showed up)."""
        self.ending = True
        if status == "lease_lost":
            with contextlib.suppress(Exception):
                await self.settle_appends()  # refused, like every write of a lost lease
            return status  # another writer owns the session now: write nothing more
        j = self.journal
        if status == "done" and self._final is not None and self.dispatcher.kernel.peers.count > 0:
            # Other kernels live: a message may be steered in from one of them while this run
            # ends. The answer is stored first, so such a message comes after it, and the step
            # it causes reads it as the next turn (see run). One kernel alone keeps its one
            # commit: its own steered messages are seen before the answer is taken as final.
            await j.write(self._final)
            self._final = None
        facts = [] if self._final is None else [self._final]
        if status == "interrupted":
            facts.append(j.fact("interrupt", None, {"cause": details.get("cause", "user"), "reason": reason}))
        elif status in ("failed", "refused", "max_steps"):
            facts.append(j.fact("error", None, {"status": status, "message": reason, **details}))
        end = {"status": status, "reason": reason, "steps": self.spec.steps, "usage": self.usage.as_dict()}
        facts.append(j.fact("dispatch.end", None, end))
        try:
            self.released = await j.end(self if self.spec.owner else None, status, facts)
        except AosError as exc:
            log.error("dispatch.end_not_written", dispatch=self.spec.dispatch_id, error=exc.message)
            if exc.type == "stale_epoch":
                return "lease_lost"
        return status

    async def end(self, status: str, facts: list[dict[str, Any]]) -> bool:
        """The journal's :class:`~aos.loop.journal.Ender`: the dispatcher's one-commit end."""
        return await self.dispatcher.end(self, status, facts)

    async def step(self) -> bool:
        """One model call and its tool calls; True when the model gave its final answer."""
        messages = await self.assemble()
        reply, requested, failed = await call_model(self, messages)
        usage = reply.usage()
        payer = self.spec.input_meta.get("payer") if self.spec.input_meta else None
        if payer:
            usage["payer"] = payer
        if debug_enabled():
            log.debug(
                "model.call",
                dispatch=self.spec.dispatch_id,
                model=reply.model,
                ms=round(reply.latency_ms, 1),
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                tool_calls=len(reply.tool_calls),
                finish=reply.finish_reason,
            )
        self.usage.add(usage)
        self.context.last_prompt_tokens = usage["prompt_tokens"]
        self.spec.steps += 1
        body = {
            "text": reply.text,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
        }
        meta = {"step": self.spec.steps, "usage": usage, "finish_reason": reply.finish_reason}
        if failed:  # the models that failed before this one answered: failover, kept in history
            meta["failed_over"] = failed
        self.dispatcher.hooks.event(
            "compute.after",
            {
                **self.ids,
                "model": reply.model,
                "requested": requested,
                "usage": usage,
                "latency_ms": reply.latency_ms,
            },
        )
        if not reply.tool_calls and self.dispatcher.steering.unread(self):
            # A person wrote while the model answered: it reads that before the dispatch ends.
            self.journal.append_soon("message", "assistant", body, meta)
            return False
        if not reply.tool_calls:
            # The final answer is committed with the dispatch's end (one commit, see finish).
            self._final = self.journal.fact("message", "assistant", body, meta)
            self.reply = reply.text
            return True
        # Durable before any command runs (the next append waits for it), but its commit overlaps
        # the tool.env and tool.before hooks of the first call.
        self.journal.append_soon("message", "assistant", body, meta)
        for call in reply.tool_calls:
            if self.interrupted.is_set():
                await self.append(
                    "tool.result", "tool", result_body(call.id, "interrupted", "not run: interrupted")
                )
                continue
            await self.tools.call(call)
        return False

    async def assemble(self) -> list[dict[str, Any]]:
        """The context for the next model call (see :mod:`aos.loop.context`)."""
        input_data = {**self.ids, "agent": _agent_view(self.spec.agent), "skills": self._catalog}
        try:
            return await self.context.assemble(
                lambda i, o: self._required_transform("session.assemble", i, o), input_data
            )
        except (HookError, InvalidContext) as exc:
            raise Stop("failed", str(exc)) from exc

    async def _required_transform(self, hook: str, input_data: dict[str, Any], output_data: Any) -> Any:
        """Run a required transform; if it fails because its skill's service is restarting, wait
        for the service (at most ``service_wait_s``, saying so in the stream) and try once more."""
        try:
            return await self.dispatcher.hooks.transform(hook, input_data, output_data)
        except HookError:
            if not await self.wait_for_services(hook):
                raise
        return await self.dispatcher.hooks.transform(hook, input_data, output_data)

    async def wait_for_services(self, hook: str) -> bool:
        """Wait while a service providing ``hook`` restarts; True if one was waited for and runs now."""
        services = self.dispatcher.kernel.services
        waiting = services.restarting(h.skill for h in self.dispatcher.hooks.handlers(hook))
        if not waiting:
            return False
        await self.append(
            "dispatch.waiting",
            None,
            {
                "hook": hook,
                "skills": waiting,
                "reason": f"waiting up to {self.spec.service_wait_s:g} s for {', '.join(waiting)} to restart",
            },
        )
        return await self.until_interrupted(services.wait_running(waiting, self.spec.service_wait_s))  # type: ignore[no-any-return]


def _agent_view(agent: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "display_name", "model", "instructions", "workspace", "settings")
    return {k: agent.get(k) for k in keys}


class LiveText:
    """A model's text for live followers as it is produced, word by word, scrubbed (a secret
    split across two pieces included: :class:`~aos.redact.StreamScrubber`)."""

    def __init__(self, unit: ReActUnit, step: int) -> None:
        self.unit = unit
        self.step = step
        self.scrubber = StreamScrubber()

    def __call__(self, text: str) -> None:
        self._send(self.scrubber.feed(text))

    def flush(self) -> None:
        """The answer ended (or its call failed): what was held back."""
        self._send(self.scrubber.flush())

    def _send(self, text: str) -> None:
        if text:
            self.unit.live("text", step=self.step, text=text)
