"""Syscall handlers that reach past the kernel's records: a command in an agent's sandbox
without a dispatch (``sandbox.exec``), and a skill's command invoked by a person
(``skill.command``). See :mod:`.syscalls`.

``sandbox.exec`` exists for probes (aos-schedule): a cheap check that decides whether a model
call is needed at all. A service cannot run anything in an agent's sandbox by itself (it knows
neither the sandbox nor the agent's mounts, and it must not: the sandbox is the kernel's), so
this is kernel mechanism. The command goes through the same ``tool.env`` and ``tool.before``
hooks as a dispatch's command, so a guard that would refuse it from the agent's bash refuses it
here too; one that would ask a person refuses it (a probe cannot wait for anyone). It runs in
the same sandbox, without a gateway token: skill CLIs are not reachable from a probe.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal

from aos_sdk.errors import InvalidParams, NotFound, Rejected, Unavailable

from ..loop.shell import Shell
from ..redact import scrub_values
from ..skills.supervisor import State
from . import models as m
from .hooks import Ask, Reject

if TYPE_CHECKING:
    from .kernel import CallContext, Kernel

__all__ = ["sandbox_exec", "skill_command"]


async def sandbox_exec(k: Kernel, ctx: CallContext, p: m.SandboxExec) -> m.SandboxExecResult:
    if "\x00" in p.command:
        raise InvalidParams("the command holds a NUL byte", errors=[{"loc": ["command"], "msg": "NUL"}])
    agent = await k.store.get_agent(p.agent)
    if agent["status"] != "active":
        raise Rejected(f"agent {agent['name']!r} is archived", agent=agent["id"])
    session = await k.store.get_session(p.session)
    if session["agent_id"] != agent["id"]:
        raise InvalidParams(f"session {p.session} does not belong to agent {agent['name']!r}")
    specs = k.dispatcher.specs
    sandbox = specs.sandbox_for(agent)  # Rejected: a required sandbox that cannot run, a bad workspace
    workspace = specs.workspace(agent)
    limit = float(specs.limit("bash_timeout_s", 120))
    timeout = min(p.timeout_s or limit, limit)
    ids: dict[str, Any] = {
        "agent_id": agent["id"],
        "session_id": session["id"],
        "dispatch_id": None,
        "call_id": f"probe-{uuid.uuid4().hex[:12]}",
        "purpose": p.purpose,
        "caller": ctx.caller.actor,
    }
    skills = specs.enabled_skills(agent, session)
    # As a dispatch does: right after a start or a reload, the guards must have registered
    # before the command is judged, or it would pass unjudged.
    await k.services.settle({s["name"] for s in skills}, timeout=12)
    shell = Shell(
        workspace=workspace,
        agent_dir=k.paths.agent_dir(str(agent["name"])),
        skills=skills,
        gateway=k.gateway.path,
        track_dir=k.dispatcher.commands_dir,
        tools=k.paths.tools,
        sandbox=sandbox,
        bwrap=k.sandbox_probe.bwrap,
    )
    extra = await k.hooks.transform("tool.env", ids, {"env": {}})
    added = extra.get("env") if isinstance(extra, dict) and isinstance(extra.get("env"), dict) else None
    identity = {"AOS_SESSION_ID": session["id"], "AOS_AGENT_ID": agent["id"], "AOS_AGENT": str(agent["name"])}
    env = shell.env(added, identity)
    env.pop("AOS_GATEWAY", None)  # no token: a probe reaches no skill command
    command, cwd = p.command, str(workspace)
    verdict = await k.hooks.gate("tool.before", ids, {"args": {"command": command}, "cwd": cwd})
    restarting = k.services.restarting(h.skill for h in k.hooks.handlers("tool.before", ids))
    # Refused because a guard was restarting (fail closed): ask it again once it runs.
    wait_s = float(specs.limit("service_wait_s", 30))
    if isinstance(verdict, Reject) and restarting and await k.services.wait_running(restarting, wait_s):
        verdict = await k.hooks.gate("tool.before", ids, {"args": {"command": command}, "cwd": cwd})
    if isinstance(verdict, Reject | Ask):
        asked = isinstance(verdict, Ask)
        return m.SandboxExecResult(
            outcome="needs_approval" if asked else "rejected",
            exit_code=None,
            output="",
            command=command,
            reason=f"{verdict.skill}: {verdict.reason}"
            + (" (a probe cannot wait for a person: it did not run)" if asked else ""),
        )
    command = str(verdict.get("args", {}).get("command", command))
    cwd = str(verdict.get("cwd", cwd))
    argv = shell.argv(command, cwd)
    res = await shell.run(
        command,
        cwd,
        env,
        argv,
        timeout=timeout,
        cap=specs.limit("output_cap_bytes", 65536),
        keep=0,
        stop=None,
    )
    outcome: Literal["ok", "error", "timeout"] = (
        "timeout" if res.timed_out else "ok" if res.exit_code == 0 else "error"
    )
    return m.SandboxExecResult(
        outcome=outcome,
        exit_code=res.exit_code,
        output=scrub_values(res.output),
        size=res.size,
        truncated=res.truncated,
        duration_ms=round(res.duration_ms, 1),
        sandbox="bwrap" if argv else "off",
        command=command,
    )


async def skill_command(k: Kernel, ctx: CallContext, p: m.SkillCommand) -> m.SkillCommandResult:
    """A person invokes a skill's exported command, as agents do through the gateway; the
    command sees ``{agent_id, person: true}`` as its caller (no session, no dispatch)."""
    runner = k.services.runners.get(p.skill)
    if runner is None:
        raise NotFound(f"skill {p.skill!r} has no service", skill=p.skill)
    # Right after `aos start` (or a reload) its service may still be registering: wait a little.
    await k.services.settle({p.skill}, timeout=12)
    runner = k.services.runners.get(p.skill) or runner
    if runner.conn is None or runner.state.state != State.RUNNING:
        raise Unavailable(f"the service of skill {p.skill!r} is {runner.state.state.value}", skill=p.skill)
    if p.command not in {c["name"] for c in runner.commands}:
        names = ", ".join(sorted(c["name"] for c in runner.commands)) or "none"
        raise NotFound(f"skill {p.skill!r} has no command {p.command!r} (commands: {names})", skill=p.skill)
    caller: dict[str, Any] = {"agent_id": None, "session_id": None, "dispatch_id": None, "person": True}
    if p.agent is not None:
        caller["agent_id"] = (await k.store.get_agent(p.agent))["id"]
    result = await runner.conn.call(
        "command.call", {"command": p.command, "args": p.args, "caller": caller}, timeout=120
    )
    return m.SkillCommandResult(result=result)
