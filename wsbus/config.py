"""Settings: flags, then environment, then the config file, then the defaults below.

Every default lives in :class:`Settings`; every environment variable is listed
in :data:`ENVIRONMENT`. The config file is TOML at
``$XDG_CONFIG_HOME/wsbus/config.toml`` (``~/.config/wsbus/config.toml``), or the
path in ``WSBUS_CONFIG``; its keys are the field names of :class:`Settings`::

    url = "ws://hub.lan:8765"
    name = "alice"
    retention_days = 7
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import msgspec

from .errors import WsbusError
from .hubconfig import HubConfig

__all__ = [
    "ENVIRONMENT",
    "Access",
    "ConfigError",
    "Settings",
    "config_path",
    "data_dir",
    "load_settings",
    "state_dir",
]

APP = "wsbus"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is read from (``WSBUS_CONFIG`` overrides)."""
    override = (os.environ if env is None else env).get("WSBUS_CONFIG")
    if override:
        return Path(override)
    return Path(_user_config_dir()) / "config.toml"


def _user_config_dir() -> str:
    """``platformdirs.user_config_dir("wsbus")``, without importing platformdirs on
    Linux (every client command reads the config: that import is 4 ms of a ``wsbus
    send``): ``$XDG_CONFIG_HOME`` if absolute, else ``$HOME/.config`` if ``HOME`` is
    absolute; anything else asks platformdirs. tests/test_config.py checks they agree."""
    if sys.platform.startswith("linux"):
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        if os.path.isabs(xdg):
            return os.path.join(xdg, APP)
        home = os.environ.get("HOME", "")
        if os.path.isabs(home):
            return os.path.join(home, ".config", APP)
    import platformdirs

    return platformdirs.user_config_dir(APP)


