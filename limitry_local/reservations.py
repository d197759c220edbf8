"""Reserve, then settle: for calls whose cost is known only after they ran.

``tracker.reserve(event, estimate=...)`` checks every matching limit as if
the event cost ``estimate`` and holds that amount: rate-limit tokens are
taken, quota amounts are added to the counters and remembered in the
ledger as a *hold*.  :meth:`Reservation.commit` records the real event,
with the real amounts, and gives back (or charges) the difference;
:meth:`Reservation.release` gives the whole hold back.  A hold that is
neither committed nor released expires after its ``ttl``; any Tracker on the
ledger releases it (quota amounts) at its next reservation, or within about
a second of its calls to ``usage()``.

:class:`Guard` wraps a reservation around a block or a function: commit when
it returns, release when it raises.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast

from limitry_local.buckets import BucketAsk
from limitry_local.errors import InvalidRequestError, LimitryError, key_name, parse
from limitry_local.models import QuotaStatus, RateLimitStatus, TrackPostRequest, TrackPostResponse

P = ParamSpec("P")
R = TypeVar("R")

State = Literal["open", "expired", "committed", "released"]

AMOUNT_FIELDS = ("input_tokens", "output_tokens", "total_tokens", "cost_cents", "latency_ms")
"""What a commit may set: the amounts known only after the call (and ``properties``)."""
TOKEN_FIELDS = ("input_tokens", "output_tokens", "total_tokens")
"""Given together or not at all: any of them in a commit replaces the estimate's tokens."""
ESTIMATE_FIELDS = ("total_tokens", "input_tokens", "output_tokens", "cost_cents")
"""What an estimate may hold."""


class Settler(Protocol):
    """What settles a reservation: the engine that took the hold."""

    def commit_reservation(
        self, reservation: Reservation, actual: Mapping[str, Any]
    ) -> TrackPostResponse: ...

    def release_reservation(self, reservation: Reservation) -> None: ...


