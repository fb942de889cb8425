"""aos-schedule's arithmetic (skills/aos-schedule/plan.py): due times, quiet hours across
midnight and time zones, cron, catch-up counts, back-off, and how results become levels."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "skills" / "aos-schedule"))

from plan import (
    PlanError,
    When,
    backoff_skip,
    parse_every,
    probe_level,
    reply_level,
)

FRIDAY = datetime(2026, 3, 6, 10, 0, tzinfo=UTC)


def test_intervals_parse_and_too_short_or_unclear_ones_are_refused() -> None:
    assert parse_every("30m") == 1800 and parse_every("1h30m") == 5400 and parse_every("2d") == 172800
    for bad in ("30s", "soon", "5", "m5", ""):
        with pytest.raises(PlanError):
            parse_every(bad)


def test_quiet_hours_wrap_past_midnight_and_follow_the_time_zone() -> None:
    w = When.of({"every_s": 3600, "quiet": "22:00-07:00"})
    assert w.after(FRIDAY.replace(hour=21)) == FRIDAY.replace(hour=7) + timedelta(days=1)
    assert w.after(FRIDAY.replace(hour=6)) == FRIDAY.replace(hour=7)
    berlin = When.of({"every_s": 3600, "quiet": "22:00-07:00", "tz": "Europe/Berlin"})
    # 20:30 UTC is 21:30 in Berlin: the next hour, 22:30 there, is quiet until 07:00 there (06:00 UTC).
    assert berlin.after(FRIDAY.replace(hour=20, minute=30)) == FRIDAY.replace(hour=6) + timedelta(days=1)


def test_cron_skips_the_weekend_and_catch_up_counts_what_was_missed() -> None:
    w = When.of({"cron": "0 9 * * 1-5"})
    monday = FRIDAY.replace(hour=9) + timedelta(days=3)
    assert w.after(FRIDAY) == monday
    latest, missed = w.latest_due(FRIDAY.replace(hour=9), monday + timedelta(days=2, hours=1))
    assert latest == monday + timedelta(days=2) and missed == 3  # Mon, Tue, then Wed stands for them
    every = When.of({"every_s": 1800})
    assert every.latest_due(FRIDAY, FRIDAY + timedelta(hours=2, minutes=10)) == (
        FRIDAY + timedelta(hours=2),
        4,
    )
    assert every.after(FRIDAY, skip=3) == FRIDAY + timedelta(hours=2)


def test_back_off_doubles_up_to_sixteen_times_the_interval() -> None:
    assert [backoff_skip(n) for n in range(8)] == [0, 0, 1, 3, 7, 15, 15, 15]


def test_levels_come_from_the_probe_and_the_answers_tag() -> None:
    assert [probe_level(c, "error") for c in (1, 2, 127)] == ["warn", "alert", "alert"]
    assert probe_level(0, "ok") == "ok" and probe_level(None, "timeout") == "alert"
    assert reply_level("ALERT: disk full", "ok") == ("alert", "disk full")
    assert reply_level("**Warning** - slow", "ok") == ("warn", "slow")
    assert reply_level("ok. nothing new", "alert") == ("ok", "nothing new")
    assert reply_level("All fine.", "warn") == ("warn", "All fine."), "no tag: the probe's level"
    assert reply_level(None, "ok") == ("ok", "")
