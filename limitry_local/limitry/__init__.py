"""The hosted Limitry 1.0 API in process: ``from limitry_local.limitry import Limitry``.

The ``limitry`` SDK 1.0's client, names and answers, on the Tracker's
engine and ledger: limits on a subject kind or one subject, per action;
windows from a minute to a year (``every`` N of them, from the calendar, a
billing date or first use), rolling windows, ``total`` balances with
credits and ``concurrent`` slots; checks that consume, preview or
reserve; reservations that commit, release, extend and expire; subjects'
billing dates and resets; usage history and standing.  What the SDK leaves
open, and how this answers it: docs/limitry-1.0.md.

- :mod:`.limits`: a limit's fields, defaults and sentence;
- :mod:`.counting`: which limits apply and the counters each reads;
- :mod:`.state`: the documents on the ledger and the one write path;
- :mod:`.checks`: a check and its reservations, all or nothing;
- :mod:`.admin`: limits, sync, credits, subjects and usage;
- :mod:`.face`: :class:`Limitry`, the SDK's shape.
"""

from limitry_local.errors import ApiError, LimitReached
from limitry_local.limitry.face import Limitry, Reservation

__all__ = ["ApiError", "LimitReached", "Limitry", "Reservation"]
