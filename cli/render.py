"""How events look on a terminal: agent-bus's listener block, and history lines."""

from __future__ import annotations

import sys
import time

from wsbus.schema import BROADCAST, Event

__all__ = ["clock", "history_block", "listener_block", "on_screen", "stamp"]


def clock(ts: float) -> str:
    """``HH:MM:SSZ`` in UTC."""
    return time.strftime("%H:%M:%SZ", time.gmtime(ts))


def stamp(ts: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def listener_block(ev: Event) -> str:
    """agent-bus's format: ``[HH:MM:SSZ] from SENDER:``, the body, ``---``."""
    return f"[{clock(ev.ts)}] from {ev.from_}:\n{ev.body}\n---\n"


def history_block(ev: Event) -> str:
    """One stored event with its seq, date, route and thread."""
    day = time.strftime("%Y-%m-%d", time.gmtime(ev.ts))
    target = "all" if ev.to == BROADCAST else ev.to
    extra = f" [thread {ev.thread}]" if ev.thread else ""
    return (
        f"#{ev.seq} [{day} {clock(ev.ts)}] {ev.channel}: {ev.from_} -> {target}{extra}\n"
        f"{ev.body}\n---\n"
    )


def on_screen(text: str) -> str:
    """``text`` as printed on standard output: when that is a terminal, without the
    escape sequences and control characters another agent may have put in a message
    (a pipe gets the bytes unchanged)."""
    if not sys.stdout.isatty():
        return text
    from .bridge.inject import for_terminal  # not loaded by `wsbus send`, which prints no bodies

    return for_terminal(text)
