"""``wsbus send``: publish one message and wait for the hub's durable ok.

Agents call it in loops, so it starts light: a plain send goes through the blocking
one-shot sender (:mod:`wsbus.oneshot`, no asyncio); ``--confirm`` (it waits for a
receipt), a proxy, and whatever the one-shot sender does not wait out (a retry, a
reconnect) go through the asyncio client, with the same ref.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from wsbus.config import Settings
from wsbus.errors import HubUnreachable
from wsbus.handshake import SendResult
from wsbus.refs import new_ref
from wsbus.schema import NAME_RULE, THREAD_RULE, valid_name, valid_thread

from .common import ATTACH_HINT, Subcommands, add_client_args, need_name, settings_from, warn
from .exits import CliError, Exit
from .render import stamp

if TYPE_CHECKING:
    from wsbus.schema import Receipt, Welcome

    from .verify import Reference

__all__ = ["attach_body", "delivery_line", "read_body", "register", "run"]

EXAMPLES = """\
examples:
  wsbus send --as alice bob "the build is green"
  echo "deploy done" | WSBUS_NAME=alice wsbus send bob      # body from stdin
  wsbus send --as alice '*' "standup in 5"                   # whole channel
  wsbus send --as alice bob --thread parser --json "see PR 12"
  wsbus send --as alice codex --confirm "run the tests"      # wait for the delivery receipt
  wsbus send --as alice codex --spool "ping"                 # hub down: spool it for the relay
  wsbus send --as alice bob --attach out/hits.csv "the hits"  # path, size, sha256: not the data
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
    p.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="sender name (env WSBUS_NAME; with WSBUS_TOKEN and no name: the token's own)",
    )
    p.add_argument("--thread", "-t", help="thread the message belongs to")
    p.add_argument("--kind", help="event kind (default: agent)")
    p.add_argument(
        "--ref", help="idempotency key (default: random); resending it stores nothing new"
    )
    p.add_argument(
        "--confirm",
        action="store_true",
        help="wait for the recipient's receipt (submitted into its pane, or read)",
    )
    p.add_argument(
        "--confirm-timeout",
        type=float,
        default=30.0,
        help="seconds --confirm waits for the receipt (default 30)",
    )
    p.add_argument(
        "--spool",
        action="store_true",
        help="if the hub is unreachable, spool the message for `wsbus relay` instead of failing",
    )
    p.add_argument(
        "--attach",
        metavar="FILE",
        help="send a reference to FILE (path, size, sha256, host), never its content; the "
        "message, if any, goes first (from stdin only if it is already there); the "
        "recipient checks its copy with `wsbus verify SEQ`",
    )
    add_client_args(p)
    p.set_defaults(func=run)
    return p


#: the most read from stdin for a body: a whole websocket frame (``max_frame``)
MAX_STDIN = Settings().max_frame


