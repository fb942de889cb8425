"""Round trip of every syscall through the real socket, JSON-RPC and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aos_sdk.connection import RpcConnection, open_connection
from aos_sdk.errors import Archived, Conflict, InvalidParams, NotFound, SessionBusy

from .rpc import COVERED, call


async def make_session(rpc: RpcConnection, agent: str = "alice") -> str:
    await call(rpc, "agent.create", {"name": agent})
    return str((await call(rpc, "session.create", {"agent": agent}))["id"])


async def test_system_stop_is_refused_where_the_kernel_is_not_the_daemons(rpc: RpcConnection) -> None:
    """An embedded kernel (a test, a host program) is stopped by its host, not by a client."""
    from aos_sdk.errors import Unavailable

    with pytest.raises(Unavailable, match="runs inside another program"):
        await call(rpc, "system.stop")
    assert (await call(rpc, "system.ping", {"payload": "still here"}))["payload"] == "still here"


async def test_system_status_and_config(rpc: RpcConnection, pg: Any) -> None:
    st = await call(rpc, "system.status")
    assert st["database"]["fsync"] == "on"
    assert st["database"]["synchronous_commit"] == "on"
    assert st["counts"] == {
        "agents": 0,
        "sessions": 0,
        "facts": 0,
        "connections": 1,
        "subscriptions": 0,
        "dispatches": 0,
    }
    assert st["sockets"]["kernel"].endswith("run/kernel.sock")
    # The database wants a password; status never shows it.
    assert "password=***" in st["database"]["url"] and pg.password not in st["database"]["url"]
    payload = {"text": "é" * 100, "n": [1, 2.5, None, True]}
    pong = await call(rpc, "system.ping", {"payload": payload})
    assert pong["payload"] == payload and pong["pid"] == st["pid"]
    cfg = await call(rpc, "system.config")
    assert cfg["config"]["limits"]["max_frame_bytes"] > 0
    assert cfg["sources"][0] == "defaults"


async def test_agent_lifecycle(rpc: RpcConnection) -> None:
    a = await call(rpc, "agent.create", {"name": "alice", "instructions": "be brief", "model": "m1"})
    assert a["name"] == "alice" and a["status"] == "active" and a["revision"] == 1
    assert a["id"].startswith("ag_")
    assert (await call(rpc, "agent.get", {"agent": "alice"}))["id"] == a["id"]
    assert (await call(rpc, "agent.get", {"agent": a["id"]}))["name"] == "alice"

    with pytest.raises(Conflict, match="already exists"):
        await call(rpc, "agent.create", {"name": "alice"})

    u = await call(rpc, "agent.update", {"agent": "alice", "model": "m2", "revision": 1})
    assert u["model"] == "m2" and u["revision"] == 2 and u["instructions"] == "be brief"
    with pytest.raises(Conflict, match="revision 2"):
        await call(rpc, "agent.update", {"agent": "alice", "model": "m3", "revision": 1})

    await call(rpc, "agent.create", {"name": "bob"})
    names = [x["name"] for x in (await call(rpc, "agent.list"))["agents"]]
    assert names == ["alice", "bob"]

    s = await call(rpc, "session.create", {"agent": "bob"})
    archived = await call(rpc, "agent.archive", {"agent": "bob"})
    assert archived["status"] == "archived"
    assert (await call(rpc, "session.get", {"session": s["id"]}))["status"] == "archived"
    assert [x["name"] for x in (await call(rpc, "agent.list"))["agents"]] == ["alice"]
    assert len((await call(rpc, "agent.list", {"include_archived": True}))["agents"]) == 2
    with pytest.raises(Archived):
        await call(rpc, "session.create", {"agent": "bob"})
    with pytest.raises(Archived):
        await call(rpc, "agent.update", {"agent": "bob", "model": "x"})
    with pytest.raises(NotFound, match="no agent 'carol'"):
        await call(rpc, "agent.get", {"agent": "carol"})
    # An archived agent's name: restored, not taken again; its sessions stay archived.
    with pytest.raises(Conflict, match="agent restore bob"):
        await call(rpc, "agent.create", {"name": "bob"})
    restored = await call(rpc, "agent.restore", {"agent": "bob"})
    assert restored["status"] == "active" and restored["revision"] == archived["revision"] + 1
    assert (await call(rpc, "session.get", {"session": s["id"]}))["status"] == "archived"
    with pytest.raises(Conflict, match="is not archived"):
        await call(rpc, "agent.restore", {"agent": "bob"})


async def test_agent_name_is_validated(rpc: RpcConnection) -> None:
    with pytest.raises(InvalidParams, match="name") as info:
        await call(rpc, "agent.create", {"name": "Bad Name!"})
    assert info.value.details["errors"][0]["loc"] == ["name"]


async def test_session_lifecycle_and_list(rpc: RpcConnection) -> None:
    await call(rpc, "agent.create", {"name": "alice"})
    ids = [(await call(rpc, "session.create", {"agent": "alice", "title": f"t{i}"}))["id"] for i in range(5)]
    got = await call(rpc, "session.get", {"session": ids[0]})
    assert got["title"] == "t0" and got["phase"] == "idle" and got["last_seq"] == 0

    page1 = await call(rpc, "session.list", {"agent": "alice", "limit": 3})
    assert [s["id"] for s in page1["sessions"]] == ids[::-1][:3]
    page2 = await call(rpc, "session.list", {"agent": "alice", "limit": 3, "before": page1["next_before"]})
    assert [s["id"] for s in page2["sessions"]] == ids[::-1][3:]
    assert page2["next_before"] is None

    arch = await call(rpc, "session.archive", {"session": ids[0]})
    assert arch["status"] == "archived"
    with pytest.raises(Archived):
        await call(rpc, "session.append", {"session": ids[0], "body": "x"})
    assert len((await call(rpc, "session.list", {"agent": "alice"}))["sessions"]) == 4
    with pytest.raises(NotFound):
        await call(rpc, "session.get", {"session": "se_nope"})


async def test_append_list_get_fork(rpc: RpcConnection) -> None:
    sid = await make_session(rpc)
    for i in range(1, 6):
        r = await call(rpc, "session.append", {"session": sid, "role": "user", "body": {"text": f"m{i}"}})
        assert r["seq"] == i and r["duplicate"] is False
    await call(rpc, "session.append", {"session": sid, "kind": "note", "body": [1, 2, 3], "meta": {"k": "v"}})

    res = await call(rpc, "history.list", {"session": sid})
    assert [f["seq"] for f in res["facts"]] == [1, 2, 3, 4, 5, 6]
    assert res["last_seq"] == 6 and res["next_after"] is None
    assert res["facts"][5] | {"created_at": None} == {
        "session_id": sid,
        "seq": 6,
        "epoch": 0,
        "kind": "note",
        "role": None,
        "body": [1, 2, 3],
        "meta": {"k": "v"},
        "idempotency_key": res["facts"][5]["idempotency_key"],
        "created_at": None,
    }
    page = await call(rpc, "history.list", {"session": sid, "after_seq": 2, "limit": 2})
    assert [f["seq"] for f in page["facts"]] == [3, 4] and page["next_after"] == 4
    notes = await call(rpc, "history.list", {"session": sid, "kinds": ["note"]})
    assert [f["seq"] for f in notes["facts"]] == [6]

    fact = await call(rpc, "history.get", {"session": sid, "seq": 3})
    assert fact["body"] == {"text": "m3"} and fact["role"] == "user"
    with pytest.raises(NotFound):
        await call(rpc, "history.get", {"session": sid, "seq": 99})

    fork = await call(rpc, "session.fork", {"session": sid, "at_seq": 4, "title": "branch"})
    assert fork["parent_id"] == sid and fork["forked_at_seq"] == 4 and fork["last_seq"] == 4
    forked = await call(rpc, "history.list", {"session": fork["id"]})
    assert [f["body"] for f in forked["facts"]] == [{"text": f"m{i}"} for i in range(1, 5)]
    r = await call(rpc, "session.append", {"session": fork["id"], "body": "new branch"})
    assert r["seq"] == 5
    assert (await call(rpc, "session.get", {"session": sid}))["last_seq"] == 6  # the original is untouched
    with pytest.raises(Conflict):
        await call(rpc, "session.fork", {"session": sid, "at_seq": 60})


async def test_append_is_idempotent(rpc: RpcConnection) -> None:
    sid = await make_session(rpc)
    first = await call(rpc, "session.append", {"session": sid, "body": "once", "idempotency_key": "k1"})
    again = await call(rpc, "session.append", {"session": sid, "body": "once", "idempotency_key": "k1"})
    assert again["seq"] == first["seq"] and again["duplicate"] is True
    assert len((await call(rpc, "history.list", {"session": sid}))["facts"]) == 1


async def test_append_refused_while_lease_held(rpc: RpcConnection, kernel: Any) -> None:
    sid = await make_session(rpc)
    async with kernel.store.pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET lease_owner = 'someone', lease_epoch = 1, lease_until = now() + interval '1 minute'"
            " WHERE id = %s",
            (sid,),
        )
    with pytest.raises(SessionBusy, match="someone"):
        await call(rpc, "session.append", {"session": sid, "body": "x"})


async def test_subscribe_replays_then_streams(rpc: RpcConnection, kernel: Any) -> None:
    sid = await make_session(rpc)
    for i in range(3):
        await call(rpc, "session.append", {"session": sid, "body": i})
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with open_connection(
        kernel.paths.kernel_sock, on_notification=lambda n: got.put_nowait(n.params)
    ) as sub:
        res = await sub.call("history.subscribe", {"session": sid, "after_seq": 1})
        COVERED.add("history.subscribe")
        assert res["last_seq"] == 3
        await call(rpc, "session.append", {"session": sid, "body": 3})
        seqs = [(await asyncio.wait_for(got.get(), 5))["fact"]["seq"] for _ in range(3)]
        assert seqs == [2, 3, 4]
        await sub.call("history.unsubscribe", {"subscription": res["subscription"]})
        COVERED.add("history.unsubscribe")
        with pytest.raises(NotFound):
            await sub.call("history.unsubscribe", {"subscription": res["subscription"]})


async def test_content_put_read_search(rpc: RpcConnection) -> None:
    sid = await make_session(rpc)
    text = "".join(f"line {i} {'ERROR' if i % 10 == 0 else 'ok'}\n" for i in range(1, 101))
    put = await call(rpc, "content.put", {"content": text, "session": sid})
    assert put["size"] == len(text.encode()) and put["line_count"] == 100 and len(put["content_id"]) == 64
    again = await call(rpc, "content.put", {"content": text, "session": sid})
    assert again["content_id"] == put["content_id"]

    r = await call(rpc, "content.read", {"content_id": put["content_id"], "offset": 10, "limit": 3})
    assert r["text"] == "line 11 ok\nline 12 ok\nline 13 ok\n"
    assert (r["total_lines"], r["lines"], r["more"]) == (100, 3, True)
    tail = await call(rpc, "content.read", {"content_id": put["content_id"], "offset": 98, "limit": 10})
    assert tail["lines"] == 2 and tail["more"] is False

    s = await call(
        rpc, "content.search", {"content_id": put["content_id"], "pattern": r"error", "ignore_case": True}
    )
    assert [m["line"] for m in s["matches"]] == list(range(10, 101, 10))
    assert s["matches"][0]["text"] == "line 10 ERROR"
    few = await call(rpc, "content.search", {"content_id": put["content_id"], "pattern": "ERROR", "limit": 2})
    assert len(few["matches"]) == 2 and few["truncated"] is True
    with pytest.raises(InvalidParams, match="invalid regular expression"):
        await call(rpc, "content.search", {"content_id": put["content_id"], "pattern": "("})

    # Content is scoped to its owner agent.
    await call(rpc, "agent.create", {"name": "mallory"})
    with pytest.raises(NotFound):
        await call(rpc, "content.read", {"content_id": put["content_id"], "agent": "mallory"})
    assert (await call(rpc, "content.read", {"content_id": put["content_id"], "agent": "alice"}))[
        "lines"
    ] == 100
    with pytest.raises(InvalidParams, match="owner"):
        await call(rpc, "content.put", {"content": "x"})


async def test_log_list_records_commands_not_queries(rpc: RpcConnection) -> None:
    await call(rpc, "agent.create", {"name": "alice"})
    await call(rpc, "agent.list")
    with pytest.raises(Conflict):
        await call(rpc, "agent.create", {"name": "alice"})
    res = await call(rpc, "log.list", {"op": "agent.*"})
    ops = [(e["op"], e["outcome"]) for e in res["entries"]]
    assert ops == [("agent.create", "ok"), ("agent.create", "error")]
    first = res["entries"][0]
    assert first["actor"].startswith("admin:uid")
    assert first["args"] == {"name": "alice"}
    assert first["result"]["name"] == "alice"
    assert first["duration_ms"] >= 0
    assert res["entries"][1]["error"]["type"] == "conflict"
    only_errors = await call(rpc, "log.list", {"outcome": "error"})
    assert [e["op"] for e in only_errors["entries"]] == ["agent.create"]


async def test_runtime_log_redacts_secrets(rpc: RpcConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    from aos import redact

    canary = "sk-canary-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    redact.refresh_secret_values()
    try:
        await call(
            rpc,
            "agent.create",
            {"name": "alice", "instructions": f"use {canary}", "settings": {"api_key": "x1"}},
        )
        entry = (await call(rpc, "log.list", {"op": "agent.create"}))["entries"][0]
        assert canary not in str(entry) and "x1" not in str(entry)
        assert entry["args"]["settings"]["api_key"] == "***"
        assert entry["args"]["instructions"] == "use ***"
        # History never stores the secret either, but keeps its keys.
        sid = (await call(rpc, "session.create", {"agent": "alice"}))["id"]
        body = {"text": f"my key is {canary}", "prompt_tokens": 12, "api_key": "not-a-known-secret"}
        await call(rpc, "session.append", {"session": sid, "body": body, "meta": {"k": canary}})
        fact = (await call(rpc, "history.list", {"session": sid}))["facts"][0]
        assert fact["body"] == {"text": "my key is ***", "prompt_tokens": 12, "api_key": "not-a-known-secret"}
        assert fact["meta"] == {"k": "***"}
    finally:
        monkeypatch.delenv("OPENAI_API_KEY")
        redact.refresh_secret_values()
