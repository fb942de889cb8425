"""aos-a2a: agent-to-agent messages, channels and typed messages, all kept in session history.

- A message is a fact in the recipient's newest session (``a2a.message``), written as an inbound
  fact so it lands even while the recipient is working, and a receipt in the sender's session
  (``a2a.sent``). ``--silent`` messages are recorded only; ``--notify`` ones carry a ``notice``
  that aos-context shows at the recipient's next step; ``--wake`` starts a dispatch of the
  recipient now, its message as the input, and when that dispatch ends its answer is appended to
  the sender's session (``a2a.reply``).
- A wake to a busy agent is queued by the kernel (``session.dispatch`` with ``if_busy: queue``
  and the message's id as ``request_id``): a durable row started once, when its run ends,
  whichever kernel ends it, and never twice however often the wake is sent or recovered.
- A wake started by a dispatch that was itself woken counts one more hop; past ``max_hops`` the
  send is refused, so two agents cannot wake each other forever.
- Channels are sessions of the ``a2a-channels`` agent (never dispatched), one per channel, posts
  being ``a2a.post`` facts.
- Typed messages: JSON Schemas in this skill's ``schemas/`` and ``$AOS_HOME/a2a/schemas/``
  (``<type>.json``; ``"x-aos-routes": [agents]`` names default recipients).

Everything lives in PostgreSQL through history: a daemon restart loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema

from aos_sdk import define_service
from aos_sdk.errors import AosError, Conflict, InvalidParams, NotFound

SKILL = "aos-a2a"
CHANNELS = "a2a-channels"
HERE = Path(__file__).resolve().parent
MODES = ("silent", "notify", "wake")

_settings: dict[str, Any] | None = None
_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}


def kernel() -> Any:
    assert service.kernel is not None
    return service.kernel


async def settings() -> dict[str, Any]:
    global _settings
    if _settings is None:
        try:
            cfg = (await kernel().call("system.config", {}))["config"]
            _settings = {"max_hops": 4, "wait_s": 110, **(cfg.get("a2a") or {})}
        except AosError:
            return {"max_hops": 4, "wait_s": 110}
    return _settings


def schema_dirs() -> list[Path]:
    home = Path(os.environ.get("AOS_HOME", "~/.aos")).expanduser()
    return [HERE / "schemas", home / "a2a" / "schemas"]


def schemas() -> dict[str, dict[str, Any]]:
    """Every registered schema by type name (later folders override earlier ones)."""
    found: dict[str, dict[str, Any]] = {}
    for folder in schema_dirs():
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                doc = json.loads(path.read_text())
                jsonschema.Draft202012Validator.check_schema(doc)
            except (ValueError, jsonschema.SchemaError):
                continue  # `a2a schema list` reports broken files
            found[path.stem] = {**doc, "x-aos-file": str(path)}
    return found


def schema_problems() -> list[str]:
    problems = []
    for folder in schema_dirs():
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))
            except ValueError as exc:
                problems.append(f"{path}: not JSON ({exc})")
            except jsonschema.SchemaError as exc:
                problems.append(f"{path}: not a valid JSON Schema ({exc.message})")
    return problems


def validate(type_name: str, data: Any) -> dict[str, Any]:
    known = schemas()
    schema = known.get(type_name)
    if schema is None:
        names = ", ".join(sorted(known)) or "none"
        raise NotFound(
            f"no message type {type_name!r} (registered types: {names}; add one with: a2a schema add)"
        )
    body = {k: v for k, v in schema.items() if k != "x-aos-file"}
    errors = sorted(
        jsonschema.Draft202012Validator(body).iter_errors(data), key=lambda e: list(e.absolute_path)
    )
    if errors:
        lines = [
            f"- {'/'.join(str(p) for p in e.absolute_path) or '(the message)'}: {e.message}"
            for e in errors[:10]
        ]
        raise InvalidParams(f"the data is not a valid {type_name} message:\n" + "\n".join(lines))
    return schema


# -- agents and sessions ---------------------------------------------------------------------------


async def agent_named(name: str) -> dict[str, Any]:
    try:
        agent = dict(await kernel().call("agent.get", {"agent": name}))
    except NotFound:
        names = [
            a["name"] for a in (await kernel().call("agent.list", {}))["agents"] if a["name"] != CHANNELS
        ]
        raise NotFound(
            f"no agent named {name!r} (agents: {', '.join(sorted(names)) or 'none'}; see: a2a who)"
        ) from None
    if agent["status"] != "active" or agent["name"] == CHANNELS:
        raise NotFound(f"agent {name!r} is archived and takes no messages")
    return agent


async def inbox_session(agent: dict[str, Any]) -> str:
    """The recipient's newest active session, or a new one for its messages."""
    got = await kernel().call("session.list", {"agent": agent["id"], "limit": 1})
    if got["sessions"]:
        return str(got["sessions"][0]["id"])
    return str((await kernel().call("session.create", {"agent": agent["id"], "title": "a2a"}))["id"])


