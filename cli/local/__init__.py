"""The tmux-agent-comms files on this machine, in the original tool's formats.

- :mod:`.paths`: where they live (the original's environment variables) and its
  tunables; the private-directory and atomic-write helpers;
- :mod:`.registry`: ``registry.json`` and the project rosters;
- :mod:`.spool`: events that could not reach the hub, waiting for the relay;
- :mod:`.audit`: the audit log (``comms.log``);
- :mod:`.threadfiles`: thread markdown files, rendered and mirrored.

No network code lives here; nothing is imported here.
"""
