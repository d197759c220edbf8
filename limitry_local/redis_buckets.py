"""Token buckets in Redis, shared by every process and host that points at it.

``Tracker(rate_limits=RedisBuckets("redis://cache:6379/0"))`` keeps the rules
of :mod:`limitry_local.buckets` and moves the state: each bucket is a Redis
hash, and two Lua scripts (``limitry_local/lua/``, loaded once and called by
hash) take from every bucket of an event at once, or give a take back.  The
scripts repeat :func:`limitry_local.buckets.take`'s arithmetic operation for
operation, so a Redis bucket answers exactly as an in-memory one would;
tests/test_redis_buckets.py holds them to that.

redis-py is imported only when a ``RedisBuckets`` is built, so
``import limitry_local`` never needs it (``pip install 'limitry_local[redis]'``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from limitry_local.breaker import CircuitBreaker
from limitry_local.buckets import BucketAnswer, BucketAsk, BucketTime
from limitry_local.errors import LimitryError

if TYPE_CHECKING:
    import redis

__all__ = ["RateLimitStoreError", "RedisBuckets"]

logger = logging.getLogger(__name__)

ClockSource = Literal["server", "client"]
RateLimitStoreErrorReason = Literal["connection", "timeout", "auth", "server"]

_ANSWER_FIELDS = 6
_WRITE_FIELDS = 7


class RateLimitStoreError(LimitryError):
    """The rate-limit store cannot be reached or refused a command.

    The message names the server (never its password) and the cause;
    ``.reason`` is ``"connection"``, ``"timeout"``, ``"auth"`` or ``"server"``.
    When it comes out of ``tracker.usage()`` nothing was recorded and no
    token was taken (or, if the failure hid a take that did happen, tokens
    were taken for nothing: a denial later, never an extra admission).
    """

    def __init__(self, message: str, reason: RateLimitStoreErrorReason) -> None:
        super().__init__(message)
        self.reason: RateLimitStoreErrorReason = reason


@dataclass(frozen=True, slots=True)
class _Script:
    name: str
    text: str
    sha: str


def _script(name: str) -> _Script:
    text = resources.files("limitry_local").joinpath("lua", name).read_text("utf-8")
    return _Script(name, text, hashlib.sha1(text.encode("utf-8")).hexdigest())


@dataclass(frozen=True, slots=True)
class _Taken:
    """One take that took, until ``settle`` keeps it or gives it back."""

    write_id: str
    keys: list[str]
    args: list[str | int | float]


class RedisBuckets:
    """A :class:`~limitry_local.buckets.RateLimitStore` in Redis (redis-py).

    >>> from limitry_local import Tracker
    >>> from limitry_local.redis_buckets import RedisBuckets
    >>> tracker = Tracker(rate_limits=RedisBuckets("redis://127.0.0.1:6379/0"))  # doctest: +SKIP

    - ``prefix`` starts every key, so several applications (or tests) can
      share one database.
    - ``clock="server"`` (default) reads the Redis server's ``TIME`` inside
      the script: hosts whose clocks disagree still share one timeline.
      ``clock="client"`` uses the tracker's wall clock instead (``BucketTime.wall``),
      so an injected clock drives the buckets (tests, simulations).  Either
      way a bucket's time never runs backwards: a host whose clock lags sees
      the bucket's time stand still, not tokens appear.
    - ``ttl_margin`` (seconds): a key expires this long after the instant its
      bucket is full again (a missing key reads as full, so expiry changes no
      answer).  TTLs run on the server's real time; with ``clock="client"``
      and a clock that does not run at real speed (a test's ManualClock),
      give a margin longer than the test.
    - ``client``: a ready ``redis.Redis`` (for TLS, sentinels, pools);
      ``url`` is then only used in messages.  A client you pass stays yours
      to close; one built from ``url`` is closed by :meth:`close`.
      Redis Cluster is not supported: one event's keys may hash to different
      slots, and the script must see them all.

    Failures raise :class:`RateLimitStoreError`.  Built from ``url``, the
    client gets ``timeout`` (default 0.5 s) as its connect and socket timeouts
    unless the URL sets its own (``?socket_timeout=1``), so a dead or paused
    server cannot hang ``usage()``: a bucket script answers in well under a
    millisecond on a healthy server.

    A circuit breaker (:mod:`limitry_local.breaker`) stops calling a server
    known to be down: after ``breaker_failures`` calls in a row could not reach
    it (refused or timed out), calls fail at once with a ``"connection"`` or
    ``"timeout"`` :class:`RateLimitStoreError` for ``breaker_cool_down``
    seconds; then one call probes the server, and closes the breaker if it
    gets an answer.  The cool-down runs on the tracker's bucket clock (an
    injected clock drives it).  ``breaker_failures=0`` turns it off.  What a
    limit does while its store fails is its ``fail_mode`` (docs/semantics.md).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "limitry:",
        clock: ClockSource = "server",
        client: redis.Redis | None = None,
        ttl_margin: float = 1.0,
        timeout: float = 0.5,
        breaker_failures: int = 3,
        breaker_cool_down: float = 5.0,
    ) -> None:
        if clock not in ("server", "client"):
            raise ValueError(f"clock must be 'server' or 'client', got {clock!r}")
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {prefix!r}")
        if not ttl_margin >= 0:
            raise ValueError(f"ttl_margin must be a number of seconds >= 0, got {ttl_margin!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self._breaker = CircuitBreaker(breaker_failures, breaker_cool_down)
        # The bucket clock's latest reading, for the breaker of a call that has
        # none of its own (settle).
        self._now = float("-inf")
        redis_module = _import_redis()
        self._errors = redis_module.exceptions
        self.where = _without_password(url)
        self._prefix = prefix
        self._server_clock = clock == "server"
        self._margin_ms = round(ttl_margin * 1000)
        self._owns_client = client is None
        self._client: redis.Redis = (
            client
            if client is not None
            else redis_module.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        )
        self._take = _script("bucket_take.lua")
        self._give_back = _script("bucket_give_back.lua")
        # Write ids only need to differ from every other take on the same
        # bucket: a random store id and a counter.
        self._id = os.urandom(8).hex()
        self._counter = itertools.count()
        # The pending take is per thread, so two Trackers sharing this store
        # (each under its own lock) cannot settle each other's takes.
        self._local = threading.local()
        self._encoded: dict[Hashable, str] = {}
        self._last_failure = ""
        self._last_reason: RateLimitStoreErrorReason = "connection"

    # --- RateLimitStore -----------------------------------------------------

    def take(self, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]:
        """Decide every bucket and take from all of them if all allow: one round trip."""
        self._local.pending = None
        return self._decide("take", asks, at)

    def settle(self, *, keep: bool) -> None:
        """Keep the take (nothing to do: it is in Redis already), or give it back.

        A give-back that fails is logged and dropped, not raised: the event
        was already refused for another reason, and the tokens come back by
        refill (this only ever denies more, never admits more).
        """
        pending: _Taken | None = getattr(self._local, "pending", None)
        self._local.pending = None
        if keep or pending is None:
            return
        try:
            self._run(self._give_back, pending.keys, [pending.write_id, *pending.args])
        except RateLimitStoreError as exc:
            logger.warning("tokens not given back to %s: %s", self.where, exc)

    def peek(self, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]:
        """What :meth:`take` would answer, writing nothing."""
        return self._decide("peek", asks, at)

    def adjust(self, asks: Sequence[BucketAsk], at: BucketTime) -> None:
        """Charge (or give back, for a negative cost) unconditionally: one round trip."""
        if not asks:
            return
        # The take script's "adjust" mode: one refill rule for every write.
        self._decide("adjust", asks, at)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # --- the round trip -----------------------------------------------------

    def _decide(self, mode: str, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]:
        keys = [self._key(ask.key) for ask in asks]
        write_id = f"{self._id}:{next(self._counter)}"
        if self._server_clock:
            now: str | float = ""
            asked: str | float = ""
        else:
            # The caller's own reading of the wall clock, behind the latest one
            # after a step back, when these buckets stand still until it catches
            # up: Retry-After counts from it, so waiting it out suffices (found in
            # review: with the system clock, whose bucket time is monotonic, the
            # latest reading was sent, and every wait was told 1 s again).
            now = at.wall
            asked = at.asked_at + at.offset
        args: list[str | int | float] = [mode, now, asked, self._margin_ms, write_id]
        for ask in asks:
            args += [ask.capacity, float(ask.window), ask.cost, ask.largest]
        self._now = max(self._now, at.now)
        reply = self._run(self._take, keys, args)
        if mode == "adjust":
            return []
        answers = [
            BucketAnswer(bool(reply[i]), *(int(v) for v in reply[i + 1 : i + _ANSWER_FIELDS]))
            for i in range(0, _ANSWER_FIELDS * len(asks), _ANSWER_FIELDS)
        ]
        written = reply[_ANSWER_FIELDS * len(asks) :]
        if written:
            give_back: list[str | int | float] = []
            for i, ask in enumerate(asks):
                state = written[i * _WRITE_FIELDS : (i + 1) * _WRITE_FIELDS]
                give_back += [ask.capacity, float(ask.window), ask.cost, ask.largest, *state]
            self._local.pending = _Taken(write_id, keys, give_back)
        return answers

    def _key(self, key: Hashable) -> str:
        # JSON, so no separator inside a dimension value can make two
        # different keys collide.  Keys repeat (one per limit and customer),
        # so their encoding is cached.
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._prefix + json.dumps(
                key, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
            if len(self._encoded) >= _MAX_CACHED_KEYS:
                self._encoded.clear()
            self._encoded[key] = encoded
        return encoded

    def _run(self, script: _Script, keys: list[str], args: list[str | int | float]) -> list[Any]:
        refusal = self._breaker.admit(self._now)
        if refusal is not None:
            when = (
                f"the next try goes in {refusal.retry_in:.1f}s"
                if refusal.retry_in
                else "a probe of it is under way"
            )
            raise RateLimitStoreError(
                f"Redis at {self.where} is taken to be down: {refusal.failures} calls in a row "
                f"could not reach it (the last: {self._last_failure}); {when} "
                "(RedisBuckets(breaker_cool_down=...) sets the wait)",
                self._last_reason,
            )
        try:
            reply = self._call(script, keys, args)
        except RateLimitStoreError as exc:
            if exc.reason in ("connection", "timeout"):
                self._last_failure = str(exc.__cause__ or exc)
                self._last_reason = exc.reason
                self._breaker.failed(self._now)
            else:
                self._breaker.succeeded()  # the server answered, if only to refuse
            raise
        except BaseException:
            self._breaker.abandoned()
            raise
        self._breaker.succeeded()
        return reply

    def _call(self, script: _Script, keys: list[str], args: list[str | int | float]) -> list[Any]:
        errors = self._errors
        try:
            try:
                reply = self._client.evalsha(script.sha, len(keys), *keys, *args)
            except errors.NoScriptError:
                # First use on this server, or its script cache was flushed
                # (restart, SCRIPT FLUSH): load it once, then by hash again.
                self._client.script_load(script.text)
                reply = self._client.evalsha(script.sha, len(keys), *keys, *args)
        except errors.AuthenticationError as exc:
            raise RateLimitStoreError(
                f"Redis at {self.where} refused our credentials ({exc}); "
                "check the user and password in the URL",
                "auth",
            ) from exc
        except errors.TimeoutError as exc:
            raise RateLimitStoreError(
                f"Redis at {self.where} did not answer in time ({exc}); is it overloaded or "
                "paused? (RedisBuckets(timeout=...) or ?socket_timeout= in the URL sets the wait)",
                "timeout",
            ) from exc
        except errors.ConnectionError as exc:
            raise RateLimitStoreError(
                f"cannot reach Redis at {self.where} ({exc}); is the server running?",
                "connection",
            ) from exc
        except errors.RedisError as exc:
            raise RateLimitStoreError(
                f"Redis at {self.where} refused the rate-limit script {script.name} ({exc})",
                "server",
            ) from exc
        if not isinstance(reply, list):
            raise RateLimitStoreError(
                f"Redis at {self.where} answered {script.name} with {reply!r}, not a list",
                "server",
            )
        return reply


# Key strings are a few dozen bytes; this bounds the cache near 10 MB.
_MAX_CACHED_KEYS = 100_000


def _import_redis() -> Any:
    try:
        import redis  # noqa: PLC0415 - `import limitry_local` must not need the extra
    except ImportError as exc:
        raise ImportError(
            "RedisBuckets needs redis-py: pip install 'limitry_local[redis]'"
        ) from exc
    return redis


def _without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{user}:***@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable Redis URL>"
