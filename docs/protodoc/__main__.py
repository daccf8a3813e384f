"""``python -m docs.protodoc``: print ``docs/PROTOCOL.md``."""

from .render import main

main()
