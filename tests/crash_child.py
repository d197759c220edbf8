"""The child process of tests/test_crash.py: records usage on a file ledger until it is killed.

Run as ``python tests/crash_child.py LEDGER SEED RUN DURABILITY``, or started
once as a fork server (``python tests/crash_child.py serve FD``, see
:func:`serve`) that forks one such process per request, saving each the half
second of importing limitry_local.  ``DURABILITY`` is the Tracker's
``durability`` (``normal``, ``full`` or ``batched``; batched with
``flush_events=FLUSH_EVENTS``), so the parent audits each mode against its own
promise.  It uses the public API only (nothing from ``tests`` is
imported).  The protocol, one line per message on stdout, each written and
flushed whole:

* the child waits for one line on stdin: ``go <json list of idempotency keys>``
  (keys the parent saw acknowledged earlier, to be repeated); it imports
  limitry_local before that, so a pre-spawned child costs the parent no wait;
* ``R`` once the Tracker is open and the limits exist (found, or created);
* before every operation ``I <tag> <kind> <size>``: the operation about to run;
* after the operation returned, its acknowledgement:

  - ``U <tag> <event id> <total tokens>``: ``tracker.usage()`` admitted and recorded it;
  - ``X <tag>``: ``tracker.usage()`` was denied (kind ``C``: only the small canary quota denies);
  - ``N <tag> <event id> <total tokens>``: ``tracker.events.ingest()`` recorded it;
  - ``B <tag> <count>``: ``tracker.events.batch()`` of ``size`` events answered ``count``;
  - ``D <tag> <key> <event id>``: ``tracker.usage()`` repeating an idempotency key answered;
  - ``Q <tag> <per as JSON>``: a quota was reshaped (its counters rebuilt from every event);
    a definition change commits at once, so in batched mode every event before it is committed;
  - ``F <tag>``: ``tracker.flush()`` returned: in batched mode every event acknowledged
    before it is committed (a no-op in the other modes, whose calls commit on return).

Every event carries ``properties.op = <tag>`` (and batch events ``properties.idx``),
so the parent can match ledger rows to acknowledgements.  Timestamps stay within
one UTC day: the clock is fixed at 10:00 and explicit timestamps go back at most
ten hours.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import traceback
from datetime import datetime, timedelta, timezone
from typing import Any, cast, get_args

from limitry_local import QuotaExceeded, Tracker
from limitry_local.ledger import Durability

# Wednesday 2026-11-25 10:00:00 UTC, like tests/conftest.py's START.
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
BIG = 10**12
DURABILITIES: tuple[str, ...] = get_args(Durability)
CANARY_LIMIT = 5
# Batched mode commits once this many events are pending (or flush_ms, 50, passed): small
# enough that the occasional batch of a few hundred events crosses it, so kills land both
# before and after such commits.
FLUSH_EVENTS = 200
CUSTOMERS = [f"cust_{i}" for i in range(7)] + ["cüst_ø"]
MODELS: list[str | None] = ["gpt-4o", "gpt-4o-mini", "claude-3", None]
CENTS: list[float | None] = [None, None, 0.1, 0.25, 1.5, 3.0]
RESHAPES = [["customer_id"], ["customer_id", "model"]]

QUOTAS: list[dict[str, Any]] = [
    {
        "name": "tokens per customer per day",
        "metric": "total_tokens",
        "limit_value": BIG,
        "period": "day",
        "per": ["customer_id"],
    },
    {
        "name": "gpt events per model per hour",
        "metric": "total_events",
        "limit_value": BIG,
        "period": "hour",
        "dimension_filters": {"model": ["gpt-4o", "gpt-4o-mini"]},
        "per": ["model"],
    },
    {
        "name": "paid cents per month",
        "metric": "total_cost_cents",
        "limit_value": 10**9,
        "period": "month",
        "dimension_filters": {"tier": "paid"},
    },
    {
        "name": "reshaped tokens per day",
        "metric": "total_tokens",
        "limit_value": BIG,
        "period": "day",
        "per": RESHAPES[0],
    },
    {
        "name": "canary events per day",
        "metric": "total_events",
        "limit_value": CANARY_LIMIT,
        "period": "day",
        "dimension_filters": {"event_type": "canary"},
    },
]
RATE_LIMITS: list[dict[str, Any]] = [
    {
        "name": "tokens per customer per minute",
        "limit_value": BIG,
        "window": "minute",
        "per": ["customer_id"],
        "metric": "total_tokens",
    },
    {"name": "requests per second", "limit_value": 10**9, "window": "second"},
]


def say(line: str) -> None:
    """One whole line, flushed: a single write(2) on the pipe."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fixed_clock() -> float:
    return NOW.timestamp()


def setup(tracker: Tracker) -> str:
    """Find each limit by name, or create it; answer the id of the quota to reshape."""
    quotas = {q.name: q.id for q in tracker.quotas.list(limit=100).data}
    for spec in QUOTAS:
        if spec["name"] not in quotas:
            quotas[spec["name"]] = tracker.quotas.create(**spec).id
    rate_limits = {r.name for r in tracker.rate_limits.list(limit=100).data}
    for spec in RATE_LIMITS:
        if spec["name"] not in rate_limits:
            tracker.rate_limits.create(**spec)
    return quotas[QUOTAS[3]["name"]]


