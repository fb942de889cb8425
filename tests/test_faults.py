"""Faults and bad input, each reproduced as a user or a hostile agent would cause it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_sdk.syncclient import SyncClient
from aos_sdk.testing import ScriptedModel


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


def _agent(c: SyncClient, model: ScriptedModel, name: str, **settings: Any) -> str:
    c.call(
        "agent.create",
        {
            "name": name,
            "model": "openai/scripted",
            "settings": {
                "model_params": {"api_base": model.url, "api_key": "test-key"},
                **settings,
            },
        },
    )
    return str(c.call("session.create", {"agent": name})["id"])


def _run_to_end(sock: Path, sid: str) -> list[dict[str, Any]]:
    facts: list[dict[str, Any]] = []
    with SyncClient(sock, timeout=240) as c:
        start = c.call("session.dispatch", {"session": sid, "message": "go"})
        c.call("history.subscribe", {"session": sid, "after_seq": start["seq"]})
        for note in c.notifications():
            facts.append(note.params["fact"])
            if facts[-1]["kind"] == "dispatch.end":
                return facts
    return facts


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_exit_code_is_the_commands_own_while_orphans_exit_around_it(
    aos: Any, home: Path, model: ScriptedModel
) -> None:
    """The daemon's orphan reaper once collected commands before their own wait did (~2% were
    recorded as exit 255). Hundreds of commands, in four sessions at once, each leaving an orphan
    behind for the daemon (unsandboxed) or its sandbox to reap; each must report its own code."""
    (home / "aoscb.json").write_text(
        '{"skills": {"disabled": ["aos-guard", "aos-skill", "aos-a2a"]}, "limits": {"max_steps": 500}}'
    )
    per_session, sessions = 100, 4
    total = per_session * sessions
    model.add(*[{"bash": f"(true &); (sleep 0.0$((RANDOM % 5)) &); exit {i % 7}"} for i in range(total)])
    model.add(*[{"text": "done"}] * sessions)
    assert aos("start").returncode == 0
    sock = home / "run" / "kernel.sock"
    with SyncClient(sock) as c:
        sids = [_agent(c, model, f"a{n}", sandbox="off" if n % 2 else "auto") for n in range(sessions)]
    results: dict[str, list[dict[str, Any]]] = {}
    threads = [
        threading.Thread(target=lambda s=sid: results.__setitem__(s, _run_to_end(sock, s))) for sid in sids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(280)
    seen = 0
    for facts in results.values():
        commands = {f["body"]["call_id"]: f["body"]["command"] for f in facts if f["kind"] == "tool.started"}
        for f in facts:
            if f["kind"] != "tool.result":
                continue
            expected = int(re.search(r"exit (\d+)$", commands[f["body"]["call_id"]]).group(1))  # type: ignore[union-attr]
            assert f["body"]["exit_code"] == expected, f["body"]
            seen += 1
    assert seen == total


SHAPES = {
    "aws": "AKIA" + "ABCDEFGHIJKLMNOP",
    "github": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "openai": "sk-" + "proj-abcdefghijklmnopqrstuvwxyz012345",
    "pem": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
}


@pytest.mark.parametrize("kernel", [{"output_cap_bytes": 2000}], indirect=True)
async def test_secrets_printed_by_a_command_are_stored_nowhere(
    rpc: Any, kernel: Any, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aos.redact import refresh_secret_values

    from .rpc import call, scripted_session

    planted = "the-daemons-own-key-0123456789"
    monkeypatch.setenv("ANTHROPIC_API_KEY", planted)
    refresh_secret_values()
    try:
        sid = await scripted_session(rpc, model.url)
        printed = "\n".join([*SHAPES.values(), planted])
        (Path(kernel.paths.workspaces) / "alice").mkdir(parents=True)
        (Path(kernel.paths.workspaces) / "alice" / "leak.txt").write_text(printed + "\n")
        # Short output (history only) and output over the cap (history and content).
        model.add(
            {"bash": ["cat leak.txt", "cat leak.txt; head -c 5000 /dev/zero | tr '\\0' x"]}, {"text": "ok"}
        )
        started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
        import asyncio

        await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
        facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
        results = [f["body"] for f in facts if f["kind"] == "tool.result"]
        assert results[1]["truncated"] and results[1]["content_id"]
        agent = (await call(rpc, "agent.get", {"agent": "alice"}))["id"]
        stored = await kernel.store.get_content(results[1]["content_id"], agent)
        for text in (str(facts), bytes(stored["data"]).decode()):
            assert "***" in text
            for secret in [*SHAPES.values(), planted]:
                assert secret not in text
    finally:
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        refresh_secret_values()


async def test_a_secret_printed_in_two_pieces_never_shows_live_even_in_part(
    rpc: Any, kernel: Any, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command prints a secret value in two writes with a pause between them: a live follower
    (the web UI, `aos chat`) sees the line up to it at once, then `***`, never a piece of it."""
    import asyncio
    import os

    from aos.redact import refresh_secret_values
    from aos_sdk.connection import open_connection

    from .rpc import call, scripted_session

    planted = "the-daemons-own-key-0123456789"
    monkeypatch.setenv("ANTHROPIC_API_KEY", planted)
    refresh_secret_values()
    try:
        sid = await scripted_session(rpc, model.url)
        ws = Path(kernel.paths.workspaces) / "alice"
        ws.mkdir(parents=True)
        os.mkfifo(ws / "gate")
        model.add(
            {"bash": "printf 'key: the-daemons-'; cat gate; printf 'own-key-0123456789 ok\\n'"},
            {"text": "ok"},
        )
        live: list[str] = []
        first = asyncio.Event()

        def on_note(note: Any) -> None:
            if note.method == "history.live" and note.params["event"]["type"] == "output":
                live.append(note.params["event"]["text"])
                first.set()

        async with open_connection(kernel.paths.kernel_sock, on_notification=on_note) as sub:
            await sub.call("history.subscribe", {"session": sid, "live": True})
            await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
            await asyncio.wait_for(first.wait(), 30)  # the line up to the secret, while it waits
            assert live == ["key: "]
            await asyncio.to_thread((ws / "gate").write_text, "")
            await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
            await sub.call("system.ping", {})  # what was sent before the end has arrived
        assert "".join(live) == "key: *** ok\n", live
        assert not any("the-daemons" in piece for piece in live)
    finally:
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        refresh_secret_values()


