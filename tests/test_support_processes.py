"""The test harness's own guarantees: a server that never starts cannot hang the suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess


class _Hangs(ServerProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(120)"]


class _Exits(ServerProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]


def test_a_server_that_never_serves_is_killed_after_the_start_timeout(tmp_path: Path) -> None:
    proc = _Hangs(tmp_path, "hung")
    with pytest.raises(RuntimeError, match="no 'serving' line within 1"):
        proc.start(timeout=1)
    assert not proc.alive and proc.proc is None


def test_a_server_that_exits_before_serving_is_reported_with_its_log(tmp_path: Path) -> None:
    proc = _Exits(tmp_path, "dead")
    with pytest.raises(RuntimeError, match=r"(?s)exited \(status 3\).*boom"):
        proc.start(timeout=60)


def test_a_real_server_starts_and_stops(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, "real").start()
    try:
        assert proc.alive and proc.url.startswith("http://127.0.0.1:")
    finally:
        proc.stop()
    assert not proc.alive
