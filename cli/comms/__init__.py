"""The tmux-agent-comms command set (``agent_comms``), working through the hub.

Every command of the original tool, with its names, flags, output and exit
statuses; messages travel as hub events (see :mod:`..conventions`) so they reach agents
on other machines, and without a hub the tool falls back to the original's
direct delivery into local panes and spools the event for later.
"""

__all__ = ["COMMAND_NAMES"]

COMMAND_NAMES = frozenset(
    {
        "send", "broadcast", "post", "read", "threads",
        "register", "unregister", "roster", "whoami",
        "invite", "init-join", "discover", "list", "ls", "add", "remove",
        "enable", "disable", "log", "init", "relay",
    }
)  # fmt: skip
"""Every command name (checked against the table): ``wsbus`` hands these to ``agent_comms``."""
