"""``wsbus inbox NAME``: the messages waiting for an agent, for hooks that wake it up.

Coding agents with hooks (a prompt-submit or stop hook) do not need text typed
into their pane: the hook runs ``wsbus inbox NAME --unread --mark-read`` and the
agent reads what it prints, in the listener's block format. ``--unread`` lists
the direct messages without a final receipt; ``--mark-read`` acknowledges them
(``read``), so the sender's receipt says so and the next call prints nothing new.
"""

from __future__ import annotations

import argparse
import sys

from wsbus.client import Client
from wsbus.codec import encode_json

from .common import Subcommands, add_client_args, settings_from
from .exits import CliError, Exit
from .render import listener_block, on_screen

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus inbox claude --unread                # what waits for claude, without marking it
  wsbus inbox claude --unread --mark-read    # for a hook: print, then mark read
  wsbus inbox claude -n 5                    # the last 5 direct messages, read or not
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inbox",
        help="print an agent's direct messages (unread ones with --unread)",
        description=(
            "Print the direct messages to NAME in the listener's block format, oldest "
            "first. Meant for agents' hooks: wake an agent up without typing into it."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="whose inbox (env WSBUS_NAME)")
    p.add_argument("--unread", action="store_true", help="only messages without a final receipt")
    p.add_argument("--mark-read", action="store_true", help="acknowledge what is printed (read)")
    p.add_argument("-n", type=int, default=50, help="at most N messages (default 50)")
    add_client_args(p)
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, name=args.name)
    if not settings.name:
        raise CliError("inbox needs a name: wsbus inbox NAME (or set WSBUS_NAME)", Exit.USAGE)
    if not 1 <= args.n <= 1000:
        raise CliError(f"-n must be between 1 and 1000, not {args.n}", Exit.USAGE)
    name = settings.name
    client = Client(
        settings.url,
        name,
        channels=[],
        presence=False,
        open_timeout=settings.timeout,
        **settings.access(),
    )
    await client.connect()
    try:
        page = await client.history(
            channel=settings.channel,
            to=name,
            pending=args.unread,
            after=0 if args.unread else None,  # unread: the oldest first; else the latest
            limit=args.n,
            timeout=settings.timeout,
        )
        out = sys.stdout
        for ev in page.events:
            out.write(
                encode_json(ev).decode() + "\n" if args.json else on_screen(listener_block(ev))
            )
        out.flush()
        if args.mark_read:
            for ev in page.events:
                await client.ack(ev.seq, "read", name=name)
            if page.events:
                await client.ping(timeout=settings.timeout)  # the acks were taken
    finally:
        await client.close()
    return Exit.OK
