"""aos-skill: skill list / show / load / search for agents, through the agent gateway."""

from __future__ import annotations

import re
from typing import Any

from aos_sdk import define_service
from aos_sdk.errors import InvalidParams, NotFound

SKILL = "aos-skill"


def kernel() -> Any:
    assert service.kernel is not None
    return service.kernel


async def _skills(session: str) -> list[dict[str, Any]]:
    return list((await kernel().call("skill.list", {"session": session}))["skills"])


async def _loaded(session: str) -> set[str]:
    assert service.kernel is not None
    names: set[str] = set()
    after = 0
    while True:
        page = await service.kernel.call(
            "history.list", {"session": session, "after_seq": after, "limit": 10000, "kinds": ["skill.load"]}
        )
        names.update(str(f["body"].get("name")) for f in page["facts"])
        if page.get("next_after") is None:
            return names
        after = page["next_after"]


async def _on_skill(syscall: str, args: dict[str, Any], caller: dict[str, Any]) -> dict[str, Any]:
    """``syscall`` on the skill named in ``args``, for the caller's session."""
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidParams("give a skill's name (see: skill list)")
    try:
        return dict(await kernel().call(syscall, {"skill": name, "session": caller["session_id"]}))
    except NotFound:
        raise NotFound(f"no skill named {name!r} (see: skill list, skill search <words>)") from None


@define_service
def service() -> dict[str, Any]:
    async def list_(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """The skills enabled in this session."""
        session = str(caller["session_id"])
        loaded = await _loaded(session)
        rows = [
            {"name": s["name"], "description": s["description"], "loaded": s["name"] in loaded}
            for s in await _skills(session)
            if s["enabled"] and s["usable"]
        ]
        if args.get("as_json"):
            return rows
        return "\n".join(f"{'*' if r['loaded'] else ' '} {r['name']}: {r['description']}" for r in rows)

    async def show(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """A skill's SKILL.md text and folder."""
        sk = await _on_skill("skill.get", args, caller)
        if args.get("as_json"):
            return {k: sk[k] for k in ("name", "description", "path", "enabled", "body")}
        state = "" if sk["enabled"] else "\n(not enabled in this session: its commands are not on your PATH)"
        return f"# {sk['name']} ({sk['path']}){state}\n{sk['description']}\n\n{sk['body'].strip()}\n"

    async def load(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Keep a skill's instructions in this session's context."""
        got = await _on_skill("skill.load", args, caller)
        if args.get("as_json"):
            return got
        return f"loaded {got['skill']}: its instructions are in your context from the next step on"

    async def search(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        """Skills matching words, best first."""
        assert service.kernel is not None
        words = [w.lower() for w in args.get("words") or [] if isinstance(w, str) and w.strip()]
        if not words:
            raise InvalidParams("usage: skill search <words...>")
        scored = []
        for s in await _skills(str(caller["session_id"])):
            if not s["usable"]:
                continue
            body = (await service.kernel.call("skill.get", {"skill": s["name"]}))["body"].lower()
            name, desc = s["name"].lower(), s["description"].lower()
            score = 0
            for w in words:
                pat = re.compile(re.escape(w))
                score += (
                    5 * bool(pat.search(name)) + 3 * len(pat.findall(desc)) + min(5, len(pat.findall(body)))
                )
            if score:
                scored.append((score, s))
        scored.sort(key=lambda x: (-x[0], x[1]["name"]))
        rows = [
            {
                "name": s["name"],
                "description": s["description"],
                "enabled": bool(s["enabled"]),
                "score": score,
            }
            for score, s in scored
        ]
        if args.get("as_json"):
            return rows
        if not rows:
            return f"no skill mentions {' '.join(words)!r}"
        return "\n".join(
            f"{r['name']}{'' if r['enabled'] else ' (not enabled here)'}: {r['description']}" for r in rows
        )

    return {"commands": {"list": list_, "show": show, "load": load, "search": search}}
