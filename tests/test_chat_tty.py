"""``aos chat`` in a real pseudo-terminal, typed into as a person would (pexpect): idling past
the keepalive, a slow approval answered "always", a daemon restart mid-chat, steering while the
agent works, line editing, input history and slash commands."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel

from .rpc import workspace

pexpect = pytest.importorskip("pexpect")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEEPALIVE_S = 1


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


def configure(home: Path, *, guard: bool = False) -> None:
    disabled = ["aos-skill", "aos-a2a", "aos-frontend"] + ([] if guard else ["aos-guard"])
    (home / "aoscb.json").write_text(
        json.dumps({"skills": {"disabled": disabled}, "limits": {"keepalive_s": KEEPALIVE_S}})
    )


def make_agent(home: Path, model: ScriptedModel, **settings: Any) -> str:
    with SyncClient(home / "run" / "kernel.sock") as c:
        c.call(
            "agent.create",
            {
                "name": "alice",
                "model": "openai/scripted",
                "settings": {"model_params": {"api_base": model.url, "api_key": "k"}, **settings},
            },
        )
        return str(c.call("session.create", {"agent": "alice"})["id"])


# Terminal control sequences (colours, cursor moves, modes): what is left is the text a person reads.
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[=>()][0-9A-Za-z]?|\r")


class Term:
    """A chat in a pseudo-terminal, read as the text on screen."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self.text = ""
        self.pos = 0

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait for ``pattern`` in what the chat prints after the last match (reads as output
        arrives)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not shown; the screen ends with: {self.text[-1500:]!r}")
            try:
                chunk = self.child.read_nonblocking(65536, timeout=min(left, 5))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF as exc:
                raise AssertionError(f"the chat ended before {pattern!r}: {self.text[-1500:]!r}") from exc
            if "\x1b[6n" in chunk:  # where is the cursor? (a terminal answers; the status line needs it)
                self.child.send("\x1b[20;1R")
            self.text += ANSI.sub("", chunk)

    def since(self) -> str:
        """What was shown after the last match."""
        return self.text[self.pos :]

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def line(self, text: str) -> None:
        self.child.send(text + "\r")


def spawn_chat(env: dict[str, str], *args: str) -> Term:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "aos", "chat", "alice", *args],
        env={**env, "TERM": "xterm"},
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 160),
    )
    term = Term(child)
    term.expect(r"Ctrl-D leaves\.\n")  # after the recap of a resumed session: then the prompt
    term.expect("you>")
    return term


def idle(seconds: float) -> None:
    """The person does nothing for a while: the scenario itself, not a wait for an event."""
    time.sleep(seconds)


def leave(term: Term) -> None:
    """Ctrl-D at an idle prompt (the status line says so; it redraws every second), then read
    (answering the terminal's questions, as a terminal does) until the chat exits."""
    term.expect(r"idle · /help")
    term.child.sendcontrol("d")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = term.child.read_nonblocking(65536, timeout=5)
        except pexpect.TIMEOUT:
            continue
        except pexpect.EOF:
            break
        if "\x1b[6n" in chunk:
            term.child.send("\x1b[20;1R")
        term.text += ANSI.sub("", chunk)
    else:
        raise AssertionError(f"the chat did not leave on Ctrl-D: {term.text[-1500:]!r}")
    term.child.close()
    assert term.child.exitstatus == 0, term.text[-1500:]


