"""The skill index, enabling rules and skill syscalls, with real skill folders."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_sdk.connection import RpcConnection
from aos_sdk.errors import InvalidParams, NotFound, PermissionDenied
from aos_sdk.testing import ScriptedModel

from .rpc import call

FIXTURES = Path(__file__).parent / "fixtures" / "skills"


def drop(home: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(FIXTURES / name, home / "skills" / name)


def write_skill(
    home: Path, name: str, description: str, extra: str = "", body: str = "How to use it.\n"
) -> Path:
    folder = home / "skills" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {description}\n{extra}---\n{body}")
    return folder


async def test_skill_list_shows_every_skill_with_both_verdicts(rpc: RpcConnection, kernel: Any) -> None:
    drop(kernel.paths.home, "valid-minimal", "invalid-service-key", "invalid-latin1", "invalid-extra-field")
    changes = await call(rpc, "skill.reload")
    assert changes["added"] == [
        "invalid-extra-field",
        "invalid-latin1",
        "invalid-service-key",
        "valid-minimal",
    ]
    skills = {s["name"]: s for s in (await call(rpc, "skill.list"))["skills"]}
    assert skills["aos-context"]["spec_valid"] and skills["aos-context"]["usable"]
    assert skills["valid-minimal"]["spec_valid"] and skills["valid-minimal"]["enabled"] is None
    svc = skills["invalid-service-key"]
    assert (
        svc["usable"]
        and not svc["spec_valid"]
        and "not part of the Agent Skills spec" in svc["diagnostics"][0]["message"]
    )
    assert (
        not skills["invalid-latin1"]["usable"]
        and "not UTF-8" in skills["invalid-latin1"]["diagnostics"][0]["message"]
    )
    assert not skills["invalid-extra-field"]["usable"]
    assert str(kernel.paths.home / "skills") in (await call(rpc, "skill.list"))["roots"]


async def test_enabling_rules_from_default_to_session(rpc: RpcConnection, kernel: Any) -> None:
    home = kernel.paths.home
    write_skill(home, "opt-in", "Off until asked for.", extra='metadata:\n  aos-default: "false"\n')
    write_skill(home, "always", "On by default.")
    await call(rpc, "skill.reload")
    await call(rpc, "agent.create", {"name": "alice"})
    s1 = (await call(rpc, "session.create", {"agent": "alice"}))["id"]
    s2 = (await call(rpc, "session.create", {"agent": "alice"}))["id"]

    async def state(skill: str, **scope: str) -> tuple[bool, str]:
        got = await call(rpc, "skill.get", {"skill": skill, **scope})
        return got["enabled"], got["why"]

    assert await state("opt-in", session=s1) == (False, "off by default (aos-default: false)")
    assert await state("always", session=s1) == (True, "on by default")
    res = await call(rpc, "skill.enable", {"skill": "opt-in", "session": s1})
    assert res == {"skill": "opt-in", "scope": "session", "target": s1, "enabled": True}
    assert await state("opt-in", session=s1) == (True, "enabled by the session")
    assert (await state("opt-in", session=s2))[0] is False  # only that session
    await call(rpc, "skill.disable", {"skill": "always", "agent": "alice"})
    assert await state("always", session=s2) == (False, "disabled by the agent")
    await call(rpc, "skill.enable", {"skill": "always", "session": s2})
    assert await state("always", session=s2) == (True, "enabled by the session")  # session beats agent
    with pytest.raises(InvalidParams, match="exactly one"):
        await call(rpc, "skill.enable", {"skill": "always"})
    with pytest.raises(NotFound, match="did you mean 'always'"):
        await call(rpc, "skill.get", {"skill": "alwys"})


async def test_config_can_disable_a_skill(rpc: RpcConnection, kernel: Any) -> None:
    write_skill(kernel.paths.home, "noisy", "Turned off in aoscb.json.")
    kernel.kernel.config.data["skills"]["disabled"] = ["noisy"]
    try:
        await call(rpc, "skill.reload")
        await call(rpc, "agent.create", {"name": "alice"})
        got = await call(rpc, "skill.get", {"skill": "noisy", "agent": "alice"})
        assert (got["enabled"], got["why"]) == (False, "disabled in aoscb.json")
    finally:
        kernel.kernel.config.data["skills"]["disabled"] = []


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


async def test_catalog_and_loaded_skill_text_reach_the_model(
    rpc: RpcConnection, kernel: Any, model: ScriptedModel
) -> None:
    home = kernel.paths.home
    write_skill(home, "weather", "Tells the weather.", body="Run `weather today` to get the forecast.\n")
    write_skill(home, "secret-tool", "Off by default.", extra='metadata:\n  aos-default: "false"\n')
    await call(rpc, "skill.reload")
    await call(
        rpc,
        "agent.create",
        {
            "name": "alice",
            "model": "openai/scripted",
            "settings": {"model_params": {"api_base": model.url, "api_key": "k"}},
        },
    )
    sid = (await call(rpc, "session.create", {"agent": "alice"}))["id"]
    loaded = await call(rpc, "skill.load", {"skill": "weather", "session": sid})
    assert loaded["seq"] == 1
    with pytest.raises(PermissionDenied, match="not enabled"):
        await call(rpc, "skill.load", {"skill": "secret-tool", "session": sid})
    fact = await call(rpc, "history.get", {"session": sid, "seq": 1})
    assert fact["kind"] == "skill.load" and fact["body"]["text"].startswith("Run `weather today`")

    model.add({"text": "ok"})
    await call(rpc, "session.dispatch", {"session": sid, "message": "what's the weather?"})
    await asyncio.wait_for(kernel.kernel.dispatcher.wait_dispatch(sid), 20)
    system, first = model.requests[0]["messages"][0], model.requests[0]["messages"][1]
    assert "- weather: Tells the weather." in system["content"] and "weather/SKILL.md" in system["content"]
    assert "aos-context" in system["content"] and "secret-tool" not in system["content"]
    # A loaded skill's text is part of the system prompt from then on.
    assert "Skill weather (loaded):\nRun `weather today`" in system["content"]
    assert first == {"role": "user", "content": "what's the weather?"}


async def test_reload_reports_changes(rpc: RpcConnection, kernel: Any) -> None:
    folder = write_skill(kernel.paths.home, "evolving", "Version one.")
    assert (await call(rpc, "skill.reload"))["added"] == ["evolving"]
    (folder / "SKILL.md").write_text("---\nname: evolving\ndescription: Version two.\n---\nNew body.\n")
    import os

    os.utime(folder / "SKILL.md", (1, 1))  # an mtime that certainly differs
    assert (await call(rpc, "skill.reload"))["changed"] == ["evolving"]
    assert (await call(rpc, "skill.get", {"skill": "evolving"}))["description"] == "Version two."
    shutil.rmtree(folder)
    assert (await call(rpc, "skill.reload"))["removed"] == ["evolving"]


def test_aos_skills_cli(aos: Any, home: Path) -> None:
    write_skill(home, "cli-demo", "Shown by aos skills.")
    drop(home, "invalid-name-mismatch")
    assert aos("start").returncode == 0
    r = aos("skills")
    assert r.returncode == 0
    assert "SKILL" in r.stdout and "aos-context" in r.stdout and "cli-demo" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("something-else"))
    assert " no " in line and "must equal the folder's name" in line
    r = aos("skills", "show", "cli-demo")
    assert "spec-valid; usable by AOS" in r.stdout and "How to use it." in r.stdout
    listed = json.loads(aos("skills", "--json").stdout)
    assert {s["name"] for s in listed} >= {"aos-context", "cli-demo", "something-else"}
    r = aos("skills", "reload")
    assert r.returncode == 0 and r.stdout.startswith(f"{len(listed)} skills; added -")
