"""``python -m wsbus``: the same as the ``wsbus`` command."""

from __future__ import annotations

import sys

from wsbus.cli.main import main

sys.exit(main())
