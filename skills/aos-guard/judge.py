"""What a bash command will run, read as bash reads it, and the rules aos-guard applies to it.

The command is parsed with tree-sitter's bash grammar. Every simple command that would run is
judged: each stage of a pipeline, each command substitution and process substitution, the strings
given to ``sh -c`` and ``eval``, the commands ``xargs``, ``find -exec``, ``sudo``, ``env``,
``nohup``, ``timeout`` … run. Words are resolved as bash would: quotes and backslashes removed,
variables assigned earlier in the same command substituted, ``~`` and ``$HOME`` recognised, ``cd``
followed. What cannot be known before running (a variable from elsewhere, a command substitution,
input read by ``xargs``) is *unknown*, and a rule that needs it asks a person.

:func:`judge` returns ``None`` (let it run) or a :class:`Verdict`.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

__all__ = ["Verdict", "judge"]

_PARSER = Parser(Language(tree_sitter_bash.language()))
HOME = "~"  # what ~, $HOME and ${HOME} stand for: the agent's home, wherever it is

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "ash"}
INTERPRETERS = {"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "deno", "bun"}
DOWNLOADERS = {"curl", "wget", "fetch", "aria2c", "http", "https", "xh"}
ESCALATION = {"sudo", "doas", "su", "pkexec", "run0"}
# Wrappers that run the rest of their arguments as a command (after their own options).
WRAPPERS = {
    "nohup", "nice", "time", "command", "builtin", "exec", "setsid", "stdbuf", "ionice", "chrt", "unbuffer",
    "busybox", "flock", "watch", "strace", "ltrace", "chroot", "unshare", "nsenter", "firejail",
}  # fmt: skip
_WRAPPER_ARGS = {"timeout": 1, "chrt": 1}  # positional arguments before the command
_DEVICE = re.compile(r"^/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|dm-|md\d|loop|sr\d|nbd|mapper/|disk/|zd|rbd)")
_SYSTEM_TOP = {
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/var", "/snap", "/nix",
}  # fmt: skip
_INLINE_FLAGS = {
    "python": "-c",
    "perl": "-e",
    "ruby": "-e",
    "node": "-e",
    "php": "-r",
    "deno": "eval",
    "bun": "-e",
}
_INLINE_RISKY = re.compile(
    r"rmtree|os\.remove|os\.unlink|\bunlink|rm_rf|rm\s+-\w*r|os\.system|subprocess|popen|\bexec[lv]?p?\(|"
    r"\bspawn|child_process|shell_exec|\bsystem\s*\(|fs\.rm|rimraf|File\.delete|FileUtils",
    re.I,
)
_INLINE_ROOT = re.compile(r"""(?:rmtree|rm_rf|rimraf|rmSync|rmdirSync|\.rm)\s*\(\s*['"](?:/|~|/\*)['"]""")


# For text the parser could not read whole: patterns on the raw command.
_RM_R = r"\brm\s+(?:-[^\s]*\s+)*(?:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive)\s+(?:-[^\s]*\s+)*"
_TEXT_RULES = [
    ("reject", _RM_R + r"(?:/\*?|~/?\*?|\$HOME/?\*?|\$\{HOME\}/?\*?)(?=$|[\s;&|)'\"])", "recursive delete of / or the home directory"),
    ("reject", r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:", "fork bomb"),
    ("reject", r"\bdd\b[^\n]*\bof=/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|disk|mapper)", "raw write to a disk device"),
    ("reject", r"\bmkfs(?:\.\w+)?\b", "formatting a filesystem"),
    ("ask", r"(?:^|[\s;&|(/])sudo\b", "runs a command as another user"),
    ("ask", r"\bgit\b[^\n;&|]*\bpush\b[^\n;&|]*(?:--force\b|\s-f\b|\s\+)", "force push"),
    ("ask", r"\b(?:curl|wget)\b[^\n|]*\|", "runs a downloaded script"),
    ("ask", _RM_R, "recursive delete (the guard could not parse the whole command)"),
]  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    action: str  # "reject" or "ask"
    reason: str


@dataclass
class Cmd:
    """One simple command that would run: its words (None where unknown before running)."""

    argv: list[str | None]
    cwd: str | None  # None: unknown (a cd to somewhere computed at run time)
    substitutions: list[Cmd] = field(default_factory=list)  # commands run to make its words
    feeds: list[Cmd] = field(default_factory=list)  # earlier stages of its pipeline
    stdin_code: str | None = None  # a here-document given to it

    @property
    def name(self) -> str | None:
        if not self.argv or self.argv[0] is None:
            return None
        return posixpath.basename(self.argv[0])


@dataclass
class _Reader:
    workspace: str
    vars: dict[str, str | None] = field(default_factory=dict)
    commands: list[Cmd] = field(default_factory=list)
    functions: dict[str, Node] = field(default_factory=dict)
    redirects: list[str | None] = field(default_factory=list)  # files written by > and >>
    broken: bool = False
    cwd: str | None = None

    # -- words ---------------------------------------------------------------------------------

    def word(self, node: Node) -> str | None:
        t = node.type
        text = (node.text or b"").decode(errors="replace")
        if t == "word" or t == "number":
            if text.startswith("~") and (len(text) == 1 or text[1] == "/"):
                text = HOME + text[1:]
            return re.sub(r"\\(.)", r"\1", text)
        if t == "raw_string":
            return text[1:-1]
        if t == "ansi_c_string":
            try:
                return text[2:-1].encode().decode("unicode_escape")
            except UnicodeDecodeError:
                return None
        if t in ("string", "concatenation", "translated_string"):
            parts: list[str | None] = []
            for c in node.named_children:
                if c.type == "string_content":
                    parts.append(re.sub(r"\\([$`\"\\])", r"\1", (c.text or b"").decode(errors="replace")))
                else:
                    parts.append(self.word(c))
            if any(p is None for p in parts):
                return None
            return "".join(p for p in parts if p is not None)
        if t == "simple_expansion":
            return self.lookup((node.named_children[0].text or b"").decode() if node.named_children else "")
        if t == "expansion":
            inner = text[2:-1]
            return self.lookup(inner) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", inner) else None
        return None  # command/process substitution, arithmetic, anything else: known only at run time

    def lookup(self, name: str) -> str | None:
        if name == "HOME":
            return HOME
        if name == "PWD":
            return self.cwd
        return self.vars.get(name)

    # -- walking -------------------------------------------------------------------------------

    def read(self, source: str, cwd: str | None) -> None:
        tree = _PARSER.parse(source.encode())
        if tree.root_node.has_error:
            self.broken = True
        self.cwd = cwd
        self.walk(tree.root_node, [])

    def substitutions_in(self, node: Node) -> list[Cmd]:
        """The commands run inside substitutions anywhere in ``node`` (they run first)."""
        found: list[Cmd] = []
        stack = list(node.named_children)
        while stack:
            n = stack.pop(0)
            if n.type in ("command_substitution", "process_substitution"):
                before = len(self.commands)
                self.walk(n, [])
                found.extend(self.commands[before:])
            else:
                stack.extend(n.named_children)
        return found

    def walk(self, node: Node, feeds: list[Cmd]) -> None:
        t = node.type
        if t == "command":
            self.command(node, feeds)
        elif t == "variable_assignment":
            name_node = node.child_by_field_name("name")
            value = node.child_by_field_name("value")
            self.substitutions_in(node)
            if name_node is not None:
                name = (name_node.text or b"").decode()
                self.vars[name] = "" if value is None else self.word(value)
        elif t == "pipeline":
            stages: list[Cmd] = []
            for c in node.named_children:
                before = len(self.commands)
                self.walk(c, list(stages))
                stages.extend(self.commands[before:])
        elif t == "redirected_statement":
            before = len(self.commands)
            for c in node.named_children:
                if c.type in ("file_redirect", "heredoc_redirect", "herestring_redirect"):
                    self.substitutions_in(c)
                    op = (c.children[0].text or b"").decode() if c.children else ""
                    dest = c.child_by_field_name("destination")
                    if dest is not None and ">" in op:
                        self.redirects.append(self.word(dest))
                    body = next((b for b in c.named_children if b.type == "heredoc_body"), None)
                    if body is not None and len(self.commands) > before:
                        self.here_document(self.commands[before], (body.text or b"").decode(errors="replace"))
                else:
                    self.walk(c, feeds)
        elif t == "function_definition":
            fname = node.child_by_field_name("name")
            body = node.child_by_field_name("body")
            if fname is not None and body is not None:
                self.functions[(fname.text or b"").decode()] = body
        else:
            for c in node.named_children:
                self.walk(c, feeds)

    def here_document(self, cmd: Cmd, text: str) -> None:
        """A script given on stdin: a shell's is read like any command; an interpreter's is code."""
        runner = cmd
        while runner.name in WRAPPERS or runner.name in ESCALATION or runner.name == "env":
            inner = self.unwrap(runner)
            if not inner:
                break
            runner = inner[0]
        if runner.name in SHELLS:
            sub = _Reader(self.workspace, dict(self.vars))
            sub.read(text, cmd.cwd)
            self.commands.extend(sub.commands)
            self.redirects.extend(sub.redirects)
            self.functions.update(sub.functions)
        else:
            runner.stdin_code = text
            cmd.stdin_code = text

    def command(self, node: Node, feeds: list[Cmd]) -> None:
        subs = self.substitutions_in(node)
        argv: list[str | None] = []
        for c in node.named_children:
            if c.type == "command_name":
                argv.append(self.word(c.named_children[0]) if c.named_children else None)
            elif c.type in ("variable_assignment", "file_redirect", "herestring_redirect"):
                if c.type == "file_redirect":
                    dest = c.child_by_field_name("destination")
                    op = (c.children[0].text or b"").decode() if c.children else ""
                    if dest is not None and ">" in op:
                        self.redirects.append(self.word(dest))
            else:
                argv.append(self.word(c))
        cmd = Cmd(argv, self.cwd, subs, feeds)
        self.commands.append(cmd)
        if cmd.name == "cd":
            target = argv[1] if len(argv) > 1 else HOME
            self.cwd = None if target is None or self.cwd is None else _join(self.cwd, target)
        for inner in self.unwrap(cmd):
            self.commands.append(inner)

    def unwrap(self, cmd: Cmd) -> list[Cmd]:
        """Commands that ``cmd`` runs in turn: sudo X, env X, xargs X, sh -c "X", eval X, find -exec."""
        name, args = cmd.name, cmd.argv[1:]
        if name is None:
            return []
        rest: list[str | None] | None = None
        if name in ESCALATION or name in WRAPPERS or name in _WRAPPER_ARGS or name in ("env", "xargs"):
            i, skip = 0, _WRAPPER_ARGS.get(name, 0)
            while i < len(args):
                a = args[i]
                if a is not None and a.startswith("-"):
                    # An option; for sudo/env/xargs some take a value (-u user, -n 1): skipping one
                    # too many only makes the inner command look unknown, which asks.
                    if name in ("sudo", "doas", "xargs", "env", "timeout", "nice") and a in (
                        "-u",
                        "-g",
                        "-n",
                        "-P",
                        "-I",
                        "-d",
                        "-s",
                        "-k",
                        "-C",
                        "-E",
                        "-L",
                        "-a",
                    ):
                        i += 1
                    i += 1
                    continue
                if name == "env" and a is not None and "=" in a:
                    i += 1
                    continue
                if skip:
                    skip, i = skip - 1, i + 1
                    continue
                break
            rest = args[i:]
            if name == "xargs":
                rest = [*rest, None]  # the arguments come from its input
            if name == "su":
                rest = []  # su -c is handled below like sh -c
        if rest:
            inner = Cmd(rest, cmd.cwd, [], cmd.feeds)
            return [inner, *self.unwrap(inner)]
        script: str | None = None
        has_script = False
        if (name in SHELLS and "-c" in args) or (name == "su" and "-c" in args):
            has_script, idx = True, args.index("-c") + 1
            script = args[idx] if idx < len(args) else None
        elif name == "eval":
            has_script = True
            script = None if any(a is None for a in args) else " ".join(a for a in args if a is not None)
        if has_script:
            if script is None:
                return [Cmd([None], cmd.cwd, [], cmd.feeds)]  # a script computed at run time
            sub = _Reader(self.workspace, dict(self.vars))
            sub.read(script, cmd.cwd)
            self.redirects.extend(sub.redirects)
            self.functions.update(sub.functions)
            self.broken = self.broken or sub.broken
            return sub.commands
        if name == "find":
            return self.find_execs(cmd)
        return []

    def find_execs(self, cmd: Cmd) -> list[Cmd]:
        out = []
        args = cmd.argv[1:]
        root: str | None = "."
        for a in args:  # {} stands for what is found under find's first path
            if a is None or not (a.startswith("-") or a in ("(", "!", ")")):
                root = a
            break
        found = None if root is None else posixpath.join(root, "*")
        for i, a in enumerate(args):
            if a in ("-exec", "-execdir", "-ok", "-okdir"):
                end = next((j for j in range(i + 1, len(args)) if args[j] in (";", "+")), len(args))
                words = [found if w == "{}" else w for w in args[i + 1 : end]]
                if words:
                    inner = Cmd(words, cmd.cwd, [], [])
                    out += [inner, *self.unwrap(inner)]
        return out


def _join(cwd: str, path: str) -> str:
    if path.startswith(HOME):
        return posixpath.normpath(path)
    return posixpath.normpath(posixpath.join(cwd, path))


def _where(path: str | None, cwd: str | None, workspace: str) -> str:
    """``unknown``, ``root`` (/, a top-level system folder, the home itself), ``safe`` (the
    workspace or under /tmp) or ``outside``."""
    if path is None:
        return "unknown"
    if not path.startswith(("/", HOME)):
        if cwd is None:
            return "unknown"
        path = posixpath.join(cwd, path)
    if path.startswith(HOME):
        rest = posixpath.normpath(path[len(HOME) :] or "/").strip("/")
        return "root" if rest in ("", "*", ".*") else "outside"
    norm = posixpath.normpath(re.sub(r"^/+", "/", path))
    if norm.endswith("/*") or norm.endswith("/.*"):
        norm = norm.rsplit("/", 1)[0] or "/"
    if norm in _SYSTEM_TOP or norm == "/*":
        return "root"
    for safe in (workspace, "/tmp"):
        if norm == safe or norm.startswith(safe.rstrip("/") + "/"):
            return "safe" if norm != "/tmp" else "outside"
    return "outside"


def _short_flags(args: list[str | None]) -> str:
    return "".join(a[1:] for a in args if a is not None and a.startswith("-") and not a.startswith("--"))


def _targets(args: list[str | None]) -> list[str | None]:
    out, options = [], True
    for a in args:
        if options and a == "--":
            options = False
        elif options and a is not None and a.startswith("-") and a != "-":
            continue
        else:
            out.append(a)
    return out


def _delete_verdict(paths: list[str | None], cwd: str | None, workspace: str, what: str) -> Verdict | None:
    worst: Verdict | None = None
    for p in paths:
        where = _where(p, cwd, workspace)
        if where == "root":
            return Verdict(
                "reject",
                f"{what} of {p} (/, a system folder or the home directory): everything there would be lost",
            )
        if where == "unknown" and worst is None:
            worst = Verdict(
                "ask",
                f"{what} of a path known only when it runs (a variable or command output): cannot tell what would be lost",
            )
        elif where == "outside" and (worst is None or "known only" in worst.reason):
            worst = Verdict("ask", f"{what} outside the workspace ({p}): those files would be lost")
    return worst


def _git(args: list[str | None]) -> Verdict | None:
    i = 0
    while i < len(args) and args[i] is not None and str(args[i]).startswith("-"):
        i += 2 if args[i] in ("-C", "-c") else 1
    if i >= len(args):
        return None
    sub, rest = args[i], args[i + 1 :]
    flags = _short_flags(rest)
    words = {a for a in rest if a is not None}
    if sub == "push":
        refs = [a for a in _targets(rest)[1:] if a is not None]
        if "--force" in words or "f" in flags or any(r.startswith("+") for r in refs) or "--mirror" in words:
            return Verdict(
                "ask",
                "force push: commits on the remote that are not in yours would be lost (--force-with-lease is the safe form)",
            )
    elif sub == "reset" and "--hard" in words:
        return Verdict("ask", "git reset --hard: every uncommitted change to tracked files would be lost")
    elif sub == "checkout":
        if words & {"-b", "-B", "--orphan"}:
            return None
        if "--" in words or "." in words or "-f" in words or "--force" in words:
            return Verdict("ask", "git checkout of paths: uncommitted changes to those files would be lost")
    elif sub == "restore":
        staged_only = ("--staged" in words or "S" in flags) and not ("--worktree" in words or "W" in flags)
        if not staged_only:
            return Verdict("ask", "git restore: uncommitted changes to those files would be lost")
    elif sub == "clean":
        if ("f" in flags or "--force" in words) and not ("n" in flags or "--dry-run" in words):
            return Verdict("ask", "git clean: untracked files would be deleted, and git has no copy of them")
    elif sub == "branch":
        if "D" in flags or ("--delete" in words and ("--force" in words or "f" in flags)):
            return Verdict("ask", "git branch -D: the branch's commits that are merged nowhere would be lost")
    elif sub == "stash" and rest and rest[0] in ("drop", "clear"):
        return Verdict("ask", f"git stash {rest[0]}: the stashed changes would be lost")
    return None


def _one(cmd: Cmd, workspace: str) -> Verdict | None:
    name, args = cmd.name, cmd.argv[1:]
    if name is None:
        return Verdict(
            "ask",
            "the command to run is computed when it runs (a variable or command output): cannot tell what it does",
        )
    flags = _short_flags(args)
    if name == "rm" and ("r" in flags.lower() or "--recursive" in args):
        return _delete_verdict(_targets(args), cmd.cwd, workspace, "recursive delete")
    if name in ("rmdir", "shred", "unlink") and any(
        _where(p, cmd.cwd, workspace) == "root" for p in _targets(args)
    ):
        return Verdict("reject", f"{name} of / or a system folder")
    if name == "find":
        paths: list[str | None] = []
        for a in args:
            if a is not None and (a.startswith("-") or a in ("(", "!", ")")):
                break
            paths.append(a)
            if a is None:
                break
        if "-delete" in args or any(
            a in ("-exec", "-execdir", "-ok", "-okdir")
            and i + 1 < len(args)
            and args[i + 1] in ("rm", "/bin/rm", "shred")
            for i, a in enumerate(args)
        ):
            return _delete_verdict(paths or ["."], cmd.cwd, workspace, "recursive delete (find)")
    if name == "dd" and any(a is not None and a.startswith("of=") and _DEVICE.match(a[3:]) for a in args):
        return Verdict("reject", "raw write to a disk device: the filesystem on it would be destroyed")
    if name in ("tee", "shred", "blkdiscard", "cp", "install") and any(
        a is not None and _DEVICE.match(a) for a in _targets(args)
    ):
        return Verdict("reject", "raw write to a disk device: the filesystem on it would be destroyed")
    if name.startswith("mkfs") or name in (
        "mke2fs",
        "mkswap",
        "fdisk",
        "sfdisk",
        "parted",
        "wipefs",
        "sgdisk",
    ):
        return Verdict("reject", "formatting or partitioning a disk: everything on it would be lost")
    recursive = "R" in flags or "--recursive" in args
    if (
        name in ("chmod", "chown", "chgrp")
        and recursive
        and any(_where(p, cmd.cwd, workspace) == "root" for p in _targets(args)[1:])
    ):
        return Verdict("reject", f"recursive {name} of / or a system folder: the system would stop working")
    if name in ESCALATION:
        return Verdict(
            "ask", "runs a command as another user (root): outside what the sandbox and the guard can judge"
        )
    if (
        name in ("shutdown", "reboot", "halt", "poweroff")
        or (name in ("init", "telinit") and args[:1] in (["0"], ["6"]))
        or (name == "systemctl" and any(a in ("poweroff", "reboot", "halt", "kexec") for a in args))
    ):
        return Verdict("ask", "stops or restarts the machine: every running program would stop")
    if name == "git":
        return _git(args)
    base = re.sub(r"[\d.]+$", "", name)
    inline = base in _INLINE_FLAGS and _INLINE_FLAGS[base] in args
    if inline or (base in INTERPRETERS and cmd.stdin_code is not None):
        idx = args.index(_INLINE_FLAGS[base]) + 1 if inline else -1
        code = (args[idx] if idx < len(args) else None) if inline else cmd.stdin_code
        if code is None:
            return Verdict("ask", f"runs {name} code known only when it runs")
        if _INLINE_ROOT.search(code):
            return Verdict("reject", f"inline {name} code that deletes / or the home directory")
        if _INLINE_RISKY.search(code):
            return Verdict(
                "ask",
                f"inline {name} code that deletes files or starts commands: cannot tell what would be lost",
            )
    runs_script = name in SHELLS or base in INTERPRETERS or name in ("source", ".", "eval")
    if runs_script:
        if any(f.name in DOWNLOADERS for f in cmd.feeds):
            return Verdict("ask", "runs a downloaded script: its contents are unknown until it runs")
        if any(s.name in DOWNLOADERS for s in cmd.substitutions):
            return Verdict("ask", "runs a downloaded script: its contents are unknown until it runs")
    return None


def _fork_bomb(reader: _Reader) -> bool:
    for fname, body in reader.functions.items():
        text = (body.text or b"").decode(errors="replace")
        calls = len(re.findall(r"(?<![\w-])" + re.escape(fname) + r"(?![\w-])", text))
        called = any(c.name == fname for c in reader.commands)
        if calls >= 1 and ("|" in text or "&" in text) and called:
            return True
    return False


def judge(command: str, cwd: str) -> Verdict | None:
    """The guard's verdict on ``command`` run in ``cwd`` (the workspace); None: let it run."""
    workspace = posixpath.normpath(cwd or "/")
    reader = _Reader(workspace)
    reader.read(command, workspace)
    verdicts: list[Verdict] = []
    if _fork_bomb(reader):
        verdicts.append(Verdict("reject", "fork bomb: it would exhaust the machine's processes"))
    for path in reader.redirects:
        if path is not None and _DEVICE.match(path):
            verdicts.append(
                Verdict("reject", "raw write to a disk device: the filesystem on it would be destroyed")
            )
    for cmd in reader.commands:
        v = _one(cmd, workspace)
        if v is not None:
            verdicts.append(v)
    if reader.broken:
        # bash may read what the parser could not: judge the raw text too, by the old patterns.
        verdicts += [
            Verdict(action, why) for action, pattern, why in _TEXT_RULES if re.search(pattern, command)
        ]
    rejected = [v for v in verdicts if v.action == "reject"]
    if rejected:
        return rejected[0]
    asked = list(dict.fromkeys(v.reason for v in verdicts if v.action == "ask"))
    if asked:
        return Verdict("ask", "; ".join(asked))
    return None


if __name__ == "__main__":  # pragma: no cover - a quick look: python judge.py '<command>'
    import sys

    print(judge(sys.argv[1], os.getcwd()))
