"""``python -m benchmarks``: every workload, one process, one markdown table."""

from benchmarks.suite import main

main()
