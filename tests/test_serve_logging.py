"""Logging as ``crdtmem serve`` configures it, read from real server processes' stderr: an access log
line per request (bearer tokens in the query left out), peer connect and disconnect lines on both
ends, JSON lines with ``--log-format json``, and ``--log-level`` / ``--no-access-log``."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.processes import ServerProcess

U1 = "user:u1:memories"


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
        return int(response.status)


def _json_lines(proc: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.log.read_text().splitlines() if line.strip()]


def _until(found: Callable[[], Any], what: str, proc: ServerProcess) -> Any:
    for _ in range(400):  # bounded: log lines are written as the events happen
        value = found()
        if value:
            return value
        time.sleep(0.025)
    raise AssertionError(f"no {what} in {proc.log}:\n{proc.log.read_text()[-3000:]}")


def _event(proc: ServerProcess, event: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((r for r in _json_lines(proc) if r.get("event") == event), None)

    found: dict[str, Any] = _until(find, f"{event} line", proc)
    return found


def test_json_logs_carry_access_and_peer_events(tmp_path: Path, procs: list[ServerProcess]) -> None:
    json_logs = ["--log-format", "json"]
    hub = ServerProcess(tmp_path, "hub", channels=[U1], extra=json_logs)
    procs.append(hub.start())
    edge = ServerProcess(tmp_path, "edge", peers=[hub.url], channels=[U1], extra=json_logs)
    procs.append(edge.start())

    connected = _event(edge, "peer_connected")
    assert connected["peer"] == hub.url and connected["peer_id"] == "hub" and connected["level"] == "INFO"
    assert connected["logger"] == "crdtmem.peer" and connected["timestamp"].endswith("Z")
    link = _event(hub, "link_connected")
    assert link["peer_id"] == "edge" and link["channels"] == [U1]

    assert _get(f"{hub.url}/v1/memories?limit=5&token=very-secret") == 200

    def access() -> dict[str, Any] | None:
        lines = [r for r in _json_lines(hub) if r.get("logger") == "crdtmem.access"]
        return next((r for r in lines if r["path"].startswith("/v1/memories")), None)

    line = _until(access, "access line", hub)
    assert (
        line["method"] == "GET" and line["status"] == 200 and line["path"] == "/v1/memories?limit=5&token=***"
    )
    assert (
        isinstance(line["duration_ms"], float)
        and line["principal"] == "local"
        and line["remote"] == "127.0.0.1"
    )
    assert "very-secret" not in hub.log.read_text()
    serving = _event(hub, "serving")
    assert serving["url"] == hub.url and serving["replica_id"] == "hub"

    hub.stop()
    gone = _event(edge, "peer_disconnected")
    assert gone["peer_id"] == "hub" and gone["reason"]
    unreachable = _event(edge, "peer_unreachable")
    assert unreachable["level"] == "WARNING" and "Error" in unreachable["reason"]
    assert _event(hub, "link_disconnected")["peer_id"] == "edge"
    edge.stop()
    for proc in (hub, edge):  # every line is JSON: nothing else was written to stderr
        assert all(isinstance(record, dict) for record in _json_lines(proc))


def test_text_logs_and_levels(tmp_path: Path, procs: list[ServerProcess]) -> None:
    plain = ServerProcess(tmp_path, "plain")
    quiet = ServerProcess(tmp_path, "quiet", extra=["--log-level", "warning"])
    no_access = ServerProcess(tmp_path, "no-access", extra=["--no-access-log"])
    for proc in (plain, quiet, no_access):
        procs.append(proc.start())
        assert _get(f"{proc.url}/v1/status") == 200
    line = _until(
        lambda: next((ln for ln in plain.log.read_text().splitlines() if "crdtmem.access" in ln), None),
        "access line",
        plain,
    )
    stamp, level, logger, method, path, status, *_ = line.split()
    assert (level, logger, method, path, status) == ("INFO", "crdtmem.access", "GET", "/v1/status", "200")
    assert stamp.endswith("Z") and "serving at" in plain.log.read_text()
    for proc in (quiet, no_access):
        proc.stop()
        text = proc.log.read_text()
        assert "crdtmem.access" not in text
        assert "serving open on loopback" in text  # a warning: kept at every level
    assert "serving at" not in quiet.log.read_text() and "serving at" in no_access.log.read_text()
