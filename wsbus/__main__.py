"""``python -m wsbus``: the same as the ``wsbus`` command."""

from __future__ import annotations

import sys

from wsbus.cli.main import main  # type: ignore[import-not-found]

sys.exit(main())
