"""Where the tmux-agent-comms files live, and the original tool's tunables.

The locations are the original ``agent_comms`` ones, read from the same
environment variables, so both tools share one registry, one set of rosters,
one thread directory and one audit log::

    ~/.config/agent-comms/registry.json     AGENT_COMMS_REGISTRY
    ~/.config/agent-comms/projects/         AGENT_COMMS_PROJECTS
    ~/.config/agent-comms/threads/          AGENT_COMMS_THREADS
    ~/.config/agent-comms/comms.log         AGENT_COMMS_LOG
    ~/.config/agent-comms/coms_join.md      AGENT_COMMS_JOIN_DOC

``~/.config`` here is literal (the original ignores ``XDG_CONFIG_HOME``). wsbus's
own files (the spool of events that could not reach the hub) live under
``$XDG_STATE_HOME/wsbus`` (``~/.local/state/wsbus``).

Also here, from :mod:`wsbus.files`: the two helpers every comms file writer uses,
:func:`private_dir` (missing directories are created 0700) and :func:`write_atomic`
(a temporary file in the same directory, then ``os.replace``; the file ends up 0600).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from wsbus.files import private_dir, write_atomic

__all__ = [
    "DEFAULT_MARKER",
    "CommsPaths",
    "CommsTunables",
    "private_dir",
    "write_atomic",
]

DEFAULT_MARKER = "«agent-msg»"


def _get(env: Mapping[str, str], key: str) -> str | None:
    """An environment value, with an empty one counting as unset."""
    value = env.get(key)
    return value if value else None


def _home(env: Mapping[str, str] | None) -> Path:
    if env is not None and env.get("HOME"):
        return Path(env["HOME"])
    return Path.home()


class CommsPaths(msgspec.Struct, frozen=True, kw_only=True):
    """Every file and directory the comms commands read or write."""

    registry: Path
    projects: Path
    threads: Path
    log: Path
    join_doc: Path
    spool: Path
    state: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommsPaths:
        """The locations for ``env`` (default: ``os.environ``).

        ``HOME`` is taken from ``env`` when it is given and sets one, else from
        :meth:`Path.home`.
        """
        e: Mapping[str, str] = os.environ if env is None else env
        home = _home(env)
        base = home / ".config" / "agent-comms"
        xdg_state = _get(e, "XDG_STATE_HOME")
        state = (Path(xdg_state) if xdg_state else home / ".local" / "state") / "wsbus"

        def pick(key: str, default: Path) -> Path:
            value = _get(e, key)
            return Path(value) if value else default

        return cls(
            registry=pick("AGENT_COMMS_REGISTRY", base / "registry.json"),
            projects=pick("AGENT_COMMS_PROJECTS", base / "projects"),
            threads=pick("AGENT_COMMS_THREADS", base / "threads"),
            log=pick("AGENT_COMMS_LOG", base / "comms.log"),
            join_doc=pick("AGENT_COMMS_JOIN_DOC", base / "coms_join.md"),
            spool=pick("WSBUS_SPOOL", state / "spool"),
            state=state,
        )


def _number(env: Mapping[str, str], key: str, default: float, *, minimum: float) -> float:
    raw = _get(env, key)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}.") from None
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{key} must be a finite number of at least {minimum:g}, got {raw!r}.")
    return value


def _integer(env: Mapping[str, str], key: str, default: int, *, minimum: int) -> int:
    raw = _get(env, key)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{key} must be a whole number, got {raw!r}.") from None
    if value < minimum:
        raise ValueError(f"{key} must be at least {minimum}, got {raw!r}.")
    return value


class CommsTunables(msgspec.Struct, frozen=True, kw_only=True):
    """The original tool's tunables, with its defaults.

    ``max_msg_len`` caps an injected or threaded message (longer ones are cut
    and end in ``...``); bodies longer than ``one_line_max`` go as a doorbell.
    """

    marker: str = DEFAULT_MARKER
    enter_delay: float = 0.4
    max_msg_len: int = 4000
    one_line_max: int = 500
    lock_timeout: float = 5.0
    loop_warn_count: int = 4
    loop_window_sec: float = 180.0
    revive_timeout: float = 30.0
    revive_grace: float = 6.0
    verify_delay: float = 0.3
    verify_lines: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommsTunables:
        """Read the tunables; a malformed number raises ValueError naming its variable."""
        e: Mapping[str, str] = os.environ if env is None else env
        return cls(
            marker=_get(e, "AGENT_COMMS_MARKER") or DEFAULT_MARKER,
            enter_delay=_number(e, "AGENT_COMMS_ENTER_DELAY", 0.4, minimum=0),
            max_msg_len=_integer(e, "AGENT_COMMS_MAX_MSG_LEN", 4000, minimum=4),
            one_line_max=_integer(e, "WSBUS_ONE_LINE_MAX", 500, minimum=1),
            lock_timeout=_number(e, "AGENT_COMMS_LOCK_TIMEOUT", 5.0, minimum=0),
            loop_warn_count=_integer(e, "AGENT_COMMS_LOOP_WARN_COUNT", 4, minimum=1),
            loop_window_sec=_number(e, "AGENT_COMMS_LOOP_WINDOW_SEC", 180.0, minimum=0),
            revive_timeout=_number(e, "AGENT_COMMS_REVIVE_TIMEOUT", 30.0, minimum=0),
            revive_grace=_number(e, "AGENT_COMMS_REVIVE_GRACE", 6.0, minimum=0),
            verify_delay=_number(e, "AGENT_COMMS_VERIFY_DELAY", 0.3, minimum=0),
            verify_lines=_integer(e, "AGENT_COMMS_VERIFY_LINES", 3, minimum=1),
        )

    def clip(self, text: str) -> str:
        """``text`` cut to ``max_msg_len`` characters, ending in ``...`` when cut."""
        if len(text) <= self.max_msg_len:
            return text
        return text[: self.max_msg_len - 3] + "..."
