"""``wsbus token create|invite|list|revoke``: the per-agent tokens a hub started with ``--auth``
checks (``invite``: cli/invite.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec

from wsbus.auth import (
    ROLES,
    AuthError,
    TokenFileError,
    TokenRecord,
    TokenStore,
    default_auth_path,
)
from wsbus.config import ConfigError, load_settings

from .common import Subcommands, add_grant_args
from .exits import CliError, Exit
from .invite import add_invite

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus token create alice                        # prints the token once: store it now
  wsbus token create alice --channel ops --channel dev
  wsbus token create host1 --role bridge --name alice --name bob
  wsbus token invite bob                          # --share hub: prints `wsbus join CODE`
  wsbus token create prometheus --role metrics     # for scraping /metrics only
  wsbus token list                                # ids, names, roles; never secrets
  wsbus token revoke 3f9a1c2e                     # by id, or every live token of a name
  wsbus token create ci --auth ./tokens.json      # another token file
"""


def _add_auth(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--auth",
        type=Path,
        metavar="FILE",
        help=f"token file (default: WSBUS_AUTH, else {default_auth_path()})",
    )


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "token",
        help="create, list and revoke the tokens agents authenticate with",
        description=(
            "Manage per-agent tokens. The file keeps only a hash of each token,"
            " so a token is shown once, when it is created."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=_no_action)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    c = actions.add_parser(
        "create",
        help="create a token and print it (once)",
        description="Create a token for NAME and print it alone on stdout; only its hash is kept.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("name", metavar="NAME", help="who the token is for")
    add_grant_args(
        c,
        ROLES,
        "agent: acts as NAME; bridge: acts for each --name; admin: anyone; "
        "metrics: reads /metrics only, for Prometheus (default agent)",
    )
    _add_auth(c)
    c.set_defaults(func=run)

    ls = actions.add_parser(
        "list",
        help="list tokens (never their secrets)",
        description="List every token: id, name, role, channels, names, created, revoked.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per token")
    _add_auth(ls)
    ls.set_defaults(func=run)

    rv = actions.add_parser(
        "revoke",
        help="revoke a token by id, or every live token of a name",
        description="Revoke the token with this id, or every live token of this name.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rv.add_argument("target", metavar="ID_OR_NAME", help="a token id (from list) or a name")
    _add_auth(rv)
    rv.set_defaults(func=run)
    add_invite(actions)
    return p


def _configured_auth() -> Path | None:
    """The token file the hub reads (``WSBUS_AUTH`` or ``auth`` in the config file)."""
    try:
        auth = load_settings().auth
    except ConfigError as err:
        raise CliError(str(err), Exit.USAGE) from None
    return Path(auth).expanduser() if auth else None


async def _no_action(args: argparse.Namespace) -> int:
    raise CliError("token needs an action: create, invite, list or revoke (see --help)", Exit.USAGE)


async def run(args: argparse.Namespace) -> int:
    path: Path = args.auth or _configured_auth() or default_auth_path()
    try:
        store = TokenStore(path).load()
    except TokenFileError as err:
        raise CliError(str(err)) from None
    if args.action == "list":
        return _list(store, args.json)
    if args.action == "revoke":
        return _revoke(store, args.target)
    return _create(store, args)


def _create(store: TokenStore, args: argparse.Namespace) -> int:
    try:
        token = store.create(args.name, role=args.role, channels=args.channel, names=args.names)
    except TokenFileError as err:
        raise CliError(str(err)) from None
    except AuthError as err:  # an invalid name, channel or combination
        raise CliError(str(err), Exit.USAGE) from None
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    print(f"wsbus: store it now; only its hash is kept in {store.path}", file=sys.stderr)
    return Exit.OK


def _public(rec: TokenRecord) -> dict[str, object]:
    """What may be shown of a token: everything but its hash."""
    return {
        "id": rec.id,
        "name": rec.name,
        "role": rec.role,
        "channels": rec.channels,
        "names": rec.names,
        "created": rec.created,
        "revoked": rec.revoked,
    }


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _list(store: TokenStore, as_json: bool) -> int:
    records = store.list()
    if as_json:
        for rec in records:
            sys.stdout.write(msgspec.json.encode(_public(rec)).decode() + "\n")
        return Exit.OK
    if not records:
        print(f"wsbus: no tokens in {store.path}", file=sys.stderr)
        return Exit.OK
    rows = [("ID", "NAME", "ROLE", "CHANNELS", "NAMES", "CREATED", "REVOKED")]
    for rec in records:
        rows.append(
            (
                rec.id,
                rec.name,
                rec.role,
                ",".join(rec.channels) or "*",
                "*" if rec.role == "admin" else ",".join(rec.names),
                _when(rec.created),
                _when(rec.revoked),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
    return Exit.OK


def _revoke(store: TokenStore, target: str) -> int:
    done = store.revoke(target)
    if not done:
        raise CliError(f"no live token with id or name {target!r} in {store.path}")
    for rec in done:
        print(f"revoked {rec.id} ({rec.name}, {rec.role})")
    return Exit.OK