def data_dir() -> Path:
    """Where the hub keeps its database by default (``~/.local/share/wsbus``)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP))


def state_dir() -> Path:
    """Where clients keep their cursors (``~/.local/state/wsbus``)."""
    import platformdirs

    return Path(platformdirs.user_state_dir(APP))


#: the hub's own defaults (the limits a user may set are read from them)
_HUB = HubConfig()
#: the settings the hub takes as they are
_HUB_FIELDS = tuple(f.name for f in msgspec.structs.fields(HubConfig))


class Access(TypedDict):
    """How a client proves itself and checks the hub, besides the URL: keyword
    arguments of :class:`wsbus.Client` (``Client(settings.url, **settings.access())``)."""

    token: str | None
    ca_file: str | None


#: websocket connections a hub takes when ``max_connections`` is not set (lowered to
#: what the open-file limit allows)
DEFAULT_MAX_CONNECTIONS = 50_000


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every setting with its default. Limits are documented in docs/CONFIG.md."""

    # client side
    #: the hub, or several hubs of one bus (comma-separated; a list in the config
    #: file): clients try them in turn (see urls)
    url: str = "ws://127.0.0.1:8765"
    name: str | None = None
    channel: str = "default"
    timeout: float = 10.0
    #: the token clients present (``wsbus join`` stores it here; docs/SECURITY.md)
    token: str | None = None
    #: the CA certificate a ``wss://`` hub is verified with (default: the system's CAs)
    ca_file: str | None = None
    # hub side
    #: None: 127.0.0.1, or every interface (0.0.0.0) with ``share`` (see listen_host)
    host: str | None = None
    #: auth and TLS from the hub's own CA, for ``wsbus token invite``/``wsbus join``
    share: bool = False
    #: the names (host names, addresses) a shared hub is reached by: its certificate's
    #: names and the URLs in invite codes; empty: tls.default_names()
    advertise: list[str] = []
    port: int = 8765
    http_port: int = 8080
    no_http: bool = False
    poll_timeout: float = 30.0
    db: str | None = None
    memory: bool = False
    #: the log of record: "sqlite" (embedded, one hub) or NATS URLs, comma-separated
    #: (many hubs: docs/DEPLOY.md)
    engine: str = "sqlite"
    #: the bus's name on NATS (its stream and bucket): several buses share one NATS
    bus: str = "default"
    #: copies NATS keeps of the bus's stream and bucket (3 on a 3-node cluster)
    replicas: int = 1
    engine_creds: str | None = None
    engine_tls_ca: str | None = None
    fsync: bool = False
    busy_timeout: float = 5.0
    legacy_cache_bytes: int = 16 << 20
    legacy_cache_events: int = 20_000
    insecure: bool = False
    retention_days: float = _HUB.retention_days
    retention_count: int = _HUB.retention_count
    max_body: int = _HUB.max_body
    max_frame: int = _HUB.max_frame
    max_history: int = _HUB.max_history
    max_channels: int = _HUB.max_channels
    send_queue: int = _HUB.send_queue
    hello_timeout: float = 10.0
    max_bad_frames: int = 20
    ping_interval: float = 20.0
    loop_window: float = _HUB.loop_window
    # security (docs/SECURITY.md)
    auth: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_origin: list[str] = []
    block_secrets: bool = False
    rate_events: float = 1000.0
    rate_bytes: int = 4 << 20
    rate_burst: float = 5.0
    rate_abuse: float = 30.0
    #: None: DEFAULT_MAX_CONNECTIONS, lowered to what the open-file limit allows
    #: (``wsbus.limits.fit_connections``); a number set is kept (with a warning when
    #: the limit cannot hold it). 10,000 idle connections take about 140 MiB
    #: (docs/SCALE.md).
    max_connections: int | None = None
    #: connections not yet authenticated (no token on the upgrade, no hello yet);
    #: None: a tenth of max_connections (see unauthenticated_budget)
    max_unauthenticated: int | None = None
    max_unauthenticated_per_address: int = 64
    max_identity_connections: int = _HUB.max_identity_connections
    max_polls: int = 16

    def urls(self) -> list[str]:
        """The hub URLs clients try in turn."""
        return hub_urls(self.url)

    def hub_config(self) -> HubConfig:
        """The hub's limits and policies: the settings both hold, the rest as
        :class:`HubConfig` has them."""
        mine = {name: getattr(self, name) for name in _HUB_FIELDS if hasattr(self, name)}
        return msgspec.structs.replace(_HUB, **mine)

    def access(self) -> Access:
        """The token and CA file every client connects with (flags, environment, or
        the config file that ``wsbus join`` wrote)."""
        return Access(token=self.token, ca_file=self.ca_file)

    def listen_host(self) -> str:
        """Where the hub listens: ``host``, else loopback, or every interface when
        shared (a hub shared with other machines must be reachable from them)."""
        if self.host:
            return self.host
        return "0.0.0.0" if self.share else "127.0.0.1"

    def db_path(self) -> Path:
        """The SQLite file: the store, or with a NATS engine this hub's index of the
        bus (by default named after the bus)."""
        if self.db:
            return Path(self.db).expanduser()
        if self.engine_servers() is not None:
            return data_dir() / f"index-{self.bus}.db"
        return data_dir() / "wsbus.db"

    def engine_servers(self) -> list[str] | None:
        """The NATS URLs of ``engine`` (None: the embedded SQLite engine)."""
        if self.engine.strip().lower() in ("", "sqlite"):
            return None
        return hub_urls(self.engine)

    def connections(self) -> int:
        """``max_connections``, or its default when not set (before the hub fits it to
        its open-file limit)."""
        if self.max_connections is not None:
            return self.max_connections
        return DEFAULT_MAX_CONNECTIONS

    def unauthenticated_budget(self) -> int:
        """``max_unauthenticated``, by default a tenth of ``max_connections`` (at least 1):
        the other nine tenths stay free for clients that present a token."""
        if self.max_unauthenticated is not None:
            return self.max_unauthenticated
        return max(1, self.connections() // 10)


#: setting -> environment variables, first set wins
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "url": ("WSBUS_URL",),
    "name": ("WSBUS_NAME", "AGENT_COMMS_SELF", "AGENT_NAME"),
    "channel": ("WSBUS_CHANNEL", "AGENT_BUS_CHANNEL"),
    "timeout": ("WSBUS_TIMEOUT",),
    "token": ("WSBUS_TOKEN",),
    "ca_file": ("WSBUS_CA_FILE",),
    "share": ("WSBUS_SHARE",),
    "advertise": ("WSBUS_ADVERTISE",),
    "host": ("WSBUS_HOST",),
    "port": ("WSBUS_PORT",),
    "http_port": ("WSBUS_HTTP_PORT",),
    "no_http": ("WSBUS_NO_HTTP",),
    "poll_timeout": ("WSBUS_POLL_TIMEOUT",),
    "db": ("WSBUS_DB",),
    "fsync": ("WSBUS_FSYNC",),
    "busy_timeout": ("WSBUS_BUSY_TIMEOUT",),
    "legacy_cache_bytes": ("WSBUS_LEGACY_CACHE_BYTES",),
    "legacy_cache_events": ("WSBUS_LEGACY_CACHE_EVENTS",),
    "retention_days": ("WSBUS_RETENTION_DAYS",),
    "retention_count": ("WSBUS_RETENTION_COUNT",),
    "max_body": ("WSBUS_MAX_BODY",),
    "max_frame": ("WSBUS_MAX_FRAME",),
    "max_history": ("WSBUS_MAX_HISTORY",),
    "max_channels": ("WSBUS_MAX_CHANNELS",),
    "send_queue": ("WSBUS_SEND_QUEUE",),
    "hello_timeout": ("WSBUS_HELLO_TIMEOUT",),
    "max_bad_frames": ("WSBUS_MAX_BAD_FRAMES",),
    "ping_interval": ("WSBUS_PING_INTERVAL",),
    "memory": ("WSBUS_MEMORY",),
    "engine": ("WSBUS_ENGINE",),
    "bus": ("WSBUS_BUS",),
    "replicas": ("WSBUS_REPLICAS",),
    "engine_creds": ("WSBUS_ENGINE_CREDS",),
    "engine_tls_ca": ("WSBUS_ENGINE_TLS_CA",),
    "loop_window": ("WSBUS_LOOP_WINDOW", "AGENT_COMMS_LOOP_WINDOW_SEC"),
    "auth": ("WSBUS_AUTH",),
    "tls_cert": ("WSBUS_TLS_CERT",),
    "tls_key": ("WSBUS_TLS_KEY",),
    "allow_origin": ("WSBUS_ALLOW_ORIGIN",),
    "block_secrets": ("WSBUS_BLOCK_SECRETS",),
    "rate_events": ("WSBUS_RATE_EVENTS",),
    "rate_bytes": ("WSBUS_RATE_BYTES",),
    "rate_burst": ("WSBUS_RATE_BURST",),
    "rate_abuse": ("WSBUS_RATE_ABUSE",),
    "max_connections": ("WSBUS_MAX_CONNECTIONS",),
    "max_unauthenticated": ("WSBUS_MAX_UNAUTHENTICATED",),
    "max_unauthenticated_per_address": ("WSBUS_MAX_UNAUTHENTICATED_PER_ADDRESS",),
    "max_identity_connections": ("WSBUS_MAX_IDENTITY_CONNECTIONS",),
    "max_polls": ("WSBUS_MAX_POLLS",),
}


