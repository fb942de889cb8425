"""aos-frontend, the web UI: sign-in, Host/Origin checks, the API and the live stream, over real
HTTP to the skill's real service (a subprocess of an in-process kernel)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aos.skills.supervisor import State
from aos_sdk.connection import RpcConnection, open_connection
from aos_sdk.testing import ScriptedModel

pytestmark = pytest.mark.parametrize("kernel", [{"enable": ["aos-frontend"]}], indirect=True)


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def home(model: ScriptedModel) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aos-home-"))
    write_config(d, model, 0)  # any free port: the service says which in run/ui.json
    yield d
    shutil.rmtree(d, ignore_errors=True)


def hold_commands(kernel: Any, reason: str = "a person decides") -> None:
    """A guard (in the kernel's hook bus) that sends every command to a person."""
    from aos.kernel.hooks import HookHandler

    async def hold(_: dict[str, Any], out: dict[str, Any]) -> Any:
        return {"verdict": "ask", "reason": reason}

    kernel.kernel.hooks.register(HookHandler("tool.before", "test-guard", hold))


def write_config(home: Path, model: ScriptedModel, port: int) -> None:
    """The test home's aoscb.json: aos-frontend on ``port`` (0: any), the scripted model."""
    config = {
        "skills": {"disabled": ["aos-guard", "aos-skill", "aos-a2a"]},
        "ui": {"port": port},
        "model": "openai/scripted",
        "model_params": {"api_base": model.url, "api_key": "test-key"},
    }
    (home / "aoscb.json").write_text(json.dumps(config))


async def link(kernel: Any, old: str | None = None) -> dict[str, Any]:
    """What run/ui.json says once the UI serves (and, with ``old``, once its link changed)."""
    from watchfiles import awatch

    runner = kernel.kernel.services.runners["aos-frontend"]
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 30)
    path = kernel.paths.run / "ui.json"

    def current() -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if data.get("link") != old else None

    async def written() -> dict[str, Any]:
        # The service writes the file after binding its port: watch the folder, then read again.
        async for _ in awatch(path.parent, debounce=10, step=10):
            if (data := current()) is not None:
                return data
        raise AssertionError("unreachable")

    now = current()
    return now if now is not None else await asyncio.wait_for(written(), 30)


async def next_fact(
    client: httpx.AsyncClient, sid: str, kind: str, where: Any = None, after: int = 0
) -> dict[str, Any]:
    """The first fact of ``kind`` (matching ``where``) after seq ``after``, as the page's stream
    delivers it: the stream replays from ``after``, so a fact written before the call is found."""
    async with client.stream("GET", f"/api/stream/{sid}?after={after}") as resp:
        event: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line:
                key, _, value = line.partition(": ")
                event[key] = value
                continue
            if event.get("event") == "fact":
                fact: dict[str, Any] = json.loads(event["data"])
                if fact["kind"] == kind and (where is None or where(fact)):
                    return fact
            event = {}
    raise AssertionError(f"the stream of {sid} ended before a {kind} fact")


async def ui_session(client: httpx.AsyncClient, name: str, **fields: Any) -> tuple[dict[str, Any], str]:
    """An agent made through the page's API, and a new session of it."""
    agent = (await client.post("/api/agents", json={"name": name, **fields})).json()
    sid = (await client.post("/api/sessions", json={"agent": agent["id"]})).json()["id"]
    return agent, str(sid)


