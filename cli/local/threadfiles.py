"""Thread markdown files: the original tmux-agent-comms layout, rendered and mirrored.

A thread is ``threads/<thread>.md`` on the default channel (where the original
tool writes it) and ``threads/<channel>/<thread>.md`` on any other channel. It is
a sequence of entries, each exactly as the original appends them::

    <blank line>
    ## [claude→grok (claude-opus-4-7) 2026-05-28 15:49Z]
    daily_report.py is in local fallback; deploy to /opt/…

The bridge rewrites a whole file from the hub's history (:func:`write_mirror`);
without a hub, a sender appends one entry under the original's lock
(:func:`append_entry`), so both tools can write the same file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from wsbus.schema import BROADCAST, Event

from ..conventions import META_MODEL, sent_at
from .paths import private_dir, write_atomic
from .registry import locked, safe_relpath

__all__ = [
    "ENTRY_SEP",
    "append_entry",
    "entry",
    "format_threads",
    "last_entries",
    "list_threads",
    "render",
    "render_events",
    "thread_file",
    "write_mirror",
]

ENTRY_SEP = "\n## ["


def thread_file(threads_dir: Path, channel: str, thread: str) -> Path:
    """The markdown file of ``thread`` on ``channel`` (ValueError for an unsafe name)."""
    name = safe_relpath(thread) + ".md"
    base = threads_dir if channel == "default" else threads_dir / safe_relpath(channel)
    path = base / name
    root = threads_dir.resolve()
    if not path.resolve().is_relative_to(root):
        raise ValueError(f"thread {thread!r} on channel {channel!r} resolves outside {root}.")
    return path


def entry(sender: str, to: str | None, model: str | None, ts: float, body: str) -> str:
    """One thread entry, byte for byte as the original writes it.

    The heading names ``sender→to`` when the event went to one name (not a
    broadcast ``*``), then `` (model)`` when the model is known.
    """
    addr = f"{sender}→{to}" if to and to != "*" else sender
    if model and model != "unknown":
        addr += f" ({model})"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%MZ")
    return f"{ENTRY_SEP}{addr} {stamp}]\n{body}\n"


def render(entries: Iterable[tuple[str, str | None, str | None, float, str]]) -> str:
    """A whole thread file from ``(sender, to, model, ts, body)`` tuples, oldest first."""
    return "".join(entry(*e) for e in entries)


def last_entries(text: str, n: int) -> str:
    """The last ``n`` entries of a thread (``n <= 0``: all of it), as ``read -n`` prints."""
    if n <= 0:
        return text
    parts = text.split(ENTRY_SEP)
    tail = parts[-n:] if len(parts) > n else parts[1:]
    return "## [" + ENTRY_SEP.join(tail) if tail else text


def write_mirror(path: Path, text: str, *, lock_timeout: float = 5.0) -> None:
    """Replace the thread file with ``text`` atomically (0600, directories 0700).

    Holds the same lock as :func:`append_entry`, so a concurrent append is not
    written to the file being replaced.
    """
    private_dir(path.parent)
    with locked(path, lock_timeout):
        write_atomic(path, text.encode("utf-8"))


def append_entry(path: Path, text: str, lock_timeout: float) -> None:
    """Append ``text`` (an :func:`entry`) under the original's per-file flock.

    After ``lock_timeout`` seconds without the lock it appends anyway, as the
    original does. Raises OSError if the file cannot be written.
    """
    private_dir(path.parent)
    data = text.encode("utf-8")
    with locked(path, lock_timeout):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def list_threads(threads_dir: Path) -> list[tuple[str, int, float]]:
    """``(name, entries, mtime)`` of every thread file, sorted by path."""
    if not threads_dir.is_dir():
        return []
    rows: list[tuple[str, int, float]] = []
    for f in sorted(threads_dir.rglob("*.md")):
        try:
            if not f.is_file():
                continue
            text = f.read_text(encoding="utf-8", errors="replace")
            mtime = f.stat().st_mtime
        except OSError:
            continue
        name = f.relative_to(threads_dir).as_posix()[:-3]
        rows.append((name, text.count(ENTRY_SEP), mtime))
    return rows


def format_threads(rows: Iterable[tuple[str, int, float]]) -> list[str]:
    """The original ``threads`` output: one line per thread, or ``(no threads yet)``."""
    lines = [
        f"{name:<32}{entries:>4} entries   last "
        + datetime.fromtimestamp(mtime, UTC).strftime("%m-%d %H:%MZ")
        for name, entries, mtime in rows
    ]
    return lines or ["(no threads yet)"]


def render_events(events: Iterable[Event], clip: Callable[[str], str]) -> str:
    """A thread file's text for these hub events (the bridge's mirror, ``read``)."""
    return render(
        (
            e.from_,
            None if e.to == BROADCAST else e.to,
            str((e.meta or {}).get(META_MODEL) or "") or None,
            sent_at(e.meta, e.ts),
            clip(e.body),
        )
        for e in events
    )
