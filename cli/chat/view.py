"""How ``wsbus chat`` looks: events, receipts, presence, the prompt and the toolbar.

Everything here is pure: it turns wire frames and the chat's state into prompt_toolkit
``FormattedText`` (a list of ``(style, text)`` pairs), so it is tested without a
terminal. An event reads ``14:02:11 alice → bob #build: body``:

- each name has a stable colour (a CRC of the name into :data:`PALETTE`, the same in
  every process and on every machine);
- a direct message shows its recipient (``→ you`` in reverse video, ``→ bob`` in
  italics); a broadcast shows none; a thread post shows ``#thread``;
- a person's message (``kind = human``) carries ``(human)``, which reads the same in
  a terminal without colour;
- further lines of a body are indented under the first; control characters and escape
  sequences in bodies are dropped (a message cannot repaint the screen);
- receipts (``✓ bob read #42``) and presence (``· bob is up``) are dim.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from prompt_toolkit.formatted_text import FormattedText, fragment_list_to_text

from wsbus.schema import BROADCAST, Event, Lease, Presence, Receipt, RosterResult

from ..bridge.inject import sanitize
from .commands import COMMANDS, ChatState

__all__ = [
    "INDENT",
    "PALETTE",
    "StatusBar",
    "clock",
    "event_line",
    "help_lines",
    "lease_lines",
    "name_colour",
    "notice",
    "plain",
    "presence_line",
    "problem",
    "prompt_message",
    "receipt_line",
    "roster_lines",
    "toolbar",
    "typed",
    "visible",
]

PALETTE: tuple[str, ...] = (
    "ansigreen",
    "ansiyellow",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)
"""Name colours readable on dark and light backgrounds (no plain red: that is for errors)."""

INDENT = " " * len("HH:MM:SS ")
"""Continuation lines of a body start under its first line."""

DIM = "dim"
TIME = "dim"
YOU = "bold reverse"
OTHER = "italic"
THREAD = "underline"
ERROR = "bold fg:ansired"
OK_MARK = "✓"
BAD_MARK = "✗"
_FINAL_BAD = {"unsubmitted", "failed"}


def name_colour(name: str) -> str:
    """The colour of ``name``: the same everywhere, different for most pairs of names."""
    return PALETTE[zlib.crc32(name.encode("utf-8", "surrogatepass")) % len(PALETTE)]


def _name(name: str, extra: str = "bold") -> tuple[str, str]:
    return (f"{extra} fg:{name_colour(name)}".strip(), sanitize(name))


def clock(ts: float) -> str:
    """``HH:MM:SS`` in local time (a person reads it next to their own clock)."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def plain(text: FormattedText) -> str:
    """The text without styles (what a terminal without colour shows)."""
    return fragment_list_to_text(text)


def visible(ev: Event, me: str, watch: bool) -> bool:
    """Whether the chat shows ``ev``: everything when watching, else what involves ``me``
    (broadcasts, direct messages to or from ``me``)."""
    return watch or ev.to in (BROADCAST, me) or ev.from_ == me


def _body(lines: Iterable[str], first: bool = True) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        if i or not first:
            out.append(("", "\n" + INDENT))
        out.append(("", sanitize(line)))
    return out


def event_line(ev: Event, me: str) -> FormattedText:
    """``HH:MM:SS sender (human) → target #thread: body`` (continuation lines indented)."""
    parts: list[tuple[str, str]] = [(TIME, clock(ev.ts) + " "), _name(ev.from_)]
    if ev.kind == "human":
        parts.append((DIM, " (human)"))
    elif ev.kind and ev.kind != "agent":
        parts.append((DIM, f" [{sanitize(ev.kind)}]"))
    if ev.to == me:
        parts += [("", " "), (YOU, "→ you")]
    elif ev.to != BROADCAST:
        parts.append((OTHER, " → "))
        parts.append(_name(ev.to, "italic"))
    if ev.thread:
        parts.append((THREAD, f" #{ev.thread}"))
    parts.append(("", ": "))
    parts.extend(_body(ev.body.splitlines() or [""]))
    return FormattedText(parts)


def receipt_line(r: Receipt) -> FormattedText:
    """``✓ bob read #42``, ``✗ bob failed #42 (why)``, ``· bob session_down #42``; dim."""
    if r.status in _FINAL_BAD:
        mark, style = BAD_MARK, f"{DIM} fg:ansired"
    elif r.status in ("read", "submitted"):
        mark, style = OK_MARK, DIM
    else:
        mark, style = "·", DIM
    why = f" ({sanitize(r.reason)})" if r.reason else ""
    return FormattedText([(style, f"{mark} {sanitize(r.by)} {r.status} #{r.seq}{why}")])


def presence_line(p: Presence) -> FormattedText:
    """``· bob is up (model · role)`` or ``· bob is down``; dim."""
    if p.state == "down":
        return notice(f"{p.name} is down")
    about = [sanitize(x) for x in (p.kind if p.kind == "human" else None, p.model, p.role) if x]
    return notice(f"{p.name} is up" + (f" ({' · '.join(about)})" if about else ""))


def typed(state: ChatState, line: str) -> FormattedText:
    """A command as it was typed, after the prompt (dim): the prompt erases its lines."""
    return FormattedText([(DIM, plain(prompt_message(state)) + line.strip())])


