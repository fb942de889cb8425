"""``aos send``, ``interrupt`` and ``chat``: talking to an agent, and following what it does."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from aos_sdk.syncclient import SyncClient

from ..config import Paths
from .output import (
    EXIT_ERROR,
    EXIT_OK,
    connect,
    echo,
    emit_json,
    fail,
    rpc,
)


class Render:
    """Prints a dispatch's facts for people as they arrive (``aos chat``, ``aos send --wait``)."""

    def __init__(self, agent: str, *, lines: int = 20) -> None:
        self.agent = agent
        self.lines = lines
        #: Calls whose output was shown live (``history.live``): their result shows only how
        #: they ended. The text of a line still being printed waits for its end.
        self._live: dict[str, str] = {}
        #: The model's text is being shown as it comes, line by line (a line printed in pieces
        #: would be broken by the chat's prompt, redrawn after each); its fact shows the rest.
        self._texting = False
        self._text = ""

    def live(self, event: dict[str, Any]) -> None:
        """A live event: the model's text or a command's output as they come, or a model call
        being retried."""
        if event.get("type") == "text":
            *done, self._text = (self._text + str(event.get("text", ""))).split("\n")
            for line in done:
                self._say_line(line)
        elif event.get("type") == "output":
            call = str(event.get("call_id"))
            text = self._live.get(call, "") + str(event.get("text", ""))
            *done, rest = text.split("\n")
            for line in done:
                echo(f"  │ {line}")
            self._live[call] = rest
        elif event.get("type") == "model.retry":
            echo(
                f"  … the model call failed ({event.get('error')}); trying again in {event.get('wait_s')} s"
                f" (attempt {int(event.get('attempt', 0)) + 1})"
            )
        sys.stdout.flush()

    def _say_line(self, line: str) -> None:
        echo(line if self._texting else f"{self.agent}> {line}")
        self._texting = True

    def fact(self, f: dict[str, Any]) -> None:
        kind, body = f["kind"], f.get("body") or {}
        if kind == "message" and f.get("role") == "assistant":
            if self._texting or self._text:  # shown already, as it came: the rest of it
                if self._text:
                    self._say_line(self._text)
                self._texting, self._text = False, ""
            elif body.get("text"):
                echo(f"{self.agent}> {body['text']}")
        elif kind == "tool.started":
            echo(f"  $ {body['command']}")
        elif kind == "tool.result" and str(body.get("call_id")) in self._live:
            rest = self._live.pop(str(body.get("call_id")))
            if rest:
                echo(f"  │ {rest}")
            self._ended(body)
        elif kind == "tool.result":
            text = str(body.get("output", ""))
            shown = text.splitlines()
            for line in shown[: self.lines]:
                echo(f"  │ {line}")
            if len(shown) > self.lines:
                echo(f"  │ … {len(shown) - self.lines} more lines")
            self._ended(body)
        elif kind == "approval.requested":
            echo(
                f"  ? approval {body['approval_id']} needed ({body['skill']}: {body['reason']}): {body['command']}"
            )
        elif kind == "approval.resolved":
            echo(f"  ✓ approval {body['approval_id']}: {body['decision']}")
        elif kind == "error":
            echo(f"  ! {body.get('message')}")
        elif kind == "interrupt":
            echo(f"  [interrupted: {body.get('reason')}]")
        elif kind in ("dispatch.waiting", "context.compaction_skipped"):
            echo(f"  … {body.get('reason')}")
        elif isinstance(body, dict) and isinstance(body.get("notice"), str):
            # A skill speaking to the agent (a message from another agent, a reply): shown too.
            first, _, rest = body["notice"].partition("\n")
            echo(f"  ✉ {first}")
            for line in rest.splitlines()[: self.lines]:
                echo(f"  │ {line}")
        elif kind == "dispatch.end":
            u = body.get("usage") or {}
            cost = f", ${u['cost']:.4f}" if u.get("cost") else ""
            echo(
                f"  — {body.get('status')} in {body.get('steps')} steps, "
                f"{u.get('prompt_tokens', 0)}+{u.get('completion_tokens', 0)} tokens{cost}"
            )
        sys.stdout.flush()

    @staticmethod
    def _ended(body: dict[str, Any]) -> None:
        outcome = body.get("outcome")
        if outcome not in ("ok", None) or body.get("exit_code") not in (0, None):
            detail = f"exit {body['exit_code']}" if body.get("exit_code") not in (0, None) else outcome
            echo(f"  └ [{detail}]")


