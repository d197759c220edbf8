"""A 1.0 check (consume, preview, reserve) and the reservations it makes.

All or nothing, as ``usage()``: every limit that applies to the subject
and its shared subjects is read under the ledger's locks, the check is
allowed only if the cost fits in every one, and only then is anything
charged.  A reservation is a ledger hold (the Tracker's, released by any
process once it expires) plus a document that remembers its status, so a
commit, release or expiry settles it exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from limitry_local.errors import ApiError
from limitry_local.ids import new_id

from .counting import (
    ALLOWED,
    REFUSED,
    USED,
    Counter,
    Place,
    Rule,
    Standing,
    applicable,
    history,
    place,
    subject_key,
)
from .limits import check_subject, choice, invalid, text, whole
from .state import RESERVATION, SUBJECT, State, iso

MODES = ("consume", "preview", "reserve")
MAX_COST = 1_000_000_000
MAX_SHARED = 4
DEFAULT_TTL, MAX_TTL = 300, 3600


def anchor_of(rule: Rule, subject: dict[str, Any] | None, now: float) -> float | None:
    """When ``rule``'s periods start for this subject; a subject not seen yet starts now."""
    start = rule.limit["start"]
    if start == "calendar":
        return None
    record = subject or {}
    if start == "billing_date":
        found = record.get("billingDate", record.get("firstCheckAt"))
    else:
        found = (record.get("firstUse") or {}).get(rule.id)
    return now if found is None else float(found)


def standings(state: State, scope: object, places: Sequence[Place], now: float) -> list[Standing]:
    """Where each place stands, its counters locked until the scope ends."""
    wanted: list[Counter] = []
    for spot in places:
        wanted.extend(spot.counters)
        if spot.credits is not None:
            wanted.append(spot.credits)
    values = iter(state.ledger.lock_counters(scope, wanted))
    found = []
    for spot in places:
        read = [next(values) for _ in spot.counters]
        credits = next(values) if spot.credits is not None else 0
        found.append(spot.standing(read, credits, now))
    return found


def ttl_of(ttl_seconds: Any) -> int:
    """A reservation's ttlSeconds: 1 to 3600, 300 when not given."""
    return DEFAULT_TTL if ttl_seconds is None else whole(ttl_seconds, "ttlSeconds", 1, MAX_TTL)


def check_limit(standing: Standing, spent: int) -> dict[str, Any]:
    limit = standing.place.rule.limit
    resets = standing.resets_at
    spot = standing.place
    if resets is None and spent and spot.slot:
        # No slot counted before this check: the one it charged is now the oldest.
        resets = spot.charge[2] + spot.slot * len(spot.counters)
    return {
        "limitId": limit["id"],
        "name": limit["name"],
        "unit": limit["unit"],
        "window": limit["window"],
        "rolling": limit["rolling"],
        "failMode": limit["failMode"],
        "remaining": max(0, standing.remaining - spent),
        "resetsAt": None if resets is None else iso(resets),
    }


def refusal(refusing: Standing, cost: int) -> dict[str, Any]:
    limit = refusing.place.rule.limit
    return {
        "code": "limit_reached",
        "limitId": limit["id"],
        "message": (
            f"Limit {limit['name']!r} is reached: {refusing.remaining} {limit['unit']} "
            f"left, {cost} asked"
        ),
    }


def wire(reservation: dict[str, Any]) -> dict[str, Any]:
    """A reservation as the API answers it (the ledger's bookkeeping left out)."""
    return {k: v for k, v in reservation.items() if not k.startswith("_")}


