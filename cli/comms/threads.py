"""``post``, ``read`` and ``threads``: markdown discussion threads, kept by the hub.

A post is an event with a ``thread``. When a project (a channel with a
registered roster) of the thread's name exists, ``post P`` goes to thread ``P``
of channel ``P`` and rings every member's doorbell; otherwise to the thread of
the default channel (or ``--channel``), ringing the registry agents. The
sender's model rides in ``meta.model``. ``read`` renders the hub's history of a
thread in the original file layout (the bridge keeps the same text in the local
markdown mirror); ``threads`` lists them. Without a hub, ``post`` appends to the
local file and rings local doorbells as the original did, then spools.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from wsbus.client import Client
from wsbus.schema import BROADCAST, DEFAULT_CHANNEL, THREAD_RULE, RosterEntry, valid_thread
from wsbus.schema import valid_name as valid_channel

from ..conventions import META_MODEL, NO_REPLY, loop_warning, thread_events
from ..exits import CliError, Exit
from ..local.audit import exchange_count
from ..local.registry import RegistryError, load_roster, safe_relpath
from ..local.threadfiles import (
    append_entry,
    entry,
    format_threads,
    last_entries,
    list_threads,
    render_events,
    thread_file,
    write_mirror,
)
from ..render import on_screen
from ..suggest import did_you_mean
from .context import Context, check_name
from .fallback import SPOOLED, LocalTarget, deliver, local_target, spool
from .messaging import audience, message_body, settle
from .spec import Command, add_from, add_hub, add_quiet, add_wait

__all__ = ["COMMANDS"]

READ_MAX = 1000
"""``read`` prints at most this many of a thread's latest entries."""


def _thread(name: str) -> str:
    try:
        safe_relpath(name)
    except ValueError as err:
        raise CliError(str(err), Exit.USAGE) from None
    thread = name.strip().removesuffix(".md")
    if not valid_thread(thread):
        raise CliError(f"invalid thread {name!r}: allowed {THREAD_RULE}", Exit.USAGE)
    return thread


def _path(ctx: Context, channel: str, thread: str) -> Path:
    try:
        return thread_file(ctx.paths.threads, channel, thread)
    except ValueError as err:
        raise CliError(str(err), Exit.USAGE) from None


async def _project(client: Client, ctx: Context, thread: str) -> list[RosterEntry]:
    """The roster of the project named ``thread`` (empty: no such project)."""
    if not valid_channel(thread):
        return []
    return list((await client.roster(thread, timeout=ctx.timeout)).registered)


# ---------------------------------------------------------------------- post


def _post_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("thread", help="thread or project name (may contain '/' for sub-threads)")
    p.add_argument("message", nargs="+", help="message words")
    p.add_argument("--to", default=None, help="doorbell only this agent (else all but self)")
    add_from(p)
    add_quiet(p)
    p.add_argument(
        "--confirm", action="store_true", help="wait for each doorbell's delivery receipt"
    )
    p.add_argument("--channel", "-c", default=None, help="channel when the thread is not a project")
    add_wait(p)
    add_hub(p)


def _me(ctx: Context, members: list[RosterEntry], sender: str) -> RosterEntry | None:
    session = ctx.my_session()
    for m in members:
        if session and m.session == session and m.host == ctx.host:
            return m
    mine = [m for m in members if m.name == sender]
    return next((m for m in mine if m.host == ctx.host), mine[0] if mine else None)


async def _direct_target(
    ctx: Context,
    client: Client,
    sender: str,
    channel: str,
    registered: list[RosterEntry],
    body: str,
) -> str:
    """``--to``: a name known here (in a project: a member, or connected to it)."""
    to: str = ctx.args.to
    members = {m.name for m in registered}
    connected = {m.name for m in (await client.roster(channel, timeout=ctx.timeout)).members}
    pool = members | set(ctx.registry.names()) | {m.name for m in await ctx.members(client)}
    if to not in pool | connected:
        raise CliError(f"unknown recipient '{to}'{did_you_mean(to, pool)}")
    if registered and to not in members | connected:
        # a bridge types events of a project only for the project's members
        raise CliError(
            f"not in project '{channel}': {to}{did_you_mean(to, members)} "
            f"(register it there, or message it with: agent_comms send {to} ...)"
        )
    agent = ctx.registry.agent(to)
    if agent is not None and not agent.enabled and to not in members:
        ctx.audit(sender, to, "DISABLED", body)
        raise CliError(f"disabled: {to}")
    return to


