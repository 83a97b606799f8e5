"""Shared helpers for the benchmark scripts: arguments, interleaved rounds, medians, tables.

The machine the benchmarks run on is small and noisy, so every script measures its subject and its
baseline in the same process and the same run, interleaves them round by round (alternating which goes
first, so neither always gets the warm or the cold slot), and reports medians. Targets are ratios of
medians, never absolute timings (the one absolute figure, remote apply deltas/s, is reported, not
asserted).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

Case = Callable[[], Awaitable[tuple[int, float]]]
"""One measurement: returns (operations done, seconds taken) for the timed part only."""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, 3 rounds: about 10 s")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    p.add_argument("--dir", default=None, help="directory for the SQLite files (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--profile", action="store_true", help="cProfile the subject once and print hot spots")
    p.add_argument("--check", action="store_true", help="exit 1 when a ratio target is not met")
    return p


def rounds_for(args: argparse.Namespace) -> int:
    if args.rounds is not None:
        return max(1, int(args.rounds))
    return 3 if args.quick else 5


@contextlib.contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    """A fresh directory for the run's database files, removed afterwards."""
    base = args.dir
    if base is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="crdtmem-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FreshPaths:
    """Hands out a new database path for every measurement, so no case reads another's file."""

    def __init__(self, root: Path):
        self.root = root
        self._n = 0

    def __call__(self, stem: str) -> Path:
        self._n += 1
        return self.root / f"{stem}-{self._n}.db"


@dataclass
class Series:
    label: str
    unit: str
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def interleave(cases: Mapping[str, Case], rounds: int, unit: str) -> dict[str, Series]:
    """Run every case once per round, alternating the order each round; rates in ops per second."""
    series = {label: Series(label, unit) for label in cases}
    labels = list(cases)
    for number in range(rounds):
        order = labels if number % 2 == 0 else labels[::-1]
        for label in order:
            ops, seconds = await cases[label]()
            series[label].rates.append(ops / seconds)
        print(f"  round {number + 1}/{rounds} done", flush=True)
    return series


@dataclass
class Ratio:
    """subject / baseline: the median of the per-round ratios (each round's pair ran back to back, so
    pairing cancels slow drift of the machine), with their spread and the ratio of the medians."""

    name: str
    subject: str
    baseline: str
    value: float
    low: float
    high: float
    of_medians: float
    target: float | None = None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value >= self.target


def ratio(
    series: dict[str, Series], subject: str, baseline: str, name: str, target: float | None = None
) -> Ratio:
    paired = [s / b for s, b in zip(series[subject].rates, series[baseline].rates, strict=True)]
    return Ratio(
        name,
        subject,
        baseline,
        statistics.median(paired),
        min(paired),
        max(paired),
        series[subject].median / series[baseline].median,
        target,
    )


def print_table(title: str, series: dict[str, Series], notes: Sequence[str] = ()) -> None:
    width = max(len(label) for label in series) + 2
    unit = next(iter(series.values())).unit
    print(f"\n{title}")
    print(f"{'case':<{width}}{'median ' + unit:>18}{'min':>14}{'max':>14}  rounds")
    for s in series.values():
        low, high = min(s.rates), max(s.rates)
        print(f"{s.label:<{width}}{s.median:>18,.0f}{low:>14,.0f}{high:>14,.0f}  {len(s.rates)}")
    for note in notes:
        print(f"  {note}")


def print_ratios(ratios: Sequence[Ratio]) -> None:
    print()
    for r in ratios:
        verdict = ""
        if r.target is not None:
            verdict = f"  target >= {r.target:g}x: {'MET' if r.met else 'NOT MET'}"
        print(
            f"ratio {r.name}: {r.value:.3f}x (rounds {r.low:.3f}-{r.high:.3f}, "
            f"ratio of medians {r.of_medians:.3f}){verdict}"
        )


def machine() -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pycrdt": version("pycrdt"),
        "sqlite-utils": version("sqlite-utils"),
        "aiohttp": version("aiohttp"),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }


def print_machine() -> None:
    m = machine()
    print(
        f"machine: {m['cpus']} cpus, Python {m['python']}, SQLite {m['sqlite']}, "
        f"pycrdt {m['pycrdt']}, sqlite-utils {m['sqlite-utils']}"
    )


def finish(
    args: argparse.Namespace,
    name: str,
    series: dict[str, Series],
    ratios: Sequence[Ratio],
    extra: dict[str, Any] | None = None,
) -> int:
    """Print the ratios, write JSON if asked, and return the exit status (--check)."""
    print_ratios(ratios)
    result = {
        "benchmark": name,
        "quick": bool(args.quick),
        "machine": machine(),
        "series": {k: {"unit": s.unit, "median": s.median, "rates": s.rates} for k, s in series.items()},
        "ratios": [
            {
                "name": r.name,
                "subject": r.subject,
                "baseline": r.baseline,
                "value": r.value,
                "low": r.low,
                "high": r.high,
                "of_medians": r.of_medians,
                "target": r.target,
                "met": r.met,
            }
            for r in ratios
        ],
        **(extra or {}),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.check and any(r.met is False for r in ratios):
        return 1
    return 0


async def profile_async(label: str, run: Callable[[], Awaitable[Any]], top: int = 30) -> None:
    """cProfile one run of ``run`` (event-loop thread only: the commit thread is not sampled)."""
    profiler = cProfile.Profile()
    profiler.enable()
    start = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - start
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n=== profile: {label} ({elapsed:.2f} s under the profiler) ===")
    print(_shorten(out.getvalue()))


def _shorten(text: str) -> str:
    for prefix in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"]):
        text = text.replace(prefix + "/", "")
    return text.replace(str(Path(__file__).resolve().parents[1]) + "/", "")
