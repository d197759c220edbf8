"""One of several processes (standing in for hosts) hammering one shared Redis bucket.

Run by tests/test_redis_buckets.py as
``python -m tests.redis_hammer URL PREFIX CLOCK SKEW PEERS TRIES SEED``; prints one
JSON line: the tokens it kept, how many takes it tried and were denied, and the
first and last instant it read on its own clock.
"""

from __future__ import annotations

import json
import random
import sys
import time

import redis

from limitry_local.buckets import BucketAsk, BucketTime
from limitry_local.redis_buckets import ClockSource, RedisBuckets

CAPACITY = 40
WINDOW = 3600.0
KEY = ("rl_shared", 0, ("cust_1",))


def main(argv: list[str]) -> None:
    url, prefix, clock, skew, peers, tries, seed = argv
    source: ClockSource = "server" if clock == "server" else "client"
    store = RedisBuckets(url, prefix=prefix, clock=source, ttl_margin=60.0)
    rng = random.Random(int(seed))
    # Start together, so the takes really interleave: each process checks in and
    # waits (bounded) for the others.
    client = redis.Redis.from_url(url, socket_timeout=5.0)
    client.incr(prefix + "ready")
    client.expire(prefix + "ready", 120)
    deadline = time.monotonic() + 60
    while int(client.get(prefix + "ready") or 0) < int(peers) and time.monotonic() < deadline:
        time.sleep(0.001)
    client.close()
    kept = denied = 0
    first = last = time.time() + float(skew)
    for _ in range(int(tries)):
        cost = rng.choice((1, 1, 2))
        last = time.time() + float(skew)
        at = BucketTime(last, last, 0.0, last)
        (answer,) = store.take([BucketAsk(KEY, CAPACITY, WINDOW, cost)], at)
        if not answer.allowed:
            denied += 1
            store.settle(keep=False)
            continue
        # Some admitted events are refused later (a quota, a failed write):
        # their tokens go back and must not be counted.
        keep = rng.random() < 0.75
        store.settle(keep=keep)
        if keep:
            kept += cost
    store.close()
    print(json.dumps({"kept": kept, "denied": denied, "first": first, "last": last}))


if __name__ == "__main__":
    main(sys.argv[1:])
