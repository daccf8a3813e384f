"""The command table's row type, and the options several commands share."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "Command",
    "Handler",
    "add_from",
    "add_hub",
    "add_quiet",
    "add_wait",
]

Handler = Callable[[argparse.Namespace, "Context"], "int | Awaitable[int]"]


class Command(NamedTuple):
    """One ``agent_comms`` command: its parser is built from this row."""

    name: str
    help: str
    description: str
    examples: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler
    aliases: tuple[str, ...] = ()


def add_from(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="frm",
        metavar="NAME",
        default=None,
        help="sender name (default: WSBUS_NAME, AGENT_COMMS_SELF, your tmux session's agent)",
    )


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def add_hub(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="hub websocket URL (env WSBUS_URL; default ws://127.0.0.1:8765)")


def add_wait(p: argparse.ArgumentParser, default: float = 30.0) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=default,
        metavar="SECONDS",
        help=f"how long to wait for delivery receipts (default {default:g})",
    )
