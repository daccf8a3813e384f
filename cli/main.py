"""``wsbus``: the command line. One module per command; the parser is built here.

Start-up is kept short (agents call ``wsbus send`` in loops): the top-level parser
is built from :data:`COMMANDS` without importing the command modules, and only the
chosen command's module is imported, then its parser built and run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from wsbus import __version__

from .comms import COMMAND_NAMES as COMMS_COMMANDS
from .exits import CliError, Exit

if TYPE_CHECKING:
    import asyncio

__all__ = ["COMMANDS", "build_parser", "load_command", "main"]

#: command -> ("module[:register function]", its help line in ``wsbus --help``); the
#: function (default ``register``) adds the command's parser and returns it. A test
#: checks each help line is the one the module gives ``add_parser``.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "run the hub"),
    "status": ("status", "the hub's health, connections and mail waiting for a receipt"),
    "send": ("send", "send a message (durable; prints seq and time)"),
    "listen": ("listen", "print messages for a name as they arrive"),
    "chat": ("chat.app", "a terminal chat for people: follow and steer the agents"),
    "history": ("history", "print stored events"),
    "show": ("show", "print one stored event by its seq"),
    "verify": ("verify", "check a file against an attachment reference (sha256, size)"),
    "inbox": ("inbox", "print an agent's direct messages (unread ones with --unread)"),
    "bridge": ("bridge.service", "type bus messages into this machine's tmux agents"),
    "relay": ("relay", "forward spooled messages to the hub"),
    "up": ("updown:register_up", "start a local hub and bridge in the background"),
    "down": ("updown:register_down", "stop the hub and bridge started by `wsbus up`"),
    "token": ("token", "create, list and revoke the tokens agents authenticate with"),
    "join": (
        "join",
        "join a hub shared with `wsbus serve --share` (code from `wsbus token invite`)",
    ),
    "migrate": ("migrate", "move a hub's SQLite bus onto NATS JetStream (many hubs)"),
    "mcp": ("mcp.command", "serve the bus as MCP tools to a coding agent (stdio)"),
    "reserve": (
        "leases:register_reserve",
        "lease files (paths or globs) so other agents know you edit them",
    ),
    "release": ("leases:register_release", "end your file leases (all, by path, or by id)"),
    "reservations": ("leases:register_reservations", "list the file leases in force"),
    "hook": ("hook", "git hooks that respect file leases (pre-commit)"),
}

DESCRIPTION = """\
wsbus: a realtime event bus for AI coding agents and the people who run them.

Start a hub with `wsbus serve`, then send and listen from any shell or agent.
"""

EXAMPLES = """\
examples:
  wsbus serve                              # hub on ws://127.0.0.1:8765, SQLite store
  WSBUS_NAME=alice wsbus send bob "hi"     # durable send, prints seq and time
  wsbus listen bob                         # agent-bus style blocks, resumes after restarts
"""


def epilog() -> str:
    """The end of ``wsbus --help``: the tmux-agent-comms commands, examples."""
    import textwrap

    names = textwrap.fill(
        ", ".join(sorted(COMMS_COMMANDS)), 88, initial_indent="  ", subsequent_indent="  "
    )
    return (
        "the tmux-agent-comms commands (also as `agent_comms COMMAND`; "
        f"`wsbus COMMAND --help`):\n{names}\n\n{EXAMPLES}"
    )


Register = Callable[[Any], argparse.ArgumentParser]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr that points to ``--help`` (exit 2), like
    every other error of the command; subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"wsbus: {message} (see `{self.prog} --help`)\n")


def load_command(name: str) -> Register:
    """The function that adds command ``name``'s parser (its module imported now)."""
    target = COMMANDS[name][0]
    module, _, function = target.partition(":")
    add: Register = getattr(
        importlib.import_module(f".{module}", __package__), function or "register"
    )
    return add


def _top(
    help_text: bool = True,
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[Any]]:
    """The ``wsbus`` parser and its subcommands (``help_text``: with the epilog, which
    a command's own parser never shows)."""
    parser = OneLineParser(
        prog="wsbus",
        description=DESCRIPTION,
        epilog=epilog() if help_text else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wsbus {__version__}")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def build_parser() -> argparse.ArgumentParser:
    """The whole parser, every command's module imported (tests and docs)."""
    parser, sub = _top()
    for name in COMMANDS:
        load_command(name)(sub)
    return parser


def _listing() -> argparse.ArgumentParser:
    """The top-level parser for ``wsbus --help`` and errors: every command with its help
    line, none of their modules imported."""
    parser, sub = _top()
    for name, (_, help_line) in COMMANDS.items():
        sub.add_parser(name, help=help_line, add_help=False)
    return parser


def _command(name: str) -> argparse.ArgumentParser:
    """Command ``name``'s own parser (prog ``wsbus NAME``), its module imported."""
    _, sub = _top(help_text=False)
    return load_command(name)(sub)


def _loop_factory(args: argparse.Namespace) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the hub when it is installed (a dependency except on Windows)."""
    if not getattr(args, "fast_loop", False):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(args: argparse.Namespace) -> int:
    """Run the command: a plain function's result, or a coroutine on an event loop
    (asyncio is imported only for the commands that need it)."""
    result = args.func(args)
    if hasattr(result, "__await__"):
        import asyncio

        with asyncio.Runner(loop_factory=_loop_factory(args)) as runner:
            result = runner.run(result)
    return int(result or Exit.OK)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if at is not None and words[at] not in COMMANDS and words[at] in COMMS_COMMANDS:
        from .comms.main import main as comms_main  # the tmux-agent-comms command set

        return comms_main(words)
    if at is not None and words[at] in COMMANDS:
        # options may follow positional words: wsbus send bob --thread t "text"
        command = _command(words[at])
        if command._subparsers is not None:  # intermixed parsing cannot nest subcommands
            args = command.parse_args(words[at + 1 :])
        else:
            args = command.parse_intermixed_args(words[at + 1 :])
    else:
        parser = _listing()
        args = parser.parse_args(words)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return Exit.USAGE
    try:
        return _run(args)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except CliError as err:
        print(f"wsbus: {err.message}", file=sys.stderr)
        return err.status
    except BrokenPipeError:
        return Exit.FAILURE
    except Exception as err:
        from .common import client_errors

        mapped = client_errors(err)
        if mapped is None:
            raise
        print(f"wsbus: {mapped.message}", file=sys.stderr)
        return mapped.status


if __name__ == "__main__":
    sys.exit(main())
