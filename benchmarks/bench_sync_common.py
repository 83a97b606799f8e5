"""Helpers shared by the replication benchmarks (``bench_sync_*.py``); not a benchmark itself.

- a system-wide monotonic clock (CLOCK_MONOTONIC is one clock for every process on Linux, so a
  timestamp taken in one process can be subtracted from one taken in another);
- child processes driven by JSON lines: the driver re-runs a benchmark script with ``--child ...``,
  writes commands to its stdin and reads JSON lines from its stdout;
- a counting TCP proxy (exact bytes on the wire, both directions, HTTP and WebSocket alike);
- percentiles, paired ratios of medians, and a small table printer.

The machine is small and noisy: every script runs its subject and its baseline in the same run,
interleaves them round by round (alternating which goes first), and reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import machine  # one description of the machine for every benchmark

CH = "user:u1:memories"


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: comparable across processes on one Linux machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, 3 rounds: 10-20 s")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    p.add_argument("--dir", default=None, help="directory for the SQLite files (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    p.add_argument("--child", nargs=argparse.REMAINDER, default=None, help=argparse.SUPPRESS)
    return p


def rounds_for(args: argparse.Namespace, default: int = 5, quick: int = 3) -> int:
    if args.rounds is not None:
        return max(1, args.rounds)
    return quick if args.quick else default


@contextlib.contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    base = args.dir
    if base is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="crdtmem-bench-sync-", dir=base))
    try:
        yield path
    finally:
        if os.environ.get("CRDTMEM_BENCH_KEEP"):  # keep the databases and child logs for a post-mortem
            print(f"kept {path}", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def print_machine() -> None:
    m = machine()
    load = ", ".join(f"{x:.1f}" for x in m["loadavg"])
    print(
        f"machine: {m['cpus']} cpus, Python {m['python']}, SQLite {m['sqlite']}, pycrdt {m['pycrdt']}, "
        f"aiohttp {m['aiohttp']}; load average at start {load}",
        flush=True,
    )


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print(
        "  ".join(
            h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for row in cells:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Target:
    """A ratio target: ``value`` compared with ``limit`` (``<=`` when ``at_most``, else ``>=``)."""

    name: str
    value: float
    limit: float
    at_most: bool
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def line(self) -> str:
        sign = "<=" if self.at_most else ">="
        verdict = "MET" if self.met else "NOT MET"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.name}: {self.value:.3f}x{extra}  target {sign} {self.limit:g}x: {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "at_most": self.at_most,
            "met": self.met,
            "detail": self.detail,
        }


def paired(subject: Sequence[float], baseline: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-round ratios subject/baseline (rounds ran back to back)."""
    ratios = [s / b for s, b in zip(subject, baseline, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def finish(args: argparse.Namespace, name: str, targets: Sequence[Target], extra: dict[str, Any]) -> int:
    print()
    for t in targets:
        print(t.line())
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "benchmark": name,
                    "quick": bool(args.quick),
                    "machine": machine(),
                    "targets": [t.as_dict() for t in targets],
                    **extra,
                },
                indent=2,
                default=str,
            )
        )
    return 1 if args.check and not all(t.met for t in targets) else 0


# -- child processes speaking JSON lines -----------------------------------------------------------


class Child:
    """A child process: ``python <script> --child <args>``; JSON lines on stdout, commands on stdin."""

    def __init__(self, script: str, child_args: Sequence[str], log: Path):
        self.script = script
        self.child_args = list(child_args)
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Child:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                self.script,
                "--child",
                *self.child_args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=env,
                limit=16 * 1024 * 1024,
            )
        return self

    async def read(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"child {self.child_args} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    return message

    async def expect(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        while True:
            message = await self.read(timeout)
            if message.get("event") == event:
                return message

    def send(self, **command: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


def emit(**message: Any) -> None:
    """Write one JSON line to stdout (child side)."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def commands() -> asyncio.Queue[dict[str, Any] | None]:
    """Child side: a queue of the JSON commands read from stdin; None when stdin closes."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def pump() -> None:
        while True:
            line = await reader.readline()
            if not line:
                queue.put_nowait(None)
                return
            with contextlib.suppress(ValueError):
                queue.put_nowait(json.loads(line))

    task = loop.create_task(pump())
    queue._pump = task  # type: ignore[attr-defined]  # keep a reference so it is not collected
    return queue


# -- a counting TCP proxy ------------------------------------------------------------------------


class CountingProxy:
    """Forward TCP from ``127.0.0.1:<port>`` to ``target_port``, counting bytes each way.

    ``up`` counts client -> server (requests, frames the client sends), ``down`` server -> client.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.up = self.down = self.connections = 0

    async def start(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))
        await asyncio.gather(self._pump(client_r, server_w, "up"), self._pump(server_r, client_w, "down"))
        self._writers.difference_update((client_w, server_w))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str) -> None:
        try:
            while data := await reader.read(256 * 1024):
                if way == "up":
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


if __name__ == "__main__":
    print(__doc__)
