"""``wsbus send``: publish one message and wait for the hub's durable ok."""

from __future__ import annotations

import argparse
import sys

import msgspec

from wsbus.client import Client
from wsbus.schema import NAME_RULE, THREAD_RULE, valid_name, valid_thread

from .common import Subcommands, add_client_args, need_name, settings_from
from .exits import CliError, Exit
from .render import stamp

__all__ = ["read_body", "register", "run"]

EXAMPLES = """\
examples:
  wsbus send --as alice bob "the build is green"
  echo "deploy done" | WSBUS_NAME=alice wsbus send bob      # body from stdin
  wsbus send --as alice '*' "standup in 5"                   # whole channel
  wsbus send --as alice bob --thread parser --json "see PR 12"
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "send",
        help="send a message (durable; prints seq and time)",
        description="Send one message. Returns once the hub has stored it durably.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("to", metavar="TO", help="recipient name, or '*' for everyone on the channel")
    p.add_argument("message", nargs="*", help="message words (none: read the body from stdin)")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="sender name (env WSBUS_NAME)")
    p.add_argument("--thread", "-t", help="thread the message belongs to")
    p.add_argument("--kind", help="event kind (default: agent)")
    p.add_argument(
        "--ref", help="idempotency key (default: random); resending it stores nothing new"
    )
    add_client_args(p)
    p.set_defaults(func=run)
    return p


def read_body(words: list[str]) -> str:
    """The body: the words joined, or stdin (one trailing newline removed)."""
    if words:
        return " ".join(words)
    if sys.stdin is None or sys.stdin.isatty():
        raise CliError("no message: give it as arguments or on stdin", Exit.USAGE)
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError("stdin is not UTF-8 text", Exit.USAGE) from None
    if text.endswith("\n"):
        text = text[:-1]
    return text


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    name = need_name(settings, "send")
    if args.to != "*" and not valid_name(args.to):
        raise CliError(f"invalid recipient {args.to!r}: allowed {NAME_RULE}, or '*'", Exit.USAGE)
    if args.thread is not None and not valid_thread(args.thread):
        raise CliError(f"invalid thread {args.thread!r}: allowed {THREAD_RULE}", Exit.USAGE)
    body = read_body(args.message)
    if not body.strip():
        raise CliError("empty message: nothing to send", Exit.USAGE)
    client = Client(
        settings.url,
        name,
        channels=[],  # send-only: receives no events, only its oks
        kind=args.kind or "agent",
        open_timeout=settings.timeout,
        presence=False,
    )
    await client.connect()
    try:
        result = await client.send(
            args.to,
            body,
            channel=settings.channel,
            thread=args.thread,
            kind=args.kind,
            ref=args.ref,
            timeout=settings.timeout,
        )
    finally:
        await client.close()
    if args.json:
        out = {
            "ok": True,
            "seq": result.seq,
            "ts": result.ts,
            "ref": result.ref,
            "channel": settings.channel,
            "from": name,
            "to": args.to,
            "duplicate": result.duplicate,
        }
        sys.stdout.write(msgspec.json.encode(out).decode() + "\n")
    elif not args.quiet:
        again = " (already stored)" if result.duplicate else ""
        print(f"sent #{result.seq} at {stamp(result.ts)} to {args.to} on {settings.channel}{again}")
    return Exit.OK
