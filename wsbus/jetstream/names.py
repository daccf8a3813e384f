"""Where a bus lives in NATS: its stream, its key-value bucket, its subjects.

One stream per bus holds the log of record: ``wsbus.<bus>.e.<channel>`` for events and
``wsbus.<bus>.r.<channel>`` for receipts, in one order (the stream sequence is an
event's ``seq``; receipts take sequences too, so event seqs have gaps, which clients
allow). A channel name may hold ``.``, which separates subject tokens: it is written
as ``~``, which no channel name holds, so the encoding is reversible. The bus's
bucket keeps what is not a log: its identity (``bus``), and later rosters, claims and
presence. Several buses share one NATS through their names (``--bus``).
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "BUS_PATTERN",
    "BUS_RULE",
    "EVENTS",
    "RECEIPTS",
    "bucket_name",
    "channel_of",
    "channel_token",
    "key_token",
    "key_word",
    "msg_id",
    "stream_name",
    "subject",
    "subjects",
    "valid_bus",
]

BUS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z"
BUS_RULE = "1-32 characters: letters, digits, '_' or '-', starting with a letter or digit"
_BUS_RE = re.compile(BUS_PATTERN)

EVENTS = "e"
"""The subject token of events."""
RECEIPTS = "r"
"""The subject token of receipts."""


def valid_bus(bus: str) -> bool:
    return _BUS_RE.match(bus) is not None


def stream_name(bus: str) -> str:
    return f"WSBUS_{bus}"


def bucket_name(bus: str) -> str:
    return f"wsbus_{bus}"


def subjects(bus: str) -> str:
    """Every subject of the bus (the stream's subject filter)."""
    return f"wsbus.{bus}.>"


def channel_token(channel: str) -> str:
    """A channel name as one subject token (``.`` → ``~``)."""
    return channel.replace(".", "~")


def channel_of(token: str) -> str:
    """The channel name a subject token holds (:func:`channel_token` reversed)."""
    return token.replace("~", ".")


def key_token(word: str) -> str:
    """A channel or name as one token of a key-value key (``.`` → ``=``: ``~`` is not
    allowed in keys, ``=`` is, and no name holds it)."""
    return word.replace(".", "=")


def key_word(token: str) -> str:
    """The channel or name a key token holds (:func:`key_token` reversed)."""
    return token.replace("=", ".")


def subject(bus: str, what: str, channel: str) -> str:
    """The subject of an event (``what`` :data:`EVENTS`) or receipt (:data:`RECEIPTS`)."""
    return f"wsbus.{bus}.{what}.{channel_token(channel)}"


def msg_id(sender: str, ref: str) -> str:
    """The ``Nats-Msg-Id`` of a send: the stream keeps one message per id within its
    duplicate window (the index's ref window covers the rest). A digest of sender and
    ref: a ref may hold any character, and header values lose their spaces."""
    return hashlib.sha256(f"{sender}\n{ref}".encode()).hexdigest()[:32]
