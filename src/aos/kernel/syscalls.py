"""The syscall table: name -> (kind, params model, result model, handler, allowed callers).

Commands change state and are written to the runtime log with their caller; queries are not.
The table is explicit (no decorators) so that ``aos call --list`` and ``docs/syscalls.md`` are
generated from exactly what the kernel serves.
"""

from __future__ import annotations

import difflib
import re
import types
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import orjson

from aos_sdk.errors import Archived, InvalidParams, NotFound, PermissionDenied, Unavailable

from ..db.store import INBOUND
from ..skills.index import enabled
from ..skills.manifest import SkillManifest
from . import models as m

if TYPE_CHECKING:
    from .kernel import CallContext, Kernel

__all__ = ["SYSCALLS", "Syscall", "markdown_table"]

Handler = Callable[["Kernel", "CallContext", Any], Awaitable[Any]]
CallerKind = Literal["admin", "service", "agent"]


@dataclass(frozen=True, slots=True)
class Syscall:
    """One entry of the table."""

    name: str
    kind: Literal["command", "query"]
    params: type[m.Params]
    result: type[m.Result]
    handler: Handler
    summary: str
    callers: frozenset[CallerKind] = frozenset({"admin", "service"})


# -- system ------------------------------------------------------------------------------------


async def system_status(k: Kernel, ctx: CallContext, p: m.Empty) -> m.StatusResult:
    return await k.status()


async def system_ping(k: Kernel, ctx: CallContext, p: m.Ping) -> m.PingResult:
    return m.PingResult(payload=p.payload, pid=k.pid)


async def system_config(k: Kernel, ctx: CallContext, p: m.Empty) -> m.ConfigResult:
    return m.ConfigResult(config=k.config.data, sources=k.config.sources)


# -- agents ------------------------------------------------------------------------------------


async def agent_create(k: Kernel, ctx: CallContext, p: m.AgentCreate) -> m.Agent:
    row = await k.store.create_agent(
        name=p.name,
        display_name=p.display_name,
        model=p.model,
        instructions=p.instructions,
        workspace=p.workspace,
        settings=p.settings,
    )
    return m.Agent.model_validate(row)


async def agent_get(k: Kernel, ctx: CallContext, p: m.AgentRef) -> m.Agent:
    return m.Agent.model_validate(await k.store.get_agent(p.agent))


async def agent_list(k: Kernel, ctx: CallContext, p: m.AgentList) -> m.AgentListResult:
    rows = await k.store.list_agents(include_archived=p.include_archived)
    return m.AgentListResult(agents=[m.Agent.model_validate(r) for r in rows])


async def agent_update(k: Kernel, ctx: CallContext, p: m.AgentUpdate) -> m.Agent:
    agent = await k.store.get_agent(p.agent)
    changes: dict[str, Any] = {
        f: getattr(p, f)
        for f in ("display_name", "model", "instructions", "workspace", "settings")
        if f in p.model_fields_set
    }
    if "settings" in changes and changes["settings"] is None:
        raise InvalidParams("settings must be an object", errors=[{"loc": ["settings"], "msg": "null"}])
    if "instructions" in changes and changes["instructions"] is None:
        changes["instructions"] = ""
    return m.Agent.model_validate(await k.store.update_agent(agent["id"], changes, p.revision))


async def agent_archive(k: Kernel, ctx: CallContext, p: m.AgentRef) -> m.Agent:
    agent = await k.store.get_agent(p.agent)
    return m.Agent.model_validate(await k.store.archive_agent(agent["id"]))


# -- sessions ----------------------------------------------------------------------------------


async def session_create(k: Kernel, ctx: CallContext, p: m.SessionCreate) -> m.Session:
    agent = await k.store.get_agent(p.agent)
    if agent["status"] != "active":
        raise Archived(f"agent {agent['name']!r} is archived", agent=agent["id"])
    row = await k.store.create_session(agent_id=agent["id"], title=p.title, settings=p.settings)
    return m.Session.model_validate(row)