class Checks:
    """``checks.create`` and ``reservations.*`` over one :class:`State`."""

    def __init__(self, state: State) -> None:
        self.state = state

    def create(
        self,
        *,
        subject: Any,
        action: Any,
        shared: Any,
        cost: Any,
        mode: Any,
        ttl_seconds: Any,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        who = check_subject(subject)
        what = text(action, "action")
        pools = [] if shared is None else shared
        if not isinstance(pools, list) or len(pools) > MAX_SHARED:
            raise invalid("shared", f"expected a list of at most {MAX_SHARED} subjects")
        subjects = [who]
        for i, pool in enumerate(pools):
            found = check_subject(pool, f"shared[{i}]")
            if found not in subjects:
                subjects.append(found)
        spend = whole(cost, "cost", 0, MAX_COST)
        how = choice(mode, "mode", MODES)
        if ttl_seconds is not None and how != "reserve":
            raise invalid("ttlSeconds", "only a reserve check takes one")
        ttl = ttl_of(ttl_seconds)
        request = [who, what, subjects, spend, how, ttl]

        def decide(scope: object, now: float) -> dict[str, Any]:
            return self._decide(
                scope, now, subjects=subjects, action=what, cost=spend, mode=how, ttl=ttl
            )

        return self.state.run("checks.create", request, idempotency_key, decide)

    def _decide(
        self,
        scope: object,
        now: float,
        *,
        subjects: list[dict[str, str]],
        action: str,
        cost: int,
        mode: str,
        ttl: int,
    ) -> dict[str, Any]:
        state = self.state
        ledger = state.ledger
        # Locks in one order on a shared ledger, or two checks deadlock: the
        # documents first, sorted by key (after the idempotency key, which
        # State.run took), then the counters.
        records: dict[str, dict[str, Any] | None] = {}
        for key in sorted(subject_key(subject) for subject in subjects):
            records[key] = state.get(scope, SUBJECT, key)
        # Every check, so an expired reservation never holds a unit or a slot:
        # one indexed query for the holds past their time.
        ledger.pop_expired_holds(scope, now)
        rules = state.rules()
        places: list[Place] = []
        for subject in subjects:
            key = subject_key(subject)
            for rule in applicable(rules, subject, action):
                places.append(place(rule, subject, now, anchor_of(rule, records[key], now)))
        found = standings(state, scope, places, now)
        refusing = [s for s in found if s.refuses(cost)]
        allowed = not refusing
        decision: dict[str, Any] = {"id": new_id("chk"), "allowed": allowed}
        used = cost if allowed and mode != "preview" else 0

        def spent(standing: Standing) -> int:
            # A consume holds no slot: a concurrent limit's slots are what reservations hold.
            return 0 if standing.place.concurrent and mode == "consume" else used

        # What is left after this check, the tightest first: limits[0] is the one that binds.
        ordered = sorted(found, key=lambda s: s.remaining - spent(s))
        if refusing:
            waits = [s.retry_after(now) for s in refusing]
            decision["reason"] = refusal(refusing[0], cost)
            decision["limits"] = [check_limit(s, 0) for s in ordered]
            decision["retryAfterSeconds"] = None if None in waits else max(w or 0 for w in waits)
        else:
            decision["reason"] = None
            decision["limits"] = [check_limit(s, spent(s)) for s in ordered]
            decision["retryAfterSeconds"] = None
        if mode == "preview":
            return decision
        if not allowed:
            ledger.add_to_counters(
                scope,
                [history(s.place.rule.id, s.place.charge[1], now, REFUSED, 1) for s in refusing],
            )
            return decision
        charged = [s.place for s in found if not s.place.concurrent]
        counted = [
            history(p.rule.id, p.charge[1], now, ALLOWED, 1)
            for p in {(p.rule.id, p.charge[1]): p for p in (s.place for s in found)}.values()
        ]
        self._remember_first_use(scope, subjects, found, records, now)
        if mode == "consume":
            ledger.add_to_counters(
                scope,
                [(*p.charge, cost) for p in charged]
                + [history(p.rule.id, p.charge[1], now, USED, cost) for p in charged]
                + counted,
            )
            return decision
        reservation_id = new_id("rsv")
        ledger.add_hold(scope, reservation_id, [(*s.place.charge, cost) for s in found], now + ttl)
        ledger.add_to_counters(scope, counted)
        reservation = {
            "id": reservation_id,
            "status": "held",
            "reserved": cost,
            "cost": 0,
            "expiresAt": iso(now + ttl),
            "_expires": now + ttl,
            "_charge": [[p.rule.id, p.charge[1], p.charge[2]] for p in charged],
        }
        state.put(scope, RESERVATION, reservation_id, reservation)
        decision["reservation"] = wire(reservation)
        return decision

    def _remember_first_use(
        self,
        scope: object,
        subjects: list[dict[str, str]],
        found: list[Standing],
        records: dict[str, dict[str, Any] | None],
        now: float,
    ) -> None:
        """A subject exists from its first counted check, which anchors its
        ``billing_date`` periods (until a billing date is set) and, limit by
        limit, its ``first_use`` periods."""
        for subject in subjects:
            key = subject_key(subject)
            record = records[key] or {"subject": subject}
            first = dict(record.get("firstUse") or {})
            for standing in found:
                rule = standing.place.rule
                if rule.limit["start"] == "first_use" and standing.place.subject == subject:
                    first.setdefault(rule.id, now)
            changed = {"firstCheckAt": now, **record, "firstUse": first}
            if changed != record:
                records[key] = changed
                self.state.put(scope, SUBJECT, key, changed)

    # --- reservations -------------------------------------------------------------------

    def _current(self, scope: object, reservation_id: Any, now: float) -> dict[str, Any]:
        """The reservation, settled as expired if its time ran out while it was held."""
        found = self.state.get(scope, RESERVATION, str(reservation_id))
        if found is None:
            raise invalidated(reservation_id)
        if found["status"] == "held" and now >= found["_expires"]:
            # Whoever swept the expired hold first (any process) gave its units back.
            self.state.ledger.pop_hold(scope, found["id"])
            found["status"] = "expired"
            self.state.put(scope, RESERVATION, found["id"], found)
        return found

    def commit(self, reservation_id: Any, cost: Any, key: str | None) -> dict[str, Any]:
        spend = whole(cost, "cost", 0, MAX_COST)

        def settle(scope: object, now: float) -> dict[str, Any]:
            found = self._current(scope, reservation_id, now)
            if found["status"] == "committed":
                return wire(found)
            if found["status"] == "released":
                raise conflict("reservation_released", "a released reservation cannot be committed")
            ledger = self.state.ledger
            if found["status"] == "held":
                ledger.pop_hold(scope, found["id"])
            # After an expiry too: the work happened, so what it used is charged.
            charge = [(str(q), str(k), int(s)) for q, k, s in found["_charge"]]
            ledger.add_to_counters(
                scope,
                [(*c, spend) for c in charge]
                + [history(q, k, now, USED, spend) for q, k, _ in charge],
            )
            found.update(status="committed", cost=spend)
            self.state.put(scope, RESERVATION, found["id"], found)
            return wire(found)

        return self.state.run("reservations.commit", [reservation_id, spend], key, settle)

    def release(self, reservation_id: Any, key: str | None) -> dict[str, Any]:
        def settle(scope: object, now: float) -> dict[str, Any]:
            found = self._current(scope, reservation_id, now)
            if found["status"] == "committed":
                raise conflict(
                    "reservation_committed", "a committed reservation cannot be released"
                )
            if found["status"] == "held":
                self.state.ledger.pop_hold(scope, found["id"])
                found.update(status="released", cost=0)
                self.state.put(scope, RESERVATION, found["id"], found)
            return wire(found)

        return self.state.run("reservations.release", [reservation_id], key, settle)

    def extend(self, reservation_id: Any, ttl_seconds: Any, key: str | None) -> dict[str, Any]:
        ttl = ttl_of(ttl_seconds)

        def settle(scope: object, now: float) -> dict[str, Any]:
            found = self._current(scope, reservation_id, now)
            if found["status"] != "held":
                raise conflict(
                    "reservation_not_open",
                    f"only an open reservation can be extended; this one is {found['status']}",
                )
            ledger = self.state.ledger
            held = ledger.pop_hold(scope, found["id"])
            if held is None:
                # Another process swept it as expired (its clock a moment ahead of
                # ours): its units went back, and a new hold would hold nothing while
                # this one answered "held" (found in review: two on a 1-slot limit).
                raise conflict(
                    "reservation_not_open",
                    "only an open reservation can be extended; this one has expired",
                )
            ledger.add_hold(scope, found["id"], held, now + ttl)
            found.update(expiresAt=iso(now + ttl), _expires=now + ttl)
            self.state.put(scope, RESERVATION, found["id"], found)
            return wire(found)

        return self.state.run("reservations.extend", [reservation_id, ttl], key, settle)


def invalidated(reservation_id: Any) -> Exception:
    return ApiError(404, "not_found", f"reservation {reservation_id!r} not found")


def conflict(code: str, message: str) -> Exception:
    return ApiError(409, code, message)