def hub_urls(url: str | Sequence[str]) -> list[str]:
    """The hub URLs of a ``url`` setting: one, or several hubs of one bus
    (comma-separated, or a list), which every client tries in turn."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip() for u in parts if u.strip()]
    return urls or [str(url)]


class ConfigError(WsbusError):
    """A setting could not be read; the message says which and why."""


def _read_file(path: Path) -> dict[str, Any]:
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    import tomllib  # only when there is a file to read (a client start-up saves 2 ms)

    with fh:
        try:
            return tomllib.load(fh)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Settings:
    """Resolve every setting: flags (non-None), environment, config file, defaults."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    source = config_path(env) if path is None else path
    file_values = _read_file(source)
    if isinstance(file_values.get("url"), list):  # several hubs of one bus: in turn
        file_values["url"] = ",".join(str(u) for u in file_values["url"])
    try:
        msgspec.convert(file_values, Settings)
    except msgspec.ValidationError as err:
        raise ConfigError(f"config file {source}: {err}") from None
    merged.update(file_values)
    for field, names in ENVIRONMENT.items():
        for var in names:
            value = env.get(var)
            if value:
                try:
                    kind = Settings.__annotations__[field]
                    merged[field] = _from_env(value, kind)
                except ValueError:
                    raise ConfigError(
                        f"environment variable {var}={value!r} is not valid"
                    ) from None
                break
    for key, value in (flags or {}).items():
        if value is not None:
            merged[key] = value
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(f"invalid setting: {err}") from None


def _from_env(value: str, kind: str) -> Any:
    if kind.startswith("bool"):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    if kind.startswith("list"):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
