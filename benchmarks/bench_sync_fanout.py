"""Fan-out: one writer, 100 subscribers of a node's event feed (``GET /v1/events`` over WebSocket).

The server side runs in this driver process; the subscribers run in a child process per case (this
script with ``--child``): ``--subscribers`` aiohttp WebSocket clients in one event loop, each counting
the JSON messages it receives. A run sends ``--events`` events; delivered events/s is
``subscribers * events / (t_last_delivery - t_first_write)``, both stamps from CLOCK_MONOTONIC.

- crdtmem: a :class:`Node` (file-backed replica, ``--synchronous``, default NORMAL) serves
  ``/v1/events?channel=user:u1:memories`` to every subscriber; one writer in the same process calls
  ``replica.update(...)`` with ``--in-flight`` (8) updates outstanding, one per memory, each awaited
  (acknowledged after its commit); every committed change becomes one MemoryEvent JSON text message
  per subscriber. With updates strictly one after another (``--in-flight 1``) the writer's commit
  round trip, not the fan-out, sets the rate.
- raw (the baseline): an aiohttp server with one ``WebSocketResponse`` per subscriber; per event it
  serializes a MemoryEvent-shaped dict of the same size once with ``json.dumps`` and
  ``await ws.send_str`` to every subscriber in turn, as fast as it can.
- crdtmem + patch F1 / F2 (only with ``--patches``): two more nodes with a proposed change applied from
  this script at run time (``install_patches``; crdtmem itself is not changed): F1 serializes each
  event once and lets streams await their queue directly; F2 adds a per-node fan-out hub.

Every case keeps its subscribers connected for the whole run; the cases are interleaved round by round
(order alternating) and the median of the per-round ratios is reported. CPU seconds of the server
process and of the subscriber process are shown per case, to tell which side was saturated.

Target: crdtmem >= 0.5x the raw broadcast's delivered events/s.

Run: ``python benchmarks/bench_sync_fanout.py`` (about 45 s), ``--quick`` (about 12 s).
``--profile`` cProfiles the server process during one extra run of each crdtmem variant.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import bench_sync_common as common
from aiohttp import web
from bench_sync_common import CH, Child, Target, emit, now_ns

SCRIPT = str(Path(__file__).resolve())
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# -- the subscribers (child process) -------------------------------------------------------------


async def child_subscribers(url: str, count: int) -> None:
    state: dict[str, Any] = {"target": None, "counts": [0] * count, "last": 0, "closed": 0, "errors": []}
    finished = asyncio.Event()

    async def subscriber(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if '"error"' in message.data[:20]:
                state["errors"].append(message.data[:200])
                continue
            counts = state["counts"]
            counts[i] += 1
            if state["target"] is not None and counts[i] == state["target"]:
                state["last"] = now_ns()
                state["done"] += 1
                if state["done"] == count:
                    finished.set()
        state["closed"] += 1
        if ws.close_code not in (None, 1000):
            state["errors"].append(f"closed with code {ws.close_code}")
        finished.set()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = [await session.ws_connect(url, heartbeat=None) for _ in range(count)]
        tasks = [asyncio.create_task(subscriber(i, ws)) for i, ws in enumerate(sockets)]
        await asyncio.sleep(0.3)  # the server registers each stream once its handler runs
        emit(event="ready")
        queue = await common.commands()
        while (command := await queue.get()) is not None:
            state["counts"] = [0] * count
            state["done"] = 0
            state["target"] = command["events"]
            finished.clear()
            emit(event="armed")
            try:
                await asyncio.wait_for(finished.wait(), command.get("timeout", 120))
            except TimeoutError:
                state["errors"].append("timeout")
            counts = state["counts"]
            emit(
                event="done",
                t_last=state["last"],
                received=sum(counts),
                min=min(counts),
                closed=state["closed"],
                errors=state["errors"][:5],
            )
            state["target"] = None
        for ws in sockets:
            await ws.close()
        for task in tasks:
            task.cancel()


# -- the servers (this process) ------------------------------------------------------------------


class RawBroadcast:
    label = "raw broadcast"

    def __init__(self, template: dict[str, Any], subscribers: int):
        self.template = template
        self.subscribers = subscribers
        self.sockets: list[web.WebSocketResponse] = []
        self.all_in = asyncio.Event()
        self.closing = asyncio.Event()

    async def start(self) -> str:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.sockets.append(ws)
            if len(self.sockets) == self.subscribers:
                self.all_in.set()
            async for _ in ws:  # read client frames (close, pong)
                pass
            return ws

        app = web.Application()
        app.router.add_get("/ws", handler)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/ws"

    async def ready(self) -> None:
        await self.all_in.wait()

    async def run(self, events: int, tag: str) -> None:
        event = self.template
        memory = event["memory"]
        for i in range(events):
            memory["content"] = f"{tag} update number {i}"
            event["event_id"] = f"a:{i}"
            text = json.dumps(event, separators=(",", ":"))
            for ws in self.sockets:
                await ws.send_str(text)

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        await self.runner.cleanup()


PATCH_A = "patch-a"
PATCH_B = "patch-b"
"""Replica ids of the nodes that run with proposed patch F1 or F2; node "a" runs crdtmem as is."""
HUBS: dict[int, Any] = {}


def install_patches() -> None:
    """The proposed patches, applied from outside (crdtmem unchanged) to nodes PATCH_A (F1), PATCH_B (F2).

    Patch F1 (small, local to ``crdtmem/server/feed.py``):

    1. ``_event_json`` serializes each MemoryEvent once for all streams: every stream of one event gets
       the same object, so it is cached by identity (holding the object keeps its id from being reused).
    2. ``_EventStream.next`` awaits its subscription's bounded queue under ``asyncio.timeout_at``
       instead of wrapping every ``__anext__`` in a Task and ``asyncio.wait`` (a Task, a waiter and a
       timer handle per event per stream); an event already queued is taken without suspending.

    Patch F2: F1's JSON cache plus a per-node fan-out hub (see :class:`Hub`) in place of one task per
    stream waiting on its own queue.
    """
    from collections import OrderedDict

    from crdtmem.engine.feed import FeedOverflow
    from crdtmem.server import feed as fm

    original_json = fm._event_json
    cache: OrderedDict[int, tuple[Any, str]] = OrderedDict()

    def event_json(event: Any) -> str:
        if not event.event_id.startswith((PATCH_A + ":", PATCH_B + ":")):
            return original_json(event)
        hit = cache.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        text = original_json(event)
        cache[id(event)] = (event, text)
        if len(cache) > 4096:
            cache.popitem(last=False)
        return text

    original_next = fm._EventStream.next

    async def next_(self: Any, timeout: float) -> Any:
        live = getattr(self, "_live", None)
        if self.replica.id != PATCH_A or not hasattr(live, "queue"):
            return await original_next(self, timeout)
        pending, self._next = self._next, None
        if pending is not None and not pending.done():
            pending.cancel()  # asyncio.Queue.get leaves the item queued when cancelled
            await asyncio.wait({pending})
            pending = None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if pending is not None:
                event, pending = pending.result(), None
            elif live.queue.empty():
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await live.queue.get()
                except TimeoutError:
                    return None
            else:
                event = live.queue.get_nowait()
            if event is None:
                await live.aclose()
                if live.overflowed:
                    raise FeedOverflow(f"event subscriber fell more than {live.max_queue} events behind")
                raise StopAsyncIteration
            if self.selection.channels is None and not self.selection.wants(event.channels):
                continue
            if event.memory.version <= self.last_version:
                continue
            self.last_version = event.memory.version
            return event

    original_serve = fm._serve_websocket

    async def serve_websocket(request: web.Request, ws: web.WebSocketResponse, node: Any, stream: Any) -> Any:
        if node.replica.id != PATCH_B:
            return await original_serve(request, ws, node, stream)
        await ws.prepare(request)
        for event in stream.replay:
            await ws.send_str(fm._event_json(event))
        hub = HUBS.get(id(node.replica))
        if hub is None:
            hub = HUBS[id(node.replica)] = Hub(node.replica, fm)
        # prototype shortcut: the real patch registers the member in open(), before the replay is read
        hub.members[ws] = [stream.selection, stream.last_version]
        await stream.close()
        try:
            async for _ in ws:  # until the client closes (pongs and close frames are handled here)
                pass
        finally:
            hub.members.pop(ws, None)
        return ws

    fm._event_json = event_json  # type: ignore[assignment]
    fm._EventStream.next = next_  # type: ignore[method-assign]
    fm._serve_websocket = serve_websocket  # type: ignore[assignment]


class Hub:
    """Patch F2: one feed subscription per node; each event is serialized once and written to every
    member WebSocket in one pass, like the raw broadcast. A member whose socket has more than
    ``max_buffer`` bytes unsent is closed with 1013 (reconnect with Last-Event-ID), so one slow
    client never blocks the others; nothing is lost because the store replays from the version.
    """

    def __init__(self, replica: Any, fm: Any, max_buffer: int = 1 << 20):
        self.fm = fm
        self.max_buffer = max_buffer
        self.members: dict[web.WebSocketResponse, list[Any]] = {}
        self.closing: set[asyncio.Future[None]] = set()
        self.subscription = replica.events(None, max_queue=1_000_000)
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        async for event in self.subscription:
            text = None
            for ws, member in list(self.members.items()):
                selection, last_version = member
                if event.memory.version <= last_version or not selection.wants(event.channels):
                    continue
                member[1] = event.memory.version
                transport = ws._req.transport if ws._req is not None else None  # type: ignore[attr-defined]
                if transport is None or transport.get_write_buffer_size() > self.max_buffer:
                    self.members.pop(ws, None)
                    closing = asyncio.ensure_future(ws.close(code=1013, message=b"fell behind; reconnect"))
                    self.closing.add(closing)
                    closing.add_done_callback(self.closing.discard)
                    continue
                if text is None:
                    text = self.fm._event_json(event)
                await ws.send_str(text)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class CrdtmemFeed:
    LABELS: ClassVar[dict[str, str]] = {
        "a": "crdtmem /v1/events",
        PATCH_A: "crdtmem + patch F1",
        PATCH_B: "crdtmem + patch F2",
    }

    def __init__(self, work: Path, synchronous: str, subscribers: int, in_flight: int, replica_id: str = "a"):
        self.in_flight = in_flight
        self.work = work
        self.synchronous = synchronous
        self.subscribers = subscribers
        self.replica_id = replica_id
        self.label = self.LABELS[replica_id]

    async def start(self) -> str:
        from crdtmem import Replica
        from crdtmem.server.node import Node

        self.replica = Replica(
            self.work / f"{self.replica_id}.db",
            replica_id=self.replica_id,
            channels=[CH],
            synchronous=self.synchronous,
        )  # type: ignore[arg-type]
        self.node = await Node(self.replica, port=0).start()
        self.ids = [
            (
                await self.replica.add(
                    f"fact {i}", user_id="u1", agent_id="writer", metadata={"source": "bench"}, tags=["bench"]
                )
            ).id
            for i in range(self.in_flight)
        ]
        return self.node.url.replace("http", "ws") + f"/v1/events?channel={CH}"

    async def template(self) -> dict[str, Any]:
        """One real MemoryEvent, as the feed serializes it (the raw baseline sends the same shape)."""
        events = self.replica.events([CH])
        pending = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0)
        await self.replica.update(self.ids[0], content="template")
        event = await pending
        await events.aclose()  # type: ignore[attr-defined]
        return json.loads(json.dumps(event.to_dict()))

    async def ready(self) -> None:
        while True:
            hub = HUBS.get(id(self.replica))
            if len(hub.members if hub is not None else self.replica.feed) >= self.subscribers:
                return
            await asyncio.sleep(0.01)

    async def run(self, events: int, tag: str) -> None:
        """Up to ``in_flight`` updates outstanding (each to its own memory), each awaited."""

        async def lane(lane_number: int) -> None:
            for i in range(lane_number, events, self.in_flight):
                await self.replica.update(self.ids[lane_number], content=f"{tag} update number {i}")

        await asyncio.gather(*(lane(k) for k in range(self.in_flight)))

    async def writer_alone(self, events: int) -> float:
        t0 = now_ns()
        await self.run(events, "alone")
        return events / ((now_ns() - t0) / 1e9)

    async def stop(self) -> None:
        hub = HUBS.pop(id(self.replica), None)
        if hub is not None:
            await hub.stop()
        await self.node.stop()


async def one_run(server: Any, child: Child, events: int, tag: str) -> dict[str, Any]:
    child.send(events=events, timeout=120)
    await child.expect("armed")
    cpu_server, cpu_child = cpu_seconds(), cpu_seconds(child.proc.pid)  # type: ignore[union-attr]
    t0 = now_ns()
    await server.run(events, tag)
    t_written = now_ns()
    done = await child.expect("done", timeout=180)
    if done["errors"] or done["min"] < events:
        raise RuntimeError(f"{server.label}: subscribers missed events: {done}")
    seconds = (done["t_last"] - t0) / 1e9
    return {
        "events_per_s": done["received"] / seconds,
        "seconds": seconds,
        "received": done["received"],
        "write_seconds": (t_written - t0) / 1e9,
        "cpu_server": cpu_seconds() - cpu_server,
        "cpu_subscribers": cpu_seconds(child.proc.pid) - cpu_child,  # type: ignore[union-attr]
    }


async def main(args: Any) -> int:
    rounds = common.rounds_for(args)
    events = args.events or (150 if args.quick else 500)
    n = args.subscribers
    common.print_machine()
    print(
        f"fan-out: {n} subscribers, {events} events per run, {rounds} rounds, "
        f"crdtmem synchronous={args.synchronous}, writer keeps {args.in_flight} update(s) in flight",
        flush=True,
    )
    with common.workdir(args) as work:
        feed = CrdtmemFeed(work, args.synchronous, n, args.in_flight)
        servers: list[Any] = [feed]
        if args.patches:
            install_patches()
            servers += [
                CrdtmemFeed(work, args.synchronous, n, args.in_flight, PATCH_A),
                CrdtmemFeed(work, args.synchronous, n, args.in_flight, PATCH_B),
            ]
        urls = [await server.start() for server in servers]
        raw = RawBroadcast(await feed.template(), n)
        servers.insert(0, raw)
        urls.insert(0, await raw.start())
        alone = await feed.writer_alone(events)
        print(
            f"  crdtmem writer alone (no subscribers, {args.in_flight} in flight): {alone:,.0f} writes/s",
            flush=True,
        )
        children: dict[str, Child] = {}
        for server, url in zip(servers, urls, strict=True):
            child = Child(SCRIPT, ["subscribers", url, str(n)], work / f"subs-{len(children)}.log")
            children[server.label] = await child.start()
            await child.expect("ready")
            await server.ready()
        results: dict[str, list[dict[str, Any]]] = {s.label: [] for s in servers}
        try:
            for r in range(rounds):
                for server in servers if r % 2 == 0 else servers[::-1]:
                    results[server.label].append(
                        await one_run(server, children[server.label], events, f"r{r}")
                    )
                print(
                    "  round {}/{}: {}".format(
                        r + 1,
                        rounds,
                        "  ".join(
                            f"{label} {rs[-1]['events_per_s']:,.0f} ev/s" for label, rs in results.items()
                        ),
                    ),
                    flush=True,
                )
            if args.profile:
                for server in servers[1:]:
                    profiler = cProfile.Profile()
                    profiler.enable()
                    await one_run(server, children[server.label], events, "profile")
                    profiler.disable()
                    out = io.StringIO()
                    stats = pstats.Stats(profiler, stream=out)
                    stats.sort_stats("tottime").print_stats(25)
                    stats.sort_stats("cumulative").print_stats(40)
                    print(
                        f"\n=== profile: {server.label}, server process, "
                        f"{events} events x {n} subscribers ==="
                    )
                    print(out.getvalue().replace(str(Path(sys.prefix)), "<venv>"))
        finally:
            for child in children.values():
                await child.stop()
            for server in servers:
                await server.stop()

    rows = []
    for label, runs in results.items():
        rates = [x["events_per_s"] for x in runs]
        rows.append(
            [
                label,
                statistics.median(rates),
                min(rates),
                max(rates),
                statistics.median(x["write_seconds"] for x in runs),
                statistics.median(x["seconds"] for x in runs),
                statistics.median(x["cpu_server"] for x in runs),
                statistics.median(x["cpu_subscribers"] for x in runs),
                statistics.median(x["cpu_server"] / x["received"] * 1e6 for x in runs),
            ]
        )
    common.table(
        f"delivered events/s ({n} subscribers x {events} events; medians over {rounds} rounds; "
        "cpu = CPU seconds used during the run)",
        [
            "case",
            "events/s",
            "min",
            "max",
            "writing s",
            "delivered s",
            "cpu server s",
            "cpu subscribers s",
            "server cpu us/delivery",
        ],
        rows,
    )
    value, low, high = common.paired(
        [x["events_per_s"] for x in results[feed.label]], [x["events_per_s"] for x in results[raw.label]]
    )
    targets = [
        Target(
            "crdtmem /v1/events / raw broadcast, delivered events/s",
            value,
            0.5,
            at_most=False,
            detail=f"rounds {low:.2f}-{high:.2f}",
        )
    ]
    patched = {}
    if args.patches:
        print()
        for label, what in (
            ("crdtmem + patch F1", "JSON once per event, streams await their queue"),
            ("crdtmem + patch F2", "JSON once per event, one fan-out hub per node"),
        ):
            value, low, high = common.paired(
                [x["events_per_s"] for x in results[label]], [x["events_per_s"] for x in results[raw.label]]
            )
            patched[label] = {"value": value, "low": low, "high": high}
            print(
                f"with proposed {label[10:]} ({what}): {value:.3f}x the raw broadcast "
                f"(rounds {low:.2f}-{high:.2f}); target >= 0.5x: {'MET' if value >= 0.5 else 'NOT MET'}"
            )
    return common.finish(
        args,
        "sync_fanout",
        targets,
        {
            "runs": results,
            "patched": patched,
            "writer_alone_per_s": alone,
            "subscribers": n,
            "events": events,
        },
    )


def cli() -> int:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--events", type=int, default=None, help="events per run (500; quick 150)")
    p.add_argument("--synchronous", default="NORMAL", choices=["FULL", "NORMAL"])
    p.add_argument(
        "--in-flight",
        type=int,
        default=8,
        help="the writer's outstanding updates (8; 1 = strictly one after another)",
    )
    p.add_argument("--profile", action="store_true", help="cProfile the crdtmem server during one extra run")
    p.add_argument(
        "--patches",
        action="store_true",
        help="also run the proposed patches F1/F2 (written against the feed before F1 landed; "
        "F1 is now in crdtmem, F2 needs porting)",
    )
    p.add_argument("--no-patch", action="store_true", help="accepted for old command lines; the default")
    args = p.parse_args()
    if args.child is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(child_subscribers(args.child[1], int(args.child[2])))
        return 0
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
