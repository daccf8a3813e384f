"""One websocket connection's conversation with the hub, whatever library carries it.

The websocket port (``wsbus/server.py``, the ``websockets`` library) and ``/ws`` on
the HTTP port (``wsbus/webws.py``, aiohttp) speak the same protocol: both hand a
:class:`StreamSession` to :class:`Conversation`, which reads the ``hello``, lets the
hub welcome or refuse it, replays what the session missed and then hands each frame
to the hub — slowing down a client over its rate, answering bad frames, and closing
a connection that sends nothing but bad ones.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import msgspec

from .errors import CloseCode, ErrorCode, FrameError
from .hub import Hub
from .limits import RateLimits, Throttle
from .schema import Error, Hello
from .session import Session

__all__ = ["Closed", "Conversation", "StreamSession", "close_reason"]

log = logging.getLogger("wsbus.server")


class Closed(Exception):
    """The peer's connection ended (raised by a :class:`StreamSession`)."""


class StreamSession(Session):
    """A session on a websocket: frames in as well as out."""

    __slots__ = ()

    #: the transport, for the logs ("websocket" port, or "http" for ``/ws``)
    transport = "websocket"
    #: the client's address ("" when the transport does not say)
    peer = ""

    @abc.abstractmethod
    async def receive(self) -> str | bytes:
        """The next frame (text: str, binary: bytes); raises :class:`Closed`."""

    @abc.abstractmethod
    async def shut(self, code: int, reason: str) -> None:
        """Close with ``code`` and wait for the closing handshake (bounded)."""

    @abc.abstractmethod
    def close_code(self) -> int | None:
        """The close code the connection ended with (None: not closed, or none given)."""


class _RefOnly(msgspec.Struct):
    ref: Any = None


_ref_json = msgspec.json.Decoder(_RefOnly)
_ref_msgpack = msgspec.msgpack.Decoder(_RefOnly)


def salvage_ref(data: str | bytes, binary: bool) -> str | None:
    """The ``ref`` of a frame that failed validation, so the error can name it."""
    if isinstance(data, str) == binary:
        return None  # the wrong frame type for the subprotocol
    try:
        ref = (_ref_msgpack if binary else _ref_json).decode(cast(bytes, data)).ref
    except Exception:  # anything undecodable has no ref to name
        return None
    return ref if isinstance(ref, str) and len(ref) <= 128 else None


