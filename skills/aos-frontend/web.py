"""The web UI's HTTP side: a Starlette app that speaks to the kernel only through syscalls.

Security on localhost (docs/ui.md):

- it listens on 127.0.0.1 only, and answers only requests whose ``Host`` is ``127.0.0.1:<port>``
  or ``localhost:<port>`` (a DNS-rebinding page's requests carry its own host name);
- ``aos ui`` prints a link with a one-time token; opening it trades the token for a random
  session cookie (HttpOnly, SameSite=Strict) and a new token replaces the used one;
- every state-changing request, and the live stream, must come from the page's own ``Origin``;
- a strict Content-Security-Policy: scripts and styles from the page's own files only, no
  inline script, no framing. The page renders every text an agent or a command produced as
  text, never as HTML.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from aos_sdk.connection import open_connection
from aos_sdk.errors import AosError

STATIC = Path(__file__).parent / "static"
COOKIE = "aos_ui"
HEARTBEAT_S = 15.0
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: HTTP status for each kernel error type the API passes on.
STATUS = {
    "not_found": 404,
    "invalid_params": 400,
    "conflict": 409,
    "session_busy": 409,
    "archived": 409,
    "rejected": 403,
    "permission_denied": 403,
    "unavailable": 503,
}

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Hub:
    """Kernel events (approvals asked and answered, dispatches ended) fanned out to every open
    page's ``/api/events`` stream."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()

    def publish(self, event: str, data: dict[str, Any]) -> None:
        for q in self._queues:
            if q.full():  # a page that stopped reading: it refreshes everything when it reconnects
                q.get_nowait()
            q.put_nowait((event, data))

    def listen(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        q: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=1000)
        self._queues.add(q)
        return q

    def leave(self, q: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self._queues.discard(q)


class Auth:
    """The one-time sign-in link, and the cookies it gives.

    A cookie is ``<issued>.<nonce>.<mac>``, signed with a secret kept in ``$AOS_HOME`` (private
    to the daemon's user), so a signed-in page stays signed in when the service or the daemon
    restarts, for ``MAX_AGE_S``. Deleting the secret file signs every browser out.
    """

    MAX_AGE_S = 30 * 24 * 3600

    def __init__(self, secret: bytes, on_token: Callable[[str], None]) -> None:
        self._secret = secret
        self._on_token = on_token
        self.token = ""
        self.rotate()

    def rotate(self) -> None:
        self.token = secrets.token_urlsafe(24)
        self._on_token(self.token)

    def _mac(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), "sha256").hexdigest()

    def exchange(self, token: str) -> str | None:
        """A cookie for a valid token (which is then replaced by a new one), else None."""
        if not token or not hmac.compare_digest(token, self.token):
            return None
        self.rotate()
        payload = f"{int(time.time())}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac(payload)}"

    def valid(self, cookie: str | None) -> bool:
        issued, _, rest = (cookie or "").partition(".")
        nonce, _, mac = rest.partition(".")
        if not (issued.isdigit() and nonce and mac):
            return False
        if not hmac.compare_digest(mac, self._mac(f"{issued}.{nonce}")):
            return False
        return 0 <= time.time() - int(issued) < self.MAX_AGE_S


