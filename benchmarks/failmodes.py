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

``--only postgres`` (or ``redis``) runs one half.  The PostgreSQL half starts
a cluster of its own (``initdb`` and ``pg_ctl`` on a free port, a temporary
data directory), pauses every process of it (SIGSTOP) or stops it
(``pg_ctl stop -m immediate``), and times ``usage()`` on a
``PostgresLedger`` with the breaker on and off, at the defaults (5 s lock
wait, 6 s operation timeout, 2 s connect timeout) and tuned for latency
(``timeout=0.5, operation_timeout=1``).  Each case opens its ledger while
the server is up, so its first call is one in flight when the server goes.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import redis

from limitry_local import LimitryError, Tracker
from limitry_local.postgres_ledger import PostgresLedger
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


class OwnPostgres:
    """A throwaway cluster on a free port, run as the ``postgres`` user when we are root."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="limitry-bench-pg-"))
        self.data = self.dir / "data"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        os.chmod(self.dir, 0o777)  # initdb, as postgres, writes here
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
            "-c max_connections=100"
        )
        log = str(self.dir / "log")
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-o", options, "-l", log)

    def pids(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *(int(pid) for pid in children)]

    def signal(self, pids: list[int], number: int) -> None:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, number)

    def kill(self) -> None:
        self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data))

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.signal(self.pids(), signal.SIGCONT)
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_ledger(
    server: OwnPostgres,
    *,
    calls: int,
    down: Callable[[], None],
    up: Callable[[], None],
    interval: float = INTERVAL,
    **options: float,
) -> list[float]:
    """Seconds each ``usage()`` took on a PostgresLedger opened while the server was
    up; ``down`` then pauses or kills the server, ``up`` brings it back after."""
    ledger = PostgresLedger(server.dsn, schema=f"bench_{uuid.uuid4().hex[:12]}", **options)  # type: ignore[arg-type]
    took = []
    with Tracker(ledger=ledger) as tracker:
        tracker.usage(customer_id="c", event_type="e")
        down()
        try:
            start = time.perf_counter()
            for i in range(calls):
                time.sleep(max(0.0, start + i * interval - time.perf_counter()))
                began = time.perf_counter()
                with suppress(LimitryError):
                    tracker.usage(customer_id="c", event_type="e")
                took.append(time.perf_counter() - began)
        finally:
            up()
    return took


def postgres_rows(calls: int) -> None:
    server = OwnPostgres()
    paused: list[int] = []

    def pause() -> None:
        paused[:] = server.pids()
        server.signal(paused, signal.SIGSTOP)

    def resume() -> None:
        server.signal(paused, signal.SIGCONT)

    def nothing() -> None:
        pass

    tuned = {"timeout": 0.5, "operation_timeout": 1.0}
    # Without the breaker each paused call waits a whole timeout: fewer calls.
    slow = max(5, calls // 100)
    try:
        print(
            row(
                "postgres up, breaker on",
                measure_ledger(server, calls=calls, down=nothing, up=nothing),
            )
        )
        for label, options, n in (
            ("paused, defaults, breaker on", {}, calls),
            ("paused, defaults, breaker off", {"breaker_failures": 0}, slow),
            ("paused, tuned, breaker on", tuned, calls),
            ("paused, tuned, breaker off", {**tuned, "breaker_failures": 0}, slow),
        ):
            took = measure_ledger(server, calls=n, down=pause, up=resume, **options)
            print(row(f"postgres {label}", took))
        for label, options in (
            ("killed, defaults, breaker on", {}),
            ("killed, defaults, breaker off", {"breaker_failures": 0}),
        ):
            took = measure_ledger(server, calls=calls, down=server.kill, up=server.start, **options)
            print(row(f"postgres {label}", took))
    finally:
        server.remove()


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
    parser.add_argument("--only", choices=("redis", "postgres"))
    args = parser.parse_args()
    calls = args.calls
    # Each failed-open call logs a warning: not what is measured.
    logging.getLogger("limitry_local").setLevel(logging.ERROR)
    print("| case | calls | p50 ms | p99 ms | max ms | total s |")
    print("|---|---:|---:|---:|---:|---:|")
    if args.only != "postgres":
        redis_rows(calls)
    if args.only != "redis":
        postgres_rows(calls)


def redis_rows(calls: int) -> None:
    slow = max(3, calls // 50)
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
