"""Where one write's time goes in ``bench_bus.py``'s two-process latency case, hop by hop.

``python benchmarks/bench_bus.py --latency-only --trace DIR`` (two processes) has each node's child
process (``_bus_fleet.py``) record, on CLOCK_MONOTONIC (one clock for every process on Linux):

- every callback its event loop runs: its task's coroutine and where it suspended after the
  step, with the wall and the thread CPU time of the step;
- every wait of the loop's selector (how long, how many events it returned);
- every garbage collection (generation, thread);
- spans around the calls on a write's path: nats-py's parser and publish, the consumer's batch,
  the engine's triage, authentication, causal apply, read-back, commit, the store's SQL commit,
  the commit listeners, the event feed;

and write them at exit to ``DIR/<round tag>-<node>.pkl``. ``python benchmarks/_bus_trace.py DIR
[shown]`` then prints, per round, the last ``shown`` writes' timelines (both nodes, from A's
update call to B's event) and the median of every hop. With ``CRDTMEM_BUS_PROFILE=1`` in the
environment the children run the consumer's batches and the local writes under cProfile instead
(``DIR/<tag>-<node>.prof``). Diagnosis only: the recording costs a few microseconds per callback.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import re
import statistics
import sys
import threading
import time
from asyncio import events
from pathlib import Path
from typing import Any

clock = time.monotonic
TOTAL = "total: A's update call -> B's event"
Row = tuple[float, float, str, Any, Any]
"""(start, end, kind, what, extra): kind is run, select, gc, call or mark."""


class Trace:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.on = True

    def span(self, t0: float, kind: str, what: Any, extra: Any = None, c0: float | None = None) -> None:
        if self.on:
            if c0 is not None:
                extra = f"{extra or ''} cpu {(time.thread_time() - c0) * 1e6:.0f}us".strip()
            self.rows.append((t0, clock(), kind, what, extra))


TRACE = Trace()
PROFILE: Any = None


def _where(task: asyncio.Task[Any]) -> str:
    """The task's coroutine, and the innermost coroutine frame it is suspended in."""
    coro: Any = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    if task.done():
        return f"{name} (done)"
    inner = coro
    while getattr(nxt := getattr(inner, "cr_await", None), "cr_frame", None) is not None:
        inner = nxt
    frame = getattr(inner, "cr_frame", None)
    return f"{name} @ {frame.f_code.co_name}:{frame.f_lineno}" if frame is not None else name


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Record every callback of ``loop``, every wait of its selector, every collection."""
    handle_run = events.Handle._run

    def traced_run(self: events.Handle) -> None:
        t0, c0 = clock(), time.thread_time()
        handle_run(self)
        callback = self._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            what = _where(owner)
        else:
            what = getattr(callback, "__qualname__", None) or type(callback).__name__
        TRACE.span(t0, "run", what, c0=c0)

    events.Handle._run = traced_run  # type: ignore[method-assign]
    selector = loop._selector  # type: ignore[attr-defined]
    select = selector.select

    def traced_select(timeout: float | None = None) -> Any:
        t0 = clock()
        ready = select(timeout)
        TRACE.span(t0, "select", len(ready))
        return ready

    selector.select = traced_select
    started: dict[int, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        thread = threading.get_ident()
        if phase == "start":
            started[thread] = clock()
        elif thread in started:
            TRACE.span(started.pop(thread), "gc", info.get("generation"), threading.current_thread().name)

    gc.callbacks.append(on_gc)


def wrap(owner: Any, name: str, label: str | None = None) -> None:
    """Record each call of ``owner.name`` (a function or a coroutine function) as a span."""
    original = getattr(owner, name)
    label = label or f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"
    if asyncio.iscoroutinefunction(original):

        async def async_wrapped(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return await original(*args, **kwargs)
            finally:
                TRACE.span(t0, "call", label, threading.current_thread().name)

        setattr(owner, name, async_wrapped)
    else:

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = clock(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                TRACE.span(t0, "call", label, threading.current_thread().name, c0=c0)

        setattr(owner, name, wrapped)


def hook_node() -> None:
    """Spans around the calls on a write's path, in either node (before the node is built: some
    are bound when it is)."""
    from nats.aio.client import Client
    from nats.protocol.parser import Parser

    from crdtmem.bus import outbox, sendnow
    from crdtmem.bus.consumer import StreamConsumer
    from crdtmem.bus.standing import StandingPull
    from crdtmem.engine import remote, writes
    from crdtmem.engine.committer import GroupCommitter
    from crdtmem.engine.feed import EventFeed
    from crdtmem.engine.publish import Publisher
    from crdtmem.engine.remote import RemoteApply
    from crdtmem.engine.workset import WorkingSet
    from crdtmem.store.sqlite import SQLiteStore

    wrap(Parser, "parse")
    wrap(Client, "publish")
    wrap(StreamConsumer, "handle")
    wrap(StreamConsumer, "_check")
    wrap(StandingPull, "next_batch")
    wrap(RemoteApply, "apply")
    wrap(RemoteApply, "_apply_unit")
    for name in (
        "check_clocks",
        "triage",
        "authenticate_in_slices",
        "apply_causally",
        "doc_write",
        "check_units",
    ):
        wrap(remote, name, f"remote.{name}")
    wrap(writes, "doc_write", "writes.doc_write")
    wrap(writes.LocalWrites, "write")
    wrap(Publisher, "commit")
    wrap(Publisher, "_committed")
    wrap(Publisher, "_tell_listeners")
    wrap(GroupCommitter, "submit")
    wrap(SQLiteStore, "commit")
    wrap(WorkingSet, "committed")
    wrap(EventFeed, "publish")
    wrap(outbox.Outbox, "on_commit")
    wrap(outbox.Outbox, "_send_direct")
    wrap(sendnow, "write_pending")


def profile(owner: Any, name: str) -> None:
    """Run every call of ``owner.name`` (a coroutine function) under one cProfile (``PROFILE``)."""
    import cProfile

    global PROFILE
    PROFILE = PROFILE or cProfile.Profile()
    original = getattr(owner, name)

    async def profiled(*args: Any, **kwargs: Any) -> Any:
        PROFILE.enable()
        try:
            return await original(*args, **kwargs)
        finally:
            PROFILE.disable()

    setattr(owner, name, profiled)


def start(profiling: bool) -> None:
    """In a node's child process, before its node is built."""
    if profiling:
        from crdtmem.bus.consumer import StreamConsumer
        from crdtmem.engine.writes import LocalWrites

        profile(StreamConsumer, "handle")
        profile(LocalWrites, "write")
    else:
        install(asyncio.get_running_loop())
        hook_node()


