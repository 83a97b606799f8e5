"""The live dashboard every node serves at ``GET /dashboard``: plain HTML, CSS and JavaScript.

The page is a client of the public API and nothing more: it lists memories and follows
``GET /v1/events`` (SSE, resumed with Last-Event-ID), polls ``GET /v1/status`` for peers, links,
modes and lag, lists ``GET /v1/conflicts`` and resolves them with
``POST /v1/memories/{id}/resolve``, and searches with ``POST /v1/search``. The token comes from the
page's own URL (``/dashboard?token=...``) and goes out as ``Authorization: Bearer`` (``?token=`` on
the EventSource). The static files carry no data, so they are public; every API call is
authenticated as usual.
"""

from ._static import routes

__all__ = ["routes"]