@pytest.fixture
async def ui(kernel: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A signed-in client and the UI's origin."""
    data = await link(kernel)
    origin = data["url"].rstrip("/")
    async with httpx.AsyncClient(base_url=origin, headers={"Origin": origin}, timeout=30) as client:
        r = await client.get(data["link"].removeprefix(origin))
        assert r.status_code == 303 and "aos_ui" in client.cookies
        yield client, origin


async def test_the_sign_in_link_works_once_for_a_strict_cookie(kernel: Any) -> None:
    data = await link(kernel)
    origin = data["url"].rstrip("/")
    path = data["link"].removeprefix(origin)
    async with httpx.AsyncClient(base_url=origin, timeout=30) as anon:
        r = await anon.get("/api/agents")
        assert r.status_code == 401 and "aos ui" in r.json()["error"]
        r = await anon.get("/")
        assert r.status_code == 401 and "aos ui" in r.text
        r = await anon.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "aos_ui=" in cookie
        assert (await anon.get("/api/agents")).json() == {"agents": []}
        page = await anon.get("/")
        assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    async with httpx.AsyncClient(base_url=origin, timeout=30) as other:
        r = await other.get(path)  # the same link again: used up
        assert r.status_code == 401 and "used already" in r.text
        assert (await other.get("/api/agents")).status_code == 401
    fresh = await link(kernel)
    assert fresh["link"] != data["link"], "a used link is replaced by a new one for `aos ui`"


async def test_requests_from_anywhere_else_are_refused(
    kernel: Any, ui: tuple[httpx.AsyncClient, str]
) -> None:
    client, origin = ui
    port = origin.rsplit(":", 1)[1]
    # DNS rebinding: another name for 127.0.0.1 in the Host header.
    r = await client.get("/api/agents", headers={"Host": f"evil.example:{port}"})
    assert r.status_code == 421
    # A page of another origin (the browser sends the cookie only same-site, but check anyway).
    r = await client.post("/api/agents", json={"name": "mallory"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "evil.example" in r.text
    r = await client.post("/api/agents", json={"name": "mallory"}, headers={"Origin": ""})
    assert r.status_code == 403
    bare = httpx.AsyncClient(base_url=origin, cookies=client.cookies, timeout=30)
    async with bare:
        r = await bare.post("/api/agents", json={"name": "mallory"})  # no Origin at all
        assert r.status_code == 403 and "Origin" in r.text
        r = await bare.get("/api/stream/se_x", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
    assert (await client.get("/api/agents")).json() == {"agents": []}, "nothing was created"
    # Every answer carries the policy: scripts from the page's own files only, no framing.
    for r in (await client.get("/"), await client.get("/static/app.js"), await client.get("/api/agents")):
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"


async def read_events(resp: httpx.Response, until: str, seen: list[dict[str, Any]]) -> None:
    """Collect ``fact`` events from an open stream until one of kind ``until``."""
    event: dict[str, str] = {}
    async for line in resp.aiter_lines():
        if line:
            key, _, value = line.partition(": ")
            event[key] = value
            continue
        if event.get("event") == "fact":
            fact = json.loads(event["data"])
            assert int(event["id"]) == fact["seq"]
            seen.append(fact)
            if fact["kind"] == until:
                return
        event = {}


async def test_a_chat_streams_every_fact_once_across_a_reconnect(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = ui
    model.add({"bash": "echo '<script>alert(1)</script>'"}, {"text": "done"})
    _agent, sid = await ui_session(client, "ada", instructions="Be brief.")
    seen: list[dict[str, Any]] = []
    async with client.stream("GET", f"/api/stream/{sid}?after=0") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        r = await client.post(f"/api/sessions/{sid}/messages", json={"text": "say hi"})
        assert r.status_code == 200, r.text
        await read_events(resp, "tool.result", seen)
    # The stream dropped mid-reply; the browser comes back with the last id it saw.
    async with client.stream(
        "GET", f"/api/stream/{sid}", headers={"Last-Event-ID": str(seen[-1]["seq"])}
    ) as resp:
        await read_events(resp, "dispatch.end", seen)
    seqs = [f["seq"] for f in seen]
    assert seqs == list(range(1, len(seqs) + 1)), "every fact exactly once, in order"
    kinds = [f["kind"] for f in seen]
    assert kinds == ["message", "message", "tool.started", "tool.result", "message", "dispatch.end"]
    assert seen[3]["body"]["output"] == "<script>alert(1)</script>\n"  # data, for the page to show as text
    tail = (await client.get(f"/api/sessions/{sid}/facts?tail=2")).json()["facts"]
    assert [f["seq"] for f in tail] == [5, 6]
    older = (await client.get(f"/api/sessions/{sid}/facts?before=5&limit=2")).json()["facts"]
    assert [f["seq"] for f in older] == [3, 4]


async def test_a_person_answers_an_approval_from_the_page(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = ui
    hold_commands(kernel)
    model.add({"bash": "echo approved-and-ran"}, {"text": "done"})
    _agent, sid = await ui_session(client, "bo")
    await client.post(f"/api/sessions/{sid}/messages", json={"text": "go"})
    await asyncio.wait_for(next_fact(client, sid, "approval.requested"), 30)  # its row comes first
    pending = (await client.get("/api/approvals")).json()["approvals"]
    assert len(pending) == 1 and pending[0]["command"] == "echo approved-and-ran"
    overview = {a["name"]: a for a in (await client.get("/api/overview")).json()["agents"]}
    assert overview["bo"]["state"] == "waiting" and overview["bo"]["command"] == "echo approved-and-ran"
    r = await client.post(f"/api/approvals/{pending[0]['id']}", json={"decision": "approve", "note": "ok"})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    again = await client.post(f"/api/approvals/{pending[0]['id']}", json={"decision": "deny"})
    assert again.status_code == 409, "the first answer wins"
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await client.get(f"/api/sessions/{sid}/facts?tail=20")).json()["facts"]
    assert [f["body"]["output"] for f in facts if f["kind"] == "tool.result"] == ["approved-and-ran\n"]
    assert facts[-1]["body"]["status"] == "done"


async def test_mission_control_shows_who_works_on_what_and_their_messages(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = ui
    workspace = kernel.paths.workspaces / "ada"  # where ada's sandboxed command can see it
    workspace.mkdir(parents=True)
    fifo = workspace / "go.fifo"
    os.mkfifo(fifo)
    ada = (await client.post("/api/agents", json={"name": "ada"})).json()
    bo = (await client.post("/api/agents", json={"name": "bo"})).json()
    busy = (await client.post("/api/sessions", json={"agent": ada["id"]})).json()["id"]
    quiet = (await client.post("/api/sessions", json={"agent": bo["id"]})).json()["id"]
    model.add({"bash": f"cat {fifo}"}, {"text": "done"})
    await client.post(f"/api/sessions/{busy}/messages", json={"text": "wait for it"})
    message = {"id": "m1", "from": "bo", "to": ["ada"], "text": "<b>hi</b> ada", "mode": "notify"}
    await rpc.call("session.append", {"session": quiet, "kind": "a2a.sent", "body": message})
    await asyncio.wait_for(next_fact(client, busy, "tool.started"), 30)  # the command runs now
    seen = (await client.get("/api/overview")).json()
    by_name = {a["name"]: a for a in seen["agents"]}
    assert by_name["ada"]["state"] == "working" and by_name["ada"]["command"] == f"cat {fifo}"
    assert by_name["ada"]["session"] == busy and by_name["ada"]["calls_today"] == 1
    assert by_name["bo"]["state"] == "idle" and by_name["bo"]["command"] is None
    assert seen["messages"][0] | {"at": None} == {
        "at": None,
        "from": "bo",
        "to": ["ada"],
        "text": "<b>hi</b> ada",
        "mode": "notify",
    }
    await asyncio.to_thread(fifo.write_text, "go\n")  # let the command finish
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(busy), 30)
    after = {a["name"]: a for a in (await client.get("/api/overview")).json()["agents"]}
    assert after["ada"]["state"] == "idle" and after["ada"]["calls_today"] == 2
    # A schedule's warning shows too (as aos-schedule writes it, in the schedule's log session).
    log = await rpc.call("session.create", {"agent": "ada", "settings": {"aos_schedule_log": "sch_1"}})
    alert = {
        "schedule": "sch_1",
        "agent": "ada",
        "level": "warn",
        "summary": "disk at 91%",
        "at": "2026-03-02T10:00:00+00:00",
    }
    await rpc.call("session.append", {"session": log["id"], "kind": "schedule.alert", "body": alert})
    assert (await client.get("/api/overview")).json()["alerts"] == [{**alert, "woke": None}]


async def test_agents_skills_usage_and_the_log_through_the_api(
    kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = ui
    model.add({"text": "hi"})
    ada = (await client.post("/api/agents", json={"name": "ada"})).json()
    r = await client.patch(
        f"/api/agents/{ada['id']}", json={"instructions": "Be terse.", "revision": ada["revision"]}
    )
    assert r.status_code == 200 and r.json()["instructions"] == "Be terse."
    stale = await client.patch(
        f"/api/agents/{ada['id']}", json={"instructions": "x", "revision": ada["revision"]}
    )
    assert stale.status_code == 409, "an edit made from an old copy is refused"
    skills = {s["name"]: s for s in (await client.get(f"/api/skills?agent={ada['id']}")).json()["skills"]}
    assert (
        skills["aos-context"]["enabled"] is True
        and skills["aos-frontend"]["service_status"]["state"] == "running"
    )
    r = await client.post("/api/skills/aos-context", json={"agent": ada["id"], "enabled": False})
    assert r.status_code == 200
    skills = {s["name"]: s for s in (await client.get(f"/api/skills?agent={ada['id']}")).json()["skills"]}
    assert skills["aos-context"]["enabled"] is False
    await client.post("/api/skills/aos-context", json={"agent": ada["id"], "enabled": True})
    text = (await client.get("/api/skills/aos-frontend")).json()["body"]
    assert "This skill serves the AOS web UI" in text
    sid = (await client.post("/api/sessions", json={"agent": ada["id"]})).json()["id"]
    await client.post(f"/api/sessions/{sid}/messages", json={"text": "hello"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    usage = (await client.get("/api/usage?group_by=agent")).json()
    assert [(r["key"], r["calls"]) for r in usage["rows"]] == [("ada", 1)]
    log = (await client.get("/api/log?op=agent.*")).json()["entries"]
    assert {e["op"] for e in log} >= {"agent.create", "agent.update"}
    archived = await client.post(f"/api/agents/{ada['id']}/archive")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert (await client.get("/api/agents")).json() == {"agents": []}


async def test_pages_hear_of_approvals_and_ended_dispatches_as_they_happen(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = ui
    hold_commands(kernel)
    model.add({"bash": "echo ok"}, {"text": "done"})
    _agent, sid = await ui_session(client, "cy")
    seen: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("GET", "/api/events") as resp:
        await client.post(f"/api/sessions/{sid}/messages", json={"text": "go"})
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("approval", "dispatch"):
                data = json.loads(line.removeprefix("data: "))
                seen.append((event, data))
                if event == "approval" and "decision" not in data:
                    # Answered elsewhere (the CLI, another page): this page hears of it too.
                    await rpc.call(
                        "approval.resolve", {"approval": data["approval_id"], "decision": "approve"}
                    )
                if event == "dispatch":
                    break
    assert [e for e, _ in seen] == ["approval", "approval", "dispatch"]
    assert seen[0][1]["session_id"] == sid and seen[1][1]["decision"] == "approved"
    assert seen[2][1]["status"] == "done"


async def test_the_ui_skill_is_not_in_agents_catalogs(
    kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    """aos-frontend serves people: `aos-catalog: hidden` keeps it out of every system prompt."""
    client, _ = ui
    model.add({"text": "hi"})
    agent, sid = await ui_session(client, "dee")
    await client.post(f"/api/sessions/{sid}/messages", json={"text": "what skills do you have?"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    prompt = json.dumps(model.requests[0]["messages"])
    assert "aos-context" in prompt and "aos-frontend" not in prompt
    skills = {s["name"]: s for s in (await client.get(f"/api/skills?agent={agent['id']}")).json()["skills"]}
    assert skills["aos-frontend"]["enabled"] is True, "hidden from agents, still on"


async def test_fork_and_whole_outputs_through_the_api(
    kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = ui
    model.add({"bash": "seq 1 20000"}, {"text": "counted"})
    agent, sid = await ui_session(client, "eve")
    await client.post(f"/api/sessions/{sid}/messages", json={"text": "count"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await client.get(f"/api/sessions/{sid}/facts?tail=20")).json()["facts"]
    result = next(f["body"] for f in facts if f["kind"] == "tool.result")
    assert result["content_id"] and "\n10000\n" not in result["output"]
    whole = (await client.get(f"/api/content/{result['content_id']}?agent={agent['id']}")).json()
    assert whole["text"] == "".join(f"{i}\n" for i in range(1, 20001)) and whole["more"] is False
    other = (await client.post("/api/agents", json={"name": "mal"})).json()
    r = await client.get(f"/api/content/{result['content_id']}?agent={other['id']}")
    assert r.status_code == 404, "content is scoped to its agent"
    fork = (await client.post(f"/api/sessions/{sid}/fork", json={"at_seq": 2})).json()
    copied = (await client.get(f"/api/sessions/{fork['id']}/facts?tail=20")).json()["facts"]
    assert [f["seq"] for f in copied] == [1, 2] and fork["parent_id"] == sid


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap: apt-get install bubblewrap")
async def test_an_agent_cannot_sign_in_to_the_ui_or_answer_its_own_approval(
    kernel: Any, model: ScriptedModel, ui: tuple[httpx.AsyncClient, str]
) -> None:
    """The agent's bash shares the network (127.0.0.1) with the UI: it can knock, and gets nothing.
    It cannot read the sign-in link or the cookie secret, and without them every API call, every
    token guess and the approval it waits on are refused."""
    client, origin = ui
    hold_commands(kernel)
    home = kernel.paths.home
    probe = f"""
for f in {home}/run/ui.json {home}/ui.secret /run/aos/ui.json; do cat "$f" 2>&1 | head -c 200; echo; done
python3 - <<'PY'
import json, urllib.request, urllib.error
def ask(path, method="GET", body=None):
    req = urllib.request.Request("{origin}" + path, method=method, data=body,
        headers={{"Origin": "{origin}", "Content-Type": "application/json"}})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        e.close()
        return e.code
print("agents", ask("/api/agents"))
print("guess", ask("/?token=guess"))
for a in ["pending"]:
    print("approve", ask("/api/approvals/ap_x", "POST", json.dumps({{"decision": "approve"}}).encode()))
print("events", ask("/api/events"))
PY
"""
    model.add({"bash": "echo first"}, {"bash": probe}, {"text": "done"})
    _agent, sid = await ui_session(client, "eve")
    await client.post(f"/api/sessions/{sid}/messages", json={"text": "go"})
    # The first command waits for a person; the person approves it, and the probe runs next.
    for command in ("echo first", probe):
        asked = await asyncio.wait_for(
            next_fact(client, sid, "approval.requested", lambda f, c=command: f["body"]["command"] == c), 30
        )
        await client.post(f"/api/approvals/{asked['body']['approval_id']}", json={"decision": "approve"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 60)
    facts = (await client.get(f"/api/sessions/{sid}/facts?tail=50")).json()["facts"]
    out = [f["body"]["output"] for f in facts if f["kind"] == "tool.result"][-1]
    link = json.loads((home / "run" / "ui.json").read_text())["link"]
    assert link.split("token=")[1] not in out and "link" not in out, out
    assert out.count("No such file or directory") == 3, out
    assert "agents 401" in out and "guess 401" in out and "approve 401" in out and "events 401" in out, out


async def test_a_taken_port_is_shown_by_aos_skills_and_cleared_once_the_ui_serves(kernel: Any) -> None:
    """The UI cannot bind its port: the service keeps running (its hooks still serve) and says
    why through ``service.report``; ``aos skills`` shows it until a restart binds a free port."""
    import socket

    from aos.cli.skills import service_cell

    runner = kernel.kernel.services.runners["aos-frontend"]
    await link(kernel)
    with socket.socket() as other:  # another program holds the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        # As if the daemon had started with this port in aoscb.json (it reads the file at start).
        kernel.kernel.config.data["ui"] = {"port": taken}
        assert runner.proc is not None
        runner.proc.kill()  # it restarts and asks for the port again
        await asyncio.wait_for(runner.wait_for(lambda: runner.problem is not None), 60)
        async with open_connection(kernel.paths.kernel_sock) as c:
            sk = await c.call("skill.get", {"skill": "aos-frontend"})
        st = sk["service_status"]
        assert st["state"] == "running"
        assert f"port {taken} on 127.0.0.1 is taken by another program" in st["problem"]
        cell = service_cell(sk)
        assert cell.startswith("running") and f"PROBLEM: the web UI is off: port {taken}" in cell
        assert "taken" in json.loads((kernel.paths.run / "ui.json").read_text())["error"]
    kernel.kernel.config.data["ui"] = {"port": 0}
    runner.proc.kill()
    await asyncio.wait_for(runner.wait_for(lambda: runner.problem is None and runner.conn is not None), 60)
    assert (await link(kernel))["url"].startswith("http://127.0.0.1:")
