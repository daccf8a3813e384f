"""The local agent registry (``registry.json``) and the local project rosters.

Both are the original tmux-agent-comms files, read and written in its format so
``agent_comms``, ``wsbus`` and the bridge can share them::

    registry.json          {"agents": {NAME: {"session", "color", "enabled", "desc",
                                              "revive_cmd", "enter_delay"?, ...}}}
    projects/<P>.json      {"project": P, "members": {NAME: {"session", "model", "role",
                                                              "joined", "last_active",
                                                              "enter_delay"?}}}

Fields this module does not know, and the order of keys, survive a load and a
save. Writes are atomic and private (0600 files, 0700 directories); a
read-modify-write of the registry can hold :func:`locked` (see :func:`editing`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from .paths import private_dir, write_atomic

__all__ = [
    "STARTER_REGISTRY",
    "AgentEntry",
    "Registry",
    "RegistryError",
    "all_rosters",
    "editing",
    "find_member",
    "load_roster",
    "locked",
    "roster_path",
    "safe_relpath",
    "save_roster",
    "unique_member_name",
]

STARTER_REGISTRY: dict[str, Any] = {
    "agents": {
        "claude": {
            "session": "claude",
            "color": "red",
            "enabled": True,
            "desc": "Claude Code",
            "revive_cmd": None,
        },
        "codex": {
            "session": "codex",
            "color": "blue",
            "enabled": True,
            "desc": "Codex CLI",
            "revive_cmd": None,
        },
        "grok": {
            "session": "grok",
            "color": "magenta",
            "enabled": True,
            "desc": "Grok CLI",
            "revive_cmd": None,
        },
    }
}

_MAX_SEGMENT_BYTES = 255


class RegistryError(Exception):
    """The registry or a roster cannot be read or used; the message is one sentence."""


@contextmanager
def locked(path: Path, timeout: float) -> Iterator[bool]:
    """Hold ``fcntl.flock`` on ``<path>.lock`` for the block, like the original.

    Waits up to ``timeout`` seconds; after that (or if the lock file cannot be
    opened) the block runs anyway, best-effort. Yields whether the lock is held.
    The lock is released by the kernel if the process dies.
    """
    lock_path = path.with_name(path.name + ".lock")
    fd: int | None = None
    held = False
    try:
        private_dir(lock_path.parent)
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        fd = None
    if fd is not None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
    try:
        yield held
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                if held:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class AgentEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A typed, read-only view of one registry entry."""

    name: str
    session: str
    color: str = "white"
    enabled: bool = True
    desc: str = ""
    revive_cmd: str | None = None
    enter_delay: float | None = None
    paste: bool = False
    host: str | None = None


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        raise RegistryError(f"cannot read {what} {path}: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RegistryError(f"{what} parse error in {path}: {err}") from None


def _dump(data: dict[str, Any]) -> bytes:
    # The original's layout (json.dumps indent=2, ASCII, no trailing newline).
    return json.dumps(data, indent=2).encode("ascii")


class Registry:
    """The registry file as a JSON dict, keeping whatever else it holds."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = {"agents": {}} if data is None else data

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read ``path``; a missing file is an empty registry."""
        try:
            data = _read_json(path, "registry")
        except FileNotFoundError:
            return cls(path)
        if not isinstance(data, dict):
            raise RegistryError(f"registry parse error in {path}: the top level is not an object")
        agents = data.setdefault("agents", {})
        if not isinstance(agents, dict):
            raise RegistryError(f"registry parse error in {path}: 'agents' is not an object")
        for name, meta in agents.items():
            if not isinstance(meta, dict):
                raise RegistryError(
                    f"registry parse error in {path}: agent {name!r} is not an object"
                )
        return cls(path, data)

    def save(self) -> None:
        """Write the registry atomically (file 0600, missing directories 0700)."""
        write_atomic(self.path, _dump(self.data))

    def agents(self) -> dict[str, dict[str, Any]]:
        """The live ``agents`` dict (edits to it are saved by :meth:`save`)."""
        agents: dict[str, dict[str, Any]] = self.data.setdefault("agents", {})
        return agents

    def names(self) -> list[str]:
        return list(self.agents())

    def agent(self, name: str) -> AgentEntry | None:
        """The typed entry for ``name``, or None if it is not registered."""
        meta = self.agents().get(name)
        if meta is None:
            return None
        try:
            return msgspec.convert({**meta, "name": name}, AgentEntry)
        except msgspec.ValidationError as err:
            raise RegistryError(f"registry {self.path}: agent {name!r} is invalid: {err}") from None

    def add(
        self,
        name: str,
        session: str,
        color: str = "white",
        desc: str = "",
        revive_cmd: str | None = None,
    ) -> None:
        """Register (or redefine) ``name``; other fields of an existing entry are kept."""
        if not name or not session:
            raise RegistryError("an agent needs a non-empty name and tmux session")
        entry = self.agents().setdefault(name, {})
        entry.update(
            session=session, color=color, enabled=True, desc=desc or "", revive_cmd=revive_cmd
        )

    def remove(self, name: str) -> bool:
        return self.agents().pop(name, None) is not None

    def set_enabled(self, name: str, enabled: bool) -> bool:
        meta = self.agents().get(name)
        if meta is None:
            return False
        meta["enabled"] = enabled
        return True

    def by_session(self, session: str) -> str | None:
        """The first agent whose tmux session is ``session``."""
        for name, meta in self.agents().items():
            if meta.get("session") == session:
                return name
        return None


@contextmanager
def editing(path: Path, lock_timeout: float) -> Iterator[Registry]:
    """Load, yield and (unless the block raises) save the registry, holding its lock."""
    with locked(path, lock_timeout):
        reg = Registry.load(path)
        yield reg
        reg.save()


# ---------- names ----------


def safe_relpath(name: str) -> str:
    """A thread, channel or project name as a relative path that stays in its directory.

    Strips surrounding blanks and a trailing ``.md``; allows ``/`` for
    sub-directories (empty and ``.`` segments are dropped). Refuses, with
    ValueError, empty names, absolute paths, ``..`` segments, and control
    characters.
    """
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ValueError(f"invalid name {name!r}: control characters are not allowed.")
    n = name.strip()
    if n.endswith(".md"):
        n = n[:-3]
    if n.startswith("/"):
        raise ValueError(f"invalid name {name!r}: absolute paths are not allowed.")
    segments = n.split("/")
    if ".." in segments:
        raise ValueError(f"invalid name {name!r}: '..' segments are not allowed.")
    parts = [s for s in segments if s not in ("", ".")]
    if not parts:
        raise ValueError(f"invalid name {name!r}: it is empty.")
    if any(len(s.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES for s in parts):
        raise ValueError(f"invalid name {name!r}: a path segment is over 255 bytes.")
    return "/".join(parts)


# ---------- project rosters ----------


def roster_path(projects_dir: Path, project: str) -> Path:
    """``projects/<project>.json`` (ValueError for an unsafe project name)."""
    return projects_dir / (safe_relpath(project) + ".json")


def load_roster(projects_dir: Path, project: str) -> dict[str, Any]:
    """The roster of ``project``; a missing file is an empty roster.

    A file that is not a roster raises RegistryError (the original silently
    started over, which lost every member on the next save).
    """
    path = roster_path(projects_dir, project)
    try:
        data = _read_json(path, "roster")
    except FileNotFoundError:
        return {"project": project, "members": {}}
    if not isinstance(data, dict) or not isinstance(data.setdefault("members", {}), dict):
        raise RegistryError(f"roster parse error in {path}: not a project roster")
    data.setdefault("project", project)
    return data


def save_roster(projects_dir: Path, roster: dict[str, Any]) -> None:
    """Write ``roster`` to ``projects/<roster["project"]>.json`` atomically, 0600."""
    write_atomic(roster_path(projects_dir, roster["project"]), _dump(roster))


def unique_member_name(members: dict[str, Any], base: str, session: str) -> str:
    """The member name for ``session`` registering as ``base``.

    A session already in ``members`` keeps its name; otherwise ``base`` if it
    is free, else ``base-2``, ``base-3``, ...
    """
    for name, member in members.items():
        if isinstance(member, dict) and member.get("session") == session:
            return name
    if base not in members:
        return base
    i = 2
    while f"{base}-{i}" in members:
        i += 1
    return f"{base}-{i}"


def _roster_files(projects_dir: Path) -> list[Path]:
    if not projects_dir.is_dir():
        return []
    return sorted(
        f
        for f in projects_dir.rglob("*.json")
        if not f.name.startswith("._")  # macOS resource forks, skipped by the original
    )


def all_rosters(projects_dir: Path) -> dict[str, dict[str, Any]]:
    """Every readable roster by project name (unreadable files are skipped)."""
    rosters: dict[str, dict[str, Any]] = {}
    for f in _roster_files(projects_dir):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("members", {}), dict):
            continue
        data.setdefault("members", {})
        project = data.get("project")
        if not isinstance(project, str) or not project:
            project = f.relative_to(projects_dir).with_suffix("").as_posix()
            data["project"] = project
        rosters.setdefault(project, data)
    return rosters


def find_member(projects_dir: Path, name: str) -> tuple[str, dict[str, Any]] | None:
    """The first project (in file order) with a member ``name`` that has a session."""
    for project, roster in all_rosters(projects_dir).items():
        member = roster["members"].get(name)
        if isinstance(member, dict) and member.get("session"):
            return project, member
    return None
