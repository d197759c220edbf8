"""``GET /v1/project``: the project the API key belongs to (offline, the Tracker's).

Answered by :class:`~limitry_local.resources.ProjectInfo`, as the in-process
client's ``client.project.get()`` is, so both faces say the same: ``id`` is
the Tracker's ``project_id``, organization ``org_local``, named and slugged
``local``.  Offline a project has no history of its own: ``createdAt`` and
``updatedAt`` are when this worker was first asked for it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.resources import ProjectInfo
from limitry_local.server.routes import V1, tracker_of
from limitry_local.server.wire import respond


async def get(request: Request) -> Response:
    state = request.app.state
    # One per app, so the first answer's times stay those of every later one.
    if getattr(state, "project", None) is None:
        state.project = ProjectInfo(tracker_of(request).engine)
    project: ProjectInfo = state.project
    return respond(project.get())


ROUTES = [Route(V1 + "/project", get, methods=["GET"])]
