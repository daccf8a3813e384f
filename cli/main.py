"""``wsbus``: the command line. One module per command; the parser is built here."""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import NoReturn

from wsbus import __version__

from . import (
    bridge,
    chat,
    history,
    inbox,
    join,
    listen,
    relay,
    send,
    serve,
    show,
    token,
    updown,
    verify,
)
from .common import client_errors
from .comms import COMMAND_NAMES as COMMS_COMMANDS
from .exits import CliError, Exit

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (
    serve.register,
    send.register,
    listen.register,
    chat.register,
    history.register,
    show.register,
    verify.register,
    inbox.register,
    bridge.register,
    relay.register,
    updown.register_up,
    updown.register_down,
    token.register,
    join.register,
)

DESCRIPTION = """\
wsbus: a realtime event bus for AI coding agents and the people who run them.

Start a hub with `wsbus serve`, then send and listen from any shell or agent.
"""

EPILOG = f"""\
the tmux-agent-comms commands (also as `agent_comms COMMAND`; `wsbus COMMAND --help`):
{textwrap.fill(", ".join(sorted(COMMS_COMMANDS)), 88, initial_indent="  ", subsequent_indent="  ")}

examples:
  wsbus serve                              # hub on ws://127.0.0.1:8765, SQLite store
  WSBUS_NAME=alice wsbus send bob "hi"     # durable send, prints seq and time
  wsbus listen bob                         # agent-bus style blocks, resumes after restarts
"""


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr that points to ``--help`` (exit 2), like
    every other error of the command; subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"wsbus: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser: argparse.ArgumentParser = OneLineParser(
        prog="wsbus",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wsbus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {}
    for add in COMMANDS:
        p = add(sub)
        commands[p.prog.split()[-1]] = p
    return parser, commands


def _loop_factory(args: argparse.Namespace) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the hub when it is installed (a dependency except on Windows)."""
    if not getattr(args, "fast_loop", False):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _build()
    words = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if at is not None and words[at] not in commands and words[at] in COMMS_COMMANDS:
        from .comms.main import main as comms_main  # the tmux-agent-comms command set

        return comms_main(words)
    if at is not None and words[at] in commands:
        # options may follow positional words: wsbus send bob --thread t "text"
        command = commands[words[at]]
        if command._subparsers is not None:  # intermixed parsing cannot nest subcommands
            args = command.parse_args(words[at + 1 :])
        else:
            args = command.parse_intermixed_args(words[at + 1 :])
    else:
        args = parser.parse_args(words)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return Exit.USAGE
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args)) as runner:
            result = runner.run(args.func(args))
        return int(result or Exit.OK)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except CliError as err:
        print(f"wsbus: {err.message}", file=sys.stderr)
        return err.status
    except BrokenPipeError:
        return Exit.FAILURE
    except Exception as err:
        mapped = client_errors(err)
        if mapped is None:
            raise
        print(f"wsbus: {mapped.message}", file=sys.stderr)
        return mapped.status


if __name__ == "__main__":
    sys.exit(main())
