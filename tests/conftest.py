"""Fixtures shared by the tests that talk to real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.support.nats import NatsCluster, NatsServer
from tests.support.processes import ServerProcess


@pytest.fixture
def procs() -> Iterator[list[ServerProcess]]:
    """`crdtmem serve` processes a test starts (append them); all stopped afterwards."""
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client; reads time out after 20 s (event streams send a heartbeat every 15 s)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=20)) as client:
        yield client


@pytest.fixture
def nats_server(tmp_path) -> Iterator[NatsServer]:
    """One NATS server with JetStream on loopback, stopped afterwards."""
    server = NatsServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def nats_cluster(tmp_path) -> Iterator[NatsCluster]:
    """Three NATS servers with JetStream, clustered on loopback (R3 streams), stopped afterwards."""
    cluster = NatsCluster(tmp_path).start()
    yield cluster
    for server in cluster.servers:
        server.kill()
