"""Pydantic params and result models of every syscall.

Params models forbid unknown fields, so a typo (``"agnet"``) is an ``invalid_params`` error
rather than a silently ignored field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
KIND_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$"

Role = Literal["user", "assistant", "system", "tool"]


class Params(BaseModel):
    """Base of all params: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(BaseModel):
    """Base of all results."""

    model_config = ConfigDict(extra="forbid")


class Empty(Params):
    """No parameters."""


class Ok(Result):
    ok: bool = True


# -- system ------------------------------------------------------------------------------------


class DatabaseInfo(Result):
    kind: Literal["embedded", "external"]
    url: str = Field(description="connection string, password removed")
    server_version: str
    fsync: str
    synchronous_commit: str
    unsafe_durability: bool


class StatusResult(Result):
    version: str
    pid: int
    started_at: datetime
    uptime_s: float
    home: str
    schema_version: int
    database: DatabaseInfo
    sockets: dict[str, str]
    counts: dict[str, int]
    sandbox: dict[str, Any] = Field(
        description="the agent sandbox: mode (auto|required|off), in_force (bwrap|off), why"
    )
    kernel_id: str = Field(default="", description="this kernel's id among those sharing the database")
    kernel_name: str = Field(default="", description="this kernel's stable name (agents' placements name it)")
    kernels: list[KernelInfo] = Field(
        default_factory=list,
        description="the kernels sharing the database (alive, and stopped or dead today)",
    )
    warnings: list[str] = Field(default_factory=list, description="what the person running it should know")
    queue: list[QueueInfo] = Field(
        default_factory=list, description="dispatches queued, by the placement of their agent"
    )


class QueueInfo(Result):
    placement: str = Field(description="the kernel the agents' dispatches wait for, or any")
    waiting: int
    oldest_s: float = Field(description="how long the oldest has waited, in seconds")
    runnable: bool = Field(description="a live kernel may start them (false: their kernel is down)")


class KernelInfo(Result):
    id: str
    host: str
    boot_id: str
    pid: int
    pid_ns: str | None
    home: str
    version: str
    ttl_s: float
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    state: Literal["alive", "stopped", "dead"]
    heartbeat_age_s: float
    embedded_db: bool = Field(default=False, description="it runs the database (its embedded PostgreSQL)")
    name: str = Field(default="", description="its stable name (config kernel.name; default host:home)")


class Ping(Params):
    payload: Any = Field(default=None, description="echoed back unchanged")


class PingResult(Result):
    payload: Any
    pid: int


class ConfigResult(Result):
    config: dict[str, Any]
    sources: list[str]


# -- agents ------------------------------------------------------------------------------------


class Agent(Result):
    id: str
    name: str
    display_name: str | None
    model: str | None
    instructions: str
    workspace: str | None
    settings: dict[str, Any]
    status: Literal["active", "archived"]
    revision: int
    created_at: datetime
    updated_at: datetime
    placement: str | None = Field(
        default=None,
        description="the kernel that runs it (the one holding its workspace), any (a shared"
        " workspace), or null until a kernel first runs it",
    )
    runs_here: bool | None = Field(
        default=None,
        description="whether the kernel answering runs this agent's own work (schedules): its"
        " placement, or for any, the first live kernel by name (agent.get and agent.list)",
    )


class AgentCreate(Params):
    name: str = Field(pattern=NAME_PATTERN, description="unique; lowercase letters, digits, - and _")
    display_name: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, description="litellm model id; default from aoscb.json")
    instructions: str = Field(default="", description="the agent's standing instructions")
    workspace: str | None = Field(default=None, description="bash cwd; default $AOS_HOME/workspaces/<name>")
    settings: dict[str, Any] = Field(default_factory=dict)
    placement: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="a kernel's name, any, or here (default: any when kernel.shared_workspaces, else here)",
    )


class AgentRef(Params):
    agent: str = Field(min_length=1, description="agent id or name")


class AgentList(Params):
    include_archived: bool = False


class AgentListResult(Result):
    agents: list[Agent]


class AgentUpdate(Params):
    agent: str = Field(min_length=1, description="agent id or name")
    display_name: str | None = Field(default=None, max_length=200)
    model: str | None = None
    instructions: str | None = None
    workspace: str | None = None
    settings: dict[str, Any] | None = None
    placement: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="move it: a kernel's name, any, or here (its workspace must be there first)",
    )
    revision: int | None = Field(default=None, description="fail with conflict unless this is current")


