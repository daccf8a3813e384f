"""``wsbus migrate``: move a single hub's SQLite bus onto NATS JetStream."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import Subcommands
from .exits import CliError, Exit

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus migrate --from ~/.local/share/wsbus/wsbus.db --engine nats://127.0.0.1:4222
  wsbus migrate --from bus.db --engine nats://a:4222,nats://b:4222 --bus team --replicas 3

Stop the hub first (its database is locked while it runs), migrate, then start the
hubs with the same --engine and --bus. Running it again moves nothing twice.
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "migrate",
        help="move a hub's SQLite bus onto NATS JetStream (many hubs)",
        description="Move a stopped hub's events, receipts and roster onto a bus on NATS "
        "JetStream. Events keep their seq and ts and the bus keeps the hub's id, so "
        "every client resumes where it was (docs/DEPLOY.md).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="source", required=True, metavar="PATH.db",
                   help="the hub's SQLite database")  # fmt: skip
    p.add_argument("--engine", required=True, metavar="URLS", help="nats://HOST:4222[,…]")
    p.add_argument("--bus", default="default", help="the bus's name on NATS (default default)")
    p.add_argument("--replicas", type=int, default=1, help="copies of the stream (default 1)")
    p.add_argument("--engine-creds", metavar="FILE", help="NATS credentials file")
    p.add_argument("--engine-tls-ca", metavar="PEM", help="CA of NATS's certificate")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    from wsbus.config import hub_urls
    from wsbus.jetstream import EngineConfig, EngineError
    from wsbus.jetstream.migrate import migrate
    from wsbus.store import StoreLocked

    source = Path(args.source).expanduser()
    if not source.is_file():
        raise CliError(f"no database at {source}", Exit.USAGE)
    config = EngineConfig(
        servers=hub_urls(args.engine),
        bus=args.bus,
        replicas=args.replicas,
        creds=args.engine_creds,
        tls_ca=args.engine_tls_ca,
    )
    problem = config.problem()
    if problem is not None:
        raise CliError(problem, Exit.USAGE)

    def say(line: str) -> None:
        if not args.quiet:
            print(f"  {line}", file=sys.stderr, flush=True)

    try:
        done = await migrate(source, config, say)
    except StoreLocked as err:
        raise CliError(f"{err}: stop the hub before migrating its database") from None
    except EngineError as err:
        raise CliError(str(err)) from None
    print(
        f"migrated {source} to bus {config.bus} (id {done.bus_id}): "
        f"{done.events} events ({done.events_there} already there), "
        f"{done.receipts} receipts ({done.receipts_there} already there), "
        f"{done.members} roster members; seqs {done.first_seq}..{done.last_seq} and "
        "timestamps kept: websocket cursors and legacy `since` cursors go on as they were"
    )
    return Exit.OK
