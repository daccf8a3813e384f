"""``wsbus relay``: forward the disk spool to the hub.

Senders that could not reach the hub (a sandboxed agent, a hub that was down)
left their events in the spool (:mod:`.local.spool`). The relay sends them in spool
order, each with its original ``ref`` and sender, so a forward that is cut short
and repeated stores nothing twice; a file is removed only after the hub's
durable ``ok``. The bridge runs the same forwarding whenever it is connected.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import msgspec

from wsbus.client import Client
from wsbus.config import Access
from wsbus.errors import ClientError, HubUnreachable, SendRefused

from .common import Subcommands, add_client_args, settings_from
from .conventions import META_HOST, META_LOCAL, META_SENT_AT, hostname
from .exits import CliError, Exit
from .local.paths import CommsPaths, private_dir
from .local.spool import Spool, SpoolRecord

__all__ = ["RelayResult", "forward", "register", "run", "spooled_meta"]

log = logging.getLogger("wsbus.relay")

EXAMPLES = """\
examples:
  wsbus relay                      # forward what is spooled, once
  wsbus relay --watch              # keep forwarding (every 5 s) until Ctrl-C
  WSBUS_SPOOL=/shared/spool wsbus relay --url ws://hub.lan:8765
"""


class RelayResult(msgspec.Struct):
    """What one forwarding pass did."""

    forwarded: int = 0
    duplicates: int = 0
    rejected: int = 0
    remaining: int = 0


def spooled_meta(rec: SpoolRecord) -> dict[str, Any]:
    """The event meta of a spooled record: its own, plus when and where it was
    written and what was already delivered into local panes."""
    meta = dict(rec.meta or {})
    meta.setdefault(META_SENT_AT, rec.spooled_at)
    meta.setdefault(META_HOST, hostname())
    if rec.delivered:
        meta[META_LOCAL] = dict(rec.delivered)
    return meta


async def forward(
    spool: Spool, url: str, *, timeout: float = 10.0, access: Access | None = None
) -> RelayResult:
    """Send every spooled record to the hub at ``url`` (each removed after its ok).

    Raises :class:`HubUnreachable` when the hub cannot be reached, other
    :class:`ClientError` or :class:`TimeoutError` when the connection fails midway
    (what was acknowledged is gone from the spool; the rest stays).
    """
    items = spool.items()
    result = RelayResult()
    if not items:
        return result
    senders = sorted({rec.sender for _, rec in items})
    client = Client(
        url,
        names=senders,
        channels=[],
        kind="relay",
        presence=False,
        open_timeout=timeout,
        reconnect=False,
        **(access or Access(token=None, ca_file=None)),
    )
    await client.connect()
    try:
        for path, rec in items:
            try:
                ok = await client.send(
                    rec.to,
                    rec.body,
                    channel=rec.channel,
                    thread=rec.thread,
                    kind=rec.kind,
                    meta=spooled_meta(rec),
                    ref=rec.ref,
                    from_=rec.sender,
                    timeout=timeout,
                )
            except SendRefused as err:
                if err.code in ("shutting_down", "store_failed", "internal"):
                    break  # the hub is not taking sends now: keep the rest for later
                log.warning("spool: the hub refused %s (%s); set aside", path.name, err.message)
                spool.set_aside(path, err)
                result.rejected += 1
                continue
            spool.remove(path)
            if ok.duplicate:
                result.duplicates += 1
            else:
                result.forwarded += 1
    finally:
        await client.close()
    result.remaining = len(spool)
    return result


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "relay",
        help="forward spooled messages to the hub",
        description=(
            "Forward the events senders spooled while the hub was unreachable (a sandboxed "
            "agent, a hub that was down). Each keeps its ref: repeating a forward stores "
            "nothing twice. The bridge does the same whenever it is connected."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--watch", action="store_true", help="keep forwarding until interrupted")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between passes with --watch"
    )
    add_client_args(p, channel=False)
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    paths = CommsPaths.from_env()
    spool = Spool(paths.spool)
    private_dir(paths.spool)
    while True:
        try:
            result = await forward(
                spool, settings.url, timeout=settings.timeout, access=settings.access()
            )
        except (ClientError, TimeoutError) as err:  # unreachable, or lost mid-pass
            if not args.watch:
                raise CliError(
                    f"{err or 'timed out'}; {len(spool)} message(s) stay spooled in {paths.spool}",
                    Exit.UNREACHABLE if isinstance(err, HubUnreachable) else Exit.FAILURE,
                ) from None
            result = RelayResult(remaining=len(spool))
        if args.json:
            sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
        elif not args.quiet and (result.forwarded or result.duplicates or result.rejected):
            print(
                f"relayed {result.forwarded} (already stored: {result.duplicates}, "
                f"refused: {result.rejected}); {result.remaining} left in {paths.spool}",
                flush=True,
            )
        elif not args.quiet and not args.watch:
            print(f"nothing to relay ({result.remaining} left in {paths.spool})")
        if not args.watch:
            return Exit.OK if not result.rejected else Exit.FAILURE
        await asyncio.sleep(args.interval)
