"""Glue between limitry_local and the code around it; none of it is imported by default.

- :mod:`limitry_local.integrations.openai` and :mod:`.anthropic`: a track
  event from an SDK response's usage (``event_from(response, customer_id=...)``).
- :mod:`limitry_local.integrations.streaming`: :func:`track_stream`, reserving
  when a streamed call starts and committing the usage its last chunk reports.
- :mod:`limitry_local.integrations.asgi`: :class:`LimitryMiddleware`, enforcing
  limits per HTTP request in any ASGI app (Starlette, FastAPI, ...).

Each module is duck-typed: it reads attributes or dict keys and imports no
SDK or framework, so none is a dependency of limitry_local.  See
docs/integrations.md.
"""
