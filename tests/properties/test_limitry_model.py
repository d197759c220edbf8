"""The Limitry 1.0 face against a plain model of its rules, on a manual clock.

The model keeps every use and reservation as a list and recounts from it
on every question: no counters, no periods cached, no holds.  Limits of
every kind of window (calendar days, days every 2 from first use, a
rolling hour, a total balance with credits, concurrent slots) on a kind
or on one subject, per action; checks that consume, preview and reserve,
alone or drawing on a shared team; commits, releases and extensions of
reservations, some after they expired; credits; limits changed,
archived and restored mid-stream; the clock moved by seconds to days.

After every step the face and the model agree on the decision and on
what is left on each limit, and :meth:`usage.standing` agrees with the
model for every subject.  So the face never admits past a limit (the
model does not), never loses an admitted use, never holds a concurrent
slot past its reservation, and settles each reservation exactly once.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from limitry_local import Tracker
from limitry_local.limitry import ApiError, Limitry
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.testing import ManualClock
from tests.conftest import POSTGRES_DSN, postgres_schema

DAY = 86_400
T0 = 1_800_000_000 + 3_333  # a Thursday, mid-morning UTC
USERS = ["u1", "u2"]
ACTIONS = ["chat", "embed"]
# (window, every, start, rolling): one of each kind of counting.
SHAPES = [
    ("day", 1, "calendar", False),
    ("day", 2, "first_use", False),
    ("day", 3, "billing_date", False),
    ("hour", 1, "calendar", True),
    ("total", 1, "calendar", False),
    ("concurrent", 1, "calendar", False),
]


@dataclass
class ModelLimit:
    id: str
    kind: str
    subject_id: str | None
    action: str
    amount: int
    window: str
    every: int
    start: str
    rolling: bool
    archived: bool = False


@dataclass
class ModelReservation:
    id: str
    # (limit id, subject id, when reserved, period start) of every limit it holds units of
    places: list[tuple[str, str, float, float]]
    reserved: int
    expires: float
    status: str = "held"
    cost: int = 0


@dataclass
class Model:
    limits: list[ModelLimit] = field(default_factory=list)
    # (limit id, subject id, when, period start, cost): consumes and commits
    uses: list[tuple[str, str, float, float, int]] = field(default_factory=list)
    reservations: dict[str, ModelReservation] = field(default_factory=dict)
    credits: dict[tuple[str, str], int] = field(default_factory=dict)
    first_use: dict[tuple[str, str], float] = field(default_factory=dict)
    billing: dict[str, float] = field(default_factory=dict)
    """A subject's billing date, set or (else) its first counted check."""

    def applicable(self, kind: str, subject_id: str, action: str) -> list[ModelLimit]:
        matching = [
            m
            for m in self.limits
            if not m.archived
            and m.kind == kind
            and m.subject_id in (None, subject_id)
            and m.action in ("*", action)
        ]
        own = {(m.action, m.window) for m in matching if m.subject_id is not None}
        return [m for m in matching if m.subject_id is not None or (m.action, m.window) not in own]

    def start(self, m: ModelLimit, subject_id: str, t: float) -> float:
        """When the period of ``m`` holding ``t`` starts, by the subject's anchor now.

        A use is charged to the period it was made in, known by its start: a
        billing date set later starts new periods, and what the old ones
        counted stays in them."""
        if m.window in ("total", "concurrent") or m.rolling:
            return 0
        if m.start == "first_use":
            anchor = self.first_use.get((m.id, subject_id), t)
        elif m.start == "billing_date":
            anchor = self.billing.get(subject_id, t)
        else:
            anchor = 0
        length = m.every * DAY
        return (
            math.floor(anchor) + math.floor((math.floor(t) - math.floor(anchor)) / length) * length
        )

    def counts(
        self, m: ModelLimit, subject_id: str, use: tuple[str, str, float, float], now: float
    ) -> bool:
        """Whether a use ``(limit id, subject, when, period start)`` counts on ``m`` at ``now``."""
        limit_id, sid, t, start = use
        if limit_id != m.id or sid != subject_id:
            return False
        if m.rolling:
            # Counted while its minute is one of the last 60.
            return math.floor(t / 60) * 60 + 3600 > now
        return start == self.start(m, subject_id, now)

    def used(self, m: ModelLimit, subject_id: str, now: float) -> int:
        total = 0
        if m.window != "concurrent":
            total += sum(
                cost
                for limit_id, sid, t, start, cost in self.uses
                if self.counts(m, subject_id, (limit_id, sid, t, start), now)
            )
        for r in self.reservations.values():
            if r.status == "held" and now < r.expires:
                total += sum(
                    r.reserved for place in r.places if self.counts(m, subject_id, place, now)
                )
        return total

    def allowance(self, m: ModelLimit, subject_id: str) -> int:
        return m.amount + self.credits.get((m.id, subject_id), 0)


