"""Messages sent while a dispatch runs: steered into it (the default), queued after it, or
refused; through real dispatches, real bash and the scripted model."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_sdk.connection import RpcConnection, open_connection
from aos_sdk.testing import ScriptedModel

from .rpc import call


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
async def sid(rpc: RpcConnection, model: ScriptedModel, tmp_path: Path) -> AsyncIterator[str]:
    (tmp_path / "ws").mkdir()
    await call(
        rpc,
        "agent.create",
        {
            "name": "alice",
            "model": "openai/scripted",
            "workspace": str(tmp_path / "ws"),
            "settings": {"model_params": {"api_base": model.url, "api_key": "test-key"}},
        },
    )
    yield (await call(rpc, "session.create", {"agent": "alice"}))["id"]


class Follow:
    """The session's facts as a subscriber sees them."""

    def __init__(self) -> None:
        self.facts: list[dict[str, Any]] = []
        self._new = asyncio.Event()

    def on_note(self, note: Any) -> None:
        self.facts.append(note.params["fact"])
        self._new.set()

    async def until(self, pred: Any, timeout: float = 30) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            seen = 0
            while True:
                for f in self.facts[seen:]:
                    if pred(f):
                        return f
                seen = len(self.facts)
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(wait(), timeout)


async def test_a_message_sent_while_it_works_reaches_the_agent_at_its_next_step(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    gate = tmp_path / "ws" / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"cat {gate}"}, {"text": "checked the README too"})
    follow = Follow()
    async with open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub:
        await sub.call("history.subscribe", {"session": sid})
        first = await call(rpc, "session.dispatch", {"session": sid, "message": "look at the code"})
        await follow.until(lambda f: f["kind"] == "tool.started")
        steered = await call(rpc, "session.dispatch", {"session": sid, "message": "also check the README"})
        assert steered["delivery"] == "steered" and steered["dispatch_id"] == first["dispatch_id"]
        await asyncio.to_thread(gate.write_text, "done\n")  # let the command finish
        end = await follow.until(lambda f: f["kind"] == "dispatch.end")
    assert end["body"]["status"] == "done" and end["body"]["steps"] == 2
    fact = await call(rpc, "history.get", {"session": sid, "seq": steered["seq"]})
    assert fact["kind"] == "message" and fact["role"] == "user"
    assert fact["meta"]["steer"] is True and fact["meta"]["dispatch_id"] == first["dispatch_id"]
    # The second model call saw it after the command's result.
    second = model.requests[1]["messages"]
    assert second[-1] == {"role": "user", "content": "also check the README"}
    assert second[-2]["role"] == "tool" and second[-2]["content"].startswith("done")


async def test_a_message_sent_while_the_model_gives_its_final_answer_is_still_answered(
    rpc: RpcConnection, kernel: Any, sid: str, tmp_path: Path
) -> None:
    """The model's final answer is on its way when the person writes: the dispatch does not end
    on it, but takes one more step that reads the message."""
    answering = threading.Event()
    steered = threading.Event()

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        if not answering.is_set():
            answering.set()
            assert steered.wait(30), "the test never steered"
            return {"text": "all done"}
        return {"text": "and the tests pass too"}

    with ScriptedModel(respond=respond) as model:
        await call(
            rpc,
            "agent.update",
            {"agent": "alice", "settings": {"model_params": {"api_base": model.url, "api_key": "k"}}},
        )
        follow = Follow()
        async with open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub:
            await sub.call("history.subscribe", {"session": sid})
            await call(rpc, "session.dispatch", {"session": sid, "message": "fix it"})
            await asyncio.to_thread(answering.wait, 30)
            res = await call(rpc, "session.dispatch", {"session": sid, "message": "run the tests as well"})
            steered.set()
            end = await follow.until(lambda f: f["kind"] == "dispatch.end")
        assert res["delivery"] == "steered"
        assert end["body"]["status"] == "done" and end["body"]["steps"] == 2
        answers = [
            f["body"]["text"] for f in follow.facts if f["kind"] == "message" and f["role"] == "assistant"
        ]
        assert answers == ["all done", "and the tests pass too"]
        assert model.requests[1]["messages"][-1] == {"role": "user", "content": "run the tests as well"}


async def test_a_queued_message_starts_its_own_dispatch_when_the_running_one_ends(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    gate = tmp_path / "ws" / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"cat {gate}"}, {"text": "first done"}, {"text": "second done"})
    follow = Follow()
    async with open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub:
        await sub.call("history.subscribe", {"session": sid})
        first = await call(rpc, "session.dispatch", {"session": sid, "message": "one"})
        await follow.until(lambda f: f["kind"] == "tool.started")
        queued = await call(
            rpc, "session.dispatch", {"session": sid, "message": "then two", "if_busy": "queue"}
        )
        assert queued["delivery"] == "queued" and queued["dispatch_id"] != first["dispatch_id"]
        await asyncio.to_thread(gate.write_text, "ok\n")
        mine = queued["dispatch_id"]
        end = await follow.until(lambda f: f["kind"] == "dispatch.end" and f["meta"]["dispatch_id"] == mine)
    assert end["body"]["status"] == "done"
    firsts = [f for f in follow.facts if f["kind"] == "dispatch.end"]
    assert [f["meta"]["dispatch_id"] for f in firsts] == [first["dispatch_id"], mine]
    # The queued message was not shown to the first dispatch; it is the second one's input.
    assert all("then two" not in str(m) for m in model.requests[1]["messages"])
    inputs = [f for f in follow.facts if f["kind"] == "message" and f["role"] == "user"]
    assert inputs[-1]["body"]["text"] == "then two" and inputs[-1]["meta"]["queued_seq"] == queued["seq"]
    # Its dispatch is not started twice: nothing is left queued.
    assert await kernel.store.queue_waiting() == []


