"""``aos``: start, stop and talk to the AOS daemon.

Kept fast on purpose: a CLI call imports argparse, the small sync client and nothing heavy
(no pydantic, psycopg or litellm); the daemon's modules load only for ``aos start``.

Exit codes: 0 success; 1 the daemon answered with an error; 2 bad usage or configuration;
3 the daemon is not running.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aos_sdk.errors import AosError, Unavailable

from ..config import Paths, load_dotenv
from .approvals import cmd_approvals, cmd_hooks, cmd_resolve
from .chat import cmd_chat, cmd_interrupt, cmd_send
from .daemon import cmd_logs, cmd_start, cmd_status, cmd_stop, cmd_ui
from .objects import cmd_agent, cmd_call, cmd_history, cmd_session
from .output import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    emit_json,
    fail,
    json_errors,
)
from .skill_clis import SKILL_CLIS, cmd_skill_cli
from .skill_clis import add_parsers as add_skill_clis
from .skills import cmd_skills
from .usage import cmd_usage


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of human output")

    p = argparse.ArgumentParser(
        prog="aos",
        description="AOS, a local operating system for LLM agents. The daemon keeps state in PostgreSQL "
        "under $AOS_HOME (default ~/.aos).",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not running.",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("start", parents=[common], help="start the daemon (returns once it serves)")
    s.add_argument("--foreground", action="store_true", help="stay attached (for systemd and debugging)")
    s.add_argument(
        "--unsafe-durability",
        action="store_true",
        help="run even if the database has fsync or synchronous_commit off",
    )
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")
    s.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_start)

    s = sub.add_parser("stop", parents=[common], help="stop the daemon and everything it started")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL (default 30)")
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("status", parents=[common], help="is the daemon running; pid, uptime, database")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("logs", parents=[common], help="show the daemon log readably")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    s.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0: all; default 50)")
    s.add_argument("--raw", action="store_true", help="print the JSON lines as stored")
    s.set_defaults(func=cmd_logs)

    a = sub.add_parser("agent", help="create, change, list, show, archive agents")
    asub = a.add_subparsers(dest="agent_cmd", required=True, metavar="ACTION")
    x = asub.add_parser("create", parents=[common], help="create an agent")
    x.add_argument("name", help="unique name: lowercase letters, digits, - and _")
    x.add_argument("--model", help="litellm model id (default: aoscb.json's model)")
    x.add_argument("--instructions", help="standing instructions for the agent")
    x.add_argument("--instructions-file", help="read the instructions from a file")
    x.add_argument("--display-name")
    x.add_argument(
        "--workspace",
        help="bash working folder (default $AOS_HOME/workspaces/<name>; a relative path is taken from here)",
    )
    x.add_argument(
        "--placement",
        metavar="KERNEL|any|here",
        help="with several kernels on one database: the kernel that runs it (the one holding its"
        " workspace), or any when workspaces are shared storage (default: kernel.shared_workspaces)",
    )
    x = asub.add_parser(
        "set",
        parents=[common],
        help="change an agent: model, instructions, workspace, guard rules, settings",
        description="Change an agent. Settings are merged: only what you name changes. A secret"
        " shown as *** keeps its value.",
    )
    x.add_argument("agent", help="name or id")
    x.add_argument("--model", help="litellm model id ('' for aoscb.json's default)")
    x.add_argument("--instructions", help="standing instructions for the agent")
    x.add_argument("--instructions-file", help="read the instructions from a file")
    x.add_argument("--display-name")
    x.add_argument("--workspace", help="bash working folder (a relative path is taken from here)")
    x.add_argument(
        "--placement",
        metavar="KERNEL|any|here",
        help="with several kernels on one database: move it to a kernel (copy its workspace"
        " there first), to here (this kernel), or to any (shared workspaces)",
    )
    for verdict, what in (("allow", "run without asking"), ("ask", "ask a person first"), ("deny", "refuse")):
        x.add_argument(
            f"--guard-{verdict}",
            action="append",
            default=[],
            metavar="REGEX",
            help=f"aos-guard: commands matching this {what} (repeatable; added to the agent's rules)",
        )
    x.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a setting by its dotted path, e.g. model_params.api_base='\"http://localhost:8000/v1\"'"
        " or sandbox.network=false (the value is JSON; a bare word is taken as a string)",
    )
    x.add_argument(
        "--unset", action="append", default=[], metavar="KEY", help="remove a setting (dotted path)"
    )
    x = asub.add_parser("list", parents=[common], help="list agents")
    x.add_argument("--all", action="store_true", help="include archived agents")
    x = asub.add_parser("show", parents=[common], help="show one agent")
    x.add_argument("agent", help="name or id")
    x = asub.add_parser("archive", parents=[common], help="archive an agent and its sessions")
    x.add_argument("agent", help="name or id")
    x = asub.add_parser(
        "restore", parents=[common], help="make an archived agent active again (its sessions stay archived)"
    )
    x.add_argument("agent", help="name or id")
    a.set_defaults(func=cmd_agent)

    se = sub.add_parser("session", help="create, list, show sessions")
    ssub = se.add_subparsers(dest="session_cmd", required=True, metavar="ACTION")
    x = ssub.add_parser("create", parents=[common], help="create a session for an agent")
    x.add_argument("agent", help="agent name or id")
    x.add_argument("--title")
    x = ssub.add_parser("list", parents=[common], help="list sessions, newest first")
    x.add_argument("--agent", help="only this agent's")
    x.add_argument("--all", action="store_true", help="include archived sessions")
    x.add_argument("--limit", type=int, default=50)
    x = ssub.add_parser("show", parents=[common], help="show one session")
    x.add_argument("session")
    se.set_defaults(func=cmd_session)

    h = sub.add_parser("history", parents=[common], help="print a session's history")
    h.add_argument("session")
    h.add_argument("-f", "--follow", action="store_true", help="keep printing new facts as they are appended")
    h.add_argument("--after", type=int, default=0, help="start after this seq (default 0: everything)")
    h.set_defaults(func=cmd_history)

    x = sub.add_parser(
        "send",
        parents=[common],
        help="send a message to an agent or a session (runs the agent)",
        description="Send a message. To an agent's name: its latest session (a new one if it has none)."
        " While the agent works on that session, the message is steered into the running dispatch"
        " (it reads it at its next step) unless --queue makes it the next dispatch instead.",
    )
    x.add_argument("target", metavar="AGENT_OR_SESSION", help="an agent's name or id, or a session id (se_…)")
    x.add_argument("text")
    x.add_argument("--wait", action="store_true", help="stream the reply until the dispatch ends")
    x.add_argument(
        "--queue", action="store_true", help="while the agent works: run this after, as a dispatch of its own"
    )
    x.add_argument("--new", action="store_true", help="to an agent: start a new session for it")
    x.set_defaults(func=cmd_send)

    x = sub.add_parser(
        "chat",
        parents=[common],
        help="talk to an agent interactively",
        description="Talk to an agent. In a terminal: a prompt with line editing, history and slash"
        " commands (/help). From a pipe: one line per reply (with --json, the facts as JSON lines).",
    )
    x.add_argument("agent", help="agent name or id")
    x.add_argument("--session", help="resume this session (default: the agent's latest)")
    x.add_argument("--new", action="store_true", help="start a new session")
    x.set_defaults(func=cmd_chat)

    x = sub.add_parser("interrupt", parents=[common], help="stop a session's running dispatch")
    x.add_argument("session")
    x.add_argument("--reason", default="interrupted by the user")
    x.set_defaults(func=cmd_interrupt)

    x = sub.add_parser("hooks", parents=[common], help="every hook and its handlers, in firing order")
    x.set_defaults(func=cmd_hooks)

    x = sub.add_parser("approvals", parents=[common], help="commands waiting for a human decision")
    x.add_argument("--all", action="store_true", help="include resolved ones")
    x.add_argument("--session")
    x.set_defaults(func=cmd_approvals)
    for verb, what in (("approve", "let a command run"), ("deny", "refuse a command")):
        x = sub.add_parser(verb, parents=[common], help=what)
        x.add_argument("approval", help="approval id (aos approvals lists them)")
        x.add_argument("--note", help="a note for the agent and the record")
        if verb == "approve":
            x.add_argument(
                "--always",
                action="store_true",
                help="and from now on for this agent: the exact command goes into its guard's allow rules",
            )
        x.set_defaults(func=cmd_resolve)

    x = sub.add_parser("usage", parents=[common], help="tokens and cost of model calls")
    x.add_argument("--by", choices=["day", "agent", "session", "model"], default="day")
    x.add_argument("--agent")
    x.add_argument("--session")
    x.add_argument("--days", type=int, default=30)
    x.set_defaults(func=cmd_usage)

    sk = sub.add_parser("skills", parents=[common], help="every skill: verdicts, state, diagnostics")
    sk.add_argument("--session", help="show what is enabled for this session")
    sk.add_argument("--agent", help="show what is enabled for this agent")
    sksub = sk.add_subparsers(dest="skills_cmd", metavar="ACTION")
    x = sksub.add_parser("show", parents=[common], help="one skill, with its SKILL.md text")
    x.add_argument("name")
    x = sksub.add_parser(
        "reload",
        parents=[common],
        help="re-scan the skill roots now; with a name, also restart that skill's quarantined service",
    )
    x.add_argument("name", nargs="?", help="a skill whose quarantined service should start again")
    x = sksub.add_parser("logs", parents=[common], help="the last lines of a skill service's log")
    x.add_argument("name")
    x.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0: all; default 50)")
    sk.set_defaults(func=cmd_skills)

    x = sub.add_parser(
        "ui",
        parents=[common],
        help="print the web UI's sign-in link (good for one sign-in)",
        description="Print a link that signs this browser in to the web UI (aos-frontend). "
        "Each link works once; run `aos ui` again for another browser.",
    )
    x.add_argument("--open", action="store_true", help="also open it in a browser, when there is one")
    x.add_argument("--wait", type=float, default=10, help="seconds to wait for the UI to start (default 10)")
    x.set_defaults(func=cmd_ui)

    add_skill_clis(sub)

    c = sub.add_parser("call", parents=[common], help="call a syscall with JSON params (raw access)")
    c.add_argument("syscall", nargs="?", help="e.g. agent.list")
    c.add_argument("params", nargs="?", default="", help="JSON object, or - to read it from stdin")
    c.add_argument("--list", action="store_true", help="list every syscall")
    c.set_defaults(func=cmd_call)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in SKILL_CLIS:  # everything after the word is the skill CLI's own
        args = argparse.Namespace(
            func=cmd_skill_cli, skill_cli=words[0], rest=words[1:], json="--json" in words
        )
    else:
        args = build_parser().parse_args(words)
    json_errors(bool(getattr(args, "json", False)))
    paths = Paths.from_env()
    load_dotenv(paths)
    try:
        return int(args.func(args, paths))
    except Unavailable as exc:
        if exc.details.get("not_running"):  # no daemon to answer at all (raised by the client)
            fail(
                f"aos is not running (no daemon on {paths.kernel_sock}); start it with `aos start`",
                "not_running",
            )
            return EXIT_NOT_RUNNING
        # The daemon answered: something it needs is down (the database, a model), or it is stopping.
        if getattr(args, "json", False):
            emit_json({"error": exc.to_error()})
        else:
            fail(f"{exc.type}: {exc.message}")
        return EXIT_ERROR
    except AosError as exc:
        if getattr(args, "json", False):
            emit_json({"error": exc.to_error()})
        else:
            fail(f"{exc.type}: {exc.message}")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
