"""``wsbus bridge``: the bus typed into this machine's tmux panes.

- :mod:`.service`: the command and :class:`~.service.Bridge`, its connection, queues
  and per-pane workers;
- :mod:`.decisions`: which agents are served, which an event is for, the line typed,
  the resume cursor (plain synchronous code);
- :mod:`.files`: the long-message copies and thread mirrors it writes;
- :mod:`.inject`: typing one line into a pane and checking it was submitted (and the
  text sanitizing the chat and ``wsbus history`` use too);
- :mod:`.tmux`: a thin adapter over the ``tmux`` binary;
- :mod:`.filewatch`: noticing at once that the registry or a roster changed.

Nothing is imported here: the tmux-agent-comms commands and the printers use
:mod:`.inject` and :mod:`.tmux` without loading the bridge (``cli/main.py``'s table
names :mod:`.service`, which holds ``register``).
"""
