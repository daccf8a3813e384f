"""A thin synchronous adapter over the ``tmux`` binary.

Every method runs one or two tmux commands and turns failures into :class:`TmuxError`
(one readable sentence). Nothing here decides *what* to type or whether a message was
submitted: that is :mod:`inject`.

Targets: a plain session name is matched exactly (``=name`` for session commands,
``=name:`` — the session's active pane — for pane commands), so a session called
``claude`` never reaches ``claude-2`` through tmux's prefix matching. A name that already
is an explicit tmux target (``work:2.1``, ``%5``, ``$1``, ``@3``) is passed unchanged, as
the original tool did.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence

__all__ = ["TMUX_ENV", "Tmux", "TmuxError", "pane_target", "session_target"]

TMUX_ENV = "AGENT_COMMS_TMUX"
"""The tmux command (split like a shell would: ``tmux -L sock`` works)."""

_EXPLICIT = ("%", "$", "@")


class TmuxError(Exception):
    """A tmux command could not run or failed; the message is one sentence."""


def _explicit(name: str) -> bool:
    return name.startswith(_EXPLICIT) or ":" in name or "." in name


def session_target(name: str) -> str:
    """The ``-t`` argument that names exactly this session (``=name``)."""
    return name if _explicit(name) else f"={name}"


def pane_target(name: str) -> str:
    """The ``-t`` argument for this session's active pane (``=name:``)."""
    return name if _explicit(name) else f"={name}:"


def _escape(arg: str) -> str:
    # tmux treats a command-line argument ending in ";" as a command separator (the ";"
    # is dropped); "\;" at the end is its escape for a literal ";".
    return arg[:-1] + "\\;" if arg.endswith(";") else arg


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


class Tmux:
    """Run tmux commands; ``command`` is the tmux argv prefix (e.g. ``["tmux", "-L", "x"]``)."""

    def __init__(self, command: Sequence[str] | None = None, timeout: float = 10.0) -> None:
        if command is None:
            configured = os.environ.get(TMUX_ENV, "").strip()
            command = shlex.split(configured) if configured else [shutil.which("tmux") or "tmux"]
        if not command:
            raise TmuxError("the tmux command is empty")
        self.command: list[str] = list(command)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Tmux({self.command!r})"

    # -- running -----------------------------------------------------------------------

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one tmux command; a non-zero exit is returned, not raised.

        Raises :class:`TmuxError` only when tmux cannot be run at all or times out.
        """
        argv = [*self.command, *(_escape(a) for a in args)]
        try:
            return subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise TmuxError(f"tmux is not installed or not found: {self.command[0]}") from None
        except PermissionError:
            raise TmuxError(f"tmux cannot be run (permission denied): {self.command[0]}") from None
        except ValueError as e:  # an argument with a NUL byte or a lone surrogate
            raise TmuxError(f"tmux cannot be given this text: {e}") from None
        except subprocess.TimeoutExpired:
            raise TmuxError(
                f"tmux {args[0] if args else ''} timed out after {self.timeout}s"
            ) from None

    def _check(self, *args: str, input: str | None = None) -> str:
        """Run a command that must succeed; its stdout."""
        cp = self.run(*args, input=input)
        if cp.returncode != 0:
            why = _first_line(cp.stderr) or f"exit status {cp.returncode}"
            raise TmuxError(f"tmux {args[0]} failed: {why}")
        return cp.stdout

    # -- sessions ----------------------------------------------------------------------

    def has_session(self, session: str) -> bool:
        """Whether this session exists; False when there is no server (never raises)."""
        try:
            return self.run("has-session", "-t", session_target(session)).returncode == 0
        except TmuxError:
            return False

    def list_sessions(self) -> list[str]:
        """Names of all sessions; ``[]`` when there is no server."""
        try:
            cp = self.run("list-sessions", "-F", "#{session_name}")
        except TmuxError:
            return []
        if cp.returncode != 0:
            return []
        return [line for line in cp.stdout.splitlines() if line]

    def current_session(self) -> str | None:
        """The session this process runs in (``$TMUX`` set), else None."""
        if not os.environ.get("TMUX"):
            return None
        pane = os.environ.get("TMUX_PANE")
        args = ["display-message", "-p", *(["-t", pane] if pane else []), "#{session_name}"]
        try:
            cp = self.run(*args)
        except TmuxError:
            return None
        name = cp.stdout.strip()
        return name if cp.returncode == 0 and name else None

    def new_session(
        self,
        name: str,
        command: Sequence[str] | None = None,
        *,
        width: int = 200,
        height: int = 50,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start a detached session; ``command`` is an argv, run through the pane's shell."""
        args = ["new-session", "-d", "-s", name, "-x", str(width), "-y", str(height)]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        if command:
            args.append(shlex.join(command))
        self._check(*args)

    def kill_session(self, session: str) -> None:
        self._check("kill-session", "-t", session_target(session))

    # -- typing ------------------------------------------------------------------------

    def send_literal(self, target: str, text: str) -> None:
        """Type ``text`` as literal keys (``send-keys -l``): no key names are interpreted."""
        self._check("send-keys", "-t", pane_target(target), "-l", "--", text)

    def send_enter(self, target: str) -> None:
        self._check("send-keys", "-t", pane_target(target), "Enter")

    def paste(self, target: str, text: str) -> None:
        """Paste ``text`` as one bracketed paste (if the application asked for it)."""
        buffer = f"wsbus-{uuid.uuid4().hex[:12]}"
        self._check("load-buffer", "-b", buffer, "-", input=text)
        try:
            self._check("paste-buffer", "-p", "-d", "-b", buffer, "-t", pane_target(target))
        except TmuxError:
            self.run("delete-buffer", "-b", buffer)
            raise

    # -- reading -----------------------------------------------------------------------

    def cursor(self, target: str) -> tuple[int, int, int]:
        """``(cursor_x, cursor_y, pane_width)`` of the pane, in cells."""
        # display-message does not fail on a missing target (it prints empty fields), so
        # the pane id is asked for too and checked.
        out = self._check(
            "display-message",
            "-p",
            "-t",
            pane_target(target),
            "#{pane_id} #{cursor_x} #{cursor_y} #{pane_width}",
        )
        fields = out.split()
        if len(fields) != 4 or not fields[0].startswith("%"):
            raise TmuxError(f"tmux found no pane for {target}")
        try:
            x, y, width = (int(f) for f in fields[1:])
        except ValueError:
            raise TmuxError(f"tmux gave no cursor position for {target}") from None
        return x, y, width

    def capture_rows(self, target: str, first: int, last: int) -> list[str]:
        """Visible rows ``first``..``last`` (0 = top of the pane), trailing spaces trimmed."""
        out = self._check(
            "capture-pane", "-p", "-t", pane_target(target), "-S", str(first), "-E", str(last)
        )
        return out.removesuffix("\n").split("\n")
