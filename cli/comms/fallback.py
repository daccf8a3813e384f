"""Without a hub: deliver straight into local panes, as the original tool did, and spool.

When the hub cannot be reached, ``send``, ``broadcast`` and ``post`` type into
the panes tmux can reach on this machine (registry agents and local roster
members), and in every case write the event to the spool, with what was
already delivered in ``meta.local``: the bridge or ``wsbus relay`` forwards it
when the hub is back, so the hub's history is complete and no pane gets the
message twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import NamedTuple

from wsbus.refs import new_ref

from ..bridge.inject import Injector, Outcome, is_one_line, message_line
from ..conventions import AUDIT_WORDS, META_HOST, META_MODEL, long_doorbell, run_revive
from ..local.paths import private_dir, write_atomic
from ..local.spool import Spool, SpoolRecord
from .context import Context

__all__ = [
    "AUDIT_WORDS",
    "SPOOLED",
    "LocalTarget",
    "deliver",
    "local_target",
    "outcome_line",
    "pane_line",
    "spool",
]

SPOOLED = "spooled: hub unreachable; forwarded by the bridge or `wsbus relay` when it is back"


_DONE_HERE = ("submitted", "unsubmitted", "failed")
"""Statuses recorded in ``meta.local``: the text reached (or was tried in) the pane.
A session that was down is left out, so the bridge delivers it when it is back."""


class LocalTarget(NamedTuple):
    """A pane on this machine and how to type into it."""

    name: str
    session: str
    enter_delay: float | None = None
    paste: bool = False
    revive_cmd: str | None = None


def local_target(ctx: Context, name: str) -> LocalTarget | None:
    """``name``'s pane if it is on this machine: the registry first, then the rosters."""
    agent = ctx.registry.agent(name)
    if agent is not None and agent.session and ctx.is_mine(agent.host):
        return LocalTarget(name, agent.session, agent.enter_delay, agent.paste, agent.revive_cmd)
    for _, member, entry in ctx.local_members():
        session = entry.get("session")
        if member == name and session and ctx.is_mine(entry.get("host")):
            delay = entry.get("enter_delay")
            return LocalTarget(
                name, str(session), delay if isinstance(delay, int | float) else None
            )
    return None


def _revive(ctx: Context, target: LocalTarget) -> None:
    """Run the registry's revive command (local config, never a message) and wait a little."""
    assert target.revive_cmd is not None
    failed = run_revive(target.revive_cmd, ctx.tunables.revive_timeout)
    if failed:
        ctx.note(f"revive '{target.name}' failed: {failed}")
    deadline = time.monotonic() + ctx.tunables.revive_grace
    while time.monotonic() < deadline and not ctx.tmux.has_session(target.session):
        time.sleep(0.2)


async def deliver(ctx: Context, target: LocalTarget, line: str) -> Outcome:
    """Type ``line`` into the target's pane (reviving its session first if it can)."""
    if target.revive_cmd and not ctx.tmux.has_session(target.session):
        await asyncio.to_thread(_revive, ctx, target)
    injector = Injector(ctx.tmux, verify_delay=ctx.tunables.verify_delay)
    delay = ctx.tunables.enter_delay if target.enter_delay is None else target.enter_delay
    return await injector.deliver_async(
        target.session, ctx.tunables.clip(line), delay, paste=target.paste
    )


def pane_line(ctx: Context, sender: str, body: str, ref: str) -> str:
    """The line for a direct message: the message itself, or a doorbell to a copy of it."""
    now = time.time()
    if is_one_line(body, ctx.tunables.one_line_max):
        return message_line(ctx.tunables.marker, sender, now, body)
    path = ctx.paths.state / "messages" / f"{ref}.md"
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))
    try:
        private_dir(path.parent)
        write_atomic(path, f"## [{sender} {stamp}]\n\n{body}\n".encode())
        where = str(path)
    except OSError as err:
        ctx.note(f"cannot write {path}: {err}")
        where = "(the copy could not be written; it is in the hub once relayed)"
    return long_doorbell(ctx.tunables.marker, sender, now, body, where)


def outcome_line(sender: str, target: str, session: str, outcome: Outcome) -> str:
    """What a direct delivery did, as the original printed it."""
    match outcome.status:
        case "submitted":
            return f"delivered: {sender} -> {target} ({session})"
        case "unsubmitted":
            return (
                f"UNSUBMITTED: {sender} -> {target} ({session})"
                " — text sits in composer; raise this agent's enter_delay"
            )
        case "session_down":
            return f"queued: {sender} -> {target} (session '{session}' is down)"
        case _:
            return f"FAILED: {sender} -> {target} — {outcome.reason or 'unknown error'}"


def spool(
    ctx: Context,
    *,
    sender: str,
    to: str,
    body: str,
    channel: str,
    thread: str | None = None,
    kind: str | None = None,
    model: str | None = None,
    delivered: dict[str, str] | None = None,
    ref: str | None = None,
) -> Path:
    """Write the event to the spool (what was delivered here goes in ``meta.local``)."""
    meta: dict[str, object] = {META_HOST: ctx.host}
    if model:
        meta[META_MODEL] = model
    record = SpoolRecord(
        ref=ref or new_ref(),
        sender=sender,
        to=to,
        body=body,
        channel=channel,
        thread=thread,
        kind=kind,
        meta=meta,
        spooled_at=time.time(),
        delivered={n: s for n, s in (delivered or {}).items() if s in _DONE_HERE},
    )
    return Spool(ctx.paths.spool).put(record)
