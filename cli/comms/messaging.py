"""``send`` and ``broadcast``: one-line messages through the hub, with delivery receipts.

``send`` checks the recipient is known somewhere (the local registry, any
roster on the hub, or connected on the channel), sends a direct event and waits
for the bridge's receipt: ``delivered`` (typed and submitted), ``UNSUBMITTED``
(typed but left in the composer), ``FAILED``, or ``queued`` when the
recipient's pane is not reachable now (the hub keeps the message pending and
it is typed when the agent is back). ``broadcast`` is one event to ``*`` on the
default channel. Without a hub both deliver into local panes and spool.
"""

from __future__ import annotations

import argparse

from wsbus.client import Client
from wsbus.refs import new_ref
from wsbus.schema import DEFAULT_CHANNEL, NAME_RULE, Receipt, valid_name

from ..conventions import wait_receipt
from ..exits import CliError, Exit
from ..suggest import did_you_mean
from .context import Context, check_name
from .fallback import AUDIT_WORDS, SPOOLED, deliver, local_target, outcome_line, pane_line, spool
from .spec import Command, add_from, add_hub, add_quiet, add_wait

__all__ = ["COMMANDS", "audience", "message_body", "settle"]


def message_body(words: list[str]) -> str:
    body = " ".join(words)
    if not body.strip():
        raise CliError("empty message: nothing to send", Exit.USAGE)
    return body


async def audience(ctx: Context, client: Client, sender: str, channel: str) -> list[str]:
    """Who a ``*`` event on ``channel`` is for: enabled registry agents (default channel),
    the channel's registered members and connected names; never the sender or a
    disabled registry agent."""
    reg = ctx.registry
    roster = await client.roster(channel, timeout=ctx.timeout)
    names = {m.name for m in roster.registered} | {m.name for m in roster.members}
    if channel == DEFAULT_CHANNEL:
        names |= {n for n in reg.names() if reg.agents()[n].get("enabled", True)}
    disabled = {n for n in reg.names() if not reg.agents()[n].get("enabled", True)}
    return sorted(names - disabled - {sender})


async def settle(
    ctx: Context, client: Client, seq: int, targets: list[str], channel: str, timeout: float
) -> dict[str, str]:
    """What became of event ``seq`` for each target: its receipt's status, or ``queued``.

    Only names connected on ``channel`` (served by a bridge or a listener) are
    waited for; the others are queued by the hub until they come back.
    """
    online = {m.name for m in (await client.roster(channel, timeout=ctx.timeout)).members}
    waiting = {n for n in targets if n in online}
    got = await wait_receipt(client, seq, waiting, timeout) if waiting else {}
    return {n: got[n].status if n in got else "queued" for n in targets}


# ---------------------------------------------------------------------- send


def _send_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("to", help="the agent to message")
    p.add_argument("message", nargs="+", help="message words")
    add_from(p)
    add_quiet(p)
    p.add_argument(
        "--no-confirm",
        dest="confirm",
        action="store_false",
        help="do not wait for the delivery receipt (prints the event's seq)",
    )
    p.add_argument("--channel", "-c", default=None, help="channel (default: default)")
    add_wait(p)
    add_hub(p)
    p.set_defaults(confirm=True)


async def _recipient(ctx: Context, client: Client, to: str, channel: str) -> str | None:
    """The tmux session to show for ``to`` ("?" if none), or None when nobody knows it."""
    agent = ctx.registry.agent(to)
    if agent is not None:
        return agent.session or "?"
    members = [m for m in await ctx.members(client) if m.name == to]
    if members:
        mine = [m for m in members if m.host == ctx.host] or members
        return mine[0].session or "?"
    roster = await client.roster(channel, timeout=ctx.timeout)
    for m in roster.members:
        if m.name == to:
            return m.tmux or "?"
    return None


async def _unknown(ctx: Context, client: Client, to: str, channel: str) -> CliError:
    roster = await client.roster(channel, timeout=ctx.timeout)
    pool = (
        set(ctx.registry.names())
        | {m.name for m in await ctx.members(client)}
        | {m.name for m in roster.members}
    )
    return CliError(f"unknown: {to}{did_you_mean(to, pool)}")


def _report(
    ctx: Context, sender: str, to: str, session: str, receipt: Receipt | None, body: str
) -> int:
    status = receipt.status if receipt is not None else "queued"
    if status in ("submitted", "read"):
        ctx.audit(sender, to, "DELIVERED", body)
        ctx.say(f"delivered: {sender} -> {to} ({session})")
        return Exit.OK
    if status == "unsubmitted":
        ctx.audit(sender, to, "UNSUBMITTED", body)
        ctx.say(
            f"UNSUBMITTED: {sender} -> {to} ({session})"
            " — text sits in composer; raise this agent's enter_delay"
        )
        return Exit.FAILURE
    if status == "failed":
        reason = (receipt.reason if receipt else None) or "no reason given"
        ctx.audit(sender, to, "FAILED", body)
        ctx.say(f"FAILED: {sender} -> {to} — {reason}")
        return Exit.FAILURE
    ctx.audit(sender, to, "QUEUED", body)
    ctx.say(f"queued: {sender} -> {to} (offline; delivered when it is back)")
    return Exit.OK


