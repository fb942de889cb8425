"""The ReActUnit: one LLM + bash loop per dispatch.

Every step: ``session.assemble`` → ``compute.model`` → ``compute.before`` → the model → an
assistant fact with usage → for each tool call: ``tool.env``, ``tool.before`` (may rewrite, refuse
or ask a human), ``tool.started`` fact, bash, ``tool.after``, ``tool.result`` fact. Interrupts,
lease loss and limits are checked between every step. Control flow that ends the loop is an
exception carrying its reason (:class:`Stop`), caught in one place, :meth:`ReActUnit.run`.

Facts are appended with the dispatch's lease epoch and deterministic idempotency keys
(``<dispatch>:<n>``), so a retried append after an unknown outcome is stored once, and a unit
that lost its lease cannot write (the database rejects the stale epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import AosError

from ..kernel.hooks import Ask, HookError, Reject
from ..logs import get_logger
from .bash import base_env, run_bash
from .model import BASH_TOOL, ModelError, ToolCall, complete, context_window
from .sandbox import GATEWAY_PATH, SandboxSettings, build_argv, skill_mounts

if TYPE_CHECKING:
    from ..kernel.dispatch import Dispatcher

__all__ = ["ReActUnit", "Stop", "UnitSpec"]

log = get_logger("aos.react")


class Stop(Exception):
    """Ends the loop: ``status`` goes into the dispatch row and the ``dispatch.end`` fact."""

    def __init__(self, status: str, reason: str = "", **details: Any) -> None:
        super().__init__(reason or status)
        self.status = status
        self.reason = reason
        self.details = details


@dataclass
class UnitSpec:
    """Everything a unit needs, fixed when the dispatch starts."""

    dispatch_id: str
    session_id: str
    agent: dict[str, Any]
    epoch: int
    model: str
    model_params: dict[str, Any]
    workspace: Path
    max_steps: int
    bash_timeout_s: float
    output_cap_bytes: int
    max_format_errors: int
    model_retries: int
    model_backoff_s: float
    #: How long a step waits for a restarting service whose hook it needs (a crashed aos-context).
    service_wait_s: float = 30.0
    #: How much of a command's whole output is kept in content (head and tail past it).
    content_cap_bytes: int = 8 * 1024 * 1024
    #: ``auto`` (straight to an OpenAI-compatible endpoint when possible) or ``litellm``.
    model_client: str = "auto"
    skills: list[dict[str, str]] = field(default_factory=list)
    #: The sandbox commands run in; None: unsandboxed (mode off, or auto without bubblewrap).
    sandbox: SandboxSettings | None = None
    #: Set when the sandbox this dispatch needs cannot be had (after a restart): the unit stops.
    sandbox_refusal: str | None = None
    token: str = ""
    #: Who holds the lease (set when the unit is launched).
    owner: str = ""
    input_seq: int | None = None
    #: The input message's meta (None after a restart: read it from history).
    input_meta: dict[str, Any] | None = None
    steps: int = 0
    key_counter: int = 0


@dataclass
class _Usage:
    prompt: int = 0
    completion: int = 0
    cost: float | None = None
    calls: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.prompt += usage["prompt_tokens"]
        self.completion += usage["completion_tokens"]
        self.calls += 1
        if usage.get("cost") is not None:
            self.cost = (self.cost or 0.0) + usage["cost"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "cost": self.cost,
            "calls": self.calls,
        }


@dataclass
class ReActUnit:
    spec: UnitSpec
    dispatcher: Dispatcher
    interrupt_reason: str | None = None
    interrupt_cause: str = "user"
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    usage: _Usage = field(default_factory=_Usage)
    _context: list[dict[str, Any]] | None = None
    _window: int | None = None
    _last_prompt_tokens: int | None = None
    _assembled_seq: int = 0
    _format_errors: int = 0
    _deferred: asyncio.Future[int] | None = None
    #: The model's final answer (the text of its last message without tool calls).
    reply: str | None = None
    #: Set once the unit writes its end: what is left is giving the lease back.
    ending: bool = False
    #: Set when its end, its dispatch row and the lease's release were committed together.
    released: bool = False
    #: The final answer's fact, held back to be committed with the dispatch's end.
    _final: dict[str, Any] | None = None

    # -- identity / helpers --------------------------------------------------------------------

    @property
    def ids(self) -> dict[str, Any]:
        return {
            "agent_id": self.spec.agent["id"],
            "session_id": self.spec.session_id,
            "dispatch_id": self.spec.dispatch_id,
        }

    async def append(self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None = None) -> int:
        """Append a fact durably (after any fact still being written: order is kept)."""
        key = self._next_key()
        await self.settle_appends()
        return await self._write(kind, role, body, meta, key)

    def append_soon(self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None = None) -> None:
        """Start appending a fact and go on; the next :meth:`append` (or :meth:`settle_appends`)
        waits for it first. Its commit then overlaps the hooks that run in between, and nothing
        with a side effect happens before it is durable."""
        key = self._next_key()
        self._deferred = asyncio.ensure_future(self._write(kind, role, body, meta, key))

    async def settle_appends(self) -> None:
        """Wait until a fact started with :meth:`append_soon` is durable (raises its error)."""
        if self._deferred is not None:
            task, self._deferred = self._deferred, None
            await task

    def _next_key(self) -> str:
        self.spec.key_counter += 1
        return f"{self.spec.dispatch_id}:{self.spec.key_counter}"

    async def _write(
        self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None, key: str
    ) -> int:
        res = await self.dispatcher.kernel.append(
            self.spec.session_id,
            epoch=self.spec.epoch,
            kind=kind,
            role=role,
            body=body,
            meta={**(meta or {}), "dispatch_id": self.spec.dispatch_id},
            idempotency_key=key,
            agent_id=self.spec.agent["id"],
        )
        return res.seq

    def interrupt(self, *, reason: str, cause: str) -> None:
        """Ask the unit to stop at the next step boundary (a running command is killed)."""
        self.interrupt_reason = reason
        self.interrupt_cause = cause
        self.interrupted.set()

    def check(self) -> None:
        """Between steps: stop on interrupt or step limit."""
        if self.interrupted.is_set():
            raise Stop("interrupted", self.interrupt_reason or "interrupted", cause=self.interrupt_cause)
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
        raise Stop("interrupted", self.interrupt_reason or "interrupted", cause=self.interrupt_cause)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, resume: bool = False) -> str:
        """Run to the end; returns the final status. Never raises except on cancellation."""
        status, reason, details = "done", "", {}
        try:
            # Right after a start or a reload, wait for this session's services to register.
            names = {s["name"] for s in self.spec.skills}
            await self.dispatcher.kernel.services.settle(names, timeout=12)
            if self.spec.sandbox_refusal:
                raise Stop("refused", self.spec.sandbox_refusal)
            if resume:
                await self.resume_pending_calls()
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
        return await self.finish(status, reason, details)

    async def finish(self, status: str, reason: str, details: dict[str, Any]) -> str:
        """Write the dispatch's end; returns its final status (``lease_lost`` if that showed up)."""
        self.ending = True
        if status == "lease_lost":
            with contextlib.suppress(Exception):
                await self.settle_appends()  # refused, like every write of a lost lease
            return status  # another writer owns the session now: write nothing more
        facts = [] if self._final is None else [self._final]
        if status == "interrupted":
            facts.append(
                self._fact("interrupt", None, {"cause": details.get("cause", "user"), "reason": reason})
            )
        elif status in ("failed", "refused", "max_steps"):
            facts.append(self._fact("error", None, {"status": status, "message": reason, **details}))
        end = {"status": status, "reason": reason, "steps": self.spec.steps, "usage": self.usage.as_dict()}
        facts.append(self._fact("dispatch.end", None, end))
        try:
            await self.settle_appends()
            if self.spec.owner and await self.dispatcher.end(self, status, facts):
                self.released = True
                return status
            for f in facts:  # refused together: one by one, which says why (a lost lease, a retry)
                await self._write(f["kind"], f["role"], f["body"], f["meta"], f["idempotency_key"])
        except AosError as exc:
            log.error("dispatch.end_not_written", dispatch=self.spec.dispatch_id, error=exc.message)
            if exc.type == "stale_epoch":
                return "lease_lost"
        return status

    def _fact(
        self, kind: str, role: str | None, body: Any, meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A fact to write later, with its key taken now (keys follow the order facts are made)."""
        return {
            "kind": kind,
            "role": role,
            "body": body,
            "meta": {**(meta or {}), "dispatch_id": self.spec.dispatch_id},
            "idempotency_key": self._next_key(),
        }

    async def step(self) -> bool:
        """One model call and its tool calls; True when the model gave its final answer."""
        messages = await self.assemble()
        choice = await self.dispatcher.hooks.transform(
            "compute.model", self.ids, {"model": self.spec.model, "params": dict(self.spec.model_params)}
        )
        model = str(choice.get("model") or self.spec.model) if isinstance(choice, dict) else self.spec.model
        params = (
            choice.get("params", self.spec.model_params)
            if isinstance(choice, dict)
            else self.spec.model_params
        )
        request = await self.dispatcher.hooks.gate(
            "compute.before", self.ids, {"model": model, "messages": messages, "params": params}
        )
        if isinstance(request, Reject | Ask):
            raise Stop(
                "refused", f"compute.before refused by {request.skill}: {request.reason}", skill=request.skill
            )
        try:
            reply = await self.until_interrupted(
                complete(
                    model=request.get("model", model),
                    messages=request.get("messages", messages),
                    params=request.get("params", params),
                    tools=[BASH_TOOL],
                    retries=self.spec.model_retries,
                    backoff_s=self.spec.model_backoff_s,
                    client=self.spec.model_client,
                )
            )
        except ModelError as exc:
            raise Stop(
                "failed",
                f"the model call failed: {exc.message}",
                kind=exc.kind,
                http_status=exc.status,
                attempts=exc.attempts,
            ) from exc
        usage = reply.usage()
        self.usage.add(usage)
        self._last_prompt_tokens = usage["prompt_tokens"]
        self.spec.steps += 1
        body = {
            "text": reply.text,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
        }
        meta = {"step": self.spec.steps, "usage": usage, "finish_reason": reply.finish_reason}
        self.dispatcher.hooks.event("compute.after", {**self.ids, "model": reply.model, "usage": usage})
        if not reply.tool_calls:
            # The final answer is committed with the dispatch's end (one commit, see finish).
            self._final = self._fact("message", "assistant", body, meta)
            self.reply = reply.text
            return True
        # Durable before any command runs (the next append waits for it), but its commit overlaps
        # the tool.env and tool.before hooks of the first call.
        self.append_soon("message", "assistant", body, meta)
        for call in reply.tool_calls:
            if self.interrupted.is_set():
                await self.append(
                    "tool.result", "tool", self._result_body(call.id, "interrupted", "not run: interrupted")
                )
                continue
            await self.tool_call(call)
        return False

    async def assemble(self) -> list[dict[str, Any]]:
        """Run ``session.assemble`` on the facts appended since the last call, and apply its delta.

        The handler gets the new facts only (``since``: the seq they follow; across dispatches the
        dispatcher remembers it per session) and ``output_data`` ``{"base": n, "messages": []}``,
        ``n`` being the length of the context this unit holds. It returns ``{"base": k,
        "messages": [...]}``: keep the first ``k`` messages, then these. Without ``base`` (or on
        the first step of a dispatch, where the unit holds nothing) the messages are the whole
        context. So a step sends and projects only what changed.
        """
        store, sid = self.dispatcher.store, self.spec.session_id
        since = self._assembled_seq if self._context is not None else self.dispatcher.assembled.get(sid, 0)
        facts = await store.list_history(sid, after_seq=since, limit=100_000)
        head = facts[-1]["seq"] if facts else since
        if self._window is None:
            # Known models are answered from the dispatcher's memory; the first lookup of a model
            # may import litellm, so it runs off the event loop.
            known = self.dispatcher.windows.get(self.spec.model)
            if known is None:
                known = await asyncio.to_thread(context_window, self.spec.model) or 0
                self.dispatcher.windows[self.spec.model] = known
            self._window = known
        prev = self._context or []
        try:
            out = await self._required_transform(
                "session.assemble",
                {
                    **self.ids,
                    "agent": _agent_view(self.spec.agent),
                    "skills": self.spec.skills,
                    "facts": [_fact_json(f) for f in facts],
                    "since": since,
                    "first": self._context is None,
                    "model": self.spec.model,
                    "window": self._window or None,
                    "last_prompt_tokens": self._last_prompt_tokens,
                },
                {"base": len(prev), "messages": []},
            )
        except HookError as exc:
            raise Stop("failed", str(exc)) from exc
        messages = out.get("messages") if isinstance(out, dict) else None
        base = out.get("base", 0) if isinstance(out, dict) else 0
        if (
            not isinstance(messages, list)
            or not isinstance(base, int)
            or not 0 <= base <= len(prev)
            or not all(isinstance(msg, dict) and "role" in msg for msg in messages)
            or not (base or messages)
        ):
            raise Stop(
                "failed",
                "session.assemble returned no valid context: {base, messages} with messages a list of "
                "{role, content} objects and base at most the length of the previous context",
            )
        context = prev[:base] + messages if base else messages
        self._assembled_seq = head
        self.dispatcher.assembled[sid] = head
        self._context = context
        return context

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

    # -- tool calls ----------------------------------------------------------------------------

    @staticmethod
    def _result_body(call_id: str, outcome: str, output: str, **extra: Any) -> dict[str, Any]:
        return {"call_id": call_id, "outcome": outcome, "output": output, **extra}

    async def tool_call(self, call: ToolCall) -> None:
        try:
            command = call.command()
        except ValueError as exc:
            self._format_errors += 1
            await self.append(
                "tool.result", "tool", self._result_body(call.id, "format_error", f"error: {exc}")
            )
            if self._format_errors >= self.spec.max_format_errors:
                raise Stop("failed", f"{self._format_errors} malformed tool calls in a row") from exc
            return
        self._format_errors = 0
        cwd = str(self.spec.workspace)
        env = await self.command_env(call.id)
        before = {**self.ids, "call_id": call.id}
        verdict = await self.dispatcher.hooks.gate(
            "tool.before", before, {"args": {"command": command}, "cwd": cwd}
        )
        if isinstance(verdict, Reject) and await self.wait_for_services("tool.before"):
            # Refused because a guard was restarting: ask it again now that it runs.
            verdict = await self.dispatcher.hooks.gate(
                "tool.before", before, {"args": {"command": command}, "cwd": cwd}
            )
        if isinstance(verdict, Reject):
            await self.append(
                "tool.result",
                "tool",
                self._result_body(
                    call.id, "rejected", f"refused by {verdict.skill}: {verdict.reason}", skill=verdict.skill
                ),
            )
            return
        if isinstance(verdict, Ask):
            decision = await self.dispatcher.ask(self, call, command, cwd, verdict)
            if decision is None:
                return
            command = decision
        else:
            command = str(verdict.get("args", {}).get("command", command))
            cwd = str(verdict.get("cwd", cwd))
        await self.execute(call.id, command, cwd, env)

    async def command_env(self, call_id: str) -> dict[str, str]:
        """The clean base, the ``tool.env`` additions, then the ``AOS_*`` identity (which wins)."""
        extra = await self.dispatcher.hooks.transform(
            "tool.env", {**self.ids, "call_id": call_id}, {"env": {}}
        )
        env = base_env()
        if isinstance(extra, dict) and isinstance(extra.get("env"), dict):
            env.update({str(k): str(v) for k, v in extra["env"].items()})
        # Skill CLIs first, then the daemon's Python (its python3 has aos_sdk for those CLIs).
        bins = [str(Path(s["path"]).parent / "bin") for s in self.spec.skills]
        bins = [b for b in bins if Path(b).is_dir()]  # noqa: ASYNC240 - a few stat calls per command
        env["PATH"] = os.pathsep.join([*bins, str(Path(sys.executable).parent), env["PATH"]])
        sandboxed = self.spec.sandbox is not None
        if sandboxed:
            env["HOME"] = str(self._agent_dir() / "home")
        env.update(
            {
                "AOS_SESSION_ID": self.spec.session_id,
                "AOS_AGENT_ID": self.spec.agent["id"],
                "AOS_AGENT": self.spec.agent["name"],
                "AOS_DISPATCH_ID": self.spec.dispatch_id,
                "AOS_GATEWAY": GATEWAY_PATH if sandboxed else str(self.dispatcher.kernel.gateway.path),
                "AOS_TOKEN": self.spec.token,
            }
        )
        return env

    def _agent_dir(self) -> Path:
        return self.dispatcher.kernel.paths.agent_dir(str(self.spec.agent["name"]))

    def sandbox_argv(self, command: str, cwd: str) -> list[str] | None:
        """How to run ``command`` in this agent's sandbox (None: run it as it is)."""
        settings = self.spec.sandbox
        bwrap = self.dispatcher.kernel.sandbox_probe.bwrap
        if settings is None or bwrap is None:
            return None
        home, tmp = self._agent_dir() / "home", self._agent_dir() / "tmp"
        for d in (home, tmp):
            d.mkdir(parents=True, exist_ok=True)
        return build_argv(
            command,
            bwrap=bwrap,
            settings=settings,
            workspace=self.spec.workspace,
            cwd=Path(cwd),
            home=home,
            tmp=tmp,
            gateway=self.dispatcher.kernel.gateway.path,
            skill_paths=skill_mounts([Path(s["path"]) for s in self.spec.skills]),
        )

    async def execute(self, call_id: str, command: str, cwd: str, env: dict[str, str]) -> None:
        Path(cwd).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - microseconds, once per command
        argv = self.sandbox_argv(command, cwd)
        await self.append(
            "tool.started",
            None,
            {"call_id": call_id, "command": command, "cwd": cwd, "sandbox": "bwrap" if argv else "off"},
        )
        res = await run_bash(
            command,
            cwd=cwd,
            env=env,
            timeout=self.spec.bash_timeout_s,
            cap=self.spec.output_cap_bytes,
            track_dir=self.dispatcher.commands_dir,
            argv=argv,
            stop=self.interrupted,
            keep=self.spec.content_cap_bytes,
        )
        if res.stopped:
            # What it printed before it was killed is kept: the model and the person see it.
            await self.append(
                "tool.result",
                "tool",
                self._result_body(
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
            raise Stop("interrupted", self.interrupt_reason or "interrupted", cause=self.interrupt_cause)
        content_id = None
        if res.full is not None:  # capped, or with NUL bytes: the exact output goes to content
            put = await self.dispatcher.store.put_content(
                agent_id=self.spec.agent["id"],
                session_id=self.spec.session_id,
                data=res.full,
                mime="text/plain",
            )
            content_id = put["content_id"]
        visible = await self.dispatcher.hooks.transform(
            "tool.after",
            {
                **self.ids,
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
            output += f"\n[killed after {self.spec.bash_timeout_s:g} s timeout]"
        body = self._result_body(
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
        await self.append("tool.result", "tool", body)
        self.dispatcher.hooks.event(
            "tool.after_event",
            {**self.ids, "call_id": call_id, "command": command, "exit_code": res.exit_code},
        )

    async def resume_pending_calls(self) -> None:
        """After a restart: finish the tool calls of the last assistant fact that have no result
        (the one waiting for approval is asked again, from its durable row)."""
        facts = await self.dispatcher.store.dispatch_facts(self.spec.session_id, self.spec.dispatch_id)
        self.spec.key_counter = max(self.spec.key_counter, len(facts) + 100)  # never reuse a key
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
        self.spec.steps = int((assistant.get("meta") or {}).get("step", 0))
        resolved = {f["body"].get("approval_id") for f in facts if f["kind"] == "approval.resolved"}
        for raw in assistant["body"].get("tool_calls") or []:
            if raw["id"] in done:
                continue
            call = ToolCall(raw["id"], raw["name"], raw["arguments"])
            # One command, one approval: a call that was asked about is never asked again,
            # whether its approval is still pending or was decided while no unit acted on it.
            asked = await self.dispatcher.store.approval_for_call(self.spec.dispatch_id, call.id)
            if asked is not None:
                decision = await self.dispatcher.wait_approval(self, asked, recorded=asked["id"] in resolved)
                if decision is not None:
                    await self.execute(call.id, decision, asked["cwd"], await self.command_env(call.id))
            else:
                await self.tool_call(call)


def _fact_json(f: dict[str, Any]) -> dict[str, Any]:
    out = dict(f)
    ts = out.get("created_at")
    if ts is not None and not isinstance(ts, str):
        out["created_at"] = ts.isoformat()
    return out


def _agent_view(agent: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "display_name", "model", "instructions", "workspace", "settings")
    return {k: agent.get(k) for k in keys}
