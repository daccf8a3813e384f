"""The files the bridge writes so that what it types into a pane can point at them.

- :func:`write_long_copy`: a long or multi-line message becomes a one-line doorbell
  pointing at a local copy (``STATE/messages/SEQ.md``);
- :func:`write_mirror_of`: a thread entry rings a doorbell pointing at the local
  markdown mirror of its thread, rewritten first from the hub's history.

Both return the path to point at (or None when there is nothing to point at) and
warn, never raise, when the disk says no: the message is typed regardless.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from wsbus.client import Client
from wsbus.errors import ClientError
from wsbus.schema import Event

from ..common import warn
from ..conventions import thread_events
from ..local.paths import CommsPaths, CommsTunables, private_dir, write_atomic
from ..local.threadfiles import render_events, thread_file, write_mirror
from .decisions import long_copy
from .inject import is_one_line

__all__ = ["write_long_copy", "write_mirror_of"]


async def write_long_copy(paths: CommsPaths, ev: Event, one_line_max: int) -> Path | None:
    """Write the readable copy of a message too long for one line (None: it fits)."""
    if is_one_line(ev.body, one_line_max):
        return None
    path = paths.state / "messages" / f"{ev.seq}.md"
    try:
        private_dir(path.parent)
        await asyncio.to_thread(write_atomic, path, long_copy(ev).encode())
    except OSError as err:
        warn(f"bridge: cannot write {path}: {err}")
        return None
    return path


async def write_mirror_of(
    client: Client | None,
    paths: CommsPaths,
    tun: CommsTunables,
    ev: Event,
    lock: asyncio.Lock,
) -> Path | None:
    """Rewrite the local markdown mirror of ``ev``'s thread from the hub's history
    (under ``lock``: one rewrite at a time); its path, or None for an unsafe name."""
    assert ev.thread is not None
    try:
        path = thread_file(paths.threads, ev.channel, ev.thread)
    except ValueError as err:
        warn(f"bridge: not mirroring thread {ev.thread!r}: {err}")
        return None
    if client is None:
        return path
    async with lock:
        try:
            events = await thread_events(client, ev.channel, ev.thread, before=ev.seq + 1)
        except (ClientError, TimeoutError) as err:
            warn(f"bridge: cannot read thread {ev.thread!r} for its mirror: {err}")
            return path  # keep the mirror as it is rather than cut it short
        text = render_events(events, tun.clip)
        try:
            await asyncio.to_thread(write_mirror, path, text, lock_timeout=tun.lock_timeout)
        except OSError as err:
            warn(f"bridge: cannot write {path}: {err}")
    return path
