"""docs/first-skill.md works: its code blocks become a skill that an agent uses in a dispatch."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.config import CHECKOUT
from aos.skills.manifest import load_skill
from aos.skills.supervisor import State
from aos_sdk.connection import RpcConnection
from aos_sdk.testing import ScriptedModel

from .rpc import call, scripted_session

GUIDE = CHECKOUT / "docs" / "first-skill.md"


def blocks() -> dict[str, str]:
    """The code blocks marked <!-- guide:FILE --> in the guide."""
    text = GUIDE.read_text()
    found = re.findall(r"<!-- guide:(\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    return dict(found)


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


def test_the_guide_has_its_three_files() -> None:
    assert set(blocks()) == {"SKILL.md", "service.py", "bin/notes"}


@pytest.mark.parametrize("kernel", [{"watch": True}], indirect=True)
async def test_the_guide_skill_works(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    staged = tmp_path / "notes"
    for name, text in blocks().items():
        (staged / name).parent.mkdir(parents=True, exist_ok=True)
        (staged / name).write_text(text)
    (staged / "bin" / "notes").chmod(0o755)
    m = load_skill(staged)
    assert m.spec_valid and m.usable, m.diagnostics

    import shutil

    shutil.copytree(staged, kernel.paths.home / "skills" / "notes")  # dropped in; no reload call
    services = kernel.kernel.services
    await asyncio.wait_for(services.wait_until(lambda: "notes" in services.runners), 10)
    await asyncio.wait_for(services.runners["notes"].wait_state(State.RUNNING), 20)

    sid = await scripted_session(rpc, model.url)
    model.add({"bash": ["notes add the build needs --release", "notes list", "notes add"]}, {"text": "noted"})
    started = await call(rpc, "session.dispatch", {"session": sid, "message": "remember the build flag"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 30)
    facts = (await call(rpc, "history.list", {"session": sid, "after_seq": started["seq"]}))["facts"]
    outputs = [f["body"]["output"] for f in facts if f["kind"] == "tool.result"]
    assert outputs == [
        "noted (1 in this session)\n",
        "1. the build needs --release\n",
        "nothing to note: say `notes add <text>`\n",
    ]
    catalog = model.requests[0]["messages"][0]["content"]
    assert "- notes: Keeps short notes" in catalog
