"""Regenerate the web UI's screenshots in docs/ (not a benchmark; it lives beside them because it
drives a whole daemon the same way).

A daemon in a temporary ``AOS_HOME`` with the built-in skills, the scripted model, and Debian's
Chromium through Playwright: a chat with one command, then a guarded command waiting in the
approvals inbox, then mission control, the agents, skills and usage pages::

    uv run python bench/ui_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from react_bench import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
SCRIPT = [
    {"bash": "ls -la && df -h / | tail -1", "text": "Let me look at the workspace first."},
    {"text": "The workspace is empty, and 80 GB of the disk are free."},
    {"bash": "git push --force origin main"},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="aos-shots-"))
    port = free_port()
    (base / "script.json").write_text(json.dumps(SCRIPT))
    model = subprocess.Popen(
        [sys.executable, "-m", "aos_sdk.testing", "--script", str(base / "script.json"), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert model.stdout is not None
    model.stdout.readline()
    home = base / "home"
    home.mkdir()
    config = {
        "ui": {"port": 0},
        "model": "openai/scripted",
        "model_params": {"api_base": f"http://127.0.0.1:{port}/v1", "api_key": "x"},
    }
    (home / "aoscb.json").write_text(json.dumps(config))
    env = {**os.environ, "AOS_HOME": str(home)}
    aos = [sys.executable, "-m", "aos"]
    try:
        subprocess.run([*aos, "start"], env=env, check=True, capture_output=True)
        link = subprocess.run(
            [*aos, "ui"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            page.goto(link)
            page.get_by_text("New agent").click()
            page.get_by_label("Name", exact=True).fill("ada")
            page.locator("#agent-form").get_by_label("Instructions").fill(
                "You know this machine. Answer in one sentence."
            )
            page.get_by_role("button", name="Create").click()
            page.locator("#agent option", has_text="ada").wait_for(state="attached")
            page.get_by_role("button", name="New session").click()
            page.wait_for_selector("#sessions button[aria-current]")
            page.get_by_label("Message").fill("How much disk space is free?")
            page.keyboard.press("Enter")
            page.locator("#transcript li.end").filter(has_text="done ·").wait_for()
            page.screenshot(path=str(out / "ui-chat.png"))
            page.get_by_label("Message").fill("Push the branch.")
            page.keyboard.press("Enter")
            page.locator("#badge").filter(has_text="1").wait_for()
            dialog = page.get_by_role("dialog")
            dialog.wait_for()
            page.screenshot(path=str(out / "ui-dialog.png"))
            dialog.get_by_role("button", name="Later").click()
            page.get_by_role("button", name="Approvals").click()
            page.locator("#approval-list li").first.wait_for()
            page.screenshot(path=str(out / "ui-approvals.png"))
            subprocess.run([*aos, "agent", "create", "bo"], env=env, check=True, capture_output=True)
            sid = json.loads(
                subprocess.run(
                    [*aos, "call", "session.create", '{"agent": "bo"}'],
                    env=env,
                    check=True,
                    capture_output=True,
                ).stdout
            )["id"]
            msg = {
                "id": "m1",
                "from": "bo",
                "to": ["ada"],
                "mode": "notify",
                "text": "The backup finished: 12 GB.",
            }
            params = json.dumps({"session": sid, "kind": "a2a.sent", "body": msg})
            subprocess.run([*aos, "call", "session.append", params], env=env, check=True, capture_output=True)
            page.get_by_role("button", name="Mission control").click()
            page.locator("#a2a-feed li").first.wait_for()
            page.locator(".agent-card.waiting").wait_for()
            page.screenshot(path=str(out / "ui-mission.png"))
            shown = {"Agents": "#edit-agent option", "Skills": "#skill-rows tr", "Usage": "#log-rows tr"}
            for name, selector in shown.items():
                page.get_by_role("button", name=name, exact=True).click()
                page.locator(selector).first.wait_for(state="attached")
                page.screenshot(path=str(out / f"ui-{name.lower()}.png"))
            browser.close()
        print(f"wrote ui-{{chat,dialog,approvals,mission,agents,skills,usage}}.png in {out}")
    finally:
        subprocess.run([*aos, "stop"], env=env, capture_output=True)
        model.send_signal(signal.SIGINT)
        model.wait(10)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