async def hops_of(caller: dict[str, Any]) -> tuple[int, str | None, str]:
    """How many wakes led to the caller's dispatch, who started the chain, and who pays for it
    (the agent whose dispatch was not paid by another: the chain's initiator)."""
    dispatch_id = caller.get("dispatch_id")
    if not dispatch_id:
        return 0, None, str(caller["agent_id"])
    d = await kernel().call("dispatch.get", {"dispatch": dispatch_id})
    if not d.get("input_seq"):
        return 0, None, str(caller["agent_id"])
    fact = await kernel().call("history.get", {"session": d["session_id"], "seq": d["input_seq"]})
    meta = fact.get("meta") or {}
    a2a = meta.get("a2a") or {}
    return int(a2a.get("hops") or 0), a2a.get("origin"), str(meta.get("payer") or caller["agent_id"])


async def append(session: str, kind: str, body: dict[str, Any], key: str) -> int:
    res = await kernel().call(
        "session.append",
        {"session": session, "kind": kind, "body": body, "inbound": True, "idempotency_key": key},
    )
    return int(res["seq"])


def wake_text(msg: dict[str, Any]) -> str:
    head = f"Message {msg['id']} from {msg['from']} (a2a, woken: your final answer is sent back to {msg['from']})"
    return head + ":\n\n" + _content(msg)


def _content(msg: dict[str, Any]) -> str:
    text = msg.get("text") or ""
    if msg.get("type"):
        text = (
            text + "\n\n" if text else ""
        ) + f"type: {msg['type']}\ndata: {json.dumps(msg['data'], ensure_ascii=False)}"
    return text


def notice(msg: dict[str, Any]) -> str:
    return (
        f"[a2a message {msg['id']} from {msg['from']}]\n{_content(msg)}\n"
        f'(reply with: a2a send --to {msg["from"]} "...")'
    )


async def pending_wakes(session: str) -> list[dict[str, Any]]:
    """Wakes queued by an older aos-a2a (``a2a.message`` facts marked ``queued``, kept by this
    service) whose run has not started (no input message carries their id)."""
    queued = [
        f
        for f in (
            await kernel().call(
                "history.list", {"session": session, "limit": 10000, "kinds": ["a2a.message"]}
            )
        )["facts"]
        if f["body"].get("queued")
    ]
    if not queued:
        return []
    started: set[str] = set()
    after = queued[0]["seq"]
    while True:
        page = await kernel().call(
            "history.list", {"session": session, "after_seq": after, "limit": 10000, "kinds": ["message"]}
        )
        started.update(str(((f.get("meta") or {}).get("a2a") or {}).get("id")) for f in page["facts"])
        if page.get("next_after") is None:
            break
        after = page["next_after"]
    return [
        {k: v for k, v in f["body"].items() if k != "queued"}
        for f in queued
        if f["body"]["id"] not in started
    ]


