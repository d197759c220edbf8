"""Writers of one SQLite file taking turns with a batched writer.

SQLite's write lock is not fair.  A writer that finds it held sleeps in
SQLite's busy handler and looks again, at last every 100 ms; a batched
writer under load commits its batch and begins the next within
microseconds, so the waiter rarely looks in that gap.  Another process's
limit change waited seconds, or failed with ``"locked"`` after its timeout,
while docs/reliability.md promised at most ``flush_ms`` (found in review).

So a writer that is about to wait says so: it holds a shared ``flock`` on
a file beside the ledger (``<ledger>-wait``) while it begins, and a batched
writer, after each commit, does not begin its next batch while anyone
holds it (up to :data:`LET_IN_SECONDS`).  Who says so: a batched writer
beginning a batch, and every durable write (limit changes, reservations),
once each; a plain ``usage()`` in normal mode does not, to keep two system
calls off every call (it waits as SQLite lets it, and its call holds the
lock for one call only, so it does not starve anyone).  Without ``flock``
(Windows) or where the file cannot be made, nobody takes turns.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LET_IN_SECONDS = 0.25
"""The longest a batched writer holds back for waiters: past SQLite's slowest look (100 ms)."""


class Turns:
    """The ``<ledger>-wait`` file of one ledger connection."""

    __slots__ = ("_fd",)

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        # A read-only directory, say: then writers do not take turns.
        with contextlib.suppress(OSError):
            if fcntl is not None:
                self._fd = _open(Path(f"{path}-wait"), os.stat(path).st_mode & 0o666)

    def waiting(self) -> bool:
        """Say this writer waits; True if it did (then :meth:`done` once it began)."""
        if self._fd is None:
            return False
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        return True

    def done(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def let_in(self) -> None:
        """Hold back, for :data:`LET_IN_SECONDS` at most, while another writer waits."""
        fd = self._fd
        if fd is None:
            return
        deadline = time.monotonic() + LET_IN_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.001)
                continue
            except OSError:
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
            return

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _open(wait: Path, mode: int) -> int:
    """The ``-wait`` file, made with the ledger's own mode, as SQLite makes ``-wal``.

    Found in review: made 0644 beside a ledger shared by several users
    (0666), it could not be opened by the others, whose writers then took no
    turns and starved again.  ``flock`` needs no write access, so a file
    this user cannot write is opened to read.
    """
    try:
        fd = os.open(wait, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        try:
            return os.open(wait, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            return os.open(wait, os.O_RDONLY | os.O_CLOEXEC)
    os.fchmod(fd, mode)  # past the umask, as the ledger's other files are
    return fd