def follow_dispatch(
    c: SyncClient,
    session: str,
    dispatch_id: str,
    render: Render | None,
    *,
    json_out: bool = False,
    on_approval: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Print the dispatch's facts until its ``dispatch.end``; Ctrl-C interrupts it, twice leaves."""
    interrupted = False
    notes = c.notifications()
    while True:
        # Ctrl-C may land anywhere in here (waiting, printing, asking): it always interrupts.
        try:
            note = next(notes)
            if note.method == "history.live":
                event = note.params["event"]
                if event.get("dispatch_id") != dispatch_id:
                    continue
                if json_out:
                    echo(json.dumps({"live": event}, ensure_ascii=False))
                    sys.stdout.flush()
                elif render is not None:
                    render.live(event)
                continue
            if note.method != "history.fact":
                continue
            f = note.params["fact"]
            mine = (f.get("meta") or {}).get("dispatch_id") == dispatch_id
            notice = isinstance(f.get("body"), dict) and "notice" in f["body"]
            if not mine and not notice:
                continue
            if json_out:
                echo(json.dumps(f, ensure_ascii=False))
                sys.stdout.flush()
            elif render is not None:
                render.fact(f)
            if f["kind"] == "approval.requested" and on_approval is not None:
                on_approval(f["body"])
            if f["kind"] == "dispatch.end":
                return dict(f["body"])
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            fail("interrupting (Ctrl-C again to leave)")
            c.call("session.interrupt", {"session": session, "reason": "Ctrl-C"})
            notes = c.notifications()  # the interrupt closed the old generator


def subscribe(c: SyncClient, session: str) -> None:
    """Follow the session's new facts, and its live events, on this connection (once: every
    dispatch comes through it)."""
    c.call("history.subscribe", {"session": session, "live": True})
    c.set_timeout(None)


def target_session(c: SyncClient, target: str, *, new: bool = False) -> tuple[str, dict[str, Any]]:
    """The session a message to ``target`` goes to, and its agent: a session id as it is; an
    agent's latest active session, or a new one (always, with ``new``)."""
    if target.startswith("se_"):
        session = c.call("session.get", {"session": target})
        return target, c.call("agent.get", {"agent": session["agent_id"]})
    agent = c.call("agent.get", {"agent": target})
    if not new:
        recent = c.call("session.list", {"agent": agent["id"], "limit": 1})["sessions"]
        if recent:
            return str(recent[0]["id"]), agent
    return str(c.call("session.create", {"agent": agent["id"]})["id"]), agent


def cmd_send(args: argparse.Namespace, paths: Paths) -> int:
    with connect(paths) as c:
        session, agent = target_session(c, args.target, new=args.new)
        params = {"session": session, "message": args.text, "if_busy": "queue" if args.queue else "steer"}
        if not args.wait:
            started = c.call("session.dispatch", params)
            if args.json:
                emit_json(started)
            else:
                echo(_delivered(started, agent["name"]))
            return EXIT_OK
        subscribe(c, session)
        started = c.call("session.dispatch", params)
        if not args.json and started["delivery"] != "started":
            echo(_delivered(started, agent["name"]))
        end = follow_dispatch(c, session, started["dispatch_id"], Render(agent["name"]), json_out=args.json)
    return EXIT_OK if end.get("status") == "done" else EXIT_ERROR


def _delivered(started: dict[str, Any], agent: str) -> str:
    """What became of a message sent, for people."""
    did, sid = started["dispatch_id"], started["session_id"]
    if started["delivery"] == "steered":
        return f"{agent} is working on {sid}: your message joins dispatch {did}; it reads it at its next step"
    if started.get("waiting_for"):
        return (
            f"{agent} runs on kernel {started['waiting_for']}: dispatch {did} waits for it there"
            " (aos status shows whether that kernel is running)"
        )
    if started["delivery"] == "queued":
        return f"{agent} is working on {sid}: dispatch {did} runs your message when it is done"
    return f"dispatched {did} in session {sid}; follow it with: aos history {sid} --follow"


def cmd_interrupt(args: argparse.Namespace, paths: Paths) -> int:
    res = rpc(paths, "session.interrupt", {"session": args.session, "reason": args.reason})
    if args.json:
        emit_json(res)
    elif res["interrupted"]:
        echo(f"interrupting dispatch {res['dispatch_id']}")
    else:
        echo(f"session {args.session} has no running dispatch")
    return EXIT_OK


def cmd_chat(args: argparse.Namespace, paths: Paths) -> int:
    import asyncio

    from .chat_app import run_chat

    return asyncio.run(run_chat(paths, args.agent, args.session, args.new, json_out=args.json))