def test_idle_past_the_keepalive_then_a_slow_approval_answered_always(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    configure(home, guard=True)
    assert aos("start").returncode == 0
    make_agent(home, model, guard={"ask": ["^touch "]})
    model.add({"bash": "touch made.txt"}, {"text": "made it"}, {"bash": "touch made.txt"}, {"text": "again"})
    child = spawn_chat(daemon_env)
    idle(4 * KEEPALIVE_S)  # a connection whose pings go unanswered is dropped after 2 intervals
    child.line("make a file")
    child.expect(r"approve `touch made.txt`\? \[y/a/n\] >")
    idle(4 * KEEPALIVE_S)  # thinking it over
    child.line("a")
    child.expect("always allowed for alice")
    child.expect("alice> made it")
    assert (workspace(home) / "made.txt").exists()
    with SyncClient(home / "run" / "kernel.sock") as c:
        rules = c.call("agent.get", {"agent": "alice"})["settings"]["guard"]["allow"]
    assert rules == ["^touch\\ made\\.txt$"]
    # "Always": the same command runs without asking the next time.
    child.line("once more")
    child.expect("alice> again")
    assert "approve `touch" not in child.text[child.pos - 200 :]
    leave(child)


def test_a_daemon_restart_mid_chat_loses_nothing(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    configure(home)
    assert aos("start").returncode == 0
    sid = make_agent(home, model)
    model.add({"text": "first answer"}, {"text": "second answer"})
    child = spawn_chat(daemon_env)
    child.line("hello")
    child.expect("alice> first answer")
    assert aos("stop").returncode == 0
    child.expect(r"the daemon went away; reconnecting")
    child.line("are you there?")
    child.expect(r"not sent: the daemon is not reachable right now")
    assert aos("start").returncode == 0
    child.expect(r"reconnected to the daemon")
    child.line("and now?")
    child.expect("alice> second answer")
    leave(child)
    with SyncClient(home / "run" / "kernel.sock") as c:
        facts = c.call("history.list", {"session": sid, "kinds": ["message"]})["facts"]
    users = [f["body"]["text"] for f in facts if f["role"] == "user"]
    assert users == ["hello", "and now?"], "the unsent message was said to be unsent, and was not written"


def test_typing_while_the_agent_works_steers_it(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    configure(home)
    assert aos("start").returncode == 0
    make_agent(home, model)
    gate = workspace(home) / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"cat {gate}"}, {"text": "checked both"})
    child = spawn_chat(daemon_env)
    child.line("check the logs")
    child.expect(r"\$ cat ")
    child.expect(r"alice · se_\w+ · working · step 1 · \d+ s · \d+ tokens")  # the status line
    child.line("and the disk too")
    child.expect(r"the agent reads this at its next step")
    gate.write_text("logs fine\n")
    child.expect("alice> checked both")
    assert model.requests[1]["messages"][-1] == {"role": "user", "content": "and the disk too"}
    leave(child)


def test_line_editing_history_slash_commands_and_a_resumed_chat(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    configure(home)
    assert aos("start").returncode == 0
    sid = make_agent(home, model)
    model.add({"text": "hi there"}, {"text": "hi again"}, {"text": "multi"})
    child = spawn_chat(daemon_env)
    child.send("wrld")
    child.send("\x1b[D\x1b[D\x1b[D")  # Left three times: between "w" and "rld"
    child.send("o\r")
    child.expect("alice> hi there")
    assert model.requests[0]["messages"][-1] == {"role": "user", "content": "world"}
    child.line("/usage")
    child.expect(r"this session: 1 model calls")
    child.line("/bogus")
    child.expect(r"unknown command /bogus: /help lists them")
    child.send("\x1b[A\x1b[A\x1b[A\r")  # Up three times: "world" again, from the input history
    child.expect("alice> hi again")
    assert model.requests[1]["messages"][-1] == {"role": "user", "content": "world"}
    child.send("first line\x1b\rsecond line\r")  # Alt+Enter (Esc, Enter): a new line, not a send
    child.expect("alice> multi")
    assert model.requests[2]["messages"][-1] == {"role": "user", "content": "first line\nsecond line"}
    leave(child)
    # Resumed: the last exchanges are shown; the input history outlives the chat.
    child = spawn_chat(daemon_env)
    shown = child.text
    assert f"session {sid} with alice" in shown
    assert "alice> hi again" in shown and "you> world" in shown and "alice> multi" in shown
    child.send("\x1b[A")  # the input history outlives the chat: the last message, both lines
    child.expect("first line\nsecond line")
    child.send("\x03")  # an idle Ctrl-C only clears the line, and says how to leave
    child.expect(r"\[Ctrl-D or /quit leaves\]")
    leave(child)
    assert (home / "chat_history").stat().st_mode & 0o777 == 0o600


def test_a_chat_refuses_another_agents_session(
    aos: Any, home: Path, model: ScriptedModel, daemon_env: dict[str, str]
) -> None:
    configure(home)
    assert aos("start").returncode == 0
    make_agent(home, model)
    with SyncClient(home / "run" / "kernel.sock") as c:
        c.call("agent.create", {"name": "bob"})
        bobs = c.call("session.create", {"agent": "bob"})["id"]
    r = aos("chat", "alice", "--session", bobs, input="hello\n")
    assert r.returncode == 1 and f"session {bobs} belongs to another agent, not alice" in r.stderr
