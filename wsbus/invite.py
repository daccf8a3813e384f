"""Invite codes: what ``wsbus token invite`` prints and ``wsbus join`` reads.

A code carries the hub's websocket URLs (tried in order), a fresh token and the
SHA-256 fingerprint of the hub's CA certificate, packed with MessagePack, followed
by the first four bytes of the SHA-256 of the packed bytes (a typo or a cut-off
paste is caught before anything is fetched), in URL-safe base64 after the prefix
``wsbus1.``. The token makes the code a secret: whoever holds it can join as its
name until the token is revoked.

The code is not signed: what makes joining safe is the fingerprint. A changed URL
leads to a hub whose CA does not match it; a changed fingerprint to a CA the real
hub does not present; either way ``wsbus join`` refuses before sending the token.

The hub side writes :class:`HubInfo` (``<data dir>/share/hub.json``) when it starts
with ``--share``, so ``wsbus token invite`` on the same machine knows the URLs,
the fingerprint and the token file without being told.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

import msgspec

from .errors import WsbusError
from .files import write_atomic

__all__ = [
    "HubInfo",
    "Invite",
    "InviteError",
    "decode",
    "encode",
    "read_hub_info",
    "write_hub_info",
]

PREFIX = "wsbus1."
CHECK = 4  # bytes of SHA-256 after the payload


class InviteError(WsbusError):
    """A code that cannot be read; the message says why and what to do."""


class Invite(msgspec.Struct, array_like=True, frozen=True):
    urls: list[str]
    token: str
    #: SHA-256 of the CA certificate's DER form (32 bytes)
    ca_sha256: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Invite).decode

DAMAGED = (
    "this invite code is damaged or incomplete ({why}): copy the whole `wsbus join …` line again"
)


def encode(invite: Invite) -> str:
    payload = _encode(invite)
    check = hashlib.sha256(payload).digest()[:CHECK]
    return PREFIX + base64.urlsafe_b64encode(payload + check).decode().rstrip("=")


def decode(code: str) -> Invite:
    """The invite in ``code``; :class:`InviteError` when it is not one, or altered."""
    text = code.strip()
    if text.startswith("wsbus join "):  # the whole line pasted as the argument
        text = text.removeprefix("wsbus join ").strip()
    if not text.startswith(PREFIX):
        raise InviteError(
            f"not a wsbus invite code (it starts with {PREFIX!r}); "
            "make one on the hub's machine: wsbus token invite NAME"
        )
    body = text.removeprefix(PREFIX)
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise InviteError(DAMAGED.format(why="not base64")) from None
    payload, check = raw[:-CHECK], raw[-CHECK:]
    if len(raw) <= CHECK or hashlib.sha256(payload).digest()[:CHECK] != check:
        raise InviteError(DAMAGED.format(why="checksum mismatch"))
    try:
        invite = _decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise InviteError(DAMAGED.format(why=str(err))) from None
    if not invite.urls or len(invite.ca_sha256) != 32 or not invite.token:
        raise InviteError(DAMAGED.format(why="fields missing"))
    for url in invite.urls:
        if not url.startswith("wss://"):
            raise InviteError(DAMAGED.format(why=f"{url!r} is not a wss:// URL"))
    return invite


class HubInfo(msgspec.Struct, kw_only=True):
    """What a hub started with ``--share`` tells ``wsbus token invite``."""

    urls: list[str]
    ca_sha256: str
    auth: str
    pid: int = 0


def write_hub_info(path: Path, info: HubInfo) -> None:
    write_atomic(path, msgspec.json.format(msgspec.json.encode(info)) + b"\n")


def read_hub_info(path: Path) -> HubInfo | None:
    """The shared hub's info, None when no hub here ever ran with ``--share``."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=HubInfo)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as err:
        raise InviteError(f"cannot read {path}: {err}; start the hub with --share again") from None
