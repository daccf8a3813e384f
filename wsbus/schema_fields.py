"""The building blocks of the wire schema (:mod:`wsbus.schema`): the subprotocols, the
rules for names, channels and threads, the constrained field types, the ack statuses and
:class:`Frame`, the base of every frame.

The frames themselves are in :mod:`wsbus.schema_client` (client -> hub) and
:mod:`wsbus.schema_hub` (hub -> client); import them all from :mod:`wsbus.schema`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

__all__ = [
    "ACK_STATUSES",
    "BROADCAST",
    "DEFAULT_CHANNEL",
    "FINAL_STATUSES",
    "NAME_PATTERN",
    "NAME_RULE",
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "TARGET_PATTERN",
    "THREAD_MAX",
    "THREAD_PATTERN",
    "THREAD_RULE",
    "AckStatus",
    "Channel",
    "Frame",
    "Kind",
    "Label",
    "Name",
    "Ref",
    "Seq",
    "Target",
    "Thread",
    "valid_name",
    "valid_thread",
]

SUBPROTOCOL_JSON = "wsbus.v1.json"
SUBPROTOCOL_MSGPACK = "wsbus.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK)

#: ``hello.capabilities``: the client reads ``events`` (several events in one frame)
#: and ``presences`` (several presence changes in one frame); the hub may then batch
CAP_BATCH = "batch"
#: the capabilities this hub grants (``welcome.capabilities``)
CAPABILITIES = (CAP_BATCH,)

DEFAULT_CHANNEL = "default"
BROADCAST = "*"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
# a non-capturing group: with a capturing one, compiling this pattern takes 8 ms (every
# client and the hub compile it at import; msgspec.Meta compiles its pattern)
TARGET_PATTERN = r"^(?:\*|[A-Za-z0-9][A-Za-z0-9._-]{0,63})\Z"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*"
THREAD_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT})*\Z"
THREAD_MAX = 128
THREAD_RULE = (
    "1-128 characters: letters, digits, '.', '_' or '-', '/' between parts"
    " (hermes/pmxt-execution); no '..', no leading '/'"
)

_NAME_RE = re.compile(NAME_PATTERN)
_THREAD_RE = re.compile(THREAD_PATTERN)


def valid_name(value: str) -> bool:
    """Whether ``value`` is a valid name or channel."""
    return bool(_NAME_RE.match(value))


def valid_thread(value: str) -> bool:
    """Whether ``value`` is a valid thread name."""
    return len(value) <= THREAD_MAX and bool(_THREAD_RE.match(value))


Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description=NAME_RULE)]
Channel = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description=NAME_RULE)]
Target = Annotated[
    str, msgspec.Meta(pattern=TARGET_PATTERN, description="a name, or '*' for the channel")
]
Thread = Annotated[
    str, msgspec.Meta(pattern=THREAD_PATTERN, max_length=THREAD_MAX, description=THREAD_RULE)
]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Label = Annotated[str, msgspec.Meta(max_length=128)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Kind = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}\Z")]

AckStatus = Literal["read", "submitted", "unsubmitted", "failed", "session_down"]
ACK_STATUSES: tuple[str, ...] = ("read", "submitted", "unsubmitted", "failed", "session_down")
FINAL_STATUSES = frozenset({"read", "submitted", "unsubmitted", "failed"})


class Frame(msgspec.Struct, tag_field="op", omit_defaults=True, forbid_unknown_fields=False):
    """Base of every frame."""
