"""``wsbus serve --share``: auth and TLS from the hub's own CA, in one flag.

The hub's side of joining machines: the token file is created when missing, the CA
and the hub certificate are made (``wsbus.tls``), and once the hub listens it
writes where it is reached (``share/hub.json``) for ``wsbus token invite``.

The hub's own machine is joined at once: unless the user's config already holds a
token of this hub (or of another one, which is left alone), an admin token named
after the user is created and the config gets the hub's loopback URL, the token
and the CA, so local clients keep working now that tokens are required. An admin
token adds no power here: whoever runs the hub can read its database anyway.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from wsbus.auth import AuthError, TokenFileError, TokenStore, default_auth_path, is_loopback
from wsbus.config import Settings, config_path, data_dir
from wsbus.invite import HubInfo, write_hub_info
from wsbus.schema import valid_name
from wsbus.tls import SharePaths, ShareTLSError, default_names, ensure_hub_cert, fingerprint

from .exits import CliError, Exit
from .userconfig import configured, save_config

__all__ = ["Shared", "prepare", "publish", "share_paths"]


def share_paths() -> SharePaths:
    """The CA, the hub certificate and ``hub.json``: ``<data dir>/share``."""
    return SharePaths(data_dir() / "share")


@dataclass(frozen=True)
class Shared:
    paths: SharePaths
    ca_pem: bytes
    names: list[str]
    #: what to set in this machine's config once the hub listens (its url comes then)
    local: dict[str, str]
    #: a line saying how this machine's clients reach the hub
    local_note: str


def prepare(settings: Settings) -> tuple[Settings, Shared | None]:
    """With ``share``: the settings with auth and TLS filled in, and what to serve."""
    if not settings.share:
        return settings, None
    if settings.tls_cert or settings.tls_key:
        raise CliError(
            "--share makes its own certificate: drop --tls-cert/--tls-key, or drop --share "
            "and hand out tokens with `wsbus token create`",
            Exit.USAGE,
        )
    auth = Path(settings.auth).expanduser() if settings.auth else default_auth_path()
    if not auth.exists():
        try:
            TokenStore(auth).save()  # an empty file: tokens come from `wsbus token invite`
        except TokenFileError as err:
            raise CliError(str(err)) from None
    names = settings.advertise or default_names()
    paths = share_paths()
    try:
        cert, key = ensure_hub_cert(paths, names)
        ca_pem = paths.ca_cert.read_bytes()
    except (ShareTLSError, OSError) as err:
        raise CliError(str(err)) from None
    local, note = _local_access(auth, paths)
    shared = msgspec.structs.replace(settings, auth=str(auth), tls_cert=str(cert), tls_key=str(key))
    return shared, Shared(paths, ca_pem, names, local, note)


def _local_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return user if valid_name(user) else "owner"


def _local_access(auth: Path, paths: SharePaths) -> tuple[dict[str, str], str]:
    """This machine's client settings: the config's token when this hub issued it,
    else (no token there yet) a new admin token."""
    config = config_path()
    current = configured(config, "token")
    try:
        store = TokenStore(auth).load()
        if current is not None:
            rec = store.verify(current)
            if rec is None:
                return {}, (
                    f"the token in {config} is not one of this hub's: local clients use it "
                    "(to use this hub here: wsbus token invite NAME, then wsbus join CODE)"
                )
            return {"ca_file": str(paths.ca_cert)}, (
                f"local clients use the token for {rec.name!r} in {config}"
            )
        name = _local_name()
        token = store.create(name, role="admin")
    except (TokenFileError, AuthError) as err:
        raise CliError(str(err)) from None
    return {"token": token, "ca_file": str(paths.ca_cert)}, (
        f"local clients use a new admin token for {name!r}, saved in {config} "
        f"(revoke: wsbus token revoke {name})"
    )


def _url(name: str, port: int) -> str:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return f"wss://{name}:{port}"
    return f"wss://[{ip}]:{port}" if ip.version == 6 else f"wss://{ip}:{port}"


def _loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def publish(shared: Shared, settings: Settings, port: int) -> HubInfo:
    """Write ``hub.json``: the URLs an invite carries (other machines' first, this
    machine's loopback last), the CA's fingerprint and the token file."""
    names = shared.names
    if is_loopback(settings.listen_host()):  # nobody else can reach it
        names = [n for n in names if _loopback(n)] or ["127.0.0.1"]
    ordered = [n for n in names if not _loopback(n)] + [n for n in names if _loopback(n)]
    info = HubInfo(
        urls=[_url(n, port) for n in ordered],
        ca_sha256=fingerprint(shared.ca_pem),
        auth=str(settings.auth),
        pid=os.getpid(),
    )
    try:
        write_hub_info(shared.paths.hub_info, info)
    except OSError as err:
        raise CliError(f"cannot write {shared.paths.hub_info}: {err.strerror or err}") from None
    if shared.local:
        save_config(config_path(), {"url": f"wss://127.0.0.1:{port}", **shared.local})
    return info
