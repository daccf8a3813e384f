"""``wsbus mcp``: the bus as tools for an MCP-capable coding agent (stdio).

The agent's MCP client starts this command and speaks MCP on its stdin/stdout; the
command holds one connection to the hub as NAME. Set-up per coding agent is in
docs/AGENTS.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..common import Subcommands, settings_from
from ..exits import CliError, Exit

__all__ = ["MCP_EXTRA", "register", "run"]

#: how to install what ``wsbus mcp`` needs
MCP_EXTRA = "pip install 'wsbus[mcp]'"

EXAMPLES = """\
examples:
  claude mcp add wsbus -- wsbus mcp --as claude          # register with Claude Code
  wsbus mcp --as codex --channel backend                 # what an MCP client runs
  WSBUS_TOKEN=… wsbus mcp --url wss://hub.example:8765   # the name the token vouches for
  claude mcp add wsbus -- wsbus mcp --as claude --push   # also push mail to Claude Code

tools: send, post, inbox, wait, read_thread, threads, roster, history, receipts,
  reserve, release, reservations, whoami
(`wait` blocks until a message arrives: call it in a loop to listen)
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "mcp",
        help="serve the bus as MCP tools to a coding agent (stdio)",
        description=(
            "An MCP server over stdio for one agent: messages (send, post, inbox, wait, "
            "threads, history, receipts), peers (roster, whoami) and file leases (reserve, "
            "release, reservations) as tools, on one connection to the hub that "
            "reconnects and resumes. Starts before the hub does (tools say 'not "
            "connected' until it answers). Logs go to stderr."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="the agent's name (env WSBUS_NAME; with WSBUS_TOKEN: the token's name)",
    )
    p.add_argument("--channel", "-c", help="channel (env WSBUS_CHANNEL; default default)")
    p.add_argument(
        "--url", help="hub websocket URL(s) (env WSBUS_URL; default ws://127.0.0.1:8765)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds per connection attempt (env WSBUS_TIMEOUT; default 10)",
    )
    p.add_argument("--model", help="the agent's model, shown in rosters")
    p.add_argument("--role", help="the agent's role, shown in rosters")
    p.add_argument(
        "--push",
        action="store_true",
        help="declare Claude Code's experimental claude/channel capability and push each "
        "message for this agent as a channel notification (research preview; `wait` is "
        "the portable way)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level",
    )
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        from .server import serve
    except ImportError as err:
        if err.name is None or err.name.partition(".")[0] not in ("mcp", "mcp_types", "pydantic"):
            raise
        raise CliError(
            f"wsbus mcp needs the MCP SDK, which is not installed: {MCP_EXTRA}", Exit.USAGE
        ) from None
    import socket

    from .agent import Agent

    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="wsbus mcp: %(levelname)s %(message)s",
    )
    agent = Agent(
        settings.urls(),
        settings.name,
        settings.channel,
        access=settings.access(),
        model=args.model,
        role=args.role,
        host=socket.gethostname(),
        open_timeout=settings.timeout,
    )
    await serve(agent, push=args.push)
    return Exit.OK