async def test_a_queued_message_that_cannot_start_says_why_and_the_next_one_runs(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    from aos.kernel.hooks import HookHandler

    gate = tmp_path / "ws" / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"cat {gate}"}, {"text": "first done"}, {"text": "third done"})

    async def no_secrets(_: dict[str, Any], out: dict[str, Any]) -> Any:
        if "password" in out["message"]:
            return {"verdict": "reject", "reason": "no passwords in messages"}
        return out

    kernel.kernel.hooks.register(HookHandler("dispatch.before", "test-gate", no_secrets))
    follow = Follow()
    async with open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub:
        await sub.call("history.subscribe", {"session": sid})
        await call(rpc, "session.dispatch", {"session": sid, "message": "one"})
        await follow.until(lambda f: f["kind"] == "tool.started")
        queued = [
            await call(rpc, "session.dispatch", {"session": sid, "message": text, "if_busy": "queue"})
            for text in ("the password is hunter2", "three")
        ]
        await asyncio.to_thread(gate.write_text, "ok\n")
        unqueued = await follow.until(lambda f: f["kind"] == "message.unqueued")
        third = queued[1]["dispatch_id"]
        end = await follow.until(lambda f: f["kind"] == "dispatch.end" and f["meta"]["dispatch_id"] == third)
    assert "no passwords in messages" in unqueued["body"]["reason"]
    assert unqueued["meta"]["queued_for"] == queued[0]["dispatch_id"]
    assert end["body"]["status"] == "done"
    texts = [f["body"]["text"] for f in follow.facts if f["kind"] == "message" and f["role"] == "user"]
    assert texts == ["one", "three"]
    assert await kernel.store.queue_waiting() == []


async def test_a_message_queued_in_a_session_archived_meanwhile_is_given_up_once(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    """The session is archived while its dispatch runs and a message waits behind it: the
    queued dispatch cannot start, and is given up (its row says why) rather than tried again
    every second."""
    gate = tmp_path / "ws" / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"cat {gate}"}, {"text": "first done"})
    follow = Follow()
    async with open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub:
        await sub.call("history.subscribe", {"session": sid})
        await call(rpc, "session.dispatch", {"session": sid, "message": "one"})
        await follow.until(lambda f: f["kind"] == "tool.started")
        queued = await call(rpc, "session.dispatch", {"session": sid, "message": "two", "if_busy": "queue"})
        await call(rpc, "session.archive", {"session": sid})
        await asyncio.to_thread(gate.write_text, "ok\n")
        await kernel.kernel.dispatcher.wait_dispatch(sid)
    store = kernel.store
    row = None
    for _ in range(200):  # the queued row is looked at once the run ends (and every second)
        row = await store.find_dispatch_request(queued["dispatch_id"])
        if row and row["state"] != "queued":
            break
        await asyncio.sleep(0.05)
    assert row is not None and row["state"] == "dropped" and "archived" in row["reason"], row
    assert await store.queue_waiting() == []


async def test_dispatch_get_counts_steps_while_it_runs(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    gate = tmp_path / "ws" / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": "true"}, {"bash": f"cat {gate}"}, {"text": "done"})
    follow = Follow()
    async with open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub:
        await sub.call("history.subscribe", {"session": sid})
        started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
        await follow.until(lambda f: f["kind"] == "tool.started" and "cat" in f["body"]["command"])
        running = await call(rpc, "dispatch.get", {"dispatch": started["dispatch_id"]})
        assert running["status"] == "running" and running["steps"] == 2
        await asyncio.to_thread(gate.write_text, "x\n")
        await follow.until(lambda f: f["kind"] == "dispatch.end")
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 10)
    ended = await call(rpc, "dispatch.get", {"dispatch": started["dispatch_id"]})
    assert ended["status"] == "done" and ended["steps"] == 3


