"""Latency of ``usage()`` while the rate store is down: with and without the circuit breaker.

``python -m benchmarks.failmodes`` starts a ``redis-server`` of its own on a
free port (never the machine's shared one), then for each case calls
``usage()`` back to back on the system clock and prints p50 / p99 / max in
milliseconds.  Cases: Redis killed (connections refused) and Redis paused
(SIGSTOP: connections accepted, nothing answers), a fail-closed and a
fail-open limit, the breaker on (``RedisBuckets`` defaults: 0.5 s timeout,
open after 3 failures for 5 s) and off (``breaker_failures=0``), and 0.2's
settings (5 s timeout, no breaker) for scale.  docs/reliability.md keeps
the figures.  Calls start every 10 ms; ``--calls N`` sets the calls per
case with the breaker on (default 1000: 10 s, two cool-downs); without it
every paused call waits the timeout, so those cases make a fiftieth.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis

from limitry_local import LimitryError, Tracker
from limitry_local.redis_buckets import RedisBuckets

INTERVAL = 0.01


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        client.close()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()


def measure(
    url: str,
    *,
    fail_mode: str,
    calls: int,
    timeout: float,
    breaker_failures: int,
    interval: float = INTERVAL,
) -> list[float]:
    """Seconds each ``usage()`` took (admitted or refused), the store being down already.

    Calls start every ``interval`` seconds (at once when behind), as a
    service's requests would, so a long run spans several cool-downs.
    """
    store = RedisBuckets(
        url, prefix=f"bench:{uuid.uuid4().hex}:", timeout=timeout, breaker_failures=breaker_failures
    )
    took = []
    with Tracker(rate_limits=store) as tracker:
        tracker.rate_limits.create(
            name="rpm", limit_value=10**9, window="minute", fail_mode=fail_mode
        )
        start = time.perf_counter()
        for i in range(calls):
            time.sleep(max(0.0, start + i * interval - time.perf_counter()))
            began = time.perf_counter()
            with suppress(LimitryError):
                tracker.usage(customer_id="c", event_type="e")
            took.append(time.perf_counter() - began)
    return took


def row(case: str, took: list[float]) -> str:
    ms = sorted(t * 1000 for t in took)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return (
        f"| {case} | {len(ms)} | {statistics.median(ms):.2f} | {p99:.2f} | {ms[-1]:.2f} "
        f"| {sum(ms) / 1000:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    calls = parser.parse_args().calls
    slow = max(3, calls // 50)
    # Each failed-open call logs a warning: not what is measured.
    logging.getLogger("limitry_local").setLevel(logging.ERROR)
    print("| case | calls | p50 ms | p99 ms | max ms | total s |")
    print("|---|---:|---:|---:|---:|---:|")
    with own_redis() as (url, process):
        # Warm: a healthy call, for the reference row.
        print(
            row(
                "up, breaker on",
                measure(url, fail_mode="closed", calls=calls, timeout=0.5, breaker_failures=3),
            )
        )
        os.kill(process.pid, signal.SIGSTOP)
        for fail_mode in ("closed", "open"):
            print(
                row(
                    f"paused, {fail_mode}, breaker on",
                    measure(url, fail_mode=fail_mode, calls=calls, timeout=0.5, breaker_failures=3),
                )
            )
            print(
                row(
                    f"paused, {fail_mode}, breaker off",
                    measure(url, fail_mode=fail_mode, calls=slow, timeout=0.5, breaker_failures=0),
                )
            )
        print(
            row(
                "paused, closed, 0.2 settings (5 s, no breaker)",
                measure(url, fail_mode="closed", calls=3, timeout=5.0, breaker_failures=0),
            )
        )
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait()
        for fail_mode in ("closed", "open"):
            for failures, label in ((3, "on"), (0, "off")):
                print(
                    row(
                        f"killed, {fail_mode}, breaker {label}",
                        measure(
                            url,
                            fail_mode=fail_mode,
                            calls=calls,
                            timeout=0.5,
                            breaker_failures=failures,
                        ),
                    )
                )


if __name__ == "__main__":
    main()
