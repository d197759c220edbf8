"""The engine behind :class:`~limitry_local.Tracker`: what a call does, module by module.

- :mod:`.clock`: the time a call reads once (wall time, bucket time);
- :mod:`.rules`: the limits compiled into a plan once per definitions
  version, the mode policy and the one rule for "exceeded";
- :mod:`.definitions`: quotas, rate limits and alerts, cached, refreshed
  from the ledger, created, changed and deleted;
- :mod:`.admission`: the decision, all or nothing;
- :mod:`.responses`: the 201 and 429 answers and the rows stored;
- :mod:`.core`: :class:`Engine`, the lock and every call on the state.

Nothing here is public API: the Tracker and its resources are.
"""

from limitry_local.engine.core import Engine

__all__ = ["Engine"]
