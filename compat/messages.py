"""The agent-bus wire shapes and request parsing, with the errors they map to.

The contract (DESIGN.md §4): ``POST /send`` takes ``{"from", "to", "msg",
"channel"?}``; ``GET /recv`` answers ``{"messages": [...], "now"}``; ``GET
/inbox`` answers ``{"recipients": {channel: {name: count}}, "now"}``. Every
error is a JSON object ``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from wsbus.schema import BROADCAST, DEFAULT_CHANNEL, NAME_RULE, Event, valid_name

__all__ = [
    "InboxResponse",
    "LegacyError",
    "LegacyMessage",
    "RecvParams",
    "RecvResponse",
    "SendAck",
    "SendRequest",
    "legacy_message",
    "parse_recv",
    "parse_send",
]


class LegacyError(Exception):
    """A request the shim refuses: HTTP ``status`` and a one-sentence ``message``."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: seconds for a ``Retry-After`` header (429)
        self.retry_after = retry_after


class LegacyMessage(msgspec.Struct, omit_defaults=True):
    """One message as ``/recv`` returns it (extra fields beyond ts/from/msg are allowed)."""

    ts: float
    from_: str = msgspec.field(name="from")
    msg: str
    channel: str
    to: str
    seq: int
    thread: str | None = None
    kind: str | None = None


class RecvResponse(msgspec.Struct):
    messages: list[LegacyMessage]
    now: float


class SendAck(msgspec.Struct):
    ok: bool
    ts: float
    channel: str
    seq: int


class InboxResponse(msgspec.Struct):
    recipients: dict[str, dict[str, int]]
    now: float


class SendRequest(msgspec.Struct, frozen=True):
    sender: str
    to: str
    msg: str
    channel: str


class RecvParams(msgspec.Struct, frozen=True):
    to: str
    channel: str
    since: float
    block: bool
    max: int


def legacy_message(ev: Event) -> LegacyMessage:
    return LegacyMessage(
        ts=ev.ts,
        from_=ev.from_,
        msg=ev.body,
        channel=ev.channel,
        to=ev.to,
        seq=ev.seq,
        thread=ev.thread,
        kind=ev.kind,
    )


_decode_any = msgspec.json.Decoder().decode


def parse_send(body: bytes) -> SendRequest:
    """Validate a ``POST /send`` body."""
    try:
        data: Any = _decode_any(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise LegacyError(400, "invalid JSON: the body must be a UTF-8 JSON object") from None
    if not isinstance(data, dict):
        raise LegacyError(400, "the body must be a JSON object with from, to and msg")
    sender, to, msg = data.get("from"), data.get("to"), data.get("msg")
    channel = data.get("channel", DEFAULT_CHANNEL)
    if not (isinstance(sender, str) and sender and isinstance(to, str) and to):
        raise LegacyError(400, "from, to, msg required (from and to as non-empty strings)")
    if not isinstance(msg, str):
        raise LegacyError(400, "from, to, msg required (msg as a string)")
    if channel is None:
        channel = DEFAULT_CHANNEL
    if not isinstance(channel, str) or not valid_name(channel):
        raise LegacyError(400, f"invalid channel: allowed {NAME_RULE}")
    if not valid_name(sender):
        raise LegacyError(400, f"invalid from {sender[:64]!r}: allowed {NAME_RULE}")
    if to != BROADCAST and not valid_name(to):
        raise LegacyError(400, f"invalid to {to[:64]!r}: allowed {NAME_RULE}, or '*'")
    return SendRequest(sender=sender, to=to, msg=msg, channel=channel)


def _number(query: Mapping[str, str], key: str, default: str) -> float:
    raw = query.get(key, default)
    try:
        value = float(raw)
    except ValueError:
        raise LegacyError(400, f"{key} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise LegacyError(400, f"{key} must be a finite number, got {raw[:40]!r}")
    return value


def parse_recv(query: Mapping[str, str], max_page: int) -> RecvParams:
    """Validate ``GET /recv`` parameters (unknown ones are ignored)."""
    to = query.get("to", "")
    if not to:
        raise LegacyError(400, "to= required")
    if not valid_name(to):
        raise LegacyError(400, f"invalid to {to[:64]!r}: allowed {NAME_RULE}")
    channel = query.get("channel") or DEFAULT_CHANNEL
    if not valid_name(channel):
        raise LegacyError(400, f"invalid channel: allowed {NAME_RULE}")
    since = _number(query, "since", "0")
    count = _number(query, "max", "100")
    if count != int(count) or count < 1:
        raise LegacyError(400, "max must be a whole number of at least 1")
    block = query.get("block", "false").strip().lower() in ("true", "1", "yes", "on")
    return RecvParams(
        to=to, channel=channel, since=since, block=block, max=min(int(count), max_page)
    )