def save(path: Path, extra: dict[str, Any]) -> None:
    TRACE.on = False
    if PROFILE is not None:
        PROFILE.dump_stats(str(path.with_suffix(".prof")))
        return
    with path.open("wb") as f:
        pickle.dump({"rows": TRACE.rows, **extra}, f)


# -- analysis -----------------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        data: dict[str, Any] = pickle.load(f)
    data["rows"].sort(key=lambda r: r[0])
    return data


def window(rows: list[Row], t0: float, t1: float) -> list[Row]:
    return [r for r in rows if r[1] >= t0 and r[0] <= t1]


def show(rows: list[Row], origin: float) -> None:
    for t0, t1, kind, what, extra in rows:
        if t0 >= origin - 0.0002:  # spans open since long before (idle waits) are left out
            print(f"{(t0 - origin) * 1e3:8.3f} ms {(t1 - t0) * 1e6:8.1f} us  {kind:<7}{what} {extra or ''}")


def _calls(rows: list[Row], label: str, after: float = 0.0) -> list[Row]:
    return [r for r in rows if r[2] == "call" and r[3] == label and r[0] >= after]


def _cpu(row: Row) -> float | None:
    found = re.search(r"cpu (\d+)us", str(row[4] or ""))
    return int(found.group(1)) / 1e6 if found else None


