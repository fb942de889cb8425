"""A step's model call, with failover: the hooks around it and the call itself.

``compute.model`` chooses the model (a router may pick another than the agent's), ``compute.before``
may refuse the call, then :func:`aos.loop.model.complete` makes it (with its own retries). A call
that still fails is told to the hooks as a ``compute.failed`` event, and ``compute.model`` is asked
again, its input's ``failed`` listing the models that failed in this step (``model``, ``kind``,
``status``): if it answers with one not tried yet, that one is called. Without a ``compute.model`` handler, or once the answer is a model that
already failed (at most :data:`MAX_FAILOVERS` more), the dispatch stops with the last error.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..kernel.hooks import Ask, Reject
from .model import BASH_TOOL, ModelError, ModelReply, complete
from .spec import Stop

if TYPE_CHECKING:
    from .react import ReActUnit

__all__ = ["MAX_FAILOVERS", "call_model"]

#: Other models tried in one step after the first one fails (a router's fallback chain).
MAX_FAILOVERS = 4


async def call_model(
    unit: ReActUnit, messages: list[dict[str, Any]]
) -> tuple[ModelReply, str, list[dict[str, Any]]]:
    """The step's reply, the model id it was asked of, and the models that failed before it
    (``model``, ``kind``, ``status``; empty without a failover)."""
    spec, hooks = unit.spec, unit.dispatcher.hooks
    failed: list[str] = []
    tried: list[dict[str, Any]] = []  # what compute.model is told: each failed model and why
    error: ModelError | None = None
    while True:
        choice = await hooks.transform(
            "compute.model",
            {**unit.ids, "failed": tried},
            {"model": spec.model, "params": dict(spec.model_params)},
        )
        ok = isinstance(choice, dict)
        model = str(choice.get("model") or spec.model) if ok else spec.model
        params = choice.get("params", spec.model_params) if ok else spec.model_params
        if error is not None:
            if model in failed or len(failed) > MAX_FAILOVERS:
                raise _failed(error, failed) from error
            unit.live(
                "model.failover", step=spec.steps + 1, failed=failed[-1], model=model, error=error.message
            )
        request = await hooks.gate(
            "compute.before", unit.ids, {"model": model, "messages": messages, "params": params}
        )
        if isinstance(request, Reject | Ask):
            raise Stop(
                "refused", f"compute.before refused by {request.skill}: {request.reason}", skill=request.skill
            )
        model = str(request.get("model", model))
        t0 = time.perf_counter()
        live_text = unit.live_text()
        try:
            reply = await unit.until_interrupted(
                complete(
                    model=model,
                    messages=request.get("messages", messages),
                    params=request.get("params", params),
                    tools=[BASH_TOOL],
                    retries=spec.model_retries,
                    backoff_s=spec.model_backoff_s,
                    client=spec.model_client,
                    on_retry=lambda info: unit.live("model.retry", step=spec.steps + 1, **info),
                    on_text=live_text,
                )
            )
            if live_text is not None:
                live_text.flush()
            return reply, model, tried
        except ModelError as exc:
            if live_text is not None:
                live_text.flush()
            hooks.event(
                "compute.failed",
                {
                    **unit.ids,
                    "model": model,
                    "kind": exc.kind,
                    "status": exc.status,
                    "attempts": exc.attempts,
                    "latency_ms": round((time.perf_counter() - t0) * 1000, 1),
                },
            )
            failed.append(model)
            tried.append({"model": model, "kind": exc.kind, "status": exc.status})
            error = exc
            if not hooks.handlers("compute.model"):
                raise _failed(exc, failed) from exc


def _failed(exc: ModelError, models: list[str]) -> Stop:
    return Stop(
        "failed",
        f"the model call failed: {exc.message}",
        kind=exc.kind,
        http_status=exc.status,
        attempts=exc.attempts,
        models=models,
    )
