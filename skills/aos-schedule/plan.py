"""aos-schedule's arithmetic: when a schedule is due, quiet hours, back-off, catch-up, levels.

Nothing here does I/O; :mod:`service` keeps the state and talks to the kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

#: The shortest interval: a schedule is a heartbeat, not a busy loop.
MIN_EVERY_S = 60
#: Back-off stops growing here: a schedule that keeps finding nothing runs 16 times less often.
MAX_BACKOFF = 16
#: The levels of a run's result, mildest first.
LEVELS = ("ok", "warn", "alert")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TAG = re.compile(r"^\W*(OK|WARN|WARNING|ALERT)\b[*_:.\s-]*", re.IGNORECASE)


class PlanError(ValueError):
    """A schedule's definition does not make sense; the message says how to fix it."""


def parse_every(text: str) -> int:
    """``30m`` -> 1800. Units s, m, h, d; combinations such as ``1h30m`` work."""
    parts = re.fullmatch(r"(?:\d+[smhd])+", text.strip().lower())
    if not parts:
        raise PlanError(f"--every {text!r}: give a duration such as 30s, 5m, 1h30m or 1d")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd])", text.lower()))
    if seconds < MIN_EVERY_S:
        raise PlanError(f"--every {text!r}: at least {MIN_EVERY_S // 60} minute between runs")
    return seconds


def say_every(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_quiet(text: str) -> tuple[time, time]:
    """``22:00-07:00`` -> (22:00, 07:00); a window may wrap past midnight."""
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if not m:
        raise PlanError(f"--quiet {text!r}: give a window such as 22:00-07:00")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
        raise PlanError(f"--quiet {text!r}: two different times of day, HH:MM-HH:MM")
    return time(h1, m1), time(h2, m2)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(
            f"--tz {name!r}: not a time zone this machine knows (e.g. UTC, Europe/Berlin)"
        ) from None


def check_cron(expr: str) -> str:
    try:
        CronSim(expr, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise PlanError(f"--cron {expr!r}: {exc} (five fields: minute hour day month weekday)") from None
    return expr


@dataclass(frozen=True)
class When:
    """When a schedule runs: every N seconds or on a cron expression, outside quiet hours."""

    every_s: int | None
    cron: str | None
    quiet: tuple[time, time] | None
    tz: ZoneInfo

    @classmethod
    def of(cls, d: dict[str, Any]) -> When:
        quiet = parse_quiet(d["quiet"]) if d.get("quiet") else None
        return cls(d.get("every_s"), d.get("cron"), quiet, zone(str(d.get("tz") or "UTC")))

    def quiet_at(self, at: datetime) -> bool:
        if self.quiet is None:
            return False
        t = at.astimezone(self.tz).time()
        start, end = self.quiet
        return start <= t < end if start < end else t >= start or t < end

    def quiet_ends(self, at: datetime) -> datetime:
        """The first moment after ``at`` that is outside the quiet window (``at`` is inside)."""
        assert self.quiet is not None
        local = at.astimezone(self.tz)
        end = local.replace(hour=self.quiet[1].hour, minute=self.quiet[1].minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end.astimezone(UTC)

    def after(self, at: datetime, skip: int = 0) -> datetime:
        """The run after ``at`` (``skip`` more runs passed over: back-off), moved past quiet hours."""
        if self.every_s is not None:
            nxt = at + timedelta(seconds=self.every_s * (skip + 1))
        else:
            assert self.cron is not None
            it = CronSim(self.cron, at.astimezone(self.tz))
            for _ in range(skip):
                next(it)
            nxt = next(it).astimezone(UTC)
        if self.quiet_at(nxt):
            nxt = self.quiet_ends(nxt)
        return nxt

    def latest_due(self, due: datetime, now: datetime) -> tuple[datetime, int]:
        """The newest run time at or before ``now``, counting from ``due`` (which is), and how
        many run times before it were missed (the daemon was down, or asleep)."""
        if self.every_s is not None:
            k = int((now - due).total_seconds() // self.every_s)
            return due + timedelta(seconds=self.every_s * k), k
        missed, latest = 0, due
        while missed < 100_000:
            nxt = self.after(latest)
            if nxt > now:
                break
            latest, missed = nxt, missed + 1
        return latest, missed

    def describe(self) -> str:
        base = f"every {say_every(self.every_s)}" if self.every_s is not None else f"cron {self.cron!r}"
        if self.quiet is not None:
            base += f", quiet {self.quiet[0]:%H:%M}-{self.quiet[1]:%H:%M}"
        if str(self.tz) != "UTC":
            base += f" ({self.tz})"
        return base


def backoff_skip(empty_runs: int) -> int:
    """Runs passed over after ``empty_runs`` model runs in a row that found nothing: none after
    the first, then 1, 3, 7, 15 (the interval doubles each time, up to :data:`MAX_BACKOFF`)."""
    if empty_runs <= 1:
        return 0
    return int(min(2 ** (empty_runs - 1), MAX_BACKOFF)) - 1


def probe_level(exit_code: int | None, outcome: str) -> str:
    """A probe's exit code as a level: 0 nothing to do, 1 warn, anything else (or a timeout) alert
    (the Nagios convention, which many existing checks follow)."""
    if outcome == "ok" or exit_code == 0:
        return "ok"
    return "warn" if exit_code == 1 else "alert"


def reply_level(reply: str | None, default: str) -> tuple[str, str]:
    """The level the agent's final answer starts with (``OK:``, ``WARN:``, ``ALERT:``), else
    ``default``; and the answer without the tag."""
    text = (reply or "").strip()
    m = _TAG.match(text)
    if not m:
        return default, text
    tag = m.group(1).upper()
    return {"WARNING": "warn"}.get(tag, tag.lower()), text[m.end() :].strip()


def next_midnight(at: datetime, tz: ZoneInfo) -> datetime:
    local = at.astimezone(tz)
    return (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def day_of(at: datetime, tz: ZoneInfo) -> str:
    return f"{at.astimezone(tz):%Y-%m-%d}"
