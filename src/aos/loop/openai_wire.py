"""The direct client for OpenAI-compatible endpoints: one HTTP POST per model call.

litellm reaches every provider, but each call through it costs ~4 ms of CPU on this kind of
machine (a logging object, callbacks, model-info lookups, cost calculation, the openai SDK's
request transform), several times the request itself. For the case where nothing needs
translating, an ``openai/<model>`` (or ``hosted_vllm/<model>``) model with an explicit
``api_base`` (a local server, a proxy, a self-hosted model), AOS speaks the chat-completions wire
format itself: the messages it already holds in that format go out as they are, the answer is
read back into a :class:`~aos.loop.model.ModelReply`.

Everything else goes through litellm: other providers, OpenAI's own API (whose reasoning models
need parameters renamed), parameters this client does not pass through, and any agent whose
``model_client`` setting is ``litellm``. See docs/model.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Endpoint", "WireError", "aclose", "endpoint_for", "load", "post"]

#: Request-body parameters sent as they are (the chat-completions names).
BODY_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "response_format",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "reasoning_effort",
    }
)
#: Parameters that say how to reach the endpoint, not what to ask it.
TRANSPORT_PARAMS = frozenset({"api_base", "api_key", "timeout", "extra_headers", "extra_body"})
#: Provider prefixes whose endpoint speaks the OpenAI wire format unchanged, with the environment
#: variable litellm reads their key from.
PREFIXES = {"openai": "OPENAI_API_KEY", "hosted_vllm": "HOSTED_VLLM_API_KEY"}
#: OpenAI's reasoning models: litellm renames and drops parameters for them, so they go through it.
_REASONING = re.compile(r"^(o\d|gpt-5)")
#: litellm's default request timeout.
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send one model's requests."""

    url: str
    model: str
    headers: dict[str, str]
    body: dict[str, Any]
    timeout_s: float


def endpoint_for(model: str, params: dict[str, Any]) -> Endpoint | None:
    """The direct endpoint for ``model`` with ``params``, or None when litellm must handle it."""
    prefix, _, name = model.partition("/")
    if prefix not in PREFIXES or not name or _REASONING.match(name):
        return None
    if not set(params) <= BODY_PARAMS | TRANSPORT_PARAMS:
        return None
    api_base = params.get("api_base")
    if not isinstance(api_base, str) or not api_base.startswith(("http://", "https://")):
        return None
    key = params.get("api_key") or os.environ.get(PREFIXES[prefix])
    if prefix == "openai" and not key:
        return None  # litellm explains a missing key better than a 401 from the server would
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    extra_headers = params.get("extra_headers")
    if extra_headers is not None:
        if not isinstance(extra_headers, dict):
            return None
        headers.update({str(k): str(v) for k, v in extra_headers.items()})
    extra_body = params.get("extra_body")
    if extra_body is not None and not isinstance(extra_body, dict):
        return None
    body = {k: v for k, v in params.items() if k in BODY_PARAMS}
    body.update(extra_body or {})
    timeout = params.get("timeout", DEFAULT_TIMEOUT_S)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        return None
    base = api_base.rstrip("/")
    url = base if base.endswith("/chat/completions") else base + "/chat/completions"
    return Endpoint(url=url, model=name, headers=headers, body=body, timeout_s=float(timeout))


class WireError(Exception):
    """A failed call. ``kind`` uses litellm's exception names, so errors read the same on both
    paths; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, transient: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status
        self.transient = transient


_KINDS = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "Timeout",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}
_CONTEXT_WINDOW = re.compile(r"context[_ ]length|context window|maximum context|too many tokens", re.I)


def _http_error(status: int, payload: bytes) -> WireError:
    message = payload.decode("utf-8", "replace").strip()
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(err, str):
            message = err
    kind = _KINDS.get(status, "APIError")
    if status == 400 and _CONTEXT_WINDOW.search(message):
        kind = "ContextWindowExceededError"
    transient = status in (408, 409, 429) or status >= 500
    return WireError(
        f"{kind}: HTTP {status} from the model endpoint: {message}",
        kind=kind,
        status=status,
        transient=transient,
    )


def load() -> None:
    """Import the HTTP client now (at start, off the event loop), not in the first call."""
    import aiohttp  # noqa: F401


# One HTTP session (a keep-alive connection pool) per event loop.
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _session() -> Any:
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            json_serialize=lambda o: orjson.dumps(o).decode(),
            skip_auto_headers=("User-Agent",),
        )
        _sessions[loop] = session
    return session


async def aclose() -> None:
    """Close this event loop's connections (at shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


async def post(
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    on_text: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One chat completion; returns the decoded answer.

    With ``on_text`` the answer is streamed (``stream: true``): ``on_text`` gets the text as the
    model produces it, and the chunks are put back together into the same answer.

    Raises:
        WireError: the endpoint could not be reached, answered an error, or not a chat completion.
    """
    import aiohttp

    body: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    if tools:
        body["tools"] = tools
    body.update(endpoint.body)
    if on_text is not None:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    try:
        async with _session().post(
            endpoint.url,
            data=orjson.dumps(body),
            headers=endpoint.headers,
            timeout=aiohttp.ClientTimeout(total=endpoint.timeout_s),
        ) as resp:
            status = resp.status
            if on_text is not None and status == 200:
                return _assembled(await _read_stream(resp, on_text), endpoint)
            payload = await resp.read()
    except TimeoutError as exc:
        raise WireError(
            f"Timeout: no answer from {endpoint.url} within {endpoint.timeout_s:g} s",
            kind="Timeout",
            transient=True,
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise WireError(
            f"APIConnectionError: cannot reach {endpoint.url}: {exc}",
            kind="APIConnectionError",
            transient=True,
        ) from exc
    if status != 200:
        raise _http_error(status, payload)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("choices"), list)
        and data["choices"]
        and isinstance(data["choices"][0], dict)
        and isinstance(data["choices"][0].get("message"), dict)
    ):
        raise WireError(
            f"APIError: {endpoint.url} did not answer with a chat completion: {payload[:200]!r}",
            kind="APIError",
            transient=True,
        )
    return data


async def _read_stream(resp: Any, on_text: Callable[[str], None]) -> list[dict[str, Any]]:
    """The chunks of a streamed answer (server-sent events), ``on_text`` told of each text piece."""
    chunks: list[dict[str, Any]] = []
    buffer = b""
    async for data in resp.content.iter_any():
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            item = line[5:].strip()
            if item == b"[DONE]":
                return chunks
            try:
                chunk = orjson.loads(item)
            except orjson.JSONDecodeError:
                continue
            chunks.append(chunk)
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    on_text(text)
    return chunks


def _assembled(chunks: list[dict[str, Any]], endpoint: Endpoint) -> dict[str, Any]:
    """A streamed answer's chunks as the one chat completion they make up."""
    if not chunks:
        raise WireError(f"APIError: {endpoint.url} streamed no answer", kind="APIError", transient=True)
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text.append(delta["content"])
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    int(part.get("index", 0)),
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = part.get("id") or call["id"]
                fn = part.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    first = chunks[0]
    return {
        "id": first.get("id"),
        "object": "chat.completion",
        "model": first.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or {},
    }
