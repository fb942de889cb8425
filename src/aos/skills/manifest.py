"""SKILL.md → a :class:`SkillManifest` with diagnostics. Pure: never raises, never runs anything.

Two verdicts per skill:

- **spec-valid**: the Agent Skills specification, checked exactly as the reference validator
  (``skills-ref``, ``agentskills validate``) checks it: the frontmatter between the first two
  ``---``, parsed with strictyaml (every scalar a string; flow style, anchors and tags refused),
  only the allowed top-level fields, ``name`` equal to the folder's name (lowercase letters and
  digits in any script, single hyphens inside), ``description`` of 1 to 1024 characters,
  ``compatibility`` of at most 500. A file that is not UTF-8 (the reference crashes on it) is
  simply invalid here.
- **usable by AOS**: the same verdict, with one exception: a top-level ``service:`` key (the
  original design's form) is accepted, with a diagnostic saying it is not portable.

AOS's own settings live under ``metadata`` with ``aos-`` keys, so built-in skills stay spec-valid:
``aos-service`` (command of the skill's service, relative to its folder), ``aos-permissions``
(space-separated syscalls the service may call), ``aos-default`` (``"false"`` keeps the skill off
until enabled).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Diagnostic", "SkillManifest", "load_skill"]

MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_COMPATIBILITY = 500
SPEC_FIELDS = frozenset({"name", "description", "license", "allowed-tools", "metadata", "compatibility"})
AOS_FIELDS = frozenset({"service"})
MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Diagnostic:
    """One thing wrong (``error``) or worth knowing (``warning``) about a skill."""

    level: Literal["error", "warning"]
    message: str
    spec: bool = True  # False: an AOS-only concern that does not affect spec validity

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message}


@dataclass
class SkillManifest:
    """What a skill folder declares, plus the verdicts."""

    path: Path
    name: str
    description: str = ""
    body: str = ""
    license: str | None = None
    compatibility: str | None = None
    allowed_tools: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    service: str | None = None
    permissions: frozenset[str] = frozenset()
    #: Environment variables the service needs from the daemon (``metadata.aos-env``).
    env: tuple[str, ...] = ()
    default_enabled: bool = True
    spec_valid: bool = False
    usable: bool = False
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "description": self.description,
            "license": self.license,
            "compatibility": self.compatibility,
            "allowed_tools": self.allowed_tools,
            "metadata": self.metadata,
            "service": self.service,
            "permissions": sorted(self.permissions),
            "env": list(self.env),
            "default_enabled": self.default_enabled,
            "spec_valid": self.spec_valid,
            "usable": self.usable,
            "diagnostics": [d.as_dict() for d in self.diagnostics],
        }


def _find(folder: Path) -> Path | None:
    for name in ("SKILL.md", "skill.md"):
        if (folder / name).is_file():
            return folder / name
    return None


def _name_errors(name: Any, folder: Path) -> list[str]:
    if not isinstance(name, str) or not name.strip():
        return ["field 'name' must be a non-empty string"]
    name = unicodedata.normalize("NFKC", name.strip())
    errors = []
    if len(name) > MAX_NAME:
        errors.append(f"name '{name}' is longer than {MAX_NAME} characters ({len(name)})")
    if name != name.lower():
        errors.append(f"name '{name}' must be lowercase")
    if name.startswith("-") or name.endswith("-"):
        errors.append(f"name '{name}' cannot start or end with a hyphen")
    if "--" in name:
        errors.append(f"name '{name}' cannot contain two hyphens in a row")
    if not all(c.isalnum() or c == "-" for c in name):
        errors.append(f"name '{name}' may contain only letters, digits and hyphens")
    if unicodedata.normalize("NFKC", folder.name) != name:
        errors.append(f"name '{name}' must equal the folder's name '{folder.name}'")
    return errors


def _frontmatter(text: str) -> tuple[dict[str, Any] | None, str, str | None]:
    """(fields, body, error) with the reference validator's parsing rules."""
    import strictyaml

    if not text.startswith("---"):
        return None, "", "SKILL.md must start with YAML frontmatter between '---' lines"
    parts = text.split("---", 2)
    if len(parts) < 3:
        return None, "", "the frontmatter is not closed with '---'"
    try:
        data = strictyaml.load(parts[1]).data
    except Exception as exc:  # strictyaml raises many kinds; all mean "not valid here"
        first = str(exc).strip().splitlines()
        return None, "", f"the frontmatter is not valid (strict) YAML: {' '.join(first[:3])}"
    if not isinstance(data, dict):
        return None, "", "the frontmatter must be a YAML mapping of fields"
    return data, parts[2].strip(), None


