"""``aos chat``: a terminal conversation with an agent that never drops a message.

One asyncio program. The connection to the daemon lives in a task of its own
(:meth:`Chat.keep_connected`): websockets answers the daemon's keepalive pings in the background
whatever the person is doing (idling at the prompt, thinking over an approval), and when the
daemon goes away the chat says so, reconnects by itself, and follows the session again from the
last fact it showed, so nothing is shown twice or missed.

Every message carries a ``meta.chat_id``. If the connection drops before the daemon answered, the
chat looks for that id in history once it is back and says whether the message was written;
a message that was not is never silently lost.

In a terminal (:func:`interactive`) the prompt is prompt_toolkit's: line editing, a persistent
input history (``$AOS_HOME/chat_history``), Alt+Enter for a new line, slash commands, a status
line (state, step, elapsed time, tokens, cost). Typing while the agent works steers the message
into the running dispatch (it reads it at its next step). With input from a pipe
(:func:`scripted`), each line is sent after the previous reply ended, so scripts are
deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from aos_sdk.connection import open_connection
from aos_sdk.errors import AosError

from ..config import Paths
from .chat_session import Chat
from .output import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, clip, fail

__all__ = ["run_chat"]


# -- the front ends ------------------------------------------------------------------------------


async def interactive(chat: Chat, history_file: Path) -> int:
    """The terminal: prompt_toolkit's prompt, with the reply printed above it as it comes."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.patch_stdout import patch_stdout

    await asyncio.to_thread(history_file.touch, mode=0o600, exist_ok=True)
    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(str(history_file)), key_bindings=keys, multiline=False
    )

    def message() -> str:
        if chat.approval is not None:
            return f"approve `{clip(str(chat.approval['command']), 50)}`? [y/a/n] > "
        return "you> "

    chat.changed.append(lambda: prompt.app.invalidate() if prompt.app.is_running else None)
    with patch_stdout(raw=True):
        while True:
            try:
                text = await prompt.prompt_async(message, bottom_toolbar=chat.status, refresh_interval=1.0)
            except KeyboardInterrupt:
                if chat.dispatch_id is not None:
                    await chat.interrupt()
                else:
                    chat.say("[Ctrl-D or /quit leaves]")
                continue
            except EOFError:
                return EXIT_OK
            if not await handle(chat, text):
                return EXIT_OK


async def scripted(chat: Chat) -> int:
    """Input from a pipe: each line is sent once the previous reply ended; an approval takes the
    next line as its answer. Ctrl-C (SIGINT) interrupts the reply; a second one leaves."""
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1 or chat.dispatch_id is None:
            raise_exit.set()
            return
        pending.add(loop.create_task(chat.interrupt()))

    raise_exit = asyncio.Event()
    pending: set[asyncio.Task[None]] = set()
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        while not raise_exit.is_set():
            line_task = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
            stop_task = asyncio.ensure_future(raise_exit.wait())
            done, _ = await asyncio.wait({line_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            if line_task not in done:
                line_task.cancel()
                break
            line = line_task.result()
            if not line:  # end of input: let the reply finish
                await _until(chat.idle.wait(), raise_exit)
                break
            if chat.approval is not None:
                if not await chat.answer(line.strip() or "n"):
                    await chat.answer("n")
                continue
            if not await handle(chat, line.rstrip("\n")):
                break
            await asyncio.sleep(0)  # let the dispatch's first facts in before waiting on idle
            await _until(_idle_or_asked(chat), raise_exit)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return EXIT_OK


async def _idle_or_asked(chat: Chat) -> None:
    """Until the reply ended, or an approval waits for the next line."""
    while not chat.idle.is_set() and chat.approval is None:
        changed = asyncio.Event()
        chat.changed.append(changed.set)
        try:
            if chat.idle.is_set() or chat.approval is not None:
                return
            await changed.wait()
        finally:
            chat.changed.remove(changed.set)


async def _until(aw: Any, stop: asyncio.Event) -> None:
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for t in (task, stopper):
        t.cancel()


async def handle(chat: Chat, text: str) -> bool:
    """One line the person entered; False when the chat should end."""
    if not text.strip():
        return True
    try:
        if chat.approval is not None and not text.startswith("/"):
            if await chat.answer(text):
                return True
            chat.say("  [an approval waits: y = once, a = always for this agent, n [note] = no; /help]")
            return True
        if text.startswith("/"):
            return await chat.command(text.strip())
        await chat.send(text)
    except AosError as exc:
        chat.say(f"[{exc.type}: {exc.message}]")
    return True


async def run_chat(
    paths: Paths, agent_ref: str, session_ref: str | None, new: bool, *, json_out: bool = False
) -> int:
    if json_out and sys.stdin.isatty():
        fail("--json is for input from a pipe (one message per line); in a terminal, leave it out", "usage")
        return EXIT_USAGE
    try:
        async with open_connection(paths.kernel_sock) as c:
            agent = await c.call("agent.get", {"agent": agent_ref})
            if session_ref is not None:
                session = await c.call("session.get", {"session": session_ref})
                if session["agent_id"] != agent["id"]:
                    fail(f"session {session_ref} belongs to another agent, not {agent['name']}")
                    return EXIT_ERROR
                sid = str(session["id"])
            else:
                recent = (
                    []
                    if new
                    else (await c.call("session.list", {"agent": agent["id"], "limit": 1}))["sessions"]
                )
                sid = (
                    str(recent[0]["id"])
                    if recent
                    else str((await c.call("session.create", {"agent": agent["id"], "title": "chat"}))["id"])
                )
                session = await c.call("session.get", {"session": sid})
    except AosError as exc:
        if exc.details.get("not_running"):
            fail(f"aos is not running (no daemon on {paths.kernel_sock}); start it with `aos start`")
            return EXIT_NOT_RUNNING
        fail(f"{exc.type}: {exc.message}")
        return EXIT_ERROR
    chat = Chat(paths, agent, sid, json_out=json_out)
    chat.last_seq = int(session["last_seq"])
    fresh = int(session["last_seq"]) == 0
    chat.say(
        f"{'new session' if fresh else 'session'} {sid} with {agent['name']}"
        + ("" if fresh else " (--new starts a fresh one)")
    )
    link = asyncio.create_task(chat.keep_connected(), name="chat-connection")
    try:
        await asyncio.wait_for(chat.connected.wait(), 30)
        if not fresh:
            await chat.recap()
        tty = sys.stdin.isatty() and sys.stdout.isatty()
        chat.say("Type a message; /help lists commands; Ctrl-C interrupts a reply, Ctrl-D leaves.")
        if tty:
            return await interactive(chat, paths.home / "chat_history")
        return await scripted(chat)
    finally:
        chat.closing = True
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        if chat.conn is not None:
            with contextlib.suppress(Exception):  # a daemon slow to answer the close: leave anyway
                await asyncio.wait_for(chat.conn.aclose(), 2)
