"""A connection as the hub sees it: identity, channels, and the replay/live switch.

Transports subclass :class:`Session` and supply the four I/O hooks (``write``,
``write_async``, ``buffered`` and ``close``). While a session replays stored
events it is not *live*: events committed meanwhile are *held* (bounded) and
written after the replay, so the client sees every event once, in seq order.
"""

from __future__ import annotations

import abc
import itertools
from typing import Any

from .auth import TokenRecord
from .codec import Codec
from .schema import Event, HubFrame

__all__ = ["Session"]

_ids = itertools.count(1)


class Session(abc.ABC):
    """One client connection's hub-side state."""

    # slots, not a dict: a hub holds tens of thousands of these (docs/SCALE.md)
    __slots__ = (
        "__weakref__",
        "batch",
        "channels",
        "closed",
        "codec",
        "grant",
        "held",
        "id",
        "info",
        "live",
        "names",
        "token",
        "upto",
        "wants_presence",
        "watch",
    )

    def __init__(self, codec: Codec) -> None:
        self.id = next(_ids)
        self.codec = codec
        self.names: tuple[str, ...] = ()
        self.channels: set[str] = set()
        #: the token presented at the handshake (``Authorization: Bearer``), if any
        self.token: str | None = None
        #: who authenticated (None when the hub runs without ``--auth``)
        self.grant: TokenRecord | None = None
        self.watch = False
        self.wants_presence = True
        #: reads ``events`` and ``presences`` frames (``hello.capabilities``: batch)
        self.batch = False
        self.info: dict[str, Any] = {}
        self.live = False
        self.upto = 0
        self.held: list[Event] = []
        self.closed = False

    @property
    def name(self) -> str | None:
        """The first (default) name this session acts for."""
        return self.names[0] if self.names else None

    def send(self, frame: HubFrame) -> None:
        """Encode and write one frame now (no backpressure)."""
        if not self.closed:
            self.write(self.codec.encode(frame))

    def cork(self) -> None:
        """Gather what is written from now on, to go out in one system call at
        :meth:`uncork` (or before the first :meth:`write_async`, a close, a shut): a
        connection whose replay asks the store nothing gets ``welcome`` … ``synced``
        in one write. Only for what takes no I/O: the bytes held count as
        :meth:`buffered`, and a replay uncorks before its first query. A transport
        without the means writes at once (this default)."""
        return

    def uncork(self) -> None:
        """Write what :meth:`cork` gathered, in order, and write at once again."""
        return

    # -- transport hooks

    @abc.abstractmethod
    def write(self, payload: bytes) -> None:
        """Write one encoded frame synchronously."""

    @abc.abstractmethod
    async def write_async(self, payload: bytes) -> None:
        """Write one encoded frame, waiting while the peer's buffer is full."""

    @abc.abstractmethod
    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer's socket."""

    @abc.abstractmethod
    def close(self, code: int, reason: str) -> None:
        """Close the connection (asynchronously) with a close code."""
