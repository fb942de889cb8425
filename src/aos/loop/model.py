"""The model client: the only module that imports litellm.

litellm is heavy (seconds to import, hundreds of modules more on the first call), so it is
imported lazily, and :func:`warm_up` can load it off the critical path (the daemon runs it in a
thread after it reports ready). Its network fetch of the model cost map is disabled.

Provider errors are translated here, at the boundary: transient ones (rate limits, timeouts,
connection failures, 5xx) are retried with exponential backoff and jitter; the final failure, or
any other error, is raised as :class:`ModelError` with a short, human-readable message.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import model_info, openai_wire
from .model_info import context_window

__all__ = ["BASH_TOOL", "ModelError", "ModelReply", "ToolCall", "complete", "context_window", "warm_up"]

BASH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": (
            "Run a bash command in your workspace and get its output (stdout and stderr) and exit code. "
            "This is your only tool: use it for everything, including the CLIs of your skills."
        ),
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "the bash command to run"}},
            "required": ["command"],
        },
    },
}

_litellm: Any = None
_import_lock = threading.Lock()


def _lib() -> Any:
    global _litellm
    if _litellm is None:
        with _import_lock:
            if _litellm is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                import litellm

                litellm.suppress_debug_info = True
                # Streamed answers build a schema with ReadOnly TypedDict items: pydantic warns
                # each time that it does not enforce them. Harmless; kept out of the log.
                warnings.filterwarnings("ignore", message="Item .* is using the `ReadOnly` qualifier")
                warnings.filterwarnings(
                    "ignore", message="Accessing the '.*' attribute on the instance is deprecated"
                )
                litellm.drop_params = True
                # Its response models finish building on first use, with a pydantic UserWarning
                # (ReadOnly TypedDict items) that strict-warning settings turn into a failed call.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    litellm.ModelResponse()
                    from litellm.types.utils import ModelResponseStream  # streamed answers' too

                    ModelResponseStream()
                _litellm = litellm
    return _litellm


def warm_up() -> float:
    """Import litellm and load its lazy request path; returns the seconds it took.

    Makes one request to a closed local port (refused at once), in an event loop of its own, so
    the first real call does not pay ~1-2 s of imports.
    """
    t0 = time.monotonic()
    lib = _lib()

    async def refused() -> None:
        try:
            await lib.acompletion(
                model="openai/warm-up",
                api_base="http://127.0.0.1:9/v1",
                api_key="warm-up",
                messages=[{"role": "user", "content": "warm-up"}],
                tools=[BASH_TOOL],
                num_retries=0,
                max_retries=0,
                timeout=5,
            )
        except Exception:
            pass

    asyncio.run(refused())
    return time.monotonic() - t0


class ModelError(Exception):
    """The model call failed for good (after retries, or a non-transient error)."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True)
class ToolCall:
    """One tool call as the model sent it (``arguments`` is the raw JSON text)."""

    id: str
    name: str
    arguments: str

    def command(self) -> str:
        """The bash command.

        Raises:
            ValueError: with a message for the model when the call is malformed.
        """
        if self.name != "bash":
            raise ValueError(f"unknown tool {self.name!r}: the only tool is bash(command)")
        try:
            args = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(
                f'the arguments are not valid JSON ({exc.msg}); send {{"command": "..."}}'
            ) from exc
        if (
            not isinstance(args, dict)
            or not isinstance(args.get("command"), str)
            or not args["command"].strip()
        ):
            raise ValueError('bash needs one argument, {"command": "<a bash command>"}')
        return str(args["command"])


@dataclass(frozen=True)
class ModelReply:
    """What the model answered, plus accounting."""

    text: str | None
    tool_calls: list[ToolCall]
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    latency_ms: float
    attempts: int
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "latency_ms": round(self.latency_ms, 2),
            "model": self.model,
            "attempts": self.attempts,
        }


_TRANSIENT = (
    "RateLimitError",
    "APIConnectionError",
    "Timeout",
    "InternalServerError",
    "ServiceUnavailableError",
    "APIError",
)


def _is_transient(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "ContextWindowExceededError",
        "ContentPolicyViolationError",
        "UnprocessableEntityError",
    }:
        return False
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 500:
        return True
    return bool(names & set(_TRANSIENT))


def _short(exc: BaseException) -> str:
    text = str(exc).replace("litellm.", "").strip()
    return text if len(text) <= 500 else text[:500] + "…"


#: The values of the ``model_client`` setting.
CLIENTS = ("auto", "litellm")