def load_skill(folder: Path) -> SkillManifest:
    """Read and check one skill folder. Never raises: problems become diagnostics."""
    m = SkillManifest(path=folder, name=folder.name)
    spec_errors: list[str] = []

    def error(msg: str, *, spec: bool = True) -> None:
        m.diagnostics.append(Diagnostic("error", msg, spec))
        if spec:
            spec_errors.append(msg)

    skill_md = _find(folder)
    if skill_md is None:
        error("no SKILL.md in the folder")
        return m
    try:
        raw = skill_md.read_bytes()
    except OSError as exc:
        error(f"cannot read {skill_md.name}: {exc.strerror}")
        return m
    if len(raw) > MAX_BYTES:
        error(f"{skill_md.name} is larger than {MAX_BYTES // 1024} KiB")
        return m
    if b"\0" in raw:
        error(f"{skill_md.name} is a binary file, not Markdown text")
        return m
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        error(f"{skill_md.name} is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})")
        return m
    data, body, problem = _frontmatter(text)
    if data is None:
        error(problem or "unreadable frontmatter")
        return m
    m.body = body

    extra = set(data) - SPEC_FIELDS
    if extra - AOS_FIELDS:
        error(
            f"unexpected top-level fields: {', '.join(sorted(extra))} (allowed: {', '.join(sorted(SPEC_FIELDS))})"
        )
    elif extra:  # only `service:`: usable by AOS, but other tools reject it
        msg = "top-level 'service:' is not part of the Agent Skills spec; use metadata 'aos-service' to stay portable"
        spec_errors.append(msg)
        m.diagnostics.append(Diagnostic("warning", msg, spec=True))
    if "name" not in data:
        error("missing required field 'name'")
    else:
        for e in _name_errors(data["name"], folder):
            error(e)
        if isinstance(data["name"], str) and data["name"].strip():
            m.name = unicodedata.normalize("NFKC", data["name"].strip())
    desc = data.get("description")
    if "description" not in data:
        error("missing required field 'description'")
    elif not isinstance(desc, str) or not desc.strip():
        error("field 'description' must be a non-empty string")
    else:
        if len(desc) > MAX_DESCRIPTION:
            error(f"description is longer than {MAX_DESCRIPTION} characters ({len(desc)})")
        m.description = desc.strip()
    if "compatibility" in data:
        comp = data["compatibility"]
        if not isinstance(comp, str):
            error("field 'compatibility' must be a string")
        elif len(comp) > MAX_COMPATIBILITY:
            error(f"compatibility is longer than {MAX_COMPATIBILITY} characters ({len(comp)})")
        else:
            m.compatibility = comp
    if isinstance(data.get("license"), str):
        m.license = data["license"]
    if isinstance(data.get("allowed-tools"), str):
        m.allowed_tools = data["allowed-tools"]

    meta = data.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        error("field 'metadata' must be a mapping of strings; AOS ignores it", spec=False)
    elif isinstance(meta, dict):
        m.metadata = {str(k): str(v) for k, v in meta.items()}
    _aos_settings(m, data, error)

    m.spec_valid = not spec_errors
    only_service_key = spec_errors and all(e.startswith("top-level 'service:'") for e in spec_errors)
    m.usable = m.spec_valid or bool(only_service_key)
    return m


def _aos_settings(m: SkillManifest, data: dict[str, Any], error: Any) -> None:
    meta = m.metadata
    service = meta.get("aos-service") or (
        data.get("service") if isinstance(data.get("service"), str) else None
    )
    if service:
        service = service.strip()
        target = (m.path / service.split()[0]).resolve()
        if not str(target).startswith(str(m.path.resolve()) + "/"):
            error(f"the service '{service}' must be inside the skill's folder", spec=False)
        elif not target.is_file():
            error(f"the service file '{service.split()[0]}' does not exist", spec=False)
        else:
            m.service = service
    perms = meta.get("aos-permissions", "")
    m.permissions = frozenset(p for p in perms.replace(",", " ").split() if p)
    names = [v for v in meta.get("aos-env", "").replace(",", " ").split() if v]
    bad = [v for v in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v)]
    if bad:
        error(
            f"metadata aos-env holds names that are not environment variables: {', '.join(bad)}", spec=False
        )
    m.env = tuple(v for v in names if v not in bad)
    default = meta.get("aos-default", "true").strip().lower()
    if default not in ("true", "false"):
        error(f'metadata aos-default must be "true" or "false", not {default!r}', spec=False)
    m.default_enabled = default != "false"
