"""``wsbus join CODE``: trust a shared hub and keep its URL, token and CA in the config.

The code comes from ``wsbus token invite`` on the hub's machine. ``join`` fetches the
hub's CA from ``/ca.pem`` (over TLS it cannot verify yet), accepts it only when its
SHA-256 matches the code, then opens a verified ``wss://`` connection with the
token, and only then writes the config: every client (commands, bridge, REPL,
``agent_comms``) reads ``url``, ``token`` and ``ca_file`` from it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from wsbus.config import config_path
from wsbus.errors import ClientError, ConnectionLost, HubUnreachable
from wsbus.files import write_atomic
from wsbus.invite import Invite, InviteError, decode
from wsbus.schema import Welcome, valid_name

from .common import Subcommands
from .exits import CliError, Exit
from .userconfig import save_config

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus join wsbus1.kZ3…                # the line `wsbus token invite NAME` printed
  wsbus join wsbus1.kZ3… --channel dev  # and make #dev this machine's default channel
  wsbus send alice "hello from here"    # then every command uses the joined hub
"""

#: the largest CA certificate accepted from /ca.pem
MAX_CA_BYTES = 64 << 10
#: how long a refused token is retried: the hub reads new tokens from its token file
#: within its reload interval (1 s), so a code pasted at once may be a moment early
NEW_TOKEN_GRACE = 3.0


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "join",
        help="join a hub shared with `wsbus serve --share` (code from `wsbus token invite`)",
        description=(
            "Join a shared hub: fetch its CA certificate, check it against the code's "
            "fingerprint, connect over verified TLS with the code's token, then store the "
            "URL, token and CA in the config file (mode 0600)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("code", metavar="CODE", help="the invite code (wsbus1.…)")
    p.add_argument("--channel", "-c", help="also make this the default channel here")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per attempt to reach the hub (5)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=run)
    return p


def _https_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(("https", parts.netloc, "/ca.pem", "", ""))


def fetch_ca(url: str, timeout: float) -> bytes:
    """``/ca.pem`` of the hub at ``url``. Not verified here (nothing to verify it
    with yet): the caller checks its fingerprint before trusting it."""
    blind = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(_https_of(url), headers={"User-Agent": "wsbus-join"})
    with urllib.request.urlopen(request, timeout=timeout, context=blind) as response:
        data: bytes = response.read(MAX_CA_BYTES + 1)
    if len(data) > MAX_CA_BYTES:
        raise ValueError("the answer is too large for a CA certificate")
    return data


def pem_sha256(pem: bytes) -> str:
    """SHA-256 of the (first) certificate in ``pem``, over its DER form."""
    der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    return hashlib.sha256(der).hexdigest()


def _why(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} at /ca.pem (a hub started without --share?)"
    reason = getattr(err, "reason", None)
    if reason is not None:
        return str(getattr(reason, "strerror", None) or reason)
    return str(getattr(err, "strerror", None) or err)


async def _trusted_ca(invite: Invite, timeout: float) -> tuple[str, bytes]:
    """The first URL whose ``/ca.pem`` matches the code's fingerprint, and the CA."""
    failures: list[str] = []
    mismatch: list[str] = []
    for url in invite.urls:
        try:
            pem = await asyncio.to_thread(fetch_ca, url, timeout)
            digest = pem_sha256(pem)
        except (OSError, ValueError, UnicodeDecodeError) as err:
            failures.append(f"{url}: {_why(err)}")
            continue
        if digest != invite.ca_sha256.hex():
            mismatch.append(url)
            continue
        return url, pem
    if mismatch:
        raise CliError(
            f"the hub at {mismatch[0]} presented a CA whose SHA-256 does not match the "
            "invite code: not joining (a different hub, or someone in between); ask for a "
            "new code",
            Exit.REFUSED,
        )
    raise CliError(
        f"cannot reach the hub: {'; '.join(failures)} (is `wsbus serve --share` running, "
        "and is this machine able to reach it?)",
        Exit.UNREACHABLE,
    )


async def _connect(url: str, token: str, ca_file: Path, channel: str, timeout: float) -> Welcome:
    """Connect once with the token; a refusal is retried for ``NEW_TOKEN_GRACE``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NEW_TOKEN_GRACE
    while True:
        try:
            return await _connect_once(url, token, ca_file, channel, timeout)
        except ConnectionLost:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.25)


async def _connect_once(
    url: str, token: str, ca_file: Path, channel: str, timeout: float
) -> Welcome:
    from wsbus.client import Client

    client = Client(
        url,
        channels=[channel],
        presence=False,
        token=token,
        ca_file=str(ca_file),
        reconnect=False,
        open_timeout=timeout,
    )
    try:
        return await client.connect()
    finally:
        await client.close()


async def run(args: argparse.Namespace) -> int:
    try:
        invite = decode(args.code)
    except InviteError as err:
        raise CliError(str(err), Exit.USAGE) from None
    channel = args.channel or "default"
    if not valid_name(channel):
        raise CliError(f"invalid channel {channel!r}", Exit.USAGE)
    url, pem = await _trusted_ca(invite, args.timeout)
    config = config_path()
    ca_file = config.parent / "hub-ca.pem"
    staged = ca_file.with_name(".hub-ca.pem.new")
    try:
        write_atomic(staged, pem)
    except OSError as err:
        raise CliError(f"cannot write {staged}: {err.strerror or err}") from None
    try:
        welcome = await _connect(url, invite.token, staged, channel, args.timeout)
    except ConnectionLost as err:
        staged.unlink(missing_ok=True)
        raise CliError(
            f"the hub refused the invite's token ({err.reason}): it was revoked, or it is "
            "for another hub; ask for a new code",
            Exit.REFUSED,
        ) from None
    except (HubUnreachable, ClientError) as err:
        staged.unlink(missing_ok=True)
        raise CliError(f"cannot join {url}: {err}", Exit.UNREACHABLE) from None
    os.replace(staged, ca_file)
    names = welcome.names
    values = {"url": url, "token": invite.token, "ca_file": str(ca_file)}
    if len(names) == 1:
        values["name"] = names[0]
    if args.channel:
        values["channel"] = args.channel
    save_config(config, values)
    if not args.quiet:
        who = ", ".join(names) or "?"
        where = f"#{channel}" + (
            " (refused: this token may not use it; pass --channel)" if welcome.refused else ""
        )
        print(f"joined hub {welcome.hub} at {url} as {who} on {where}")
        print(f"saved url, token and CA in {config} (mode 0600); try: wsbus listen")
    return Exit.OK