async def complete(
    *,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
    retries: int = 3,
    backoff_s: float = 0.5,
    client: str = "auto",
    on_retry: Callable[[dict[str, Any]], None] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> ModelReply:
    """One chat completion, with retries on transient provider errors.

    ``client="auto"`` sends it straight to an OpenAI-compatible endpoint when nothing needs
    translating (:func:`aos.loop.openai_wire.endpoint_for`), through litellm otherwise;
    ``"litellm"`` always goes through litellm.

    Raises:
        ModelError: the final failure (``kind`` is the provider error class name).

    ``on_retry`` hears of each transient failure before the wait that follows it. With
    ``on_text`` the answer is streamed and ``on_text`` gets its text as it is produced; the reply
    is the same as without.
    """
    params = params or {}
    endpoint = openai_wire.endpoint_for(model, params) if client != "litellm" else None
    attempt = 0
    while True:
        attempt += 1
        t0 = time.perf_counter()
        try:
            if endpoint is not None:
                data = await openai_wire.post(endpoint, messages, tools, on_text)
                latency = (time.perf_counter() - t0) * 1000
                return await _wire_reply(data, model, latency, attempt)
            lib = _lib()
            kwargs: dict[str, Any] = {
                "model": model,
                "messages": messages,
                "num_retries": 0,
                "max_retries": 0,
            }
            if tools:
                kwargs["tools"] = tools
            kwargs.update(params)
            if on_text is None:
                resp = await lib.acompletion(**kwargs)
            else:
                kwargs["stream"] = True
                kwargs["stream_options"] = {"include_usage": True}
                chunks = []
                async for chunk in await lib.acompletion(**kwargs):
                    chunks.append(chunk)
                    text = chunk.choices[0].delta.content if chunk.choices else None
                    if text:
                        on_text(text)
                resp = lib.stream_chunk_builder(chunks, messages=messages)
            latency = (time.perf_counter() - t0) * 1000
            return _reply(lib, resp, model, latency, attempt)
        except Exception as exc:
            transient = exc.transient if isinstance(exc, openai_wire.WireError) else _is_transient(exc)
            if attempt <= retries and transient:
                delay = backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
                if on_retry is not None:  # said as it happens: a person is waiting on this
                    on_retry({"attempt": attempt, "error": _short(exc), "wait_s": round(delay, 2)})
                await asyncio.sleep(delay)
                continue
            kind = exc.kind if isinstance(exc, openai_wire.WireError) else type(exc).__name__
            raise ModelError(
                _short(exc),
                kind=kind,
                status=getattr(exc, "status_code", None),
                attempts=attempt,
            ) from exc


_prices: dict[str, tuple[float, float] | None] = {}


async def _price(model: str) -> tuple[float, float] | None:
    """Input and output price per token from litellm's table (None: it has none), looked up once
    per model, off the event loop (the first lookup reads the table)."""
    if model not in _prices:
        _prices[model] = await asyncio.to_thread(model_info.prices, model)
    return _prices[model]


async def _wire_reply(data: dict[str, Any], model: str, latency: float, attempts: int) -> ModelReply:
    choice = data["choices"][0]
    msg = choice["message"]
    calls = []
    for i, tc in enumerate(msg.get("tool_calls") or []):
        if not isinstance(tc, dict):
            continue
        fn: dict[str, Any] = tc["function"] if isinstance(tc.get("function"), dict) else {}
        args = fn.get("arguments")
        calls.append(
            ToolCall(
                id=str(tc.get("id") or f"call_{i}"),
                name=str(fn.get("name") or ""),
                arguments=args if isinstance(args, str) else "",
            )
        )
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prices = await _price(model)
    text = msg.get("content")
    return ModelReply(
        text=text if isinstance(text, str) else None,
        tool_calls=calls,
        model=str(data.get("model") or model),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=None if prices is None else prompt * prices[0] + completion * prices[1],
        latency_ms=latency,
        attempts=attempts,
        finish_reason=choice.get("finish_reason"),
    )


def _reply(lib: Any, resp: Any, model: str, latency: float, attempts: int) -> ModelReply:
    choice = resp.choices[0]
    msg = choice.message
    calls = [
        ToolCall(id=tc.id or f"call_{i}", name=tc.function.name or "", arguments=tc.function.arguments or "")
        for i, tc in enumerate(getattr(msg, "tool_calls", None) or [])
    ]
    usage = getattr(resp, "usage", None)
    cost = None
    hidden = getattr(resp, "_hidden_params", None) or {}
    if isinstance(hidden, dict) and hidden.get("response_cost") is not None:
        cost = float(hidden["response_cost"])
    else:
        try:
            cost = float(lib.completion_cost(completion_response=resp))
        except Exception:
            cost = None  # litellm has no price for this model
    return ModelReply(
        text=msg.content,
        tool_calls=calls,
        model=getattr(resp, "model", None) or model,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cost=cost,
        latency_ms=latency,
        attempts=attempts,
        finish_reason=getattr(choice, "finish_reason", None),
    )
