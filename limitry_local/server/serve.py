"""``limitry-local serve``: uvicorn running the app, one Tracker per worker on the ``--db`` file.

Workers are processes (uvicorn's supervisor starts them), each with its own
Tracker on the same SQLite file.  The file's write lock keeps quota
admission exact across them; rate-limit buckets are per process (see
docs/server.md).  uvicorn turns Ctrl-C and SIGTERM into a graceful
shutdown, whose last step closes the Tracker: a batched ledger commits its
pending events before the process exits.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from limitry_local.ledger import Durability
from limitry_local.server.app import create_app
from limitry_local.tracker import Tracker

ENV_API_KEY = "LIMITRY_LOCAL_API_KEY"
"""The API key, when ``--api-key`` is not given (so it stays out of the process list)."""
_ENV_SETTINGS = "LIMITRY_LOCAL_SERVE_SETTINGS"
# How the command hands its settings to worker processes, which uvicorn
# starts afresh and which build the app by importing app_from_environment.


@dataclass(frozen=True)
class Settings:
    """What each worker needs to open its Tracker and build the app."""

    db: str
    api_key: str | None = None
    durability: Durability = "normal"
    flush_ms: float = 50.0
    timeout: float = 5.0

    def tracker(self) -> Tracker:
        return Tracker(
            Path(self.db),
            timeout=self.timeout,
            durability=self.durability,
            flush_ms=self.flush_ms,
        )


def app_from_environment() -> Starlette:
    """The app of one worker process: uvicorn's factory, called once in each worker."""
    settings = Settings(**json.loads(os.environ[_ENV_SETTINGS]))
    return create_app(settings.tracker(), api_key=settings.api_key, close_tracker=True)


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    access_log: bool = True,
    log_level: str = "info",
) -> None:
    """Serve until Ctrl-C or SIGTERM; returns once every worker has closed its Tracker."""
    # Opened once here first: a bad --db fails before anything listens, and the
    # workers find the schema made instead of racing to make it.
    settings.tracker().close()
    os.environ[_ENV_SETTINGS] = json.dumps(asdict(settings))
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        lifespan="on",
        # The hosted API names no server; the header would only cost bytes.
        server_header=False,
    )
