"""Syscall handlers: the system, agents, sessions and their history (see :mod:`.syscalls`)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson

from aos_sdk.errors import Archived, Conflict, InvalidParams, Unavailable

from ..db.store import INBOUND
from ..redact import keep_secrets, redact
from . import models as m

if TYPE_CHECKING:
    from .kernel import CallContext, Kernel

__all__ = [
    "agent_archive",
    "agent_create",
    "agent_get",
    "agent_list",
    "agent_restore",
    "agent_update",
    "history_get",
    "history_list",
    "history_subscribe",
    "history_unsubscribe",
    "session_append",
    "session_archive",
    "session_create",
    "session_fork",
    "session_get",
    "session_list",
    "system_config",
    "system_ping",
    "system_status",
    "system_stop",
]


def _agent(row: dict[str, Any]) -> m.Agent:
    """An agent as clients see it: secrets in its settings (a model's ``api_key``) as ``***``."""
    return m.Agent.model_validate({**row, "settings": redact(row.get("settings") or {})})


def _session(row: dict[str, Any]) -> m.Session:
    return m.Session.model_validate({**row, "settings": redact(row.get("settings") or {})})


# -- system ------------------------------------------------------------------------------------


async def system_status(k: Kernel, ctx: CallContext, p: m.Empty) -> m.StatusResult:
    return await k.status()


async def system_stop(k: Kernel, ctx: CallContext, p: m.Empty) -> m.Ok:
    if k.request_stop is None:
        raise Unavailable("this kernel runs inside another program, which decides when it stops")
    k.request_stop(ctx.caller.actor)
    return m.Ok()


async def system_ping(k: Kernel, ctx: CallContext, p: m.Ping) -> m.PingResult:
    return m.PingResult(payload=p.payload, pid=k.pid)


async def system_config(k: Kernel, ctx: CallContext, p: m.Empty) -> m.ConfigResult:
    return m.ConfigResult(config=redact(k.config.data), sources=k.config.sources)


# -- agents ------------------------------------------------------------------------------------


async def _placement(k: Kernel, asked: str | None) -> str:
    """Where a new agent runs: as asked (``here`` is this kernel), else any kernel when the
    workspaces are shared storage, else this one (which will hold its workspace).

    Raises:
        InvalidParams: a kernel name no kernel on this database has had (a typo would leave the
            agent's dispatches waiting for a kernel that never comes).
    """
    if asked == "here":
        return k.name
    if asked is None:
        return "any" if (k.config.data.get("kernel") or {}).get("shared_workspaces") else k.name
    if asked != "any" and asked != k.name:
        names = await k.store.kernel_names()
        if asked not in names:
            raise InvalidParams(
                f"no kernel named {asked!r} has run on this database; placement is any, here, or"
                f" one of: {', '.join(sorted(names))}",
                placement=asked,
            )
    return asked


async def agent_create(k: Kernel, ctx: CallContext, p: m.AgentCreate) -> m.Agent:
    row = await k.store.create_agent(
        name=p.name,
        display_name=p.display_name,
        model=p.model,
        instructions=p.instructions,
        workspace=p.workspace,
        settings=p.settings,
        placement=await _placement(k, p.placement),
    )
    return _agent(row)


async def agent_get(k: Kernel, ctx: CallContext, p: m.AgentRef) -> m.Agent:
    row = await k.store.get_agent(p.agent)
    return _agent({**row, "runs_here": k.runs_here(row.get("placement"))})


async def agent_list(k: Kernel, ctx: CallContext, p: m.AgentList) -> m.AgentListResult:
    rows = await k.store.list_agents(include_archived=p.include_archived)
    return m.AgentListResult(
        agents=[_agent({**r, "runs_here": k.runs_here(r.get("placement"))}) for r in rows]
    )


async def agent_update(k: Kernel, ctx: CallContext, p: m.AgentUpdate) -> m.Agent:
    agent = await k.store.get_agent(p.agent)
    changes: dict[str, Any] = {
        f: getattr(p, f)
        for f in ("display_name", "model", "instructions", "workspace", "settings", "placement")
        if f in p.model_fields_set
    }
    if "placement" in changes:
        if changes["placement"] is None:
            raise InvalidParams("placement must be a kernel's name, any or here")
        changes["placement"] = await _placement(k, changes["placement"])
    if "settings" in changes and changes["settings"] is None:
        raise InvalidParams("settings must be an object", errors=[{"loc": ["settings"], "msg": "null"}])
    if "instructions" in changes and changes["instructions"] is None:
        changes["instructions"] = ""
    if "settings" in changes:  # sent back as read: a secret left as *** keeps its stored value
        changes["settings"] = keep_secrets(changes["settings"], agent["settings"] or {})
    return _agent(await k.store.update_agent(agent["id"], changes, p.revision))


async def agent_archive(k: Kernel, ctx: CallContext, p: m.AgentRef) -> m.Agent:
    agent = await k.store.get_agent(p.agent)
    return _agent(await k.store.archive_agent(agent["id"]))


async def agent_restore(k: Kernel, ctx: CallContext, p: m.AgentRef) -> m.Agent:
    agent = await k.store.get_agent(p.agent)
    if agent["status"] == "active":
        raise Conflict(f"agent {agent['name']!r} is not archived", agent=agent["id"])
    return _agent(await k.store.restore_agent(agent["id"]))


# -- sessions ----------------------------------------------------------------------------------


async def session_create(k: Kernel, ctx: CallContext, p: m.SessionCreate) -> m.Session:
    agent = await k.store.get_agent(p.agent)
    if agent["status"] != "active":
        raise Archived(f"agent {agent['name']!r} is archived", agent=agent["id"])
    row = await k.store.create_session(agent_id=agent["id"], title=p.title, settings=p.settings)
    return _session(row)


async def session_get(k: Kernel, ctx: CallContext, p: m.SessionRef) -> m.Session:
    return _session(await k.store.get_session(p.session))


async def session_list(k: Kernel, ctx: CallContext, p: m.SessionList) -> m.SessionListResult:
    agent_id = None if p.agent is None else (await k.store.get_agent(p.agent))["id"]
    rows = await k.store.list_sessions(
        agent_id=agent_id, include_archived=p.include_archived, limit=p.limit + 1, before=p.before
    )
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    return m.SessionListResult(
        sessions=[_session(r) for r in rows],
        next_before=rows[-1]["id"] if more and rows else None,
    )


async def session_append(k: Kernel, ctx: CallContext, p: m.SessionAppend) -> m.AppendResult:
    return await k.append(
        p.session,
        epoch=INBOUND if p.inbound else None,
        kind=p.kind,
        role=p.role,
        body=p.body,
        meta=p.meta,
        idempotency_key=p.idempotency_key or uuid.uuid4().hex,
    )


async def session_archive(k: Kernel, ctx: CallContext, p: m.SessionRef) -> m.Session:
    await k.store.get_session(p.session)
    return _session(await k.store.archive_session(p.session))


async def session_fork(k: Kernel, ctx: CallContext, p: m.SessionFork) -> m.Session:
    src = await k.store.get_session(p.session)
    at = src["last_seq"] if p.at_seq is None else p.at_seq
    return _session(await k.store.fork_session(p.session, at, p.title))


# -- history -----------------------------------------------------------------------------------


async def history_list(k: Kernel, ctx: CallContext, p: m.HistoryList) -> m.HistoryListResult | dict[str, Any]:
    session = await k.store.get_session(p.session)
    facts, next_after = await k.store.list_history_json(
        p.session, after_seq=p.after_seq, upto_seq=p.upto_seq, limit=p.limit, kinds=p.kinds
    )
    # A HistoryListResult in shape, whose facts are one JSON array PostgreSQL made, spliced into
    # the answer as it is: parsing, validating and re-encoding 10,000 facts cost more than reading
    # them. (A test holds each to Fact and to history.get.)
    return {"facts": orjson.Fragment(facts), "last_seq": session["last_seq"], "next_after": next_after}


async def history_get(k: Kernel, ctx: CallContext, p: m.HistoryGet) -> m.Fact:
    return m.Fact.model_validate(await k.store.get_fact(p.session, p.seq))


async def history_subscribe(k: Kernel, ctx: CallContext, p: m.HistorySubscribe) -> m.SubscribeResult:
    return await k.subscribe(ctx, p.session, p.after_seq, p.live)


async def history_unsubscribe(k: Kernel, ctx: CallContext, p: m.Unsubscribe) -> m.Ok:
    k.unsubscribe(ctx, p.subscription)
    return m.Ok()
