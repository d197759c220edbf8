"""The 1.0 calls around the checks: limits (with sync and credits), subjects and usage.

Limit changes are definition changes: each bumps the ledger's definitions
version, so every process (and the Tracker's own plan) reads them again
before its next decision.
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from limitry_local.errors import ApiError
from limitry_local.ids import new_id

from .checks import anchor_of, standings
from .counting import (
    ALLOWED,
    CREDITS,
    HOUR,
    REFUSED,
    USED,
    Rule,
    Standing,
    applicable,
    place,
    subject_key,
    subject_of,
)
from .limits import (
    FIXED,
    MAX_AMOUNT,
    check_subject,
    choice,
    default_named,
    differences,
    invalid,
    new_limit,
    patched,
    shown,
    text,
    whole,
)
from .state import CREDIT, LIMIT, SUBJECT, State, iso, moment

PAGE, MAX_PAGE = 25, 100
MAX_POINTS = 5000
DAY = 86_400


def page_size(value: Any, field: str = "limit") -> int:
    """A page size as sent (the SDK sends the query string): clamped to 1-100."""
    if value is None:
        return PAGE
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        # ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
        if digits.isascii() and digits.isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, f"expected a whole number, got {shown(value)}")
    return min(MAX_PAGE, max(1, value))


def subject_text(value: Any, field: str) -> dict[str, str]:
    """``kind:id`` (the query's form of a subject), or in process ``{kind, id}``."""
    if isinstance(value, Mapping):
        # Whole, never joined and split again: a kind may hold ':' (checks take it).
        return check_subject(value, field)
    if not isinstance(value, str) or ":" not in value:
        raise invalid(field, f"expected kind:id, such as user:usr_123, got {shown(value)}")
    kind, _, subject_id = value.partition(":")
    return check_subject({"kind": kind, "id": subject_id}, field)


def shared_texts(shared: Any) -> list[dict[str, str]]:
    """A standing's ``shared``: the SDK's ``kind:id,kind:id``, or a list of ``kind:id``.

    A list (``shared=`` given more than once over HTTP) holds one subject per
    item, whole, so an id or kind may hold a comma.  The one string is split
    on every comma, as the SDK joined it: a comma inside an id cannot be told
    from the separator there, and guessing would read another subject, so a
    piece without ``:`` is a 400 that names the list form.
    """
    if shared is None or shared == "":
        return []
    if isinstance(shared, (list, tuple)):
        return [subject_text(item, "shared") for item in shared]
    if not isinstance(shared, str):
        return [subject_text(shared, "shared")]
    pieces = shared.split(",")
    for piece in pieces:
        if ":" not in piece:
            raise invalid(
                "shared",
                f"expected kind:id pairs joined by ',', got {shown(piece)} in {shown(shared)}; "
                "for an id holding ',' give shared once per subject "
                "(?shared=kind:id&shared=kind:id, or a list in process)",
            )
    return [subject_text(piece, "shared") for piece in pieces]


class Admin:
    """``limits``, ``limits.credits``, ``subjects`` and ``usage`` over one :class:`State`."""

    def __init__(self, state: State) -> None:
        self.state = state

    # --- limits ---------------------------------------------------------------------

    def _named(self, name: str, other_than: str | None = None) -> None:
        for rule in self.state.rules():
            if rule.active and rule.limit["name"] == name and rule.id != other_than:
                raise ApiError(
                    409, "name_taken", f"an active limit is named {name!r} already ({rule.id})"
                )

    def create_limit(self, fields: dict[str, Any], key: str | None) -> dict[str, Any]:
        def create(scope: object, now: float) -> dict[str, Any]:
            limit = new_limit(fields, new_id("lim"), iso(now))
            self._named(limit["name"])
            self.state.put(scope, LIMIT, limit["id"], limit)
            return limit

        return self.state.run("limits.create", fields, key, create, definitions=True)

    def get_limit(self, limit_id: Any) -> dict[str, Any]:
        with self.state.engine.lock:
            limit = dict(self.state.rule(limit_id).limit)
            limit["lastCheckedAt"] = self._last_checked().get(limit["id"])
            return limit

    def _last_checked(self) -> dict[str, str]:
        """The hour a check last reached each limit, from the usage history."""
        last: dict[str, int] = {}
        for (counter, _, hour), used in self.state.ledger.counters().items():
            if used and counter.endswith((ALLOWED, REFUSED)):
                limit_id = counter.rpartition("#")[0]
                last[limit_id] = max(hour, last.get(limit_id, hour))
        return {limit_id: iso(hour) for limit_id, hour in last.items()}

    def list_limits(
        self, limit: Any, cursor: Any, subject_kind: Any, action: Any, archived: Any
    ) -> dict[str, Any]:
        size = page_size(limit)
        if archived in (None, False, "false"):
            want_archived = False
        elif archived in (True, "true"):
            want_archived = True
        else:
            raise invalid("archived", f"expected true or false, got {shown(archived)}")
        # A cursor is a place in the order limits were made (they are never
        # deleted), so archiving or restoring one between pages moves nothing.
        before = math.inf if cursor is None else _decoded_cursor(cursor)
        with self.state.engine.lock:
            found = [
                (place, r)
                for place, r in reversed(list(enumerate(self.state.rules())))
                if place < before
                and r.active != want_archived
                and subject_kind in (None, r.limit["subject"]["kind"])
                and action in (None, r.limit["action"])
            ]
            last = self._last_checked()
            items = [dict(r.limit, lastCheckedAt=last.get(r.id)) for _, r in found[:size]]
        more = len(found) > size
        return {"items": items, "nextCursor": _cursor(found[size - 1][0]) if more else None}

    def update_limit(
        self, limit_id: Any, fields: dict[str, Any], key: str | None
    ) -> dict[str, Any]:
        def update(scope: object, now: float) -> dict[str, Any]:
            limit = self.state.rule(limit_id).limit
            changed = patched(limit, fields, iso(now))
            if changed["name"] != limit["name"] and changed["archivedAt"] is None:
                self._named(changed["name"], limit["id"])
            self.state.put(scope, LIMIT, limit["id"], changed)
            return changed

        return self.state.run("limits.update", [limit_id, fields], key, update, definitions=True)

    def archive_limit(self, limit_id: Any, key: str | None) -> None:
        def archive(scope: object, now: float) -> None:
            limit = dict(self.state.rule(limit_id).limit)
            if limit["archivedAt"] is None:
                limit.update(archivedAt=iso(now), updatedAt=iso(now), version=limit["version"] + 1)
                self.state.put(scope, LIMIT, limit["id"], limit)

        self.state.run("limits.archive", [limit_id], key, archive, definitions=True)

    def restore_limit(self, limit_id: Any, key: str | None) -> dict[str, Any]:
        def restore(scope: object, now: float) -> dict[str, Any]:
            limit = dict(self.state.rule(limit_id).limit)
            if limit["archivedAt"] is not None:
                self._named(limit["name"], limit["id"])
                limit.update(archivedAt=None, updatedAt=iso(now), version=limit["version"] + 1)
                self.state.put(scope, LIMIT, limit["id"], limit)
            return limit

        return self.state.run("limits.restore", [limit_id], key, restore, definitions=True)

    def sync(
        self, entries: Any, archive_missing: Any, preview: Any, key: str | None
    ) -> dict[str, Any]:
        if not isinstance(entries, list):
            raise invalid("limits", "expected a list of limits")
        archive = bool(archive_missing) if isinstance(archive_missing, bool) else False
        if archive_missing is not None and not isinstance(archive_missing, bool):
            raise invalid("archiveMissing", f"expected true or false, got {shown(archive_missing)}")
        if preview is not None and not isinstance(preview, bool):
            raise invalid("preview", f"expected true or false, got {shown(preview)}")

        def run(scope: object, now: float) -> dict[str, Any]:
            plan = self._sync_plan(entries, archive, iso(now))
            result: dict[str, Any] = {"preview": bool(preview), **plan["result"]}
            if not preview:
                for limit in plan["writes"]:
                    self.state.put(scope, LIMIT, limit["id"], limit)
            return result

        return self.state.run(
            "limits.sync", [entries, archive, preview], key, run, definitions=not preview
        )

    def _sync_plan(self, entries: list[Any], archive: bool, now: str) -> dict[str, Any]:
        """What a sync writes and answers; every problem at once (400 with details)."""
        active = {r.limit["name"]: r.limit for r in self.state.rules() if r.active}
        problems: list[dict[str, Any]] = []
        wanted: list[dict[str, Any]] = []
        origin: list[int] = []  # each wanted limit's index among the entries
        for index, entry in enumerate(entries):
            try:
                if not isinstance(entry, Mapping):
                    raise invalid("limits", "each entry is a limit object")
                wanted.append(new_limit(entry, new_id("lim"), now))
                origin.append(index)
            except ApiError as exc:
                field, _, message = exc.message.partition(": ")
                problems.append({"index": index, "field": field, "message": message})
        names = [limit["name"] for limit in wanted]
        # Each entry's active limit: the one of its name, else for an entry without
        # a name, the one with a default name counting the same thing (its sentence
        # holds its amount, so a new amount must not make a new limit).
        matched: list[dict[str, Any] | None] = [active.get(name) for name in names]
        unnamed: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for at, limit in enumerate(wanted):
            if matched[at] is None and entries[origin[at]].get("name") is None:
                unnamed[_counts(limit)].append(at)
        taken = {limit["id"] for limit in matched if limit is not None}
        for what, indexes in unnamed.items():
            candidates = [
                limit
                for limit in active.values()
                if limit["id"] not in taken and _counts(limit) == what and default_named(limit)
            ]
            if len(candidates) == 1 and len(indexes) == 1:
                matched[indexes[0]] = candidates[0]
            elif candidates:
                for at in indexes:
                    problems.append(
                        {
                            "index": origin[at],
                            "field": "name",
                            "message": f"{len(indexes)} entries without a name count what "
                            f"{len(candidates)} active limits with default names count: "
                            "name them to say which is which",
                        }
                    )
        for at, limit in enumerate(wanted):
            if names.count(limit["name"]) > 1:
                problems.append({"index": origin[at], "field": "name", "message": "named twice"})
            existing = matched[at]
            if existing is not None and any(existing[f] != limit[f] for f in FIXED):
                problems.append(
                    {
                        "index": origin[at],
                        "field": "name",
                        "message": f"{limit['name']!r} counts something else: what a limit "
                        "counts is fixed, so rename the entry to create a new limit",
                    }
                )
        if problems:
            raise ApiError(
                400,
                "invalid_request",
                f"limits: {len(problems)} problem(s); nothing changed",
                problems,
            )
        writes: list[dict[str, Any]] = []
        result: dict[str, list[Any]] = {
            "created": [],
            "updated": [],
            "archived": [],
            "unchanged": [],
        }
        for limit, existing in zip(wanted, matched, strict=True):
            if existing is None:
                writes.append(limit)
                result["created"].append(limit["name"])
                continue
            # The name too: an unnamed entry's default name follows its amount.
            fields = {f: limit[f] for f in ("name", "amount", "enabled", "failMode")}
            changed = patched(existing, fields, now)
            if changed == existing:
                result["unchanged"].append(limit["name"])
            else:
                writes.append(changed)
                result["updated"].append(
                    {"name": limit["name"], "changes": differences(existing, changed)}
                )
        if archive:
            kept = {limit["id"] for limit in matched if limit is not None}
            for name, existing in active.items():
                if existing["id"] not in kept:
                    version = existing["version"] + 1
                    writes.append(dict(existing, archivedAt=now, updatedAt=now, version=version))
                    result["archived"].append(name)
        return {"writes": writes, "result": result}

    # --- credits --------------------------------------------------------------------

    def add_credits(
        self, limit_id: Any, subject: Any, amount: Any, note: Any, key: str | None
    ) -> dict[str, Any]:
        # Every field before anything is read.
        who = check_subject(subject)
        credits = whole(amount, "amount", -MAX_AMOUNT, MAX_AMOUNT)
        if credits == 0:
            raise invalid("amount", "add or take back at least one credit, not 0")
        if credits < 0 and note is None:
            raise invalid("note", "required when amount is negative: say why")
        why = "" if note is None else text(note, "note")

        def add(scope: object, now: float) -> dict[str, Any]:
            rule = self.state.rule(limit_id)
            if rule.limit["window"] != "total":
                raise invalid("limitId", "credits go to a balance: a limit whose window is total")
            on = rule.limit["subject"]
            if on["kind"] != who["kind"] or on["id"] not in (None, who["id"]):
                raise invalid("subject", f"the limit {rule.id} is not on {who['kind']} {who['id']}")
            credit: dict[str, Any] = {
                "id": new_id("cred"),
                "limitId": rule.id,
                "subject": who,
                "amount": credits,
                "note": why,
                "createdByUserId": None,
                "createdAt": iso(now),
            }
            counter = (rule.id + CREDITS, subject_key(who), 0, credits)
            self.state.ledger.add_to_counters(scope, [counter])
            self.state.put(scope, CREDIT, credit["id"], credit)
            return credit

        request = [limit_id, subject, amount, note]
        return self.state.run("limits.credits.create", request, key, add)

    def credits(self, limit_id: Any) -> dict[str, Any]:
        with self.state.engine.lock:
            rule = self.state.rule(limit_id)
            items = [c for _, c in self.state.loaded(CREDIT) if c["limitId"] == rule.id]
        return {"items": items[::-1], "nextCursor": None}

    # --- subjects -------------------------------------------------------------------

    def subject(self, kind: Any, subject_id: Any) -> dict[str, Any]:
        who = check_subject({"kind": kind, "id": subject_id})
        with self.state.engine.lock:
            record = self.state.get(None, SUBJECT, subject_key(who))
        if record is None:
            raise ApiError(
                404,
                "not_found",
                f"subject {who['kind']}:{who['id']} not found: a subject exists once a check "
                "names it",
            )
        return _subject_answer(who, record)

    def set_billing_date(
        self, kind: Any, subject_id: Any, billing_date: Any, key: str | None
    ) -> dict[str, Any]:
        who = check_subject({"kind": kind, "id": subject_id})
        when = moment(billing_date, "billingDate")

        def update(scope: object, now: float) -> dict[str, Any]:
            record = self.state.get(scope, SUBJECT, subject_key(who)) or {"subject": who}
            record["billingDate"] = when
            self.state.put(scope, SUBJECT, subject_key(who), record)
            return _subject_answer(who, record)

        return self.state.run("subjects.update", [who, when], key, update)

    def reset(self, kind: Any, subject_id: Any, limit_id: Any, key: str | None) -> dict[str, Any]:
        who = check_subject({"kind": kind, "id": subject_id})
        if limit_id is not None:
            text(limit_id, "limitId")

        def reset(scope: object, now: float) -> dict[str, Any]:
            rules = self._on(who)
            if limit_id is not None:
                rules = [r for r in rules if r.id == limit_id]
                if not rules:
                    self.state.rule(limit_id)  # 404 for an unknown id
                    raise invalid("limitId", f"the limit {limit_id} is not on this subject")
            record = self.state.get(scope, SUBJECT, subject_key(who))
            ledger = self.state.ledger
            done = []
            for rule in rules:
                if rule.limit["window"] == "concurrent":
                    continue
                spot = place(rule, who, now, anchor_of(rule, record, now))
                counters = list(spot.counters) + ([spot.credits] if spot.credits else [])
                values = ledger.lock_counters(scope, counters)
                # Open reservations keep what they hold: their release gives it back.
                ledger.add_to_counters(
                    scope,
                    [
                        (*c, -(value - ledger.held(*c)))
                        for c, value in zip(counters, values, strict=True)
                        if value
                    ],
                )
                done.append(rule.id)
            return {"subject": who, "reset": done}

        return self.state.run("subjects.reset", [who, limit_id], key, reset)

    def _on(self, who: Mapping[str, Any]) -> list[Rule]:
        """Every enabled limit on a subject, whatever the action (one replacing its kind's)."""
        rules = [
            r
            for r in self.state.rules()
            if r.active
            and r.limit["enabled"]
            and r.limit["subject"]["kind"] == who["kind"]
            and r.limit["subject"]["id"] in (None, who["id"])
        ]
        actions = {r.limit["action"] for r in rules}
        seen: dict[str, Rule] = {}
        for action in sorted(actions):
            for rule in applicable(rules, who, action):
                if rule.limit["action"] == action:
                    seen[rule.id] = rule
        return [r for r in rules if r.id in seen]

    # --- usage ----------------------------------------------------------------------

    def _standings(self, everyone: list[dict[str, str]], now: float) -> list[Standing]:
        places = []
        for who in everyone:
            record = self.state.get(None, SUBJECT, subject_key(who))
            places += [place(r, who, now, anchor_of(r, record, now)) for r in self._on(who)]
        with self.state.ledger.write() as scope:
            # Read under the ledger's locks, so the numbers are of one moment, and
            # after the expired reservations gave back what they held.
            self.state.ledger.pop_expired_holds(scope, now)
            return standings(self.state, scope, places, now)

    def standing(self, subject: Any, shared: Any) -> dict[str, Any]:
        who = subject_text(subject, "subject")
        everyone = [who, *shared_texts(shared)]
        with self.state.engine.lock:
            limits = []
            for s in self._standings(everyone, self.state.now()):
                limit = s.place.rule.limit
                limits.append(
                    {
                        "limitId": limit["id"],
                        "name": limit["name"],
                        "subject": s.place.subject,
                        "action": limit["action"],
                        "unit": limit["unit"],
                        "window": limit["window"],
                        "rolling": limit["rolling"],
                        "failMode": limit["failMode"],
                        "amount": s.allowance,
                        "used": s.used,
                        "remaining": s.remaining,
                        "resetsAt": None if s.resets_at is None else iso(s.resets_at),
                    }
                )
        return {"subject": who, "environment": "offline", "limits": limits}

    def by_subject(self, limit_id: Any, limit: Any) -> dict[str, Any]:
        size = page_size(limit)
        with self.state.engine.lock:
            now = self.state.now()
            rule = self.state.rule(limit_id)
            with self.state.ledger.write() as scope:
                self.state.ledger.pop_expired_holds(scope, now)
            counters = self.state.ledger.counters()
            # A subject only refused has no counter of the limit's own: its refusals name it.
            keys = {
                key
                for (q, key, _) in counters
                if q in (rule.id, rule.id + CREDITS, rule.id + REFUSED)
            }
            # The refusals by subject, read in the same one pass over the counters.
            refusals: dict[str, list[tuple[int, int]]] = defaultdict(list)
            for (q, key, hour), value in counters.items():
                if q == rule.id + REFUSED:
                    refusals[key].append((hour, value))
            items: list[dict[str, Any]] = []
            # With no subject yet: the window one checked now would count in.
            fresh = {"kind": rule.limit["subject"]["kind"], "id": ""}
            start = _window_start(
                place(rule, fresh, now, None if rule.limit["start"] == "calendar" else now), rule
            )
            for key in keys:
                who = subject_of(key)
                record = self.state.get(None, SUBJECT, key)
                spot = place(rule, who, now, anchor_of(rule, record, now))
                values = [counters.get(c, 0) for c in spot.counters]
                credits = counters.get(spot.credits, 0) if spot.credits else 0
                s = spot.standing(values, credits, now)
                first = spot.counters[0][2]
                start = min(start, _window_start(spot, rule))
                refused = sum(v for hour, v in refusals[key] if hour + HOUR > first)
                if s.used or refused or credits:
                    items.append(
                        {
                            "subject": who,
                            "used": s.used,
                            "remaining": s.remaining,
                            "refused": refused,
                        }
                    )
        items.sort(key=lambda item: (-item["used"], item["subject"]["kind"], item["subject"]["id"]))
        return {"limitId": rule.id, "windowStart": iso(start), "items": items[:size]}

    def query(
        self, limit_id: Any, subject: Any, start: Any, end: Any, granularity: Any
    ) -> dict[str, Any]:
        step = {"hour": HOUR, "day": DAY}[
            choice(granularity or "day", "granularity", ("hour", "day"))
        ]
        who = None if subject is None else subject_key(subject_text(subject, "subject"))
        with self.state.engine.lock:
            now = self.state.now()
            rule = self.state.rule(limit_id)
            until = now if end is None else moment(end, "to")
            since = until - 30 * DAY if start is None else moment(start, "from")
            if since > until:
                raise invalid("from", "must not be after to")
            first = math.floor(since) - math.floor(since) % step
            # One point per bucket from the first through the one holding `to`.
            count = int((until - first) // step) + 1
            if count > MAX_POINTS:
                raise invalid(
                    "from",
                    f"at most {MAX_POINTS} points, and from {iso(since)} to {iso(until)} by "
                    f"{granularity or 'day'} is {count}; ask for a shorter range"
                    + (" or by day" if step == HOUR else ""),
                )
            sums: dict[int, dict[str, int]] = defaultdict(
                lambda: {"used": 0, "allowed": 0, "refused": 0}
            )
            names = {
                rule.id + USED: "used",
                rule.id + ALLOWED: "allowed",
                rule.id + REFUSED: "refused",
            }
            for (q, key, hour), value in self.state.ledger.counters().items():
                name = names.get(q)
                if (
                    name is not None
                    and (who is None or key == who)
                    and since - step < hour <= until
                ):
                    sums[hour - hour % step][name] += value
        points = []
        at = first
        while at <= until:
            points.append(
                {"start": iso(at), **sums.get(at, {"used": 0, "allowed": 0, "refused": 0})}
            )
            at += step
        return {
            "limitId": rule.id,
            "granularity": "hour" if step == HOUR else "day",
            "points": points,
        }


def _counts(limit: Mapping[str, Any]) -> tuple[str, ...]:
    """What a limit counts (its fixed fields), as a key."""
    return tuple(json.dumps(limit[field], sort_keys=True) for field in FIXED)


def _window_start(spot: Any, rule: Rule) -> float:
    """When a subject's current window began: a balance or slots count since the limit
    was made; the others from their period's (or oldest slot's) start."""
    if rule.limit["window"] in ("total", "concurrent"):
        return moment(rule.limit["createdAt"], "createdAt")
    return float(spot.counters[0][2])


def _subject_answer(who: dict[str, str], record: Mapping[str, Any]) -> dict[str, Any]:
    when = record.get("billingDate", record.get("firstCheckAt"))
    return {"subject": who, "billingDate": None if when is None else iso(float(when))}


def _cursor(place: int) -> str:
    return base64.urlsafe_b64encode(f"lim:{place}".encode()).decode().rstrip("=")


def _decoded_cursor(cursor: Any) -> int:
    try:
        text = str(cursor)
        kind, _, place = (
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().partition(":")
        )
        if kind != "lim" or not place.isdigit():
            raise ValueError(place)
        return int(place)
    except (ValueError, UnicodeDecodeError):
        raise invalid("cursor", "not a cursor of this list; start again without one") from None
