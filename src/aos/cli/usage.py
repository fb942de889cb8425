"""``aos usage``: tokens and cost."""

from __future__ import annotations

import argparse
from typing import Any

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
    if args.json:
        emit_json(res)
        return EXIT_OK

    def cost(v: float | None) -> str:
        return "-" if v is None else f"${v:.4f}"

    rows = [
        [r["key"], str(r["calls"]), str(r["prompt_tokens"]), str(r["completion_tokens"]), cost(r["cost"])]
        for r in res["rows"]
    ]
    if not rows:
        echo(f"no model calls in the last {args.days} days")
        return EXIT_OK
    t = res["total"]
    rows.append(
        ["total", str(t["calls"]), str(t["prompt_tokens"]), str(t["completion_tokens"]), cost(t["cost"])]
    )
    table(rows, [args.by, "calls", "prompt", "completion", "cost"])
    return EXIT_OK
