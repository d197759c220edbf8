"""``/v1/user/...`` and ``/v1/workspace/...``: 501, account management is not emulated offline.

The 1.0 SDK's ``user`` and ``workspace`` resources manage the hosted account:
people, their tokens, members, invitations, teams, the audit trail,
approvals, webhooks, the plan's usage.  Offline there is one workspace (the
ledger file) and no people, so none of it has a meaning here; each path
answers 501 ``not_available_offline`` in the 1.0 envelope, naming what it
is, rather than a 404 that would read as a typo in the caller's code.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.server.envelope1 import error_response
from limitry_local.server.routes import V1

# What each resource under /v1/workspace (or /v1/user) is, by its first segment.
WHAT = {
    "usage": "the plan's usage",
    "members": "the workspace's members",
    "invitations": "invitations",
    "teams": "teams",
    "audit-events": "the audit trail",
    "event-types": "webhook event types",
    "approval-actions": "approvals",
    "approval-requests": "approvals",
    "webhook-endpoints": "webhook endpoints",
    "me": "the signed-in user",
    "token": "personal access tokens",
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def not_offline(request: Request) -> Response:
    first = request.path_params.get("rest", "").partition("/")[0]
    owner = "the user" if request.url.path.startswith(V1 + "/user") else "the workspace"
    what = WHAT.get(first, f"a part of {owner}") if first else owner
    message = (
        f"{request.method} {request.url.path} ({what}) is part of the hosted service's "
        "account management, which limitry-local does not emulate; offline there is one "
        "workspace, the ledger file, and no users, members or webhooks.  Checks, limits, "
        "reservations, subjects and usage are served (docs/server.md)."
    )
    return error_response(HTTPStatus.NOT_IMPLEMENTED, message)


ROUTES = [
    Route(V1 + "/user", not_offline, methods=METHODS),
    Route(V1 + "/user/{rest:path}", not_offline, methods=METHODS),
    Route(V1 + "/workspace", not_offline, methods=METHODS),
    Route(V1 + "/workspace/{rest:path}", not_offline, methods=METHODS),
]
