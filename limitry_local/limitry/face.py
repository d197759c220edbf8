"""``Limitry``: the hosted 1.0 SDK's client, in process, on a Tracker's ledger.

Every call has the SDK's name, keyword arguments and answer (the same
JSON objects, camelCase keys), so code written for ``limitry.Limitry``
runs against a ledger file with one import changed.  ``idempotency_key``
stands in for the SDK's ``request_options={"idempotency_key": ...}``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from limitry_local.errors import LimitReached
from limitry_local.tracker import Tracker

from .admin import Admin
from .checks import MAX_COST, Checks
from .limits import MISSING
from .state import State

_UNSET: Any = object()


RequestOptions = Mapping[str, Any]
"""The SDK's per-call options: ``idempotency_key`` counts here; ``headers`` mean nothing offline."""


def _key(idempotency_key: str | None, options: RequestOptions | None) -> str | None:
    """The call's idempotency key, given either way."""
    if idempotency_key is not None or options is None:
        return idempotency_key
    found = options.get("idempotency_key")
    return None if found is None else str(found)


def _given(**fields: Any) -> dict[str, Any]:
    """The fields a call was given, by their wire names (``fail_mode`` is ``failMode``)."""
    wire = {"fail_mode": "failMode"}
    return {wire.get(name, name): value for name, value in fields.items() if value is not _UNSET}