def notice(text: str) -> FormattedText:
    """A quiet line from the chat itself: ``· text``."""
    return FormattedText([(DIM, f"· {text}")])


def problem(text: str) -> FormattedText:
    """Something went wrong, or a hint: ``! text``."""
    return FormattedText([(ERROR, "! "), ("", text)])


def roster_lines(result: RosterResult, me: str) -> list[FormattedText]:
    """``/who``: who is online (●) and who is in the roster but not connected (○)."""
    members = {m.name: m for m in result.members}
    entries = {e.name: e for e in result.registered}
    lines = [
        notice(f"#{result.channel}: {len(members)} online, {len(entries)} in the roster"),
    ]
    for name in sorted(set(members) | set(entries)):
        m, e = members.get(name), entries.get(name)
        bits: list[str] = []
        if m is not None and m.kind:
            bits.append(m.kind)
        if e is not None and e.state:
            bits.append(f"session {e.state}")
        elif m is None:
            bits.append("offline")
        for value in (
            (m.model if m else None) or (e.model if e else None),
            (m.role if m else None) or (e.role if e else None),
            (m.host if m else None) or (e.host if e else None),
        ):
            if value:
                bits.append(sanitize(value))
        row: list[tuple[str, str]] = [("", "  ● " if m is not None else "  ○ "), _name(name)]
        if name == me:
            row.append((DIM, " (you)"))
        row.append(("", "  " + " · ".join(bits)))
        lines.append(FormattedText(row))
    return lines


def lease_lines(leases: list[Lease]) -> list[FormattedText]:
    """``/who``, after the roster: the file leases in force."""
    if not leases:
        return []
    lines = [notice(f"{len(leases)} file lease{'s' if len(leases) != 1 else ''} in force")]
    for lease in leases:
        kind = "exclusive" if lease.exclusive else "shared"
        why = f": {sanitize(lease.reason)}" if lease.reason else ""
        paths = sanitize(" ".join(lease.paths))
        row = [("", "  ⚑ "), _name(lease.holder), ("", f"  {paths}")]
        row.append((DIM, f"  {kind}, until {clock(lease.until)}{why}"))
        lines.append(FormattedText(row))
    return lines


def help_lines() -> list[FormattedText]:
    """``/help``: every command, then the keys."""
    width = max(len(f"{c.name} {c.args}") for c in COMMANDS)
    rows = [("TEXT", "send to the current target (the channel, or the /to name)")]
    rows.append(("@NAME TEXT", "a direct message to NAME"))
    rows.extend((f"{c.name} {c.args}".rstrip(), c.help) for c in COMMANDS)
    lines = [FormattedText([("bold", f"  {a.ljust(width)}  "), ("", b)]) for a, b in rows]
    lines.append(
        notice(
            "Alt-Enter: new line · Tab: complete · Ctrl-C: clear the line · Ctrl-D: leave"
            " · \\ or // first: send the line as text"
        )
    )
    return lines


def prompt_message(state: ChatState) -> FormattedText:
    """Where a plain line goes: ``#default> ``, ``@bob> ``, ``#default [build]> ``."""
    if state.target is None:
        parts = [("bold", f"#{state.channel}")]
    else:
        parts = [_name(state.target)]
        parts[0] = (parts[0][0], "@" + parts[0][1])
    if state.thread:
        parts.append((THREAD, f" [{state.thread}]"))
    parts.append(("", "> "))
    return FormattedText(parts)


@dataclass(frozen=True)
class StatusBar:
    """What the bottom toolbar shows."""

    connection: str
    """``connecting``, ``connected``, ``reconnecting`` or ``closed``"""
    channel: str
    target: str | None = None
    thread: str | None = None
    watch: bool = False
    online: tuple[str, ...] = ()
    unread: int = 0
    retry_in: float | None = None
    """seconds until the next connection attempt (``reconnecting``)"""
    shown: int = 4
    """how many online names to list"""


def toolbar(bar: StatusBar) -> FormattedText:
    """`` connected │ #default │ to all │ thread build │ 3 online: a, b, c │ 2 unread ``."""
    sep = ("", " │ ")
    if bar.connection == "reconnecting":
        state = "reconnecting" + (f" in {bar.retry_in:.1f}s" if bar.retry_in is not None else "")
        parts = [("bold fg:ansired", f" {state}")]
    elif bar.connection == "connected":
        parts = [("bold fg:ansigreen", " connected")]
    elif bar.connection == "closed":
        parts = [("bold fg:ansired", " disconnected")]
    else:
        parts = [("bold", f" {bar.connection}")]
    parts += [sep, ("bold", f"#{bar.channel}"), sep, ("", f"to {bar.target or 'all'}")]
    if bar.thread:
        parts += [sep, ("", f"thread {bar.thread}")]
    if bar.watch:
        parts += [sep, ("bold", "watching")]
    names = ", ".join(bar.online[: bar.shown])
    more = f" +{len(bar.online) - bar.shown}" if len(bar.online) > bar.shown else ""
    parts += [sep, ("", f"{len(bar.online)} online" + (f": {names}{more}" if names else ""))]
    if bar.unread:
        parts += [sep, ("bold", f"{bar.unread} unread")]
    parts.append(("", " "))
    return FormattedText(parts)
