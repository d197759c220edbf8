"""What the 1.0 face keeps on the ledger, and the one way every write of it runs.

Limits, subjects, credits, reservations and idempotent answers are JSON
documents in the ledger's ``records`` table; usage is on its counters.
Every write runs in one ledger write scope under the engine's lock, as
``usage()`` does, so a decision and what it writes are never interleaved
with another call's, in this process or (through the ledger) in another.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

from limitry_local.engine import Engine
from limitry_local.errors import ApiError, InvalidRequestError, is_text
from limitry_local.inputs import instant
from limitry_local.ledger import LedgerBackend, LedgerError

from .counting import Rule
from .limits import shown

T = TypeVar("T")
LIMIT, SUBJECT, CREDIT, RESERVATION, IDEMPOTENCY = (
    "limit",
    "subject",
    "credit",
    "reservation",
    "idempotency",
)
CONFLICT_RETRIES = 2
KEY_KEPT_SECONDS = 24 * 3600
"""How long an idempotency key's answer is replayed, as the hosted API keeps one."""
PURGE_EVERY_SECONDS = 3600.0
"""How often a process drops the answers past their day (one indexed DELETE)."""


@functools.lru_cache(maxsize=4096)
def iso(seconds: float) -> str:
    """A moment as the API writes it: UTC, milliseconds, ``Z``."""
    # Cached: the same period ends are written into every answer of the period.
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def moment(value: Any, field: str) -> float:
    """An ISO 8601 date or date-time (a naive one is UTC) as unix seconds."""
    if not isinstance(value, str):
        raise ApiError(
            400, "invalid_request", f"{field}: expected an ISO 8601 date, got {shown(value)}"
        )
    try:
        seconds = instant(value, field, end_of_day=False)
    except InvalidRequestError as exc:
        raise ApiError(400, "invalid_request", exc.message) from None
    # A period, or a page of days around it, must still have a date to write
    # (instant answers inf for a moment past the datetime range).
    if seconds is None or not EARLIEST <= seconds <= LATEST:
        raise ApiError(
            400, "invalid_request", f"{field}: {value!r} is outside the years 1900 to 9000"
        )
    return seconds


def _fingerprint(operation: str, request: Any) -> str:
    """What an idempotency key is checked against: the same key, the same request."""
    text = json.dumps([operation, request], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc).timestamp()
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc).timestamp()


class State:
    """The engine a :class:`~limitry_local.limitry.Limitry` shares with its Tracker."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._version: int | None = None
        self._rules: tuple[Rule, ...] = ()
        self._next_purge = float("-inf")

    @property
    def ledger(self) -> LedgerBackend:
        return self.engine.ledger

    def now(self) -> float:
        return self.engine.now()

    def rules(self) -> tuple[Rule, ...]:
        """Every limit, archived too, in creation order: read again when any process
        changed a definition (the ledger's definitions version)."""
        version = self.ledger.definitions_version()
        if version != self._version:
            self._rules = tuple(Rule(body) for _, body in self.loaded(LIMIT))
            self._version = version
        return self._rules

    def rule(self, limit_id: Any) -> Rule:
        for rule in self.rules():
            if rule.id == limit_id:
                return rule
        raise ApiError(404, "not_found", f"limit {limit_id!r} not found")

    # --- documents -----------------------------------------------------------------

    def loaded(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for record_id, text in self.ledger.records(kind):
            yield record_id, self._decoded(kind, record_id, text)

    def get(self, scope: object | None, kind: str, record_id: str) -> dict[str, Any] | None:
        text = self.ledger.get_record(scope, kind, record_id)
        return None if text is None else self._decoded(kind, record_id, text)

    def put(
        self,
        scope: object,
        kind: str,
        record_id: str,
        body: dict[str, Any],
        expires_at: float | None = None,
    ) -> None:
        text = json.dumps(body, separators=(",", ":"))
        self.ledger.put_record(scope, kind, record_id, text, expires_at)

    def _purge(self, now: float) -> None:
        """Drop the idempotent answers past their day, at most once an hour: the SDK
        sends a fresh key with every write, so they would otherwise pile up."""
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_SECONDS
        with self.writing() as scope:
            self.ledger.purge_records(scope, IDEMPOTENCY, now)

    def _decoded(self, kind: str, record_id: str, text: str) -> dict[str, Any]:
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise LedgerError(
                f"ledger {self.ledger.where} is corrupt: the {kind} {record_id!r} cannot be "
                f"read ({exc}); restore it from a backup",
                "corrupt",
            ) from None
        if not isinstance(body, dict):
            raise LedgerError(
                f"ledger {self.ledger.where} is corrupt: the {kind} {record_id!r} is not an "
                "object; restore it from a backup",
                "corrupt",
            )
        return body

    # --- writes ----------------------------------------------------------------------

    @contextmanager
    def writing(self, *, definitions: bool = False) -> Iterator[Any]:
        """The engine's lock and one ledger write scope; ``definitions``: limits change,
        so every process reads them again."""
        with self.engine.lock:
            try:
                # A limit change commits at once, with the batch before it
                # (docs/reliability.md): batched mode must not hold it.
                with self.ledger.write(exclusive=definitions, durable=definitions) as scope:
                    self.engine.opened()
                    if definitions:
                        self.ledger.bump_definitions(scope)
                    yield scope
            finally:
                if definitions:
                    # Read again after the scope: inside it a reader may not see it.
                    self._version = None

    def run(
        self,
        operation: str,
        request: Any,
        key: str | None,
        body: Callable[[Any, float], T],
        *,
        definitions: bool = False,
    ) -> T:
        """One write, exactly once per idempotency key: a repeat with the same key and
        the same request answers what the first answered, and writes nothing.

        A shared ledger may make a write give way in a deadlock ("conflict",
        nothing of it kept): it runs again."""
        if key is not None and not (isinstance(key, str) and key and is_text(key)):
            raise ApiError(
                400,
                "invalid_request",
                "Idempotency-Key: expected text (no lone surrogates), such as a UUID",
            )
        fingerprint = None if key is None else _fingerprint(operation, request)
        if key is not None:
            with self.engine.lock:
                self._purge(self.now())
        for attempt in range(CONFLICT_RETRIES, -1, -1):
            try:
                with self.writing(definitions=definitions) as scope:
                    now = self.now()
                    if key is not None:
                        stored = self.get(scope, IDEMPOTENCY, key)
                        if stored is not None and now >= stored.get("expires", float("inf")):
                            stored = None  # past its day: the key is new again
                        if stored is not None:
                            if stored["request"] != fingerprint:
                                raise ApiError(
                                    409,
                                    "idempotency_key_reused",
                                    f"Idempotency-Key {key!r} was used for another request; "
                                    "use a new key for a new request",
                                )
                            answer: T = stored["answer"]
                            return answer
                    answer = body(scope, now)
                    if key is not None:
                        expires = now + KEY_KEPT_SECONDS
                        kept = {"request": fingerprint, "answer": answer, "expires": expires}
                        self.put(scope, IDEMPOTENCY, key, kept, expires)
                    return answer
            except LedgerError as exc:
                if exc.reason != "conflict" or not attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
