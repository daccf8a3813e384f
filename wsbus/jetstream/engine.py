"""The NATS side of a bus: the connection, the stream and the bucket, made sure of.

:class:`EngineConfig` is what ``wsbus serve --engine nats://…`` passes (servers, bus,
replicas, credentials, TLS); :func:`connect` opens the connection and checks the server;
:func:`ensure_stream` and :func:`bus_identity` create what a bus needs the first time
and find it the next. Every failure is an :class:`EngineError` whose message says what
to do.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .names import BUS_RULE, bucket_name, stream_name, subjects, valid_bus

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext

__all__ = [
    "MIN_SERVER",
    "EngineConfig",
    "EngineError",
    "bus_identity",
    "connect",
    "ensure_stream",
]

log = logging.getLogger("wsbus.engine")

MIN_SERVER = (2, 11)
"""The oldest nats-server a bus runs on (per-message TTLs, for presence)."""

#: tries per server before a hub that starts gives up on NATS
START_ATTEMPTS = 3

NATS_EXTRA = "pip install 'wsbus[nats]'"


class EngineError(Exception):
    """The engine cannot be used; the message says why and what to do.
    ``maybe_stored``: a send it refuses may be in the log all the same (a resend with
    the same ref is then answered as a duplicate)."""

    def __init__(self, message: str, *, maybe_stored: bool = False) -> None:
        super().__init__(message)
        self.maybe_stored = maybe_stored


class EngineConfig(msgspec.Struct, kw_only=True):
    """Where and how a hub reaches its bus on NATS."""

    servers: list[str]
    bus: str = "default"
    replicas: int = 1
    creds: str | None = None
    tls_ca: str | None = None
    #: the stream's duplicate window (seconds): a resend with the same ref within it
    #: is not stored twice even before any hub indexed the first
    duplicate_window: float = 120.0
    #: seconds a publish waits for the stream's acknowledgement before the send is
    #: refused (retryable)
    publish_timeout: float = 5.0
    connect_timeout: float = 5.0

    def problem(self) -> str | None:
        """What is wrong with these settings (None: nothing)."""
        if not self.servers:
            return "--engine names no NATS server (e.g. nats://127.0.0.1:4222)"
        for url in self.servers:
            if not url.startswith(("nats://", "tls://")):
                return f"--engine {url!r}: a NATS URL starts with nats:// or tls://"
        if not valid_bus(self.bus):
            return f"--bus {self.bus!r}: {BUS_RULE}"
        if not 1 <= self.replicas <= 5:
            return f"--replicas {self.replicas}: NATS keeps 1 to 5 replicas of a stream"
        for flag, path in (("--engine-creds", self.creds), ("--engine-tls-ca", self.tls_ca)):
            if path is not None and not Path(path).expanduser().is_file():
                return f"{flag}: no file at {path}"
        return None


async def connect(config: EngineConfig, **callbacks: Any) -> NATS:
    """A connection to the bus's NATS servers that reconnects forever; raises
    :class:`EngineError` when none answers or the server is too old."""
    try:
        import nats
    except ImportError:
        raise EngineError(f"--engine nats needs the NATS client: {NATS_EXTRA}") from None
    options: dict[str, Any] = {}
    if config.creds:
        options["user_credentials"] = str(Path(config.creds).expanduser())
    if config.tls_ca:
        ctx = ssl.create_default_context(cafile=str(Path(config.tls_ca).expanduser()))
        options["tls"] = ctx
    try:
        nc = await nats.connect(
            servers=config.servers,
            name="wsbus hub",
            connect_timeout=config.connect_timeout,
            allow_reconnect=True,
            # a few tries at start (a wrong URL fails in seconds, not never) …
            max_reconnect_attempts=START_ATTEMPTS,
            reconnect_time_wait=0.5,
            **callbacks,
            **options,
        )
    except Exception as err:
        why = str(err) or type(err).__name__
        raise EngineError(
            f"cannot reach NATS at {','.join(config.servers)}: {why} "
            "(is nats-server running, with -js? is --engine right?)"
        ) from None
    nc.options["max_reconnect_attempts"] = -1  # … then a hub waits for NATS to come back
    version = nc.connected_server_version
    if (version.major, version.minor) < MIN_SERVER:
        await nc.close()
        need = ".".join(map(str, MIN_SERVER))
        raise EngineError(f"nats-server {version} is too old: a bus needs {need} or newer")
    return nc


async def ensure_stream(
    js: JetStreamContext, config: EngineConfig, first_seq: int | None = None
) -> Any:
    """The bus's stream, created the first time (file storage, ``replicas`` copies,
    the duplicate window; ``first_seq``: its first sequence, for a migrated bus whose
    events keep their seqs); its info."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    name = stream_name(config.bus)
    try:
        return await js.stream_info(name)
    except NotFoundError:
        pass
    except Exception as err:
        raise _unavailable(err) from None
    try:
        return await js.add_stream(
            api.StreamConfig(
                name=name,
                description=f"wsbus bus {config.bus}: events and receipts",
                subjects=[subjects(config.bus)],
                storage=api.StorageType.FILE,
                num_replicas=config.replicas,
                duplicate_window=config.duplicate_window,
                allow_direct=True,
                first_seq=first_seq,
            )
        )
    except Exception as err:
        raise _unavailable(err) from None


async def bus_identity(
    js: JetStreamContext, config: EngineConfig, proposed: str | None = None
) -> str:
    """The bus's id, the same for every hub of it (``welcome.hub``): made up by the
    first hub (or ``proposed``: a migrated hub's own id), kept in the bus's bucket."""
    from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError

    bucket = bucket_name(config.bus)
    try:
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(bucket=bucket, history=1, replicas=config.replicas)
        with contextlib.suppress(KeyWrongLastSequenceError):  # another hub made it first
            await kv.create("bus", (proposed or uuid.uuid4().hex[:12]).encode())
        entry = await kv.get("bus")
    except Exception as err:
        raise _unavailable(err) from None
    assert entry.value is not None
    return entry.value.decode()


def _unavailable(err: Exception) -> EngineError:
    from nats.errors import NoRespondersError
    from nats.js.errors import ServiceUnavailableError

    if isinstance(err, NoRespondersError | ServiceUnavailableError):
        return EngineError("NATS answers but JetStream is off: start nats-server with -js")
    return EngineError(f"NATS JetStream refused: {err}")