class _Checks:
    def __init__(self, checks: Checks) -> None:
        self._checks = checks

    def create(
        self,
        *,
        subject: dict[str, Any] = MISSING,
        action: str = MISSING,
        shared: list[dict[str, Any]] | None = None,
        cost: int = 1,
        mode: str = "consume",
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Whether ``subject`` may do ``action`` at ``cost`` (``allowed``), and in
        ``consume`` mode use it; ``preview`` uses nothing, ``reserve`` holds it."""
        return self._checks.create(
            subject=subject,
            action=action,
            shared=shared,
            cost=cost,
            mode=mode,
            ttl_seconds=ttl_seconds,
            idempotency_key=_key(idempotency_key, request_options),
        )


class _Credits:
    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    def create(
        self,
        limit_id: str,
        *,
        subject: dict[str, Any],
        amount: int,
        note: str | None = None,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Add credits to a subject's balance on a ``total`` limit (negative: take back)."""
        return self._admin.add_credits(
            limit_id, subject, amount, note, _key(idempotency_key, request_options)
        )

    def list(
        self, limit_id: str, *, request_options: RequestOptions | None = None
    ) -> dict[str, Any]:
        """The limit's credits, newest first."""
        return self._admin.credits(limit_id)


class _Limits:
    def __init__(self, admin: Admin) -> None:
        self._admin = admin
        self.credits = _Credits(admin)

    def create(
        self,
        *,
        subject: dict[str, Any] = _UNSET,
        amount: int = _UNSET,
        window: str = _UNSET,
        name: str = _UNSET,
        action: str = _UNSET,
        unit: str = _UNSET,
        every: int = _UNSET,
        start: str = _UNSET,
        rolling: bool = _UNSET,
        enabled: bool = _UNSET,
        fail_mode: str = _UNSET,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """A new limit; omitted fields take their defaults (action ``*``, unit units, ...)."""
        fields = _given(
            subject=subject,
            amount=amount,
            window=window,
            name=name,
            action=action,
            unit=unit,
            every=every,
            start=start,
            rolling=rolling,
            enabled=enabled,
            fail_mode=fail_mode,
        )
        return self._admin.create_limit(fields, _key(idempotency_key, request_options))

    def get(
        self, limit_id: str, *, request_options: RequestOptions | None = None
    ) -> dict[str, Any]:
        return self._admin.get_limit(limit_id)

    def list(
        self,
        *,
        limit: int | str | None = None,
        cursor: str | None = None,
        subject_kind: str | None = None,
        action: str | None = None,
        archived: bool | str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Active limits newest first (``archived="true"``: the archived ones), a page at a time."""
        return self._admin.list_limits(limit, cursor, subject_kind, action, archived)

    def update(
        self,
        limit_id: str,
        *,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Change name, amount, enabled or fail_mode; what a limit counts is fixed."""
        return self._admin.update_limit(
            limit_id, _given(**fields), _key(idempotency_key, request_options)
        )

    def archive(
        self,
        limit_id: str,
        *,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> None:
        self._admin.archive_limit(limit_id, _key(idempotency_key, request_options))

    def restore(
        self,
        limit_id: str,
        *,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        return self._admin.restore_limit(limit_id, _key(idempotency_key, request_options))

    def sync(
        self,
        *,
        limits: builtins.list[dict[str, Any]],
        archive_missing: bool | None = None,
        preview: bool | None = None,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Make the limits match ``limits`` by name (``preview``: say what, change nothing)."""
        return self._admin.sync(
            limits, archive_missing, preview, _key(idempotency_key, request_options)
        )


class _Reservations:
    def __init__(self, checks: Checks) -> None:
        self._checks = checks

    def commit(
        self,
        reservation_id: str,
        *,
        cost: int,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Charge what the work used (after an expiry too); a repeat answers the same."""
        return self._checks.commit(reservation_id, cost, _key(idempotency_key, request_options))

    def release(
        self,
        reservation_id: str,
        *,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Give the whole reservation back; a repeat answers the same."""
        return self._checks.release(reservation_id, _key(idempotency_key, request_options))

    def extend(
        self,
        reservation_id: str,
        *,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Keep an open reservation ``ttl_seconds`` more from now (default 300)."""
        return self._checks.extend(
            reservation_id, ttl_seconds, _key(idempotency_key, request_options)
        )


class _Subjects:
    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    def get(
        self, subject_kind: str, subject_id: str, *, request_options: RequestOptions | None = None
    ) -> dict[str, Any]:
        return self._admin.subject(subject_kind, subject_id)

    def update(
        self,
        subject_kind: str,
        subject_id: str,
        *,
        billing_date: str,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Set when the subject's ``billing_date`` limits' periods start from."""
        return self._admin.set_billing_date(
            subject_kind, subject_id, billing_date, _key(idempotency_key, request_options)
        )

    def reset(
        self,
        subject_kind: str,
        subject_id: str,
        *,
        limit_id: str | None = None,
        idempotency_key: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Give a subject its current windows back (one limit, or all but concurrent ones)."""
        return self._admin.reset(
            subject_kind, subject_id, limit_id, _key(idempotency_key, request_options)
        )


class _Usage:
    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    def query(
        self,
        *,
        limit_id: str,
        subject: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        granularity: str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Units used, checks allowed and refused per hour or day (default: 30 days by day)."""
        return self._admin.query(limit_id, subject, from_, to, granularity)

    def standing(
        self,
        *,
        subject: str,
        shared: str | Sequence[str] | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Every enabled limit on ``kind:id`` (and ``shared``): used, remaining, resetsAt.

        ``shared``: ``kind:id,kind:id``, or a list of ``kind:id`` (each whole, so an
        id may hold a comma).  Over HTTP a list of two or more is ``shared=``
        repeated; the SDK sends a list of one once, read as the joined string."""
        return self._admin.standing(subject, shared)

    def subjects(
        self,
        *,
        limit_id: str,
        limit: int | str | None = None,
        request_options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """The limit's subjects in their current window, most used first."""
        return self._admin.by_subject(limit_id, limit)


class Reservation:
    """A reservation in ``with limitry.reserve(...)``: report what the work used."""

    def __init__(self, checks: Checks, reserved: int, reservation_id: str) -> None:
        self.used = reserved
        self.id = reservation_id
        self._checks = checks

    def cost(self, units: float) -> None:
        """What the work actually used, committed when the block ends (default: reserved).

        A whole number from 0 to 1,000,000,000 (``2.0`` too), as the SDK takes it:
        anything else raises ValueError here, before the work's usage could be lost."""
        if (
            isinstance(units, bool)
            or not isinstance(units, (int, float))
            or not float(units).is_integer()
            or not 0 <= units <= MAX_COST
        ):
            raise ValueError(
                f"reservation.cost({units!r}): the cost must be a whole number from 0 to {MAX_COST}"
            )
        self.used = int(units)

    def extend(self, ttl_seconds: int | None = None) -> None:
        self._checks.extend(self.id, ttl_seconds, None)


class Limitry:
    """The Limitry 1.0 API in process.

    >>> limitry = Limitry()                        # in memory; Limitry("usage.db") for a file
    >>> limit = limitry.limits.create(subject={"kind": "user"}, amount=2, window="day")
    >>> limitry.checks.create(subject={"kind": "user", "id": "u1"}, action="chat")["allowed"]
    True

    ``db``: a ledger file path, or a :class:`~limitry_local.Tracker` whose
    ledger (file, memory or PostgreSQL) and lock it shares; None: memory.
    :meth:`close` closes the Tracker only if this made it.

    The SDK client's own arguments are taken so its construction runs as it
    is: ``token``, ``workspace``, ``environment``, ``timeout``, ``max_retries``
    and ``http_client`` change nothing in process.  ``api`` names a server,
    which a client in process has none of: a ValueError says what to do.
    """

    def __init__(
        self,
        db: Tracker | str | Path | None = None,
        *,
        token: str | None = None,
        workspace: str | None = None,
        environment: str | None = None,
        api: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        http_client: object | None = None,
    ) -> None:
        if api is not None:
            raise ValueError(
                f"api={api!r}: this Limitry runs in process, with no server to call; drop "
                "api=, or point the real limitry SDK at `limitry-local serve`"
            )
        self._owns_tracker = not isinstance(db, Tracker)
        self.tracker = db if isinstance(db, Tracker) else Tracker(db)
        state = State(self.tracker.engine)
        self._checks = Checks(state)
        admin = self._admin = Admin(state)
        self.checks = _Checks(self._checks)
        self.limits = _Limits(admin)
        self.reservations = _Reservations(self._checks)
        self.subjects = _Subjects(admin)
        self.usage = _Usage(admin)

    def close(self) -> None:
        if self._owns_tracker:
            self.tracker.close()

    def __enter__(self) -> Limitry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def guard(
        self,
        *,
        subject: dict[str, Any],
        action: str,
        cost: int = 1,
        shared: list[dict[str, Any]] | None = None,
        timeout: float | None = None,
        fail_mode: str | None = None,
    ) -> Iterator[None]:
        """Check ``cost`` and run the block only if allowed; else raise :class:`LimitReached`.

        ``timeout`` and ``fail_mode`` are the SDK's, for when Limitry cannot be
        reached; in process it always is, so they change nothing."""
        decision = self.checks.create(subject=subject, action=action, cost=cost, shared=shared)
        if not decision["allowed"]:
            raise LimitReached(decision)
        yield

    @contextmanager
    def reserve(
        self,
        *,
        subject: dict[str, Any],
        action: str,
        cost: int = 1,
        shared: list[dict[str, Any]] | None = None,
        ttl_seconds: int | None = None,
        timeout: float | None = None,
        fail_mode: str | None = None,
    ) -> Iterator[Reservation]:
        """Reserve ``cost``, run the block, then commit what it used (released on an error)."""
        decision = self.checks.create(
            subject=subject,
            action=action,
            cost=cost,
            shared=shared,
            mode="reserve",
            ttl_seconds=ttl_seconds,
        )
        reservation = decision.get("reservation")
        if not decision["allowed"] or reservation is None:
            raise LimitReached(decision)
        held = Reservation(self._checks, cost, reservation["id"])
        try:
            yield held
        except BaseException:
            self._checks.release(held.id, None)
            raise
        self._checks.commit(held.id, held.used, None)

    def standing(
        self, *, subject: dict[str, Any], shared: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Where a subject stands on every limit on it; nothing is counted."""
        # The subjects as given, not "kind:id" text: an id's comma and a kind's
        # ':' stay theirs (found in review: kind "team:eu" read as team "eu:...").
        return self._admin.standing(subject, list(shared or []) or None)
