"""A SQLite ledger file's failures, in words a user can act on.

SQLite's errors translated in one place, so every write path names the
file, the cause (``.reason``) and the fix the same way; and the side files
(``-wal``, ``-shm``) refused before SQLite meets them.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from limitry_local.errors import LedgerError


def explained(exc: sqlite3.Error, where: str, timeout: float) -> LedgerError:
    """A :class:`LedgerError` that says what went wrong in words a user can act on."""
    # sqlite_errorname exists from Python 3.11; the message text is the fallback.
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    # Python's sqlite3 raises this (no SQLite error code) for a text value that is
    # not UTF-8: damage, like SQLite's own.  Asked first: the message quotes the
    # damaged text, which could hold "locked" or "disk is full" and misdirect.
    if text.startswith("Could not decode to UTF-8"):
        return LedgerError(
            f"ledger {where} is corrupt: a stored text is not UTF-8 ({text}); "
            "restore it from a backup",
            "corrupt",
        )
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return LedgerError(
            f"ledger {where} is locked by another connection and stayed locked for "
            f"{timeout:g}s; wait for the other writer, or allow more time (Tracker(timeout=...); "
            "limitry-local --timeout)",
            "locked",
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return LedgerError(
            f"ledger {where} is read-only ({text}); the file and its directory must be "
            "writable, since SQLite keeps -wal and -shm files beside it",
            "read_only",
        )
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return LedgerError(
            f"{where} is not a SQLite database (or its header is damaged); "
            "point the ledger at a new file, or restore this one from a backup",
            "not_a_database",
        )
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return LedgerError(
            f"ledger {where} is corrupt ({text}); restore it from a backup", "corrupt"
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return LedgerError(
            f"cannot open ledger {where} ({text}); its directory must exist and be writable",
            "cannot_open",
        )
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return LedgerError(f"ledger {where}: the disk is full ({text})", "disk_full")
    return LedgerError(f"ledger {where}: {text}", "io")


def check_wal_files(path: Path) -> None:
    """Refuse a ledger whose ``-wal`` or ``-shm`` file SQLite could not write.

    WAL mode maps ``-shm`` into memory, and a ``-shm`` that could not be
    written was seen to end the interpreter with SIGBUS inside ``PRAGMA
    journal_mode = WAL`` (issue 20); at best the Tracker opened and failed
    at its first write.
    ``os.access`` is asked, not a trial open: it sees an immutable file
    (``chattr +i``) and a read-only mount even for root, and opening and
    closing the file here would drop the locks SQLite holds on it for
    another connection of this process.  A file that appears or changes
    after this look is SQLite's to report.
    """
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if not os.path.lexists(side):
            continue
        if not side.is_file():
            raise LedgerError(
                f"cannot open ledger {path}: {side} is not a regular file; remove it "
                "(SQLite keeps its -wal and -shm files beside the ledger)",
                "cannot_open",
            )
        if not os.access(side, os.W_OK):
            raise LedgerError(
                f"ledger {path} is read-only: {side} cannot be written; the ledger, its "
                "-wal and -shm files and its directory must be writable (permissions, "
                "chattr +i, a read-only mount)",
                "read_only",
            )
