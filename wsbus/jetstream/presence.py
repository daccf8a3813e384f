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

from .names import key_token, key_word

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


def _claim_key(channel: str, name: str) -> str:
    return f"claim.{key_token(channel)}.{key_token(name)}"


def _same_bridge(a: Info, b: Info) -> bool:
    """Whether two claims are the same bridge's (same host, same token)."""
    return a.get("host") is not None and (a.get("host"), a.get("grant")) == (
        b.get("host"),
        b.get("grant"),
    )


class BusPresence:
    """This hub's side of the bus's presence bucket (see the module docstring).

    Every write goes through one queue, in order. What this hub wants in the bucket
    (its names, its bridges' claims) is kept here too, and written again when it went
    missing: another hub may have cleared it during a heartbeat lapse (NATS restarting,
    a stalled loop), and the heartbeat coming back or the watch seeing the deletion
    puts it back.
    """

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
        #: this hub's presence keys and their values
        self._mine: dict[str, bytes] = {}
        #: (channel, name) -> (revision, holder) of every claim in the bucket
        self.claims: dict[tuple[str, str], tuple[int, Info]] = {}
        #: this hub's claims: (channel, name) -> [holder, revision written or None, lost]
        self._my_claims: dict[tuple[str, str], list[Any]] = {}
        #: told when a claim this hub holds was taken by another hub (channel, name)
        self.on_claim_lost: Callable[[str, str], None] | None = None
        self._ops: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self._beating = True

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
        self._writer = asyncio.create_task(self._write_loop(), name="wsbus-presence-write")
        self._tasks = [
            asyncio.create_task(self._follow(), name="wsbus-presence-watch"),
            asyncio.create_task(self._heartbeat(), name="wsbus-presence-beat"),
        ]
        return self

    def remote_names(self) -> list[tuple[str, str, str, Info]]:
        """(channel, name, hub, info) of every name connected to another hub now."""
        return [
            (channel, name, hub, info)
            for hub, names in self._remote.items()
            for (channel, name), info in names.items()
        ]

    # ------------------------------------------------------------------ this hub

    def local(self, channel: str, name: str, info: Info | None) -> None:
        """A name came up (``info``) or went down (None) on this hub: written in order."""
        key = f"p.{self.hub}.{key_token(channel)}.{key_token(name)}"
        if info is None:
            self._mine.pop(key, None)
        else:
            self._mine[key] = _encode(info)
        self._ops.put_nowait(("p", key))

    async def _write_loop(self) -> None:
        while True:
            op = await self._ops.get()
            try:
                await self._do(op)
            except Exception as err:  # NATS away: written again when it is back
                log.warning("presence not shared (%s): %s", op[:2], err)

    async def _do(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "p":  # this hub's name: as it is wanted now
            value = self._mine.get(op[1])
            if value is None:
                await self.kv.delete(op[1])
            else:
                await self.kv.put(op[1], value)
        elif kind == "claim":
            await self._sync_claim(op[1])
        elif kind == "drop":  # another hub's key, at the revision seen (None: any)
            with contextlib.suppress(Exception):  # changed meanwhile: not to drop
                await self.kv.delete(op[1], last=op[2])

    def _reassert(self) -> None:
        """Write this hub's names and claims again (they may have been cleared)."""
        for key in list(self._mine):
            self._ops.put_nowait(("p", key))
        for claim in list(self._my_claims):
            self._ops.put_nowait(("claim", claim))

    async def _beat(self) -> None:
        await self.js.publish(f"$KV.{self.bucket}.hub.{self.hub}", b"up", msg_ttl=TTL)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._beat()
            except Exception as err:
                if self._beating:
                    log.warning("presence heartbeat failed: %s", err)
                self._beating = False
                continue
            if not self._beating:  # back: others may have taken this hub for dead
                self._beating = True
                self._reassert()

    async def close(self, wait: float = 2.0) -> None:
        """Stop, and take this hub's names, claims and heartbeat out of the bucket."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            if self._watcher is not None:
                await self._watcher.stop()
        for key in list(self._mine):
            self._mine.pop(key)
            self._ops.put_nowait(("p", key))
        for (channel, name), (_, revision, _) in list(self._my_claims.items()):
            key = _claim_key(channel, name)
            self._ops.put_nowait(("drop", key, revision))
        self._my_claims.clear()
        self._ops.put_nowait(("drop", f"hub.{self.hub}", None))
        deadline = asyncio.get_running_loop().time() + wait
        while not self._ops.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer

    # ------------------------------------------------------------------ other hubs

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is not None:
                try:
                    self._apply(entry)
                except Exception:
                    log.exception("presence entry %s", getattr(entry, "key", "?"))

    def _apply(self, entry: Any) -> None:
        parts = entry.key.split(".")
        gone = entry.operation is not None
        if parts[0] == "claim" and len(parts) == 3:
            self._claim_changed((key_word(parts[1]), key_word(parts[2])), entry, gone)
        elif parts[0] == "hub" and len(parts) == 2:
            if parts[1] == self.hub:
                return
            if gone:
                self._alive.discard(parts[1])
                self._gone(parts[1])
            else:
                self._alive.add(parts[1])
        elif parts[0] == "p" and len(parts) == 4:
            if parts[1] == self.hub:
                if gone and entry.key in self._mine:  # cleared by another hub: again
                    self._ops.put_nowait(("p", entry.key))
                return
            hub, channel, name = parts[1], key_word(parts[2]), key_word(parts[3])
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
                key = _claim_key(channel, name)
                self._ops.put_nowait(("drop", key, revision))
        names = self._remote.pop(hub, {})
        for channel, name in names:
            self._tell(channel, name, hub, None)
            self._ops.put_nowait(("drop", f"p.{hub}.{key_token(channel)}.{key_token(name)}", None))

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
        token id); ``lost`` is called if another hub's bridge holds it."""
        key = (channel, name)
        self._my_claims[key] = [{**holder, "hub": self.hub}, None, lost]
        self._ops.put_nowait(("claim", key))

    def unclaim(self, channel: str, name: str) -> None:
        """This hub's bridge no longer serves ``name`` in ``channel``."""
        mine = self._my_claims.pop((channel, name), None)
        if mine is not None and mine[1] is not None:
            key = _claim_key(channel, name)
            self._ops.put_nowait(("drop", key, mine[1]))

    async def _sync_claim(self, claim: tuple[str, str]) -> None:
        """Write one of this hub's claims: created if absent, else replaced at the
        revision read — unless another live hub's other bridge holds it (lost)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

        mine = self._my_claims.get(claim)
        if mine is None:
            return  # released meanwhile
        holder = mine[0]
        key = _claim_key(*claim)
        for _ in range(3):
            try:
                try:
                    entry = await self.kv.get(key)
                except (KeyNotFoundError, KeyDeletedError):
                    entry = None
                if entry is None:
                    revision = await self.kv.create(key, _encode(holder))
                else:
                    current = _decode(entry.value or b"")
                    hub = current.get("hub")
                    if hub != self.hub and hub in self._alive and not _same_bridge(current, holder):
                        break  # another bridge holds it
                    revision = await self.kv.update(key, _encode(holder), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # changed meanwhile: read it again
            mine[1] = revision
            return
        if self._my_claims.get(claim) is mine:
            del self._my_claims[claim]
            log.warning("claim on %r in %r is held by a bridge on another hub", *claim[::-1])
            mine[2]()

    def _claim_changed(self, key: tuple[str, str], entry: Any, gone: bool) -> None:
        mine = self._my_claims.get(key)
        if gone:
            self.claims.pop(key, None)
            if mine is not None and mine[1] is not None:  # cleared by another hub: again
                self._ops.put_nowait(("claim", key))
            return
        try:
            holder = _decode(entry.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self.claims[key] = (entry.revision, holder)
        if mine is not None and holder.get("hub") != self.hub:  # taken over elsewhere
            del self._my_claims[key]
            if self.on_claim_lost is not None:
                try:
                    self.on_claim_lost(*key)
                except Exception:
                    log.exception("claim on %r in %r taken over", key[1], key[0])

    def _tell(self, channel: str, name: str, hub: str, info: Info | None) -> None:
        if self.on_change is not None:
            try:
                self.on_change(channel, name, hub, info)
            except Exception:
                log.exception("presence change of %s on %s failed", name, channel)
