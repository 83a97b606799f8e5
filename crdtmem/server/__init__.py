"""The HTTP face of a replica: one aiohttp application serving replication, the REST API, the event
feed, status and metrics. :class:`~crdtmem.server.node.Node` runs it next to a replica and its peers.

Layout::

    node.py     Node: replica + aiohttp server + peer clients, as an async context manager
    context.py  NodeContext: what the routes need of a node (they never import node.py)
    sync_routes.py  /v1/sync/pull, /v1/sync/push, /v1/sync/ws
    app.py      the Application: middlewares (auth, errors, limits) and route tables
    auth.py     bearer tokens -> principals; write rate limits
    errors.py   CrdtmemError -> HTTP status + JSON body, in one place
    rest.py     /v1/memories..., /v1/conflicts, /v1/search
    feed.py     /v1/events as Server-Sent Events and as a WebSocket
    status.py   /v1/status and /metrics
    observe.py  the access log; latency of writes and searches
"""

from .node import Node, PeerConfig

__all__ = ["Node", "PeerConfig"]
