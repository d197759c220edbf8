"""SQLite's errors, in words a user can act on: what a :class:`LedgerError` of a file says.

One place for the translation, so every write path of the SQLite ledger
names the file, the cause (``.reason``) and the fix the same way.
"""

from __future__ import annotations

import sqlite3

from limitry_local.errors import LedgerError


def explained(exc: sqlite3.Error, where: str, timeout: float) -> LedgerError:
    """A :class:`LedgerError` that says what went wrong in words a user can act on."""
    # sqlite_errorname exists from Python 3.11; the message text is the fallback.
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
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