async def wait_reply(
    fut: asyncio.Future[dict[str, Any]], session: str, msg_id: str, timeout: float
) -> dict[str, Any]:
    """The reply to a wake: handed over by this service's ``dispatch.after`` when the woken run
    ended on this kernel, or read from the sender's session (its ``a2a.reply`` fact) when it ran
    on another kernel, whose aos-a2a wrote it there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    after = 0  # replies already looked at (each poll reads only newer ones)
    while True:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), min(0.5, max(0.0, deadline - loop.time())))
        except TimeoutError:
            params = {"session": session, "after_seq": after, "limit": 1000, "kinds": ["a2a.reply"]}
            for f in (await kernel().call("history.list", params))["facts"]:
                after = max(after, int(f["seq"]))
                if str((f.get("body") or {}).get("id")) == msg_id:
                    return {k: v for k, v in f["body"].items() if k != "notice"}
            if loop.time() >= deadline:
                raise


async def start_wake(session: str, msg: dict[str, Any]) -> dict[str, Any]:
    meta = {"a2a": {k: msg[k] for k in ("id", "from", "from_session", "hops", "origin") if k in msg}}
    params = {
        "session": session,
        "message": wake_text(msg),
        "meta": meta,
        "if_busy": "queue",  # busy: the kernel's queue starts it when the run ends
        "request_id": f"a2a:{msg['id']}",  # once, whoever sends or recovers it
    }
    if msg.get("payer"):  # the chain's initiator pays for the run it caused (aos-budget)
        params["payer"] = msg["payer"]
    return dict(await kernel().call("session.dispatch", params))


# -- the service ------------------------------------------------------------------------------------


@define_service
def service() -> dict[str, Any]:
    async def send(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Send a message: --to, --silent/--notify/--wake, --type/--data, --wait."""
        me = await kernel().call("agent.get", {"agent": caller["agent_id"]})
        mode = str(args.get("mode") or "notify")
        if mode not in MODES:
            raise InvalidParams(f"mode must be one of {', '.join(MODES)}")
        text = " ".join(args.get("text") or []).strip()
        type_name, data = args.get("type"), None
        recipients = [r for r in str(args.get("to") or "").replace(",", " ").split() if r]
        if type_name:
            raw = args.get("data")
            if raw is None:
                raise InvalidParams(f"--type {type_name} needs --data '<JSON>'")
            try:
                data = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError as exc:
                raise InvalidParams(f"--data is not JSON: {exc}") from None
            schema = validate(str(type_name), data)
            if not recipients:
                # Routes name who receives the type; a sender on its own route skips itself.
                recipients = [str(r) for r in schema.get("x-aos-routes") or [] if str(r) != me["name"]]
                if not recipients:
                    raise InvalidParams(f"type {type_name} has no routes (x-aos-routes): give --to")
        elif args.get("data") is not None:
            raise InvalidParams("--data needs --type (see: a2a schema list)")
        if not recipients:
            raise InvalidParams("give --to <agent> (see: a2a who)")
        if not text and not type_name:
            raise InvalidParams("the message is empty")
        if me["name"] in recipients:
            raise InvalidParams(f"you are {me['name']}: send to another agent")
        targets = [await agent_named(r) for r in recipients]  # all known before anything is sent
        hops, origin, payer = (0, None, str(caller["agent_id"]))
        if mode == "wake":
            hops, origin, payer = await hops_of(caller)
            limit = int((await settings())["max_hops"])
            if hops + 1 > limit:
                raise Conflict(
                    f"hop limit reached: this would be wake {hops + 1} of a chain started by "
                    f"{origin or me['name']} (at most {limit}); send with --notify instead, or answer"
                )
        receipts = []
        for agent in targets:
            msg: dict[str, Any] = {
                "id": "m_" + uuid.uuid4().hex[:12],
                "from": me["name"],
                "from_session": caller["session_id"],
                "to": agent["name"],
                "mode": mode,
                "text": text,
                "sent_at": datetime.now(UTC).isoformat(),
            }
            if type_name:
                msg.update({"type": type_name, "data": data})
            if mode == "wake":
                msg.update({"hops": hops + 1, "origin": origin or me["name"], "payer": payer})
            session = await inbox_session(agent)
            receipt = {"id": msg["id"], "to": agent["name"], "session": session, "mode": mode}
            if mode == "wake":
                if args.get("wait_s"):
                    _waiters[msg["id"]] = asyncio.get_running_loop().create_future()
                started = await start_wake(session, msg)
                receipt.update(seq=started["seq"], dispatch=started["dispatch_id"], state="woken")
                if started.get("waiting_for"):
                    receipt["state"] = (
                        f"queued: {agent['name']} runs on kernel {started['waiting_for']}, which starts it"
                    )
                elif started["delivery"] == "queued":
                    receipt["state"] = "queued: the agent is busy; it is woken when its current run ends"
                if started["delivery"] == "queued" and not started.get("duplicate"):
                    # In its inbox meanwhile, like any message (the kernel's queue starts it).
                    await append(
                        session,
                        "a2a.message",
                        {**msg, "queued_as": started["dispatch_id"]},
                        f"a2a:{msg['id']}",
                    )
            else:
                body = {**msg, "notice": notice(msg)} if mode == "notify" else msg
                receipt["seq"] = await append(session, "a2a.message", body, f"a2a:{msg['id']}")
                receipt["state"] = "delivered" if mode == "notify" else "recorded"
            await append(
                str(caller["session_id"]), "a2a.sent", {**msg, "receipt": receipt}, f"a2a-sent:{msg['id']}"
            )
            receipts.append(receipt)
        if args.get("wait_s") and mode == "wake":
            timeout = min(float(args["wait_s"]), float((await settings())["wait_s"]), 115.0)
            replies = []
            for r in receipts:
                fut = _waiters.get(r["id"])
                if fut is None:
                    continue
                try:
                    replies.append(await wait_reply(fut, str(caller["session_id"]), str(r["id"]), timeout))
                except TimeoutError:
                    replies.append({"from": r["to"], "text": None, "status": "no reply yet"})
                finally:
                    _waiters.pop(r["id"], None)
            if args.get("as_json"):
                return {"receipts": receipts, "replies": replies}
            return "\n\n".join(
                f"{x['from']} replied:\n{x['text']}"
                if x.get("text") is not None
                else f"{x['from']}: {x.get('status')} (the reply will arrive in your session as an a2a.reply fact)"
                for x in replies
            )
        if args.get("as_json"):
            return receipts
        return "\n".join(f"{r['state']}: message {r['id']} to {r['to']} ({r['mode']})" for r in receipts)

    async def after(input_data: dict[str, Any], _output: Any) -> None:
        """When a woken run ends, send its answer back; then start a wake that was queued."""
        session, input_seq = str(input_data["session_id"]), input_data.get("input_seq")
        meta = input_data.get("input_meta")
        if meta is None and input_seq:  # a run resumed after a restart: read it from history
            meta = (await kernel().call("history.get", {"session": session, "seq": input_seq})).get("meta")
        a2a = (meta or {}).get("a2a")
        if a2a and a2a.get("from_session"):
            agent = await kernel().call("agent.get", {"agent": input_data["agent_id"]})
            status = str(input_data.get("status"))
            reply = input_data.get("reply")
            text = (
                reply if reply else f"({agent['name']}'s run ended with status {status}, without an answer)"
            )
            body = {
                "id": a2a["id"],
                "from": agent["name"],
                "status": status,
                "text": text,
                "session": session,
            }
            # A sender still waiting (--wait) gets the reply as its command's output: the fact is
            # then only the record, without a notice, or its model would see the reply twice.
            # (Nothing is awaited between the check and set_result: a wait that times out meanwhile
            # gets the notice instead.)
            fut = _waiters.get(str(a2a["id"]))
            if fut is not None and not fut.done():
                fut.set_result(body)
                body = {**body, "delivered": "inline"}
            else:
                body["notice"] = f"[a2a reply from {agent['name']} to your message {a2a['id']}]\n{text}"
            await append(str(a2a["from_session"]), "a2a.reply", body, f"a2a-reply:{a2a['id']}")

    async def inbox(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Messages and replies to you, newest first; --all includes ones already shown."""
        me = await kernel().call("agent.get", {"agent": caller["agent_id"]})
        sessions = (await kernel().call("session.list", {"agent": me["id"], "limit": 20}))["sessions"]
        items: list[dict[str, Any]] = []
        read_upto = ""
        for s in sessions:
            page = await kernel().call(
                "history.list",
                {"session": s["id"], "limit": 10000, "kinds": ["a2a.message", "a2a.reply", "a2a.read"]},
            )
            for f in page["facts"]:
                if f["kind"] == "a2a.read":
                    read_upto = max(read_upto, str(f["body"].get("upto", "")))
                else:
                    items.append({**f["body"], "kind": f["kind"], "at": f["created_at"], "session": s["id"]})
        items.sort(key=lambda m: m["at"], reverse=True)
        fresh = [m for m in items if m["at"] > read_upto]
        shown = items if args.get("all") else fresh
        shown = shown[: int(args.get("limit") or 20)]
        if items:
            await append(
                str(caller["session_id"]),
                "a2a.read",
                {"upto": items[0]["at"]},
                f"a2a-read:{uuid.uuid4().hex}",
            )
        if args.get("as_json"):
            return shown
        if not shown:
            return "no new messages" + (" (a2a inbox --all shows older ones)" if items else "")
        out = []
        for m in shown:
            what = "reply" if m["kind"] == "a2a.reply" else m.get("mode", "message")
            out.append(
                f"{m['at'][:19]}  {m['id']}  from {m['from']} ({what})\n  {_content(m).replace(chr(10), chr(10) + '  ')}"
            )
        return "\n".join(out)

    async def who(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Agents, whether they are working, and when they were last active."""
        rows = []
        now = time.time()
        for a in (await kernel().call("agent.list", {}))["agents"]:
            if a["name"] == CHANNELS:
                continue
            sessions = (await kernel().call("session.list", {"agent": a["id"], "limit": 50}))["sessions"]
            phases = {s["phase"] for s in sessions}
            state = (
                "working"
                if "dispatched" in phases
                else "waiting for approval"
                if "waiting_approval" in phases
                else "idle"
            )
            last = max((s["updated_at"] for s in sessions), default=a["updated_at"])
            rows.append(
                {
                    "name": a["name"],
                    "state": state,
                    "last_active": last,
                    "you": a["id"] == caller["agent_id"],
                    "about": (a.get("display_name") or a["instructions"].strip().split("\n")[0])[:80],
                }
            )
        if args.get("as_json"):
            return rows
        lines = []
        for r in rows:
            ago = _ago(now - datetime.fromisoformat(r["last_active"]).timestamp())
            you = " (you)" if r["you"] else ""
            lines.append(
                f"{r['name']}{you}: {r['state']}, last active {ago}"
                + (f" - {r['about']}" if r["about"] else "")
            )
        return "\n".join(lines) or "no agents"

    async def channel(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Channels: create, post, read, list."""
        action, name = args.get("action"), str(args.get("name") or "").lstrip("#")
        me = await kernel().call("agent.get", {"agent": caller["agent_id"]})
        if action == "list":
            rows = await _channels()
            if args.get("as_json"):
                return [{"name": n, "session": s["id"], "posts": s["last_seq"]} for n, s in rows.items()]
            return (
                "\n".join(f"#{n}  ({s['last_seq']} posts)" for n, s in sorted(rows.items()))
                or "no channels yet"
            )
        if not name:
            raise InvalidParams("give a channel name")
        rows = await _channels()
        if action == "create":
            if name in rows:
                raise Conflict(f"channel #{name} already exists")
            await _channel_agent()
            created = await kernel().call(
                "session.create",
                {
                    "agent": CHANNELS,
                    "title": f"#{name}",
                    "settings": {
                        "channel": {"name": name, "about": args.get("about") or "", "created_by": me["name"]}
                    },
                },
            )
            return {"channel": name, "session": created["id"]} if args.get("as_json") else f"created #{name}"
        if name not in rows:
            raise NotFound(
                f"no channel #{name} (channels: {', '.join('#' + n for n in sorted(rows)) or 'none'}; create it with: a2a channel create {name})"
            )
        sid = rows[name]["id"]
        if action == "post":
            text = " ".join(args.get("text") or []).strip()
            if not text:
                raise InvalidParams("the post is empty")
            seq = await append(
                sid, "a2a.post", {"from": me["name"], "text": text}, f"a2a-post:{uuid.uuid4().hex}"
            )
            return {"channel": name, "seq": seq} if args.get("as_json") else f"posted to #{name} (#{seq})"
        if action == "read":
            page = await kernel().call(
                "history.list",
                {
                    "session": sid,
                    "after_seq": int(args.get("after") or 0),
                    "limit": int(args.get("limit") or 50),
                    "kinds": ["a2a.post"],
                },
            )
            posts = [
                {"seq": f["seq"], "from": f["body"]["from"], "text": f["body"]["text"], "at": f["created_at"]}
                for f in page["facts"]
            ]
            if args.get("as_json"):
                return posts
            if not posts:
                return f"#{name} has no posts" + (" after that" if args.get("after") else "")
            return "\n".join(f"[{p['seq']}] {p['at'][:19]} {p['from']}: {p['text']}" for p in posts)
        raise InvalidParams("channel actions: create, post, read, list")

    async def schema(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Message types: list, show, add."""
        action = args.get("action")
        if action == "list":
            known = schemas()
            rows = [
                {"type": n, "routes": s.get("x-aos-routes") or [], "about": s.get("description", "")}
                for n, s in sorted(known.items())
            ]
            if args.get("as_json"):
                return {"types": rows, "problems": schema_problems()}
            lines = [
                f"{r['type']}: {r['about']}"
                + (f" (routes to {', '.join(r['routes'])})" if r["routes"] else "")
                for r in rows
            ]
            lines += [f"! {p}" for p in schema_problems()]
            return "\n".join(lines) or "no message types (add one with: a2a schema add <name> <file.json>)"
        if action == "show":
            known = schemas()
            name = str(args.get("name"))
            if name not in known:
                raise NotFound(f"no message type {name!r} (types: {', '.join(sorted(known)) or 'none'})")
            return {k: v for k, v in known[name].items() if k != "x-aos-file"}
        if action == "add":
            name = str(args.get("name") or "")
            if not name.replace("-", "").replace("_", "").isalnum():
                raise InvalidParams("a type name has letters, digits, - and _")
            raw = args.get("schema")
            try:
                doc = json.loads(raw) if isinstance(raw, str) else raw
                jsonschema.Draft202012Validator.check_schema(doc)
            except ValueError as exc:
                raise InvalidParams(f"the schema is not JSON: {exc}") from None
            except jsonschema.SchemaError as exc:
                raise InvalidParams(f"not a valid JSON Schema: {exc.message}") from None
            if not isinstance(doc, dict):
                raise InvalidParams("a JSON Schema here is a JSON object")
            routes = doc.get("x-aos-routes") or []
            for r in routes:
                await agent_named(str(r))
            folder = schema_dirs()[1]
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.json.tmp"
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
            tmp.replace(folder / f"{name}.json")
            return f"registered message type {name}" + (f" (routes to {', '.join(routes)})" if routes else "")
        raise InvalidParams("schema actions: list, show, add")

    async def recover() -> None:
        """Wakes an older aos-a2a queued in its own memory: into the kernel's queue, once."""
        for a in (await kernel().call("agent.list", {}))["agents"]:
            if a["name"] == CHANNELS:
                continue
            for s in (await kernel().call("session.list", {"agent": a["id"], "limit": 5}))["sessions"]:
                for msg in await pending_wakes(str(s["id"])):
                    started = await start_wake(str(s["id"]), msg)
                    if not started.get("duplicate"):
                        print(f"recovered queued wake {msg['id']} for {a['name']}", flush=True)

    return {
        "hooks": {"dispatch.after": after},
        "commands": {"send": send, "inbox": inbox, "who": who, "channel": channel, "schema": schema},
        "start": recover,
    }


async def _channel_agent() -> None:
    try:
        await kernel().call("agent.get", {"agent": CHANNELS})
    except NotFound:
        try:
            await kernel().call(
                "agent.create",
                {
                    "name": CHANNELS,
                    "display_name": "a2a channels",
                    "instructions": "Holds a2a channels; never dispatched.",
                },
            )
        except Conflict:
            pass  # created by a concurrent call


async def _channels() -> dict[str, dict[str, Any]]:
    try:
        got = await kernel().call("session.list", {"agent": CHANNELS, "limit": 1000})
    except NotFound:
        return {}
    return {str(s["settings"]["channel"]["name"]): s for s in got["sessions"] if "channel" in s["settings"]}


def _ago(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"
