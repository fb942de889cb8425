"""Testing helpers for AOS and for skill authors.

:class:`ScriptedModel` is an OpenAI-compatible chat-completions server on 127.0.0.1 that plays a
script of responses and records every request it gets. litellm (and so the AOS kernel) reaches it
over its real HTTP code path: point an agent's model at ``openai/<anything>`` with
``api_base=model.url``. It is the one fake AOS tests allow: everything else is real. It also
answers Anthropic's Messages API (``POST …/messages``, the same script in that shape), so
litellm's conversion for Anthropic runs for real too: ``anthropic/<anything>`` with
``api_base=f"http://127.0.0.1:{model.port}"``.

Script steps (dicts)::

    {"text": "Hello"}                                  # a final answer
    {"bash": "ls -la"}                                 # one bash tool call
    {"bash": ["ls", "pwd"], "text": "two at once"}     # several tool calls (and optional text)
    {"tool_calls": [{"name": "bash", "arguments": "{not json"}]}   # raw (malformed) tool calls
    {"status": 500, "error": "overloaded"}             # a provider error with that HTTP status
    {"delay": 0.5, "text": "slow"}                     # answer after a delay
    {"usage": {"prompt_tokens": 10, "completion_tokens": 2}, "text": "x"}   # explicit usage
    {"raw": {"not": "a completion"}}                   # this exact JSON body, status 200

When the script runs out, ``respond(request)`` (if given) picks the step from the request; else
the server answers 400 ``script exhausted`` (not retried by clients). :func:`react_loop` is such
a policy: one bash call, then a final answer once the call's result is in.
Run one by hand for ``aos chat``: ``python -m aos_sdk.testing --script steps.json --port 8999``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["ScriptedModel", "ThrowawayKernel", "react_loop"]


def _tool_call(n: int, name: str, arguments: str) -> dict[str, Any]:
    return {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": arguments}}


class ScriptedModel:
    """A scripted OpenAI-compatible server running in a background thread.

    Args:
        script: the steps to play, in order (more can be added with :meth:`add`).
        port: 0 picks a free port.
    """

    def __init__(
        self,
        script: Iterable[dict[str, Any]] = (),
        *,
        port: int = 0,
        respond: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._script: list[dict[str, Any]] = list(script)
        self._respond = respond
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        #: The HTTP headers of each request (names lower-cased), in the order of ``requests``.
        self.headers: list[dict[str, str]] = []
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._calls = 0
        self._answered = threading.Condition()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> ScriptedModel:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="scripted-model", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the scripted model server did not start")
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The ``api_base`` to give litellm: ``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self._port}/v1"

    def add(self, *steps: dict[str, Any]) -> None:
        """Append steps to the script."""
        with self._lock:
            self._script.extend(steps)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def wait_requests(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        """Block until at least ``n`` requests have been answered; returns them."""
        with self._answered:
            if not self._answered.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"the scripted model got {len(self.requests)} requests, not {n}")
            return list(self.requests)

    # -- serving -------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self._port)
            self._port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            try:
                await self._server.serve_forever()
            except asyncio.CancelledError:
                pass
            finally:
                # End keep-alive connections still open (their handlers then return by themselves).
                for w in list(self._writers):
                    w.transport.abort()
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                await asyncio.gather(*others, return_exceptions=True)

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = await self._answer(method, path, body, headers)
                if (
                    status == 200
                    and isinstance(payload, dict)
                    and payload.get("object") == "chat.completion.stream"
                ):
                    await self._stream(writer, payload)
                    continue
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        route = path.split("?")[0].rstrip("/")
        anthropic = route.endswith("/messages")
        if method != "POST" or not (route.endswith("/chat/completions") or anthropic):
            return 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            return 400, {"error": {"message": "request body is not JSON", "type": "invalid_request_error"}}
        with self._lock:
            step = self._script.pop(0) if self._script else None
            self._calls += 1
            n = self._calls
        if step is None and self._respond is not None:
            step = self._respond(request)
        if step is not None and step.get("delay"):
            await asyncio.sleep(float(step["delay"]))
        with self._answered:
            self.requests.append(request)
            self.headers.append(headers)
            self._answered.notify_all()
        if step is None:
            return 400, {"error": {"message": "script exhausted", "type": "invalid_request_error"}}
        if "status" in step:
            return int(step["status"]), {
                "error": {"message": step.get("error", "scripted error"), "type": "server_error"}
            }
        if "raw" in step:  # an answer sent exactly as scripted (a malformed one, say)
            return 200, step["raw"]
        completion = self._completion(n, request, step)
        if request.get("stream") and not anthropic:
            return 200, {"object": "chat.completion.stream", "chunks": _chunks(completion, request)}
        return 200, _as_anthropic(completion) if anthropic else completion

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
        """A streamed answer: server-sent events, one ``chat.completion.chunk`` each, then
        ``[DONE]``; chunked transfer encoding, each event flushed on its own."""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for chunk in [*(f"data: {json.dumps(c)}\n\n" for c in payload["chunks"]), "data: [DONE]\n\n"]:
            data = chunk.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    def _completion(n: int, request: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
        calls: list[dict[str, Any]] = []
        commands = step.get("bash")
        if isinstance(commands, str):
            commands = [commands]
        for i, cmd in enumerate(commands or []):
            calls.append(_tool_call(n * 100 + i, "bash", json.dumps({"command": cmd})))
        for i, raw in enumerate(step.get("tool_calls") or []):
            calls.append(_tool_call(n * 100 + 50 + i, raw.get("name", "bash"), raw.get("arguments", "{}")))
        text = step.get("text")
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        prompt = sum(len(json.dumps(m)) for m in request.get("messages", [])) // 4 + 1
        usage = step.get("usage") or {
            "prompt_tokens": prompt,
            "completion_tokens": len(json.dumps(message)) // 4 + 1,
        }
        usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": usage,
        }


def _chunks(completion: dict[str, Any], request: dict[str, Any]) -> list[dict[str, Any]]:
    """A completion as the chunks of an OpenAI stream: the text a few words at a time, each tool
    call whole, the finish reason, and the usage last when ``stream_options.include_usage``."""
    choice = completion["choices"][0]
    message = choice["message"]
    base = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    words = (message.get("content") or "").split(" ")
    for i in range(0, len(words), 2):
        piece = " ".join(words[i : i + 2]) + (" " if i + 2 < len(words) else "")
        if piece:
            out.append(chunk({"content": piece}))
    for i, call in enumerate(message.get("tool_calls") or []):
        out.append(chunk({"tool_calls": [{"index": i, **call}]}))
    out.append(chunk({}, choice["finish_reason"]))
    if (request.get("stream_options") or {}).get("include_usage"):
        out.append({**base, "choices": [], "usage": completion["usage"]})
    return out


def _as_anthropic(completion: dict[str, Any]) -> dict[str, Any]:
    """The same answer in the shape of Anthropic's Messages API (``POST /v1/messages``)."""
    message = completion["choices"][0]["message"]
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        content.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": call["function"]["name"],
                "input": json.loads(call["function"]["arguments"] or "{}"),
            }
        )
    usage = completion["usage"]
    return {
        "id": f"msg_{completion['id']}",
        "type": "message",
        "role": "assistant",
        "model": completion["model"],
        "content": content,
        "stop_reason": "tool_use" if message.get("tool_calls") else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]},
    }


