"""The Limitry 1.0 API under ``/v1``: checks, limits, credits, reservations, subjects, usage.

Each route hands its path parameters, query (camelCase, as sent) and JSON
body (camelCase) to the in-process face (:class:`limitry_local.limitry.Limitry`,
one per app over its Tracker) under the face's snake_case keywords, and the
``Idempotency-Key`` header as ``idempotency_key``.  What the face answers goes
out as it is; what it raises (``ApiError``) is answered in the 1.0 envelope
(server/envelope1.py).  The routes check only what the face cannot: a body
field the call does not take, or a required one missing, is a 400 naming it.

``GET /v1/usage`` is shared with v0: with ``limitId`` it is the 1.0 usage
query, without it v0's usage summary (routes/usage.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.limitry import ApiError, Limitry
from limitry_local.server.envelope1 import wants_usage_query
from limitry_local.server.routes import V1, usage
from limitry_local.server.wire import decode_object, query_text, respond_json

NO_CONTENT = 204


def face(request: Request) -> Limitry:
    """The app's 1.0 face over its Tracker, set by ``create_app``."""
    limitry: Limitry = request.app.state.limitry
    return limitry


def _key(request: Request) -> str | None:
    return request.headers.get("idempotency-key") or None


async def _body(
    request: Request, call: str, names: Mapping[str, str], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The JSON body's fields under the face's keywords (``names``: wire name -> keyword).

    An empty body is ``{}``: the SDK sends none to the calls that take none
    (archive, restore, release) and ``{}`` to those whose fields are all optional.
    """
    raw = await request.body()
    body = decode_object(raw) if raw.strip() else {}
    for name in body:
        if name not in names:
            takes = f"it takes {', '.join(names)}" if names else "it takes no body"
            raise ApiError(400, "invalid_request", f"{name}: not a field of {call}; {takes}")
    for name in required:
        if name not in body:
            raise ApiError(400, "invalid_request", f"{name}: required by {call}")
    return {names[name]: value for name, value in body.items()}


def _query(request: Request, names: Mapping[str, str]) -> dict[str, Any]:
    """The query parameters given, as sent (strings), under the face's keywords."""
    found = {keyword: query_text(request, wire) for wire, keyword in names.items()}
    return {keyword: value for keyword, value in found.items() if value is not None}


def _required(request: Request, name: str, call: str) -> str:
    value = query_text(request, name)
    if value is None:
        raise ApiError(400, "invalid_request", f"{name}: required (a query parameter of {call})")
    return value


def _ok(body: Any, status: int = 200) -> Response:
    return respond_json(body, status)


# Wire name -> the face's keyword, per call that takes a body.
CHECK = {
    "subject": "subject",
    "shared": "shared",
    "action": "action",
    "cost": "cost",
    "mode": "mode",
    "ttlSeconds": "ttl_seconds",
}
LIMIT = {
    "name": "name",
    "subject": "subject",
    "action": "action",
    "amount": "amount",
    "unit": "unit",
    "window": "window",
    "every": "every",
    "start": "start",
    "rolling": "rolling",
    "enabled": "enabled",
    "failMode": "fail_mode",
}
SYNC = {"limits": "limits", "archiveMissing": "archive_missing", "preview": "preview"}
CREDIT = {"subject": "subject", "amount": "amount", "note": "note"}
LIST_LIMITS = {
    "limit": "limit",
    "cursor": "cursor",
    "subjectKind": "subject_kind",
    "action": "action",
    "archived": "archived",
}
USAGE_QUERY = {"subject": "subject", "from": "from_", "to": "to", "granularity": "granularity"}


async def check(request: Request) -> Response:
    """``POST /v1/checks``: a decision, allowed or not, always 200."""
    args = await _body(request, "POST /v1/checks", CHECK, ("subject", "action"))
    return _ok(face(request).checks.create(**args, idempotency_key=_key(request)))


async def create_limit(request: Request) -> Response:
    args = await _body(request, "POST /v1/limits", LIMIT, ("subject", "amount", "window"))
    return _ok(face(request).limits.create(**args, idempotency_key=_key(request)), 201)


async def list_limits(request: Request) -> Response:
    return _ok(face(request).limits.list(**_query(request, LIST_LIMITS)))


async def get_limit(request: Request) -> Response:
    return _ok(face(request).limits.get(request.path_params["limit_id"]))


async def update_limit(request: Request) -> Response:
    """``PATCH``: any subset of the limit's fields; the face refuses changing what it counts."""
    args = await _body(request, "PATCH /v1/limits/{limitId}", LIMIT)
    limit_id = request.path_params["limit_id"]
    return _ok(face(request).limits.update(limit_id, idempotency_key=_key(request), **args))


async def archive_limit(request: Request) -> Response:
    await _body(request, "POST /v1/limits/{limitId}/archive", {})
    face(request).limits.archive(request.path_params["limit_id"], idempotency_key=_key(request))
    return Response(status_code=NO_CONTENT)


async def restore_limit(request: Request) -> Response:
    await _body(request, "POST /v1/limits/{limitId}/restore", {})
    limit_id = request.path_params["limit_id"]
    return _ok(face(request).limits.restore(limit_id, idempotency_key=_key(request)))


async def sync_limits(request: Request) -> Response:
    args = await _body(request, "POST /v1/limits/sync", SYNC, ("limits",))
    return _ok(face(request).limits.sync(**args, idempotency_key=_key(request)))


async def add_credit(request: Request) -> Response:
    call = "POST /v1/limits/{limitId}/credits"
    args = await _body(request, call, CREDIT, ("subject", "amount"))
    limit_id = request.path_params["limit_id"]
    credit = face(request).limits.credits.create(limit_id, **args, idempotency_key=_key(request))
    return _ok(credit, 201)


async def list_credits(request: Request) -> Response:
    return _ok(face(request).limits.credits.list(request.path_params["limit_id"]))


async def commit(request: Request) -> Response:
    args = await _body(request, "POST /v1/reservations/{id}/commit", {"cost": "cost"}, ("cost",))
    reservation_id = request.path_params["reservation_id"]
    answer = face(request).reservations.commit(
        reservation_id, **args, idempotency_key=_key(request)
    )
    return _ok(answer)


async def release(request: Request) -> Response:
    await _body(request, "POST /v1/reservations/{id}/release", {})
    reservation_id = request.path_params["reservation_id"]
    return _ok(face(request).reservations.release(reservation_id, idempotency_key=_key(request)))


async def extend(request: Request) -> Response:
    call = "POST /v1/reservations/{id}/extend"
    args = await _body(request, call, {"ttlSeconds": "ttl_seconds"})
    reservation_id = request.path_params["reservation_id"]
    answer = face(request).reservations.extend(
        reservation_id, **args, idempotency_key=_key(request)
    )
    return _ok(answer)


def _subject(request: Request) -> tuple[str, str]:
    return request.path_params["subject_kind"], request.path_params["subject_id"]


async def get_subject(request: Request) -> Response:
    return _ok(face(request).subjects.get(*_subject(request)))


async def update_subject(request: Request) -> Response:
    """``PATCH {"billingDate": ...}``: where the subject's ``billing_date`` periods start."""
    call = "PATCH /v1/subjects/{kind}/{id}"
    args = await _body(request, call, {"billingDate": "billing_date"}, ("billingDate",))
    subjects = face(request).subjects
    return _ok(subjects.update(*_subject(request), **args, idempotency_key=_key(request)))


async def reset_subject(request: Request) -> Response:
    """``{}`` resets every limit on the subject, ``{"limitId": ...}`` one."""
    args = await _body(request, "POST /v1/subjects/{kind}/{id}/reset", {"limitId": "limit_id"})
    subjects = face(request).subjects
    return _ok(subjects.reset(*_subject(request), **args, idempotency_key=_key(request)))


async def usage_query(request: Request) -> Response:
    """``GET /v1/usage``: with ``limitId`` the 1.0 usage series, else v0's summary."""
    if not wants_usage_query(request.url.query):
        return await usage.summary(request)
    limit_id = _required(request, "limitId", "GET /v1/usage")
    series = face(request).usage.query(limit_id=limit_id, **_query(request, USAGE_QUERY))
    return _ok(series)


async def standing(request: Request) -> Response:
    """``GET /v1/usage/standing?subject=kind:id&shared=kind:id,kind:id``: nothing is counted.

    ``shared`` given more than once is one subject each, whole: an id's comma
    cannot be told from the SDK's separator (docs/limitry-1.0.md).
    """
    subject = _required(request, "subject", "GET /v1/usage/standing")
    shared: str | list[str] | None = request.query_params.getlist("shared") or None
    if shared is not None and len(shared) == 1:
        shared = shared[0]
    return _ok(face(request).usage.standing(subject=subject, shared=shared))


async def usage_by_subject(request: Request) -> Response:
    limit_id = _required(request, "limitId", "GET /v1/usage/subjects")
    limit = query_text(request, "limit")
    return _ok(face(request).usage.subjects(limit_id=limit_id, limit=limit))


LIMIT_PATH = V1 + "/limits/{limit_id}"
RESERVATION_PATH = V1 + "/reservations/{reservation_id}"
# An id may hold "/" (the SDK sends it as %2F, which the server decodes before
# routing): the id is the rest of the path (found in review: "org/42" was a 404).
SUBJECT_PATH = V1 + "/subjects/{subject_kind}/{subject_id:path}"

ROUTES = [
    Route(V1 + "/checks", check, methods=["POST"]),
    Route(V1 + "/limits", create_limit, methods=["POST"]),
    Route(V1 + "/limits", list_limits, methods=["GET"]),
    # Before /limits/{limit_id}, or "sync" would be read as a limit's id.
    Route(V1 + "/limits/sync", sync_limits, methods=["POST"]),
    Route(LIMIT_PATH, get_limit, methods=["GET"]),
    Route(LIMIT_PATH, update_limit, methods=["PATCH"]),
    Route(LIMIT_PATH + "/archive", archive_limit, methods=["POST"]),
    Route(LIMIT_PATH + "/restore", restore_limit, methods=["POST"]),
    Route(LIMIT_PATH + "/credits", add_credit, methods=["POST"]),
    Route(LIMIT_PATH + "/credits", list_credits, methods=["GET"]),
    Route(RESERVATION_PATH + "/commit", commit, methods=["POST"]),
    Route(RESERVATION_PATH + "/release", release, methods=["POST"]),
    Route(RESERVATION_PATH + "/extend", extend, methods=["POST"]),
    Route(SUBJECT_PATH, get_subject, methods=["GET"]),
    Route(SUBJECT_PATH, update_subject, methods=["PATCH"]),
    Route(SUBJECT_PATH + "/reset", reset_subject, methods=["POST"]),
    Route(V1 + "/usage", usage_query, methods=["GET"]),
    Route(V1 + "/usage/standing", standing, methods=["GET"]),
    Route(V1 + "/usage/subjects", usage_by_subject, methods=["GET"]),
]
