"""Syscall handlers: content, dispatches and approvals, model calls and usage (see :mod:`.syscalls`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import InvalidParams, Unavailable

from . import models as m

if TYPE_CHECKING:
    from .kernel import CallContext, Kernel

__all__ = [
    "approval_list",
    "approval_resolve",
    "compute_complete",
    "content_put",
    "content_read",
    "content_search",
    "dispatch_get",
    "hook_list",
    "session_dispatch",
    "session_interrupt",
    "usage_get",
]


# -- content -----------------------------------------------------------------------------------


async def content_put(k: Kernel, ctx: CallContext, p: m.ContentPut) -> m.ContentPutResult:
    if p.session is not None:
        session = await k.store.get_session(p.session)
        agent_id = session["agent_id"]
        if p.agent is not None and (await k.store.get_agent(p.agent))["id"] != agent_id:
            raise InvalidParams(f"session {p.session} does not belong to agent {p.agent!r}")
    elif p.agent is not None:
        agent_id = (await k.store.get_agent(p.agent))["id"]
    else:
        raise InvalidParams("content.put needs an owner: session or agent")
    row = await k.store.put_content(
        agent_id=agent_id,
        session_id=p.session,
        data=p.content.encode("utf-8", "surrogateescape"),
        mime=p.mime,
    )
    return m.ContentPutResult.model_validate(row)


async def _content_text(k: Kernel, content_id: str, agent: str | None) -> tuple[str, int]:
    agent_id = None if agent is None else (await k.store.get_agent(agent))["id"]
    row = await k.store.get_content(content_id, agent_id)
    data = bytes(row["data"])
    return data.decode("utf-8", "replace"), len(data)


async def content_read(k: Kernel, ctx: CallContext, p: m.ContentRead) -> m.ContentReadResult:
    text, size = await _content_text(k, p.content_id, p.agent)
    lines = text.splitlines(keepends=True)
    chunk = lines[p.offset : p.offset + p.limit]
    return m.ContentReadResult(
        content_id=p.content_id,
        text="".join(chunk),
        offset=p.offset,
        lines=len(chunk),
        total_lines=len(lines),
        total_bytes=size,
        more=p.offset + len(chunk) < len(lines),
    )


async def content_search(k: Kernel, ctx: CallContext, p: m.ContentSearch) -> m.ContentSearchResult:
    try:
        rx = re.compile(p.pattern, re.IGNORECASE if p.ignore_case else 0)
    except re.error as exc:
        raise InvalidParams(f"invalid regular expression {p.pattern!r}: {exc}") from exc
    text, _ = await _content_text(k, p.content_id, p.agent)
    matches: list[m.Match] = []
    truncated = False
    for i, line in enumerate(text.splitlines(), start=1):
        if rx.search(line):
            if len(matches) == p.limit:
                truncated = True
                break
            matches.append(m.Match(line=i, text=line))
    return m.ContentSearchResult(content_id=p.content_id, matches=matches, truncated=truncated)


# -- dispatch ----------------------------------------------------------------------------------


async def session_dispatch(k: Kernel, ctx: CallContext, p: m.SessionDispatch) -> m.DispatchStarted:
    meta = p.meta
    if p.payer is not None:
        meta = {**(meta or {}), "payer": (await k.store.get_agent(p.payer))["id"]}
    return m.DispatchStarted.model_validate(
        await k.dispatcher.start(p.session, p.message, meta, if_busy=p.if_busy, request_id=p.request_id)
    )


async def session_interrupt(k: Kernel, ctx: CallContext, p: m.SessionInterrupt) -> m.InterruptResult:
    return m.InterruptResult.model_validate(await k.dispatcher.interrupt(p.session, p.reason))


async def dispatch_get(k: Kernel, ctx: CallContext, p: m.DispatchRef) -> m.Dispatch:
    row = await k.store.get_dispatch(p.dispatch)
    unit = k.dispatcher.units.get(row["session_id"])
    if unit is not None and unit.spec.dispatch_id == row["id"]:
        row = {**row, "steps": unit.spec.steps}  # running: the row gets its count at the end
    return m.Dispatch.model_validate(row)


async def hook_list(k: Kernel, ctx: CallContext, p: m.Empty) -> m.HookListResult:
    return m.HookListResult(hooks=k.hooks.table())


async def approval_list(k: Kernel, ctx: CallContext, p: m.ApprovalList) -> m.ApprovalListResult:
    rows = await k.store.list_approvals(session_id=p.session, status=p.status, limit=p.limit)
    return m.ApprovalListResult(approvals=[m.Approval.model_validate(r) for r in rows])


async def approval_resolve(k: Kernel, ctx: CallContext, p: m.ApprovalResolve) -> m.Approval:
    row = await k.dispatcher.approvals.resolve(p.approval, p.decision, ctx.caller.actor, p.note)
    return m.Approval.model_validate(row)


async def compute_complete(k: Kernel, ctx: CallContext, p: m.ComputeComplete) -> m.ComputeResult:
    from ..loop.model import ModelError, complete

    agent = None if p.agent is None else await k.store.get_agent(p.agent)
    session = None if p.session is None else await k.store.get_session(p.session)
    if agent is None and session is not None:
        agent = await k.store.get_agent(session["agent_id"])
    params: dict[str, Any] = dict(k.config.data.get("model_params") or {})
    if agent is not None:
        params.update((agent["settings"] or {}).get("model_params") or {})
    params.update(p.params)
    model = p.model or (agent["model"] if agent else None) or str(k.config.data["model"])
    if p.model is None and agent is not None:  # no model asked for: a router may choose one
        choice = await k.hooks.transform(
            "compute.model",
            {
                "agent_id": agent["id"],
                "session_id": session["id"] if session else None,
                "dispatch_id": None,
                "purpose": p.purpose,
                "failed": [],
            },
            {"model": model, "params": params},
        )
        if isinstance(choice, dict) and choice.get("model"):
            model = str(choice["model"])
            params = dict(choice.get("params") or params)
    try:
        reply = await complete(
            model=model, messages=p.messages, params=params, retries=k.config.limit("model_retries")
        )
    except ModelError as exc:
        raise Unavailable(f"the model call failed: {exc.message}", kind=exc.kind, status=exc.status) from exc
    usage = reply.usage()
    await k.store.record_usage(
        {
            "agent_id": agent["id"] if agent else None,
            "session_id": session["id"] if session else None,
            "source": "compute",
            "actor": ctx.caller.actor,
            "model": reply.model,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "cost": reply.cost,
            "latency_ms": reply.latency_ms,
        }
    )
    return m.ComputeResult(text=reply.text, model=reply.model, usage=usage)


async def usage_get(k: Kernel, ctx: CallContext, p: m.UsageGet) -> m.UsageResult:
    agent_id = None if p.agent is None else (await k.store.get_agent(p.agent))["id"]
    payer_id = None if p.payer is None else (await k.store.get_agent(p.payer))["id"]
    rows = await k.store.usage_report(
        group_by=p.group_by,
        agent_id=agent_id,
        session_id=p.session,
        since_days=p.since_days,
        payer_id=payer_id,
    )
    out = [m.UsageRow.model_validate({**r, "key": str(r["key"])}) for r in rows]
    costs = [r.cost for r in out if r.cost is not None]
    total = m.UsageRow(
        key="total",
        calls=sum(r.calls for r in out),
        prompt_tokens=sum(r.prompt_tokens for r in out),
        completion_tokens=sum(r.completion_tokens for r in out),
        cost=sum(costs) if costs else None,
    )
    return m.UsageResult(rows=out, total=total)
