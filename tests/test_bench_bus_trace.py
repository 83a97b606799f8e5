"""benchmarks/_bus_trace.py (``bench_bus.py --trace``): its hooks still find every call they wrap,
and one traced write is cut into the hops the docs list, each from the right pair of stamps."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.scripts import BENCHMARKS, load_benchmark


def test_every_call_the_trace_wraps_still_exists() -> None:
    # in a process of its own: the hooks replace methods of crdtmem's and nats-py's classes
    code = f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import _bus_trace; _bus_trace.hook_node()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _call(t0: float, t1: float, label: str) -> tuple[float, float, str, str, None]:
    return (t0 * 1e-3, t1 * 1e-3, "call", label, None)


def test_one_write_is_cut_into_its_hops() -> None:
    trace = load_benchmark("_bus_trace")
    a = {  # times in ms from A's update call
        "writes": [(0.0, 3.0)],
        "rows": [_call(0.3, 0.6, "SQLiteStore.commit"), _call(0.7, 0.71, "Client.publish")],
    }
    b = {
        "seen": [2.4e-3],
        "rows": [
            (0.5e-3, 0.6e-3, "select", 1, None),  # an earlier wake, not the write's
            (0.8e-3, 0.9e-3, "select", 1, None),
            _call(0.91, 0.92, "Parser.parse"),
            _call(1.0, 2.3, "StreamConsumer.handle"),
            _call(1.8, 2.0, "SQLiteStore.commit"),
            _call(2.1, 2.2, "EventFeed.publish"),
        ],
    }
    hops = {name: values[0] for name, values in trace.hops(a, b, 0).items()}
    expected = {
        trace.TOTAL: 2.4,
        "A: update call -> its SQL commit starts": 0.3,
        "A: SQL commit (with the two signatures)": 0.3,
        "A: commit end -> the publish": 0.1,
        "A's publish -> B's selector wakes": 0.2,
        "B: selector wakes -> batch in hand": 0.1,
        "B: batch in hand -> SQL commit starts": 0.8,
        "B: SQL commit": 0.2,
        "B: commit end -> feed publish": 0.1,
        "B: feed publish -> event in hand": 0.2,
    }
    for name, ms in expected.items():
        assert hops[name] == pytest.approx(ms), name


def test_a_write_b_never_showed_has_no_hops() -> None:
    trace = load_benchmark("_bus_trace")
    a = {"writes": [(0.0, 3.0)], "rows": [_call(0.3, 0.6, "SQLiteStore.commit")]}
    assert trace.hops(a, {"seen": [], "rows": []}, 0) == {}
