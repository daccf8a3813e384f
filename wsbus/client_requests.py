"""What the asyncio client asked of the hub and waits on (:class:`~wsbus.client.Client`'s
part): sends until their ``ok`` or refusal, queries until their answer, each by its
``ref``; and what is said again after every hello.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import RETRYABLE_ERRORS, ErrorCode, SendRefused
from .handshake import SendResult
from .schema import (
    Ack,
    Error,
    HistoryResult,
    LeasesResult,
    Ok,
    Pong,
    Registered,
    Released,
    Reserved,
    RosterResult,
    Send,
    Status,
    ThreadsResult,
)

__all__ = ["Answer", "Requests"]

log = logging.getLogger("wsbus.client")

Answer = (
    HistoryResult
    | RosterResult
    | Registered
    | ThreadsResult
    | Reserved
    | Released
    | LeasesResult
    | Pong
)
"""The hub's answer to a query, matched to it by ``ref``."""


class Requests:
    """The table of requests waiting on the hub, by ``ref``.

    A send stays until its ``ok`` (retried a moment after a retryable refusal), a query
    until its answer; both are written again after every hello (:meth:`resend`), with
    the acks the client could not write while disconnected and its last status report.
    ``write`` writes a frame now if connected (False: it waits for the next hello).
    """

    def __init__(self, write: Callable[[Any], Awaitable[bool]]) -> None:
        self._write = write
        self.sends: dict[str, tuple[Send, asyncio.Future[SendResult]]] = {}
        self.queries: dict[str, tuple[Any, asyncio.Future[Any]]] = {}
        self.acks: list[Ack] = []
        self.status: Status | None = None

    async def send(self, frame: Send, timeout: float | None) -> SendResult:
        """Write ``frame`` (once per ref) and wait for its ``ok``."""
        ref = frame.ref
        existing = self.sends.get(ref)
        if existing is not None:
            fut = existing[1]
        else:
            fut = asyncio.get_running_loop().create_future()
            self.sends[ref] = (frame, fut)
            await self._write(frame)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.CancelledError:
            self.sends.pop(ref, None)  # the caller gave up: stop resending it
            raise
        finally:
            if fut.done() or timeout is not None:
                self.sends.pop(ref, None)

    async def ask(self, frame: Any, timeout: float | None) -> Any:
        """Write the query ``frame`` and wait for its answer."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queries[frame.ref] = (frame, fut)
        try:
            await self._write(frame)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.queries.pop(frame.ref, None)

    async def ack(self, frame: Ack) -> None:
        if not await self._write(frame):
            self.acks.append(frame)  # sent after the next hello

    async def report(self, status: Status) -> None:
        """Write ``status`` now, and again after every hello."""
        self.status = status
        await self._write(status)

    async def resend(self, send: Callable[[Any], Awaitable[None]]) -> None:
        """After a hello: write again what still waits on the hub."""
        for frame, fut in list(self.sends.values()):
            if not fut.done():
                await send(frame)
        for req, _ in list(self.queries.values()):
            await send(req)
        acks, self.acks = self.acks, []
        for ack in acks:
            await send(ack)
        if self.status is not None:
            await send(self.status)

    def on_ok(self, frame: Ok) -> None:
        entry = self.sends.get(frame.ref)
        if entry is not None and not entry[1].done():
            entry[1].set_result(
                SendResult(frame.seq, frame.ts, frame.ref, frame.duplicate, frame.online)
            )

    def on_answer(self, frame: Answer) -> None:
        req = self.queries.get(frame.ref or "")
        if req is not None and not req[1].done():
            req[1].set_result(frame)

    def on_error(self, frame: Error) -> None:
        if frame.ref is not None:
            entry = self.sends.get(frame.ref)
            if entry is not None and not entry[1].done():
                if frame.code in RETRYABLE_ERRORS:
                    # keep it queued: resent after the next hello, or in a moment
                    if frame.code != ErrorCode.SHUTTING_DOWN:
                        asyncio.get_running_loop().call_later(
                            1.0, lambda: asyncio.ensure_future(self._retry(frame.ref or ""))
                        )
                    return
                entry[1].set_exception(SendRefused(frame.code, frame.message))
                return
            req = self.queries.get(frame.ref)
            if req is not None and not req[1].done():
                if frame.code == ErrorCode.SHUTTING_DOWN:
                    return  # asked again after the next hello (resend)
                req[1].set_exception(SendRefused(frame.code, frame.message))
                return
        log.warning("hub error: %s: %s", frame.code, frame.message)

    async def _retry(self, ref: str) -> None:
        entry = self.sends.get(ref)
        if entry is not None and not entry[1].done():
            await self._write(entry[0])

    def fail(self, err: Exception) -> None:
        """Everything still waiting fails with ``err``."""
        for _, fut in self.sends.values():
            if not fut.done():
                fut.set_exception(err)
        for _, fut in self.queries.values():
            if not fut.done():
                fut.set_exception(err)
