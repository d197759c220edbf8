"""The v0 REST API's routes, one module per resource, each a ``ROUTES`` list under ``/v1``."""

from __future__ import annotations

from starlette.requests import Request

from limitry_local.tracker import Tracker


def tracker_of(request: Request) -> Tracker:
    """The app's Tracker (one per worker process), set by ``create_app``."""
    tracker: Tracker = request.app.state.tracker
    return tracker
