"""A Limitry 1.0 limit: its fields checked, its defaults filled in, its sentence, a sync's plan.

A limit is kept as the JSON object the API answers (``Limit`` in the SDK's
typed dicts), so reading one back is the answer.  What it counts (subject,
action, unit, window, every, start, rolling) is fixed once created; name,
amount, enabled and fail mode change in place, and every change adds one
to ``version``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from limitry_local.errors import ApiError, is_text
from limitry_local.windows import PERIODIC, ROLLING, WINDOWS

STARTS = ("calendar", "billing_date", "first_use")
FAIL_MODES = ("open", "closed")
FIXED = ("subject", "action", "unit", "window", "every", "start", "rolling")
"""What a limit counts: refused by an update, a new limit is needed."""
MUTABLE = ("name", "amount", "enabled", "failMode")
CREATE_FIELDS = ("name", *FIXED, "amount", "enabled", "failMode")
MAX_AMOUNT = 1_000_000_000_000
MAX_TEXT = 200


class _Missing:
    """A field the caller left out, which the check of the field then names."""

    def __repr__(self) -> str:
        return "nothing (it is required)"


MISSING: Any = _Missing()


def shown(value: Any) -> str:
    """A value as the request wrote it: JSON (``null``, ``true``), else Python's repr."""
    if isinstance(value, _Missing):
        return repr(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_request", f"{field}: {message}")


def text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid(field, f"expected a non-empty string, got {shown(value)}")
    if len(value) > MAX_TEXT:
        raise invalid(field, f"at most {MAX_TEXT} characters, got {len(value)}")
    if not is_text(value):
        # A lone surrogate: JSON can write one, no ledger can store it.
        raise invalid(field, "must be valid Unicode text (no lone surrogates)")
    return value


def whole(value: Any, field: str, low: int, high: int) -> int:
    """A whole number in ``[low, high]``; ``2.0`` is 2, as the SDK sends a float cost."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(field, f"expected a whole number from {low} to {high}, got {shown(value)}")
    return value


def flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, f"expected true or false, got {shown(value)}")
    return value


def choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise invalid(field, f"expected one of {', '.join(choices)}, got {shown(value)}")
    return str(value)


def limit_subject(value: Any, field: str = "subject") -> dict[str, str | None]:
    """``{"kind": ..., "id": ...}``: ``id`` absent or null for every subject of the kind."""
    if not isinstance(value, Mapping):
        raise invalid(field, f'expected an object such as {{"kind": "user"}}, got {shown(value)}')
    unknown = set(value) - {"kind", "id"}
    if unknown:
        raise invalid(f"{field}.{sorted(unknown)[0]}", "unknown field; a subject has kind and id")
    kind = text(value.get("kind"), f"{field}.kind")
    found = value.get("id")
    return {"kind": kind, "id": None if found is None else text(found, f"{field}.id")}


def _new_subject(value: Any) -> dict[str, str | None]:
    """A new limit's subject: its kind one path segment and the part before ":" of
    "kind:id" (found in review: over HTTP, kind "team/eu" was served as kind "team").
    Checked when a limit is made, not on every check: limits made before still answer."""
    subject = limit_subject(value)
    kind = subject["kind"]
    if kind is not None and ("/" in kind or ":" in kind):
        raise invalid("subject.kind", f"may not contain '/' or ':', got {shown(kind)}")
    return subject


def check_subject(value: Any, field: str = "subject") -> dict[str, str]:
    """Who acts, or a shared pool: both ``kind`` and ``id``."""
    subject = limit_subject(value, field)
    kind, subject_id = subject["kind"], subject["id"]
    if kind is None or subject_id is None:
        raise invalid(f"{field}.id", "expected who exactly, such as usr_123")
    return {"kind": kind, "id": subject_id}


def sentence(limit: Mapping[str, Any]) -> str:
    """The default name: the sentence the limit reads as, "100 units per day for every user"."""
    amount, unit, window, every = limit["amount"], limit["unit"], limit["window"], limit["every"]
    if window == "total":
        measure = f"{amount} {unit} in total"
    elif window == "concurrent":
        measure = f"{amount} {unit} at once"
    else:
        span = window if every == 1 else f"{every} {window}s"
        measure = f"{amount} {unit} per {'rolling ' if limit['rolling'] else ''}{span}"
    subject = limit["subject"]
    who = (
        f"every {subject['kind']}"
        if subject["id"] is None
        else f"{subject['kind']} {subject['id']}"
    )
    action = "" if limit["action"] == "*" else f" to {limit['action']}"
    return f"{measure} for {who}{action}"


def default_named(limit: Mapping[str, Any]) -> bool:
    """Whether the limit's name is its sentence, for its amount or an earlier one:
    the name a limit made without one has (an update of the amount keeps it)."""
    first = str(limit["name"]).split(" ", 1)[0]
    if not (first.isascii() and first.isdigit()):
        return False
    return bool(sentence(dict(limit, amount=int(first))) == limit["name"])


def new_limit(fields: Mapping[str, Any], limit_id: str, now: str) -> dict[str, Any]:
    """A limit from the create (or sync) fields, every default filled in."""
    unknown = set(fields) - set(CREATE_FIELDS)
    if unknown:
        raise invalid(sorted(unknown)[0], "unknown field for a limit")
    for required in ("subject", "amount", "window"):
        if fields.get(required, MISSING) in (None, MISSING):
            raise invalid(required, "required")
    window = choice(fields["window"], "window", WINDOWS)
    every = whole(fields.get("every", 1), "every", 1, 1000)
    rolling = flag(fields.get("rolling", False), "rolling")
    start = choice(fields.get("start", "calendar"), "start", STARTS)
    if rolling and window not in ROLLING:
        raise invalid("rolling", f"only a minute, hour or day window can roll, not {window!r}")
    if rolling and (every != 1 or start != "calendar"):
        raise invalid("rolling", "a rolling window has every 1 and start calendar")
    if window not in PERIODIC and every != 1:
        raise invalid("every", f"a {window} limit has no periods: every is 1")
    if window not in PERIODIC and start != "calendar":
        raise invalid("start", f"a {window} limit has no periods: start is calendar")
    limit: dict[str, Any] = {
        "id": limit_id,
        "name": "",
        "subject": _new_subject(fields["subject"]),
        "action": text(fields.get("action", "*"), "action"),
        "amount": whole(fields["amount"], "amount", 0, MAX_AMOUNT),
        "unit": text(fields.get("unit", "units"), "unit"),
        "window": window,
        "every": every,
        "start": start,
        "rolling": rolling,
        "enabled": flag(fields.get("enabled", True), "enabled"),
        "archivedAt": None,
        "failMode": choice(fields.get("failMode", "open"), "failMode", FAIL_MODES),
        "version": 1,
        "lastCheckedAt": None,
        "createdAt": now,
        "updatedAt": now,
    }
    name = fields.get("name")
    if name is None:
        name = sentence(limit)
        if len(name) > MAX_TEXT:
            # A name longer than any name can be could never be sent back.
            raise invalid(
                "name",
                f"the default name (the limit's sentence) has {len(name)} characters, "
                f"more than {MAX_TEXT}: give the limit a name",
            )
    limit["name"] = text(name, "name")
    return limit


def patched(limit: Mapping[str, Any], fields: Mapping[str, Any], now: str) -> dict[str, Any]:
    """``limit`` with ``fields`` changed; a fixed field given a new value is refused."""
    unknown = set(fields) - set(CREATE_FIELDS)
    if unknown:
        raise invalid(sorted(unknown)[0], "unknown field for a limit")
    for field in FIXED:
        if field in fields:
            given = limit_subject(fields[field]) if field == "subject" else fields[field]
            if given != limit[field]:
                raise invalid(
                    field,
                    "what a limit counts is fixed once created: create a new limit "
                    "and archive this one",
                )
    changed = dict(limit)
    if "name" in fields:
        changed["name"] = text(fields["name"], "name")
    if "amount" in fields:
        changed["amount"] = whole(fields["amount"], "amount", 0, MAX_AMOUNT)
    if "enabled" in fields:
        changed["enabled"] = flag(fields["enabled"], "enabled")
    if "failMode" in fields:
        changed["failMode"] = choice(fields["failMode"], "failMode", FAIL_MODES)
    if changed != limit:
        changed["version"] = limit["version"] + 1
        changed["updatedAt"] = now
    return changed


def differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The mutable fields a sync changes, as ``{field: {"from": ..., "to": ...}}``."""
    return {
        field: {"from": before[field], "to": after[field]}
        for field in MUTABLE
        if before[field] != after[field]
    }
