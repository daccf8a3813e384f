"""Benchmarks: the wsbus hub against a bare ``websockets`` broadcast server.

``python -m bench`` starts a hub subprocess (and a second one with ``--fsync``),
a bare broadcast server (:mod:`bench.bare_server`: no durability, no routing)
and subscriber worker processes (:mod:`bench.workers`), runs every scenario of
:mod:`bench.scenarios` against both servers in the same run, prints a markdown
table and writes ``bench/results/latest.json``. ``--quick`` is a smoke test.
"""

from __future__ import annotations