@pytest.mark.parametrize("kernel", [{"model_backoff_ms": 10}], indirect=True)
async def test_live_followers_see_output_as_it_prints_and_retries_as_they_happen(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, tmp_path: Path
) -> None:
    """history.subscribe {live: true}: a command's output arrives while it runs (between its
    tool.started and tool.result facts), and a model retry is said before the retry; nothing of
    it is stored, and a subscriber that did not ask gets none of it."""
    gate = tmp_path / "ws" / "gate.fifo"
    os.mkfifo(gate)
    model.add(
        {"status": 503, "error": "overloaded"},
        {"bash": f"echo first; cat {gate}; echo second"},
        {"text": "done"},
    )
    live_seen: list[tuple[str, Any]] = []
    plain: list[str] = []
    got_first = asyncio.Event()

    def on_live(note: Any) -> None:
        if note.method == "history.live":
            event = note.params["event"]
            live_seen.append(("live", event))
            if "first" in event.get("text", ""):
                got_first.set()
        else:
            live_seen.append(("fact", note.params["fact"]["kind"]))

    follow = Follow()
    async with (
        open_connection(kernel.paths.kernel_sock, on_notification=on_live) as live,
        open_connection(kernel.paths.kernel_sock, on_notification=lambda n: plain.append(n.method)) as other,
        open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub,
    ):
        await live.call("history.subscribe", {"session": sid, "live": True})
        await other.call("history.subscribe", {"session": sid})
        await sub.call("history.subscribe", {"session": sid})
        started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
        await asyncio.wait_for(got_first.wait(), 30)  # "first" while the command still waits
        assert not any(f["kind"] == "tool.result" for f in follow.facts)
        await asyncio.to_thread(gate.write_text, "middle\n")
        await follow.until(lambda f: f["kind"] == "dispatch.end")
        await live.call("system.ping", {})  # what was sent before the end has arrived
    kinds = [x[1] if x[0] == "fact" else x[1]["type"] for x in live_seen]
    assert kinds.index("message") < kinds.index("model.retry") < kinds.index("tool.started")  # as it happened
    retry = next(x[1] for x in live_seen if x[0] == "live" and x[1]["type"] == "model.retry")
    assert (
        retry["dispatch_id"] == started["dispatch_id"] and retry["attempt"] == 1 and "503" in retry["error"]
    )
    outputs = [x[1] for x in live_seen if x[0] == "live" and x[1]["type"] == "output"]
    assert "".join(o["text"] for o in outputs) == "first\nmiddle\nsecond\n"
    between = kinds[kinds.index("tool.started") : kinds.index("tool.result")]
    assert "output" in between and "output" not in kinds[kinds.index("tool.result") :]
    assert "history.live" not in plain
    stored = (await call(rpc, "history.list", {"session": sid}))["facts"]
    assert not any(f["kind"].startswith("live") for f in stored)


@pytest.mark.parametrize("client", ["auto", "litellm"])
async def test_the_models_text_streams_to_live_followers_and_is_stored_whole(
    rpc: RpcConnection, kernel: Any, sid: str, model: ScriptedModel, client: str
) -> None:
    """With a live follower the model call streams (direct client and litellm alike): its text
    arrives piece by piece before the assistant fact, and the fact, its tool calls and usage are
    what they would be without streaming. Without one, nothing streams."""
    await call(
        rpc,
        "agent.update",
        {
            "agent": "alice",
            "settings": {"model_params": {"api_base": model.url, "api_key": "k"}, "model_client": client},
        },
    )
    answer = "The build is green and every test passed today."
    model.add({"bash": "true", "text": "checking first"}, {"text": answer})
    seen: list[tuple[str, Any]] = []
    follow = Follow()

    def on_note(note: Any) -> None:
        if note.method == "history.live":
            seen.append(("live", note.params["event"]))
        else:
            seen.append(("fact", note.params["fact"]))

    async with (
        open_connection(kernel.paths.kernel_sock, on_notification=on_note) as live,
        open_connection(kernel.paths.kernel_sock, on_notification=follow.on_note) as sub,
    ):
        await live.call("history.subscribe", {"session": sid, "live": True})
        await sub.call("history.subscribe", {"session": sid})
        await call(rpc, "session.dispatch", {"session": sid, "message": "status?"})
        end = await follow.until(lambda f: f["kind"] == "dispatch.end")
        await live.call("system.ping", {})
    assert end["body"]["status"] == "done", (
        end["body"],
        [(r.get("stream"), len(r["messages"])) for r in model.requests],
    )
    assert all(r.get("stream") is True for r in model.requests)
    texts = [e for kind, e in seen if kind == "live" and e["type"] == "text"]
    final = [e for e in texts if e["step"] == 2]
    assert len(final) > 1 and "".join(e["text"] for e in final) == answer
    order = [(k, x["type"] if k == "live" else x["kind"]) for k, x in seen]
    last_piece = max(i for i, (k, t) in enumerate(order) if t == "text")
    assert order[last_piece + 1] == ("fact", "message"), "the pieces come before the stored answer"
    facts = [x for k, x in seen if k == "fact" and x["kind"] == "message" and x["role"] == "assistant"]
    assert facts[0]["body"]["text"] == "checking first"
    assert facts[0]["body"]["tool_calls"][0]["name"] == "bash"
    assert json.loads(facts[0]["body"]["tool_calls"][0]["arguments"]) == {"command": "true"}
    assert facts[1]["body"]["text"] == answer and facts[1]["meta"]["usage"]["completion_tokens"] > 0
    # Nobody follows live: the next dispatch does not stream.
    model.add({"text": "quiet"})
    await call(rpc, "session.dispatch", {"session": sid, "message": "again"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    assert "stream" not in model.requests[-1]