# -- sessions ----------------------------------------------------------------------------------


class Session(Result):
    id: str
    agent_id: str
    title: str | None
    status: Literal["active", "archived"]
    phase: str
    settings: dict[str, Any]
    parent_id: str | None
    forked_at_seq: int | None
    lease_owner: str | None
    lease_epoch: int
    lease_until: datetime | None
    last_seq: int
    revision: int
    created_at: datetime
    updated_at: datetime


class SessionCreate(Params):
    agent: str = Field(min_length=1, description="agent id or name")
    title: str | None = Field(default=None, max_length=500)
    settings: dict[str, Any] = Field(default_factory=dict)


class SessionRef(Params):
    session: str = Field(min_length=1)


class SessionList(Params):
    agent: str | None = Field(default=None, description="only this agent's sessions (id or name)")
    include_archived: bool = False
    limit: int = Field(default=50, ge=1, le=1000)
    before: str | None = Field(default=None, description="page: sessions older than this id")


class SessionListResult(Result):
    sessions: list[Session]
    next_before: str | None


class SessionAppend(Params):
    session: str = Field(min_length=1)
    kind: str = Field(default="message", pattern=KIND_PATTERN)
    role: Role | None = None
    body: Any = Field(description="any JSON value")
    meta: dict[str, Any] | None = None
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="retry with the same key after an unknown outcome; the fact is stored once",
    )
    inbound: bool = Field(
        default=False,
        description="a fact from outside the running dispatch (a message, a summary): accepted while "
        "the session is leased; the dispatch sees it at its next step",
    )


class AppendResult(Result):
    session_id: str
    seq: int
    created_at: datetime
    duplicate: bool = Field(description="true when the key was already stored (a retry)")


class SessionFork(Params):
    session: str = Field(min_length=1)
    at_seq: int | None = Field(default=None, ge=0, description="copy facts 1..at_seq (default: all)")
    title: str | None = None


# -- history -----------------------------------------------------------------------------------


class Fact(Result):
    session_id: str
    seq: int
    epoch: int
    kind: str
    role: str | None
    body: Any
    meta: dict[str, Any] | None
    idempotency_key: str
    created_at: datetime


class HistoryList(Params):
    session: str = Field(min_length=1)
    after_seq: int = Field(default=0, ge=0)
    upto_seq: int | None = Field(default=None, ge=0)
    limit: int = Field(default=500, ge=1, le=10000)
    kinds: list[str] | None = None


class HistoryListResult(Result):
    facts: list[Fact]
    last_seq: int = Field(description="the session's newest seq when read")
    next_after: int | None = Field(description="pass as after_seq for the next page; null at the end")


class HistoryGet(Params):
    session: str = Field(min_length=1)
    seq: int = Field(ge=1)


class HistorySubscribe(Params):
    session: str = Field(min_length=1)
    after_seq: int | None = Field(
        default=None, ge=0, description="replay facts after this seq first; null: only new facts"
    )
    live: bool = Field(
        default=False,
        description="also send history.live events: progress as it happens (command output, model"
        " retries), never stored or replayed",
    )


class SubscribeResult(Result):
    subscription: str
    last_seq: int


class Unsubscribe(Params):
    subscription: str


# -- content -----------------------------------------------------------------------------------


class ContentPut(Params):
    content: str = Field(description="the text to store")
    session: str | None = Field(default=None, description="owner session (its agent owns the content)")
    agent: str | None = Field(default=None, description="owner agent, when there is no session")
    mime: str = "text/plain"


class ContentPutResult(Result):
    content_id: str
    size: int
    line_count: int
    mime: str


class ContentRead(Params):
    content_id: str
    agent: str | None = Field(default=None, description="read as this agent (content is scoped)")
    offset: int = Field(default=0, ge=0, description="first line, 0-based")
    limit: int = Field(default=200, ge=1, le=100000, description="number of lines")


class ContentReadResult(Result):
    content_id: str
    text: str
    offset: int
    lines: int
    total_lines: int
    total_bytes: int
    more: bool


class ContentSearch(Params):
    content_id: str
    pattern: str = Field(min_length=1, description="Python regular expression")
    agent: str | None = None
    ignore_case: bool = False
    limit: int = Field(default=100, ge=1, le=10000)


