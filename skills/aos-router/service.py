"""aos-router: fallback chains and cooldowns for model calls (see SKILL.md).

Health is kept per model id, in this service's memory: it is shared by every session, and a
restart starts every model healthy again (a rest is advice, not record).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aos_sdk import define_service
from aos_sdk.errors import AosError

DEFAULT_COOLDOWNS_S = (60.0, 300.0, 1500.0, 3600.0)
#: Failures that say nothing about the model's health: the request itself was at fault.
NOT_THE_MODELS_FAULT = {"BadRequestError", "ContextWindowExceededError", "UnsupportedParamsError"}
_CACHE_S = 5.0


@dataclass
class Health:
    failures: int = 0
    until: float = 0.0  # monotonic: resting until then
    last_error: str = ""


#: Work a cheaper model does well enough, when the agent names one (``router.light``): summaries,
#: and runs in sessions marked light (aos-schedule's runs).
LIGHT_PURPOSES = {"summary"}

_health: dict[str, Health] = {}
_light_sessions: dict[str, bool] = {}  # session -> marked light (settings never change)
_sticky: dict[str, str] = {}  # session -> the fallback it moved to
_settings: dict[str, tuple[float, dict[str, Any]]] = {}


def chain_of(
    model: str, params: dict[str, Any], router: dict[str, Any], *, light: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """The agent's model, then its fallbacks, each with the params to call it with; for light
    work, ``router.light`` first."""
    out = [(model, params)]
    if light and (cheap := entry(router.get("light"), params)) is not None and cheap[0] != model:
        out.insert(0, cheap)
    for fb in router.get("fallbacks") or []:
        if (e := entry(fb, params)) is not None:
            out.append(e)
    return out


def entry(raw: Any, params: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A model of a chain: its id, or ``{model, model_params}`` (over the agent's params)."""
    if isinstance(raw, str) and raw:
        return raw, params
    if isinstance(raw, dict) and isinstance(raw.get("model"), str):
        extra = raw.get("model_params")
        return raw["model"], {**params, **(extra if isinstance(extra, dict) else {})}
    return None


def cooldowns(router: dict[str, Any]) -> tuple[float, ...]:
    raw = router.get("cooldowns_s")
    if isinstance(raw, list) and raw and all(isinstance(x, int | float) and x >= 0 for x in raw):
        return tuple(float(x) for x in raw)
    return DEFAULT_COOLDOWNS_S


def resting(model: str, now: float) -> bool:
    h = _health.get(model)
    return h is not None and h.until > now


@define_service
def service() -> dict[str, Any]:
    async def router_of(agent_id: str) -> dict[str, Any]:
        hit = _settings.get(agent_id)
        if hit is not None and time.monotonic() - hit[0] < _CACHE_S:
            return hit[1]
        assert service.kernel is not None
        agent = await service.kernel.call("agent.get", {"agent": agent_id})
        raw = (agent.get("settings") or {}).get("router")
        router = raw if isinstance(raw, dict) else {}
        _settings[agent_id] = (time.monotonic(), router)
        return router

    async def is_light(session_id: Any) -> bool:
        """Whether a session is marked for light work (``settings.light``, as aos-schedule's
        runs are)."""
        if not session_id:
            return False
        hit = _light_sessions.get(str(session_id))
        if hit is None:
            assert service.kernel is not None
            try:
                s = await service.kernel.call("session.get", {"session": str(session_id)})
            except AosError:
                return False
            hit = bool((s.get("settings") or {}).get("light"))
            if len(_light_sessions) > 10000:
                _light_sessions.clear()
            _light_sessions[str(session_id)] = hit
        return hit

    async def choose(input_data: dict[str, Any], output_data: Any) -> Any:
        if not isinstance(output_data, dict) or not input_data.get("agent_id"):
            return None
        try:
            router = await router_of(str(input_data["agent_id"]))
        except AosError:
            return None
        light = input_data.get("purpose") in LIGHT_PURPOSES or await is_light(input_data.get("session_id"))
        chain = chain_of(
            str(output_data.get("model")), dict(output_data.get("params") or {}), router, light=light
        )
        tried = [f for f in input_data.get("failed") or [] if isinstance(f, dict)]
        if tried and tried[-1].get("kind") in NOT_THE_MODELS_FAULT:
            return {"model": tried[-1].get("model")}  # the request was at fault: no other model
        failed = {str(f.get("model")) for f in tried}
        now = time.monotonic()
        session = str(input_data.get("session_id") or "")
        left = [c for c in chain if c[0] not in failed]
        if not left:
            return None  # every model failed in this step: the kernel stops with the last error
        healthy = [c for c in left if not resting(c[0], now)]
        if healthy and healthy[0][0] == chain[0][0]:
            pick = healthy[0]  # the agent's own model, healthy: always first
        elif healthy:
            sticky = next((c for c in healthy if c[0] == _sticky.get(session)), None)
            pick = sticky or healthy[0]
        else:  # everything rests: the one whose rest ends first
            pick = min(left, key=lambda c: _health[c[0]].until)
        if pick[0] != chain[0][0]:
            _sticky[session] = pick[0]
        else:
            _sticky.pop(session, None)
        return {"model": pick[0], "params": pick[1]}

    async def failed(input_data: dict[str, Any], output_data: Any) -> None:
        model, kind = str(input_data.get("model")), str(input_data.get("kind"))
        if kind in NOT_THE_MODELS_FAULT:
            return
        steps: tuple[float, ...] = DEFAULT_COOLDOWNS_S
        if input_data.get("agent_id"):
            try:
                steps = cooldowns(await router_of(str(input_data["agent_id"])))
            except AosError:
                pass
        h = _health.setdefault(model, Health())
        h.failures += 1
        h.until = time.monotonic() + steps[min(h.failures, len(steps)) - 1]
        latency = input_data.get("latency_ms")
        status = input_data.get("status")
        h.last_error = (
            kind + (f" ({status})" if status else "") + (f" after {latency:.0f} ms" if latency else "")
        )

    async def answered(input_data: dict[str, Any], output_data: Any) -> None:
        h = _health.get(str(input_data.get("requested")))
        if h is not None:
            h.failures, h.until = 0, 0.0

    async def status(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Each model the router has heard of: healthy, or resting for how long."""
        if not _health:
            return "every model is healthy (none has failed since the router started)"
        now = time.monotonic()
        lines = []
        for model, h in sorted(_health.items()):
            state = f"resting {h.until - now:.0f} s more" if h.until > now else "healthy"
            lines.append(
                f"{model}: {state}; {h.failures} failures in a row; last error {h.last_error or '-'}"
            )
        return "\n".join(lines)

    return {
        "hooks": {
            "compute.model": {"handler": choose, "priority": 50, "timeout_s": 5, "failure": "open"},
            "compute.failed": failed,
            "compute.after": answered,
        },
        "commands": {"status": status},
    }