def read_body(words: list[str]) -> str:
    """The body: the words joined, or stdin (one trailing newline removed)."""
    if words:
        return " ".join(words)
    if sys.stdin is None or sys.stdin.isatty():
        raise CliError("no message: give it as arguments or on stdin", Exit.USAGE)
    # no hub takes a body larger than a frame: read no more than that (a 100 MB pipe
    # is refused after 1 MiB, not held in memory whole)
    data = sys.stdin.buffer.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise CliError(
            f"the body on stdin is over {MAX_STDIN >> 20} MiB, more than any hub takes "
            f"(64 KiB by default){ATTACH_HINT}",
            Exit.USAGE,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError("stdin is not UTF-8 text", Exit.USAGE) from None
    if text.endswith("\n"):
        text = text[:-1]
    return text


class Outgoing:
    """One message to send, checked: everything but the connection."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings: Settings = settings_from(args)
        # with a token and no name, the token says who sends (the hub's welcome names it)
        self.name: str | None = self.settings.name
        if self.name is None and not os.environ.get("WSBUS_TOKEN"):
            self.name = need_name(self.settings, "send")
        if args.to != "*" and not valid_name(args.to):
            raise CliError(
                f"invalid recipient {args.to!r}: allowed {NAME_RULE}, or '*'", Exit.USAGE
            )
        if args.thread is not None and not valid_thread(args.thread):
            raise CliError(f"invalid thread {args.thread!r}: allowed {THREAD_RULE}", Exit.USAGE)
        self.meta: dict[str, Any] | None = None
        if args.attach is not None:
            self.body, self.meta = _attach(args)
        else:
            self.body = read_body(args.message)
        if not self.body.strip():
            raise CliError("empty message: nothing to send", Exit.USAGE)
        if not 0 < args.confirm_timeout < 86400:
            raise CliError("--confirm-timeout must be a number of seconds above 0", Exit.USAGE)
        if args.confirm and args.to == "*":
            raise CliError("--confirm needs one recipient, not '*'", Exit.USAGE)
        self.ref: str = args.ref or new_ref()

    def fields(self) -> dict[str, Any]:
        """The ``send`` frame's fields besides ref, to and body."""
        return {
            "channel": self.settings.channel,
            "thread": self.args.thread,
            "kind": self.args.kind,
            "meta": self.meta,
        }

    def sender(self, welcome: Welcome | None) -> str:
        """Who sends: the name given, else the first the token vouches for."""
        if self.name is not None:
            return self.name
        named = welcome.names if welcome is not None else []
        if not named:
            raise CliError(
                "this token names nobody to send as (an admin token): pass --as NAME",
                Exit.USAGE,
            )
        return named[0]


def run(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    out = Outgoing(args)
    if args.confirm or _proxied():
        return _send_async(out)
    from wsbus.codec import JSON
    from wsbus.handshake import send_frame
    from wsbus.oneshot import OneShot, Unsettled

    settings = out.settings
    try:
        with OneShot(
            settings.url,
            out.name,
            kind=args.kind or "agent",
            timeout=settings.timeout,
            **settings.access(),
        ) as bus:
            try:
                welcome = bus.connect()
            except HubUnreachable as err:
                return _spool(out, err)
            name = out.sender(welcome)
            frame = send_frame(JSON, welcome.limits, out.ref, args.to, out.body, **out.fields())
            result = bus.send(frame)
            note = None  # for a name nobody has seen here (a typo?): ≤ 2 s, never fails
            if not args.quiet:
                from .unseen import max_history_of, unseen_note_blocking

                note = unseen_note_blocking(
                    bus.requests,
                    args.to,
                    settings.channel,
                    me=name,
                    seq=result.seq,
                    online=result.online,
                    max_history=max_history_of(welcome),
                )
    except Unsettled:  # a retry or a reconnect to wait out: the asyncio client, same ref
        return _send_async(out, wait=True)
    return _report(out, name, result, None, note)


def _proxied() -> bool:
    """Whether a proxy is configured (websockets' asyncio client honours it; the
    one-shot sender connects directly)."""
    return any(k.lower().endswith("_proxy") and k.lower() != "no_proxy" for k in os.environ)


async def _send_async(out: Outgoing, *, wait: bool = False) -> int:
    """The send through the asyncio client: ``--confirm``, or finishing a send the
    one-shot sender could not (``wait``: reconnect until the timeout, as a client
    that was connected does)."""
    import asyncio

    from wsbus.client import Client

    from .conventions import wait_receipt

    args, settings = out.args, out.settings
    client = Client(
        settings.url,
        out.name,
        channels=[],  # send-only: receives no events, only its oks (and receipts)
        kind=args.kind or "agent",
        open_timeout=settings.timeout,
        presence=False,
        **settings.access(),
    )
    try:
        if wait:
            await asyncio.wait_for(client.connect(wait=True), settings.timeout)
        else:
            await client.connect()
    except HubUnreachable as err:
        await client.close()
        return _spool(out, err)
    except BaseException:
        await client.close()
        raise
    receipt: Receipt | None = None
    try:
        name = out.sender(client.welcome)
        result = await client.send(
            args.to, out.body, ref=out.ref, timeout=settings.timeout, **out.fields()
        )
        if args.confirm and result.online is not False:
            got = await wait_receipt(client, result.seq, {args.to}, args.confirm_timeout)
            receipt = got.get(args.to)
        note = None  # for a name nobody has seen here (a typo?): ≤ 2 s, never fails the send
        if not args.quiet:
            from .unseen import unseen_note

            note = await unseen_note(
                client, args.to, settings.channel, me=name, seq=result.seq, online=result.online
            )
    finally:
        await client.close()
    return _report(out, name, result, receipt, note)


def _spool(out: Outgoing, err: HubUnreachable) -> int:
    """The hub is unreachable: with ``--spool``, keep the message for the relay."""
    if not out.args.spool:
        raise err
    if out.name is None:
        raise CliError(f"{err}; cannot spool without a name: pass --as NAME", Exit.UNREACHABLE)
    from .local.paths import CommsPaths
    from .local.spool import Spool, SpoolRecord

    args = out.args
    path = Spool(CommsPaths.from_env().spool).put(
        SpoolRecord(
            ref=out.ref,
            sender=out.name,
            to=args.to,
            body=out.body,
            channel=out.settings.channel,
            thread=args.thread,
            kind=args.kind,
            meta=out.meta,
            spooled_at=time.time(),
        )
    )
    if not args.quiet:
        print(f"spooled: {err}; `wsbus relay` or the bridge forwards it ({path.name})")
    return Exit.OK


def _report(
    out: Outgoing, name: str, result: SendResult, receipt: Receipt | None, note: str | None
) -> int:
    """Print what was stored (and delivered); the exit status."""
    args, channel = out.args, out.settings.channel
    if args.json:
        line: dict[str, Any] = {
            "ok": True,
            "seq": result.seq,
            "ts": result.ts,
            "ref": result.ref,
            "channel": channel,
            "from": name,
            "to": args.to,
            "duplicate": result.duplicate,
        }
        if out.meta is not None:
            line.update(out.meta)  # the attachment reference
        if args.confirm:
            line["delivery"] = receipt.status if receipt else "queued"
            line["reason"] = receipt.reason if receipt else None
        sys.stdout.write(msgspec.json.encode(line).decode() + "\n")
    elif not args.quiet:
        again = " (already stored)" if result.duplicate else ""
        print(f"sent #{result.seq} at {stamp(result.ts)} to {args.to} on {channel}{again}")
        if args.confirm:
            print(delivery_line(args.to, receipt))
    if note is not None:
        print(note, file=sys.stderr)
    if receipt is not None and receipt.status in ("unsubmitted", "failed"):
        return Exit.FAILURE
    return Exit.OK


def _attach(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The body and ``meta`` of ``--attach FILE``: a reference, never the content."""
    from .verify import META_ATTACH, attachment, exposed

    attached = attachment(args.attach)
    mode = exposed(args.attach)
    if mode is not None:
        warn(
            f"warning: {args.attach} is readable by group or others (mode {mode:04o}): chmod 600 it"
        )
    return attach_body(_attach_note(args.message), attached), {
        META_ATTACH: msgspec.to_builtins(attached)
    }


def attach_body(note: str, ref: Reference) -> str:
    """The body of an attachment: the note (if any) on its own lines, the attach line last."""
    from .verify import attach_line

    line = attach_line(ref)
    return f"{note}\n{line}" if note.strip() else line


def _attach_note(words: list[str]) -> str:
    """The text sent with --attach: the words, or stdin when something was piped in
    already. Never waits on an idle stdin (agents' shells often hold one open)."""
    if words:
        return " ".join(words)
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        return ""
    try:
        ready, _, _ = select.select([stdin], [], [], 0)
    except (OSError, ValueError):  # not selectable (a Windows pipe, a closed stdin)
        return ""
    return read_body([]) if ready else ""


def delivery_line(to: str, receipt: Receipt | None) -> str:
    """What became of a confirmed send, in one line."""
    if receipt is None or receipt.status == "session_down":
        return f"queued: {to} is offline; it gets the message when it is back"
    if receipt.status in ("submitted", "read"):
        return f"delivered: {to} ({receipt.status})"
    why = f" — {receipt.reason}" if receipt.reason else ""
    return f"{receipt.status.upper()}: {to}{why}"
