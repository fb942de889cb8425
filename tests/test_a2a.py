"""aos-a2a: agents messaging each other through real dispatches, real services, a real daemon."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aos_sdk.connection import RpcConnection, open_connection
from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel

from .rpc import call, next_fact, scripted_session

A2A = [{"enable": ["aos-a2a"]}]


class Agents:
    """One scripted model server for several agents: each request is answered from the queue of
    the agent it is for (named in its system prompt), or by that agent's policy."""

    def __init__(self) -> None:
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.policies: dict[str, Callable[[list[dict[str, Any]]], dict[str, Any]]] = {}
        self.requests: dict[str, list[list[dict[str, Any]]]] = {}
        self.lock = threading.Lock()
        self.model = ScriptedModel(respond=self.respond)

    def respond(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        name = re.match(r"You are (\S+), an agent", messages[0]["content"])
        who = name.group(1) if name else "?"
        with self.lock:
            self.requests.setdefault(who, []).append(messages)
            if self.queues.get(who):
                return self.queues[who].pop(0)
        if who in self.policies:
            return self.policies[who](messages)
        return {"text": f"{who} has nothing scripted"}

    def add(self, who: str, *steps: dict[str, Any]) -> None:
        with self.lock:
            self.queues.setdefault(who, []).extend(steps)


@pytest.fixture
def agents() -> Any:
    a = Agents()
    with a.model:
        yield a


async def make_agents(rpc: RpcConnection, url: str, *names: str) -> dict[str, str]:
    """Agents on the scripted model, one session each; returns name -> session id."""
    return {name: await scripted_session(rpc, url, agent=name) for name in names}


async def run(rpc: RpcConnection, kernel: Any, sid: str, text: str) -> list[dict[str, Any]]:
    started = await call(rpc, "session.dispatch", {"session": sid, "message": text})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    return list((await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"] - 1}))["facts"])


def outputs(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["body"] for f in facts if f["kind"] == "tool.result"]


async def until_fact(
    kernel: Any, sid: str, kind: str, n: int = 1, timeout: float = 30
) -> list[dict[str, Any]]:
    """The facts of ``kind`` in ``sid`` once there are ``n``: read from the session's stream (it
    replays what is already there, then follows), so the wait ends on the fact itself."""
    found: list[dict[str, Any]] = []
    enough = asyncio.Event()

    def on_fact(note: Any) -> None:
        fact = note.params["fact"]
        if fact["kind"] == kind:
            found.append(fact)
            if len(found) >= n:
                enough.set()

    async with open_connection(kernel.paths.kernel_sock, on_notification=on_fact) as sub:
        await sub.call("history.subscribe", {"session": sid, "after_seq": 0})
        await asyncio.wait_for(enough.wait(), timeout)
    return list(found)


@pytest.mark.parametrize("kernel", A2A, indirect=True)
async def test_notify_and_silent_messages_and_the_inbox(
    rpc: RpcConnection, kernel: Any, agents: Agents
) -> None:
    s = await make_agents(rpc, agents.model.url, "alice", "bob")
    agents.add(
        "alice",
        {
            "bash": [
                'a2a send --to bob "deploy at 3pm"',
                'a2a send --to bob --silent "logs rotated"',
                'a2a send --to nobody "hi"',
                "a2a send --to bob",
            ]
        },
        {"text": "sent"},
    )
    facts = await run(rpc, kernel, s["alice"], "tell bob")
    notify, silent, unknown, empty = outputs(facts)
    assert re.fullmatch(r"delivered: message m_\w+ to bob \(notify\)\n", notify["output"])
    assert re.fullmatch(r"recorded: message m_\w+ to bob \(silent\)\n", silent["output"])
    assert (
        unknown["exit_code"] == 1
        and "a2a: no agent named 'nobody' (agents: alice, bob; see: a2a who)" in unknown["output"]
    )
    assert empty["exit_code"] == 1 and "the message is empty" in empty["output"]
    sent = [f["body"] for f in facts if f["kind"] == "a2a.sent"]
    assert [(m["to"], m["mode"], m["receipt"]["state"]) for m in sent] == [
        ("bob", "notify", "delivered"),
        ("bob", "silent", "recorded"),
    ]

    # bob sees the notify message at his next step, not the silent one; his inbox has both, once.
    agents.add("bob", {"bash": ["a2a inbox", "a2a inbox", "a2a inbox --all --json"]}, {"text": "ok"})
    facts = await run(rpc, kernel, s["bob"], "anything new?")
    first = agents.requests["bob"][0]
    notes = [m["content"] for m in first if m["role"] == "user"]
    assert (
        notes[0].startswith("[a2a message m_")
        and "from alice]\ndeploy at 3pm\n(reply with: a2a send --to alice" in notes[0]
    )
    assert not any("logs rotated" in m for m in notes) and notes[-1] == "anything new?"
    inbox, again, everything = outputs(facts)
    assert (
        "from alice (silent)\n  logs rotated" in inbox["output"]
        and "from alice (notify)\n  deploy at 3pm" in inbox["output"]
    )
    assert again["output"] == "no new messages (a2a inbox --all shows older ones)\n"
    assert [m["text"] for m in json.loads(everything["output"])] == ["logs rotated", "deploy at 3pm"]


@pytest.mark.parametrize("kernel", A2A, indirect=True)
async def test_wake_runs_the_recipient_and_routes_its_reply_back(
    rpc: RpcConnection, kernel: Any, agents: Agents
) -> None:
    s = await make_agents(rpc, agents.model.url, "alice", "bob")
    agents.add("alice", {"bash": 'a2a send --to bob --wake "what is 6 times 7?"'}, {"text": "asked bob"})
    agents.add("bob", {"bash": "echo $((6*7))"}, {"text": "42"})
    facts = await run(rpc, kernel, s["alice"], "ask bob")
    assert re.fullmatch(r"woken: message m_\w+ to bob \(wake\)\n", outputs(facts)[0]["output"])
    reply = (await until_fact(kernel, s["alice"], "a2a.reply"))[0]["body"]
    assert reply["from"] == "bob" and reply["text"] == "42" and reply["status"] == "done"
    assert reply["notice"].startswith(f"[a2a reply from bob to your message {reply['id']}]\n42")
    bob_input = (await call(rpc, "history.list", {"session": s["bob"], "kinds": ["message"]}))["facts"][0]
    assert bob_input["body"]["text"].startswith(f"Message {reply['id']} from alice (a2a, woken")
    assert bob_input["meta"]["a2a"]["hops"] == 1 and bob_input["meta"]["a2a"]["from_session"] == s["alice"]
    # alice sees the reply at her next step.
    agents.add("alice", {"text": "bob says 42"})
    await run(rpc, kernel, s["alice"], "so?")
    seen = [m["content"] for m in agents.requests["alice"][-1] if m["role"] == "user"]
    assert any(c.startswith("[a2a reply from bob") and c.endswith("\n42") for c in seen)

    # --wait prints the answer in the same command.
    agents.add("alice", {"bash": 'a2a send --to bob --wake --wait 30 "ping"'}, {"text": "done"})
    agents.add("bob", {"text": "pong"})
    facts = await run(rpc, kernel, s["alice"], "ping bob and wait")
    assert outputs(facts)[0]["output"] == "bob replied:\npong\n"
    # ... and only there: the reply is recorded, but not shown to alice's model a second time.
    replies = await until_fact(kernel, s["alice"], "a2a.reply", 2)
    assert replies[-1]["body"]["delivered"] == "inline" and "notice" not in replies[-1]["body"]
    agents.add("alice", {"text": "ok"})
    await run(rpc, kernel, s["alice"], "anything else?")
    sent_to_model = json.dumps(agents.requests["alice"][-1])
    assert sent_to_model.count("pong") == 1, "the reply reached the model once, as the command's output"


@pytest.mark.parametrize("kernel", A2A, indirect=True)
async def test_a_wake_chain_stops_at_the_hop_limit(rpc: RpcConnection, kernel: Any, agents: Agents) -> None:
    s = await make_agents(rpc, agents.model.url, "alice", "bob")

    def ping_pong(other: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        def policy(messages: list[dict[str, Any]]) -> dict[str, Any]:
            # Pass it on once per run (replies arriving later are just acknowledged).
            last = messages[-1]
            if last["role"] == "user" and last["content"].startswith(("Message m_", "start the chain")):
                return {"bash": f'a2a send --to {other} --wake "your turn"'}
            return {"text": "passed it on"}

        return policy

    agents.policies = {"alice": ping_pong("bob"), "bob": ping_pong("alice")}
    await run(rpc, kernel, s["alice"], "start the chain")
    # alice(0) -> bob(1) -> alice(2) -> bob(3) -> alice(4) -> refused.
    refused = (
        await next_fact(
            kernel,
            s["alice"],
            lambda f: f["kind"] == "tool.result" and f["body"].get("exit_code") == 1,
            timeout=60,
        )
    )["body"]
    assert refused is not None, "the chain never hit the limit"
    assert (
        "hop limit reached: this would be wake 5 of a chain started by alice (at most 4)" in refused["output"]
    )
    for sid in s.values():
        await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    woken = []
    for sid in s.values():
        msgs = (await call(rpc, "history.list", {"session": sid, "kinds": ["message"]}))["facts"]
        woken += [
            m["meta"]["a2a"]["hops"] for m in msgs if m["role"] == "user" and (m.get("meta") or {}).get("a2a")
        ]
    assert sorted(woken) == [1, 2, 3, 4]


@pytest.mark.parametrize("kernel", A2A, indirect=True)
async def test_typed_messages_are_validated_and_routed(
    rpc: RpcConnection, kernel: Any, agents: Agents
) -> None:
    s = await make_agents(rpc, agents.model.url, "alice", "bob")
    schema = {
        "type": "object",
        "required": ["version"],
        "properties": {"version": {"type": "string", "pattern": "^v\\d+"}},
        "x-aos-routes": ["bob"],
    }
    agents.add(
        "alice",
        {
            "bash": [
                "a2a schema list",
                """a2a send --to bob --type review_request --data '{"path": "", "extra": 1}'""",
                """a2a send --to bob --type review_request --data '{"path": "src/app.py", "summary": "retry logic"}'""",
                "a2a send --to bob --type nonesuch --data '{}'",
                "a2a send --to bob --type review_request --data '{not json'",
                f"printf '%s' '{json.dumps(schema)}' > release.json && a2a schema add release release.json",
                """a2a send --type release --data '{"version": "v1.4"}'""",
                """a2a send --type review_request --data '{"path": "a", "summary": "b"}'""",
                "echo '{\"type\": 12}' | a2a schema add broken -",
            ]
        },
        {"text": "done"},
    )
    facts = await run(rpc, kernel, s["alice"], "send typed")
    listing, invalid, valid, unknown, not_json, added, routed, no_route, broken = outputs(facts)
    assert listing["output"].startswith("review_request: Ask another agent to review a change")
    assert invalid["exit_code"] == 1
    assert "a2a: the data is not a valid review_request message:\n" in invalid["output"]
    assert "- (the message): 'summary' is a required property" in invalid["output"]
    assert (
        "- (the message): Additional properties are not allowed ('extra' was unexpected)" in invalid["output"]
    )
    assert "- path: '' should be non-empty" in invalid["output"]
    assert valid["exit_code"] == 0 and "to bob (notify)" in valid["output"]
    assert "no message type 'nonesuch' (registered types: review_request" in unknown["output"]
    assert "--data is not JSON" in not_json["output"]
    assert added["output"] == "registered message type release (routes to bob)\n"
    assert routed["exit_code"] == 0 and "to bob (notify)" in routed["output"]
    assert (
        no_route["exit_code"] == 1
        and "type review_request has no routes (x-aos-routes): give --to" in no_route["output"]
    )
    assert broken["exit_code"] == 1 and "not a valid JSON Schema" in broken["output"]
    got = [
        f["body"]
        for f in (await call(rpc, "history.list", {"session": s["bob"], "kinds": ["a2a.message"]}))["facts"]
    ]
    assert [(m["type"], m["data"]) for m in got] == [
        ("review_request", {"path": "src/app.py", "summary": "retry logic"}),
        ("release", {"version": "v1.4"}),
    ]
    assert 'data: {"version": "v1.4"}' in got[1]["notice"]
    assert (kernel.paths.home / "a2a" / "schemas" / "release.json").exists()


@pytest.mark.parametrize("kernel", A2A, indirect=True)
async def test_channels_and_who(rpc: RpcConnection, kernel: Any, agents: Agents) -> None:
    s = await make_agents(rpc, agents.model.url, "alice", "bob")
    agents.add(
        "alice",
        {
            "bash": [
                'a2a channel create releases --about "release talk"',
                "a2a channel create releases",
                'a2a channel post releases "v1.4 tagged"',
                'a2a channel post releases "v1.4 shipped"',
                "a2a channel read releases",
                "a2a channel read releases --after 1",
                "a2a channel read nowhere",
                "a2a channel list",
                "a2a who",
            ]
        },
        {"text": "done"},
    )
    facts = await run(rpc, kernel, s["alice"], "channels")
    created, dup, post1, post2, read, after, missing, listing, who = (r["output"] for r in outputs(facts))
    assert created == "created #releases\n" and "channel #releases already exists" in dup
    assert post1 == "posted to #releases (#1)\n" and post2 == "posted to #releases (#2)\n"
    lines = read.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[1] ") and lines[0].endswith(" alice: v1.4 tagged")
    assert after.splitlines()[0].endswith("alice: v1.4 shipped") and len(after.splitlines()) == 1
    assert "no channel #nowhere (channels: #releases; create it with: a2a channel create nowhere)" in missing
    assert listing == "#releases  (2 posts)\n"
    assert "alice (you): working, last active just now" in who and "bob: idle, last active just now" in who
    assert "a2a-channels" not in who


def wait_for_fact(home: Path, sid: str, kind: str, n: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """The facts of ``kind`` in ``sid`` once there are ``n``, following the session live."""
    facts: list[dict[str, Any]] = []
    with SyncClient(home / "run" / "kernel.sock", timeout=timeout) as c:
        c.call("history.subscribe", {"session": sid, "after_seq": 0})
        for note in c.notifications():
            fact = note.params["fact"]
            if fact["kind"] == kind:
                facts.append(fact)
                if len(facts) >= n:
                    return facts
    raise AssertionError(f"the stream of {sid} ended before {n} {kind} facts")


@pytest.mark.slow
# Three daemon starts, each importing the model client in its first dispatch: seconds apiece where
# Python cannot write bytecode; it waits on events throughout, so a loaded machine only takes longer.
@pytest.mark.timeout(360)
def test_messages_survive_a_daemon_restart(aos: Any, home: Path, agents: Agents) -> None:
    (home / "aoscb.json").write_text(json.dumps({"skills": {"disabled": ["aos-guard", "aos-skill"]}}))
    assert aos("start").returncode == 0
    with SyncClient(home / "run" / "kernel.sock") as c:
        s = {}
        for name in ("alice", "bob"):
            c.call(
                "agent.create",
                {
                    "name": name,
                    "model": "openai/scripted",
                    "settings": {"model_params": {"api_base": agents.model.url, "api_key": "k"}},
                },
            )
            s[name] = c.call("session.create", {"agent": name})["id"]
    # bob is busy with a long command when alice writes: her wake is queued.
    agents.add("bob", {"bash": "sleep 120"})
    assert aos("send", s["bob"], "work a while").returncode == 0
    wait_for_fact(home, s["bob"], "tool.started")
    agents.add(
        "alice",
        {
            "bash": [
                'a2a send --to bob "after the restart"',
                'a2a send --to bob --silent "quiet one"',
                'a2a send --to bob --wake "when you are free: still there?"',
            ]
        },
        {"text": "sent"},
    )
    r = aos("send", s["alice"], "message bob", "--wait", timeout=90)
    assert r.returncode == 0, r.stderr
    assert "queued: the agent is busy" in r.stdout

    # The restart interrupts bob's command; the queued wake starts once the daemon is back.
    assert aos("stop").returncode == 0
    agents.add("bob", {"text": "yes, here"})
    assert aos("start").returncode == 0
    reply = wait_for_fact(home, s["alice"], "a2a.reply")[0]["body"]
    assert reply["from"] == "bob" and reply["text"] == "yes, here"

    agents.add("bob", {"bash": "a2a inbox --all"}, {"text": "read"})
    r = aos("send", s["bob"], "check messages", "--wait", timeout=90)
    assert r.returncode == 0, r.stderr
    last = agents.requests["bob"][-2]
    assert any("from alice]\nafter the restart" in m["content"] for m in last if m["role"] == "user")
    with SyncClient(home / "run" / "kernel.sock") as c:
        results = c.call("history.list", {"session": s["bob"], "kinds": ["tool.result"]})["facts"]
    inbox = results[-1]["body"]["output"]
    assert "after the restart" in inbox and "quiet one" in inbox and "still there?" in inbox

    # A wake after the restart routes the reply back too.
    agents.add("alice", {"bash": 'a2a send --to bob --wake --wait 60 "and now?"'}, {"text": "ok"})
    agents.add("bob", {"text": "yes"})
    r = aos("send", s["alice"], "wake bob", "--wait", timeout=90)
    assert r.returncode == 0, r.stderr
    with SyncClient(home / "run" / "kernel.sock") as c:
        results = c.call("history.list", {"session": s["alice"], "kinds": ["tool.result"]})["facts"]
    assert results[-1]["body"]["output"] == "bob replied:\nyes\n"