def event(rng: random.Random, tag: str, **extra: Any) -> dict[str, Any]:
    """A varied event: tokens given as input/output, as a total, or not at all."""
    fields: dict[str, Any] = {
        "customer_id": rng.choice(CUSTOMERS),
        "event_type": rng.choice(["model_call", "embedding"]),
        "properties": {"op": tag, "tier": rng.choice(["paid", "free"]), "n": rng.randrange(100)},
    }
    model = rng.choice(MODELS)
    if model is not None:
        fields["model"] = model
        fields["provider"] = "openai" if model.startswith("gpt") else "anthropic"
    shape = rng.randrange(3)
    if shape == 0:
        fields["input_tokens"] = rng.randrange(5000)
        fields["output_tokens"] = rng.randrange(2000)
    elif shape == 1:
        fields["total_tokens"] = rng.randrange(10_000)
    cents = rng.choice(CENTS)
    if cents is not None:
        fields["cost_cents"] = cents
    if rng.random() < 0.3:
        fields["timestamp"] = NOW - timedelta(seconds=rng.randrange(10 * 3600))
    if rng.random() < 0.2:
        fields["latency_ms"] = rng.randrange(3000)
    fields.update(extra)
    return fields


def record(path: str, seed: int, run: str, durability: Durability) -> None:
    """Wait for ``go``, open the ledger in ``durability`` and record usage until killed."""
    rng = random.Random(seed)
    word, _, rest = sys.stdin.readline().partition(" ")
    if word.strip() != "go":
        return  # the parent no longer needs this child
    old_keys: list[str] = json.loads(rest) if rest.strip() else []

    tracker = Tracker(path, clock=fixed_clock, durability=durability, flush_events=FLUSH_EVENTS)
    reshaped = setup(tracker)
    per = next(q.per for q in tracker.quotas.list(limit=100).data if q.id == reshaped)
    say("R")

    my_keys: list[str] = []
    for n in range(1_000_000):
        tag = f"{run}.{n}"
        roll = rng.random()
        if roll < 0.50:
            say(f"I {tag} U 1")
            key = f"k-{tag}" if rng.random() < 0.3 else None
            fields = event(rng, tag, idempotency_key=key)
            response = tracker.usage(fields)
            if key is not None:
                my_keys.append(key)
            say(f"U {tag} {response.id} {tokens_of(fields)}")
        elif roll < 0.65:
            say(f"I {tag} N 1")
            fields = event(rng, tag)
            ingested = tracker.events.ingest(fields)
            say(f"N {tag} {ingested.id} {tokens_of(fields)}")
        elif roll < 0.82:
            # Mostly small; now and then a few hundred events in one transaction.
            size = rng.randrange(100, 400) if rng.random() < 0.05 else rng.randrange(2, 9)
            say(f"I {tag} B {size}")
            batch = [
                event(
                    rng,
                    tag,
                    properties={"op": tag, "idx": i, "tier": "paid"},
                    idempotency_key=f"k-{tag}-{i}" if rng.random() < 0.2 else None,
                )
                for i in range(size)
            ]
            answer = tracker.events.batch(batch)
            say(f"B {tag} {answer.count}")
        elif roll < 0.92:
            keys = my_keys + old_keys
            if not keys:
                continue
            key = rng.choice(keys)
            say(f"I {tag} D 1")
            # A different payload under a recorded key: the first response comes back.
            response = tracker.usage(event(rng, tag, idempotency_key=key))
            say(f"D {tag} {key} {response.id}")
        elif roll < 0.97:
            say(f"I {tag} C 1")
            fields = event(rng, tag, event_type="canary")
            try:
                response = tracker.usage(fields)
            except QuotaExceeded:
                say(f"X {tag}")
            else:
                say(f"U {tag} {response.id} {tokens_of(fields)}")
        elif roll < 0.98:
            per = RESHAPES[1] if per == RESHAPES[0] else RESHAPES[0]
            say(f"I {tag} Q 1")
            tracker.quotas.update(reshaped, per=per)
            say(f"Q {tag} {json.dumps(per, separators=(',', ':'))}")
        elif roll < 0.99:
            # Batched mode: a commit the child sees, which the parent holds the file to.
            say(f"I {tag} F 0")
            tracker.flush()
            say(f"F {tag}")
    say("DONE")


def durability(name: str) -> Durability:
    """``name`` as a Tracker durability, or a clear error naming the argument."""
    if name not in DURABILITIES:
        raise SystemExit(f"DURABILITY must be one of {', '.join(DURABILITIES)}, not {name!r}")
    return cast(Durability, name)


def tokens_of(fields: dict[str, Any]) -> int:
    """The event's totalTokens as the library defaults it (0 when absent)."""
    if "total_tokens" in fields:
        return int(fields["total_tokens"])
    return int(fields.get("input_tokens", 0)) + int(fields.get("output_tokens", 0))


def serve(sock: socket.socket) -> None:
    """The fork server: limitry_local imported once, one forked process per child.

    Each request is a JSON message on a SOCK_SEQPACKET socket: ``spawn`` carries
    the child's stdin, stdout and stderr pipe ends (SCM_RIGHTS) and answers its
    pid; ``wait`` reaps a child and answers its exit code (-9 after SIGKILL).
    The server exits when the parent closes the socket.
    """
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 4096, 3)
        if not message:
            return
        request = json.loads(message)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:  # the child: its own process, its own SQLite connection
                sock.close()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                    os.close(fd)
                code = 0
                try:
                    record(request["path"], request["seed"], request["run"], request["durability"])
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"pid": pid}).encode())
        else:
            _, status = os.waitpid(request["pid"], 0)
            sock.send(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode())


def main() -> None:
    if sys.argv[1] == "serve":
        serve(socket.socket(fileno=int(sys.argv[2])))
    else:
        record(sys.argv[1], int(sys.argv[2]), sys.argv[3], durability(sys.argv[4]))


if __name__ == "__main__":
    main()
