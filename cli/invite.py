"""``wsbus token invite NAME``: a fresh token and the hub's CA, as one line to paste
on the other machine (``wsbus join CODE``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsbus.auth import AuthError, TokenFileError, TokenStore
from wsbus.invite import Invite, InviteError, encode, read_hub_info
from wsbus.tls import ShareTLSError, fingerprint

from .common import Subcommands, add_grant_args
from .exits import CliError, Exit
from .share import share_paths

__all__ = ["add_invite", "run_invite"]

EXAMPLES = """\
examples:
  wsbus serve --share                       # once, on the hub's machine
  wsbus token invite bob                    # prints: wsbus join wsbus1.…  (run it on bob's machine)
  wsbus token invite ci --channel builds    # a token limited to #builds
  wsbus token invite host2 --role bridge --name alice --name bob   # a tmux bridge's machine
"""

INVITE_ROLES = ("agent", "bridge")


def add_invite(actions: Subcommands) -> None:
    p = actions.add_parser(
        "invite",
        help="invite another machine: a new token + the hub's CA, as `wsbus join CODE`",
        description=(
            "Create a token for NAME and print one line to run on the other machine: "
            "`wsbus join CODE`. The code carries the hub's URLs, the token and the "
            "fingerprint of the hub's CA; it is a secret until used (revoke with "
            "`wsbus token revoke NAME`). Needs a hub started here with `wsbus serve --share`."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="who joins (the token's name)")
    add_grant_args(
        p, INVITE_ROLES, "agent: acts as NAME; bridge: acts for each --name (default agent)"
    )
    p.add_argument(
        "--url",
        dest="urls",
        action="append",
        default=[],
        metavar="WSS_URL",
        help="a URL the other machine reaches the hub by (repeat; default: the ones "
        "`wsbus serve --share` printed)",
    )
    p.add_argument(
        "--auth",
        type=Path,
        metavar="FILE",
        help="token file (default: the one the shared hub uses)",
    )
    p.set_defaults(func=run_invite)


async def run_invite(args: argparse.Namespace) -> int:
    paths = share_paths()
    try:
        info = read_hub_info(paths.hub_info)
        ca_sha256 = info.ca_sha256 if info else fingerprint(paths.ca_cert.read_bytes())
    except (InviteError, ShareTLSError) as err:
        raise CliError(str(err)) from None
    except FileNotFoundError:
        raise CliError(
            "no hub on this machine was started with --share: run `wsbus serve --share` "
            "first (it makes the CA the invite vouches for)"
        ) from None
    if args.role not in INVITE_ROLES:
        raise CliError(
            f"an invite's role is agent or bridge, not {args.role!r} (an admin token: "
            "wsbus token create NAME --role admin)",
            Exit.USAGE,
        )
    urls: list[str] = args.urls or (info.urls if info else [])
    if not urls:
        raise CliError("no URL to put in the invite: pass --url wss://HOST:PORT", Exit.USAGE)
    for url in urls:
        if not url.startswith("wss://"):
            raise CliError(f"--url {url!r}: an invite needs a wss:// URL", Exit.USAGE)
    auth = args.auth or (Path(info.auth) if info else None)
    if auth is None:
        raise CliError("which token file? pass --auth FILE (the hub's --auth)", Exit.USAGE)
    try:
        store = TokenStore(auth).load()
        token = store.create(args.name, role=args.role, channels=args.channel, names=args.names)
    except TokenFileError as err:
        raise CliError(str(err)) from None
    except AuthError as err:
        raise CliError(str(err), Exit.USAGE) from None
    code = encode(Invite(urls=urls, token=token, ca_sha256=bytes.fromhex(ca_sha256)))
    sys.stdout.write(f"wsbus join {code}\n")
    sys.stdout.flush()
    print(
        f"wsbus: run that line on {args.name}'s machine; it holds a new token, keep it "
        f"secret (revoke: wsbus token revoke {args.name})",
        file=sys.stderr,
    )
    return Exit.OK