def _after_tool_result(messages: list[dict[str, Any]]) -> bool:
    """Whether the last message carries a tool's result (OpenAI or Anthropic shape)."""
    if not messages:
        return False
    last = messages[-1]
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def react_loop(command: str = "true", text: str = "done") -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A policy answering each request: bash ``command`` first, ``text`` once a tool result is in."""

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        if _after_tool_result(request.get("messages") or []):
            return {"text": text}
        return {"bash": command}

    return respond


def _main() -> None:
    ap = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible model.")
    ap.add_argument("--script", help="JSON file: a list of steps")
    ap.add_argument("--react-loop", metavar="COMMAND", help="answer every request: run COMMAND, then finish")
    ap.add_argument("--port", type=int, default=8999)
    args = ap.parse_args()
    steps = []
    if args.script:
        with open(args.script) as fh:
            steps = json.load(fh)
    respond = react_loop(args.react_loop) if args.react_loop else None
    model = ScriptedModel(steps, port=args.port, respond=respond).start()
    print(f"scripted model on {model.url} ({len(steps)} steps); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        model.stop()


if __name__ == "__main__":
    _main()


class ThrowawayKernel:
    """A real AOS daemon in a temporary ``AOS_HOME``, for testing a skill in a few lines::

        with ScriptedModel([{"bash": "notes add hi"}, {"text": "done"}]) as model, \\
                ThrowawayKernel(skills=["skills/notes"]) as aos:
            sid = aos.new_session(model)
            facts = aos.dispatch(sid, "take a note")
            assert facts[-1]["body"]["status"] == "done"

    The daemon runs as a subprocess (``python -m aos start``; the ``aos`` package must be
    installed), with its own embedded PostgreSQL, and is stopped on exit. ``skills`` are copied
    into ``$AOS_HOME/skills`` before it starts.
    """

    def __init__(self, skills: Iterable[str | Path] = (), *, timeout: float = 120) -> None:
        self.skills = [Path(s) for s in skills]
        self.timeout = timeout
        self.home: Path | None = None

    def __enter__(self) -> ThrowawayKernel:
        import shutil
        import subprocess
        import sys
        import tempfile

        self.home = Path(tempfile.mkdtemp(prefix="aos-throwaway-"))
        for skill in self.skills:
            shutil.copytree(skill, self.home / "skills" / skill.name)
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")} | {
            "AOS_HOME": str(self.home)
        }
        r = subprocess.run(
            [sys.executable, "-m", "aos", "start", "--timeout", str(self.timeout)],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=self.timeout + 10,
        )
        if r.returncode != 0:
            raise RuntimeError(f"the throwaway daemon did not start: {r.stderr.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil
        import subprocess
        import sys

        subprocess.run([sys.executable, "-m", "aos", "stop"], env=self._env, capture_output=True, timeout=60)
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    @property
    def socket(self) -> Path:
        assert self.home is not None
        return self.home / "run" / "kernel.sock"

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call a syscall as an administrator."""
        from .syncclient import SyncClient

        with SyncClient(self.socket) as c:
            return c.call(method, params or {})

    def wait_service(self, skill: str, timeout: float = 30) -> dict[str, Any]:
        """Block until the skill's service is running; returns its status."""
        from .syncclient import SyncClient

        deadline = time.monotonic() + timeout
        with SyncClient(self.socket) as c:
            while True:
                status = c.call("skill.get", {"skill": skill}).get("service_status") or {}
                if status.get("state") == "running":
                    return dict(status)
                if status.get("state") == "quarantined" or time.monotonic() > deadline:
                    raise RuntimeError(f"the service of {skill} is not running: {status}")
                c.call("system.ping", {})  # one round trip between looks; no sleeping

    def new_session(self, model: ScriptedModel, agent: str = "tester") -> str:
        """An agent talking to ``model`` (created once) and a fresh session of it."""
        from .errors import Conflict

        try:
            self.call(
                "agent.create",
                {
                    "name": agent,
                    "model": "openai/scripted",
                    "settings": {"model_params": {"api_base": model.url, "api_key": "test"}},
                },
            )
        except Conflict:
            pass
        return str(self.call("session.create", {"agent": agent})["id"])

    def dispatch(self, session: str, message: str, timeout: float = 120) -> list[dict[str, Any]]:
        """Run a dispatch to its end; returns the facts it wrote (the last is ``dispatch.end``)."""
        from .syncclient import SyncClient

        with SyncClient(self.socket, timeout=timeout) as c:
            c.call("history.subscribe", {"session": session})
            dispatch_id = c.call("session.dispatch", {"session": session, "message": message})["dispatch_id"]
            facts = []
            for note in c.notifications():
                fact = note.params["fact"]
                if (fact.get("meta") or {}).get("dispatch_id") != dispatch_id:
                    continue
                facts.append(fact)
                if fact["kind"] == "dispatch.end":
                    return facts
        return facts
