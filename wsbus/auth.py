"""Per-agent tokens: a file of hashed tokens, checking a token, and who it may speak for.

Pure and synchronous (no sockets): the hub and ``wsbus token`` both use it.

A token is ``wsbus_<id>_<secret>``: ``id`` is 8 hex digits, public, and names the
token in ``wsbus token list`` and ``revoke``; ``secret`` is
``secrets.token_urlsafe(32)``. Only ``sha256(secret)`` is stored, so the file
cannot be used to log in; a lost token is revoked and a new one created. The
secret carries 256 random bits, so a plain hash is enough (no slow KDF needed).

The file (default ``<config dir>/tokens.json``) is JSON written atomically with
mode 0600; a missing parent directory is created with mode 0700::

    {"version": 1, "tokens": [{"id": "3f9a1c2e", "name": "alice", "role": "agent",
      "channels": [], "names": ["alice"], "hash": "<sha256 hex>",
      "created": 1718000000.0, "revoked": null}]}

Roles: ``agent`` acts only as its own name; ``bridge`` acts for the names it
lists; ``admin`` acts as anyone and reads every channel. ``channels`` empty
means every channel.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

import msgspec
import platformdirs

from .errors import WsbusError
from .schema import NAME_RULE, Channel, Name, valid_name

__all__ = [
    "ROLES",
    "AuthError",
    "Gate",
    "Role",
    "TokenFileError",
    "TokenRecord",
    "TokenStore",
    "bearer",
    "default_auth_path",
    "is_loopback",
    "loopback_host_header",
    "may_act_as",
    "may_scrape",
    "may_use_channel",
    "party_of",
    "reads_all",
]

log = logging.getLogger("wsbus.auth")

Role = Literal["agent", "bridge", "admin", "metrics"]
ROLES: tuple[Role, ...] = get_args(Role)

PREFIX = "wsbus_"
FILE_VERSION = 1
#: longest string :meth:`TokenStore.verify` looks at (a real token is 58 characters)
MAX_TOKEN_LEN = 256
_TOKEN_RE = re.compile(r"wsbus_([0-9a-f]{8})_([A-Za-z0-9_-]{16,128})")


class AuthError(WsbusError):
    """A token request is invalid (bad name, role, channel), or the file failed."""


class TokenFileError(AuthError):
    """The token file could not be read, parsed or written; the message says which."""


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One token as stored: never the secret, only its sha256."""

    id: str
    name: Name
    role: Role
    channels: list[Channel]
    names: list[Name]
    hash: str
    created: float
    revoked: float | None = None


class _File(msgspec.Struct, kw_only=True):
    version: int = FILE_VERSION
    tokens: list[TokenRecord] = []


_decode_file = msgspec.json.Decoder(_File).decode
_encoder = msgspec.json.Encoder()


def default_auth_path() -> Path:
    """``tokens.json`` in the config directory (``~/.config/wsbus/tokens.json``)."""
    return Path(platformdirs.user_config_dir("wsbus")) / "tokens.json"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _is_name(value: object) -> bool:
    return isinstance(value, str) and valid_name(value)


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


