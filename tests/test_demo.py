"""`crdtmem demo`, the README's main command: every step happens and it exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