class Match(Result):
    line: int = Field(description="1-based line number")
    text: str


class ContentSearchResult(Result):
    content_id: str
    matches: list[Match]
    truncated: bool


# -- runtime log -------------------------------------------------------------------------------


class LogList(Params):
    op: str | None = Field(default=None, description="exact op, or a prefix ending in .* (agent.*)")
    actor: str | None = None
    outcome: Literal["ok", "error"] | None = None
    after_id: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=5000)


class LogEntry(Result):
    id: int
    ts: datetime
    actor: str
    op: str
    args: Any
    outcome: str
    error: Any
    result: Any
    duration_ms: float | None
    kernel_id: str | None = Field(default=None, description="the kernel that served it")


class LogListResult(Result):
    entries: list[LogEntry]
    next_after: int | None


# -- dispatch ----------------------------------------------------------------------------------


class SessionDispatch(Params):
    session: str = Field(min_length=1)
    message: str = Field(min_length=1, description="the user's message")
    meta: dict[str, Any] | None = Field(
        default=None, description="stored in the message fact's meta (who sent it and why)"
    )
    payer: str | None = Field(
        default=None,
        description="the agent whose budget pays for this dispatch's model calls (id or name; default"
        " the session's agent): an agent woken by another is paid for by the chain's initiator",
    )
    if_busy: Literal["steer", "queue", "refuse"] = Field(
        default="steer",
        description="while a dispatch runs: steer the message into it (read at its next step), queue"
        " it for a dispatch of its own after it, or refuse it (session_busy); on whichever kernel"
        " the dispatch runs",
    )
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the caller's id for this request: sent again (to any kernel) it answers with the"
        " dispatch it started or queued (duplicate: true), never a second one",
    )


class DispatchStarted(Result):
    dispatch_id: str = Field(description="the dispatch that answers the message (started, running or queued)")
    session_id: str
    epoch: int
    seq: int = Field(description="seq of the message's fact (message, or message.queued)")
    delivery: Literal["started", "steered", "queued"] = Field(
        default="started",
        description="started: a new dispatch; steered: into the running one, read at its next step;"
        " queued: its dispatch starts after the running one",
    )
    duplicate: bool = Field(
        default=False, description="its request_id was seen before: this is that dispatch"
    )
    waiting_for: str | None = Field(
        default=None, description="queued until the kernel its agent is placed on starts it (its name)"
    )


class SessionInterrupt(Params):
    session: str = Field(min_length=1)
    reason: str = "interrupted by the user"


class InterruptResult(Result):
    session_id: str
    interrupted: bool = Field(description="false when the session had no running dispatch")
    dispatch_id: str | None


class DispatchRef(Params):
    dispatch: str = Field(min_length=1)


class Dispatch(Result):
    id: str
    session_id: str
    agent_id: str
    epoch: int
    owner: str
    status: str
    model: str | None
    steps: int
    error: Any
    input_seq: int | None = Field(description="seq of the message that started it")
    started_at: datetime
    ended_at: datetime | None
    kernel_id: str | None = Field(default=None, description="the kernel it started on")
    recovered_by: str | None = Field(
        default=None, description="the owner that took it over after its kernel died"
    )


class HookListResult(Result):
    hooks: list[dict[str, Any]]


# -- approvals ---------------------------------------------------------------------------------


class Approval(Result):
    id: str
    session_id: str
    dispatch_id: str
    agent_id: str
    call_id: str
    command: str
    cwd: str
    reason: str
    skill: str
    status: Literal["pending", "approved", "denied", "cancelled"]
    resolved_by: str | None
    note: str | None
    created_at: datetime
    resolved_at: datetime | None


class ApprovalList(Params):
    session: str | None = None
    status: Literal["pending", "approved", "denied", "cancelled"] | None = "pending"
    limit: int = Field(default=100, ge=1, le=1000)


class ApprovalListResult(Result):
    approvals: list[Approval]


class ApprovalResolve(Params):
    approval: str = Field(min_length=1)
    decision: Literal["approve", "deny"]
    note: str | None = Field(default=None, max_length=2000)


# -- compute and usage -------------------------------------------------------------------------


