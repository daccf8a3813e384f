"""What the hub pushes to the asyncio client, queued for the application
(:class:`~wsbus.client.Client`'s part): events each once and in seq order, presence
changes and receipts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .client_link import Cursor
from .schema import Event, Presence, Receipt

__all__ = ["Inbox", "Incoming"]

Incoming = Event | Presence | Receipt

_CLOSED = object()


class Inbox:
    """The queue between the connection and the application.

    An event already received (by seq, per the :class:`Cursor`) is dropped, a new one
    moves the cursor before it is queued. When the queue is full the connection stops
    reading. Iteration ends once the client has ended and the queue is drained.
    """

    def __init__(self, cursor: Cursor, size: int) -> None:
        self.cursor = cursor
        self._queue: asyncio.Queue[Any] = asyncio.Queue(size)
        #: the client has ended: nothing more will be queued
        self.done = False

    async def event(self, frame: Event) -> None:
        if self.cursor.take(frame.seq):
            await self._queue.put(frame)

    async def put(self, frame: Presence | Receipt) -> None:
        await self._queue.put(frame)

    def close(self) -> None:
        """The client ended: iteration stops after what is queued."""
        self.done = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_CLOSED)

    async def items(self, ended_by: Callable[[], Exception | None]) -> AsyncIterator[Incoming]:
        """Everything queued, in order, until the client ends (then ``ended_by()``, when
        not None, is raised)."""
        while True:
            if self.done and self._queue.empty():
                if (err := ended_by()) is not None:
                    raise err
                return
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                if (err := ended_by()) is not None:
                    raise err
                return
            if isinstance(item, Event):
                self.cursor.processed_seq = item.seq
            yield item
