"""``wsbus listen``: print messages as they arrive, in agent-bus's block format."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from wsbus.client import Client
from wsbus.codec import encode_json
from wsbus.schema import Event

from .common import Subcommands, add_client_args, settings_from, warn
from .cursor import CursorFile
from .exits import CliError, Exit
from .render import listener_block

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus listen bob                 # blocks: [HH:MM:SSZ] from alice: / body / ---
  wsbus listen bob --json          # one JSON event per line
  wsbus listen bob --from-start    # everything still retained, then live
  wsbus listen bob --wait          # start before the hub does

Output per message (each block is one notification in a monitor tool):
  [14:02:11Z] from alice:
  the build is green
  ---
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "listen",
        help="print messages for a name as they arrive",
        description=(
            "Listen for messages to NAME (and channel broadcasts). Keeps a cursor so a "
            "restart replays what arrived while it was down. Until it first reaches the "
            "hub it gives up after --timeout (exit 3) unless --wait; once connected it "
            "reconnects forever."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="who to listen as (env WSBUS_NAME)")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--from-start", action="store_true", help="replay everything retained, ignoring the cursor"
    )
    start.add_argument("--since", type=int, metavar="SEQ", help="replay events after SEQ")
    p.add_argument("--no-cursor", action="store_true", help="neither read nor save the cursor")
    p.add_argument(
        "--wait",
        action="store_true",
        help="keep trying until the hub answers the first time (default: give up after "
        "--timeout; a hub restart later is always waited for)",
    )
    add_client_args(p)
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, name=args.name)
    if not settings.name:
        raise CliError("listen needs a name: wsbus listen NAME (or set WSBUS_NAME)", Exit.USAGE)
    name, channel = settings.name, settings.channel
    cursor = CursorFile(settings.url, name, channel)
    resume: int | None = None
    hub_id: str | None = None
    if args.from_start:
        resume = 0
    elif args.since is not None:
        resume = args.since
    elif not args.no_cursor:
        saved = cursor.load()
        resume, hub_id = saved.seq, saved.hub

    last_error = ["no answer"]

    def on_state(state: str, details: dict[str, Any]) -> None:
        if state == "reconnecting":
            last_error[0] = str(details.get("error"))
        if args.quiet and state != "truncated":
            return
        if state == "reconnecting":
            warn(f"hub unreachable ({details.get('error')}); retrying in {details['delay']:.1f}s")
        elif state == "connected":
            at = details.get("url") or settings.url
            warn(f"listening as {name} on {channel} at {at} (seq {details.get('seq')})")
        elif state == "truncated":
            warn(
                f"history truncated: some messages for {name} are gone "
                f"({details.get('reason')}); continuing from the oldest kept"
            )

    client = Client(
        settings.url,
        name,
        channels=[channel],
        resume=resume,
        hub_id=hub_id,
        on_state=on_state,
        open_timeout=settings.timeout,
        presence=False,
        **settings.access(),
    )
    out = sys.stdout
    try:
        # a listener that never reached the hub must not look like a hang
        async with asyncio.timeout(None if args.wait else settings.timeout):
            await client.connect(wait=True)
    except TimeoutError:
        await client.close()
        raise CliError(
            f"cannot reach the hub at {settings.url} within {settings.timeout:g} s: "
            f"{last_error[0]} ({'is `wsbus serve` running? ' if 'refused' in last_error[0] else ''}"
            "pass --wait to keep trying)",
            Exit.UNREACHABLE,
        ) from None
    try:
        async for item in client:
            if not isinstance(item, Event):
                continue
            if args.json:
                out.write(encode_json(item).decode() + "\n")
            else:
                out.write(listener_block(item))
            out.flush()
            if not args.no_cursor:
                try:
                    cursor.save(item.seq, client.hub_id)
                except OSError as err:
                    raise CliError(
                        f"cannot save the cursor at {cursor.path}: {err.strerror or err} "
                        "(fix the directory, or pass --no-cursor)"
                    ) from None
            if item.to == name:
                await client.ack(item.seq, "read")
    finally:
        await client.close()
    return Exit.OK
