"""``wsbus serve``: run the hub."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from wsbus.compat.http import HttpShim

from wsbus import logformat, redact
from wsbus.auth import Gate, TokenFileError, is_loopback
from wsbus.config import DEFAULT_MAX_CONNECTIONS, ConfigError, Settings, load_settings
from wsbus.hub import Hub
from wsbus.jetstream.engine import EngineError
from wsbus.limits import (
    RateLimits,
    connection_budget,
    fit_connections,
    freeze_startup_heap,
    raise_nofile,
)
from wsbus.log import Log
from wsbus.logformat import FORMATS
from wsbus.server import WsServer, ws_broadcast
from wsbus.store import MemoryStore, SqliteStore, Store, StoreLocked, StoreMismatch
from wsbus.tls import format_fingerprint
from wsbus.webui import StaticUi
from wsbus.webws import WebSocketRoute

from .common import Subcommands
from .exits import CliError, Exit
from .share import prepare, publish

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  wsbus serve                          # 127.0.0.1:8765, SQLite in ~/.local/share/wsbus
  wsbus serve --port 9000 --db ./bus.db
  wsbus serve --memory                 # nothing kept (tests, demos)
  wsbus serve --share                  # other machines join: auth + TLS, its own CA
  wsbus token invite bob               #   prints `wsbus join CODE` for bob's machine
  wsbus serve --share --advertise hub.lan,10.0.0.5   # the names others reach it by
  wsbus serve --host 0.0.0.0 --auth ~/.config/wsbus/tokens.json \\
      --tls-cert hub.pem --tls-key hub-key.pem         # your own certificate
  wsbus serve --host 0.0.0.0 --insecure   # no auth at all (trusted network only)
  wsbus serve --engine nats://127.0.0.1:4222 --bus team   # one of many hubs on NATS

security: docs/SECURITY.md (tokens, TLS, origins, every limit and its default)
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="run the hub",
        description="Run the wsbus hub: websocket endpoint, durable store, presence, receipts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; with --share 0.0.0.0)")
    p.add_argument(
        "--share",
        action="store_true",
        default=None,
        help="let other machines join: tokens required, TLS from a CA the hub makes once "
        "(kept 0600 in its data directory); invite with `wsbus token invite NAME`",
    )
    p.add_argument(
        "--advertise",
        type=lambda v: [n.strip() for n in v.split(",") if n.strip()],
        metavar="HOST,...",
        help="with --share: the host names and addresses others reach the hub by (its "
        "certificate's names, the URLs in invites; default: host name, localhost, loopback "
        "and this machine's addresses)",
    )
    p.add_argument("--port", type=int, help="websocket port (default 8765; 0 picks a free one)")
    http = p.add_mutually_exclusive_group()
    http.add_argument(
        "--http-port",
        type=int,
        help="the HTTP port: the agent-bus shim (/send, /recv, /inbox, /healthz), the "
        "dashboard (/ui/), /metrics (Prometheus) and the websocket protocol at /ws "
        "(default 8080)",
    )
    http.add_argument(
        "--no-http",
        action="store_true",
        default=None,
        help="do not serve the HTTP port at all: no agent-bus shim, no /ui dashboard, "
        "no /metrics, no /ws",
    )
    p.add_argument(
        "--poll-timeout",
        type=float,
        help="seconds a blocked /recv waits before answering empty (default 30)",
    )
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--db",
        metavar="PATH",
        help="SQLite file (default ~/.local/share/wsbus/wsbus.db; with --engine nats, "
        "this hub's index: index-BUS.db there)",
    )
    store.add_argument(
        "--memory", action="store_true", default=None, help="keep nothing on disk (not with NATS)"
    )
    engine = p.add_argument_group("many hubs on NATS JetStream (docs/DEPLOY.md)")
    engine.add_argument(
        "--engine",
        metavar="URLS",
        help="the log of record: sqlite (default, one hub) or nats://HOST:4222[,nats://…]",
    )
    engine.add_argument(
        "--bus",
        metavar="NAME",
        help="the bus's name on NATS: its stream and bucket (default default)",
    )
    engine.add_argument(
        "--replicas", type=int, metavar="N", help="copies of the stream NATS keeps (default 1)"
    )
    engine.add_argument("--engine-creds", metavar="FILE", help="NATS credentials file (.creds)")
    engine.add_argument("--engine-tls-ca", metavar="PEM", help="CA that signed NATS's certificate")
    p.add_argument(
        "--fsync",
        action="store_true",
        default=None,
        help="fsync every commit (survives power loss; slower)",
    )
    p.add_argument(
        "--busy-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a commit waits while another process locks the database "
        "(off the event loop; then the send fails with store_failed; default 5)",
    )
    p.add_argument(
        "--auth",
        metavar="FILE",
        help="require a token from every client (file made by `wsbus token create`)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="certificate chain: serve wss:// and https://")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="browser origin allowed to connect, e.g. https://app.example (repeatable; "
        "'*' allows any); clients that send no Origin are always allowed",
    )
    p.add_argument(
        "--block-secrets",
        action="store_true",
        default=None,
        help="refuse bodies that carry private keys or common credential patterns",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow listening on a non-loopback address without authentication",
    )
    p.add_argument(
        "--rate-events",
        type=float,
        help="frames/s per connection, requests/s per HTTP caller (its token; without --auth, "
        "its address and name) (default 1000; 0: no limit)",
    )
    p.add_argument(
        "--rate-bytes", type=int, help="bytes/s per connection or caller (default 4 MiB; 0: none)"
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help=f"websocket connections in total (default {DEFAULT_MAX_CONNECTIONS}, lowered to "
        "what the open-file limit allows; each "
        "takes an open file: the hub raises its limit to the hard limit)",
    )
    p.add_argument(
        "--max-unauthenticated",
        type=int,
        metavar="N",
        help="of those, connections without a token on the upgrade that have not yet sent "
        "their hello (without --auth: every connection until its hello); beyond: HTTP 503 "
        "(default: a tenth of --max-connections)",
    )
    p.add_argument(
        "--max-unauthenticated-per-address",
        type=int,
        metavar="N",
        help="such connections from one address (IPv6: one /64); beyond: HTTP 429 (default 64)",
    )
    p.add_argument(
        "--max-polls", type=int, help="pending /recv long-polls per token or name (default 16)"
    )
    p.add_argument(
        "--hello-timeout",
        type=float,
        help="seconds to finish a handshake or an HTTP request (default 10)",
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
    p.add_argument(
        "--log-level",
        default="WARNING",
        help="logging level (default WARNING; INFO adds a line per connect, disconnect, "
        "auth failure, slow consumer, bridge delivery failure)",
    )
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text (default) or json: one JSON object per line, for log collectors",
    )
    p.set_defaults(func=run, fast_loop=True)
    return p


def make_store(settings: Settings) -> Store:
    if settings.memory:
        return MemoryStore()
    return SqliteStore(settings.db_path(), fsync=settings.fsync, busy_timeout=settings.busy_timeout)


def make_log(settings: Settings, store: Store) -> Log | None:
    """The log of record: None for the embedded engine (the store is the log), else
    the bus on NATS JetStream with ``store`` as this hub's index."""
    servers = settings.engine_servers()
    if servers is None:
        return None
    if settings.memory:
        raise CliError(
            "--memory keeps nothing, but a hub on NATS needs an index file: drop --memory "
            "(or pass --db PATH)",
            Exit.USAGE,
        )
    from wsbus.jetstream import EngineConfig, JetStreamLog

    config = EngineConfig(
        servers=servers,
        bus=settings.bus,
        replicas=settings.replicas,
        creds=settings.engine_creds,
        tls_ca=settings.engine_tls_ca,
    )
    problem = config.problem()
    if problem is not None:
        raise CliError(problem, Exit.USAGE)
    return JetStreamLog(store, config, settings.hub_config().ref_window)


