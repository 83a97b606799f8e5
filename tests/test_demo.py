"""`crdtmem demo`, the README's main command: every step happens and it exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest


def test_demo_runs_every_step_and_exits_zero(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crdtmem", "demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for step in (
        "1. phone learned",
        "2. phone went offline",
        "3. phone (offline) and laptop",
        "4. concurrent +2",
        "5. support agent searched",
    ):
        assert step in out, f"missing step {step!r} in:\n{out}"
    assert "conflict on 'content' flagged on all 4 replicas" in out
    assert "merged to 5 everywhere" in out and "['eggs', 'bread']" in out
    assert "top hit 'Refund policy" in out
    assert out.rstrip().endswith("Done: every replica converged, nothing was lost.")
    assert {p.name for p in tmp_path.glob("*.db")} == {"admin.db", "phone.db", "laptop.db", "support.db"}


def _consecutive_demos(tmp_path: Path, runs: int) -> None:
    """``runs`` demos one after another, each in a fresh directory: every one exits 0 and prints no
    traceback (a link that a peer closes mid-frame, or at shutdown, ends quietly)."""
    for run in range(runs):
        directory = tmp_path / f"run{run}"
        done = subprocess.run(
            [sys.executable, "-m", "crdtmem", "demo", "--dir", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"run {run} exited {done.returncode}:\n{output}"
        assert "Traceback" not in output, f"run {run} printed a traceback:\n{output}"
        assert "Error handling request" not in output, f"run {run}:\n{output}"
        assert done.stdout.rstrip().endswith("Done: every replica converged, nothing was lost."), output


def test_three_demos_in_a_row_exit_zero_without_a_traceback(tmp_path: Path) -> None:
    _consecutive_demos(tmp_path, 3)


@pytest.mark.soak
def test_a_hundred_demos_in_a_row_exit_zero_without_a_traceback(tmp_path: Path) -> None:
    _consecutive_demos(tmp_path, 100)


def test_demo_with_the_semantic_embedder(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crdtmem", "demo", "--dir", str(tmp_path), "--embedder", "minilm"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sentence-transformers/all-MiniLM-L6-v2 embedder, semantic" in done.stdout
    assert "top hit 'Refund policy" in done.stdout


def test_demo_keep_stays_up_with_the_dashboard_until_stopped(tmp_path: Path) -> None:
    """``crdtmem demo --keep``: after the steps it prints the dashboard's URL, serves it and the API,
    and stops cleanly on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crdtmem", "demo", "--dir", str(tmp_path), "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # bounded: the demo ends its steps or exits
            seen.append(line)
            if line.startswith("Dashboard: "):
                break
        output = "".join(seen)
        assert "Done: every replica converged, nothing was lost." in output, output
        url = seen[-1].split()[1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard"), url
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and "<html" in page.read().decode().lower()
        base = url.removesuffix("/dashboard")
        with urllib.request.urlopen(f"{base}/v1/status", timeout=30) as status:
            assert json.loads(status.read())["replica_id"] == "admin"
        assert proc.poll() is None, "the demo did not stay up"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
