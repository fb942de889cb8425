"""``aos skills``: the skills, their services and logs."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Paths
from .output import (
    EXIT_ERROR,
    EXIT_OK,
    clip,
    echo,
    emit_json,
    fail,
    rpc,
    table,
)


def service_cell(sk: dict[str, Any]) -> str:
    st = sk.get("service_status")
    if not sk["service"]:
        return "-"
    if not st:
        return f"{sk['service']} (not started)"
    extra = f", {st['restarts']} restarts" if st["restarts"] else ""
    if st.get("reload_failed"):
        extra += f", RELOAD FAILED (the previous version serves): {st['reload_failed']}"
    if st["state"] in ("quarantined", "backoff") and st.get("last_error"):
        extra += f": {st['last_error']}"
    if st.get("problem"):
        extra += f", PROBLEM: {st['problem']}"
    hooks = f", hooks: {' '.join(st['hooks'])}" if st["hooks"] else ""
    cmds = f", commands: {' '.join(st['commands'])}" if st["commands"] else ""
    return f"{st['state']}{extra}{hooks}{cmds}"


def cmd_skills(args: argparse.Namespace, paths: Paths) -> int:
    scope: dict[str, Any] = {}
    if getattr(args, "session", None):
        scope["session"] = args.session
    if getattr(args, "agent", None):
        scope["agent"] = args.agent
    if args.skills_cmd == "reload":
        res = rpc(paths, "skill.reload", {"skill": args.name} if args.name else {})
        if args.json:
            emit_json(res)
        else:
            for name in res.get("revived", []):
                echo(f"{name}: its quarantined service is starting again")
            echo(
                f"{res['count']} skills; added {res['added'] or '-'}, removed {res['removed'] or '-'}, changed {res['changed'] or '-'}"
            )
        return EXIT_OK
    if args.skills_cmd == "logs":
        log_path = paths.logs / "skills" / f"{args.name}.log"
        if not log_path.exists():
            fail(f"no log for skill {args.name!r} at {log_path} (has its service ever started?)", "not_found")
            return EXIT_ERROR
        lines = log_path.read_text(errors="replace").splitlines()
        shown = lines[-args.lines :] if args.lines else lines
        if args.json:
            emit_json({"skill": args.name, "path": str(log_path), "lines": shown})
            return EXIT_OK
        for line in shown:
            echo(line)
        return EXIT_OK
    if args.skills_cmd == "show":
        sk = rpc(paths, "skill.get", {"skill": args.name, **scope})
        if args.json:
            emit_json(sk)
            return EXIT_OK
        echo(f"{sk['name']}  ({sk['path']})")
        echo(f"  {sk['description']}")
        verdict = "spec-valid" if sk["spec_valid"] else "NOT spec-valid"
        echo(f"  {verdict}; {'usable' if sk['usable'] else 'NOT usable'} by AOS")
        if sk["enabled"] is not None:
            echo(f"  {'enabled' if sk['enabled'] else 'disabled'} ({sk['why']})")
        if sk["service"]:
            echo(f"  service: {sk['service']}")
            echo(f"  may call: {' '.join(sk['permissions']) or 'no syscalls'}")
            echo(f"  environment from the daemon: {' '.join(sk['env']) or 'none declared (aos-env)'}")
            st = sk.get("service_status")
            if st:
                echo(f"  state: {service_cell(sk)}")
                if st.get("last_error"):
                    echo(f"  last error: {st['last_error']}")
                if st["state"] == "quarantined":
                    echo(f"  quarantined: fix it, then `aos skills reload {sk['name']}` starts it again")
                echo(f"  log: aos skills logs {sk['name']}")
        for d in sk["diagnostics"]:
            echo(f"  {d['level']}: {d['message']}")
        echo("")
        echo(sk["body"])
        return EXIT_OK
    res = rpc(paths, "skill.list", scope)
    if args.json:
        emit_json(res["skills"])
        return EXIT_OK
    rows = []
    for sk in res["skills"]:
        state = "-" if sk["enabled"] is None else ("on" if sk["enabled"] else "off")
        if sk["enabled"] is None:
            state = "on" if sk["usable"] and sk["default_enabled"] else "off"
        problems = "; ".join(d["message"] for d in sk["diagnostics"]) or "-"
        rows.append(
            [
                sk["name"],
                state,
                "yes" if sk["spec_valid"] else "no",
                "yes" if sk["usable"] else "no",
                service_cell(sk),
                (" ".join(sk["permissions"]) or "-") if sk["service"] else "-",
                clip(problems, 70),
            ]
        )
    if not rows:
        echo(f"no skills in {', '.join(res['roots'])}")
        return EXIT_OK
    table(rows, ["skill", "state", "spec", "usable", "service", "may call", "diagnostics"])
    return EXIT_OK
