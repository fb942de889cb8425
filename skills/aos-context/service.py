"""aos-context: builds every model call's context, folds large outputs, compacts long sessions.

Hooks:
- ``session.assemble`` (transform): the system prompt and the history projected to chat
  messages. State is kept per session, so a step projects only the facts appended since the
  previous one and returns only the messages that changed (``{"base": n, "messages": [...]}``).
- ``tool.after`` (transform): output above ``fold_bytes`` is stored as content and replaced by a
  placeholder that says how to read it with ``ctx``.

Commands (``bin/ctx``): ``read``, ``head``, ``grep``, ``list``.

Settings, first found wins: the agent's ``settings.context``, then ``aoscb.json`` ``"context"``:
``fold_bytes`` (16384), ``compact_at`` (0.8 of the window), ``keep_share`` (0.3 of the window kept
verbatim after a compaction), ``window`` (tokens; default: litellm's model info, else 128000).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from aos_sdk import define_service
from aos_sdk.errors import AosError, InvalidParams, NotFound

SKILL = "aos-context"
DEFAULTS: dict[str, Any] = {"fold_bytes": 16384, "compact_at": 0.8, "keep_share": 0.3, "window": None}
FALLBACK_WINDOW = 128_000
CHARS_PER_TOKEN = 4  # a rough estimate; the real count is known only after the call
PREVIEW_LINES = 10

# -- settings ------------------------------------------------------------------------------------

_global: dict[str, Any] | None = None
_agents: dict[str, tuple[float, dict[str, Any]]] = {}


async def global_settings() -> dict[str, Any]:
    global _global
    if _global is None:
        assert service.kernel is not None
        try:
            cfg = (await service.kernel.call("system.config", {}))["config"]
            _global = dict(cfg.get("context") or {})
        except AosError:
            return {}
    return _global


async def settings(agent: dict[str, Any] | None = None, agent_id: str | None = None) -> dict[str, Any]:
    """The agent's ``settings.context`` over ``aoscb.json``'s ``"context"`` over the defaults."""
    own: dict[str, Any] = {}
    if agent is not None:
        own = dict((agent.get("settings") or {}).get("context") or {})
    elif agent_id:
        hit = _agents.get(agent_id)
        if hit is not None and time.monotonic() - hit[0] < 5:
            own = hit[1]
        else:
            assert service.kernel is not None
            try:
                got = await service.kernel.call("agent.get", {"agent": agent_id})
                own = dict((got.get("settings") or {}).get("context") or {})
            except AosError:
                own = {}
            _agents[agent_id] = (time.monotonic(), own)
    merged = {**DEFAULTS, **(await global_settings())}
    merged.update({k: v for k, v in own.items() if v is not None})
    return merged


# -- projection ----------------------------------------------------------------------------------


def system_prompt(agent: dict[str, Any], skills: list[dict[str, str]], loaded: dict[str, str]) -> str:
    name = agent.get("display_name") or agent.get("name")
    parts = [
        f"You are {name}, an agent running on AOS.",
        "You act only through the bash tool: each call runs one command in your workspace and returns "
        "its output and exit code. Work step by step, check results, and when the task is done, answer "
        "without calling a tool. Your final answer is what the user (or the agent who asked) receives.",
    ]
    if agent.get("instructions"):
        parts.append("Your instructions:\n" + str(agent["instructions"]).strip())
    if skills:
        # Progressive disclosure: names and descriptions now, the full text when it is needed.
        lines = [f"- {s['name']}: {s['description']} (details: `cat {s['path']}`)" for s in skills]
        parts.append(
            "Skills you can use (their commands are on your PATH; read a skill's SKILL.md before "
            "using it, or load it with `skill load <name>`):\n" + "\n".join(lines)
        )
    for skill_name, text in loaded.items():
        parts.append(f"Skill {skill_name} (loaded):\n{text.strip()}")
    return "\n\n".join(parts)


def _text(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("text", "content", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


def tool_result_text(body: dict[str, Any]) -> str:
    out = str(body.get("output", ""))
    notes = []
    if body.get("exit_code") not in (None, 0):
        notes.append(f"exit code {body['exit_code']}")
    if body.get("truncated") and not body.get("folded"):
        notes.append(f"output cut to its first and last parts; {body.get('size')} bytes in all")
        if body.get("content_id"):
            notes.append(f"read all of it with: ctx read {body['content_id']}")
    if notes:
        out += "\n[" + "; ".join(notes) + "]"
    return out


@dataclass
class Entry:
    """The messages one fact projects to."""

    seq: int
    messages: list[dict[str, Any]]
    chars: int
    boundary: bool  # history may be cut here: no tool call is waiting for its result


@dataclass
class SessionContext:
    seq: int = 0  # the last seq applied
    entries: list[Entry] = field(default_factory=list)
    summary: dict[str, Any] | None = None  # the newest context.summary fact's body (+ seq)
    loaded: dict[str, str] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # tool calls without a result yet
    held: list[Entry] = field(default_factory=list)  # notes waiting for those results
    system: str = ""
    stable: int = 0  # how many leading messages the kernel already holds unchanged
    chars: int = 0
    sent_chars: int | None = None  # the size of the context last returned (None: not comparable)
    #: After a summary that failed: no new attempt before this seq (the context is kept whole).
    retry_after: int = 0

    def apply(self, fact: dict[str, Any]) -> None:
        seq, kind, role, body = fact["seq"], fact["kind"], fact.get("role"), fact.get("body")
        if seq <= self.seq:
            return  # already applied (a restarted kernel re-sends)
        self.seq = seq
        if kind == "skill.load" and isinstance(body, dict):
            self.loaded[str(body.get("name"))] = str(body.get("text", ""))
            return
        if kind == "context.summary" and isinstance(body, dict):
            self.compacted({**body, "seq": seq})
            return
        messages = project(kind, role, body)
        if not messages:
            return
        if kind == "message" and role == "assistant":
            self.pending = {c["id"] for c in messages[0].get("tool_calls") or []}
            self._add(Entry(seq, messages, _chars(messages), boundary=True))
        elif kind == "tool.result":
            self.pending.discard(str((body or {}).get("call_id")))
            self._add(Entry(seq, messages, _chars(messages), boundary=False))
            if not self.pending and self.held:
                held, self.held = self.held, []
                for e in held:
                    self._add(e)
        elif self.pending:
            # A note that arrived while a command ran: keep tool calls next to their results.
            self.held.append(Entry(seq, messages, _chars(messages), boundary=False))
        else:
            self._add(Entry(seq, messages, _chars(messages), boundary=True))

    def _add(self, e: Entry) -> None:
        self.entries.append(e)
        self.chars += e.chars

    def compacted(self, summary: dict[str, Any]) -> None:
        if self.summary is not None and self.summary.get("seq") == summary.get("seq"):
            return  # our own summary, coming back from history
        upto = int(summary.get("upto_seq", 0))
        self.summary = summary
        self.entries = [e for e in self.entries if e.seq > upto]
        self.chars = sum(e.chars for e in self.entries)
        self.stable = 0
        self.sent_chars = None  # the previous measurement was of the longer context

    def head(self) -> list[dict[str, Any]]:
        out = [{"role": "system", "content": self.system}]
        if self.summary is not None:
            out.append(
                {
                    "role": "user",
                    "content": "[summary of the earlier conversation, written when the context grew "
                    f"long]\n{self.summary.get('text', '')}",
                }
            )
        return out

    def messages(self) -> list[dict[str, Any]]:
        out = self.head()
        for e in self.entries:
            out.extend(e.messages)
        return out

    def tokens(self, measured: int | None = None) -> int:
        """Estimated prompt tokens: characters / 4, or, when the model reported the previous
        step's prompt tokens (``measured``), those plus the growth since, if that is more."""
        summary = len((self.summary or {}).get("text", ""))
        total = len(self.system) + summary + self.chars
        estimate = total // CHARS_PER_TOKEN
        if measured and self.sent_chars is not None:
            estimate = max(estimate, measured + (total - self.sent_chars) // CHARS_PER_TOKEN)
        return estimate

    def sent(self) -> None:
        """Remember the size of what goes to the model now (its token count comes back later)."""
        self.sent_chars = len(self.system) + len((self.summary or {}).get("text", "")) + self.chars


def _chars(messages: list[dict[str, Any]]) -> int:
    n = 0
    for msg in messages:
        n += len(msg.get("content") or "")
        for c in msg.get("tool_calls") or []:
            n += len(c["function"]["arguments"]) + 20
    return n


def project(kind: str, role: str | None, body: Any) -> list[dict[str, Any]]:
    """One fact as chat messages (empty when the model should not see it)."""
    if kind == "message" and role == "assistant":
        msg: dict[str, Any] = {"role": "assistant", "content": (body or {}).get("text")}
        calls = (body or {}).get("tool_calls") or []
        if calls:
            msg["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ]
        elif msg["content"] is None:
            msg["content"] = ""
        return [msg]
    if kind == "tool.result":
        return [{"role": "tool", "tool_call_id": body["call_id"], "content": tool_result_text(body)}]
    if kind == "message" and role in ("user", None):
        return [{"role": "user", "content": _text(body)}]
    if kind == "message" and role == "system":
        # Some providers reject system messages mid-conversation: say it as a note.
        return [{"role": "user", "content": f"[system note] {_text(body)}"}]
    if kind == "interrupt":
        return [
            {
                "role": "user",
                "content": f"[the previous run was interrupted: {(body or {}).get('reason', '')}]",
            }
        ]
    if isinstance(body, dict) and isinstance(body.get("notice"), str):
        # Any skill's fact can speak to the agent: a2a messages, replies, reminders.
        return [{"role": "user", "content": body["notice"]}]
    return []


# -- the cache -----------------------------------------------------------------------------------

#: The most recently used sessions' contexts, oldest first; a session evicted is rebuilt from
#: history (from its newest summary) if it comes back.
_sessions: dict[str, SessionContext] = {}
_MAX_SESSIONS = 64
#: Facts to wait, after a failed summary, before trying again.
_RETRY_AFTER_FACTS = 20


async def _history(session: str, after: int, upto: int | None, kinds: list[str] | None = None) -> list[Any]:
    assert service.kernel is not None
    facts: list[Any] = []
    while True:
        params: dict[str, Any] = {"session": session, "after_seq": after, "limit": 10000}
        if upto is not None:
            params["upto_seq"] = upto
        if kinds:
            params["kinds"] = kinds
        page = await service.kernel.call("history.list", params)
        facts.extend(page["facts"])
        if page.get("next_after") is None:
            return facts
        after = page["next_after"]


async def context_for(session: str, since: int) -> SessionContext:
    """This session's cached context, caught up to ``since`` (read from history on a miss)."""
    ctx = _sessions.pop(session, None)
    if ctx is not None:
        _sessions[session] = ctx  # most recently used last
        if since > ctx.seq:
            for f in await _history(session, ctx.seq, since):
                ctx.apply(f)
            ctx.stable = 0
    else:
        while len(_sessions) >= _MAX_SESSIONS:
            _sessions.pop(next(iter(_sessions)))
        ctx = _sessions[session] = SessionContext()
        if since:
            # Start from the newest summary: what it covers is never read again.
            last = None
            for f in await _history(session, 0, since, ["context.summary", "skill.load"]):
                if f["kind"] == "skill.load":
                    ctx.loaded[str(f["body"].get("name"))] = str(f["body"].get("text", ""))
                else:
                    last = f
            if last is not None:
                ctx.summary = {**last["body"], "seq": last["seq"]}
                ctx.seq = int(last["body"].get("upto_seq", 0))
            for f in await _history(session, ctx.seq, since):
                ctx.apply(f)
    return ctx


# -- compaction ----------------------------------------------------------------------------------


def transcript(entries: list[Entry], budget_chars: int) -> str:
    """Older messages as plain text for the summariser, long outputs shortened to fit."""
    lines: list[str] = []
    per_item = max(200, budget_chars // max(1, sum(len(e.messages) for e in entries)))
    for e in entries:
        for msg in e.messages:
            content = str(msg.get("content") or "")
            if len(content) > per_item:
                content = content[: per_item // 2] + "\n[...]\n" + content[-per_item // 2 :]
            if msg["role"] == "assistant":
                calls = [c["function"]["arguments"] for c in msg.get("tool_calls") or []]
                text = content + "".join(f"\n$ {_command(a)}" for a in calls)
                lines.append(f"ASSISTANT: {text.strip()}")
            elif msg["role"] == "tool":
                lines.append(f"OUTPUT: {content}")
            else:
                lines.append(f"USER: {content}")
    return "\n".join(lines)


def _command(arguments: str) -> str:
    try:
        return str(json.loads(arguments).get("command", arguments))
    except (ValueError, AttributeError):
        return arguments


SUMMARISE = (
    "You compress an agent's working history so it can continue its task with a shorter context. "
    "Write a concise summary of the conversation below: the user's goals and requests, decisions "
    "made, commands run and what they showed (paths, names, numbers, errors that matter), and what "
    "is still to do. Keep facts exact. Do not address the user; write notes for the agent."
)


async def compact(
    session: str, ctx: SessionContext, window: int, keep_share: float, dispatch_id: Any
) -> None:
    """Summarise everything before the newest ``keep_share`` of the window, through the model."""
    keep_chars = int(window * keep_share * CHARS_PER_TOKEN)
    kept, cut = 0, None
    for i in range(len(ctx.entries) - 1, 0, -1):
        kept += ctx.entries[i].chars
        if kept > keep_chars:
            break
        if ctx.entries[i].boundary:
            cut = i
    if cut is None:  # even the newest turn alone is over budget: keep only the newest boundary
        cut = next((i for i in range(len(ctx.entries) - 1, 0, -1) if ctx.entries[i].boundary), None)
    if cut is None or cut == 0:
        return
    older, upto = ctx.entries[:cut], ctx.entries[cut - 1].seq
    if sum(e.chars for e in older) < window * 0.05 * CHARS_PER_TOKEN:
        return  # too little to gain: the newest turn itself is what is large
    previous = (ctx.summary or {}).get("text")
    text = transcript(older, budget_chars=int(window * 0.5 * CHARS_PER_TOKEN))
    if previous:
        text = f"Summary so far:\n{previous}\n\nWhat happened next:\n{text}"
    assert service.kernel is not None
    reply = await service.kernel.call(
        "compute.complete",
        {
            "session": session,
            "messages": [{"role": "system", "content": SUMMARISE}, {"role": "user", "content": text}],
            "purpose": "summary",  # a router may answer with a cheaper model
        },
        timeout=120,
    )
    before = ctx.tokens()
    text = str(reply.get("text") or "").strip()
    if not text:
        # An empty summary must not replace what it would cover: keep the context whole, say so
        # in the session's stream, and try again later.
        ctx.retry_after = ctx.seq + _RETRY_AFTER_FACTS
        await service.kernel.call(
            "session.append",
            {
                "session": session,
                "kind": "context.compaction_skipped",
                "body": {
                    "reason": "the summariser returned no text",
                    "upto_seq": upto,
                    "retry_after_seq": ctx.retry_after,
                    "dispatch_id": dispatch_id,
                },
                "inbound": True,
            },
        )
        return
    summary = {
        "text": text,
        "upto_seq": upto,
        "facts": sum(1 for _ in older),
        "tokens_before": before,
        "dispatch_id": dispatch_id,
    }
    res = await service.kernel.call(
        "session.append",
        {
            "session": session,
            "kind": "context.summary",
            "body": summary,
            "inbound": True,
            "idempotency_key": f"context.summary:{upto}",
        },
    )
    # The fact comes back in the next step's facts; compacted() then knows it by its seq.
    ctx.compacted({**summary, "seq": res["seq"]})


# -- folding -------------------------------------------------------------------------------------


def placeholder(content_id: str, output: str, size: int, total_lines: int) -> str:
    """``output`` may be the kernel's head-and-tail cut of a larger text: the preview comes from its
    first and last lines, the figures from the whole."""
    lines = output.splitlines()
    preview = "\n".join(line[:300] for line in lines[:PREVIEW_LINES])
    tail = "\n".join(line[:300] for line in lines[-3:]) if len(lines) > PREVIEW_LINES + 3 else ""
    return (
        f"[output folded: {size:,} bytes, {total_lines:,} lines, stored as {content_id}]\n"
        f"{preview}\n"
        + (f"[...]\n{tail}\n" if tail else "")
        + f"[read it with: ctx read {content_id} --lines 1:200 | ctx head {content_id} -n 50 | "
        f"ctx grep <pattern> {content_id}]"
    )


# -- the service ---------------------------------------------------------------------------------


@define_service
def service() -> dict[str, Any]:
    async def assemble(input_data: dict[str, Any], output_data: dict[str, Any]) -> dict[str, Any]:
        session = str(input_data["session_id"])
        ctx = await context_for(session, int(input_data.get("since") or 0))
        for fact in input_data.get("facts") or []:
            ctx.apply(fact)
        agent = input_data.get("agent") or {}
        system = system_prompt(agent, input_data.get("skills") or [], ctx.loaded)
        if system != ctx.system:
            ctx.system, ctx.stable = system, 0
        conf = await settings(agent)
        window = int(conf.get("window") or input_data.get("window") or FALLBACK_WINDOW)
        measured = input_data.get("last_prompt_tokens") if not input_data.get("first") else None
        if ctx.tokens(measured) > window * float(conf["compact_at"]) and ctx.seq >= ctx.retry_after:
            try:
                await compact(session, ctx, window, float(conf["keep_share"]), input_data.get("dispatch_id"))
            except AosError as exc:
                print(f"aos-context: compaction of {session} failed: {exc.message}", flush=True)
        held = int(output_data.get("base") or 0) if not input_data.get("first") else 0
        base = min(held, ctx.stable)
        messages = ctx.messages()
        ctx.stable = len(messages)
        ctx.sent()
        return {"base": base, "messages": messages[base:] if base else messages}

    async def fold(input_data: dict[str, Any], output_data: dict[str, Any]) -> dict[str, Any]:
        output = str(output_data.get("output", ""))
        conf = await settings(agent_id=input_data.get("agent_id"))
        limit = int(conf["fold_bytes"])
        size = int(input_data.get("size") or len(output.encode()))
        if limit <= 0 or size <= limit:
            return output_data
        assert service.kernel is not None
        content_id = input_data.get("content_id")
        if content_id:  # the kernel cut the output and stored all of it
            lines = (
                await service.kernel.call(
                    "content.read", {"content_id": content_id, "agent": input_data["agent_id"], "limit": 1}
                )
            )["total_lines"]
        else:
            put = await service.kernel.call(
                "content.put", {"content": output, "session": input_data["session_id"]}
            )
            content_id, lines = put["content_id"], put["line_count"]
        return {
            **output_data,
            "output": placeholder(content_id, output, size, lines),
            "content_id": content_id,
            "folded": True,
        }

    async def read(args: dict[str, Any], caller: dict[str, Any]) -> str:
        """Print stored output: read <id> [--lines a:b]."""
        content_id, lines = _id(args), args.get("lines")
        start, end = 1, None
        if lines:
            try:
                a, _, b = str(lines).partition(":")
                start = int(a or 1)
                end = int(b) if b else None
            except ValueError:
                raise InvalidParams(f"--lines takes a:b (1-based, inclusive), not {lines!r}") from None
            if start < 1 or (end is not None and end < start):
                raise InvalidParams(f"--lines {lines}: need 1 <= a <= b")
        limit = 100000 if end is None else end - start + 1
        got = await _read(content_id, caller, start - 1, limit)
        text = str(got["text"])
        if got["more"] and end is None:
            text = text.rstrip("\n") + (
                f"\n[{got['total_lines']} lines in all; showing {start}-{start + got['lines'] - 1}]"
            )
        return text

    async def head(args: dict[str, Any], caller: dict[str, Any]) -> str:
        """Print the first lines of stored output: head <id> [-n N]."""
        n = int(args.get("n") or 40)
        got = await _read(_id(args), caller, 0, max(1, n))
        text = str(got["text"])
        if got["more"]:
            text = text.rstrip("\n") + f"\n[{got['total_lines']} lines in all]"
        return text

    async def grep(args: dict[str, Any], caller: dict[str, Any]) -> str:
        """Search stored output: grep <pattern> [<id>] [-i]; without an id, every folded output of this session."""
        pattern = str(args.get("pattern") or "")
        if not pattern:
            raise InvalidParams("usage: ctx grep <pattern> [<content-id>] [-i]")
        ids = [str(args["id"])] if args.get("id") else [c["content_id"] for c in await _stored(caller)]
        if not ids:
            return "no stored output in this session"
        assert service.kernel is not None
        out: list[str] = []
        for cid in ids:
            try:
                got = await service.kernel.call(
                    "content.search",
                    {
                        "content_id": cid,
                        "pattern": pattern,
                        "agent": caller["agent_id"],
                        "ignore_case": bool(args.get("i")),
                    },
                )
            except NotFound:
                raise NotFound(f"no stored output {cid!r} for this agent (see: ctx list)") from None
            out.extend(f"{cid}:{m['line']}: {m['text']}" for m in got["matches"])
            if got["truncated"]:
                out.append(f"{cid}: [more matches not shown]")
        return "\n".join(out) if out else f"no line matches {pattern!r}"

    async def list_(args: dict[str, Any], caller: dict[str, Any]) -> str:
        """List this session's stored outputs: id, size, command."""
        rows = await _stored(caller)
        if not rows:
            return "no stored output in this session"
        return "\n".join(f"{r['content_id']}  {r['size']:>10,} B  {r['command'][:80]}" for r in rows)

    async def _stored(caller: dict[str, Any]) -> list[dict[str, Any]]:
        facts = await _history(str(caller["session_id"]), 0, None, ["tool.started", "tool.result"])
        commands = {
            f["body"].get("call_id"): f["body"].get("command", "")
            for f in facts
            if f["kind"] == "tool.started"
        }
        return [
            {
                "content_id": f["body"]["content_id"],
                "size": f["body"].get("size") or 0,
                "command": commands.get(f["body"].get("call_id"), ""),
            }
            for f in facts
            if f["kind"] == "tool.result" and f["body"].get("content_id")
        ]

    async def _read(content_id: str, caller: dict[str, Any], offset: int, limit: int) -> dict[str, Any]:
        assert service.kernel is not None
        try:
            return dict(
                await service.kernel.call(
                    "content.read",
                    {"content_id": content_id, "agent": caller["agent_id"], "offset": offset, "limit": limit},
                )
            )
        except NotFound:
            raise NotFound(f"no stored output {content_id!r} for this agent (see: ctx list)") from None

    return {
        "hooks": {
            "session.assemble": {"handler": assemble, "priority": 100, "timeout_s": 180},
            "tool.after": {"handler": fold, "priority": 100},
        },
        "commands": {"read": read, "head": head, "grep": grep, "list": list_},
    }


def _id(args: dict[str, Any]) -> str:
    content_id = args.get("id")
    if not isinstance(content_id, str) or not content_id:
        raise InvalidParams("give the id of a stored output (see: ctx list)")
    return content_id
