"""Real replica servers in separate processes (``python -m crdtmem serve``) for tests."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .ports import free_port


class ServerProcess:
    """One ``crdtmem serve`` process. ``start()`` waits until it serves; ``url`` is where."""

    def __init__(
        self,
        workdir: Path,
        replica_id: str,
        *,
        peers: list[str] | None = None,
        channels: list[str] | None = None,
        tokens: Path | None = None,
        peer_token: str | None = None,
        port: int = 0,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.workdir = workdir
        self.replica_id = replica_id
        self.db = workdir / f"{replica_id}.db"
        self.peers = list(peers or [])
        self.channels = list(channels or [])
        self.tokens = tokens
        self.peer_token = peer_token
        self.port = port or free_port()
        """Below the ephemeral range, so a restarted server finds its port free again."""
        self.extra = list(extra or [])
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = workdir / f"{replica_id}.log"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "crdtmem",
            "serve",
            "--db",
            str(self.db),
            "--replica-id",
            self.replica_id,
            "--port",
            str(self.port),
        ]
        for peer in self.peers:
            cmd += ["--peer", peer]
        for channel in self.channels:
            cmd += ["--channel", channel]
        if self.tokens:
            cmd += ["--tokens", str(self.tokens)]
        if self.peer_token:
            cmd += ["--peer-token", self.peer_token]
        return cmd + self.extra

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start the process and wait (at most ``timeout`` seconds) for its "serving" line; a server
        that exits or hangs before it is killed and reported with the end of its log."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        log = self.log.open("a")
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log, env=env)
        log.close()
        try:
            line = _read_line(self.proc, timeout)
        except RuntimeError as exc:
            self.kill()
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"{self.replica_id} did not start: {exc}\n{tail}") from None
        info: dict[str, Any] = json.loads(line)
        self.url = info["url"]
        if not self.port:
            self.port = int(self.url.rsplit(":", 1)[1])  # keep the port across restarts
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; only what was committed survives."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line ``proc`` writes to stdout, waiting at most ``timeout`` seconds for it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"no 'serving' line within {timeout} s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"it exited (status {proc.wait()}) before serving")
            data += chunk
    return data.split(b"\n", 1)[0].decode()
