"""Conventions shared by the tmux-agent-comms commands, the bridge and the relay.

The hub only knows events; these are the few agreements on top of them that let
an ``agent_comms post`` on one machine become a doorbell on another:

- a direct message is an event to a name on the ``default`` channel (or the
  one given); a broadcast is ``to = "*"``;
- a thread entry is an event with ``thread``; a *project* is a channel with a
  registered roster, and ``post P`` to a project posts to thread ``P`` of channel
  ``P``; the sender's model rides in ``meta.model``;
- a join announcement is ``kind = "notice"`` (typed as ``MARKER body``);
- an event first delivered without the hub (the no-hub fallback) carries
  ``meta.local`` (name -> receipt status), ``meta.host`` and ``meta.sent_at``,
  so the bridge on that host does not type it a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from typing import TYPE_CHECKING, Any

from wsbus.schema import Event, Receipt

if TYPE_CHECKING:
    from wsbus.client import Client

__all__ = [
    "AUDIT_WORDS",
    "KIND_NOTICE",
    "META_HOST",
    "META_LOCAL",
    "META_MODEL",
    "META_SENT_AT",
    "NO_REPLY",
    "hostname",
    "long_doorbell",
    "loop_warning",
    "run_revive",
    "sent_at",
    "thread_events",
    "wait_receipt",
]

KIND_NOTICE = "notice"
META_MODEL = "model"
META_LOCAL = "local"
META_HOST = "host"
META_SENT_AT = "sent_at"
NO_REPLY = "[no-reply]"

#: receipt status -> the audit log's word (the original tool's vocabulary)
AUDIT_WORDS = {
    "submitted": "DELIVERED",
    "unsubmitted": "UNSUBMITTED",
    "failed": "INJECT_FAIL",
    "session_down": "SESSION_DOWN",
}


def loop_warning(sender: str, recipient: str) -> str:
    """The original's loop-guard suffix for a doorbell."""
    return (
        f" [⚠ loop guard: {sender}<->{recipient} have exchanged several"
        " messages rapidly — do NOT reply unless it's essential]"
    )


def long_doorbell(marker: str, sender: str, ts: float, body: str, where: str) -> str:
    """The one line typed for a long or multi-line body: where to read it."""
    from .bridge.inject import stamp_hm  # the tmux side only

    lines = body.count("\n") + 1
    return (
        f"{marker} from={sender} {stamp_hm(ts)} | long message "
        f"({lines} lines, {len(body)} chars) — read it: {where}"
    )


def run_revive(command: str, timeout: float) -> str | None:
    """Run a registry ``revive_cmd`` through the shell (local config only, never from a
    message); returns why it failed, or None."""
    try:
        r = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)[:200]
    if r.returncode != 0:
        return f"rc={r.returncode}: {(r.stderr or '').strip()[:200]}"
    return None


def hostname() -> str:
    """This machine's name as rosters and bridges record it (``WSBUS_HOSTNAME`` overrides:
    two bridges on one machine, or a container whose hostname changes)."""
    override = os.environ.get("WSBUS_HOSTNAME", "").strip()
    if override:
        return override
    return socket.gethostname().split(".")[0] or "localhost"


def sent_at(meta: dict[str, Any] | None, ts: float) -> float:
    """When a message was written: ``meta.sent_at`` for a spooled one, else ``ts``."""
    if meta:
        value = meta.get(META_SENT_AT)
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return ts


async def wait_receipt(
    client: Client, seq: int, names: set[str], timeout: float
) -> dict[str, Receipt]:
    """Wait for receipts of event ``seq`` from ``names``; returns the latest of each.

    Returns once every name has a final receipt or ``session_down`` (the message
    is queued until the pane is back: no need to keep the sender waiting), or
    after ``timeout`` seconds. The client should listen to no channels: receipts
    reach every connection of the sender.
    """
    got: dict[str, Receipt] = {}
    settled = {"read", "submitted", "unsubmitted", "failed", "session_down"}

    async def collect() -> None:
        async for item in client:
            if not isinstance(item, Receipt) or item.seq != seq or item.by not in names:
                continue
            got[item.by] = item
            if all(n in got and got[n].status in settled for n in names):
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), timeout)
    return got


async def thread_events(
    client: Client,
    channel: str,
    thread: str,
    *,
    newest: int | None = None,
    before: int | None = None,
) -> list[Event]:
    """A thread's events before seq ``before`` (the latest ``newest``, or all), oldest
    first, paged at the hub's ``max_history``."""
    limits = client.welcome.limits if client.welcome else None
    page_max = limits.max_history if limits else 100
    events: list[Event] = []
    while newest is None or len(events) < newest:
        want = page_max if newest is None else max(1, min(page_max, newest - len(events)))
        page = await client.history(channel=channel, thread=thread, before=before, limit=want)
        events[:0] = page.events
        if not page.more or not page.events:
            break
        before = page.events[0].seq
    return events
