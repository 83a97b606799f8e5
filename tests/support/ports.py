"""Ports for servers a test starts and that bind them itself (nats-server, ``crdtmem serve``).

A port taken from the kernel with ``bind(0)`` and closed again is one of the ephemeral ports: until
the server binds it, any outgoing connection on the machine may be given it as its local port, and
then the server fails with "address already in use". These ports are picked below the ephemeral
range instead, where the kernel never hands one out unasked, and never twice in one test run.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()


def _below_ephemeral() -> range:
    try:
        low = int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(low, 12000)
    return range(max(1024, top - 10000), top)


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range, not given before."""
    ports = _below_ephemeral()
    for _ in range(200):
        port = random.choice(ports)
        if port in _given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")
