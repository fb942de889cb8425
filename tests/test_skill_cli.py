"""aos-skill: agents list, show, search and load skills from bash, through real dispatches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from aos_sdk.connection import RpcConnection
from aos_sdk.testing import ScriptedModel

from .rpc import call, scripted_session

WITH_SKILL = [{"enable": ["aos-skill"]}]


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.mark.parametrize("kernel", WITH_SKILL, indirect=True)
async def test_an_agent_finds_reads_and_loads_a_skill(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    sid = await scripted_session(rpc, model.url)
    model.add(
        {"bash": ["skill list", "skill search folded output", "skill show aos-context", "skill show nope"]},
        {"bash": ["skill load aos-context", "skill list --json"]},
        {"text": "loaded"},
    )
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "what can you do?"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    out = [f["body"] for f in facts if f["kind"] == "tool.result"]
    listing, search, show, missing, load, listed = out
    assert (
        "  aos-context: Builds what you see" in listing["output"] and "  aos-skill: Find" in listing["output"]
    )
    assert "aos-guard" not in listing["output"]  # disabled in this home
    assert search["output"].splitlines()[0].startswith("aos-context: ")
    assert show["output"].startswith("# aos-context (") and "## Large output is folded" in show["output"]
    assert missing["exit_code"] == 1 and "skill: no skill named 'nope'" in missing["output"]
    assert (
        load["output"] == "loaded aos-context: its instructions are in your context from the next step on\n"
    )
    assert {"name": "aos-context", "loaded": True}.items() <= next(
        r for r in json.loads(listed["output"]) if r["name"] == "aos-context"
    ).items()
    # The load is a fact, and the next request the model got carries the text in its system prompt.
    loads = [f for f in facts if f["kind"] == "skill.load"]
    assert [f["body"]["name"] for f in loads] == ["aos-context"]
    assert "Skill aos-context (loaded):" not in model.requests[1]["messages"][0]["content"]
    assert "Skill aos-context (loaded):\n# aos-context" in model.requests[2]["messages"][0]["content"]
