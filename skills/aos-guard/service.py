"""aos-guard: a fail-closed tool.before gate with deny and ask rules, configurable per agent."""

from __future__ import annotations

import re
import time
from typing import Any

from aos_sdk import define_service
from aos_sdk.errors import AosError

# A recursive flag (-r, -R, -rf, --recursive...) followed, after any other flags, by a target.
_RECURSIVE_RM = r"\brm\s+(?:-[^\s]*\s+)*(?:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive)\s+(?:-[^\s]*\s+)*"
_END = r"(?=$|[\s;&|)'\"])"

DENY: list[tuple[str, str]] = [
    (
        _RECURSIVE_RM + r"(?:/\*?|~/?\*?|\$HOME/?\*?|\$\{HOME\}/?\*?)" + _END,
        "recursive delete of / or the home directory",
    ),
    (r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:", "fork bomb"),
    (r"\bdd\b[^\n]*\bof=/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|disk)", "raw write to a disk device"),
    (r">\s*/dev/(?:sd|hd|vd|xvd|nvme|mmcblk)\w*", "raw write to a disk device"),
    (r"\bmkfs(?:\.\w+)?\b", "formatting a filesystem"),
    (r"\bchmod\s+(?:-[^\s]*\s+)*-[a-zA-Z]*R[a-zA-Z]*\s+0?777\s+/" + _END, "making / world-writable"),
]
ASK: list[tuple[str, str]] = [
    (r"(?:^|[\s;&|(])sudo\b", "runs a command as another user"),
    (r"\bgit\s+push\b[^\n;&|]*(?:--force\b|--force-with-lease\b|\s-f\b)", "force push"),
    (r"\b(?:curl|wget)\b[^\n|]*\|\s*(?:sudo\s+)?(?:ba|z|da)?sh\b", "runs a downloaded script"),
    (_RECURSIVE_RM + r"(?:/|\.\./|~)", "recursive delete outside the workspace"),
    (r"(?:^|[\s;&|])(?:shutdown|reboot|halt|poweroff)\b", "stops the machine"),
]
_CACHE_S = 5.0
_agent_rules: dict[str, tuple[float, dict[str, list[str]]]] = {}


async def rules_for(agent_id: str) -> dict[str, list[str]]:
    """The agent's own rules (settings.guard), cached for a few seconds."""
    now = time.monotonic()
    hit = _agent_rules.get(agent_id)
    if hit is not None and now - hit[0] < _CACHE_S:
        return hit[1]
    assert service.kernel is not None
    agent = await service.kernel.call("agent.get", {"agent": agent_id})
    raw = (agent.get("settings") or {}).get("guard") or {}
    rules = {k: [str(p) for p in raw.get(k, []) if isinstance(p, str)] for k in ("deny", "ask", "allow")}
    _agent_rules[agent_id] = (now, rules)
    return rules


def first_match(patterns: list[tuple[str, str]], command: str) -> str | None:
    for pattern, why in patterns:
        try:
            if re.search(pattern, command):
                return why
        except re.error:
            continue  # a bad per-agent pattern must not open the gate for the others
    return None


@define_service
def service() -> dict[str, Any]:
    async def guard(input_data: dict[str, Any], output_data: dict[str, Any]) -> Any:
        command = str(output_data.get("args", {}).get("command", ""))
        own: dict[str, list[str]] = {"deny": [], "ask": [], "allow": []}
        if input_data.get("agent_id"):
            try:
                own = await rules_for(str(input_data["agent_id"]))
            except AosError:
                pass  # the defaults still apply
        if first_match([(p, "allowed by the agent's rules") for p in own["allow"]], command):
            return output_data
        why = first_match([(p, "denied by the agent's rules") for p in own["deny"]] + DENY, command)
        if why:
            return {"verdict": "reject", "reason": why}
        why = first_match([(p, "the agent's rules ask for approval") for p in own["ask"]] + ASK, command)
        if why:
            return {"verdict": "ask", "reason": why}
        return output_data

    return {"hooks": {"tool.before": {"handler": guard, "priority": 10, "timeout_s": 5, "failure": "closed"}}}
