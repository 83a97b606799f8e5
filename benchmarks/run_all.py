"""Run every benchmark, each in its own process, and print a summary of ratios and targets.

Run: ``python benchmarks/run_all.py`` (about 3 minutes) or ``python benchmarks/run_all.py --quick``
(about 40 s). ``--check`` exits 1 when a ratio target is missed; ``--json FILE`` writes every result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bench_local_writes", "bench_remote_apply", "bench_reads", "bench_hot_memory")


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
            if args.rounds is not None:
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
        for r in result["ratios"]:
            verdict = ""
            if r["target"] is not None:
                verdict = f"  (target >= {r['target']:g}x: {'MET' if r['met'] else 'NOT MET'})"
                missed |= not r["met"]
            print(f"{result['benchmark']:>13}  {r['name']:<52} {r['value']:8.3f}x{verdict}")
        if "target_deltas_per_s" in result:
            rate = result["series"][next(iter(result["series"]))]["median"]
            print(
                f"{result['benchmark']:>13}  {'deltas/s applied and stored':<52} {rate:9,.0f}"
                f"  (target >= {result['target_deltas_per_s']:,}: "
                f"{'MET' if result['target_met'] else 'NOT MET'}; absolute, not checked)"
            )
    for name in failed:
        print(f"{name}: FAILED (see its output above)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if failed or (args.check and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
