"""What the hubs of a bus share besides the log: the registered roster members, in
the bus's key-value bucket, mirrored on every hub.

A registration writes its key (``member.<channel>.<name>``) before the hub answers;
every hub watches the keys and keeps its roster in step, so ``roster`` answers the
same on every hub. (A ``.`` in a channel or name is written ``=`` in a key, which
names never hold: keys stay distinct.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..store import MemberRecord
from .names import key_token, key_word

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

__all__ = ["SharedMembers", "member_key"]

log = logging.getLogger("wsbus.engine")

_PREFIX = "member."
_encode = msgspec.msgpack.Encoder().encode
_member = msgspec.msgpack.Decoder(MemberRecord).decode

#: called with (channel, name, the member or None once it left)
MemberChange = Callable[[str, str, MemberRecord | None], None]


def member_key(channel: str, name: str) -> str:
    return f"{_PREFIX}{key_token(channel)}.{key_token(name)}"


def _parts(key: str) -> tuple[str, str] | None:
    rest = key[len(_PREFIX) :].split(".")
    if len(rest) != 2:
        return None
    return key_word(rest[0]), key_word(rest[1])


class SharedMembers:
    """The roster's registered members in the bus's bucket (the hub's
    :class:`wsbus.rosters.Rosters` reads and writes them here instead of its index)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._mirror: dict[tuple[str, str], MemberRecord] = {}
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None
        #: told of every change, whichever hub made it (set by the hub's rosters)
        self.on_change: MemberChange | None = None

    async def open(self) -> None:
        """Read every member and follow the changes from then on."""
        self._watcher = await self.kv.watch(f"{_PREFIX}>")
        while (entry := await self._watcher.updates(timeout=30)) is not None:
            self._apply(entry)
        self._task = asyncio.create_task(self._follow(), name="wsbus-members")

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is not None:
                try:
                    self._apply(entry)
                except Exception:
                    log.exception("roster entry %s", getattr(entry, "key", "?"))

    def _apply(self, entry: Any) -> None:
        parts = _parts(entry.key)
        if parts is None:
            return
        member: MemberRecord | None = None
        if entry.operation is None and entry.value:
            try:
                member = _member(entry.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                log.error("bucket key %s is not a roster member: %s", entry.key, err)
                return
        if member is None:
            self._mirror.pop(parts, None)
        else:
            self._mirror[parts] = member
        if self.on_change is not None:
            try:
                self.on_change(parts[0], parts[1], member)
            except Exception:
                log.exception("roster change of %s on %s", parts[1], parts[0])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()

    # -- what Rosters needs of a member store

    async def members(self) -> list[MemberRecord]:
        return list(self._mirror.values())

    async def put_member(self, member: MemberRecord) -> None:
        await self.kv.put(member_key(member.channel, member.name), _encode(member))
        self._mirror[(member.channel, member.name)] = member

    async def add_member(self, member: MemberRecord) -> bool:
        """Create the member's key only if absent; False when another hub registered
        someone under it first (the mirror then holds that one)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

        key = member_key(member.channel, member.name)
        try:
            await self.kv.create(key, _encode(member))
        except KeyWrongLastSequenceError:
            with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
                self._apply(await self.kv.get(key))
            return False
        self._mirror[(member.channel, member.name)] = member
        return True

    async def remove_member(self, channel: str, name: str) -> None:
        await self.kv.delete(member_key(channel, name))
        self._mirror.pop((channel, name), None)