def hops(a: dict[str, Any], b: dict[str, Any], shown: int) -> dict[str, list[float]]:
    """Each write's hops (ms, or counts), from A's rows and B's; prints the last ``shown`` writes."""
    out: dict[str, list[float]] = {}

    def add(name: str, value: float, scale: float = 1e3) -> None:
        out.setdefault(name, []).append(value * scale)

    writes: list[tuple[float, float]] = a["writes"]
    for n, (w0, w1) in enumerate(writes):
        seen = [t for t in b["seen"] if t > w0]
        if not seen:
            continue
        ev = seen[0]
        arows, brows = window(a["rows"], w0, ev), window(b["rows"], w0, ev)
        if n >= len(writes) - shown:
            took, visible = (w1 - w0) * 1e3, (ev - w0) * 1e3
            print(f"==== write {n}: A's update call {took:.3f} ms, visible on B {visible:.3f} ms")
            print("-- node A")
            show(arows, w0)
            print("-- node B")
            show(brows, w0)
        publish = _calls(arows, "Client.publish", w0)
        handle = _calls(brows, "StreamConsumer.handle", w0)
        commit_a = _calls(arows, "SQLiteStore.commit", w0)
        if not (publish and handle and commit_a):
            continue
        h = handle[0]
        parse = [r for r in _calls(brows, "Parser.parse", w0) if r[1] <= h[0]]
        commit_b = _calls(brows, "SQLiteStore.commit", h[0])
        feed = _calls(brows, "EventFeed.publish", h[0])
        if not (parse and commit_b and feed):
            continue
        add(TOTAL, ev - w0)
        add("A: update call -> its SQL commit starts", commit_a[0][0] - w0)
        add("A: SQL commit (with the two signatures)", commit_a[0][1] - commit_a[0][0])
        add("A: commit end -> the publish", publish[0][0] - commit_a[0][1])
        ready = [r for r in brows if r[2] == "select" and r[1] <= parse[-1][0] and r[3]]
        add("A's publish -> B's selector wakes", (ready[-1][1] if ready else parse[-1][0]) - publish[0][0])
        add("B: selector wakes -> batch in hand", h[0] - (ready[-1][1] if ready else parse[-1][0]))
        add("B: batch in hand -> SQL commit starts", commit_b[0][0] - h[0])
        add("B: SQL commit", commit_b[0][1] - commit_b[0][0])
        add("B: commit end -> feed publish", feed[0][0] - commit_b[0][1])
        add("B: feed publish -> event in hand", ev - feed[0][1])
        for label in (
            "StreamConsumer._check",
            "remote.triage",
            "remote.authenticate_in_slices",
            "remote.apply_causally",
            "remote.doc_write",
            "Publisher._committed",
        ):
            spans = _calls(brows, label, h[0])
            if spans:
                add(f"B: {label}", spans[0][1] - spans[0][0])
        runs_b = [r for r in brows if r[2] == "run" and r[0] <= h[0] <= r[1]]
        if runs_b and (cpu := _cpu(runs_b[0])) is not None:
            add("B: the batch's loop callback, wall", runs_b[0][1] - runs_b[0][0])
            add("B: the batch's loop callback, thread CPU", cpu)
        runs_a = [r for r in arows if r[2] == "run" and r[0] <= commit_a[0][0] <= r[1]]
        if runs_a and (cpu := _cpu(runs_a[0])) is not None:
            add("A: the write's loop callback, wall", runs_a[0][1] - runs_a[0][0])
            add("A: the write's loop callback, thread CPU", cpu)
        for side, rows, since in (("A", arows, w0), ("B", brows, h[0])):
            inside = [r for r in rows if r[0] >= since]
            add(f"{side}: loop callbacks run (count)", sum(1 for r in inside if r[2] == "run"), 1)
            add(f"{side}: garbage collections (count)", sum(1 for r in inside if r[2] == "gc"), 1)
            add(f"{side}: garbage collection time", sum(r[1] - r[0] for r in inside if r[2] == "gc"))
    return out


def main(directory: str, shown: int = 2) -> None:
    for path_a in sorted(Path(directory).glob("*-a.pkl")):
        tag = path_a.name[: -len("-a.pkl")]
        path_b = path_a.with_name(f"{tag}-b.pkl")
        if not path_b.exists():
            continue
        print(f"######## round {tag}")
        found = hops(load(path_a), load(path_b), shown)
        print(f"\nmedians over {len(found.get(TOTAL, []))} writes (ms, or counts)")
        for name, values in found.items():
            q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
            print(f"  {name:<44}{statistics.median(values):9.3f}   (q1 {q[0]:.3f}, q3 {q[2]:.3f})")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2)
