"""The syscall table: name -> (kind, params model, result model, handler, allowed callers).

Commands change state and are written to the runtime log with their caller; queries are not.
The table is explicit (no decorators) so that ``aos call --list`` and ``docs/syscalls.md`` are
generated from exactly what the kernel serves. The handlers live by concern in
:mod:`.calls_records` (system, agents, sessions, history), :mod:`.calls_work` (content,
dispatches, approvals, model calls, usage) and :mod:`.calls_skills` (skills, the runtime log).
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from aos_sdk.errors import PermissionDenied

from . import models as m
from .calls_exec import sandbox_exec, skill_command
from .calls_records import (
    agent_archive,
    agent_create,
    agent_get,
    agent_list,
    agent_restore,
    agent_update,
    history_get,
    history_list,
    history_subscribe,
    history_unsubscribe,
    session_append,
    session_archive,
    session_create,
    session_fork,
    session_get,
    session_list,
    system_config,
    system_ping,
    system_status,
    system_stop,
)
from .calls_skills import (
    log_list,
    skill_disable,
    skill_enable,
    skill_get,
    skill_list,
    skill_load,
    skill_reload,
)
from .calls_work import (
    approval_list,
    approval_resolve,
    compute_complete,
    content_put,
    content_read,
    content_search,
    dispatch_get,
    hook_list,
    session_dispatch,
    session_interrupt,
    usage_get,
)

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


def _entries() -> list[Syscall]:
    c: Literal["command"] = "command"
    q: Literal["query"] = "query"
    return [
        Syscall(
            "system.status", q, m.Empty, m.StatusResult, system_status, "daemon, database, sockets, counts"
        ),
        Syscall("system.ping", q, m.Ping, m.PingResult, system_ping, "liveness check; echoes its payload"),
        Syscall(
            "system.stop",
            c,
            m.Empty,
            m.Ok,
            system_stop,
            "stop the daemon gracefully (as SIGTERM does; `aos stop` across PID namespaces)",
            frozenset({"admin"}),
        ),
        Syscall("system.config", q, m.Empty, m.ConfigResult, system_config, "the merged aoscb.json"),
        Syscall("agent.create", c, m.AgentCreate, m.Agent, agent_create, "create an agent"),
        Syscall("agent.get", q, m.AgentRef, m.Agent, agent_get, "one agent by id or name"),
        Syscall("agent.list", q, m.AgentList, m.AgentListResult, agent_list, "all agents"),
        Syscall("agent.update", c, m.AgentUpdate, m.Agent, agent_update, "change an agent's fields"),
        Syscall("agent.archive", c, m.AgentRef, m.Agent, agent_archive, "archive an agent and its sessions"),
        Syscall(
            "agent.restore",
            c,
            m.AgentRef,
            m.Agent,
            agent_restore,
            "an archived agent active again (not its sessions)",
        ),
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
        Syscall(
            "skill.command",
            c,
            m.SkillCommand,
            m.SkillCommandResult,
            skill_command,
            "a person invokes a skill's command (as an agent's CLI does), for an agent or none",
            frozenset({"admin"}),
        ),
        Syscall(
            "sandbox.exec",
            c,
            m.SandboxExec,
            m.SandboxExecResult,
            sandbox_exec,
            "run a command in an agent's sandbox without a model (a probe), through its guards",
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