def close_reason(message: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = message.encode()
    return message if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


class Conversation:
    """Runs connections for one hub: hello, replay, then frames until the close."""

    def __init__(
        self,
        hub: Hub,
        *,
        hello_timeout: float = 10.0,
        max_bad_frames: int = 20,
        rates: RateLimits | None = None,
    ) -> None:
        self.hub = hub
        self.hello_timeout = hello_timeout
        self.max_bad_frames = max_bad_frames
        self.rates = rates or RateLimits()
        #: each session's replay while it runs: what a connection holds for its whole
        #: life is a budget (10,000 of them per hub), so a finished replay is let go
        self._replays: dict[StreamSession, asyncio.Task[None]] = {}

    async def run(self, session: StreamSession, welcomed: Callable[[], None]) -> None:
        """Serve ``session`` until it closes; ``welcomed`` is called once the hub
        took its hello (the connection is authenticated from then on)."""
        welcome = False
        hub = self.hub
        codec = session.codec
        try:
            hello = await self._hello(session)
            if hello is None:
                return
            # welcome … synced in one write when the replay asks the store nothing (a
            # crowd of new names); a replay that queries uncorks first (wsbus/replay.py)
            session.cork()
            refused = hub.hello(session, hello)
            if refused is not None:
                await session.shut(refused[0], close_reason(refused[1]))
                return
            welcomed()
            welcome = True
            hub.metrics.connected(session)
            if log.isEnabledFor(logging.INFO):  # a crowd reconnecting: no formatting for nothing
                log.info(
                    "connect session=%s names=%s kind=%s channels=%s peer=%s via=%s",
                    session.id,
                    ",".join(session.names) or "-",
                    session.info.get("kind"),
                    ",".join(sorted(session.channels)) or "-",
                    session.peer or "-",
                    session.transport,
                    extra={"event": "connect", "session": session.id},
                )
            replay = asyncio.create_task(self._replay(session, hello.resume, hello.pending))
            self._replays[session] = replay  # held until done, then freed (see __init__)
            replay.add_done_callback(lambda _: self._replays.pop(session, None))
            del hello, replay
            bad = 0
            limit = hub.config.send_queue
            loop = asyncio.get_running_loop()
            throttle: Throttle | None = None  # made at the first frame: a listener never sends
            while True:
                data = await session.receive()
                if session.closed:
                    continue  # closing: drain what the peer still sends until its close frame
                if throttle is None:
                    throttle = self.rates.throttle(loop.time())
                if throttle.enabled:
                    await self._throttle(session, throttle, len(data), loop.time())
                    if session.closed:
                        continue
                try:
                    await hub.handle(session, codec.decode_client(data))
                    bad = 0
                    # answers count as unread bytes too: a client that asks and never
                    # reads is closed as slow, before its answers fill the hub's memory
                    if session.buffered() > limit:
                        hub.slow(session)
                except FrameError as err:
                    ref = err.ref or salvage_ref(data, codec.binary)
                    session.send(Error(code=err.code, message=err.message, ref=ref))
                    if err.code == ErrorCode.SHUTTING_DOWN:
                        # the hub's doing, not the client's: the drain ends in 1001, and a
                        # policy close now would drop the oks of what the drain commits
                        continue
                    bad += 1
                    if bad >= self.max_bad_frames:
                        hub.close_session(session)
                        session.close(
                            CloseCode.POLICY_VIOLATION, f"{bad} bad frames in a row; closing"
                        )
                except Closed:
                    raise
                except Exception:  # a hub bug must not take the connection down silently
                    log.exception("frame from session %s failed", session.id)
                    ref = salvage_ref(data, codec.binary)
                    message = "the hub failed to handle this frame; it was logged"
                    session.send(Error(code=ErrorCode.INTERNAL, message=message, ref=ref))
        except Closed:
            pass
        finally:
            if welcome:
                hub.metrics.disconnected(session)
            if welcome and log.isEnabledFor(logging.INFO):
                log.info(
                    "disconnect session=%s names=%s code=%s",
                    session.id,
                    ",".join(session.names) or "-",
                    session.close_code(),
                    extra={"event": "disconnect", "session": session.id},
                )
            hub.close_session(session)
            session.closed = True
            replaying = self._replays.pop(session, None)
            if replaying is not None:
                replaying.cancel()

    async def _hello(self, session: StreamSession) -> Hello | None:
        try:
            async with asyncio.timeout(self.hello_timeout):  # no task, unlike wait_for
                data = await session.receive()
        except TimeoutError:
            await session.shut(CloseCode.HELLO_TIMEOUT, "no hello within the handshake timeout")
            return None
        try:
            frame = session.codec.decode_client(data)
        except FrameError as err:
            session.send(Error(code=err.code, message=err.message))
            await session.shut(CloseCode.BAD_HELLO, close_reason(err.message))
            return None
        if not isinstance(frame, Hello):
            message = "the first frame must be hello"
            session.send(Error(code=ErrorCode.HELLO_REQUIRED, message=message))
            await session.shut(CloseCode.BAD_HELLO, message)
            return None
        return frame

    async def _throttle(
        self, session: StreamSession, throttle: Throttle, size: int, now: float
    ) -> None:
        """Over the rate: stop reading for a while (the client's TCP backs up, no frame
        is lost); say so once; close with 4029 after ``abuse`` seconds of it."""
        wait = throttle.charge(size, now)
        if wait <= 0:
            return
        self.hub.metrics.rate_limited_on(session.transport)
        if throttle.abusive(now):
            log.info("closing session %s: over its rate for %.0f s", session.id, throttle.abuse)
            session.send(
                Error(
                    code=ErrorCode.RATE_LIMITED,
                    message=f"over the rate limit for {throttle.abuse:.0f} s in a row; closing",
                )
            )
            self.hub.close_session(session)
            session.close(CloseCode.RATE_LIMITED, "rate limit exceeded for too long")
            return
        if not throttle.warned:
            throttle.warned = True
            session.send(
                Error(
                    code=ErrorCode.RATE_LIMITED,
                    message=f"over {self.rates.events:g} frames/s or {self.rates.bytes:g} "
                    "bytes/s: reading is slowed down (nothing is dropped); "
                    f"{self.rates.abuse:g} s of this closes the connection (4029)",
                )
            )
        await asyncio.sleep(wait)

    async def _replay(self, session: StreamSession, resume: int | None, pending: bool) -> None:
        try:
            await self.hub.replay(session, resume, pending)
        except Closed:
            pass
        except Exception:
            log.exception("replay failed for session %s", session.id)
            session.close(CloseCode.GOING_AWAY, "replay failed; reconnect and resume")
        finally:
            session.uncork()
