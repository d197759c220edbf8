"""Workload h: ``POST /v1/track`` over HTTP, beside a bare Starlette endpoint on the same server.

The server is a separate process (``python -m benchmarks.http_api PORT DB
DURABILITY``): the app ``limitry-local serve`` runs
(:func:`limitry_local.server.create_app` on a file ledger), under uvicorn as
the command configures it (one worker, no access log), plus one extra route,
``POST /floor/track``:
a bare Starlette endpoint that reads the body and answers the same 201 JSON
and headers, precomputed.  The floor is what the HTTP stack alone costs, so
``/v1/track`` over it is the share the API adds.  And ``POST /floor/contract``:
the contract's least work over HTTP, as ``/v1/track`` does it but with
workload b1's contract floor (:class:`benchmarks.floors.ContractFloor` on raw
``sqlite3``, one commit per event, on the ledger's schema in a file of its
own) in place of ``usage()``.  A share of the floor that ``/v1/track`` cannot
reach unless it beats that row.

The load generator is this process: keep-alive HTTP/1.1 over raw sockets
with prebuilt request bytes, so the client costs microseconds and both rows
pay it alike.  Each worker thread has its own connection.

``python -m benchmarks.http_api cpu [ROUNDS [BURST [DURABILITY]]]`` measures
the same two routes by the server process's CPU time per request instead of
the wall clock: bursts of each, interleaved on one server, with the CPU the
server's threads used read from ``/proc`` around every burst.  Other work on
the machine slows the wall-clock rows unevenly (a row runs while the load
lasts); CPU time per request moves far less with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from limitry_local.ledger import Durability

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from benchmarks.floors import ContractFloor

FLOOR_PATH = "/floor/track"
CONTRACT_PATH = "/floor/contract"
TRACK_PATH = "/v1/track"
CHECK_PATH = "/v1/checks"
"""Limitry 1.0's check (workload j), on the same server: one day limit on every user."""
STARTUP_SECONDS = 60.0
_CREATED = 201


def _event(customer: str) -> bytes:
    """The event every row sends, as workload b sends it to ``usage()``."""
    return json.dumps(
        {
            "customerId": customer,
            "eventType": "model_call",
            "model": "gpt-4o",
            "inputTokens": 100,
            "outputTokens": 20,
        },
        separators=(",", ":"),
    ).encode()


def check_body(customer: str) -> bytes:
    """The 1.0 check workload j sends: the customer as a user, one unit."""
    return json.dumps(
        {"subject": {"kind": "user", "id": customer}, "action": "chat", "cost": 1},
        separators=(",", ":"),
    ).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and returns the status."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending = b""

    def request(self, raw: bytes) -> int:
        self._sock.sendall(raw)
        data = self._pending
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self._pending = rest[length:]
        return int(head[9:12])

    def _recv(self) -> bytes:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self._sock.close()


def post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Load:
    """``op(customer)`` POSTs the customer's event to ``path``, on this thread's connection."""

    def __init__(
        self,
        port: int,
        path: str,
        customers: list[str],
        body: Callable[[str], bytes] = _event,
    ) -> None:
        self._port = port
        self._requests = {customer: post(path, body(customer)) for customer in customers}
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()

    def op(self, customer: str) -> object:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = Connection(self._port)
            with self._lock:
                self._connections.append(connection)
        return connection.request(self._requests[customer])

    def close(self) -> None:
        for connection in self._connections:
            connection.close()


class Server:
    """The server process: started on a free port, stopped with SIGTERM."""

    def __init__(self, db: Path, durability: Durability = "normal") -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.http_api", str(self.port), str(db), durability],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the bench server exited with {self._process.returncode}")
            try:
                probe_connection = Connection(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the bench server did not start") from None
                time.sleep(0.05)
                continue
            probe_connection.close()
            return

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def serve(port: int, db: Path, durability: Durability) -> None:
    """The server half: the served app, one rate limit and one quota per customer, a
    Limitry 1.0 day limit on every user, the bare floor and the contract floor."""
    # Imported here: the load generator's process needs none of it.
    import uvicorn  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    from benchmarks.floors import ContractFloor  # noqa: PLC0415
    from benchmarks.suite import QUOTA_LIMIT, RATE_LIMIT, ledger_floor  # noqa: PLC0415
    from limitry_local import Tracker  # noqa: PLC0415
    from limitry_local.limitry import Limitry  # noqa: PLC0415
    from limitry_local.server import create_app  # noqa: PLC0415

    tracker = Tracker(db, durability=durability)
    tracker.rate_limits.create(
        name="rpm", limit_value=RATE_LIMIT, window="minute", per=["customer_id"]
    )
    tracker.quotas.create(
        name="daily tokens",
        metric="total_tokens",
        limit_value=QUOTA_LIMIT,
        period="day",
        per=["customer_id"],
    )
    Limitry(tracker).limits.create(subject={"kind": "user"}, amount=QUOTA_LIMIT, window="day")
    # The floor's answer: a real 201 of this server, body and headers.
    sample = tracker.usage(json.loads(_event("cust_floor")))
    body, headers = sample.model_dump_json().encode(), sample.headers

    async def floor(request: Request) -> Response:
        await request.body()
        return Response(body, 201, headers, "application/json")

    contract_floor = ContractFloor(
        RATE_LIMIT, QUOTA_LIMIT, sqlite=ledger_floor(db.with_name(db.name + "-contract"))
    )

    app = create_app(tracker, close_tracker=True)
    app.router.routes.insert(0, Route(FLOOR_PATH, floor, methods=["POST"]))
    app.router.routes.insert(
        1, Route(CONTRACT_PATH, ContractRoute(contract_floor), methods=["POST"])
    )
    # As `limitry-local serve --no-access-log` runs it.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        lifespan="on",
        server_header=False,
        # Rows are sampled in turns, so a row's connections idle while the others
        # run: on a loaded machine longer than uvicorn's 5 s default, which closed
        # them mid-run (CI saw the suite exit 1).  The served app is the same.
        timeout_keep_alive=3600,
    )


