"""``wsbus chat``: the terminal chat for the people on the bus.

- :mod:`.app`: the command (its parser, ``run``) and :class:`~.app.ChatApp`, the
  terminal side: the prompt, printing above it, carrying out what a line means;
- :mod:`.link`: the connection to the hub and what arrives over it (events, presence,
  receipts, the cursor), sends in flight;
- :mod:`.commands`: what a typed line means (pure);
- :mod:`.prompt`: completion, keys and input history (prompt_toolkit);
- :mod:`.view`: how events, receipts, presence and the toolbar look (pure).

Nothing is imported here: ``wsbus --help`` and the pure modules stay light
(``cli/main.py``'s table names :mod:`.app`, which holds ``register``).
"""
