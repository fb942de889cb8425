"""The web UI following what happens without a reload: two live agents messaging each other
through aos-a2a (the scripted model answering each from its own queue), and a skill folder
dropped into a skill root (hot reload on). Debian's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .rpc import scripted_session
from .test_a2a import Agents
from .test_frontend import write_config
from .test_frontend_browser import CHROMIUM, signed_in_page

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM}: apt-get install chromium"),
    pytest.mark.parametrize(
        "kernel", [{"enable": ["aos-frontend", "aos-a2a"], "watch": True}], indirect=True
    ),
]


@pytest.fixture
def agents() -> Iterator[Agents]:
    a = Agents()
    with a.model:
        yield a


@pytest.fixture
def home(agents: Agents) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aos-home-"))
    write_config(d, agents.model, 0)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def page(kernel: Any) -> AsyncIterator[Any]:
    async with signed_in_page(kernel) as p:
        yield p


async def test_mission_control_shows_two_agents_messaging_each_other(
    kernel: Any, agents: Agents, page: Any, rpc: Any
) -> None:
    """ada asks bo through `a2a send --wake` (her own bash); bo is woken, answers, and the reply
    comes back to ada. The page shows the question and the answer, from a chat typed in it."""
    from playwright.async_api import expect

    for name in ("ada", "bo"):
        await scripted_session(rpc, agents.model.url, agent=name)
    agents.add("ada", {"bash": 'a2a send --to bo --wake "is the build green?"'}, {"text": "asked bo"})
    agents.add("bo", {"bash": "echo green"}, {"text": "yes, green"})
    await page.reload()
    await page.locator("#agent").select_option(label="ada")
    await page.get_by_role("button", name="New session").click()
    await page.wait_for_selector("#sessions button[aria-current]")
    await page.get_by_label("Message").fill("ask bo about the build")
    await page.keyboard.press("Enter")
    await expect(page.locator("#transcript .card .cmd").first).to_contain_text("a2a send --to bo --wake")
    await page.get_by_role("button", name="Mission control").click()
    feed = page.locator("#a2a-feed li")
    await expect(feed.filter(has_text="ada → bo")).to_contain_text("is the build green?", timeout=30_000)
    await expect(feed.filter(has_text="bo → ada")).to_contain_text("yes, green", timeout=30_000)
    await expect(feed.filter(has_text="bo → ada")).to_contain_text("(reply)")
    # Both agents are shown, each with its model calls of today.
    for name in ("ada", "bo"):
        card = page.locator(".agent-card", has_text=name)
        await expect(card.locator(".usage")).to_contain_text("2 model calls", timeout=30_000)


async def test_a_skill_folder_dropped_in_shows_on_the_open_skills_page(kernel: Any, page: Any) -> None:
    """The Skills page is open; a person drops a folder into a skill root. The kernel's watcher
    loads it, the page hears the event and lists it; taking the folder out removes it again."""
    from playwright.async_api import expect

    await page.get_by_role("button", name="Skills").click()
    rows = page.locator("#skill-rows tr")
    await expect(rows.filter(has_text="aos-frontend")).to_have_count(1)
    folder = kernel.paths.home / "skills" / "weather-notes"
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(
        "---\nname: weather-notes\ndescription: Notes on reading weather reports.\n---\nRead the sky.\n"
    )
    await expect(rows.filter(has_text="weather-notes")).to_have_count(1, timeout=20_000)
    shutil.rmtree(folder)
    await expect(rows.filter(has_text="weather-notes")).to_have_count(0, timeout=20_000)
