"""The web UI in a real browser: Debian's Chromium driven by Playwright (never a downloaded
browser). Skipped, saying why, where ``/usr/bin/chromium`` is missing (``.ci/run`` installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aos.skills.supervisor import State
from aos_sdk.testing import ScriptedModel

from .test_frontend import hold_commands, link, write_config

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM}: apt-get install chromium"),
    pytest.mark.parametrize("kernel", [{"enable": ["aos-frontend"]}], indirect=True),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def home(model: ScriptedModel) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aos-home-"))
    write_config(d, model, free_port())  # a fixed port: the page finds the UI after a restart
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextlib.asynccontextmanager
async def signed_in_page(kernel: Any) -> AsyncIterator[Any]:
    """Chromium on the UI, signed in with the link `aos ui` would print; no script error allowed."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto((await link(kernel))["link"])
            yield page
            assert not errors, errors
        finally:
            await browser.close()


@pytest.fixture
async def page(kernel: Any) -> AsyncIterator[Any]:
    async with signed_in_page(kernel) as p:
        yield p


async def start_chat(page: Any, name: str) -> None:
    await page.get_by_text("New agent").click()
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_role("button", name="Create").click()
    from playwright.async_api import expect

    await expect(page.locator("#agent option:checked")).to_have_text(name)
    await page.get_by_role("button", name="New session").click()
    await page.wait_for_selector("#sessions button[aria-current]")


async def test_chat_in_the_page_shows_commands_and_runs_no_script_from_the_transcript(
    kernel: Any, model: ScriptedModel, page: Any
) -> None:
    payload = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    model.add(
        {"bash": "echo '<script>window.__pwned=3</script>'", "text": payload},
        {"text": "done, <b>bold</b> stays text, **this is strong**, [a link](javascript:window.__pwned=4)"},
    )
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("go")
    await page.keyboard.press("Enter")
    card = page.locator(".card").first
    await card.locator(".meta").filter(has_text="exit 0").wait_for()
    assert await card.locator(".cmd").inner_text() == "$ echo '<script>window.__pwned=3</script>'"
    assert await card.locator("pre").inner_text() == "<script>window.__pwned=3</script>\n"
    await page.locator("#transcript li.end").filter(has_text="done").wait_for()
    texts = await page.locator("#transcript li.assistant").all_inner_texts()
    assert texts[0].startswith(payload) and texts[-1].startswith("done, <b>bold</b> stays text")
    assert await page.evaluate("window.__pwned") is None, "something in the transcript ran as script"
    assert await page.locator("#transcript img, #transcript script, #transcript b").count() == 0
    # The agent's Markdown is rendered, but never into a script-bearing link.
    assert await page.locator("#transcript li.assistant strong").all_inner_texts() == ["this is strong"]
    assert await page.locator("#transcript a").count() == 0


async def test_a_guarded_command_is_approved_from_the_inbox_while_the_dispatch_waits(
    kernel: Any, model: ScriptedModel, page: Any
) -> None:
    from playwright.async_api import expect

    hold_commands(kernel, "deploys need a person")
    model.add({"bash": "echo deployed"}, {"text": "shipped"})
    await start_chat(page, "bo")
    await page.get_by_label("Message").fill("deploy")
    await page.keyboard.press("Enter")
    badge = page.locator("#badge")
    await badge.filter(has_text="1").wait_for()
    # Asked while the person watches: a modal dialog, focus in it. "Later" leaves it pending.
    dialog = page.get_by_role("dialog", name="A command waits for you")
    await dialog.wait_for()
    await expect(dialog.get_by_role("button", name="Approve")).to_be_focused()
    await dialog.get_by_role("button", name="Later").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_label("Message")).to_be_focused()  # focus back where it was
    await page.get_by_role("button", name="Approvals").click()
    from playwright.async_api import expect

    await expect(page.locator("#chat")).to_be_hidden()  # one page at a time
    item = page.locator("#approval-list li")
    await item.filter(has_text="deploys need a person").wait_for()
    # "Always allow": approved, and the exact command goes into the agent's guard rules.
    async with page.expect_response(lambda r: "/api/approvals/" in r.url) as answer:
        await item.get_by_role("button", name="Always allow").click()
    assert (await answer.value).ok
    await page.get_by_role("button", name="Chat").click()
    await page.locator("#transcript li.end").filter(has_text="done ·").wait_for()
    assert await page.locator(".card pre").inner_text() == "deployed\n"
    await badge.wait_for(state="hidden")
    agent = await kernel.store.get_agent("bo")
    assert agent["settings"]["guard"]["allow"] == ["^echo\\ deployed$"]


