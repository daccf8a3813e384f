"""``wsbus reserve``, ``wsbus release``, ``wsbus reservations``: file leases.

Advisory locks the hub keeps (the rules: docs/LEASES.md): an agent reserves paths or
globs relative to the repository root for a while, exclusive or shared, and other
agents' conflicting reservations are refused naming the holder. Each command is one
blocking round trip (:class:`wsbus.oneshot.OneShot`), like ``wsbus send``.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from wsbus.codec import encode_json
from wsbus.config import Settings
from wsbus.leases import until_text
from wsbus.oneshot import OneShot
from wsbus.refs import new_ref
from wsbus.schema import Lease, Leases, LeasesResult, Release, Released, Reserve, Reserved

from .common import Subcommands, add_client_args, settings_from
from .exits import CliError, Exit

__all__ = [
    "DURATION_RULE",
    "lease_line",
    "parse_duration",
    "query_leases",
    "register_release",
    "register_reservations",
    "register_reserve",
]

DURATION_RULE = "a number of seconds, or with a unit: 90s, 30m, 2h (at most 24h)"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h`` or plain seconds -> seconds; ValueError (one sentence)."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"invalid duration {text!r}: {DURATION_RULE}")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not 1 <= seconds <= 86_400:
        raise ValueError(f"duration {text!r} is out of range: {DURATION_RULE}")
    return seconds


def lease_line(lease: Lease) -> str:
    """One lease on one line: id, holder, kind, paths, end, reason, channel — without
    the control characters or escape sequences a peer may have put in them."""
    from .bridge.inject import sanitize

    kind = "exclusive" if lease.exclusive else "shared"
    why = f"  {sanitize(lease.reason)}" if lease.reason else ""
    return (
        f"#{lease.id}  {sanitize(lease.holder)}  {kind}  {sanitize(' '.join(lease.paths))}  "
        f"until {until_text(lease.until)}{why}  #{lease.channel}"
    )


def _ask(settings: Settings, frame: Any, name: str | None = None) -> Any:
    """One request on a one-shot connection (errors are the CLI's one line)."""
    with OneShot(settings.url, name, timeout=settings.timeout, **settings.access()) as bus:
        welcome = bus.connect()
        if hasattr(frame, "name") and frame.name is None and name is None:
            if not welcome.names:
                raise CliError(
                    "this token names nobody to act as (an admin token): pass --as NAME",
                    Exit.USAGE,
                )
            frame.name = welcome.names[0]
        return bus.request(frame, settings.timeout)


def query_leases(
    settings: Settings, prefix: str | None = None, *, every_channel: bool = False
) -> list[Lease]:
    """The leases in force on the settings' channel (or on every channel the token
    may use)."""
    channel = None if every_channel else settings.channel
    result: LeasesResult = _ask(settings, Leases(ref=new_ref(), channel=channel, prefix=prefix))
    return result.leases


def _add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="the holder (env WSBUS_NAME; with WSBUS_TOKEN: the token's name)",
    )


# ---------------------------------------------------------------------------- reserve

RESERVE_EXAMPLES = """\
examples:
  wsbus reserve 'src/parser/**' --ttl 2h --reason "refactoring the lexer"
  wsbus reserve docs/API.md --shared          # readers share; writers are refused
  wsbus reserve 'src/parser/**' --ttl 2h      # again: renews the lease

A conflicting reservation exits 4 naming the holder, its reason and until when.
Paths are relative to the repository root; quote globs so the shell keeps them.
"""


def register_reserve(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reserve",
        help="lease files (paths or globs) so other agents know you edit them",
        description="Reserve PATHs (globs allowed, relative to the repository root) on the "
        "channel for a while: exclusive by default, shared with --shared.",
        epilog=RESERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a path or glob (src/parser/**)")
    p.add_argument("--ttl", default="30m", help=f"how long (default 30m): {DURATION_RULE}")
    p.add_argument("--shared", action="store_true", help="a shared lease (readers)")
    p.add_argument("--reason", help="why, shown to whoever is refused")
    _add_name(p)
    add_client_args(p)
    p.set_defaults(func=run_reserve)
    return p


def run_reserve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as err:
        raise CliError(str(err), Exit.USAGE) from None
    frame = Reserve(
        ref=new_ref(),
        paths=list(args.paths),
        ttl=ttl,
        exclusive=not args.shared,
        reason=args.reason,
        channel=settings.channel,
        name=settings.name,
    )
    got: Reserved = _ask(settings, frame, settings.name)
    if args.json:
        print(encode_json(got.lease).decode())
    elif not args.quiet:
        verb = "renewed" if got.renewed else "reserved"
        kind = "exclusive" if got.lease.exclusive else "shared"
        print(
            f"{verb} {' '.join(got.lease.paths)} until {until_text(got.lease.until)} "
            f"(lease {got.lease.id}, {kind}, on {got.lease.channel})"
        )
    return Exit.OK


# ---------------------------------------------------------------------------- release

RELEASE_EXAMPLES = """\
examples:
  wsbus release                       # every lease of yours on the channel
  wsbus release 'src/parser/**'       # the lease on exactly these paths
  wsbus release --id 1044             # one lease by its id
"""


def register_release(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "release",
        help="end your file leases (all, by path, or by id)",
        description="End leases of yours: those on exactly PATHs, those given by --id, or "
        "(neither) all of them on the channel.",
        epilog=RELEASE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="the paths the lease was taken on")
    p.add_argument(
        "--id",
        type=int,
        action="append",
        default=[],
        dest="ids",
        metavar="ID",
        help="a lease id (repeatable)",
    )
    _add_name(p)
    add_client_args(p)
    p.set_defaults(func=run_release)
    return p


def run_release(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    frame = Release(
        ref=new_ref(),
        ids=args.ids,
        paths=list(args.paths),
        channel=settings.channel,
        name=settings.name,
    )
    got: Released = _ask(settings, frame, settings.name)
    if args.json:
        for lease in got.leases:
            print(encode_json(lease).decode())
    elif not args.quiet:
        if not got.leases:
            print("no lease of yours matched", file=sys.stderr)
        for lease in got.leases:
            print(f"released {' '.join(lease.paths)} (lease {lease.id})")
    return Exit.OK


# ---------------------------------------------------------------------------- reservations

RESERVATIONS_EXAMPLES = """\
examples:
  wsbus reservations                  # every lease in force on the channel
  wsbus reservations src/parser       # those with a path under src/parser
  wsbus reservations --json

  wsbus reservations --all-channels   # on every channel your token may use

Output: #ID  HOLDER  exclusive|shared  PATHS  until TIME  REASON  #CHANNEL
"""


def register_reservations(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reservations",
        help="list the file leases in force",
        description="List the leases in force on the channel, oldest first.",
        epilog=RESERVATIONS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "prefix",
        nargs="?",
        metavar="PATH",
        help="only the leases that overlap PATH (a directory, a file or a glob)",
    )
    p.add_argument("--all-channels", action="store_true", help="every channel, not just one")
    add_client_args(p)
    p.set_defaults(func=run_reservations)
    return p


def run_reservations(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    leases = query_leases(settings, args.prefix, every_channel=args.all_channels)
    for lease in leases:
        print(encode_json(lease).decode() if args.json else lease_line(lease))
    if not leases and not args.json and not args.quiet:
        where = "on any channel" if args.all_channels else f"on #{settings.channel}"
        print(f"no leases in force {where}", file=sys.stderr)
    return Exit.OK
