"""``wsbus migrate``: move a single hub's SQLite bus onto NATS JetStream.

The bus on NATS continues the hub's: every event keeps its ``seq`` (the stream
starts at the first retained one, and the events go in in order before anything
else), its ``ts`` (carried in a header the hubs' indexers read), and the bus keeps
the hub's id — so websocket clients resume from their cursors and legacy clients
from their ``since`` as if nothing had moved. Receipts follow the events (they take
the stream sequences after them) and registered members go to the bus's bucket.

Run twice, nothing doubles: events already in the stream are skipped by seq,
receipts by a count kept in the bucket (and the stream's duplicate window), members
are keyed. A stream that holds another bus's events is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..store import Query, SqliteStore
from .engine import EngineConfig, EngineError, bus_identity, connect, ensure_stream
from .log import TS_HEADER, SharedReceipt
from .names import EVENTS, RECEIPTS, bucket_name, msg_id, subject
from .shared import member_key

__all__ = ["Migrated", "migrate"]

PAGE = 500
_encode = msgspec.msgpack.Encoder().encode


@dataclass
class Migrated:
    """What a run moved (and found already there)."""

    bus_id: str
    events: int = 0
    events_there: int = 0
    receipts: int = 0
    receipts_there: int = 0
    members: int = 0
    first_seq: int = 0
    last_seq: int = 0


async def migrate(
    source: Path, config: EngineConfig, say: Callable[[str], None] = lambda _: None
) -> Migrated:
    """Move ``source`` (a stopped hub's database) onto the bus ``config`` names."""
    store = SqliteStore(source)
    info = await store.open()  # the hub's lock: refused while a hub runs on it
    nc = await connect(config)
    try:
        js = nc.jetstream(timeout=config.publish_timeout)
        first = await store.query(Query(limit=1))
        first_seq = first[0].seq if first else info.last_seq + 1
        stream = await ensure_stream(js, config, first_seq=first_seq)
        bus_id = await bus_identity(js, config, proposed=info.hub_id)
        if bus_id != info.hub_id:
            raise EngineError(
                f"bus {config.bus} on NATS already holds another bus ({bus_id}); migrate "
                "into a new one: --bus NAME that no hub uses yet"
            )
        done = Migrated(bus_id, first_seq=first_seq, last_seq=info.last_seq)
        kv = await js.key_value(bucket_name(config.bus))
        await _events(js, store, config, stream.state.last_seq, done, say)
        await _receipts(js, kv, store, config, done, say)
        for member in await store.members():
            await kv.put(member_key(member.channel, member.name), _encode(member))
            done.members += 1
        return done
    finally:
        await nc.close()
        await store.close()


async def _events(
    js: Any, store: SqliteStore, config: EngineConfig, there: int, done: Migrated,
    say: Callable[[str], None],
) -> None:  # fmt: skip
    after = max(there, done.first_seq - 1)
    done.events_there = max(0, min(there, done.last_seq) - done.first_seq + 1)
    while True:
        page = await store.query(Query(limit=PAGE, after=after))
        if not page:
            return
        acks = []
        for ev in page:
            headers = {TS_HEADER: repr(ev.ts)}
            if ev.ref is not None:
                headers["Nats-Msg-Id"] = msg_id(ev.from_, ev.ref)
            draft = msgspec.structs.replace(ev, seq=0, ts=0.0)
            acks.append(
                await js.publish_async(
                    subject(config.bus, EVENTS, ev.channel), _encode(draft), headers=headers
                )
            )
        for ev, ack in zip(page, [await a for a in acks], strict=True):
            if ack.seq != ev.seq or ack.duplicate:
                raise EngineError(
                    f"event {ev.seq} landed at stream sequence {ack.seq}: something else "
                    "writes to this bus; stop its hubs and migrate into a new --bus"
                )
        done.events += len(page)
        after = page[-1].seq
        say(f"events: {after - done.first_seq + 1} of {done.last_seq - done.first_seq + 1}")


async def _receipts(
    js: Any, kv: Any, store: SqliteStore, config: EngineConfig, done: Migrated,
    say: Callable[[str], None],
) -> None:  # fmt: skip
    from nats.js.errors import KeyNotFoundError

    try:
        there = int((await kv.get("migrated.receipts")).value or b"0")
    except KeyNotFoundError:
        there = 0
    count, after = 0, done.first_seq - 1
    while True:
        page = await store.query(Query(limit=PAGE, after=after))
        if not page:
            break
        after = page[-1].seq
        acks = []
        for ev in page:
            for record in await store.receipts(ev.seq):
                count += 1
                if count <= there:
                    continue  # moved by an earlier run
                headers = {"Nats-Msg-Id": f"migrate/{done.bus_id}/r{count}"}
                payload = _encode(SharedReceipt(record, ev.from_))
                acks.append(
                    await js.publish_async(
                        subject(config.bus, RECEIPTS, record.channel), payload, headers=headers
                    )
                )
        for ack in acks:
            await ack
        if count > there:
            await kv.put("migrated.receipts", str(count).encode())
            done.receipts = count - there
            say(f"receipts: {count}")
    done.receipts_there = min(there, count)
