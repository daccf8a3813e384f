"""``agent_comms``: the tmux-agent-comms command set, through the wsbus hub.

The parser is built from the command table (:data:`TABLE`); each command runs
with a :class:`~.context.Context`. Every error is one line on stderr with an
exit status (1 failure, 2 usage, 3 hub unreachable, 4 refused, 130 Ctrl-C),
never a traceback. ``wsbus <command>`` runs the same commands (``send`` aside:
``wsbus send`` is the bus's own).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Awaitable, Sequence
from typing import Any

from wsbus import __version__

from .. import relay
from ..bridge.tmux import TmuxError
from ..common import add_client_args, client_errors
from ..exits import CliError, Exit
from ..local.registry import RegistryError
from . import COMMAND_NAMES, local, members, messaging, threads
from .context import Context
from .spec import Command

__all__ = ["TABLE", "build_parser", "main"]

DESCRIPTION = """\
agent_comms: let terminal AI agents talk to each other — through a wsbus hub, across
machines. Messages are typed into the agents' tmux panes by `wsbus bridge`; threads keep
the discussion; without a hub it delivers into local panes and spools for later.
"""

EPILOG = """\
examples:
  agent_comms send codex "what's the status of the build?"
  agent_comms post acme-web "parser merged; please review" --to grok
  agent_comms register --project acme-web --as claude --model claude-opus-4-7
  agent_comms roster acme-web
"""


def _relay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watch", action="store_true", help="keep forwarding until interrupted")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between passes with --watch"
    )
    add_client_args(p, channel=False)


def _relay(args: argparse.Namespace, ctx: Context) -> Awaitable[int]:
    return relay.run(args)


RELAY = Command(
    "relay",
    "forward spooled messages to the hub",
    "Forward the messages spooled while the hub was unreachable (what `wsbus relay` does). "
    "Repeating it stores nothing twice.",
    """\
examples:
  agent_comms relay
  agent_comms relay --watch
""",
    _relay_args,
    _relay,
)

TABLE: tuple[Command, ...] = (
    *messaging.COMMANDS,
    *threads.COMMANDS,
    *members.COMMANDS,
    *local.COMMANDS,
    RELAY,
)


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="agent_comms",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"agent_comms (wsbus {__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}
    for cmd in TABLE:
        p = sub.add_parser(
            cmd.name,
            aliases=list(cmd.aliases),
            help=cmd.help,
            description=cmd.description,
            epilog=cmd.examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.arguments(p)
        p.set_defaults(run=cmd.run)
        for name in (cmd.name, *cmd.aliases):
            commands[name] = p
    assert set(commands) == COMMAND_NAMES, "cli/comms/__init__.py COMMAND_NAMES is stale"
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


async def _finish(pending: Awaitable[Any], ctx: Context) -> Any:
    try:
        return await pending
    finally:
        await ctx.aclose()


def _execute(args: argparse.Namespace) -> int:
    ctx = Context(args)
    result = args.run(args, ctx)
    if inspect.isawaitable(result):
        result = asyncio.run(_finish(result, ctx))
    return int(result or Exit.OK)


def _fail(message: str, status: int) -> int:
    print(message, file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _build()
    words = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if at is not None and words[at] in commands:
        # options may come after the message words: post T "text" --to grok
        args = commands[words[at]].parse_intermixed_args(words[at + 1 :])
    else:
        args = parser.parse_args(words)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return Exit.USAGE
    try:
        return _execute(args)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except CliError as err:
        return _fail(err.message, err.status)
    except RegistryError as err:
        return _fail(str(err), Exit.USAGE)
    except TmuxError as err:
        return _fail(str(err), Exit.FAILURE)
    except BrokenPipeError:
        return Exit.FAILURE
    except Exception as err:
        mapped = client_errors(err)
        if mapped is not None:
            return _fail(f"agent_comms: {mapped.message}", mapped.status)
        if isinstance(err, OSError):
            return _fail(f"agent_comms: {err}", Exit.FAILURE)
        return _fail(f"agent_comms: internal error: {type(err).__name__}: {err}", Exit.FAILURE)


if __name__ == "__main__":
    sys.exit(main())
