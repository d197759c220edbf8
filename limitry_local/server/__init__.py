"""The hosted v0 REST API and the Limitry 1.0 API over HTTP: ``limitry-local serve``.

A Starlette app (the ``[server]`` extra) over one :class:`~limitry_local.Tracker`,
so a curl script, a TypeScript service, the ``limitry`` 1.0 SDK or any HTTP
client of the hosted API runs offline against a local ledger file::

    $ limitry-local serve --db usage.db            # http://127.0.0.1:8080/v1/track

:func:`create_app` builds the app for a Tracker you hold (tests, embedding);
the command builds one per worker process on the ``--db`` file.  Routes, the
error envelope and what differs from the hosted service: docs/server.md.
"""

from __future__ import annotations

from limitry_local.server.app import create_app

__all__ = ["create_app"]
