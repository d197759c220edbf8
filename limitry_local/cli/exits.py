"""The exit codes of ``limitry-local``, and the error that carries one.

Scripts branch on these numbers, so they are part of the command's contract
(docs/cli.md lists them); a new failure gets a new number, never an old one.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    DENIED = 1
    """``check``: a rate limit or a quota would deny an event with these dimensions."""
    USAGE = 2
    """Bad arguments, an unreadable or invalid file, a field the library refuses."""
    LEDGER = 3
    """The ledger file is missing (for a command that only reads), locked, read-only or corrupt."""
    MISSING_EXTRA = 4
    """rich or pyyaml is not installed: ``pip install 'limitry_local[cli]'``."""
    PIPE_CLOSED = 141
    """Whoever read stdout stopped early (``| head``), as a shell reports SIGPIPE."""
    INTERNAL = 70
    """A bug in the command (sysexits' EX_SOFTWARE); the traceback is printed."""


class CliError(Exception):
    """An expected failure: printed as one line on stderr, no traceback."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code