async def _post_hub(ctx: Context, client: Client, sender: str, thread: str, body: str) -> int:
    """Post through the hub (as the project member, when the caller is one)."""
    args = ctx.args
    registered = [] if args.channel else await _project(client, ctx, thread)
    channel = args.channel or (thread if registered else DEFAULT_CHANNEL)
    if args.channel:
        registered = list((await client.roster(channel, timeout=ctx.timeout)).registered)
    me = _me(ctx, registered or await ctx.members(client), sender)
    if me is not None and registered and me.name != sender:  # post as the project member
        await ctx.release(client)
        sender = me.name
        reconnected = await ctx.connect(sender)
        if reconnected is None:
            raise CliError(f"lost the hub: {ctx.unreachable}")
        client = reconnected
    model = me.model if me is not None and me.name == sender else None
    if args.to:
        targets = [await _direct_target(ctx, client, sender, channel, registered, body)]
    elif registered:
        targets = sorted(m.name for m in registered if m.name != sender)
    else:
        targets = await audience(ctx, client, sender, channel)
    meta: dict[str, Any] | None = {META_MODEL: model} if model else None
    ok = await client.send(
        args.to or BROADCAST, body, channel=channel, thread=thread, meta=meta, timeout=ctx.timeout
    )
    path = _path(ctx, channel, thread)
    events = await thread_events(client, channel, thread, newest=READ_MAX, before=ok.seq + 1)
    try:
        write_mirror(
            path, render_events(events, ctx.tunables.clip), lock_timeout=ctx.tunables.lock_timeout
        )
    except OSError as err:  # the post is stored: only the local copy is missing
        ctx.note(f"cannot write the local mirror {path}: {err}")
    scope = "project" if registered else "registry"
    if not args.confirm:
        for name in targets:
            ctx.audit(sender, name, f"DOORBELL:{thread}", body)
        ctx.say(f"posted to {path}  | doorbell → {len(targets)} ({scope})")
        return Exit.OK
    rung = failed = 0
    for name, status in (await settle(ctx, client, ok.seq, targets, channel, args.timeout)).items():
        failed += status in ("unsubmitted", "failed")
        if status in ("submitted", "read"):
            rung += 1
            ctx.audit(sender, name, f"DOORBELL:{thread}", body)
            continue
        ctx.audit(sender, name, f"DOORBELL_{status.upper()}:{thread}", body)
        if status == "unsubmitted" and not ctx.quiet:
            ctx.note(f"  unsubmitted doorbell -> {name}; raise its enter_delay")
    ctx.say(f"posted to {path}  | doorbell {rung}/{len(targets)} ({scope}) (confirmed)")
    return Exit.FAILURE if failed and not rung else Exit.OK


def _offline_targets(
    ctx: Context, sender: str, members: dict[str, Any], sender_member: str | None
) -> list[tuple[str, LocalTarget | None]]:
    to = ctx.args.to
    reg = ctx.registry
    if to:
        if to in members or reg.agent(to) is not None:
            agent = reg.agent(to)
            if to not in members and agent is not None and not agent.enabled:
                raise CliError(f"disabled: {to}")
            return [(to, local_target(ctx, to))]
        pool = list(members) + reg.names()
        raise CliError(f"unknown recipient '{to}'{did_you_mean(to, pool)}")
    if members:
        names = [n for n in members if n != sender_member and n != sender]
    else:
        names = [n for n in reg.names() if reg.agents()[n].get("enabled", True) and n != sender]
    return [(n, local_target(ctx, n)) for n in names]


async def _post_offline(ctx: Context, sender: str, thread: str, body: str) -> int:
    args = ctx.args
    try:
        members: dict[str, Any] = (
            {} if args.channel else load_roster(ctx.paths.projects, thread)["members"]
        )
    except (ValueError, RegistryError):
        members = {}
    channel = args.channel or (thread if members and valid_channel(thread) else DEFAULT_CHANNEL)
    session = ctx.my_session()
    sender_member = next(
        (
            n
            for n, m in members.items()
            if session and m.get("session") == session and ctx.is_mine(m.get("host"))
        ),
        None,
    )
    sender = sender_member or sender
    model = members.get(sender, {}).get("model")
    targets = _offline_targets(ctx, sender, members, sender_member)
    path = _path(ctx, channel, thread)
    append_entry(
        path,
        entry(sender, args.to, model, time.time(), ctx.tunables.clip(body)),
        ctx.tunables.lock_timeout,
    )
    pointer = f"{ctx.tunables.marker} {sender} posted in {thread} — review it ({path})"
    if NO_REPLY in body.lower():
        pointer += " (no reply needed)"
    rung, delivered = 0, dict[str, str]()
    for label, target in targets:
        line = pointer
        exchanged = exchange_count(ctx.paths.log, sender, label, ctx.tunables.loop_window_sec)
        if exchanged >= ctx.tunables.loop_warn_count:
            line += loop_warning(sender, label)
        outcome = await deliver(ctx, target, line) if target is not None else None
        status = outcome.status if outcome is not None else "session_down"
        if outcome is not None:
            delivered[label] = status
        if status == "submitted":
            rung += 1
            ctx.audit(sender, label, f"DOORBELL:{thread}", body)
        elif status == "session_down":  # or on another machine: the spool has it
            ctx.audit(sender, label, f"DOORBELL_QUEUED:{thread}", body)
        elif status == "unsubmitted":
            ctx.audit(sender, label, f"DOORBELL_UNSUBMITTED:{thread}", body)
            if target is not None and not ctx.quiet:
                ctx.note(
                    f"  unsubmitted doorbell -> {label} ({target.session}); raise its enter_delay"
                )
        else:
            ctx.audit(sender, label, f"DOORBELL_FAIL:{thread}", body)
    scope = "project" if members else "registry"
    ctx.say(f"posted to {path}  | doorbell {rung}/{len(targets)} ({scope})")
    spool(
        ctx,
        sender=sender,
        to=args.to or BROADCAST,
        body=body,
        channel=channel,
        thread=thread,
        model=model if model and model != "unknown" else None,
        delivered=delivered,
    )
    ctx.say(SPOOLED)
    failed = any(s in ("unsubmitted", "failed") for s in delivered.values())
    return Exit.FAILURE if failed and not rung else Exit.OK