class TokenStore:
    """The tokens in one file. :meth:`load` reads it; :meth:`create` and
    :meth:`revoke` change it and save it at once."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._records: dict[str, TokenRecord] = {}

    def load(self) -> TokenStore:
        """Read the file (a missing file is an empty store). Returns ``self``."""
        try:
            data = self.path.read_bytes()
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            self._records = {}
            return self
        except OSError as err:
            raise TokenFileError(
                f"cannot read token file {self.path}: {err.strerror or err}"
            ) from None
        try:
            parsed = _decode_file(data)
        except msgspec.DecodeError as err:
            raise TokenFileError(f"token file {self.path} is not valid: {err}") from None
        if parsed.version != FILE_VERSION:
            raise TokenFileError(
                f"token file {self.path} has version {parsed.version}; "
                f"this wsbus reads version {FILE_VERSION}"
            )
        records: dict[str, TokenRecord] = {}
        for rec in parsed.tokens:
            if rec.id in records:
                raise TokenFileError(f"token file {self.path} lists token id {rec.id} twice")
            records[rec.id] = rec
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "token file %s is readable by others (mode %o); it is fixed to 0600 on save",
                self.path,
                stat.S_IMODE(mode),
            )
        self._records = records
        return self

    def save(self) -> None:
        """Write the file atomically (temporary file beside it, then rename), mode 0600."""
        parent = self.path.parent
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            body = _encoder.encode(_File(tokens=builtins.list(self._records.values())))
            tmp = parent / f".{self.path.name}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    if hasattr(os, "fchmod"):
                        os.fchmod(fh.fileno(), 0o600)  # whatever the umask was
                    fh.write(body + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as err:
            raise TokenFileError(
                f"cannot write token file {self.path}: {err.strerror or err}"
            ) from None

    def create(
        self,
        name: str,
        role: Role = "agent",
        channels: Iterable[str] = (),
        names: Iterable[str] = (),
    ) -> str:
        """Add a token, save the file and return the full token (the only time it exists).

        ``names``: for a bridge, the names it acts for (at least one); an agent
        acts only as ``name``; an admin acts as anyone.
        """
        if not _is_name(name):
            raise AuthError(f"invalid name {name!r}: allowed {NAME_RULE}")
        if role not in ROLES:
            raise AuthError(f"invalid role {role!r}: one of {', '.join(ROLES)}")
        chans = _unique(channels)
        acts = _unique(names)
        for c in chans:
            if not _is_name(c):
                raise AuthError(f"invalid channel {c!r}: allowed {NAME_RULE}")
        for n in acts:
            if not _is_name(n):
                raise AuthError(f"invalid name {n!r}: allowed {NAME_RULE}")
        if role == "agent":
            if acts not in ([], [name]):
                raise AuthError(
                    f"an agent token acts only as its own name {name!r}; "
                    "use a bridge token to act for other names"
                )
            acts = [name]
        elif role == "bridge" and not acts:
            raise AuthError("a bridge token needs the names it acts for")
        elif role == "admin":
            acts = _unique([name, *acts])
        elif role == "metrics" and (acts or chans):
            raise AuthError("a metrics token reads /metrics only: it takes no channels or names")
        token_id = secrets.token_hex(4)
        while token_id in self._records:
            token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        self._records[token_id] = TokenRecord(
            id=token_id,
            name=name,
            role=role,
            channels=chans,
            names=acts,
            hash=_hash(secret),
            created=time.time(),
        )
        self.save()
        return f"{PREFIX}{token_id}_{secret}"

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with this id (revoked or not), or None."""
        return self._records.get(token_id)

    def list(self) -> builtins.list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""
        return sorted(self._records.values(), key=lambda r: (r.created, r.id))

    def revoke(self, id_or_name: str) -> builtins.list[TokenRecord]:
        """Revoke the token with this id, or else every live token of this name; save.

        Returns the records as revoked (empty when nothing live matched).
        """
        rec = self._records.get(id_or_name)
        if rec is not None:
            hits = [] if rec.revoked is not None else [rec]
        else:
            hits = [r for r in self.list() if r.name == id_or_name and r.revoked is None]
        if not hits:
            return []
        now = time.time()
        done = [msgspec.structs.replace(r, revoked=now) for r in hits]
        for r in done:
            self._records[r.id] = r
        self.save()
        return done

    def verify(self, token: object) -> TokenRecord | None:
        """The live record a token belongs to, or None. Never raises, whatever ``token`` is."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
            return None
        m = _TOKEN_RE.fullmatch(token)
        if m is None:
            return None
        rec = self._records.get(m.group(1))
        if rec is None or rec.revoked is not None:
            return None
        if not hmac.compare_digest(_hash(m.group(2)).encode(), rec.hash.encode()):
            return None
        return rec


def may_act_as(rec: TokenRecord, name: str) -> bool:
    """Whether the holder of ``rec`` may send as, or receive for, ``name``."""
    if rec.revoked is not None or rec.role == "metrics":
        return False
    if rec.role == "admin":
        return True
    if rec.role == "bridge":
        return name in rec.names
    return name == rec.name


def may_use_channel(rec: TokenRecord, channel: str) -> bool:
    """Whether the holder of ``rec`` may join ``channel`` (no channels listed: all)."""
    if rec.revoked is not None or rec.role == "metrics":
        return False
    return rec.role == "admin" or not rec.channels or channel in rec.channels


def reads_all(rec: TokenRecord) -> bool:
    """Whether the holder of ``rec`` reads every event (``watch``, others' history)."""
    return rec.role == "admin" and rec.revoked is None


def party_of(rec: TokenRecord) -> list[str] | None:
    """The names whose direct events the holder of ``rec`` may read (besides every
    broadcast of its channels); None when it reads everything."""
    if reads_all(rec):
        return None
    if rec.role == "metrics":
        return []
    return [rec.name] if rec.role == "agent" else list(rec.names)


def may_scrape(rec: TokenRecord) -> bool:
    """Whether the holder of ``rec`` may read ``/metrics`` (an admin or metrics token)."""
    return rec.revoked is None and rec.role in ("admin", "metrics")


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value (None otherwise)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class Gate:
    """The hub's view of a token file: checks tokens and notices when the file changes.

    :meth:`refresh` (the hub calls it every second) re-reads the file when its
    size, mtime or inode changed, so ``wsbus token revoke`` takes effect on open
    connections without restarting the hub. A file that turns unreadable or
    invalid keeps the tokens last read (and logs why); a deleted file holds no
    tokens, so every connection is closed (fail closed).
    """

    def __init__(self, path: Path | str) -> None:
        self.store = TokenStore(path)
        self._stamp: tuple[int, int, int] | None = None
        self.store.load()  # a broken file at start is an error for the caller
        self._stamp = self._stat()

    @property
    def path(self) -> Path:
        return self.store.path

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.store.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the tokens were re-read."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        try:
            self.store.load()
        except TokenFileError as err:
            log.error("%s; keeping the tokens read before", err)
            return False
        self._stamp = stamp
        return True

    def verify(self, token: object) -> TokenRecord | None:
        """The live record of ``token``, or None."""
        return self.store.verify(token)

    def valid(self, rec: TokenRecord) -> bool:
        """Whether ``rec`` is still in the file and not revoked."""
        current = self.store.get(rec.id)
        return current is not None and current.revoked is None and current.hash == rec.hash

    def live_ids(self) -> list[str]:
        """The ids of the tokens in the file that are not revoked."""
        return [r.id for r in self.store.list() if r.revoked is None]

    def live(self) -> int:
        """How many tokens are not revoked."""
        return sum(1 for r in self.store.list() if r.revoked is None)


@functools.lru_cache(maxsize=256)  # a crowd sends the same few; ipaddress parses slowly
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def loopback_host_header(value: str | None) -> bool:
    """Whether an HTTP ``Host`` header names this machine's loopback.

    A hub without ``--auth`` listens on loopback and trusts whoever reaches it, so
    it refuses requests whose ``Host`` is a domain name: a web page that rebinds
    its own DNS name (``evil.example``) to 127.0.0.1 gets that name in ``Host``.
    Loopback names and addresses pass, and so do single-label names (the
    machine's own host name, an SSH alias), which no outside DNS serves.
    """
    if not value:
        return True  # HTTP/1.0 clients may omit it; a browser always sends it
    host = value.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if is_loopback(host):
        return True
    try:
        ipaddress.ip_address(host)
        return False  # another address: not this machine's loopback
    except ValueError:
        return "." not in host.rstrip(".") and host != ""
