"""The web UI in a real browser: how soon a fact shows, and how soon a long session opens.

A daemon in a temporary ``AOS_HOME`` (its built-in skills, aos-frontend on a free port) and
Debian's Chromium through Playwright, signed in with ``aos ui``'s link:

- **fact to card**: a fact is appended through the kernel socket; a MutationObserver in the page
  notes when its item enters the transcript. Wall clock on both sides (one machine).
- **open a long session**: a session of ``--facts`` facts (10,000 by default) is opened from the
  sessions list until its tail (the newest 200 facts) is on the page.

::

    uv run python bench/ui_bench.py [--appends 200] [--facts 10000] [--opens 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import pct
from aos_sdk.syncclient import SyncClient

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
OBSERVE = """() => {
  window.__seen = {};
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      const m = /mark-(\\d+)/.exec(n.textContent || "");
      if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = Date.now();
    }
  }).observe(document.getElementById("transcript"), { childList: true });
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appends", type=int, default=200)
    ap.add_argument("--facts", type=int, default=10000)
    ap.add_argument("--opens", type=int, default=10)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="aos-uibench-"))
    home = base / "home"
    home.mkdir()
    (home / "aoscb.json").write_text(json.dumps({"ui": {"port": 0}}))
    env = {**os.environ, "AOS_HOME": str(home)}
    aos = [sys.executable, "-m", "aos"]
    try:
        subprocess.run([*aos, "start"], env=env, check=True, capture_output=True)
        link = subprocess.run(
            [*aos, "ui"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        admin = SyncClient(home / "run" / "kernel.sock", timeout=60)
        agent = admin.call("agent.create", {"name": "bench"})
        live = admin.call("session.create", {"agent": agent["id"]})["id"]
        long = admin.call("session.create", {"agent": agent["id"]})["id"]
        print(f"appending {args.facts} facts to the long session…", file=sys.stderr)
        for i in range(args.facts):
            admin.call("session.append", {"session": long, "kind": "note", "body": f"old fact {i}"})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(link)
            page.locator("#sessions button").first.wait_for()
            buttons = page.locator("#sessions button")
            # The list is newest first: the long session, then the live one.
            buttons.nth(1).click()
            page.locator("#sessions button[aria-current]").wait_for()
            page.evaluate(OBSERVE)
            sent: dict[str, float] = {}
            for i in range(args.appends):
                sent[str(i)] = time.time() * 1000
                admin.call("session.append", {"session": live, "kind": "note", "body": f"mark-{i}"})
                page.locator("#transcript li", has_text=f"mark-{i}").wait_for()
            seen = page.evaluate("window.__seen")
            to_card = [seen[k] - sent[k] for k in sent if k in seen]
            opens = []
            for _ in range(args.opens):
                buttons.nth(1).click()
                page.locator("#sessions button[aria-current]").wait_for()
                t0 = time.perf_counter()
                buttons.nth(0).click()
                page.locator("#transcript li", has_text=f"old fact {args.facts - 1}").wait_for()
                page.locator("#transcript li").nth(199).wait_for()
                opens.append((time.perf_counter() - t0) * 1000)
            browser.close()
        admin.close()
    finally:
        subprocess.run([*aos, "stop"], env=env, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

    print(f"\nthe web UI in Chromium ({args.appends} appends, {args.opens} opens of {args.facts} facts)\n")
    print(f"| {'measure':44} | {'p50':>9} | {'p99':>9} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|")
    for name, xs in (
        ("fact appended → its item in the transcript", to_card),
        (f"open a {args.facts:,}-fact session → its tail shown", opens),
    ):
        xs.sort()
        print(f"| {name:44} | {xs[len(xs) // 2]:6.1f} ms | {pct(xs, 0.99):6.1f} ms |")


if __name__ == "__main__":
    main()
