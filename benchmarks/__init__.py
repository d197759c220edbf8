"""limitry_local's benchmarks: ``python -m benchmarks`` runs the suite (:mod:`benchmarks.suite`).

``quota_check.py`` and ``bucket_memory.py`` also run on their own as scripts.
"""
