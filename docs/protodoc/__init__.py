"""Generate ``docs/PROTOCOL.md`` from the wire schema: ``python -m docs.protodoc``
from the repository's root (``make docs``).

Not part of the installed package. The frame sections (op tag, docstring, field
table, example), the error and close code tables and the limits come from
:mod:`wsbus.schema`, :mod:`wsbus.errors`, :class:`wsbus.hubconfig.HubConfig` and
:class:`wsbus.config.Settings` (:mod:`.render`); only the prose and the notes
(:mod:`.prose`) and the examples (:mod:`.examples`) are written by hand.
``tests/test_protodoc.py`` fails when the committed file differs from the output
(run ``make docs``).
"""

from __future__ import annotations

from .examples import EXAMPLES
from .render import client_frames, field_table, hub_frames, main, render

__all__ = ["EXAMPLES", "client_frames", "field_table", "hub_frames", "main", "render"]