def open_gate(settings: Settings) -> Gate | None:
    """The token file named by ``--auth`` (None without it)."""
    if not settings.auth:
        return None
    path = Path(settings.auth).expanduser()
    if not path.exists():
        raise CliError(
            f"no token file at {path}; create tokens first: wsbus token create NAME --auth {path}",
            Exit.USAGE,
        )
    try:
        return Gate(path)
    except TokenFileError as err:
        raise CliError(str(err), Exit.USAGE) from None


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server TLS context from ``--tls-cert``/``--tls-key`` (None without them)."""
    if not settings.tls_cert and not settings.tls_key:
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise CliError("--tls-cert and --tls-key go together", Exit.USAGE)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(
            Path(settings.tls_cert).expanduser(), Path(settings.tls_key).expanduser()
        )
    except (OSError, ssl.SSLError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise CliError(
            f"cannot load the TLS certificate {settings.tls_cert} / key {settings.tls_key}: {why}",
            Exit.USAGE,
        ) from None
    return ctx


#: how to install what ``--block-secrets`` needs
SECRETS_EXTRA = "pip install 'wsbus[secrets]'"


def secret_finder(settings: Settings) -> Callable[[str], str | None] | None:
    """The credential scanner of ``--block-secrets`` (None without it). It uses
    detect-secrets, an optional dependency: the extra ``wsbus[secrets]``."""
    if not settings.block_secrets:
        return None
    try:
        from wsbus.leaks import find_secret  # detect-secrets loads only when asked for
    except ImportError as err:
        if err.name is None or err.name.partition(".")[0] != "detect_secrets":
            raise
        raise CliError(
            f"--block-secrets needs detect-secrets, which is not installed: {SECRETS_EXTRA}",
            Exit.USAGE,
        ) from None
    return find_secret


async def run(args: argparse.Namespace) -> int:
    flags = {
        "host": args.host,
        "share": args.share,
        "advertise": args.advertise,
        "port": args.port,
        "http_port": args.http_port,
        "no_http": args.no_http,
        "poll_timeout": args.poll_timeout,
        "db": args.db,
        "memory": args.memory,
        "engine": args.engine,
        "bus": args.bus,
        "replicas": args.replicas,
        "engine_creds": args.engine_creds,
        "engine_tls_ca": args.engine_tls_ca,
        "fsync": args.fsync,
        "busy_timeout": args.busy_timeout,
        "insecure": args.insecure,
        "retention_days": args.retention_days,
        "retention_count": args.retention_count,
        "max_body": args.max_body,
        "send_queue": args.send_queue,
        "auth": args.auth,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "allow_origin": args.allow_origin,
        "block_secrets": args.block_secrets,
        "rate_events": args.rate_events,
        "rate_bytes": args.rate_bytes,
        "max_connections": args.max_connections,
        "max_unauthenticated": args.max_unauthenticated,
        "max_unauthenticated_per_address": args.max_unauthenticated_per_address,
        "max_polls": args.max_polls,
        "hello_timeout": args.hello_timeout,
    }
    try:
        settings = load_settings(flags)
    except ConfigError as err:
        raise CliError(str(err), Exit.USAGE) from None
    logformat.setup(args.log_level, args.log_format)
    redact.install()  # no token in any log line, whichever library writes it
    find_secret = secret_finder(settings)  # before anything starts: it may be missing
    settings, shared = prepare(settings)
    host = settings.listen_host()

    def say(message: str) -> None:
        if not args.quiet:
            print(message, flush=True)

    def warn(message: str) -> None:
        print(f"wsbus: {message}", file=sys.stderr, flush=True)

    gate = open_gate(settings)
    tls = tls_context(settings)
    if not is_loopback(host):
        if gate is None and not settings.insecure:
            raise CliError(
                f"refusing to listen on {host} without authentication: pass "
                "--auth FILE (tokens from `wsbus token create`), use a loopback address, "
                "or pass --insecure",
                Exit.USAGE,
            )
        if gate is None:
            warn(
                f"WARNING: listening on {host} with NO authentication: anyone who "
                "can reach this port can read and send every message"
            )
        elif tls is None:
            warn(
                f"WARNING: listening on {host} without TLS: tokens and messages "
                "cross the network in clear; pass --tls-cert/--tls-key or put a TLS proxy in front"
            )
    if gate is not None and gate.live() == 0 and shared is None:
        warn(
            f"no live tokens in {gate.path}: nobody can connect; "
            f"create one with: wsbus token create NAME --auth {gate.path}"
        )
    nofile = raise_nofile()
    settings, too_many = fit_connections(settings, nofile)
    if too_many is not None:
        warn(too_many)
    if settings.unauthenticated_budget() >= settings.connections():
        warn(
            f"max_unauthenticated ({settings.unauthenticated_budget()}) is not below "
            f"max_connections ({settings.connections()}): connections that never send "
            "hello can take every slot"
        )
    # handlers first: a signal that arrives while starting still stops cleanly
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = make_store(settings)
    log = make_log(settings, store)
    hub = Hub(
        store, settings.hub_config(), ws_broadcast, gate=gate, find_secret=find_secret, log=log
    )
    rates = RateLimits.of(settings)
    server = WsServer(
        hub,
        host,
        settings.port,
        hello_timeout=settings.hello_timeout,
        max_bad_frames=settings.max_bad_frames,
        ping_interval=settings.ping_interval,
        ssl_context=tls,
        allow_origins=settings.allow_origin,
        rates=rates,
        budget=connection_budget(settings),
        ca_pem=shared.ca_pem if shared else None,
    )
    try:
        await hub.start()
    except (StoreLocked, StoreMismatch, EngineError) as err:
        raise CliError(str(err)) from None
    except Exception as err:
        raise CliError(f"cannot open the store at {store.location}: {err}") from None
    shim = (
        None
        if settings.no_http
        else HttpShim(
            hub,
            host,
            settings.http_port,
            poll_timeout=settings.poll_timeout,
            ssl_context=tls,
            allow_origins=settings.allow_origin,
            request_timeout=settings.hello_timeout,
            rates=rates,
            max_polls=settings.max_polls,
            cache_events=settings.legacy_cache_events,
            cache_bytes=settings.legacy_cache_bytes,
            ca_pem=shared.ca_pem if shared else None,
            websocket=WebSocketRoute(
                server.conversation,
                server.budget,
                ping_interval=settings.ping_interval,
                max_frame=hub.config.max_frame,
            ),
            ui=StaticUi(),
        )
    )
    try:
        await server.start()
        if shim is not None:
            try:
                await shim.start()
            except OSError as err:
                await server.stop()
                raise CliError(
                    f"cannot listen on {host}:{settings.http_port} (HTTP shim): "
                    f"{err.strerror or err}; pick another --http-port or pass --no-http"
                ) from None
    except OSError as err:
        await hub.stop()
        raise CliError(f"cannot listen on {host}:{settings.port}: {err.strerror or err}") from None
    shown = f"[{host}]" if ":" in host else host
    where = store.location if log is None else f"{log.location}; index {store.location}"
    say(
        f"data: {where}; seq {hub.committed_seq}; open files limit {nofile}, "
        f"max connections {settings.connections()}"
    )
    if gate is not None:
        say(f"auth: tokens from {gate.path} ({gate.live()} live)")
    if shim is not None:
        base = f"{shim.scheme}://{shown}:{shim.port}"
        hint = f"{base}/t/TOKEN" if gate is not None else base
        say(f"agent-bus HTTP shim on {base} (AGENT_BUS_URL={hint})")
        say(f"dashboard on {base}/ui/ · metrics on {base}/metrics")
    freeze_startup_heap()  # before the first client: see wsbus/limits.py
    say(f"wsbus hub {hub.hub_id} listening on {server.scheme}://{shown}:{server.port}")
    if shared is not None:
        info = publish(shared, settings, server.port)
        say(f"shared: CA {shared.paths.ca_cert} (SHA-256 {format_fingerprint(info.ca_sha256)})")
        say(f"shared: reached as {', '.join(info.urls)}")
        say(f"shared: {shared.local_note}")
        say("shared: invite a machine with: wsbus token invite NAME")
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        say("wsbus hub stopping: committing pending writes, asking clients to reconnect")
        if shim is not None:
            shim.stop_taking()  # answers every pending long-poll
        await server.stop()  # commits, then closes every connection (/ws too) with 1001
        if shim is not None:
            await shim.stop()
        say("wsbus hub stopped")
    return Exit.OK
