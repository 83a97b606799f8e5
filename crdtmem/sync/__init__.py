"""Replication between replicas over aiohttp: frames, links, the server side and peer clients.

Layout::

    protocol.py  versioned msgpack frames of the WebSocket link (hello, deltas, ack, mode, error)
    link.py      one replication link over a WebSocket, the same on both ends: push + receive
    server.py    the aiohttp routes replicas sync through (pull pages, push, WebSocket)
    peer.py      a peer client: pull first, then a push link; reconnect with jittered backoff
"""
