"""Presence and bridge claims across the hubs of a bus, in a key-value bucket.

Each hub writes a key per name connected to it on a channel
(``p.<hub>.<channel>.<name>``, the value its kind, model, role and host) when the name
comes up, and deletes it when the name goes down — a write per change, never per
heartbeat. Beside them each hub keeps one key alive, ``hub.<hub>``, rewritten every
:data:`HEARTBEAT` seconds with a time to live of :data:`TTL` seconds (``Nats-TTL``).
Every hub watches the bucket: a name up on another hub is up here too; when a hub's
key expires (it died without saying goodbye), the server places a marker, every hub
sees it, and that hub's names go ``down`` — within ``TTL`` + a second or two of its
last heartbeat. (``hub`` is a per-process id; ``.`` in a channel or name is written
``=`` in keys.)

A bridge's claim on a name in a channel is the key ``claim.<channel>.<name>`` (the
holding hub, host and token id): created only if absent, or replaced only at the
revision read (compare-and-set) when the same host and token take over, so two bridges
on different hubs cannot both hold a name. A hub that loses the race, or whose claim
another hub took over, closes its bridge's connection; a dead hub's claims are
cleared with its presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["HEARTBEAT", "TTL", "BusPresence", "presence_bucket"]

log = logging.getLogger("wsbus.engine")

HEARTBEAT = 2.0
"""Seconds between a hub's heartbeats."""
TTL = 6
"""Seconds a hub's heartbeat lives: its names go down this long after it died."""

Info = dict[str, Any]
#: (channel, name, hub, its info or None once gone from that hub)
RemoteChange = Callable[[str, str, str, Info | None], None]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, Any]).decode


def presence_bucket(bus: str) -> str:
    return f"wsbus_{bus}_presence"


def _token(word: str) -> str:
    return word.replace(".", "=")


def _word(token: str) -> str:
    return token.replace("=", ".")


