"""Invariant 7: bad input gets an error frame with a code, never a crash or lost data."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from wsbus import Client

from .helpers import HubProcess, RawClient


async def expect_error(raw: RawClient, frame: str | bytes | dict[str, object], code: str) -> dict:  # type: ignore[type-arg]
    await raw.send(frame)
    err = await raw.recv_op("error")
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    return err


async def still_serves(raw: RawClient) -> None:
    await raw.send({"op": "ping", "ref": "p"})
    assert (await raw.recv_op("pong"))["ref"] == "p"


async def test_each_kind_of_bad_frame_gets_its_code(hub_factory: Callable[..., HubProcess]) -> None:
    hub = hub_factory("--max-body", "1000")
    raw = RawClient(hub.url)
    await raw.open({"name": "alice"})
    await expect_error(raw, "{not json", "invalid_json")
    await expect_error(raw, b"\x81\x00binary", "wrong_frame_type")
    await expect_error(raw, {"op": "launch"}, "unknown_op")
    await expect_error(raw, {"nop": 1}, "invalid_frame")
    await expect_error(raw, "[1, 2]", "invalid_frame")
    err = await expect_error(
        raw, {"op": "send", "ref": "r1", "to": "bob", "body": 5}, "invalid_frame"
    )
    assert err["ref"] == "r1"  # the failed send is named so a client can fail it
    err = await expect_error(
        raw, {"op": "send", "ref": "r2", "to": "../etc", "body": "x"}, "invalid_frame"
    )
    assert "letters, digits" in str(err["message"])
    await expect_error(raw, {"op": "send", "ref": "r3", "to": "bob", "body": "x" * 1001},
                       "body_too_large")  # fmt: skip
    await expect_error(raw, {"op": "send", "ref": "r4", "to": "bob", "body": "x",
                             "from": "mallory"}, "not_your_name")  # fmt: skip
    await expect_error(raw, {"op": "hello", "name": "again"}, "already_hello")
    await expect_error(raw, {"op": "history", "ref": "h", "limit": 10**6}, "limit_too_large")
    await expect_error(raw, {"op": "ack", "seq": 12345, "status": "read"}, "unknown_event")
    await expect_error(raw, {"op": "ack", "seq": 1, "status": "eaten"}, "invalid_frame")
    await expect_error(raw, {"op": "history", "ref": "h", "after": 2**70}, "invalid_frame")
    # meta must survive both encodings (msgpack has 64-bit integers only)
    await expect_error(
        raw, {"op": "send", "ref": "r6", "to": "bob", "body": "x", "meta": {"n": 10**29}},
        "invalid_frame",
    )  # fmt: skip
    await still_serves(raw)
    await raw.send({"op": "send", "ref": "good", "to": "bob", "body": "fine"})
    assert (await raw.recv_op("ok"))["seq"] == 1
    await raw.close()


async def test_bad_hello_is_closed_with_4002(hub: HubProcess) -> None:
    for first in (
        {"op": "send", "ref": "r", "to": "b", "body": "x"},
        {"op": "hello", "name": "a b"},
    ):
        from websockets.asyncio.client import connect

        async with connect(hub.url, subprotocols=["wsbus.v1.json"]) as conn:  # type: ignore[list-item]
            await conn.send(json.dumps(first))
            frame = json.loads(await conn.recv())
            assert frame["op"] == "error"
            with contextlib.suppress(ConnectionClosed):
                await conn.recv()
            assert conn.close_code == 4002


async def test_persistent_garbage_is_closed_with_policy_code(hub: HubProcess) -> None:
    raw = RawClient(hub.url)
    await raw.open({"name": "spammer"})
    try:
        for _ in range(50):
            await raw.send("garbage")
    except ConnectionClosed:
        pass
    try:
        while True:
            await raw.recv()
    except ConnectionClosed:
        pass
    assert raw.conn.close_code == 1008  # type: ignore[attr-defined]
    async with Client(hub.url, "ok") as c:  # the hub carries on
        assert (await c.send("bob", "still here")).seq == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
ops = st.sampled_from(["hello", "send", "ack", "subscribe", "unsubscribe", "history", "roster",
                       "ping", "event", "", "SEND"])  # fmt: skip
frames = st.one_of(
    st.builds(
        lambda op, d: {"op": op, **d},
        ops,
        st.dictionaries(
            st.sampled_from(
                [
                    "ref",
                    "to",
                    "body",
                    "channel",
                    "seq",
                    "status",
                    "limit",
                    "after",
                    "channels",
                    "from",
                    "thread",
                    "meta",
                    "name",
                    "resume",
                ]
            ),
            json_values,
            max_size=6,
        ),
    ),
    json_values,
    st.integers(min_value=2**63, max_value=2**80).map(
        lambda n: {"op": "ack", "seq": n, "status": "read"}
    ),
    st.integers(1, 200).map(lambda d: "[" * d + "]" * d),
).map(lambda v: v if isinstance(v, str) else json.dumps(v))
raw_text = st.binary(max_size=64).map(lambda b: b.decode("utf-8", "replace"))


def test_fuzzed_frames_never_break_the_hub_nor_lose_data(hub: HubProcess) -> None:
    """Random and malformed frames at a live hub; after each batch a normal client is
    served, and at the end every acknowledged send is still stored."""
    acked: list[int] = []

    async def attack(batch: list[str]) -> None:
        raw = RawClient(hub.url)
        await raw.open({"name": "fuzzer"})
        try:
            for item in batch:
                await raw.send(item)
            await raw.send({"op": "ping", "ref": "end"})
            await raw.recv_op("pong", timeout=10)
        except ConnectionClosed:
            assert raw.conn.close_code in (1008, 1009)  # type: ignore[attr-defined]
        raw.abort()  # it may hold unread frames: no closing handshake to wait for
        async with Client(hub.url, "checker", channels=[]) as c:
            acked.append((await c.send("audit", "still serving", timeout=10)).seq)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(frames | raw_text, min_size=1, max_size=15))
    def run(batch: list[str]) -> None:
        asyncio.run(attack(batch))

    run()

    async def stored() -> list[int]:
        async with Client(hub.url, None) as c:
            page = await c.history(to="audit", limit=1000)
            return [e.seq for e in page.events if e.body == "still serving"]

    assert acked and set(acked) <= set(asyncio.run(stored()))