def load_secret(path: Path) -> bytes:
    """The cookie-signing secret in ``path``, made (private) the first time."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return data


class Guard:
    """ASGI middleware: Host allowlist, Origin check, security headers."""

    def __init__(self, app: ASGIApp, ui: UI) -> None:
        self.app = app
        self.ui = ui

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.ui.refusal(scope["method"], scope["path"], headers)
        if refusal is not None:
            await _with_headers(PlainTextResponse(refusal[1], status_code=refusal[0]))(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                raw += [(k.encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def _with_headers(resp: Response) -> Response:
    for k, v in _SECURITY_HEADERS.items():
        resp.headers[k] = v
    return resp


class UI:
    """The app and what it needs: the kernel connection, the socket to open streams on."""

    def __init__(self, call: Call, socket_path: str, port: int, auth: Auth, hub: Hub | None = None) -> None:
        self.call = call
        self.socket_path = socket_path
        self.port = port
        self.auth = auth
        self.hub = hub or Hub()

    @property
    def origins(self) -> set[str]:
        return {f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}"}

    def refusal(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """Why a request is refused before it reaches a route (None: it is not)."""
        host = headers.get("host", "")
        if host not in {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}:
            return 421, f"this UI answers only at 127.0.0.1:{self.port}, not {host or 'no host'}"
        origin = headers.get("origin")
        state_changing = method not in ("GET", "HEAD", "OPTIONS")
        if origin is not None and origin not in self.origins:
            return 403, f"requests from {origin} are refused"
        if state_changing and origin is None:
            return 403, "a state-changing request must say where it comes from (Origin)"
        if path.startswith("/api/stream") and headers.get("sec-fetch-site", "same-origin") != "same-origin":
            return 403, "the live stream is for this page only"
        return None

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index),
            Route("/api/agents", self.agents, methods=["GET", "POST"]),
            Route("/api/sessions", self.sessions, methods=["GET", "POST"]),
            Route("/api/sessions/{sid}/facts", self.facts),
            Route("/api/sessions/{sid}/messages", self.message, methods=["POST"]),
            Route("/api/sessions/{sid}/interrupt", self.interrupt, methods=["POST"]),
            Route("/api/sessions/{sid}/fork", self.fork, methods=["POST"]),
            Route("/api/content/{cid}", self.content),
            Route("/api/approvals", self.approvals),
            Route("/api/approvals/{aid}", self.resolve, methods=["POST"]),
            Route("/api/stream/{sid}", self.stream),
            Route("/api/overview", self.overview),
            Route("/api/events", self.events),
            Route("/api/agents/{aid}", self.agent, methods=["GET", "PATCH"]),
            Route("/api/agents/{aid}/archive", self.archive, methods=["POST"]),
            Route("/api/usage", self.usage),
            Route("/api/log", self.log),
            Route("/api/skills", self.skills),
            Route("/api/skills/{name}", self.skill, methods=["GET", "POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(routes=routes, middleware=[Middleware(Guard, ui=self)])

    # -- pages and auth ------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:
            session = self.auth.exchange(token)
            if session is None:
                return _page_error(
                    "This link was used already or is out of date: run `aos ui` for a new one."
                )
            resp = RedirectResponse("/", status_code=303)
            resp.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
            return resp
        if not self.auth.valid(request.cookies.get(COOKIE)):
            return _page_error("Open the link that `aos ui` prints to sign in.")
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    def _authorized(self, request: Request) -> bool:
        return self.auth.valid(request.cookies.get(COOKIE))

    async def _kernel(self, request: Request, method: str, params: dict[str, Any]) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "sign in with the link `aos ui` prints"}, status_code=401)
        try:
            result = await self.call(method, params)
        except AosError as exc:
            return JSONResponse(
                {"error": exc.message, "type": exc.type}, status_code=STATUS.get(exc.type, 500)
            )
        return JSONResponse(result, headers={"cache-control": "no-store"})

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- API -----------------------------------------------------------------------------------

    async def agents(self, request: Request) -> Response:
        if request.method == "POST":
            b = await self._body(request)
            params = {k: b[k] for k in ("name", "model", "instructions", "display_name") if b.get(k)}
            return await self._kernel(request, "agent.create", params)
        return await self._kernel(request, "agent.list", {})

    async def sessions(self, request: Request) -> Response:
        if request.method == "POST":
            b = await self._body(request)
            return await self._kernel(request, "session.create", {"agent": str(b.get("agent", ""))})
        agent = request.query_params.get("agent")
        return await self._kernel(request, "session.list", {"agent": agent} if agent else {})

    async def facts(self, request: Request) -> Response:
        """A page of facts: ``?tail=N`` the newest N, or ``?after=S&limit=N`` (older pages:
        ``?before=S&limit=N``)."""
        sid = request.path_params["sid"]
        q = request.query_params
        try:
            limit = min(max(int(q.get("limit", q.get("tail", "200"))), 1), 1000)
            before = int(q["before"]) if "before" in q else None
            after = int(q.get("after", "0"))
        except ValueError:
            return JSONResponse({"error": "after, before, limit and tail are numbers"}, status_code=400)
        if "tail" in q or before is not None:
            if not self._authorized(request):
                return JSONResponse({"error": "sign in with the link `aos ui` prints"}, status_code=401)
            try:
                session = await self.call("session.get", {"session": sid})
            except AosError as exc:
                return JSONResponse({"error": exc.message}, status_code=STATUS.get(exc.type, 500))
            upto = session["last_seq"] if before is None else before - 1
            after = max(0, upto - limit)
            params = {"session": sid, "after_seq": after, "upto_seq": upto, "limit": limit}
            return await self._kernel(request, "history.list", params)
        return await self._kernel(
            request, "history.list", {"session": sid, "after_seq": after, "limit": limit}
        )

    async def message(self, request: Request) -> Response:
        b = await self._body(request)
        params = {"session": request.path_params["sid"], "message": str(b.get("text", "")).strip()}
        return await self._kernel(request, "session.dispatch", params)

    async def interrupt(self, request: Request) -> Response:
        return await self._kernel(request, "session.interrupt", {"session": request.path_params["sid"]})

    async def fork(self, request: Request) -> Response:
        """A new session whose history is this one's up to ``at_seq``."""
        b = await self._body(request)
        params: dict[str, Any] = {"session": request.path_params["sid"]}
        if isinstance(b.get("at_seq"), int):
            params["at_seq"] = b["at_seq"]
        return await self._kernel(request, "session.fork", params)

    async def content(self, request: Request) -> Response:
        """A command's whole output, kept as content (``?agent=`` whose it is; ``?offset=&limit=``
        lines)."""
        q = request.query_params
        params: dict[str, Any] = {"content_id": request.path_params["cid"], "limit": 100000}
        if q.get("agent"):
            params["agent"] = q["agent"]
        for key in ("offset", "limit"):
            if q.get(key, "").isdigit():
                params[key] = int(q[key])
        return await self._kernel(request, "content.read", params)

    async def approvals(self, request: Request) -> Response:
        return await self._kernel(request, "approval.list", {})

    async def resolve(self, request: Request) -> Response:
        b = await self._body(request)
        params = {"approval": request.path_params["aid"], "decision": b.get("decision")}
        if b.get("note"):
            params["note"] = str(b["note"])
        answer = await self._kernel(request, "approval.resolve", params)
        if b.get("always") is True and b.get("decision") == "approve" and answer.status_code == 200:
            row = json.loads(bytes(answer.body))
            try:
                await self._allow_always(str(row["agent_id"]), str(row["command"]))
            except AosError as exc:
                return JSONResponse(
                    {"error": f"approved, but the rule was not saved: {exc.message}", "type": exc.type},
                    status_code=STATUS.get(exc.type, 500),
                )
        return answer

    async def _allow_always(self, agent_id: str, command: str) -> None:
        """The exact command into the agent's ``settings.guard.allow`` (what aos-guard reads):
        "always for this agent", as ``aos approve --always`` and ``a`` in ``aos chat`` do."""
        rule = f"^{re.escape(command)}$"
        for _ in range(3):  # someone changed the agent meanwhile: read it again
            agent = await self.call("agent.get", {"agent": agent_id})
            settings = dict(agent.get("settings") or {})
            guard = dict(settings.get("guard") or {})
            guard["allow"] = [r for r in guard.get("allow", []) if r != rule] + [rule]
            try:
                await self.call(
                    "agent.update",
                    {
                        "agent": agent_id,
                        "settings": {**settings, "guard": guard},
                        "revision": agent["revision"],
                    },
                )
                return
            except AosError as exc:
                if exc.type != "conflict":
                    raise

    async def agent(self, request: Request) -> Response:
        aid = request.path_params["aid"]
        if request.method == "PATCH":
            b = await self._body(request)
            fields = ("display_name", "model", "instructions", "workspace", "settings", "revision")
            params = {"agent": aid, **{k: b[k] for k in fields if k in b}}
            return await self._kernel(request, "agent.update", params)
        return await self._kernel(request, "agent.get", {"agent": aid})

    async def archive(self, request: Request) -> Response:
        return await self._kernel(request, "agent.archive", {"agent": request.path_params["aid"]})

    async def usage(self, request: Request) -> Response:
        q = request.query_params
        params: dict[str, Any] = {"group_by": q.get("group_by", "day")}
        if q.get("since_days", "").isdigit():
            params["since_days"] = int(q["since_days"])
        for key in ("agent", "session"):
            if q.get(key):
                params[key] = q[key]
        return await self._kernel(request, "usage.get", params)

    async def log(self, request: Request) -> Response:
        q = request.query_params
        params: dict[str, Any] = {"limit": 200}
        for key in ("op", "actor", "outcome"):
            if q.get(key):
                params[key] = q[key]
        if q.get("after", "").isdigit():
            params["after_id"] = int(q["after"])
        return await self._kernel(request, "log.list", params)

    async def skills(self, request: Request) -> Response:
        agent = request.query_params.get("agent")
        return await self._kernel(request, "skill.list", {"agent": agent} if agent else {})

    async def skill(self, request: Request) -> Response:
        """One skill with its SKILL.md (GET); turn it on or off for an agent (POST
        ``{agent, enabled}``)."""
        name = request.path_params["name"]
        if request.method == "POST":
            b = await self._body(request)
            method = "skill.enable" if b.get("enabled") else "skill.disable"
            return await self._kernel(request, method, {"skill": name, "agent": str(b.get("agent", ""))})
        agent = request.query_params.get("agent")
        return await self._kernel(
            request, "skill.get", {"skill": name, **({"agent": agent} if agent else {})}
        )

    async def overview(self, request: Request) -> Response:
        """Mission control: every agent's state (working, waiting for approval, idle), what it
        runs now, today's cost, the newest agent-to-agent messages, and schedules' alerts."""
        if not self._authorized(request):
            return JSONResponse({"error": "sign in with the link `aos ui` prints"}, status_code=401)
        try:
            return JSONResponse(await self._overview(), headers={"cache-control": "no-store"})
        except AosError as exc:
            return JSONResponse(
                {"error": exc.message, "type": exc.type}, status_code=STATUS.get(exc.type, 500)
            )

    async def _overview(self) -> dict[str, Any]:
        agents = (await self.call("agent.list", {}))["agents"]
        sessions = (await self.call("session.list", {"limit": 200}))["sessions"]
        usage = (await self.call("usage.get", {"group_by": "agent", "since_days": 1}))["rows"]
        cost = {r["key"]: r for r in usage}
        busy = [s for s in sessions if s["phase"] != "idle"]
        recent = sorted(sessions, key=lambda s: s["updated_at"], reverse=True)[:20]

        async def tail(s: dict[str, Any], n: int, kinds: list[str] | None = None) -> list[dict[str, Any]]:
            params: dict[str, Any] = {"session": s["id"], "after_seq": max(0, s["last_seq"] - n), "limit": n}
            if kinds:
                params = {"session": s["id"], "kinds": kinds, "limit": 1000}
            return list((await self.call("history.list", params))["facts"])

        now: dict[str, dict[str, Any]] = {}
        for s, facts in zip(busy, await asyncio.gather(*(tail(s, 20) for s in busy)), strict=True):
            done = {f["body"].get("call_id") for f in facts if f["kind"] == "tool.result"}
            open_calls = [
                f
                for f in facts
                if f["kind"] in ("tool.started", "approval.requested")
                and f["body"].get("call_id") not in done
            ]
            # The command running now, or the one waiting for a person.
            now[s["agent_id"]] = {
                "session": s["id"],
                "phase": s["phase"],
                "command": open_calls[-1]["body"]["command"] if open_calls else None,
            }
        # Messages as their senders recorded them (a2a.sent), and replies where they arrived
        # (a2a.reply, in the asking agent's session): the conversation both ways.
        names = {a["id"]: a["name"] for a in agents}
        messages = []
        kinds = ["a2a.sent", "a2a.reply"]
        for s, facts in zip(recent, await asyncio.gather(*(tail(s, 0, kinds) for s in recent)), strict=True):
            for f in facts[-20:]:
                b = f["body"]
                reply = f["kind"] == "a2a.reply"
                messages.append(
                    {
                        "at": f["created_at"],
                        "from": b.get("from"),
                        "to": [names.get(s["agent_id"], "?")] if reply else b.get("to"),
                        "text": b.get("text"),
                        "mode": "reply" if reply else b.get("mode"),
                    }
                )
        messages.sort(key=lambda m: m["at"], reverse=True)
        # Warnings and alerts of aos-schedule's runs, from each schedule's log session.
        logs = [s for s in sessions if (s.get("settings") or {}).get("aos_schedule_log")]
        alerts = []
        for facts in await asyncio.gather(*(tail(s, 0, ["schedule.alert"]) for s in logs)):
            for f in facts[-20:]:
                b = f["body"]
                alerts.append(
                    {
                        "at": b.get("at") or f["created_at"],
                        "level": b.get("level"),
                        "agent": b.get("agent"),
                        "schedule": b.get("schedule"),
                        "summary": b.get("summary"),
                        "woke": (b.get("woke") or {}).get("agent"),
                    }
                )
        alerts.sort(key=lambda a: str(a["at"]), reverse=True)
        out = []
        for a in agents:
            current = now.get(a["id"])
            state = "idle"
            if current is not None:
                state = "waiting" if current["phase"] == "waiting_approval" else "working"
            used = cost.get(a["name"]) or {}
            out.append(
                {
                    "id": a["id"],
                    "name": a["name"],
                    "state": state,
                    "session": current and current["session"],
                    "command": current and current["command"],
                    "cost_today": used.get("cost"),
                    "calls_today": used.get("calls", 0),
                }
            )
        return {"agents": out, "messages": messages[:30], "alerts": alerts[:20]}

    async def events(self, request: Request) -> Response:
        """Server-sent events for the whole page: ``approval`` when one is asked for or answered,
        ``dispatch`` when one ends, and a ``heartbeat`` every 15 s. They say what changed; the
        page reads the state again (and everything, after a reconnect)."""
        if not self._authorized(request):
            return JSONResponse({"error": "sign in with the link `aos ui` prints"}, status_code=401)
        queue = self.hub.listen()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        event, data = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        yield "event: heartbeat\ndata: {}\n\n"
                        continue
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
            finally:
                self.hub.leave(queue)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def stream(self, request: Request) -> Response:
        """Server-sent events: each fact of the session after ``Last-Event-ID`` (or ``?after=``),
        its seq as the event id, so a reconnect resumes exactly; ``live`` events (a command's
        output as it prints, model retries) without an id; a ``heartbeat`` event every 15 s."""
        if not self._authorized(request):
            return JSONResponse({"error": "sign in with the link `aos ui` prints"}, status_code=401)
        sid = request.path_params["sid"]
        raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        try:
            after = max(int(raw), 0)
        except ValueError:
            return JSONResponse({"error": "Last-Event-ID is a fact's seq"}, status_code=400)
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

        def on_note(note: Any) -> None:
            if note.method == "history.fact" and isinstance(note.params, dict):
                queue.put_nowait(("fact", note.params["fact"]))
            elif note.method == "history.live" and isinstance(note.params, dict):
                queue.put_nowait(("live", note.params["event"]))

        conn_cm = open_connection(self.socket_path, on_notification=on_note)
        conn = await conn_cm.__aenter__()
        try:
            await conn.call("history.subscribe", {"session": sid, "after_seq": after, "live": True})
        except AosError as exc:
            await conn_cm.__aexit__(None, None, None)
            return JSONResponse({"error": exc.message}, status_code=STATUS.get(exc.type, 500))

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        kind, item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        if conn.closed:
                            return  # the kernel went away: the browser reconnects and resumes
                        yield "event: heartbeat\ndata: {}\n\n"
                        continue
                    if kind == "live":  # progress: no id, so a reconnect resumes from the last fact
                        yield f"event: live\ndata: {json.dumps(item)}\n\n"
                    else:
                        yield f"id: {item['seq']}\nevent: fact\ndata: {json.dumps(item)}\n\n"
            finally:
                await conn_cm.__aexit__(None, None, None)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )


def _page_error(text: str) -> Response:
    body = (
        "<!doctype html><meta charset=utf-8><title>AOS</title>"
        "<link rel=stylesheet href=/static/app.css><main class=signin><h1>AOS</h1><p></p></main>"
    )
    # The message goes in as escaped text.
    safe = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Response(body.replace("<p></p>", f"<p>{safe}</p>"), status_code=401, media_type="text/html")


def write_link(path: Path, port: int, error: str | None = None) -> Callable[[str], None]:
    """A token callback that keeps ``path`` (``$AOS_HOME/run/ui.json``, private) up to date."""

    def on_token(token: str) -> None:
        data = {
            "url": f"http://127.0.0.1:{port}/",
            "link": f"http://127.0.0.1:{port}/?token={token}",
            "pid": os.getpid(),
        }
        if error:
            data = {"error": error, "pid": os.getpid()}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)

    return on_token