def subject_of(name: str) -> tuple[str, str]:
    return ("team", name) if name.startswith("t") else ("user", name)


class LimitryAgainstModel(RuleBasedStateMachine):
    ledger = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(T0)
        self._dir = tempfile.TemporaryDirectory()
        self._schema = postgres_schema() if self.ledger == "postgres" else None
        if self._schema is not None:
            ledger = PostgresLedger(POSTGRES_DSN, schema=self._schema.__enter__())
            tracker = Tracker(clock=self.clock, ledger=ledger)
        else:
            path = Path(self._dir.name) / "usage.db" if self.ledger == "sqlite" else None
            tracker = Tracker(path, clock=self.clock)
        self.limitry = Limitry(tracker)
        self.model = Model()

    def teardown(self) -> None:
        try:
            self.limitry.tracker.close()
        finally:
            if self._schema is not None:
                self._schema.__exit__(None, None, None)
            self._dir.cleanup()

    @property
    def now(self) -> float:
        return self.clock()

    # --- limits --------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(["user", "team"]),
        one=st.booleans(),
        action=st.sampled_from(["*", *ACTIONS]),
        amount=st.integers(0, 5),
        shape=st.sampled_from(SHAPES),
    )
    def create_limit(
        self, kind: str, one: bool, action: str, amount: int, shape: tuple[str, int, str, bool]
    ) -> None:
        window, every, start, rolling = shape
        subject_id = ("u1" if kind == "user" else "t1") if one else None
        created = self.limitry.limits.create(
            subject={"kind": kind, "id": subject_id},
            action=action,
            amount=amount,
            window=window,
            every=every,
            start=start,
            rolling=rolling,
            name=f"limit {len(self.model.limits)}",
        )
        self.model.limits.append(
            ModelLimit(created["id"], kind, subject_id, action, amount, *shape)
        )

    @precondition(lambda self: self.model.limits)
    @rule(pick=st.integers(0, 100), amount=st.integers(0, 5))
    def change_amount(self, pick: int, amount: int) -> None:
        m = self.model.limits[pick % len(self.model.limits)]
        changed = self.limitry.limits.update(m.id, amount=amount)
        assert changed["amount"] == amount
        m.amount = amount

    @precondition(lambda self: self.model.limits)
    @rule(pick=st.integers(0, 100))
    def archive_or_restore(self, pick: int) -> None:
        m = self.model.limits[pick % len(self.model.limits)]
        if m.archived:
            assert self.limitry.limits.restore(m.id)["archivedAt"] is None
        else:
            self.limitry.limits.archive(m.id)
        m.archived = not m.archived

    @precondition(lambda self: any(m.window == "total" for m in self.model.limits))
    @rule(
        pick=st.integers(0, 100), who=st.sampled_from(["u1", "u2", "t1"]), amount=st.integers(-3, 5)
    )
    def add_credits(self, pick: int, who: str, amount: int) -> None:
        balances = [m for m in self.model.limits if m.window == "total"]
        m = balances[pick % len(balances)]
        kind, subject_id = subject_of(who)
        if amount == 0 or kind != m.kind or m.subject_id not in (None, subject_id):
            with pytest.raises(ApiError) as refused:
                self.limitry.limits.credits.create(
                    m.id, subject={"kind": kind, "id": subject_id}, amount=amount, note="x"
                )
            assert refused.value.status == 400
            return
        credit = self.limitry.limits.credits.create(
            m.id, subject={"kind": kind, "id": subject_id}, amount=amount, note="goodwill"
        )
        assert credit["amount"] == amount
        key = (m.id, subject_id)
        self.model.credits[key] = self.model.credits.get(key, 0) + amount

    @rule(
        who=st.sampled_from(["u1", "u2", "t1"]),
        days=st.integers(-40, 3),
        second=st.integers(0, DAY - 1),
    )
    def set_billing_date(self, who: str, days: int, second: int) -> None:
        kind, subject_id = subject_of(who)
        when = math.floor(self.now / DAY) * DAY + days * DAY + second
        text = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = self.limitry.subjects.update(kind, subject_id, billing_date=text)
        assert answer["billingDate"] == text.replace("Z", ".000Z")
        self.model.billing[subject_id] = when

    # --- checks --------------------------------------------------------------------

    @rule(
        user=st.sampled_from(USERS),
        team=st.booleans(),
        action=st.sampled_from(ACTIONS),
        cost=st.integers(0, 3),
        mode=st.sampled_from(["consume", "consume", "preview", "reserve"]),
        ttl=st.sampled_from([1, 60, 300]),
    )
    def check(  # noqa: PLR0917 (hypothesis passes the drawn values by name)
        self, user: str, team: bool, action: str, cost: int, mode: str, ttl: int
    ) -> None:
        decision = self.limitry.checks.create(
            subject={"kind": "user", "id": user},
            shared=[{"kind": "team", "id": "t1"}] if team else None,
            action=action,
            cost=cost,
            mode=mode,
            ttl_seconds=ttl if mode == "reserve" else None,
        )
        model, now = self.model, self.now
        places = [(m, user) for m in model.applicable("user", user, action)]
        if team:
            places += [(m, "t1") for m in model.applicable("team", "t1", action)]
        allowed = all(
            model.used(m, sid, now) + cost <= model.allowance(m, sid) for m, sid in places
        )
        assert decision["allowed"] == allowed, (decision, places)
        if allowed and mode != "preview":
            for sid in [user, "t1"] if team else [user]:
                model.billing.setdefault(sid, now)
            for m, sid in places:
                if m.start == "first_use":
                    model.first_use.setdefault((m.id, sid), now)
            if mode == "consume":
                model.uses += [
                    (m.id, sid, now, model.start(m, sid, now), cost) for m, sid in places
                ]
            else:
                reservation = decision["reservation"]
                assert reservation["status"] == "held"
                assert reservation["reserved"] == cost
                model.reservations[reservation["id"]] = ModelReservation(
                    reservation["id"],
                    [(m.id, sid, now, model.start(m, sid, now)) for m, sid in places],
                    cost,
                    now + ttl,
                )
        else:
            assert "reservation" not in decision
        left = sorted(
            (m.id, max(0, model.allowance(m, sid) - model.used(m, sid, now))) for m, sid in places
        )
        assert sorted((x["limitId"], x["remaining"]) for x in decision["limits"]) == left
        if not allowed:
            assert decision["reason"]["code"] == "limit_reached"
            refusing = {
                m.id
                for m, sid in places
                if model.used(m, sid, now) + cost > model.allowance(m, sid)
            }
            assert decision["reason"]["limitId"] in refusing

    # --- reservations --------------------------------------------------------------

    def _status(self, r: ModelReservation) -> str:
        return "expired" if r.status == "held" and self.now >= r.expires else r.status

    @precondition(lambda self: self.model.reservations)
    @rule(pick=st.integers(0, 100), cost=st.integers(0, 4))
    def commit(self, pick: int, cost: int) -> None:
        r = list(self.model.reservations.values())[pick % len(self.model.reservations)]
        status = self._status(r)
        if status == "released":
            with pytest.raises(ApiError) as refused:
                self.limitry.reservations.commit(r.id, cost=cost)
            assert refused.value.status == 409
            return
        answer = self.limitry.reservations.commit(r.id, cost=cost)
        if status in ("held", "expired"):
            # After an expiry too: the work happened. Concurrent slots are never charged.
            self.model.uses += [(*place, cost) for place in r.places]
            r.status, r.cost = "committed", cost
        assert answer["status"] == "committed"
        assert answer["cost"] == r.cost

    @precondition(lambda self: self.model.reservations)
    @rule(pick=st.integers(0, 100))
    def release(self, pick: int) -> None:
        r = list(self.model.reservations.values())[pick % len(self.model.reservations)]
        status = self._status(r)
        if status == "committed":
            with pytest.raises(ApiError) as refused:
                self.limitry.reservations.release(r.id)
            assert refused.value.status == 409
            return
        answer = self.limitry.reservations.release(r.id)
        if status == "held":
            r.status = "released"
        elif status == "expired":
            r.status = "expired"
        assert answer["status"] == r.status

    @precondition(lambda self: self.model.reservations)
    @rule(pick=st.integers(0, 100), ttl=st.sampled_from([1, 120]))
    def extend(self, pick: int, ttl: int) -> None:
        r = list(self.model.reservations.values())[pick % len(self.model.reservations)]
        if self._status(r) != "held":
            with pytest.raises(ApiError) as refused:
                self.limitry.reservations.extend(r.id, ttl_seconds=ttl)
            assert refused.value.status == 409
            if r.status == "held":
                r.status = "expired"
            return
        answer = self.limitry.reservations.extend(r.id, ttl_seconds=ttl)
        r.expires = self.now + ttl
        assert answer["status"] == "held"

    # --- time ----------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1, 59, 60, 600, 3599, 3600, DAY - 1, DAY, 2 * DAY]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # --- what every subject sees ---------------------------------------------------

    @invariant()
    def standing_agrees(self) -> None:
        now = self.now
        for who in ["u1", "u2", "t1"]:
            kind, subject_id = subject_of(who)
            standing = self.limitry.usage.standing(subject=f"{kind}:{subject_id}")
            got = sorted((x["limitId"], x["used"], x["remaining"]) for x in standing["limits"])
            on = {
                m.id: m
                for action in ["*", *ACTIONS]
                for m in self.model.applicable(kind, subject_id, action)
                if m.action == action
            }
            want = sorted(
                (
                    m.id,
                    self.model.used(m, subject_id, now),
                    max(
                        0, self.model.allowance(m, subject_id) - self.model.used(m, subject_id, now)
                    ),
                )
                for m in on.values()
            )
            assert got == want, who


LimitryAgainstModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestLimitryOnMemory = LimitryAgainstModel.TestCase


class LimitryOnAFileAgainstModel(LimitryAgainstModel):
    ledger = "sqlite"


LimitryOnAFileAgainstModel.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
TestLimitryOnAFile = LimitryOnAFileAgainstModel.TestCase


class LimitryOnPostgresAgainstModel(LimitryAgainstModel):
    ledger = "postgres"


# Each example creates and drops a schema.
LimitryOnPostgresAgainstModel.TestCase.settings = settings(
    max_examples=12, stateful_step_count=30, deadline=None
)
TestLimitryOnPostgres = LimitryOnPostgresAgainstModel.TestCase


def test_the_model_sees_a_limit_reached() -> None:
    """The model is not vacuous: a limit of 1 a day refuses the second use."""
    model = Model([ModelLimit("lim", "user", None, "*", 1, "day", 1, "calendar", False)])
    m = model.limits[0]
    assert model.used(m, "u1", T0) + 1 <= model.allowance(m, "u1")
    model.uses.append(("lim", "u1", T0, model.start(m, "u1", T0), 1))
    assert model.used(m, "u1", T0 + 1) + 1 > model.allowance(m, "u1")
    assert model.used(m, "u1", T0 + DAY) == 0