class ComputeComplete(Params):
    messages: list[dict[str, Any]] = Field(min_length=1, description="chat messages in OpenAI wire format")
    model: str | None = Field(default=None, description="default: the agent's, else aoscb.json's")
    agent: str | None = Field(default=None, description="account the usage to this agent")
    session: str | None = Field(default=None, description="account the usage to this session")
    params: dict[str, Any] = Field(default_factory=dict, description="extra litellm parameters")
    purpose: str = Field(
        default="compute",
        max_length=100,
        description="what the call is for (e.g. summary), told to compute.model: a router may pick a"
        " cheaper model for it",
    )


class ComputeResult(Result):
    text: str | None
    model: str
    usage: dict[str, Any]


class UsageGet(Params):
    group_by: Literal["day", "agent", "session", "model"] = "day"
    agent: str | None = None
    payer: str | None = Field(
        default=None,
        description="only calls charged to this agent (id or name): its own, unless another paid,"
        " and those of dispatches it paid for",
    )
    session: str | None = None
    since_days: int = Field(default=30, ge=1, le=3650)


class UsageRow(Result):
    key: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None


class UsageResult(Result):
    rows: list[UsageRow]
    total: UsageRow


# -- skills ------------------------------------------------------------------------------------


class SkillScope(Params):
    session: str | None = Field(default=None, description="say whether it is enabled for this session")
    agent: str | None = Field(default=None, description="... or for this agent")


class SkillInfo(Result):
    name: str
    path: str
    description: str
    spec_valid: bool
    usable: bool
    enabled: bool | None = Field(description="for the session/agent asked about; null when none was")
    why: str | None = Field(description="the rule that decided 'enabled'")
    default_enabled: bool
    service: str | None
    service_status: dict[str, Any] | None = Field(
        description="state, pid, restarts, last error, hooks, commands"
    )
    permissions: list[str] = Field(description="the syscalls its service may call (aos-permissions)")
    env: list[str] = Field(description="the daemon's variables its service receives (aos-env)")
    diagnostics: list[dict[str, str]]


class SkillListResult(Result):
    skills: list[SkillInfo]
    roots: list[str]


class SkillRef(SkillScope):
    skill: str = Field(min_length=1)


class SkillDetail(SkillInfo):
    body: str
    license: str | None
    compatibility: str | None
    allowed_tools: str | None
    metadata: dict[str, str]


class SkillToggled(Result):
    skill: str
    scope: Literal["session", "agent"]
    target: str
    enabled: bool


class SkillLoad(Params):
    skill: str = Field(min_length=1)
    session: str = Field(min_length=1)


class SkillLoaded(Result):
    skill: str
    session_id: str
    seq: int


class SkillReload(Params):
    skill: str | None = Field(
        default=None, min_length=1, description="also start this skill's quarantined service again"
    )


class SkillReloadResult(Result):
    added: list[str]
    removed: list[str]
    changed: list[str]
    revived: list[str] = Field(default_factory=list, description="quarantined services started again")
    count: int


class SkillCommand(Params):
    skill: str = Field(min_length=1)
    command: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    agent: str | None = Field(
        default=None,
        description="the agent the person acts for (id or name); the command sees it as its caller",
    )


class SkillCommandResult(Result):
    result: Any = Field(description="what the skill's command answered")


# -- probes ------------------------------------------------------------------------------------


class SandboxExec(Params):
    agent: str = Field(min_length=1, description="agent id or name: its workspace, sandbox and skills")
    session: str = Field(
        min_length=1, description="the session the command is checked as (its skills, its guards)"
    )
    command: str = Field(min_length=1, max_length=100_000)
    timeout_s: float | None = Field(
        default=None, gt=0, description="at most limits.bash_timeout_s (the default)"
    )
    purpose: str = Field(default="probe", max_length=200, description="told to the guards (tool.before)")


class SandboxExecResult(Result):
    outcome: Literal["ok", "error", "timeout", "rejected", "needs_approval"] = Field(
        description="ok/error: it ran (exit 0 or not); timeout: killed; rejected/needs_approval: a guard"
        " refused it or wanted a person to approve it, and it did not run"
    )
    exit_code: int | None
    output: str = Field(description="stdout and stderr, capped (head and tail), secret values scrubbed")
    size: int = 0
    truncated: bool = False
    duration_ms: float = 0.0
    sandbox: Literal["bwrap", "off"] = "off"
    command: str = Field(description="what ran (a guard may have rewritten it)")
    reason: str | None = Field(default=None, description="why a guard refused it")