async def _send_offline(ctx: Context, sender: str, to: str, body: str, channel: str) -> int:
    ref = new_ref()
    target = local_target(ctx, to)
    delivered: dict[str, str] = {}
    rc = Exit.OK
    if target is None:
        ctx.audit(sender, to, "SPOOLED", body)
        ctx.say(f"queued: {sender} -> {to} (not an agent on this machine)")
    else:
        outcome = await deliver(ctx, target, pane_line(ctx, sender, body, ref))
        delivered[to] = outcome.status
        word = AUDIT_WORDS[outcome.status]
        ctx.audit(sender, to, "SPOOLED" if word == "SESSION_DOWN" else word, body)
        ctx.say(outcome_line(sender, to, target.session, outcome))
        if outcome.status in ("unsubmitted", "failed"):
            rc = Exit.FAILURE
    spool(ctx, sender=sender, to=to, body=body, channel=channel, delivered=delivered, ref=ref)
    ctx.say(SPOOLED)
    return rc


async def run_send(args: argparse.Namespace, ctx: Context) -> int:
    body = message_body(args.message)
    channel = check_name(args.channel or DEFAULT_CHANNEL, "channel")
    to = args.to
    agent = ctx.registry.agent(to)
    sender, client = await ctx.sender(args.frm)
    if agent is not None and not agent.enabled:
        ctx.audit(sender, to, "DISABLED", body)
        raise CliError(f"disabled: {to}")
    if client is None:
        return await _send_offline(ctx, sender, to, body, channel)
    session = await _recipient(ctx, client, to, channel)
    if session is None:
        ctx.audit(sender, to, "UNKNOWN", body)
        raise await _unknown(ctx, client, to, channel)
    if not valid_name(to):
        raise CliError(f"invalid recipient {to!r}: allowed {NAME_RULE}", Exit.USAGE)
    ok = await client.send(to, body, channel=channel, timeout=ctx.timeout)
    if not args.confirm:
        ctx.audit(sender, to, "SENT", body)
        ctx.say(f"sent: {sender} -> {to} #{ok.seq}")
        return Exit.OK
    receipt = None
    if ok.online is not False:
        receipt = (await wait_receipt(client, ok.seq, {to}, args.timeout)).get(to)
    return _report(ctx, sender, to, session, receipt, body)


# ---------------------------------------------------------------------- broadcast


def _broadcast_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("message", nargs="+", help="message words")
    add_from(p)
    add_quiet(p)
    p.add_argument(
        "--confirm",
        action="store_true",
        help="wait for every recipient's delivery receipt and count the deliveries",
    )
    add_wait(p)
    add_hub(p)


async def _broadcast_offline(ctx: Context, sender: str, body: str) -> int:
    ref = new_ref()
    reg = ctx.registry
    names = [n for n in reg.names() if reg.agents()[n].get("enabled", True) and n != sender]
    delivered: dict[str, str] = {}
    line = pane_line(ctx, sender, body, ref)
    for name in names:
        target = local_target(ctx, name)
        if target is None:
            continue
        outcome = await deliver(ctx, target, line)
        delivered[name] = outcome.status
        word = AUDIT_WORDS[outcome.status]
        ctx.audit(sender, name, "SPOOLED" if word == "SESSION_DOWN" else word, body)
        ctx.say(outcome_line(sender, name, target.session, outcome))
    done = sum(1 for s in delivered.values() if s == "submitted")
    ctx.say(f"broadcast: {done}/{len(names)} delivered (from {sender})")
    spool(ctx, sender=sender, to="*", body=body, channel=DEFAULT_CHANNEL, delivered=delivered)
    ctx.say(SPOOLED)
    failed = any(s in ("unsubmitted", "failed") for s in delivered.values())
    return Exit.FAILURE if failed else Exit.OK


async def run_broadcast(args: argparse.Namespace, ctx: Context) -> int:
    body = message_body(args.message)
    sender, client = await ctx.sender(args.frm)
    if client is None:
        return await _broadcast_offline(ctx, sender, body)
    targets = await audience(ctx, client, sender, DEFAULT_CHANNEL)
    ok = await client.send("*", body, channel=DEFAULT_CHANNEL, timeout=ctx.timeout)
    if not args.confirm:
        for name in targets:
            ctx.audit(sender, name, "SENT", body)
        ctx.say(f"broadcast: sent to {len(targets)} agent(s) (from {sender})")
        return Exit.OK
    statuses = await settle(ctx, client, ok.seq, targets, DEFAULT_CHANNEL, args.timeout)
    done = failed = 0
    for name, status in statuses.items():
        if status in ("submitted", "read"):
            done += 1
            ctx.audit(sender, name, "DELIVERED", body)
        elif status in ("unsubmitted", "failed"):
            failed += 1
            ctx.audit(sender, name, status.upper(), body)
        else:
            ctx.audit(sender, name, "QUEUED", body)
    ctx.say(f"broadcast: {done}/{len(targets)} delivered (from {sender})")
    return Exit.FAILURE if failed else Exit.OK


COMMANDS = (
    Command(
        "send",
        "send a message to one agent",
        "Send a one-line message to one agent, on this machine or another, and wait for "
        "its delivery receipt: delivered (typed and submitted into its pane), UNSUBMITTED, "
        "FAILED, or queued when it is offline (the hub keeps it until the agent is back). "
        "Without a hub it types into the local pane directly and spools the message.",
        """\
examples:
  agent_comms send codex "what's the status of the build?"
  agent_comms send grok "look up the API limits" --from claude
  agent_comms send codex "fire and forget" --no-confirm
""",
        _send_args,
        run_send,
    ),
    Command(
        "broadcast",
        "send to all agents (except yourself)",
        "Send one message to every agent on the default channel: the enabled registry "
        "agents, registered members and connected names, except yourself.",
        """\
examples:
  agent_comms broadcast "standup in 5 minutes"
  agent_comms broadcast "build is green" --confirm     # count the deliveries
""",
        _broadcast_args,
        run_broadcast,
    ),
)
