"""The identifiers this library mints: ``evt_...``, ``qta_...``, ``rl_...`` and the rest.

An id is the prefix, an underscore and 32 hex digits: the wall clock in
unix milliseconds (12 digits, as UUIDv7 lays it out), then 80 random bits.
So ids minted on one host sort by when they were minted, to the
millisecond.  That order is ours: the hosted API promises only the prefixes.

Why time first: every ledger keeps a unique index on event ids.  Random
ids land on random pages of that index, so once the ledger outgrows the
page cache each insert dirties a page that is likely cold; ids that grow
land on its last pages.  On a file ledger of 1M events, one event insert
and commit took about 30% less time, one ``usage()`` about 20% less
(docs/benchmarks.md, "Event ids").

Why the wall clock, not the Tracker's clock: a test's frozen or replayed
clock would put every id in one millisecond, leaving only the random bits
to tell them apart.  Those 80 bits make two ids of one millisecond collide
with probability 2**-80: at 100 ids every millisecond for a year, about
one chance in 10**10 that any two collide.  A wall clock that steps back
costs only the order.
"""

from __future__ import annotations

import os
import random
import time

_MAX_MILLIS = 16**12
"""12 hex digits of milliseconds last until the year 10889."""

# A generator of our own, seeded from os.urandom: an application that calls
# random.seed() cannot make two processes mint the same ids.  Half the cost
# of os.urandom(10).hex() a call, and ids are names, not secrets.
_generator = random.Random()
_random_bits = _generator.getrandbits
# A forked child starts with a copy of the parent's state: reseed it, or
# parent and child would mint the same ids in the same millisecond.
os.register_at_fork(after_in_child=_generator.seed)


def new_id(prefix: str, millis: int | None = None) -> str:
    """A fresh id: ``new_id("evt")`` -> ``"evt_019ac3f2b7e1"`` + 20 random hex digits.

    ``millis`` (unix milliseconds) stands in for the clock: for tools that
    write events of the past, such as the benchmarks.
    """
    if millis is None:
        millis = time.time_ns() // 1_000_000
    elif not 0 <= millis < _MAX_MILLIS:
        raise ValueError(f"millis must be 0 to {_MAX_MILLIS - 1}, got {millis}")
    return f"{prefix}_{millis << 80 | _random_bits(80):032x}"
