"""Fixtures shared by the tests that talk to real servers."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from hypothesis import HealthCheck, settings

import crdtmem
from tests.support.nats import NatsCluster, NatsServer
from tests.support.processes import ServerProcess

# Property-based tests draw the same examples on every default run, whichever tests are selected, so a
# run's verdict does not depend on luck or on the selection: what fails in the full suite fails when
# its file runs alone, and the other way round. Hypothesis (6.170 here) mixes into what it draws
# the constants of the non-test modules in sys.modules (files outside site-packages, the standard
# library and test directories), even with derandomize=True, and has no setting to turn that off. So
# every crdtmem module is imported here, before any test is collected: the pool of constants is then
# the same for every selection and does not grow while tests run. Tests that load a script of
# benchmarks/ take it out of sys.modules again (tests/support/scripts.py). Soak runs (`-m soak`) and
# CRDTMEM_HYPOTHESIS=explore draw fresh random examples each time, to find what the fixed ones miss.


def _import_every_crdtmem_module() -> None:
    """Import all of crdtmem but ``__main__`` (it runs the CLI); a module whose optional extra is
    not installed (ImportError, MissingExtra) is skipped, as in any run without that extra."""
    for info in pkgutil.walk_packages(crdtmem.__path__, "crdtmem."):
        if info.name.rpartition(".")[2] == "__main__":
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:
            continue


_import_every_crdtmem_module()
# No per-example deadline and no too-slow health check: both measure wall-clock time, which on a
# loaded machine (or during a long garbage collection late in the suite) says nothing about the
# software; an example that fails them fails as Flaky or DeadlineExceeded, not for what it checks.
_TIMING_FREE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("fixed", derandomize=True, database=None, print_blob=True, **_TIMING_FREE)
settings.register_profile("explore", derandomize=False, print_blob=True, **_TIMING_FREE)


def pytest_configure(config: pytest.Config) -> None:
    soak = "soak" in (config.getoption("markexpr") or "").replace("not soak", "")
    chosen = os.environ.get("CRDTMEM_HYPOTHESIS") or ("explore" if soak else "fixed")
    settings.load_profile(chosen)


def exploring() -> bool:
    """True when property-based tests draw random examples (see pytest_configure)."""
    return settings().derandomize is False


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
