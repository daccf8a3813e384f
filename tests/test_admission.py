"""Who may open a websocket: a flood of silent sockets (upgraded, never a ``hello``)
must not lock out a client that holds a token, nor take every slot of a hub without
``--auth``. Real hub processes; the per-address cap is shown from this machine's own
non-loopback address (loopback is not capped per address)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsbus import Client

from .helpers import HubProcess, RawClient
from .test_security import Tokens, bearer


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "tokens.json")


def own_address() -> str | None:
    """This machine's non-loopback IPv4 address (the one a route out would use), if any."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.123", 9))  # no packet is sent: only picks the source
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


class Flood:
    """Silent websocket connections: the upgrade, then nothing (bounded in count)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.open: list[ClientConnection] = []
        #: refusals: (status, Retry-After, body)
        self.refused: list[tuple[int, str | None, str]] = []

    async def add(self, host: str, count: int) -> None:
        """``count`` connections to the hub at ``host`` (also their source address)."""
        url = self.url.replace("127.0.0.1", host)
        for _ in range(count):
            try:
                conn = await connect(
                    url,
                    local_addr=(host, 0),
                    compression=None,
                    open_timeout=10,
                    ping_interval=None,
                )
            except InvalidStatus as err:
                r = err.response
                self.refused.append(
                    (r.status_code, r.headers.get("Retry-After"), r.body.decode().strip())
                )
            else:
                self.open.append(conn)

    def statuses(self) -> list[int]:
        return [s for s, _, _ in self.refused]

    async def close(self) -> None:
        for conn in self.open:
            with contextlib.suppress(ConnectionClosed, OSError):
                await conn.close()


async def test_silent_sockets_cannot_lock_out_a_token(
    hub_factory: Callable[..., HubProcess], tokens: Tokens, env: dict[str, str]
) -> None:
    env.update(WSBUS_MAX_UNAUTHENTICATED="12", WSBUS_MAX_UNAUTHENTICATED_PER_ADDRESS="5")
    own = own_address()
    hub = hub_factory(
        *("--host", "0.0.0.0") if own else (),
        *("--auth", str(tokens.path), "--max-connections", "40", "--hello-timeout", "30"),
    )
    url = f"ws://127.0.0.1:{hub.port}"
    flood = Flood(url)
    capped = 0
    try:
        if own:  # one address: 5 open, then 429
            await flood.add(own, 8)
            capped = 3
        await flood.add("127.0.0.1", 40 - len(flood.open))  # the budget fills: then 503
        # as many silent sockets as max_connections tried: a token still gets in
        started = time.monotonic()
        alice = RawClient(url, additional_headers=bearer(tokens.alice))
        try:
            welcome = await alice.open({"channels": []})
        except InvalidStatus as err:
            raise AssertionError(
                f"a valid token was refused: HTTP {err.response.status_code} "
                f"after {len(flood.open)} silent sockets"
            ) from None
        took = time.monotonic() - started
        assert welcome["names"] == ["alice"]
        await alice.send({"op": "ping", "ref": "p"})
        assert (await alice.recv_op("pong"))["ref"] == "p"
        async with Client(url, channels=[], token=tokens.bob) as bob:
            assert (await bob.ping()).ts > 0
        print(f"\n{len(flood.open)} silent sockets open; a token connected in {took * 1000:.0f} ms")
        # what the flood got
        assert len(flood.open) == 12
        assert flood.statuses() == [429] * capped + [503] * (len(flood.refused) - capped)
        for _, retry_after, body in flood.refused:
            assert retry_after == "30"
            assert body.startswith("too many connections"), body
        await alice.close()
    finally:
        await flood.close()
    if not own:
        return
    # the silent sockets are gone: nothing is held for them any more (the hub notices
    # each close a moment after the client does: poll, bounded)
    again = Flood(url)
    deadline = time.monotonic() + 10
    while len(again.open) < 5 and time.monotonic() < deadline:
        await again.add(own, 1)
        if again.refused and len(again.open) < 5:
            await asyncio.sleep(0.05)
    await again.close()
    assert len(again.open) == 5, again.refused


async def test_without_auth_silent_sockets_leave_the_connected_alone(
    hub_factory: Callable[..., HubProcess], env: dict[str, str]
) -> None:
    """No tokens: a connection is unauthenticated until its hello. Silent sockets fill
    that budget, not the hub: clients that said hello carry on, and new ones get in as
    soon as the silent ones are dropped (hello_timeout)."""
    env.update(WSBUS_MAX_UNAUTHENTICATED="4")
    hub = hub_factory("--memory", "--max-connections", "20", "--hello-timeout", "2")
    async with Client(hub.url, "early", channels=[]) as early:
        flood = Flood(hub.url)
        try:
            await flood.add("127.0.0.1", 6)
            assert len(flood.open) == 4 and flood.statuses() == [503, 503]
            assert (await early.ping()).ts > 0  # past its hello: not affected
            # the silent ones are closed with 4003 after hello_timeout; then room again
            late = Client(hub.url, "late", channels=[], backoff_max=0.5)
            await asyncio.wait_for(late.connect(wait=True), 20)
            assert (await late.ping()).ts > 0
            await late.close()
        finally:
            await flood.close()
