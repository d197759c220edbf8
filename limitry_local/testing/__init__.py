"""Tools for testing limit logic: a manual clock you drive instead of sleeping."""

from limitry_local.testing.clock import ManualClock

__all__ = ["ManualClock"]
