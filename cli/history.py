"""``wsbus history``: print stored events."""

from __future__ import annotations

import argparse
import sys

from wsbus.client import Client
from wsbus.codec import encode_json
from wsbus.schema import Event

from .common import Subcommands, add_client_args, settings_from
from .exits import CliError, Exit
from .render import history_block, on_screen

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus history                     # last 20 events on the default channel
  wsbus history --to bob -n 100     # what bob was sent
  wsbus history --thread parser --json
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "history",
        help="print stored events",
        description="Print the latest stored events of a channel, oldest first.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--to", help="only events addressed to NAME ('*' for broadcasts)")
    p.add_argument("--from", dest="sender", help="only events sent by NAME")
    p.add_argument("--thread", "-t", help="only events in this thread")
    p.add_argument("-n", type=int, default=20, help="how many (default 20)")
    p.add_argument("--all-channels", action="store_true", help="every channel, not just one")
    add_client_args(p)
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.n < 1:
        raise CliError("-n must be at least 1", Exit.USAGE)
    client = Client(
        settings.url,
        None,
        channels=[],  # query-only
        open_timeout=settings.timeout,
        presence=False,
        **settings.access(),
    )
    welcome = await client.connect()
    page_max = welcome.limits.max_history if welcome.limits else 1000
    events: list[Event] = []
    before: int | None = None
    try:
        while len(events) < args.n:
            result = await client.history(
                channel=None if args.all_channels else settings.channel,
                to=args.to,
                from_=args.sender,
                thread=args.thread,
                before=before,
                limit=min(page_max, args.n - len(events)),
                timeout=settings.timeout,
            )
            events[:0] = result.events
            if not result.more or not result.events:
                break
            before = result.events[0].seq
    finally:
        await client.close()
    out = sys.stdout
    for ev in events:
        out.write(encode_json(ev).decode() + "\n" if args.json else on_screen(history_block(ev)))
    if not events and not args.json and not args.quiet:
        print("no events", file=sys.stderr)
    return Exit.OK
