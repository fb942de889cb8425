"""aos-context, in-process edition: the ``session.assemble`` transform.

Loaded by the kernel from ``aoscb.json`` ``"providers"`` until skills run as services.
"""

from __future__ import annotations

import json
from typing import Any

from aos.kernel.hooks import HookBus, HookHandler

SKILL = "aos-context"


def system_prompt(agent: dict[str, Any], skills: list[dict[str, str]]) -> str:
    name = agent.get("display_name") or agent.get("name")
    parts = [
        f"You are {name}, an agent running on AOS.",
        "You act only through the bash tool: each call runs one command in your workspace and returns its "
        "output and exit code. Work step by step, check results, and when the task is done, answer the user "
        "without calling a tool.",
    ]
    if agent.get("instructions"):
        parts.append("Your instructions:\n" + str(agent["instructions"]).strip())
    if skills:
        # Progressive disclosure: names and descriptions now; the full text when it is needed.
        lines = [f"- {s['name']}: {s['description']} (read {s['path']} before using it)" for s in skills]
        parts.append("Skills you can use:\n" + "\n".join(lines))
    return "\n\n".join(parts)


def _text(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("text", "content", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


def tool_result_text(body: dict[str, Any]) -> str:
    out = str(body.get("output", ""))
    notes = []
    if body.get("exit_code") not in (None, 0):
        notes.append(f"exit code {body['exit_code']}")
    if body.get("truncated"):
        notes.append(f"output cut to its first and last parts; {body.get('size')} bytes in all")
        if body.get("content_id"):
            notes.append(f"full output stored as content {body['content_id']}")
    if notes:
        out += "\n[" + "; ".join(notes) + "]"
    return out


def project(fact: dict[str, Any]) -> list[dict[str, Any]]:
    kind, role, body = fact["kind"], fact.get("role"), fact.get("body")
    if kind == "message" and role == "assistant":
        msg: dict[str, Any] = {"role": "assistant", "content": (body or {}).get("text")}
        calls = (body or {}).get("tool_calls") or []
        if calls:
            msg["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ]
        elif msg["content"] is None:
            msg["content"] = ""
        return [msg]
    if kind == "tool.result":
        return [{"role": "tool", "tool_call_id": body["call_id"], "content": tool_result_text(body)}]
    if kind == "message" and role in ("user", None):
        return [{"role": "user", "content": _text(body)}]
    if kind == "message" and role == "system":
        # Mid-conversation system messages are rejected by some providers: say it as a note.
        return [{"role": "user", "content": f"[system note] {_text(body)}"}]
    if kind == "skill.load":
        return [{"role": "user", "content": f"[skill {body.get('name')} loaded]\n{body.get('text', '')}"}]
    if kind == "interrupt":
        return [
            {
                "role": "user",
                "content": f"[the previous run was interrupted: {(body or {}).get('reason', '')}]",
            }
        ]
    return []


def assemble(input_data: dict[str, Any], output_data: dict[str, Any]) -> dict[str, Any]:
    messages = list(output_data.get("messages") or [])
    if not messages:
        messages = [
            {"role": "system", "content": system_prompt(input_data["agent"], input_data.get("skills") or [])}
        ]
    for fact in input_data["facts"]:
        messages.extend(project(fact))
    return {"messages": messages}


def register(bus: HookBus) -> None:
    bus.register(HookHandler("session.assemble", SKILL, assemble, priority=100))