async def run_post(args: argparse.Namespace, ctx: Context) -> int:
    thread = _thread(args.thread)
    body = message_body(args.message)
    if args.channel:
        check_name(args.channel, "channel")
    sender, client = await ctx.sender(args.frm)
    if client is None:
        return await _post_offline(ctx, sender, thread, body)
    return await _post_hub(ctx, client, sender, thread, body)


# ---------------------------------------------------------------------- read / threads


def _read_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("thread", help="thread or project name")
    p.add_argument("-n", type=int, default=0, help="last N entries (0 = all)")
    p.add_argument(
        "--channel", "-c", default=None, help="channel (default: the project, else default)"
    )
    add_hub(p)


def _read_local(ctx: Context, thread: str, channel: str | None, n: int) -> int:
    paths = [_path(ctx, channel or DEFAULT_CHANNEL, thread)]
    if channel is None and valid_channel(thread):
        paths.insert(0, _path(ctx, thread, thread))
    for path in paths:
        if path.is_file():
            print(on_screen(last_entries(path.read_text(encoding="utf-8", errors="replace"), n)))
            return Exit.OK
    raise CliError(f"no thread: {paths[-1]}")


async def run_read(args: argparse.Namespace, ctx: Context) -> int:
    thread = _thread(args.thread)
    if args.channel:
        check_name(args.channel, "channel")
    async with ctx.hub() as client:
        if client is None:
            ctx.note(f"hub unreachable ({ctx.unreachable}); reading the local file")
            return _read_local(ctx, thread, args.channel, args.n)
        channel = args.channel or (
            thread if await _project(client, ctx, thread) else DEFAULT_CHANNEL
        )
        events = await thread_events(client, channel, thread, newest=args.n or READ_MAX)
    if not events:
        raise CliError(f"no thread: {thread}")
    print(on_screen(last_entries(render_events(events, ctx.tunables.clip), args.n)))
    return Exit.OK


def _threads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel", "-c", default=None, help="only this channel's threads")
    add_hub(p)


async def run_threads(args: argparse.Namespace, ctx: Context) -> int:
    if args.channel:
        check_name(args.channel, "channel")
    async with ctx.hub() as client:
        if client is None:
            ctx.note(f"hub unreachable ({ctx.unreachable}); listing the local thread files")
            rows = list_threads(ctx.paths.threads)
        else:
            result = await client.threads(args.channel, timeout=ctx.timeout)
            rows = sorted(
                (
                    t.thread if t.channel == DEFAULT_CHANNEL else f"{t.channel}/{t.thread}",
                    t.entries,
                    t.last_ts,
                )
                for t in result.threads
            )
    for line in format_threads(rows):
        print(line)
    return Exit.OK


COMMANDS = (
    Command(
        "post",
        "append to a discussion thread + ring the doorbell",
        "Post to a thread: the entry goes to the hub (and the local markdown mirror) and "
        "each recipient's pane gets a one-line doorbell pointing at the thread. A project "
        "name posts to the project's thread and rings every member; --to rings one agent.",
        """\
examples:
  agent_comms post acme-web "the parser is merged; please review"
  agent_comms post hermes/pmxt-execution "deployed, dry-run green" --to claude
  agent_comms post acme-web "release notes are up [no-reply]" --confirm
""",
        _post_args,
        run_post,
    ),
    Command(
        "read",
        "print a thread",
        "Print a thread from the hub's history, in the markdown layout of the thread files.",
        """\
examples:
  agent_comms read acme-web
  agent_comms read hermes/pmxt-execution -n 3     # the last 3 entries
""",
        _read_args,
        run_read,
    ),
    Command(
        "threads",
        "list discussion threads",
        "List the threads the hub holds (project threads as CHANNEL/THREAD) with their "
        "entry counts and last activity.",
        """\
examples:
  agent_comms threads
  agent_comms threads --channel acme-web
""",
        _threads_args,
        run_threads,
    ),
)
