"""Run every benchmark, each in its own process, and print a summary of ratios and targets.

Run: ``python benchmarks/run_all.py`` (about 20 minutes) or ``python benchmarks/run_all.py --quick``
(about 4 minutes); name some to run only those (``python benchmarks/run_all.py local_writes search``).
``--check`` exits 1 when a target is missed; ``--json FILE`` writes every result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "bench_local_writes",
    "bench_remote_apply",
    "bench_reads",
    "bench_hot_memory",
    "bench_store_scaling",
    "bench_sync_latency",
    "bench_sync_catchup",
    "bench_sync_fanout",
    "bench_sync_partition",
    "bench_search",
    "bench_index_lag",
    "bench_embedders",
    "bench_verify",
    "bench_erasure",
    "bench_compaction",
    "bench_bus",
    "bench_bus_catchup",
    "bench_hostile",
)
"""Every benchmark script; a new one is added here and gets a section in docs/benchmarks.md."""
NO_ROUNDS = {"bench_search", "bench_index_lag", "bench_compaction"}
"""Scripts without ``--rounds`` (they size their work by points and probes instead)."""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--rounds", type=int, default=None, help="pass --rounds to every benchmark")
    p.add_argument("--dir", default=None, help="pass --dir (where the SQLite files go)")
    p.add_argument("--check", action="store_true", help="exit 1 when a ratio target is not met")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("only", nargs="*", help="benchmark names to run (default: all)")
    args = p.parse_args()

    names = [n if n.startswith("bench_") else f"bench_{n}" for n in args.only] or list(BENCHMARKS)
    results = []
    failed = []
    with tempfile.TemporaryDirectory(prefix="crdtmem-bench-results-") as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(out)]
            if args.quick:
                cmd.append("--quick")
            if args.rounds is not None and name not in NO_ROUNDS:
                cmd += ["--rounds", str(args.rounds)]
            if args.dir is not None:
                cmd += ["--dir", args.dir]
            print(f"\n##### {name} #####", flush=True)
            start = time.perf_counter()
            code = subprocess.call(cmd)
            print(f"##### {name}: {time.perf_counter() - start:.1f} s, exit {code}", flush=True)
            if code != 0 or not out.exists():
                failed.append(name)
                continue
            results.append(json.loads(out.read_text()))

    print("\n===== summary =====")
    missed = False
    for result in results:
        for line, met in summary_lines(result):
            print(line)
            missed |= met is False
    for name in failed:
        print(f"{name}: FAILED (see its output above)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if failed or (args.check and missed):
        return 1
    return 0


def summary_lines(result: dict[str, Any]) -> list[tuple[str, bool | None]]:
    """One line per ratio or target of a result, with whether its target is met (None: no target).

    Two shapes exist: ``ratios`` (``_common.finish``: a value and a ``>=`` target) and ``targets``
    (``bench_sync_common.finish``: a value, a limit and its direction)."""
    name = result["benchmark"]
    lines: list[tuple[str, bool | None]] = []
    for r in result.get("ratios", []):
        verdict = ""
        if r.get("target") is not None:
            verdict = f"  (target >= {r['target']:g}x: {'MET' if r['met'] else 'NOT MET'})"
        lines.append((f"{name:>14}  {r['name']:<60} {r['value']:10.3f}x{verdict}", r.get("met")))
    for t in result.get("targets", []):
        sign = "<=" if t["at_most"] else ">="
        verdict = f"  (target {sign} {t['limit']:g}x: {'MET' if t['met'] else 'NOT MET'})"
        lines.append((f"{name:>14}  {t['name']:<60} {t['value']:10.3f}x{verdict}", t["met"]))
    if "target_deltas_per_s" in result:
        rate = result["series"][next(iter(result["series"]))]["median"]
        met = bool(result["target_met"])
        lines.append(
            (
                f"{name:>14}  {'deltas/s applied and stored':<60} {rate:11,.0f}"
                f"  (target >= {result['target_deltas_per_s']:,}: {'MET' if met else 'NOT MET'}; "
                "absolute, so reported, not checked)",
                None,
            )
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
