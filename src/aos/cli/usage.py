"""``aos usage``: tokens and cost."""

from __future__ import annotations

import argparse
from typing import Any

from aos_sdk.errors import NotFound, Unavailable

from ..config import Paths
from .output import (
    EXIT_OK,
    echo,
    emit_json,
    rpc,
    table,
)


def cmd_usage(args: argparse.Namespace, paths: Paths) -> int:
    params: dict[str, Any] = {"group_by": args.by, "since_days": args.days}
    if args.agent:
        params["agent"] = args.agent
    if args.session:
        params["session"] = args.session
    res = rpc(paths, "usage.get", params)
    limits = budget_limits(paths, args.agent)
    if args.json:
        emit_json({**res, "limits": limits})
        return EXIT_OK

    def cost(v: float | None) -> str:
        return "-" if v is None else f"${v:.4f}"

    rows = [
        [r["key"], str(r["calls"]), str(r["prompt_tokens"]), str(r["completion_tokens"]), cost(r["cost"])]
        for r in res["rows"]
    ]
    if not rows:
        echo(f"no model calls in the last {args.days} days")
        show_limits(limits)
        return EXIT_OK
    t = res["total"]
    rows.append(
        ["total", str(t["calls"]), str(t["prompt_tokens"]), str(t["completion_tokens"]), cost(t["cost"])]
    )
    table(rows, [args.by, "calls", "prompt", "completion", "cost"])
    show_limits(limits)
    return EXIT_OK


def budget_limits(paths: Paths, agent: str | None) -> list[dict[str, Any]] | None:
    """Each agent's limits, used and left (aos-budget); None when that skill does not run."""
    try:
        got = rpc(
            paths,
            "skill.command",
            {"skill": "aos-budget", "command": "status", "args": {"as_json": True}, "agent": agent},
        )
    except (NotFound, Unavailable):
        return None
    return list(got["result"])


def show_limits(limits: list[dict[str, Any]] | None) -> None:
    if not limits:
        return
    echo("")

    def amount(key: str, v: float | None) -> str:
        if v is None:
            return "-"
        return f"${v:.4f}" if key.endswith("_cost") else str(int(v))

    rows = [
        [
            r["agent"],
            r["label"],
            amount(r["limit"], r["max"]),
            amount(r["limit"], r["used"]),
            amount(r["limit"], r.get("left")),
            str(r.get("resets") or "per session"),
        ]
        for r in limits
    ]
    table(rows, ["agent", "limit", "max", "used", "left", "resets"])
