"""The wire schema: every frame wsbus speaks, as msgspec Structs.

This module is the single source of truth for the protocol. Each frame is a
Struct tagged on ``op``; client frames and hub frames form two tagged unions,
:data:`ClientFrame` and :data:`HubFrame`. Decoding into a union validates every
field, so no other module checks dict keys by hand. ``docs/PROTOCOL.md`` is
generated from the frames' docstrings and fields (``python -m docs.protodoc``).

Two encodings carry the same structs: JSON in text frames (subprotocol
``wsbus.v1.json``, the default) and MessagePack in binary frames
(``wsbus.v1.msgpack``). Evolution rule: new fields get defaults; a field's type
never changes.

The structs live in three modules, all re-exported here (import from here):
:mod:`wsbus.schema_fields` (subprotocols, name and thread rules, field types, the
``Frame`` base), :mod:`wsbus.schema_client` (client -> hub frames, ``ClientFrame``) and
:mod:`wsbus.schema_hub` (hub -> client frames, ``HubFrame``).
"""

from __future__ import annotations

from .schema_client import (
    Ack,
    ClientFrame,
    Hello,
    History,
    HubStatus,
    Leases,
    Ping,
    Register,
    Release,
    Reserve,
    Roster,
    Send,
    Status,
    Subscribe,
    Threads,
    Unsubscribe,
)
from .schema_fields import (
    ACK_STATUSES,
    BROADCAST,
    CAP_BATCH,
    CAPABILITIES,
    DEFAULT_CHANNEL,
    FINAL_STATUSES,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBPROTOCOLS,
    valid_name,
    valid_thread,
)
from .schema_fields import NAME_PATTERN as NAME_PATTERN
from .schema_fields import NAME_RULE as NAME_RULE
from .schema_fields import TARGET_PATTERN as TARGET_PATTERN
from .schema_fields import THREAD_MAX as THREAD_MAX
from .schema_fields import THREAD_PATTERN as THREAD_PATTERN
from .schema_fields import THREAD_RULE as THREAD_RULE
from .schema_fields import AckStatus as AckStatus
from .schema_fields import Channel as Channel
from .schema_fields import Frame as Frame
from .schema_fields import Kind as Kind
from .schema_fields import Label as Label
from .schema_fields import Name as Name
from .schema_fields import Ref as Ref
from .schema_fields import Seq as Seq
from .schema_fields import Target as Target
from .schema_fields import Thread as Thread
from .schema_hub import (
    Error,
    Event,
    Events,
    HistoryResult,
    HubFrame,
    HubStatusResult,
    Lease,
    LeasesResult,
    Limits,
    Member,
    Ok,
    Pong,
    Presence,
    PresenceChange,
    Presences,
    Receipt,
    Registered,
    Released,
    Reserved,
    RosterEntry,
    RosterResult,
    Subscribed,
    Synced,
    ThreadInfo,
    ThreadsResult,
    Waiting,
    Welcome,
)

__all__ = [
    "ACK_STATUSES",
    "BROADCAST",
    "CAPABILITIES",
    "CAP_BATCH",
    "DEFAULT_CHANNEL",
    "FINAL_STATUSES",
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "Ack",
    "ClientFrame",
    "Error",
    "Event",
    "Events",
    "Hello",
    "History",
    "HistoryResult",
    "HubFrame",
    "HubStatus",
    "HubStatusResult",
    "Lease",
    "Leases",
    "LeasesResult",
    "Limits",
    "Member",
    "Ok",
    "Ping",
    "Pong",
    "Presence",
    "PresenceChange",
    "Presences",
    "Receipt",
    "Register",
    "Registered",
    "Release",
    "Released",
    "Reserve",
    "Reserved",
    "Roster",
    "RosterEntry",
    "RosterResult",
    "Send",
    "Status",
    "Subscribe",
    "Subscribed",
    "Synced",
    "ThreadInfo",
    "Threads",
    "ThreadsResult",
    "Unsubscribe",
    "Waiting",
    "Welcome",
    "valid_name",
    "valid_thread",
]
