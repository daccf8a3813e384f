"""Exit statuses of every ``wsbus`` command."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CliError", "Exit"]


class Exit(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    UNREACHABLE = 3
    REFUSED = 4
    INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one line on stderr with an exit status."""

    def __init__(self, message: str, status: Exit = Exit.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
