"""Options shared by the client commands, and turning them into settings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wsbus.config import ConfigError, Settings, load_settings
from wsbus.errors import (
    BadClientSetting,
    BadHubURL,
    ConnectionLost,
    ErrorCode,
    HubUnreachable,
    SendRefused,
)
from wsbus.schema import NAME_RULE, valid_name

from .exits import CliError, Exit

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subcommands = argparse._SubParsersAction

__all__ = ["Subcommands", "add_client_args", "client_errors", "need_name", "settings_from", "warn"]


def add_client_args(p: argparse.ArgumentParser, *, channel: bool = True) -> None:
    p.add_argument("--url", help="hub websocket URL (env WSBUS_URL; default ws://127.0.0.1:8765)")
    if channel:
        p.add_argument(
            "--channel",
            "-c",
            help="channel (env WSBUS_CHANNEL or AGENT_BUS_CHANNEL; default default)",
        )
    p.add_argument(
        "--timeout", type=float, help="seconds to wait for the hub (env WSBUS_TIMEOUT; default 10)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output, one JSON per line")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    flags = {
        "url": getattr(args, "url", None),
        "channel": getattr(args, "channel", None),
        "name": getattr(args, "as_name", None),
        "timeout": getattr(args, "timeout", None),
        **extra,
    }
    try:
        settings = load_settings(flags)
    except ConfigError as err:
        raise CliError(str(err), Exit.USAGE) from None
    if settings.name is not None and not valid_name(settings.name):
        raise CliError(f"invalid name {settings.name!r}: allowed {NAME_RULE}", Exit.USAGE)
    if not valid_name(settings.channel):
        raise CliError(f"invalid channel {settings.channel!r}: allowed {NAME_RULE}", Exit.USAGE)
    return settings


def need_name(settings: Settings, what: str) -> str:
    if not settings.name:
        raise CliError(
            f"{what} needs a name: pass --as NAME or set WSBUS_NAME (or AGENT_NAME)", Exit.USAGE
        )
    return settings.name


#: what to do with a body too large for the bus
ATTACH_HINT = "; send a large file as a reference instead: wsbus send TO --attach FILE"


def warn(message: str) -> None:
    print(f"wsbus: {message}", file=sys.stderr, flush=True)


def client_errors(err: BaseException) -> CliError | None:
    """Map a client exception to the CLI's one-line error."""
    if isinstance(err, BadHubURL | BadClientSetting):
        return CliError(str(err), Exit.USAGE)
    if isinstance(err, HubUnreachable):
        hint = " (is `wsbus serve` running?)" if err.refused else ""
        return CliError(f"{err}{hint}", Exit.UNREACHABLE)
    if isinstance(err, SendRefused):
        hint = ATTACH_HINT if err.code == ErrorCode.BODY_TOO_LARGE else ""
        return CliError(f"the hub refused: {err.message} ({err.code}){hint}", Exit.REFUSED)
    if isinstance(err, ConnectionLost) and err.code in (4001, 4002):
        return CliError(f"the hub refused the connection: {err.reason}", Exit.REFUSED)
    if isinstance(err, ConnectionLost):
        return CliError(f"connection to the hub lost: {err.reason} ({err.code})", Exit.FAILURE)
    if isinstance(err, TimeoutError):
        return CliError("timed out waiting for the hub", Exit.FAILURE)
    return None


def add_grant_args(p: argparse.ArgumentParser, roles: Sequence[str], role_help: str) -> None:
    """What a new token may do: ``--role``, ``--channel`` and ``--name`` (repeatable),
    for ``wsbus token create`` and ``wsbus token invite``."""
    p.add_argument(
        "--role",
        default="agent",
        metavar="|".join(roles),  # checked by the caller: a bad role is one line, not usage
        help=role_help,
    )
    p.add_argument(
        "--channel",
        "-c",
        action="append",
        default=[],
        metavar="C",
        help="a channel the token may use (repeat; default every channel)",
    )
    p.add_argument(
        "--name",
        dest="names",
        action="append",
        default=[],
        metavar="N",
        help="for a bridge: a name it may act for (repeat)",
    )