async def test_every_fact_shows_once_after_the_ui_service_is_killed_mid_reply(
    kernel: Any, model: ScriptedModel, page: Any
) -> None:
    model.add({"bash": "echo first"}, {"delay": 3, "text": "second"})
    await start_chat(page, "cy")
    await page.get_by_label("Message").fill("go")
    await page.keyboard.press("Enter")
    await page.locator(".card .meta").filter(has_text="exit 0").wait_for()
    runner = kernel.kernel.services.runners["aos-frontend"]
    os.kill(runner.proc.pid, signal.SIGKILL)  # the stream dies with it; the kernel restarts it
    await page.locator("#banner").filter(has_text="reconnecting").wait_for()
    await asyncio.wait_for(runner.wait_state(State.RUNNING), 30)
    await page.locator("#transcript li.end").filter(has_text="done ·").wait_for(timeout=30000)
    await page.locator("#banner").wait_for(state="hidden")
    assert await page.locator("#transcript li.user").count() == 1
    assert await page.locator(".card").count() == 1
    assert await page.locator("#transcript li.assistant > div:first-child").all_inner_texts() == ["second"]
    assert await page.locator("#transcript li.end").filter(has_text="done ·").count() == 1


async def test_mission_control_shows_every_agent_and_their_messages(
    kernel: Any, model: ScriptedModel, page: Any, rpc: Any
) -> None:
    from playwright.async_api import expect

    model.add({"bash": "sleep 30"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("take your time")
    await page.keyboard.press("Enter")
    await page.locator(".card").first.wait_for()
    agents = (await rpc.call("agent.list", {}))["agents"]
    sid = (await rpc.call("session.create", {"agent": agents[0]["id"]}))["id"]
    note = {"id": "m1", "from": "ada", "to": ["bo"], "text": "<img src=x onerror=window.__pwned=1> status?"}
    await rpc.call("session.append", {"session": sid, "kind": "a2a.sent", "body": note})
    await page.get_by_role("button", name="Mission control").click()
    card = page.locator(".agent-card", has_text="ada")
    await expect(card.locator(".state")).to_have_text("working")
    await expect(card.locator(".cmd")).to_have_text("$ sleep 30")
    await expect(page.locator("#a2a-feed li").first).to_contain_text("ada → bo")
    await expect(page.locator("#a2a-feed li").first).to_contain_text(
        "<img src=x onerror=window.__pwned=1> status?"
    )
    assert await page.evaluate("window.__pwned") is None
    # A schedule's alert, as aos-schedule writes it in the schedule's log session.
    log = await rpc.call(
        "session.create", {"agent": agents[0]["id"], "settings": {"aos_schedule_log": "sch_1"}}
    )
    alert = {
        "schedule": "sch_1",
        "agent": "ada",
        "level": "alert",
        "summary": "<b>disk</b> full",
        "woke": {"agent": "ops"},
    }
    await rpc.call(
        "session.append",
        {"session": log["id"], "kind": "schedule.alert", "body": {**alert, "at": "2026-03-02T10:00:00Z"}},
    )
    await page.get_by_role("button", name="Mission control").click()  # refreshed by hand, not in 2 s
    first = page.locator("#alerts-feed li").first
    await expect(first).to_contain_text("ALERT ada")
    await expect(first).to_contain_text("sch_1 (woke ops)")
    await expect(first).to_contain_text("<b>disk</b> full")
    await rpc.call(
        "session.interrupt", {"session": (await rpc.call("session.list", {}))["sessions"][-1]["id"]}
    )


async def test_agents_skills_and_usage_pages(kernel: Any, model: ScriptedModel, page: Any, rpc: Any) -> None:
    from playwright.async_api import expect

    model.add({"text": "hi"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("hello")
    await page.keyboard.press("Enter")
    await page.locator("#transcript li.end").filter(has_text="done ·").wait_for()
    # Agents: edit the instructions.
    await page.get_by_role("button", name="Agents").click()
    form = page.locator("#agent-edit")
    await expect(form.get_by_label("Settings (JSON)")).to_have_value("{}")
    await form.get_by_label("Instructions").fill("Answer in one line.")
    await form.get_by_role("button", name="Save").click()
    await expect(page.locator("#agent-saved")).to_have_text("Saved.")
    assert (await rpc.call("agent.get", {"agent": "ada"}))["instructions"] == "Answer in one line."
    # Skills: turn aos-context off for ada, and read a SKILL.md.
    await page.get_by_role("button", name="Skills").click()
    box = page.get_by_label("aos-context enabled for this agent")
    await expect(box).to_be_checked()
    async with page.expect_response(lambda r: r.url.endswith("/api/skills/aos-context")) as answer:
        await box.uncheck()
    assert (await answer.value).ok
    await expect(box).not_to_be_checked()
    skills = (await rpc.call("skill.list", {"agent": "ada"}))["skills"]
    assert next(s for s in skills if s["name"] == "aos-context")["enabled"] is False
    await page.get_by_role("button", name="aos-frontend").click()
    await expect(page.locator("#skill-text")).to_contain_text("This skill serves the AOS web UI")
    # Usage: one call, by agent; the log lists the edit.
    await page.get_by_role("button", name="Usage").click()
    await page.get_by_label("Group by").select_option("agent")
    await expect(page.locator("#usage-rows tr").first).to_contain_text("ada")
    await expect(page.locator("#usage-chart rect")).to_have_count(1)
    await page.get_by_label("Operation").fill("agent.update")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#log-rows tr").first).to_contain_text("agent.update")


async def test_a_long_session_opens_at_its_tail_and_shows_older_facts_on_demand(
    kernel: Any, page: Any, rpc: Any
) -> None:
    from playwright.async_api import expect

    await start_chat(page, "ada")
    sid = (await rpc.call("session.list", {}))["sessions"][0]["id"]
    for chunk in range(0, 450, 25):  # under the connection's in-flight limit
        notes = [{"session": sid, "kind": "note", "body": f"n{i}"} for i in range(chunk, chunk + 25)]
        await asyncio.gather(*(rpc.call("session.append", n) for n in notes))
    await page.get_by_role("button", name="Agents").click()
    await page.get_by_role("button", name="Chat").click()
    await page.locator("#sessions button").first.click()
    items = page.locator("#transcript li")
    await expect(items).to_have_count(200)
    older = page.get_by_role("button", name="Show older facts")
    await older.click()
    await expect(items).to_have_count(400)
    await older.click()
    await expect(items).to_have_count(450)
    await expect(older).to_be_hidden()
    texts = await items.all_inner_texts()
    assert len(set(texts)) == 450, "each fact once"


async def test_no_page_has_a_serious_accessibility_violation(
    kernel: Any, model: ScriptedModel, page: Any
) -> None:
    """axe-core (the engine behind Lighthouse's accessibility audit) on every page."""
    from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]

    model.add({"bash": "echo hi", "text": "checking"}, {"text": "done"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("go")
    await page.keyboard.press("Enter")
    await page.locator("#transcript li.end").filter(has_text="done ·").wait_for()
    axe = Axe()
    found = {}
    for name in ("Chat", "Approvals", "Mission control", "Agents", "Skills", "Usage"):
        await page.get_by_role("button", name=name, exact=True).click()
        results = await axe.run(page)
        bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        found[name] = [f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes)" for v in bad]
    assert not any(found.values()), found


async def test_an_approval_answered_elsewhere_leaves_the_inbox_at_once(
    kernel: Any, model: ScriptedModel, page: Any, rpc: Any
) -> None:
    """The page polls approvals only every 30 s: seeing it within 5 s means the push works."""
    from playwright.async_api import expect

    hold_commands(kernel)
    model.add({"bash": "echo ok"}, {"text": "done"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("go")
    await page.keyboard.press("Enter")
    badge = page.locator("#badge")
    await expect(badge).to_have_text("1", timeout=5000)
    pending = (await rpc.call("approval.list", {}))["approvals"]
    await rpc.call(
        "approval.resolve", {"approval": pending[0]["id"], "decision": "deny", "note": "from the CLI"}
    )
    await expect(badge).to_be_hidden(timeout=5000)
    await expect(page.get_by_role("dialog")).to_be_hidden()  # answered elsewhere: the dialog goes


async def test_the_approval_dialog_is_answered_from_the_keyboard(
    kernel: Any, model: ScriptedModel, page: Any, rpc: Any
) -> None:
    from playwright.async_api import expect

    hold_commands(kernel)
    model.add({"bash": "echo approved"}, {"text": "done"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("go")
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="A command waits for you")
    await dialog.wait_for()
    await expect(dialog.locator("pre")).to_have_text("echo approved")
    await page.keyboard.press("Enter")  # focus starts on Approve
    await expect(dialog).to_be_hidden()
    await page.locator("#transcript li.end").filter(has_text="done ·").wait_for()
    assert await page.locator(".card pre").inner_text() == "approved\n"
    decided = (await rpc.call("approval.list", {"status": "approved"}))["approvals"]
    assert [a["command"] for a in decided] == ["echo approved"]


async def test_fork_show_all_output_and_find_a_session(kernel: Any, model: ScriptedModel, page: Any) -> None:
    from playwright.async_api import expect

    model.add({"bash": "seq 1 20000"}, {"text": "counted"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("count")
    await page.keyboard.press("Enter")
    await page.locator("#transcript li.end").filter(has_text="done ·").wait_for()
    pre = page.locator(".card pre")
    assert "\n10000\n" not in await pre.inner_text(), "the big output is folded"
    # The whole output, fetched on demand from content.
    await page.get_by_role("button", name="Show all output").click()
    await expect(pre).to_contain_text("\n10000\n")
    assert (await pre.inner_text()).strip().endswith("20000")
    # Fork at the first message: a new session holding just that fact.
    first = (await page.locator("#sessions button[aria-current]").inner_text()).split(" ")[0]
    await page.get_by_role("button", name="Fork the session at fact 1").click()
    await expect(page.locator("#sessions button")).to_have_count(2)
    await expect(page.locator("#transcript li")).to_have_count(1)
    await expect(page.locator("#transcript li.user")).to_contain_text("count")
    forked = (await page.locator("#sessions button[aria-current]").inner_text()).split(" ")[0]
    assert forked != first
    # Find a session by part of its id.
    await page.get_by_label("Find a session").fill(first[-6:])
    await expect(page.locator("#sessions button")).to_have_count(1)
    await expect(page.locator("#sessions button")).to_contain_text(first)


async def test_every_page_fits_a_phone_screen(kernel: Any, model: ScriptedModel, page: Any) -> None:
    """At a phone's width (390 px) nothing scrolls sideways: not the nav, not a long unbroken
    command or output line, not the tables; every nav button stays on screen."""
    await page.set_viewport_size({"width": 390, "height": 844})
    long_word = "x" * 300
    model.add({"bash": f"echo {long_word}", "text": "a long line"}, {"text": f"done {long_word}"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("print a long line")
    await page.keyboard.press("Enter")
    await page.locator("#transcript li.end").filter(has_text="done ·").wait_for()
    overflow = {}
    for name in ("Chat", "Approvals", "Mission control", "Agents", "Skills", "Usage"):
        await page.get_by_role("button", name=name, exact=True).click()
        widths = await page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        if widths[0] > widths[1]:
            overflow[name] = widths
        for box in [await b.bounding_box() for b in await page.locator("nav button").all()]:
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
    assert not overflow, f"pages wider than the screen (scrollWidth, clientWidth): {overflow}"


async def test_a_commands_output_shows_in_its_card_as_it_prints(
    kernel: Any, model: ScriptedModel, page: Any
) -> None:
    from playwright.async_api import expect

    from .rpc import workspace

    gate = workspace(kernel.paths.home, "ada") / "gate.fifo"
    os.mkfifo(gate)
    model.add({"bash": f"echo first; cat {gate}; echo second"}, {"text": "printed"})
    await start_chat(page, "ada")
    await page.get_by_label("Message").fill("print slowly")
    await page.keyboard.press("Enter")
    card = page.locator(".card").first
    await expect(card.locator("pre.live")).to_have_text("first\n")  # while the command still runs
    await expect(card.locator(".meta")).to_have_text("running…")
    await asyncio.to_thread(gate.write_text, "middle\n")
    await expect(card.locator(".meta")).to_contain_text("ok · exit 0")
    await expect(card.locator("pre.live")).to_have_count(0)
    await expect(card.locator("details pre")).to_have_text("first\nmiddle\nsecond\n")
