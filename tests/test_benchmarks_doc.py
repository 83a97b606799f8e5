"""docs/benchmarks.md covers every benchmark script run_all.py runs, and dates its figures."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.scripts import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "benchmarks.md").read_text()


def _benchmarks() -> tuple[str, ...]:
    return tuple(load_benchmark("run_all").BENCHMARKS)


def test_every_benchmark_run_all_runs_has_its_section() -> None:
    headings = re.findall(r"^## .*`(bench_\w+)\.py`", DOC, flags=re.M)
    assert sorted(headings) == sorted(_benchmarks())


def test_every_script_in_benchmarks_is_run_by_run_all() -> None:
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")} - {"bench_sync_common"}
    assert scripts == set(_benchmarks())


def test_every_summary_row_is_dated() -> None:
    summary = DOC.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "`python benchmarks/" in line]
    assert len(rows) >= len(_benchmarks()) - 1
    undated = [row for row in rows if not re.search(r"\d{4}-\d{2}-\d{2}", row)]
    assert undated == []
