"""``wsbus show SEQ``: print one stored event (what a doorbell for a long message points at)."""

from __future__ import annotations

import argparse
import sys

from wsbus.client import Client
from wsbus.codec import encode_json

from .common import Subcommands, add_client_args, settings_from
from .exits import CliError, Exit
from .render import history_block, on_screen

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus show 1043           # the event a doorbell named
  wsbus show 1043 --body    # only the body, e.g. to pipe it on
  wsbus show 1043 --json
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "show",
        help="print one stored event by its seq",
        description="Print one stored event: who sent it to whom, when, where, and its body.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("seq", type=int, metavar="SEQ", help="the event's seq (doorbells name it)")
    p.add_argument("--body", action="store_true", help="print only the body")
    add_client_args(p, channel=False)
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    if args.seq < 1:
        raise CliError(f"invalid seq {args.seq}: seqs start at 1", Exit.USAGE)
    settings = settings_from(args)
    client = Client(
        settings.url,
        channels=[],
        presence=False,
        open_timeout=settings.timeout,
        **settings.access(),
    )
    await client.connect()
    try:
        page = await client.history(after=args.seq - 1, limit=1, timeout=settings.timeout)
    finally:
        await client.close()
    ev = page.events[0] if page.events and page.events[0].seq == args.seq else None
    if ev is None:
        raise CliError(f"no event #{args.seq} (never stored, or removed by retention)")
    if args.json:
        sys.stdout.write(encode_json(ev).decode() + "\n")
    elif args.body:
        sys.stdout.write(on_screen(ev.body + ("" if ev.body.endswith("\n") else "\n")))
    else:
        sys.stdout.write(on_screen(history_block(ev)))
    return Exit.OK