async def test_a_nul_byte_in_params_is_refused_and_wedges_nothing(rpc: Any, kernel: Any) -> None:
    from aos_sdk.errors import InvalidParams

    from .rpc import call

    with pytest.raises(InvalidParams, match=r"instructions: text may not contain NUL bytes"):
        await call(rpc, "agent.create", {"name": "zz", "instructions": "a\u0000b"})
    with pytest.raises(InvalidParams, match=r"x\.y: text may not contain NUL"):
        await call(rpc, "agent.create", {"name": "zz", "settings": {"x": {"y": "\u0000"}}})
    # The refusals are in the runtime log, and the log keeps working for what follows.
    await call(rpc, "agent.create", {"name": "after"})
    entries = (await call(rpc, "log.list", {"op": "agent.create"}))["entries"]
    assert [e["outcome"] for e in entries] == ["error", "error", "ok"]
    assert "\\x00" in str(entries[0]["args"])


async def test_a_command_printing_nul_bytes_is_recorded_faithfully(
    rpc: Any, kernel: Any, model: ScriptedModel
) -> None:
    import asyncio

    from .rpc import call, scripted_session

    sid = await scripted_session(rpc, model.url)
    model.add({"bash": "printf 'a\\0b'"}, {"text": "ok"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    assert facts[-1]["body"]["status"] == "done", facts[-1]
    result = next(f["body"] for f in facts if f["kind"] == "tool.result")
    assert result["output"] == "a\\x00b" and result["exit_code"] == 0
    agent = (await call(rpc, "agent.get", {"agent": "alice"}))["id"]
    stored = await kernel.store.get_content(result["content_id"], agent)
    assert bytes(stored["data"]) == b"a\x00b"


async def test_dispatches_wait_for_a_required_service_that_is_restarting(
    rpc: Any, kernel: Any, model: ScriptedModel
) -> None:
    """kill -9 of aos-context once failed the next dispatches at once ('not running (backoff)')."""
    import asyncio
    import os
    import signal

    from .rpc import call, scripted_session

    runner = kernel.kernel.services.runners["aos-context"]
    await runner.registered.wait()
    sids = [await scripted_session(rpc, model.url, f"agent{i}") for i in range(3)]
    # A first round, so the model client is loaded and nothing else slows the next one down.
    model.add(*[{"text": "warm"}] * 3)
    for sid in sids:
        await call(rpc, "session.dispatch", {"session": sid, "message": "hello"})
        await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    model.add(*[{"text": "fine"}] * 3)
    os.kill(runner.proc.pid, signal.SIGKILL)
    starts = [await call(rpc, "session.dispatch", {"session": s, "message": "hi"}) for s in sids]
    for sid in sids:
        await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    waited = 0
    for sid, start in zip(sids, starts, strict=True):
        facts = (await call(rpc, "history.list", {"session": sid, "after_seq": start["seq"]}))["facts"]
        assert facts[-1]["body"]["status"] == "done", facts[-1]
        waits = [f for f in facts if f["kind"] == "dispatch.waiting"]
        waited += len(waits)
        for w in waits:
            assert w["body"]["skills"] == ["aos-context"] and "restart" in w["body"]["reason"]
    assert waited >= 1, "at least the first dispatch found the service down and said so"


@pytest.mark.parametrize("kernel", [{"content_cap_bytes": 1024 * 1024}], indirect=True)
async def test_huge_output_is_kept_bounded_with_its_size_recorded(
    rpc: Any, kernel: Any, model: ScriptedModel
) -> None:
    """60 MB printed three times once grew the database by 350 MB and the daemon to 695 MiB."""
    import asyncio

    from .rpc import call, scripted_session

    sid = await scripted_session(rpc, model.url)
    model.add({"bash": "head -c 30000000 /dev/urandom | base64 -w 100; echo THE-END"}, {"text": "ok"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "go"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    result = next(f["body"] for f in facts if f["kind"] == "tool.result")
    assert result["size"] > 40_000_000 and result["truncated"] is True
    agent = (await call(rpc, "agent.get", {"agent": "alice"}))["id"]
    stored = await kernel.store.get_content(result["content_id"], agent)
    data = bytes(stored["data"])
    assert len(data) < 1024 * 1024 + 200, "content keeps at most content_cap_bytes (plus the marker)"
    assert data.rstrip().endswith(b"THE-END") and f"omitted of {result['size']}".encode() in data


async def test_a_message_whose_dispatch_never_started_is_answered_after_a_crash(
    rpc: Any, kernel: Any, model: ScriptedModel
) -> None:
    """A daemon stopped between appending a dispatch's input and writing its row left the session
    leased forever ('no dispatch …' at every recovery) and the message unanswered."""
    import asyncio

    from .rpc import call, scripted_session

    sid = await scripted_session(rpc, model.url)
    store = kernel.store
    # What a dead daemon (a kernel whose heartbeat stopped) got done: the lease, then the input.
    row = {"host": "h", "boot_id": "b", "pid": 9, "pid_ns": None, "home": "/x", "version": "0", "ttl_s": 1}
    await store.register_kernel({**row, "id": "k_gone"})
    async with store.pool.connection() as conn:
        await conn.execute(
            "UPDATE kernels SET heartbeat_at = now() - interval '2 seconds' WHERE id = 'k_gone'"
        )
    leased = await store.claim_lease(sid, "k_gone/di_unstarted", 30)
    await store.append(
        sid,
        epoch=int(leased["lease_epoch"]),
        kind="message",
        role="user",
        body={"text": "are you there?"},
        meta={"dispatch_id": "di_unstarted"},
        idempotency_key="di_unstarted:1",
    )
    model.add({"text": "yes, answered after the crash"})
    await kernel.kernel.dispatcher.recover()
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid}))["facts"]
    assert [f["kind"] for f in facts][-2:] == ["message", "dispatch.end"]
    assert facts[-2]["body"]["text"] == "yes, answered after the crash"
    assert facts[-1]["body"]["status"] == "done"
    assert (await call(rpc, "dispatch.get", {"dispatch": "di_unstarted"}))["status"] == "done"
    session = await call(rpc, "session.get", {"session": sid})
    assert session["lease_owner"] is None
