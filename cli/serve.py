"""``wsbus serve``: run the hub."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import resource
import signal
import sys

from wsbus.compat.http import HttpShim

from wsbus.config import ConfigError, Settings, load_settings
from wsbus.hub import Hub, HubConfig
from wsbus.server import WsServer
from wsbus.store import MemoryStore, SqliteStore, Store

from .common import Subcommands
from .exits import CliError, Exit

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus serve                          # 127.0.0.1:8765, SQLite in ~/.local/share/wsbus
  wsbus serve --port 9000 --db ./bus.db
  wsbus serve --memory                 # nothing kept (tests, demos)
  wsbus serve --host 0.0.0.0 --insecure   # reachable from other machines, no auth yet
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="run the hub",
        description="Run the wsbus hub: websocket endpoint, durable store, presence, receipts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="websocket port (default 8765; 0 picks a free one)")
    http = p.add_mutually_exclusive_group()
    http.add_argument(
        "--http-port",
        type=int,
        help="port of the agent-bus HTTP shim (/send, /recv, /inbox, /healthz; default 8080)",
    )
    http.add_argument(
        "--no-http", action="store_true", default=None, help="do not serve the agent-bus HTTP shim"
    )
    p.add_argument(
        "--poll-timeout",
        type=float,
        help="seconds a blocked /recv waits before answering empty (default 30)",
    )
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--db", metavar="PATH", help="SQLite file (default ~/.local/share/wsbus/wsbus.db)"
    )
    store.add_argument("--memory", action="store_true", default=None, help="keep nothing on disk")
    p.add_argument(
        "--fsync",
        action="store_true",
        default=None,
        help="fsync every commit (survives power loss; slower)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow listening on a non-loopback address without authentication",
    )
    p.add_argument("--retention-days", type=float, help="drop events older than this (default 30)")
    p.add_argument(
        "--retention-count", type=int, help="keep at most this many events (default 0: no limit)"
    )
    p.add_argument("--max-body", type=int, help="largest body in bytes (default 65536)")
    p.add_argument(
        "--send-queue",
        type=int,
        help="unread bytes a subscriber may hold before it is closed as slow (default 8 MiB)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    p.set_defaults(func=run, fast_loop=True)
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


def make_store(settings: Settings) -> Store:
    if settings.memory:
        return MemoryStore()
    return SqliteStore(settings.db_path(), fsync=settings.fsync)


def hub_config(settings: Settings) -> HubConfig:
    return HubConfig(
        max_body=settings.max_body,
        max_frame=settings.max_frame,
        max_history=settings.max_history,
        max_channels=settings.max_channels,
        send_queue=settings.send_queue,
        retention_days=settings.retention_days,
        retention_count=settings.retention_count,
        loop_window=settings.loop_window,
    )


async def run(args: argparse.Namespace) -> int:
    flags = {
        "host": args.host,
        "port": args.port,
        "http_port": args.http_port,
        "no_http": args.no_http,
        "poll_timeout": args.poll_timeout,
        "db": args.db,
        "memory": args.memory,
        "fsync": args.fsync,
        "insecure": args.insecure,
        "retention_days": args.retention_days,
        "retention_count": args.retention_count,
        "max_body": args.max_body,
        "send_queue": args.send_queue,
    }
    try:
        settings = load_settings(flags)
    except ConfigError as err:
        raise CliError(str(err), Exit.USAGE) from None
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def say(message: str) -> None:
        if not args.quiet:
            print(message, flush=True)

    if not _is_loopback(settings.host):
        if not settings.insecure:
            raise CliError(
                f"refusing to listen on {settings.host} without authentication; "
                "use a loopback address or pass --insecure",
                Exit.USAGE,
            )
        print(
            f"wsbus: WARNING: listening on {settings.host} with NO authentication: anyone who "
            "can reach this port can read and send every message",
            file=sys.stderr,
            flush=True,
        )
    # handlers first: a signal that arrives while starting still stops cleanly
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nofile = _raise_nofile()
    store = make_store(settings)
    hub = Hub(store, hub_config(settings))
    server = WsServer(
        hub,
        settings.host,
        settings.port,
        hello_timeout=settings.hello_timeout,
        max_bad_frames=settings.max_bad_frames,
        ping_interval=settings.ping_interval,
    )
    try:
        await hub.start()
    except Exception as err:
        raise CliError(f"cannot open the store at {store.location}: {err}") from None
    shim = (
        None
        if settings.no_http
        else HttpShim(hub, settings.host, settings.http_port, poll_timeout=settings.poll_timeout)
    )
    try:
        await server.start()
        if shim is not None:
            try:
                await shim.start()
            except OSError as err:
                await server.stop()
                raise CliError(
                    f"cannot listen on {settings.host}:{settings.http_port} (HTTP shim): "
                    f"{err.strerror or err}; pick another --http-port or pass --no-http"
                ) from None
    except OSError as err:
        await hub.stop()
        raise CliError(
            f"cannot listen on {settings.host}:{settings.port}: {err.strerror or err}"
        ) from None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    say(f"data: {store.location}; seq {hub.committed_seq}; open files limit {nofile}")
    if shim is not None:
        say(f"agent-bus HTTP shim on http://{host}:{shim.port} (AGENT_BUS_URL)")
    say(f"wsbus hub {hub.hub_id} listening on ws://{host}:{server.port}")
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        say("wsbus hub stopping: committing pending writes, asking clients to reconnect")
        if shim is not None:
            await shim.stop()  # answers every pending long-poll
        await server.stop()
        say("wsbus hub stopped")
    return Exit.OK
