"""The state of an ``aos chat`` conversation and its link to the daemon (see :mod:`.chat_app`).

:class:`Chat` keeps the connection (in a task of its own, so keepalive pings are answered
whatever the person does), follows the session's facts and live events, sends messages (and
says what became of each), answers approvals and runs the slash commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from typing import Any

from aos_sdk.connection import RpcConnection, open_connection
from aos_sdk.errors import AosError, ConnectionLost, Unavailable

from ..config import Paths
from .approvals import with_allow_rule
from .chat import Render
from .output import clip, echo

__all__ = ["HELP", "Chat", "always_allow"]

#: How often a lost connection is tried again (a person is waiting: often, but not busily).
RECONNECT_S = 0.5
#: How many earlier exchanges a resumed chat shows.
RESUME_SHOWN = 6

HELP = """\
Enter sends; Alt+Enter (or Esc then Enter) starts a new line; Up/Down walk your earlier messages.
While the agent works, what you send joins its run: it reads it at its next step.
Ctrl-C interrupts a reply; Ctrl-D (or /quit) leaves.
  /new                 a new session with this agent
  /sessions            this agent's sessions
  /resume <session>    continue another session of this agent
  /queue <message>     run this after the current reply, as a reply of its own
  /approve [y|a|n] [note]   answer the pending approval: once, always for this agent, or no
  /interrupt           stop the current reply
  /usage               tokens and cost of this session and of the agent today
  /skills              the skills of this session
  /model [name]        show or set the agent's model
  /help                this text"""


class Chat:
    """The conversation's state and its link to the daemon (shared by both front ends)."""

    def __init__(
        self, paths: Paths, agent: dict[str, Any], session_id: str, *, json_out: bool = False
    ) -> None:
        self.sock = paths.kernel_sock
        #: ``--json``: every fact as a JSON line on stdout; the chat's own notes on stderr.
        self.json_out = json_out
        self.agent = agent
        self.session_id = session_id
        self.render = Render(str(agent["name"]))
        self.conn: RpcConnection | None = None
        self.connected = asyncio.Event()
        self.closing = False
        self._lost = False
        #: The last fact shown: a resubscription continues after it.
        self.last_seq = 0
        #: The running dispatch (None: idle), what it did so far, and when it started.
        self.dispatch_id: str | None = None
        self.started_at = 0.0
        self.step = 0
        self.tokens = 0
        self.cost = 0.0
        #: An approval waiting for this person's answer (its approval.requested body).
        self.approval: dict[str, Any] | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.changed: list[Any] = []  # callbacks: the prompt redraws on a change
        self._mine: set[str] = set()  # chat_ids of messages this chat sent
        #: Messages whose send was cut off by a lost connection: checked once it is back.
        self._unsure: list[tuple[str, int, str]] = []
        self._subscription: str | None = None

    # -- the connection ------------------------------------------------------------------------

    async def keep_connected(self) -> None:
        """Stay connected and subscribed until :attr:`closing`; say when the link drops and
        when it is back."""
        while not self.closing:
            try:
                async with open_connection(self.sock, on_notification=self._on_note) as conn:
                    sub = await conn.call(
                        "history.subscribe",
                        {"session": self.session_id, "after_seq": self.last_seq, "live": True},
                    )
                    self._subscription = str(sub["subscription"])
                    self.conn = conn
                    self.connected.set()
                    if self._lost:
                        self._lost = False
                        self.say("[reconnected to the daemon]")
                        await self._after_reconnect()
                    await conn.wait_closed()
            except (ConnectionLost, Unavailable, OSError):
                pass
            except AosError as exc:  # the session went away (archived elsewhere, say)
                self.say(f"[{exc.type}: {exc.message}]")
            self.conn = None
            self.connected.clear()
            if self.closing:
                return
            if not self._lost:
                self._lost = True
                self.say("[the daemon went away; reconnecting… your input is kept]")
            await asyncio.sleep(RECONNECT_S)

    async def call(self, method: str, params: dict[str, Any], timeout: float = 30) -> Any:
        """A syscall on the current connection, waiting for one while reconnecting."""
        await asyncio.wait_for(self.connected.wait(), timeout)
        assert self.conn is not None
        return await self.conn.call(method, params, timeout=timeout)

    async def switch(self, session_id: str) -> None:
        """Follow another session of the agent (its facts from now on)."""
        session = await self.call("session.get", {"session": session_id})
        if session["agent_id"] != self.agent["id"]:
            raise ValueError(f"session {session_id} belongs to another agent, not {self.agent['name']}")
        old = self._subscription
        self.session_id = session_id
        self.last_seq = int(session["last_seq"])
        self._reset()
        sub = await self.call(
            "history.subscribe", {"session": session_id, "after_seq": self.last_seq, "live": True}
        )
        self._subscription = str(sub["subscription"])
        if old is not None:
            with contextlib.suppress(AosError):
                await self.call("history.unsubscribe", {"subscription": old})

    # -- what arrives ----------------------------------------------------------------------------

    def _on_note(self, note: Any) -> None:
        if note.method == "history.live":
            event = note.params["event"]
            if event.get("dispatch_id") == self.dispatch_id:
                if self.json_out:
                    echo(json.dumps({"live": event}, ensure_ascii=False))
                    sys.stdout.flush()
                else:
                    self.render.live(event)
            return
        if note.method != "history.fact":
            return
        f = note.params["fact"]
        if f["session_id"] != self.session_id or f["seq"] <= self.last_seq:
            return
        self.last_seq = int(f["seq"])
        self.show(f)

    def show(self, f: dict[str, Any]) -> None:
        kind, body, meta = f["kind"], f.get("body") or {}, f.get("meta") or {}
        if self.json_out:
            echo(json.dumps(f, ensure_ascii=False))
            sys.stdout.flush()
        if kind == "message" and f.get("role") == "user":
            self._started(meta)
            if meta.get("chat_id") not in self._mine:  # written elsewhere: the UI, aos send, an agent
                who = meta.get("via") or ("another agent" if meta.get("a2a") else "elsewhere")
                self.say(f"[{who}] {_text(body)}")
            return
        if kind == "message.queued" and meta.get("chat_id") not in self._mine:
            self.say(f"[queued from elsewhere] {_text(body)}")
            return
        if kind == "message" and f.get("role") == "assistant":
            self._started(meta)
            self.step = int(meta.get("step") or self.step)
            usage = meta.get("usage") or {}
            self.tokens += int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
            self.cost += float(usage.get("cost") or 0.0)
        elif kind == "approval.requested":
            self.approval = body
        elif (
            kind == "approval.resolved"
            and self.approval is not None
            and body.get("approval_id") == self.approval.get("approval_id")
        ):
            self.approval = None
        if not self.json_out:
            self.render.fact(f)
        if kind == "approval.requested":
            self.say("  answer: y = once, a = always for this agent, n [note] = no")
        if kind == "dispatch.end":
            self._reset()
        self._redraw()

    def _started(self, meta: dict[str, Any]) -> None:
        if meta.get("dispatch_id") and self.dispatch_id is None:
            self.dispatch_id = str(meta["dispatch_id"])
            self.started_at = time.monotonic()
            self.step = self.tokens = 0
            self.cost = 0.0
            self.idle.clear()

    def _reset(self) -> None:
        self.dispatch_id = None
        self.approval = None
        self.idle.set()
        self._redraw()

    def _redraw(self) -> None:
        for cb in self.changed:
            cb()

    def say(self, text: str) -> None:
        out = sys.stderr if self.json_out else sys.stdout
        out.write(text + "\n")
        out.flush()

    def status(self) -> str:
        """The status line."""
        where = f"{self.agent['name']} · {self.session_id}"
        if self._lost:
            return f"{where} · reconnecting to the daemon…"
        if self.dispatch_id is None:
            return f"{where} · idle · /help"
        state = "waiting for your approval" if self.approval else "working"
        cost = f" · ${self.cost:.4f}" if self.cost else ""
        elapsed = time.monotonic() - self.started_at
        return f"{where} · {state} · step {self.step} · {elapsed:.0f} s · {self.tokens} tokens{cost}"

    # -- what the person does --------------------------------------------------------------------

    async def send(self, text: str, *, queue: bool = False) -> None:
        """Send a message; say what became of it (and never drop it silently)."""
        chat_id = uuid.uuid4().hex[:12]
        self._mine.add(chat_id)
        params = {
            "session": self.session_id,
            "message": text,
            "meta": {"via": "aos chat", "chat_id": chat_id},
            "if_busy": "queue" if queue else "steer",
        }
        before = self.last_seq
        if not self.connected.is_set():
            self.say(
                "[not sent: the daemon is not reachable right now; your message is in the input history"
                " (Up) to send again once it is back]"
            )
            return
        try:
            res = await self.call("session.dispatch", params)
        except ConnectionLost:
            self._unsure.append((chat_id, before, text))
            self.say("[the connection dropped while sending; checking once it is back…]")
            return
        if res["delivery"] == "steered":
            self.say("  (the agent reads this at its next step)")
        elif res.get("waiting_for"):
            self.say(
                f"  (waiting: this agent runs on kernel {res['waiting_for']}; dispatch {res['dispatch_id']})"
            )
        elif res["delivery"] == "queued":
            self.say(f"  (queued: dispatch {res['dispatch_id']} runs it after this one)")
        else:
            self._started({"dispatch_id": res["dispatch_id"]})

    async def _after_reconnect(self) -> None:
        """Say whether messages sent as the connection dropped were written."""
        unsure, self._unsure = self._unsure, []
        for chat_id, before, text in unsure:
            page = await self.call(
                "history.list",
                {"session": self.session_id, "after_seq": before, "kinds": ["message", "message.queued"]},
            )
            if any((f.get("meta") or {}).get("chat_id") == chat_id for f in page["facts"]):
                self.say(f"[delivered: {clip(text)}]")
            else:
                self.say(f"[not sent: {clip(text)} — it is in the input history (Up) to send again]")

    async def answer(self, text: str) -> bool:
        """Answer the pending approval from ``text`` (y / a / n [note]); False if it is no answer."""
        assert self.approval is not None
        word, _, note = text.strip().partition(" ")
        choice = {"y": "once", "yes": "once", "a": "always", "always": "always", "n": "no", "no": "no"}
        what = choice.get(word.lower())
        if what is None:
            return False
        body = self.approval
        if what == "always":
            await always_allow(self, str(body["command"]))
        params = {
            "approval": body["approval_id"],
            "decision": "deny" if what == "no" else "approve",
            "note": note.strip() or f"aos chat ({what})",
        }
        try:
            await self.call("approval.resolve", params)
        except AosError as exc:  # answered elsewhere first
            self.say(f"  [{exc.type}: {exc.message}]")
        self.approval = None
        self._redraw()
        return True

    async def interrupt(self) -> None:
        if self.dispatch_id is None:
            self.say("[nothing to interrupt]")
            return
        self.say("[interrupting]")
        await self.call("session.interrupt", {"session": self.session_id, "reason": "Ctrl-C"})

    async def command(self, line: str) -> bool:
        """Run a slash command; False when the chat should end."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        if name in ("quit", "exit"):
            return False
        if name == "help":
            self.say(HELP)
        elif name == "new":
            sid = (await self.call("session.create", {"agent": self.agent["id"], "title": "chat"}))["id"]
            await self.switch(sid)
            self.say(f"[new session {sid}]")
        elif name == "sessions":
            for s in (await self.call("session.list", {"agent": self.agent["id"], "limit": 20}))["sessions"]:
                mark = "*" if s["id"] == self.session_id else " "
                self.say(
                    f" {mark} {s['id']}  {s['phase']:<16} {s['last_seq']:>5} facts  {s.get('title') or ''}"
                )
        elif name == "resume":
            if not rest:
                self.say("[/resume <session>: /sessions lists them]")
            else:
                try:
                    await self.switch(rest)
                except (AosError, ValueError) as exc:
                    self.say(f"[{getattr(exc, 'message', exc)}]")
                else:
                    await self.recap()
        elif name == "queue":
            if rest:
                await self.send(rest, queue=True)
            else:
                self.say("[/queue <message>]")
        elif name == "approve":
            if self.approval is None:
                self.say("[no approval is waiting]")
            elif not await self.answer(rest or "y"):
                self.say("[/approve y | a | n [note]]")
        elif name == "interrupt":
            await self.interrupt()
        elif name == "usage":
            await self.usage()
        elif name == "skills":
            skills = (await self.call("skill.list", {"session": self.session_id}))["skills"]
            for sk in skills:
                self.say(
                    f"  {'on ' if sk.get('enabled') else 'off'}  {sk['name']}: {clip(sk['description'], 70)}"
                )
        elif name == "model":
            await self.model(rest)
        else:
            self.say(f"[unknown command /{name}: /help lists them]")
        return True

    async def usage(self) -> None:
        for label, params in (
            ("this session", {"group_by": "session", "session": self.session_id}),
            (
                f"{self.agent['name']} today",
                {"group_by": "agent", "agent": self.agent["id"], "since_days": 1},
            ),
        ):
            t = (await self.call("usage.get", params))["total"]
            cost = f", ${t['cost']:.4f}" if t.get("cost") else ""
            self.say(
                f"  {label}: {t['calls']} model calls, {t['prompt_tokens']}+{t['completion_tokens']} tokens{cost}"
            )

    async def model(self, name: str) -> None:
        agent = await self.call("agent.get", {"agent": self.agent["id"]})
        if not name:
            self.say(f"  {agent['name']} uses {agent.get('model') or 'the default model (aoscb.json)'}")
            return
        await self.call("agent.update", {"agent": agent["id"], "model": name, "revision": agent["revision"]})
        self.say(f"  {agent['name']} now uses {name} (from its next step)")

    async def recap(self) -> None:
        """The last exchanges of the session, so a resumed chat shows where it stands."""
        page = await self.call(
            "history.list", {"session": self.session_id, "kinds": ["message"], "limit": 1000}
        )
        shown = [f for f in page["facts"] if f["role"] in ("user", "assistant") and _text(f["body"])]
        if not shown:
            return
        self.say(f"[the last {min(len(shown), RESUME_SHOWN)} messages]")
        for f in shown[-RESUME_SHOWN:]:
            who = "you" if f["role"] == "user" else self.agent["name"]
            self.say(f"  {who}> {clip(_text(f['body']), 200)}")


async def always_allow(chat: Chat, command: str) -> None:
    """Add ``command`` (exactly) to the agent's guard allow rules: aos-guard reads
    ``settings.guard.allow`` and lets a matching command through without asking."""
    for _ in range(3):  # another writer changed the agent meanwhile: read it again
        agent = await chat.call("agent.get", {"agent": chat.agent["id"]})
        settings = with_allow_rule(agent.get("settings") or {}, command)
        try:
            await chat.call(
                "agent.update", {"agent": agent["id"], "settings": settings, "revision": agent["revision"]}
            )
        except AosError as exc:
            if exc.type == "conflict":
                continue
            raise
        chat.say(f"  [always allowed for {agent['name']}: {command}]")
        return


def _text(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("text") or "")
    return body if isinstance(body, str) else ""