class BusPresence:
    """This hub's side of the bus's presence bucket (see the module docstring)."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        #: this process's id among the hubs of the bus
        self.hub = uuid.uuid4().hex[:10]
        #: told of each change on another hub (set by the hub's announcer)
        self.on_change: RemoteChange | None = None
        self._alive: set[str] = set()
        #: hub -> {(channel, name): info} of the other hubs
        self._remote: dict[str, dict[tuple[str, str], Info]] = {}
        self._writes: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()
        #: (channel, name) -> (revision, holder) of every claim in the bucket
        self.claims: dict[tuple[str, str], tuple[int, Info]] = {}
        #: told when a claim this hub holds was taken by another hub (channel, name)
        self.on_claim_lost: Callable[[str, str], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._watcher: Any = None

    @classmethod
    async def open(cls, js: JetStreamContext, bus: str, replicas: int) -> BusPresence:
        """The bucket (created the first time), this hub's heartbeat, the watch."""
        from nats.js.api import KeyValueConfig
        from nats.js.errors import BucketNotFoundError

        bucket = presence_bucket(bus)
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket, history=1, replicas=replicas, limit_marker_ttl=float(TTL)
                )
            )
        self = cls(js, kv, bucket)
        await self._beat()
        self._watcher = await kv.watch(">")
        while (entry := await self._watcher.updates(timeout=30)) is not None:
            self._apply(entry)
        for hub in [h for h in self._remote if h not in self._alive]:
            self._gone(hub)  # names left behind by a hub that died earlier
        self._tasks = [
            asyncio.create_task(self._follow(), name="wsbus-presence-watch"),
            asyncio.create_task(self._heartbeat(), name="wsbus-presence-beat"),
            asyncio.create_task(self._write_loop(), name="wsbus-presence-write"),
        ]
        return self

    # ------------------------------------------------------------------ this hub

    def local(self, channel: str, name: str, info: Info | None) -> None:
        """A name came up (``info``) or went down (None) on this hub: written in order."""
        key = f"p.{self.hub}.{_token(channel)}.{_token(name)}"
        self._writes.put_nowait((key, None if info is None else _encode(info)))

    async def _write_loop(self) -> None:
        while True:
            key, value = await self._writes.get()
            try:
                if value is None:
                    await self.kv.delete(key)
                else:
                    await self.kv.put(key, value)
            except Exception as err:  # NATS away: the heartbeat lapses, others see down
                log.warning("presence not shared (%s): %s", key, err)

    async def _beat(self) -> None:
        await self.js.publish(f"$KV.{self.bucket}.hub.{self.hub}", b"up", msg_ttl=TTL)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._beat()
            except Exception as err:
                log.warning("presence heartbeat failed: %s", err)

    async def close(self) -> None:
        """Stop, and take this hub's names and heartbeat out of the bucket."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            if self._watcher is not None:
                await self._watcher.stop()
            for key in await self.kv.keys(filters=[f"p.{self.hub}.>"]):
                await self.kv.delete(key)
            for (channel, name), (revision, holder) in list(self.claims.items()):
                if holder.get("hub") == self.hub:
                    await self._drop_claim(channel, name, revision)
            await self.kv.delete(f"hub.{self.hub}")

    # ------------------------------------------------------------------ other hubs

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: Any) -> None:
        parts = entry.key.split(".")
        gone = entry.operation is not None
        if parts[0] == "claim" and len(parts) == 3:
            self._claim_changed((_word(parts[1]), _word(parts[2])), entry, gone)
            return
        if parts[0] == "hub" and len(parts) == 2:
            if parts[1] == self.hub:
                return
            if gone:
                self._alive.discard(parts[1])
                self._gone(parts[1])
            else:
                self._alive.add(parts[1])
        elif parts[0] == "p" and len(parts) == 4 and parts[1] != self.hub:
            hub, channel, name = parts[1], _word(parts[2]), _word(parts[3])
            names = self._remote.setdefault(hub, {})
            if gone:
                if names.pop((channel, name), None) is not None:
                    self._tell(channel, name, hub, None)
            else:
                try:
                    info = _decode(entry.value or b"")
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return
                names[(channel, name)] = info
                self._tell(channel, name, hub, info)

    def _gone(self, hub: str) -> None:
        """A hub died: its names go down here, and its keys are cleared."""
        for (channel, name), (revision, holder) in list(self.claims.items()):
            if holder.get("hub") == hub:
                self._spawn(self._drop_claim(channel, name, revision))
        names = self._remote.pop(hub, {})
        for channel, name in names:
            self._tell(channel, name, hub, None)
            key = f"p.{hub}.{_token(channel)}.{_token(name)}"
            self._writes.put_nowait((key, None))

    # ------------------------------------------------------------------ claims

    def claim_holder(self, channel: str, name: str) -> Info | None:
        """Who holds a claim on ``name`` in ``channel`` on another live hub (None:
        nobody, or this hub)."""
        got = self.claims.get((channel, name))
        if got is None:
            return None
        holder = got[1]
        hub = holder.get("hub")
        if hub == self.hub or hub not in self._alive:
            return None
        return holder

    def claim(self, channel: str, name: str, holder: Info, lost: Callable[[], None]) -> None:
        """Hold ``name`` in ``channel`` for this hub's bridge (``holder``: its host and
        token id); ``lost`` is called if another hub's claim wins the race."""
        got = self.claims.get((channel, name))
        self._spawn(self._put_claim(channel, name, {**holder, "hub": self.hub}, got, lost))

    async def _put_claim(
        self,
        channel: str,
        name: str,
        holder: Info,
        got: tuple[int, Info] | None,
        lost: Callable[[], None],
    ) -> None:
        key = f"claim.{_token(channel)}.{_token(name)}"
        try:
            if got is None or got[1].get("hub") not in self._alive | {self.hub}:
                if got is None:
                    await self.kv.create(key, _encode(holder))
                else:  # a dead hub's claim, not cleared yet
                    await self.kv.update(key, _encode(holder), last=got[0])
            else:  # this hub's own, or a takeover from the same host and token
                await self.kv.update(key, _encode(holder), last=got[0])
        except Exception as err:
            log.warning("claim on %r in %r lost to another hub: %s", name, channel, err)
            lost()

    def unclaim(self, channel: str, name: str) -> None:
        """This hub's bridge no longer serves ``name`` in ``channel``."""
        got = self.claims.get((channel, name))
        if got is not None and got[1].get("hub") == self.hub:
            self._spawn(self._drop_claim(channel, name, got[0]))

    async def _drop_claim(self, channel: str, name: str, revision: int) -> None:
        with contextlib.suppress(Exception):  # changed meanwhile: not ours to drop
            await self.kv.delete(f"claim.{_token(channel)}.{_token(name)}", last=revision)

    def _claim_changed(self, key: tuple[str, str], entry: Any, gone: bool) -> None:
        before = self.claims.get(key)
        if gone:
            self.claims.pop(key, None)
            return
        try:
            holder = _decode(entry.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self.claims[key] = (entry.revision, holder)
        ours_before = before is not None and before[1].get("hub") == self.hub
        if ours_before and holder.get("hub") != self.hub and self.on_claim_lost is not None:
            self.on_claim_lost(*key)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _tell(self, channel: str, name: str, hub: str, info: Info | None) -> None:
        if self.on_change is not None:
            try:
                self.on_change(channel, name, hub, info)
            except Exception:
                log.exception("presence change of %s on %s failed", name, channel)
