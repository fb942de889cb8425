"""aos-guard: a fail-closed tool.before gate. Commands are judged as bash will run them (see
``judge.py``); per-agent deny, ask and allow rules are regular expressions on the command text."""

from __future__ import annotations

import re
import time
from typing import Any

from judge import judge  # this skill's own module: the runner puts the skill's folder on sys.path

from aos_sdk import define_service
from aos_sdk.errors import AosError

_CACHE_S = 5.0
_agent_rules: dict[str, tuple[float, dict[str, list[str]]]] = {}


async def rules_for(agent_id: str, *, fresh: bool = False) -> dict[str, list[str]]:
    """The agent's own rules (settings.guard), cached for a few seconds (``fresh``: read now)."""
    now = time.monotonic()
    hit = _agent_rules.get(agent_id)
    if hit is not None and now - hit[0] < _CACHE_S and not fresh:
        return hit[1]
    assert service.kernel is not None
    agent = await service.kernel.call("agent.get", {"agent": agent_id})
    raw = (agent.get("settings") or {}).get("guard") or {}
    rules = {k: [str(p) for p in raw.get(k, []) if isinstance(p, str)] for k in ("deny", "ask", "allow")}
    _agent_rules[agent_id] = (now, rules)
    return rules


def matches(patterns: list[str], command: str) -> bool:
    for pattern in patterns:
        try:
            if re.search(pattern, command):
                return True
        except re.error:
            continue  # a bad per-agent pattern must not open the gate for the others
    return False


@define_service
def service() -> dict[str, Any]:
    async def guard(input_data: dict[str, Any], output_data: dict[str, Any]) -> Any:
        verdict = await decide(input_data, output_data, fresh=False)
        if verdict is not output_data and input_data.get("agent_id"):
            # Refusing or asking is the rare path: judge it again on the agent's rules as they
            # are now, so a rule a person just added ("always allow") holds at once.
            verdict = await decide(input_data, output_data, fresh=True)
        return verdict

    async def decide(input_data: dict[str, Any], output_data: dict[str, Any], *, fresh: bool) -> Any:
        command = str(output_data.get("args", {}).get("command", ""))
        cwd = str(output_data.get("cwd") or "/")
        own: dict[str, list[str]] = {"deny": [], "ask": [], "allow": []}
        if input_data.get("agent_id"):
            try:
                own = await rules_for(str(input_data["agent_id"]), fresh=fresh)
            except AosError:
                pass  # the defaults still apply
        if matches(own["allow"], command):
            return output_data
        if matches(own["deny"], command):
            return {"verdict": "reject", "reason": "denied by the agent's rules"}
        verdict = judge(command, cwd)
        if verdict is not None and verdict.action == "reject":
            return {"verdict": "reject", "reason": verdict.reason}
        if matches(own["ask"], command):
            return {"verdict": "ask", "reason": "the agent's rules ask for approval"}
        if verdict is not None:
            return {"verdict": "ask", "reason": verdict.reason}
        return output_data

    return {"hooks": {"tool.before": {"handler": guard, "priority": 10, "timeout_s": 5, "failure": "closed"}}}