class ContractRoute:
    """``POST /floor/contract``: ``/v1/track``'s own steps
    (``limitry_local.server.routes.track``) with ``usage()`` swapped for the
    contract floor: the body parsed as the route parses it, validated and
    recorded by the floor, the 201 and its header list built the same way.

    A bare ASGI endpoint, as ``/v1/track`` is (an instance, so Starlette's
    ``Route`` calls it as an app rather than wrapping it in a request).
    """

    def __init__(self, floor: ContractFloor) -> None:
        # Imported here: the load generator's process needs none of the server.
        from limitry_local.server.routes.track import read_body, send_created  # noqa: PLC0415
        from limitry_local.server.wire import decode_object  # noqa: PLC0415

        self._usage = floor.usage
        self._decode = decode_object
        self._read = read_body
        self._send = send_created

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self._usage(self._decode(await self._read(receive)))
        if response is None:  # a denial: the load counts anything but a 201 as failed
            await send({"type": "http.response.start", "status": 429, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._send(send, response)


def cpu_ns(pid: int) -> int:
    """CPU time (user and system) the process's threads have used, in ns (Linux's schedstat)."""
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{thread}/schedstat") as stat:
            total += int(stat.read().split()[0])
    return total


def burst(port: int, path: str, customers: list[str], requests: int, threads: int) -> int:
    """``requests`` POSTs to ``path`` from ``threads`` keep-alive connections; returns how many."""
    load = Load(port, path, customers)
    each = requests // threads
    failures: list[str] = []

    def run(first: int) -> None:
        try:
            for i in range(each):
                status = load.op(customers[(first + i) % len(customers)])
                if status != _CREATED:
                    failures.append(f"POST {path} answered {status}")
                    return
        except OSError as exc:
            failures.append(f"POST {path}: {exc}")

    workers = [threading.Thread(target=run, args=(t * each,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    load.close()
    if failures:
        # A thread's exception would only be printed: the burst's count would be wrong.
        raise RuntimeError(failures[0])
    return each * threads


def cpu_per_request(
    db: Path, durability: Durability, rounds: int, requests: int, threads: int = 4
) -> dict[str, list[tuple[float, float]]]:
    """Server CPU us per request and wall-clock requests/s of the floor, the contract floor
    and ``/v1/track``, one per round each."""
    customers = [f"cust_{i}" for i in range(1000)]
    server = Server(db, durability)
    paths = (FLOOR_PATH, CONTRACT_PATH, TRACK_PATH)
    out: dict[str, list[tuple[float, float]]] = {path: [] for path in paths}
    try:
        for path in paths:  # warm-up: every customer's bucket, counter and pages
            burst(server.port, path, customers, 2 * len(customers), threads)
        for _ in range(rounds):
            for path in paths:
                before, started = cpu_ns(server.pid), time.perf_counter()
                done = burst(server.port, path, customers, requests, threads)
                wall = time.perf_counter() - started
                out[path].append(((cpu_ns(server.pid) - before) / done / 1000, done / wall))
    finally:
        server.close()
    return out


def _cpu_main(args: list[str]) -> None:
    rounds = int(args[0]) if args else 8
    requests = int(args[1]) if len(args) > 1 else 2000
    durability = cast(Durability, args[2] if len(args) > 2 else "normal")
    with tempfile.TemporaryDirectory() as scratch:
        found = cpu_per_request(Path(scratch) / "ledger.db", durability, rounds, requests)
    floor = found[FLOOR_PATH]
    names = {FLOOR_PATH: "floor", CONTRACT_PATH: "contract floor", TRACK_PATH: "POST /v1/track"}
    for path, name in names.items():
        cpu, rate = [r[0] for r in found[path]], [r[1] for r in found[path]]
        print(
            f"{name}: server CPU {statistics.median(cpu):.1f} us/request "
            f"(rounds {min(cpu):.1f} to {max(cpu):.1f}), {statistics.median(rate):,.0f} req/s"
        )
    for path in (CONTRACT_PATH, TRACK_PATH):
        for what, pick in (("CPU-second", 0), ("second (wall clock)", 1)):
            shares = [
                f[0] / t[0] if pick == 0 else t[1] / f[1]
                for f, t in zip(floor, found[path], strict=True)
            ]
            print(
                f"{names[path]} at {statistics.median(shares):.2f}x the floor's requests per "
                f"{what} (rounds {min(shares):.2f} to {max(shares):.2f})"
            )
    print(f"durability={durability}, {rounds} rounds of {requests} requests each")


if __name__ == "__main__":
    if sys.argv[1:2] == ["cpu"]:
        _cpu_main(sys.argv[2:])
    else:
        serve(int(sys.argv[1]), Path(sys.argv[2]), cast(Durability, sys.argv[3]))
