"""Syscall handlers: skills and the runtime log (see :mod:`.syscalls`)."""

from __future__ import annotations

import difflib
import uuid
from typing import TYPE_CHECKING, Any

from aos_sdk.errors import InvalidParams, NotFound, PermissionDenied

from ..db.store import INBOUND
from ..skills.index import enabled
from ..skills.manifest import SkillManifest
from . import models as m

if TYPE_CHECKING:
    from .kernel import CallContext, Kernel

__all__ = [
    "log_list",
    "skill_disable",
    "skill_enable",
    "skill_get",
    "skill_list",
    "skill_load",
    "skill_reload",
]


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
    await k.runtime_log.flush()
    rows = await k.store.list_log(
        op=p.op, actor=p.actor, after_id=p.after_id, limit=p.limit + 1, outcome=p.outcome
    )
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    return m.LogListResult(
        entries=[m.LogEntry.model_validate(r) for r in rows],
        next_after=rows[-1]["id"] if more and rows else None,
    )