class Reservation:
    """A hold on every limit an event matches, until :meth:`commit` or :meth:`release`.

    Made by :meth:`Tracker.reserve`.  ``rate_limits`` and ``quotas`` are the
    statuses after the hold was taken; ``expires_at`` is unix seconds.
    Also a context manager: leaving the block without committing (or by an
    exception) releases the hold.
    """

    def __init__(
        self,
        settler: Settler,
        hold_id: str,
        *,
        event: TrackPostRequest,
        estimated: TrackPostRequest,
        asks: list[tuple[BucketAsk, bool]],
        expires_at: float,
        rate_limits: list[RateLimitStatus],
        quotas: list[QuotaStatus],
    ) -> None:
        self.id = hold_id
        self.event = event
        """The event as reserved, before its amounts were known."""
        self.estimated = estimated
        """The event with the estimate's amounts: what the limits were checked against."""
        self.expires_at = expires_at
        self.rate_limits = rate_limits
        self.quotas = quotas
        self.response: TrackPostResponse | None = None
        """The 201 body of the recorded event, once committed."""
        self._settler = settler
        self.asks = asks
        """The buckets held, each with whether it counts tokens (else events)."""
        self._state: State = "open"

    @property
    def state(self) -> State:
        """``"open"``, ``"expired"`` (the hold was released; a commit still records),
        ``"committed"`` or ``"released"``."""
        return self._state

    def commit(self, event: Mapping[str, Any] | None = None, /, **actual: Any) -> TrackPostResponse:
        """Record the event with its real amounts; the hold becomes the real usage.

        Takes amounts as keyword arguments (``total_tokens=``,
        ``input_tokens=``, ``output_tokens=``, ``cost_cents=``,
        ``latency_ms=``, ``properties=``) or a dict of them, wire or
        snake_case.  Tokens given (any of the three) replace the estimate's
        tokens; ``cost_cents`` and ``latency_ms`` not given are the
        estimate's.  The event is recorded even if it overran the estimate or
        a limit: it was admitted when reserved, and usage that happened is
        never dropped.  Committing twice is an error; committing after the
        hold expired still records.
        """
        if event is not None and not isinstance(event, Mapping):
            raise InvalidRequestError(
                f"commit() takes the amounts as keywords or one dict of them, got {event!r}"
            )
        response = self._settler.commit_reservation(self, {**(event or {}), **actual})
        self.response = response
        return response

    def release(self) -> None:
        """Give the whole hold back; nothing is recorded.  A no-op once settled."""
        self._settler.release_reservation(self)

    # Transitions, made by the settler under its lock.

    def begin_commit(self) -> bool:
        """Refuse a settled reservation; True when its tokens are still held."""
        if self._state in ("committed", "released"):
            raise LimitryError(f"reservation {self.id} is already {self._state}")
        return self._state == "open"

    def committed(self) -> None:
        self._state = "committed"

    def begin_release(self) -> bool | None:
        """None when settled; else whether its tokens are still held."""
        if self._state in ("committed", "released"):
            return None
        return self._state == "open"

    def released(self) -> None:
        self._state = "released"

    def expire(self) -> bool:
        """Mark an open reservation expired; True if it was open (its tokens go back)."""
        if self._state != "open":
            return False
        self._state = "expired"
        return True

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        """``<Reservation hold_... open: customer_id='c' event_type='call', holds
        total_tokens=500 on 1 rate limit and 1 quota, expires 2026-11-25T12:10:00Z>``."""
        held = ", ".join(
            f"{name}={value}"
            for name in ESTIMATE_FIELDS
            if (value := getattr(self.estimated, name)) is not None
        )
        expires = datetime.fromtimestamp(self.expires_at, timezone.utc)
        return (
            f"<Reservation {self.id} {self._state}: customer_id={self.event.customer_id!r} "
            f"event_type={self.event.event_type!r}, "
            f"{'holds' if self._state == 'open' else 'held'} {held or 'one request'} on "
            f"{_count(len(self.rate_limits), 'rate limit')} and "
            f"{_count(len(self.quotas), 'quota')}, "
            f"expires {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}>"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class Guard:
    """A reservation around a block or each call of a function.

    ``with tracker.guard(customer_id=..., event_type=..., estimate=...) as r:``
    reserves on entry (a 429 stops the block before it runs), commits the
    estimate when the block returns unless the block committed ``r`` itself
    with the real amounts, and releases when it raises.  ``async with``
    works the same.  As a decorator (``@tracker.guard(...)``) every call of
    the function, sync or async, is guarded so.
    """

    def __init__(self, reserve: Callable[[], Reservation]) -> None:
        self._reserve = reserve
        # One guard may be entered by several threads or tasks at once (a
        # module-level guard): each context settles its own reservation.
        self._open: contextvars.ContextVar[tuple[Reservation, ...]] = contextvars.ContextVar(
            f"limitry_guard_{id(self):x}", default=()
        )

    def __enter__(self) -> Reservation:
        reservation = self._reserve()
        self._open.set((*self._open.get(), reservation))
        return reservation

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        *outer, reservation = self._open.get()
        self._open.set(tuple(outer))
        _settle(reservation, failed=exc_type is not None)

    async def __aenter__(self) -> Reservation:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        reserve = self._reserve
        if inspect.iscoroutinefunction(function):
            async_function = cast(Callable[P, Awaitable[Any]], function)

            @functools.wraps(function)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                reservation = reserve()
                try:
                    result = await async_function(*args, **kwargs)
                except BaseException:
                    _settle(reservation, failed=True)
                    raise
                _settle(reservation, failed=False)
                return result

            return cast(Callable[P, R], guarded_async)

        @functools.wraps(function)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            reservation = reserve()
            try:
                result = function(*args, **kwargs)
            except BaseException:
                _settle(reservation, failed=True)
                raise
            _settle(reservation, failed=False)
            return result

        return guarded


def _settle(reservation: Reservation, *, failed: bool) -> None:
    if failed:
        reservation.release()
    elif reservation.state in ("open", "expired"):
        reservation.commit()


# --- the amounts of a reservation ------------------------------------------------


def estimated(
    request: TrackPostRequest, estimate: int | Mapping[str, Any] | None
) -> TrackPostRequest:
    """The event with the estimate's amounts, validated like any event."""
    if estimate is None:
        return request
    if isinstance(estimate, bool) or not isinstance(estimate, (int, Mapping)):
        raise InvalidRequestError(
            "estimate: must be a number of tokens or a dict of amounts, "
            f"got {type(estimate).__name__}"
        )
    if isinstance(estimate, int):
        amounts: dict[str, Any] = {"total_tokens": estimate}
    else:
        names = _field_names(ESTIMATE_FIELDS)
        unknown = [key_name(key) for key in estimate if key not in names]
        if unknown:
            raise InvalidRequestError(
                f"estimate.{unknown[0]}: an estimate holds amounts only "
                f"({', '.join(ESTIMATE_FIELDS)})"
            )
        amounts = {names[key]: value for key, value in estimate.items()}
    base = request.model_dump(by_alias=False, exclude_unset=True)
    for name in AMOUNT_FIELDS:
        base.pop(name, None)
    return parse(TrackPostRequest, {**base, **amounts}, {}, prefix="estimate.")


def _field_names(fields: tuple[str, ...]) -> dict[str, str]:
    """Each field's snake_case and wire names, mapped to its snake_case name."""
    model_fields = TrackPostRequest.model_fields
    return {given: name for name in fields for given in (name, model_fields[name].alias or name)}


def settled(reservation: Reservation, actual: Mapping[str, Any]) -> TrackPostRequest:
    """The event to record: the reserved event with the real amounts.

    Tokens given (any of input, output, total) replace the estimate's tokens
    as a group, so ``commit(input_tokens=, output_tokens=)`` records their
    sum; ``cost_cents`` and ``latency_ms`` not given are the estimate's.
    """
    names = _field_names((*AMOUNT_FIELDS, "properties"))
    unknown = [key_name(key) for key in actual if key not in names]
    if unknown:
        raise InvalidRequestError(
            f"{unknown[0]}: a commit sets amounts and properties only "
            f"({', '.join(AMOUNT_FIELDS)}, properties)"
        )
    given = {names[key]: value for key, value in actual.items()}
    estimate = reservation.estimated
    from_estimate = [
        name
        for name in AMOUNT_FIELDS
        if name not in given
        and name in estimate.model_fields_set
        and not (name in TOKEN_FIELDS and any(t in given for t in TOKEN_FIELDS))
    ]
    amounts = {name: value for name, value in given.items() if name in AMOUNT_FIELDS}
    amounts.update({name: getattr(estimate, name) for name in from_estimate})
    base = reservation.event.model_dump(by_alias=False, exclude_unset=True)
    for name in AMOUNT_FIELDS:
        base.pop(name, None)
    if "properties" in given:
        extra = given["properties"]
        if not isinstance(extra, Mapping):
            raise InvalidRequestError("properties: must be an object")
        base["properties"] = {**base.get("properties", {}), **extra}
    return parse(TrackPostRequest, {**base, **amounts}, {})


def token_differences(
    reservation: Reservation, final: TrackPostRequest | None, *, charged_before: bool
) -> list[BucketAsk]:
    """What each bucket must still be charged (negative: given back) to settle a hold."""
    asks = []
    for ask, counts_tokens in reservation.asks:
        held = ask.cost if charged_before else 0
        # Owed: nothing when the hold is given back, else what the event costs.
        owed = 0 if final is None else (final.total_tokens or 0) if counts_tokens else 1
        if owed != held:
            asks.append(ask._replace(cost=owed - held))
    return asks
