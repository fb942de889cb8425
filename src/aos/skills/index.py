"""The skill index: every folder in the skill roots, valid or not, and who has which enabled.

Roots come from ``aoscb.json`` ``skills.roots`` (relative to the checkout; ``$AOS_HOME`` and ``~``
expanded). Every sub-folder of a root is a skill candidate; hidden folders and ``__pycache__`` are
skipped. When two roots hold a skill of the same name, the first root wins and the other is listed
with a diagnostic.

Enabling, most specific first: the session's settings (``skills.enabled`` / ``skills.disabled``),
then the agent's, then ``aoscb.json`` ``skills.disabled``, then the skill's own ``aos-default``.
A skill that is not usable is never enabled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CHECKOUT, Config, Paths
from .manifest import Diagnostic, SkillManifest, load_skill

__all__ = ["SkillIndex", "enabled", "skill_roots"]


def skill_roots(config: Config, paths: Paths) -> list[Path]:
    roots = []
    for raw in config.data.get("skills", {}).get("roots", []):
        text = str(raw).replace("$AOS_HOME", str(paths.home))
        p = Path(os.path.expanduser(text))
        roots.append(p if p.is_absolute() else CHECKOUT / p)
    return roots


@dataclass
class SkillIndex:
    """The skills found in the roots, by name (usable or not), plus shadowed duplicates."""

    roots: list[Path]
    skills: dict[str, SkillManifest] = field(default_factory=dict)
    shadowed: list[SkillManifest] = field(default_factory=list)
    _stamps: dict[str, tuple[Path, tuple[float, ...]]] = field(default_factory=dict)

    def scan(self) -> dict[str, list[str]]:
        """Re-read every root; returns the names ``added``, ``removed`` and ``changed``."""
        before = self._stamps
        skills: dict[str, SkillManifest] = {}
        shadowed: list[SkillManifest] = []
        for root in self.roots:
            if not root.is_dir():
                continue
            for folder in sorted(root.iterdir()):
                if not folder.is_dir() or folder.name.startswith((".", "_")):
                    continue
                m = load_skill(folder)
                if m.name in skills:
                    m.diagnostics.append(
                        Diagnostic(
                            "error",
                            f"shadowed by the skill of the same name in {skills[m.name].path}",
                            spec=False,
                        )
                    )
                    m.usable = False
                    shadowed.append(m)
                else:
                    skills[m.name] = m
        self.skills, self.shadowed = skills, shadowed
        after = {n: (m.path, _stamp(m.path)) for n, m in skills.items()}
        self._stamps = after
        return {
            "added": sorted(set(after) - set(before)),
            "removed": sorted(set(before) - set(after)),
            "changed": sorted(n for n in set(after) & set(before) if after[n] != before[n]),
        }

    def get(self, name: str) -> SkillManifest | None:
        return self.skills.get(name)

    def all(self) -> list[SkillManifest]:
        return sorted([*self.skills.values(), *self.shadowed], key=lambda m: (m.name, str(m.path)))


def _stamp(folder: Path) -> tuple[float, ...]:
    """Modification times of the folder's SKILL.md and service files (what a change means)."""
    out = []
    for name in ("SKILL.md", "skill.md"):
        try:
            out.append((folder / name).stat().st_mtime)
        except OSError:
            out.append(0.0)
    try:
        out.extend(sorted(p.stat().st_mtime for p in folder.glob("*.py")))
    except OSError:
        pass
    return tuple(out)


def _listed(settings: dict[str, Any] | None, key: str) -> set[str]:
    skills = (settings or {}).get("skills") or {}
    value = skills.get(key) if isinstance(skills, dict) else None
    return {str(x) for x in value} if isinstance(value, list) else set()


def enabled(
    m: SkillManifest,
    config: Config,
    agent_settings: dict[str, Any] | None = None,
    session_settings: dict[str, Any] | None = None,
) -> tuple[bool, str]:
    """Whether ``m`` is on for this agent/session, and which rule decided it."""
    if not m.usable:
        return False, "not usable"
    for scope, settings in (("session", session_settings), ("agent", agent_settings)):
        if m.name in _listed(settings, "disabled"):
            return False, f"disabled by the {scope}"
        if m.name in _listed(settings, "enabled"):
            return True, f"enabled by the {scope}"
    if m.name in {str(x) for x in config.data.get("skills", {}).get("disabled", [])}:
        return False, "disabled in aoscb.json"
    if not m.default_enabled:
        return False, "off by default (aos-default: false)"
    return True, "on by default"
