"""The baseline: a bare ``websockets`` broadcast server (no durability, no routing).

Every frame received from a connection is written, as the same bytes in a text
frame, with ``websockets.asyncio.server.broadcast`` to every other connection.
Connections opened on ``/pub`` only send (publishers never receive broadcasts,
like a wsbus sender does not receive its own broadcast); connections on ``/idle``
are held and never sent anything (the background crowd of a latency run). Each connection gets
one ``{"op":"welcome"}`` frame once it is registered, so clients know they are
in the broadcast set. Run: ``python -m bench.bare_server --port 0``; it prints
``bare websockets listening on ws://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from wsbus.limits import LISTEN_BACKLOG

from .common import IDLE_PATH, PUB_PATH, raise_nofile

__all__ = ["main"]

WELCOME = b'{"op":"welcome"}'


class Bare:
    def __init__(self) -> None:
        self.receivers: set[ServerConnection] = set()

    async def handle(self, conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else "/"
        receiver = path not in (PUB_PATH, IDLE_PATH)
        if receiver:
            self.receivers.add(conn)
        try:
            await conn.send(WELCOME, text=True)
            while True:
                data = await conn.recv(decode=False)
                if receiver:
                    broadcast([c for c in self.receivers if c is not conn], data, text=True)
                else:
                    broadcast(self.receivers, data, text=True)
        except ConnectionClosed:
            pass
        finally:
            self.receivers.discard(conn)


async def serve_forever(host: str, port: int) -> None:
    bare = Bare()
    async with serve(
        bare.handle,
        host,
        port,
        compression=None,
        ping_interval=20,
        ping_timeout=20,
        backlog=LISTEN_BACKLOG,  # as the hub: a restart compares servers, not queues
    ) as server:
        sock = next(iter(server.sockets))
        print(f"bare websockets listening on ws://{host}:{sock.getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    if args.host != "127.0.0.1":
        p.error("the bare server listens on 127.0.0.1 only")
    raise_nofile()
    asyncio.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
