"""Tools for testing limit logic: a manual clock you drive instead of sleeping.

Hypothesis strategies live in :mod:`limitry_local.testing.strategies`
(``from limitry_local.testing import strategies as lst``); they need the
``testing`` extra, so this package does not import them.
"""

from limitry_local.testing.clock import ManualClock

__all__ = ["ManualClock"]