async def session_get(k: Kernel, ctx: CallContext, p: m.SessionRef) -> m.Session:
    return m.Session.model_validate(await k.store.get_session(p.session))


async def session_list(k: Kernel, ctx: CallContext, p: m.SessionList) -> m.SessionListResult:
    agent_id = None if p.agent is None else (await k.store.get_agent(p.agent))["id"]
    rows = await k.store.list_sessions(
        agent_id=agent_id, include_archived=p.include_archived, limit=p.limit + 1, before=p.before
    )
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    return m.SessionListResult(
        sessions=[m.Session.model_validate(r) for r in rows],
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
    return m.Session.model_validate(await k.store.archive_session(p.session))


async def session_fork(k: Kernel, ctx: CallContext, p: m.SessionFork) -> m.Session:
    src = await k.store.get_session(p.session)
    at = src["last_seq"] if p.at_seq is None else p.at_seq
    return m.Session.model_validate(await k.store.fork_session(p.session, at, p.title))


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
    return await k.subscribe(ctx, p.session, p.after_seq)


async def history_unsubscribe(k: Kernel, ctx: CallContext, p: m.Unsubscribe) -> m.Ok:
    k.unsubscribe(ctx, p.subscription)
    return m.Ok()


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
    return m.DispatchStarted.model_validate(await k.dispatcher.start(p.session, p.message, p.meta))


async def session_interrupt(k: Kernel, ctx: CallContext, p: m.SessionInterrupt) -> m.InterruptResult:
    return m.InterruptResult.model_validate(await k.dispatcher.interrupt(p.session, p.reason))


async def dispatch_get(k: Kernel, ctx: CallContext, p: m.DispatchRef) -> m.Dispatch:
    return m.Dispatch.model_validate(await k.store.get_dispatch(p.dispatch))


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
    rows = await k.store.usage_report(
        group_by=p.group_by, agent_id=agent_id, session_id=p.session, since_days=p.since_days
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


# -- skills ------------------------------------------------------------------------------------


async def _scope(k: Kernel, p: m.SkillScope) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(agent settings, session settings) of the session or agent asked about."""
    if p.session is not None:
        session = await k.store.get_session(p.session)
        agent = await k.store.get_agent(session["agent_id"])
        return agent["settings"], session["settings"]
    if p.agent is not None:
        return (await k.store.get_agent(p.agent))["settings"], None
    return None, None


def _info(
    k: Kernel, sk: SkillManifest, scope: tuple[dict[str, Any] | None, dict[str, Any] | None] | None
) -> dict[str, Any]:
    on, why = (None, None) if scope is None else enabled(sk, k.config, scope[0], scope[1])
    d = sk.as_dict()
    return {
        **{key: d[key] for key in ("name", "path", "description", "spec_valid", "usable", "default_enabled")},
        "service": d["service"],
        "permissions": d["permissions"],
        "env": d["env"],
        "diagnostics": d["diagnostics"],
        "enabled": on,
        "why": why,
        "service_status": k.services.runners[sk.name].status() if sk.name in k.services.runners else None,
    }


def _skill(k: Kernel, name: str) -> SkillManifest:
    sk = k.skills.get(name)
    if sk is None:
        close = difflib.get_close_matches(name, list(k.skills.skills), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise NotFound(f"no skill {name!r}{hint}", skill=name)
    return sk


async def skill_list(k: Kernel, ctx: CallContext, p: m.SkillScope) -> m.SkillListResult:
    scope = await _scope(k, p) if (p.session or p.agent) else None
    return m.SkillListResult(
        skills=[m.SkillInfo.model_validate(_info(k, sk, scope)) for sk in k.skills.all()],
        roots=[str(r) for r in k.skills.roots],
    )


async def skill_get(k: Kernel, ctx: CallContext, p: m.SkillRef) -> m.SkillDetail:
    sk = _skill(k, p.skill)
    scope = await _scope(k, p) if (p.session or p.agent) else None
    return m.SkillDetail.model_validate(
        {
            **_info(k, sk, scope),
            "body": sk.body,
            "license": sk.license,
            "compatibility": sk.compatibility,
            "allowed_tools": sk.allowed_tools,
            "metadata": sk.metadata,
        }
    )


async def _toggle(k: Kernel, p: m.SkillRef, on: bool) -> m.SkillToggled:
    sk = _skill(k, p.skill)
    if (p.session is None) == (p.agent is None):
        raise InvalidParams("name exactly one of session or agent")
    if on and not sk.usable:
        raise InvalidParams(
            f"skill {sk.name!r} is not usable: {sk.diagnostics[0].message if sk.diagnostics else '?'}"
        )

    def flip(settings: dict[str, Any]) -> dict[str, Any]:
        settings = dict(settings or {})
        lists = dict(settings.get("skills") or {})
        keep, drop = ("enabled", "disabled") if on else ("disabled", "enabled")
        lists[keep] = sorted({*lists.get(keep, []), sk.name})
        lists[drop] = [x for x in lists.get(drop, []) if x != sk.name]
        settings["skills"] = lists
        return settings

    if p.session is not None:
        session = await k.store.get_session(p.session)
        session = await k.store.update_session_settings(session["id"], flip(session["settings"]))
        agent = await k.store.get_agent(session["agent_id"])
        k.dispatcher.specs.catalog(agent, session)  # refresh which skills' hooks and commands apply now
        return m.SkillToggled(skill=sk.name, scope="session", target=session["id"], enabled=on)
    agent = await k.store.get_agent(str(p.agent))
    await k.store.update_agent(agent["id"], {"settings": flip(agent["settings"])}, None)
    k.enabled_cache.clear()  # recomputed per session at its next dispatch
    return m.SkillToggled(skill=sk.name, scope="agent", target=agent["id"], enabled=on)


async def skill_enable(k: Kernel, ctx: CallContext, p: m.SkillRef) -> m.SkillToggled:
    return await _toggle(k, p, True)


async def skill_disable(k: Kernel, ctx: CallContext, p: m.SkillRef) -> m.SkillToggled:
    return await _toggle(k, p, False)


async def skill_load(k: Kernel, ctx: CallContext, p: m.SkillLoad) -> m.SkillLoaded:
    sk = _skill(k, p.skill)
    session = await k.store.get_session(p.session)
    agent = await k.store.get_agent(session["agent_id"])
    on, why = enabled(sk, k.config, agent["settings"], session["settings"])
    if not on:
        raise PermissionDenied(
            f"skill {sk.name!r} is not enabled for session {p.session} ({why})", skill=sk.name
        )
    res = await k.append(
        session["id"],
        epoch=INBOUND,  # an agent loads skills from inside its own dispatch
        kind="skill.load",
        role=None,
        body={"name": sk.name, "path": str(sk.path), "text": sk.body},
        meta=None,
        idempotency_key=uuid.uuid4().hex,
        agent_id=agent["id"],
    )
    return m.SkillLoaded(skill=sk.name, session_id=session["id"], seq=res.seq)


async def skill_reload(k: Kernel, ctx: CallContext, p: m.SkillReload) -> m.SkillReloadResult:
    revived: list[str] = []
    if p.skill is not None:
        _skill(k, p.skill)
        runner = k.services.runners.get(p.skill)
        if runner is not None and runner.revive():
            revived.append(p.skill)
    changes = await k.reload_skills()
    return m.SkillReloadResult(**changes, revived=revived, count=len(k.skills.skills))


# -- runtime log -------------------------------------------------------------------------------


async def log_list(k: Kernel, ctx: CallContext, p: m.LogList) -> m.LogListResult:
    await k.flush_log()
    rows = await k.store.list_log(
        op=p.op, actor=p.actor, after_id=p.after_id, limit=p.limit + 1, outcome=p.outcome
    )
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    return m.LogListResult(
        entries=[m.LogEntry.model_validate(r) for r in rows],
        next_after=rows[-1]["id"] if more and rows else None,
    )


def _entries() -> list[Syscall]:
    c: Literal["command"] = "command"
    q: Literal["query"] = "query"
    return [
        Syscall(
            "system.status", q, m.Empty, m.StatusResult, system_status, "daemon, database, sockets, counts"
        ),
        Syscall("system.ping", q, m.Ping, m.PingResult, system_ping, "liveness check; echoes its payload"),
        Syscall("system.config", q, m.Empty, m.ConfigResult, system_config, "the merged aoscb.json"),
        Syscall("agent.create", c, m.AgentCreate, m.Agent, agent_create, "create an agent"),
        Syscall("agent.get", q, m.AgentRef, m.Agent, agent_get, "one agent by id or name"),
        Syscall("agent.list", q, m.AgentList, m.AgentListResult, agent_list, "all agents"),
        Syscall("agent.update", c, m.AgentUpdate, m.Agent, agent_update, "change an agent's fields"),
        Syscall("agent.archive", c, m.AgentRef, m.Agent, agent_archive, "archive an agent and its sessions"),
        Syscall("session.create", c, m.SessionCreate, m.Session, session_create, "new session for an agent"),
        Syscall("session.get", q, m.SessionRef, m.Session, session_get, "one session"),
        Syscall(
            "session.list", q, m.SessionList, m.SessionListResult, session_list, "sessions, newest first"
        ),
        Syscall("session.append", c, m.SessionAppend, m.AppendResult, session_append, "append a fact"),
        Syscall("session.archive", c, m.SessionRef, m.Session, session_archive, "archive a session"),
        Syscall(
            "session.fork", c, m.SessionFork, m.Session, session_fork, "new session from a history prefix"
        ),
        Syscall("history.list", q, m.HistoryList, m.HistoryListResult, history_list, "facts of a session"),
        Syscall("history.get", q, m.HistoryGet, m.Fact, history_get, "one fact by seq"),
        Syscall(
            "history.subscribe",
            q,
            m.HistorySubscribe,
            m.SubscribeResult,
            history_subscribe,
            "live stream of new facts (notifications history.fact), with replay",
        ),
        Syscall("history.unsubscribe", q, m.Unsubscribe, m.Ok, history_unsubscribe, "end a subscription"),
        Syscall("content.put", c, m.ContentPut, m.ContentPutResult, content_put, "store text, get its id"),
        Syscall("content.read", q, m.ContentRead, m.ContentReadResult, content_read, "lines of stored text"),
        Syscall(
            "content.search", q, m.ContentSearch, m.ContentSearchResult, content_search, "regex over text"
        ),
        Syscall("log.list", q, m.LogList, m.LogListResult, log_list, "runtime log of commands"),
        Syscall(
            "session.dispatch",
            c,
            m.SessionDispatch,
            m.DispatchStarted,
            session_dispatch,
            "run the agent on a message; returns at once (follow with history.subscribe)",
        ),
        Syscall(
            "session.interrupt",
            c,
            m.SessionInterrupt,
            m.InterruptResult,
            session_interrupt,
            "stop the running dispatch at the next step; kills a running command",
        ),
        Syscall(
            "dispatch.get", q, m.DispatchRef, m.Dispatch, dispatch_get, "one dispatch: status, steps, model"
        ),
        Syscall(
            "hook.list",
            q,
            m.Empty,
            m.HookListResult,
            hook_list,
            "every hook and its handlers in firing order",
        ),
        Syscall(
            "approval.list",
            q,
            m.ApprovalList,
            m.ApprovalListResult,
            approval_list,
            "approvals (pending by default)",
        ),
        Syscall(
            "approval.resolve",
            c,
            m.ApprovalResolve,
            m.Approval,
            approval_resolve,
            "approve or deny a command",
        ),
        Syscall(
            "compute.complete",
            c,
            m.ComputeComplete,
            m.ComputeResult,
            compute_complete,
            "one model call on the kernel's model config, usage accounted",
        ),
        Syscall(
            "usage.get",
            q,
            m.UsageGet,
            m.UsageResult,
            usage_get,
            "tokens and cost by day, agent, session or model",
        ),
        Syscall(
            "skill.list",
            q,
            m.SkillScope,
            m.SkillListResult,
            skill_list,
            "every skill, both verdicts, enabled or not",
        ),
        Syscall("skill.get", q, m.SkillRef, m.SkillDetail, skill_get, "one skill, with its SKILL.md text"),
        Syscall(
            "skill.enable",
            c,
            m.SkillRef,
            m.SkillToggled,
            skill_enable,
            "turn a skill on for a session or agent",
        ),
        Syscall(
            "skill.disable",
            c,
            m.SkillRef,
            m.SkillToggled,
            skill_disable,
            "turn a skill off for a session or agent",
        ),
        Syscall(
            "skill.load", c, m.SkillLoad, m.SkillLoaded, skill_load, "append a skill's text to a session"
        ),
        Syscall(
            "skill.reload",
            c,
            m.SkillReload,
            m.SkillReloadResult,
            skill_reload,
            "re-scan the skill roots; with a skill, also start its quarantined service again",
        ),
    ]


SYSCALLS: dict[str, Syscall] = {s.name: s for s in _entries()}


def check_caller(sc: Syscall, kind: CallerKind, permissions: frozenset[str] | None) -> None:
    """Raise ``PermissionDenied`` unless a caller of ``kind`` may invoke ``sc``."""
    if kind not in sc.callers:
        raise PermissionDenied(f"{sc.name} may not be called from a {kind} connection", syscall=sc.name)
    if kind == "service" and permissions is not None and sc.name not in permissions:
        raise PermissionDenied(
            f"{sc.name} is not in this skill's aos-permissions", syscall=sc.name, allowed=sorted(permissions)
        )


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(ann) if a is not type(None))
    if origin is Literal:
        return " or ".join(f"'{a}'" for a in get_args(ann))
    if origin is list:
        return f"list of {_type_name(get_args(ann)[0])}"
    if origin is dict or ann is dict:
        return "object"
    if ann is Any:
        return "JSON"
    return str(getattr(ann, "__name__", ann))


def _fields(model: type[m.Params]) -> str:
    parts = [
        f"`{name}`" + ("" if f.is_required() else "?") + f": {_type_name(f.annotation)}"
        for name, f in model.model_fields.items()
    ]
    return ", ".join(parts) or "—"


def markdown_table() -> str:
    """The syscall reference table (``docs/syscalls.md`` embeds it; a test keeps them equal)."""
    rows = ["| syscall | kind | params | result | callers | what it does |", "|---|---|---|---|---|---|"]
    rows.extend(
        f"| `{sc.name}` | {sc.kind} | {_fields(sc.params)} | {sc.result.__name__} | "
        f"{', '.join(sorted(sc.callers))} | {sc.summary} |"
        for sc in SYSCALLS.values()
    )
    return "\n".join(rows) + "\n"


_BEGIN, _END = (
    "<!-- syscalls:begin (generated: uv run python -m aos.kernel.syscalls --write) -->",
    "<!-- syscalls:end -->",
)


def render_into(doc: str) -> str:
    """``doc`` with the text between the syscall markers replaced by :func:`markdown_table`."""
    head, sep, rest = doc.partition(_BEGIN)
    if not sep or _END not in rest:
        raise ValueError("the document has no syscall table markers")
    return head + _BEGIN + "\n" + markdown_table() + _END + rest.partition(_END)[2]


if __name__ == "__main__":
    import sys
    from pathlib import Path

    target = Path(__file__).resolve().parents[3] / "docs" / "syscalls.md"
    if sys.argv[1:] == ["--write"]:
        target.write_text(render_into(target.read_text()))
        print(f"wrote {target}")
    else:
        print(markdown_table(), end="")
