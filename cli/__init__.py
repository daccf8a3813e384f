"""The ``wsbus`` command line (installed as the ``wsbus.cli`` package)."""
