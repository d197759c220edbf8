"""The v0 REST API's routes, one module per resource, each a ``ROUTES`` list under ``/v1``.

The prefix is part of each path rather than a ``Mount``: one routing level
less on every request, ``POST /v1/track`` first of all.
"""

from __future__ import annotations

from starlette.requests import Request

from limitry_local.tracker import Tracker

V1 = "/v1"


def tracker_of(request: Request) -> Tracker:
    """The app's Tracker (one per worker process), set by ``create_app``."""
    tracker: Tracker = request.app.state.tracker
    return tracker
