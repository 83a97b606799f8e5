"""Write-to-visible latency between two replica processes over loopback (eager push), p50 and p99.

Process A is this driver; process B is a child (this script run with ``--child``). A writes one
change, B reports when it sees it, A waits for that report before the next write. Latency is
``t_visible(B) - t_write_start(A)``, both from CLOCK_MONOTONIC, which is one clock for all processes
on Linux (no clock sync needed; the time B's report takes to reach A is not counted).

- crdtmem (``--synchronous FULL`` and ``NORMAL``): A embeds a :class:`Node` (file-backed replica);
  B embeds a Node whose :class:`PeerClient` links to A. A times ``await replica.update(id,
  content=...)`` (HLC, Yrs transaction, durable commit) -> A's link pushes the delta frame -> B
  validates, applies, commits -> B's ``replica.events()`` yields the MemoryEvent, and B stamps it.
  With FULL each side pays an fsync per commit, so two fsyncs are inside every sample. The writes
  rotate over ``--memories`` facts (100), so no single document grows through the run
  (``--memories 1`` shows the hot-fact case).
- raw (the baseline): A runs an aiohttp WebSocket server and one pycrdt Doc; per write it changes one
  Map key in a transaction, takes ``get_update(state before)`` and ``ws.send_bytes``; B (an aiohttp
  client) receives, ``apply_update``, reads the value and stamps it. Nothing validated or stored.
- raw+sqlite FULL / NORMAL (the floor): raw plus one SQLite transaction per side (the update
  appended, the document state saved) before sending / before stamping, with the same
  ``synchronous``: what two durable commits put under any design that shows only durable writes.
- raw+sqlite+sig FULL / NORMAL (the signed floor): the floor plus what crdtmem's trust model adds
  (docs/protocol.md): A signs each update (Ed25519, ``cryptography``, as crdtmem does) before
  sending it with its signature, and B verifies the signature of the same bytes before applying.
- pycrdt-websocket (the peer a Python user would pick instead; the ``bench`` extra): A serves a
  ``YRoom`` with its ``SQLiteYStore`` over an aiohttp WebSocket and writes to the room's document; B
  is a pycrdt ``Provider``. The room sends a change to B and writes its YStore in the background, so
  B sees it before it is durable (and B stores nothing).

The cases are interleaved round by round (the order alternates); each round makes ``--writes``
timed writes after ``--warmup`` untimed ones, per case. Reported: p50 and p99 per round, their
medians over rounds, pooled percentiles, and the median of the per-round ratios to raw.

Targets: with FULL, crdtmem p50 <= 1.5x the floor (raw+sqlite FULL); with NORMAL, crdtmem p50 <= 1.0x
pycrdt-websocket's, while crdtmem acknowledges and shows only durable writes. The ratios to the signed
floor (the like-for-like anchor since every delta is signed at its origin and verified by its
receiver) are printed beside them; ratios to raw (nothing stored) are printed for information.

Run: ``python benchmarks/bench_sync_latency.py`` (about 30 s), ``--quick`` (about 12 s),
``--breakdown`` to stamp every stage of a write in both processes and print where the time goes,
``--profile`` to cProfile both processes during one crdtmem round.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import itertools
import pstats
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

import aiohttp
import bench_sync_common as common
from aiohttp import web
from bench_sync_common import CH, Child, Target, emit, now_ns
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SCRIPT = str(Path(__file__).resolve())


# -- the B side (child processes) ----------------------------------------------------------------


STAMPS: dict[str, int] = {}
"""--breakdown: CLOCK_MONOTONIC stamps of the stages of the latest write, in each process."""


def install_stage_stamps(side: str) -> None:
    """Wrap the link's send and receive steps to stamp when each stage of a write starts and ends."""
    from crdtmem.sync import link as link_module

    link = link_module.Link
    receive, send = link._receive_deltas, link._send_available

    async def stamped_receive(self: Any, n: int, data: bytes) -> None:
        STAMPS[f"{side}_receive"] = now_ns()
        await receive(self, n, data)

    async def stamped_send(self: Any) -> None:
        STAMPS.setdefault(f"{side}_send_start", now_ns())
        await send(self)
        STAMPS.setdefault(f"{side}_sent", now_ns())

    link._receive_deltas = stamped_receive  # type: ignore[method-assign]
    link._send_available = stamped_send  # type: ignore[method-assign]
    from_commit = getattr(link, "_send_from_commit", None)
    if from_commit is None:  # a link whose frames all go by the sender
        return

    def stamped_from_commit(self: Any) -> bool:
        stamp = f"{side}_send_start"
        fresh = stamp not in STAMPS
        STAMPS.setdefault(stamp, now_ns())
        sent = bool(from_commit(self))
        if not sent and fresh:  # left to the sender: it stamps when it runs
            del STAMPS[stamp]
        return sent

    link._send_from_commit = stamped_from_commit  # type: ignore[attr-defined]


async def child_crdtmem(peer: str, db: str, synchronous: str, profile: str | None, breakdown: bool) -> None:
    from crdtmem import Replica
    from crdtmem.server.node import Node, PeerConfig

    if breakdown:
        install_stage_stamps("b")

    replica = Replica(db, replica_id=Path(db).stem, channels=[CH], synchronous=synchronous)  # type: ignore[arg-type]
    profiler = cProfile.Profile() if profile else None
    async with Node(replica, port=0, peers=[PeerConfig(peer, channels=[CH])]) as node:
        events = replica.events([CH])

        if breakdown:
            replica.on_commit(lambda deltas: STAMPS.__setitem__("b_commit", now_ns()))

        async def watch() -> None:
            async for event in events:
                t = now_ns()
                emit(event="seen", c=event.memory.content, t=t, **STAMPS)
                STAMPS.clear()

        watcher = asyncio.create_task(watch())
        while not node.peers[0].state.connected:
            await asyncio.sleep(0.01)
        emit(event="ready")
        queue = await common.commands()
        while (command := await queue.get()) is not None:
            if profiler is not None and command.get("cmd") == "profile_on":
                profiler.enable()
            elif profiler is not None and command.get("cmd") == "profile_off":
                profiler.disable()
                profiler.dump_stats(profile)  # type: ignore[arg-type]
                emit(event="profiled")
        watcher.cancel()


def open_log(path: str, synchronous: str) -> sqlite3.Connection:
    """The durable baselines' store: one WAL table of updates, the replicas' synchronous mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, doc TEXT, [update] BLOB)")
    return conn


def store_update(conn: sqlite3.Connection, update: bytes, state: bytes) -> None:
    """One transaction per change: the update appended to the log and the document state saved."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO log(doc, [update]) VALUES ('m', ?)", (update,))
    conn.execute("INSERT OR REPLACE INTO log(id, doc, [update]) VALUES (0, 'state', ?)", (state,))
    conn.execute("COMMIT")


SIG = 64
"""Bytes of an Ed25519 signature: the signed floor's frames are the signature, then the update."""


async def child_raw(url: str, db: str, synchronous: str, key: str) -> None:
    from pycrdt import Doc, Map

    doc = Doc()
    fields = doc.get("m", type=Map)
    conn = open_log(db, synchronous) if db != "-" else None
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key)) if key != "-" else None
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        emit(event="ready")
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            update = message.data
            if public is not None:  # the signed floor: nothing applied before it is verified
                update = update[SIG:]
                public.verify(message.data[:SIG], update)  # raises InvalidSignature
            doc.apply_update(update)
            if conn is not None:
                store_update(conn, update, doc.get_update())
            content = fields["content"]
            t = now_ns()
            emit(event="seen", c=content, t=t)


class AiohttpChannel:
    """An aiohttp WebSocket as a pycrdt ``Channel`` (what pycrdt-websocket's rooms and providers
    speak), for the pycrdt-websocket peer."""

    def __init__(self, ws: Any, path: str):
        self._ws = ws
        self._path = path
        self.closed = asyncio.Event()

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> AiohttpChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionError:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self._ws.send_bytes(message)

    async def recv(self) -> bytes:
        message = await self._ws.receive()
        if message.type != aiohttp.WSMsgType.BINARY:
            self.closed.set()
            raise ConnectionError("closed")
        return bytes(message.data)


async def child_pycrdt_websocket(url: str) -> None:
    """B of the pycrdt-websocket pair: a pycrdt Provider on its own Doc, stamping each change."""
    from pycrdt import Doc, Map, Provider

    doc: Doc[Any] = Doc()
    fields = doc.get("m", type=Map)

    def changed(event: Any) -> None:
        if "content" in event.keys:
            emit(event="seen", c=fields["content"], t=now_ns())

    subscription = fields.observe(changed)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        channel = AiohttpChannel(ws, "/room")
        async with Provider(doc, channel):
            emit(event="ready")
            await channel.closed.wait()  # until the driver closes the socket
    fields.unobserve(subscription)


def run_child(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "raw":
        asyncio.run(child_raw(argv[1], argv[2], argv[3], argv[4]))
    elif kind == "pycrdt-websocket":
        asyncio.run(child_pycrdt_websocket(argv[1]))
    else:
        profile = argv[4] if argv[4] != "-" else None
        asyncio.run(child_crdtmem(argv[1], argv[2], argv[3], profile, argv[5] == "1"))


# -- the A side (this driver) --------------------------------------------------------------------


class RawPair:
    """A: an aiohttp WebSocket server holding one pycrdt Doc; B: a child applying what it receives.

    With ``durable`` (a synchronous mode) both sides also commit each update and the document state to
    SQLite before sending / before stamping: the floor that two durable commits put under any design.
    With ``signed`` as well, A signs each update (Ed25519) and B verifies it before applying it.
    """

    def __init__(self, work: Path, durable: str | None = None, signed: bool = False):
        self.work = work
        self.durable = durable
        self.key = Ed25519PrivateKey.generate() if signed else None
        self.label = f"raw+sqlite{'+sig' if signed else ''} {durable}" if durable else "raw"
        name = f"raw-a-{durable}{'-sig' if signed else ''}.db"
        self.conn = open_log(str(work / name), durable) if durable else None
        self.ws: web.WebSocketResponse | None = None
        self.connected = asyncio.Event()
        self.done = asyncio.Event()

    async def start(self) -> None:
        from pycrdt import Doc, Map

        self.doc = Doc()
        self.fields = self.doc.get("m", type=Map)

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.ws = ws
            self.connected.set()
            await self.done.wait()
            await ws.close()
            return ws

        app = web.Application()
        app.router.add_get("/ws", handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        suffix = "-sig" if self.key is not None else ""
        db = str(self.work / f"raw-b-{self.durable}{suffix}.db") if self.durable else "-"
        url = f"http://127.0.0.1:{port}/ws"
        key = "-"
        if self.key is not None:
            key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        self.child = await Child(
            SCRIPT, ["raw", url, db, self.durable or "-", key], self.work / f"{self.label}.log"
        ).start()
        await self.child.expect("ready")
        await self.connected.wait()

    async def write(self, content: str) -> int:
        assert self.ws is not None
        t0 = now_ns()
        before = self.doc.get_state()
        self.fields["content"] = content
        update = self.doc.get_update(before)
        if self.conn is not None:
            store_update(self.conn, update, self.doc.get_update())
        if self.key is not None:
            await self.ws.send_bytes(self.key.sign(update) + update)
        else:
            await self.ws.send_bytes(update)
        return t0

    async def stop(self) -> None:
        self.done.set()
        await self.child.stop()
        await self.runner.cleanup()


class PycrdtWebsocketPair:
    """The peer a Python user would pick instead: pycrdt-websocket. A serves a ``YRoom`` with its
    ``SQLiteYStore`` (pycrdt-store) over an aiohttp WebSocket and writes to the room's document; B is
    a pycrdt ``Provider`` in a child process. The room sends each change to its clients and writes it
    to the YStore in the background: B sees a change before it is durable on A (and B keeps none)."""

    label = "pycrdt-websocket"

    def __init__(self, work: Path):
        self.work = work
        self.done = asyncio.Event()

    async def start(self) -> None:
        from pycrdt import Map
        from pycrdt.store import SQLiteYStore
        from pycrdt.websocket import YRoom

        store_class = type("BenchYStore", (SQLiteYStore,), {"db_path": str(self.work / "ystore.db")})
        self.ystore = store_class("room")  # the room's name; the file is the class's db_path
        self.room = YRoom(ready=True, ystore=self.ystore)
        self.room_task = asyncio.create_task(self.room.start())
        await self.room.started.wait()
        self.fields = self.room.ydoc.get("m", type=Map)

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            serving = asyncio.create_task(self.room.serve(AiohttpChannel(ws, "/room")))
            await self.done.wait()
            serving.cancel()
            await ws.close()
            return ws

        app = web.Application()
        app.router.add_get("/room", handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/room"
        self.child = await Child(
            SCRIPT, ["pycrdt-websocket", url], self.work / "pycrdt-websocket.log"
        ).start()
        await self.child.expect("ready")

    async def write(self, content: str) -> int:
        t0 = now_ns()
        self.fields["content"] = content  # the room's own task broadcasts it and writes the YStore
        return t0

    async def stop(self) -> None:
        self.done.set()
        await self.child.stop()
        await self.runner.cleanup()
        await self.room.stop()
        self.room_task.cancel()


class CrdtmemPair:
    """A: an in-process Node; B: a child Node peered to A, reporting its MemoryEvents."""

    def __init__(self, work: Path, synchronous: str, profile: bool, breakdown: bool, memories: int):
        self.memories = memories
        self.work = work
        self.synchronous = synchronous
        self.breakdown = breakdown
        self.stages: list[list[float]] = []
        self.label = f"crdtmem {synchronous}"
        self.profile = str(work / f"b-{synchronous}.prof") if profile else "-"

    async def start(self) -> None:
        from crdtmem import Replica
        from crdtmem.server.node import Node

        self.replica = Replica(
            self.work / f"a-{self.synchronous}.db",
            replica_id=f"a-{self.synchronous}",
            channels=[CH],
            synchronous=self.synchronous,  # type: ignore[arg-type]
        )
        self.node = await Node(self.replica, port=0).start()
        if self.breakdown:
            self.replica.on_commit(lambda deltas: STAMPS.__setitem__("a_commit", now_ns()))
        self.memory_ids = [
            (await self.replica.add(f"initial {i}", user_id="u1")).id for i in range(self.memories)
        ]
        self.writes = 0
        b_db = str(self.work / f"b-{self.synchronous}.db")
        self.child = await Child(
            SCRIPT,
            ["crdtmem", self.node.url, b_db, self.synchronous, self.profile, "1" if self.breakdown else "0"],
            self.work / f"b-{self.synchronous}.log",
        ).start()
        await self.child.expect("ready")

    async def write(self, content: str) -> int:
        t0 = now_ns()
        self.writes += 1
        await self.replica.update(self.memory_ids[self.writes % len(self.memory_ids)], content=content)
        return t0

    async def stop(self) -> None:
        await self.child.stop()
        await self.node.stop()


async def measure(pair: Any, tag: str, warmup: int, writes: int) -> list[float]:
    """Latencies in ms of ``writes`` writes, one at a time, each waited for on B."""
    latencies = []
    for i in range(warmup + writes):
        content = f"{tag}-{i}"
        STAMPS.clear()
        t0 = await pair.write(content)
        while True:
            seen = await pair.child.expect("seen", timeout=30)
            if seen["c"] == content:
                break
        if i >= warmup:
            latencies.append((seen["t"] - t0) / 1e6)
            stamps = {**STAMPS, **seen, "t0": t0}
            if getattr(pair, "breakdown", False) and all(k in stamps for k in STAGE_KEYS):
                marks = [stamps[k] for k in STAGE_KEYS]
                pair.stages.append([(b - a) / 1e6 for a, b in itertools.pairwise(marks)])
    return latencies


STAGE_KEYS = ("t0", "a_commit", "a_send_start", "b_receive", "b_commit", "t")
STAGES = (
    "A: update() until its commit listeners run",
    "A: commit -> link sends (listener or sender)",
    "A: export + send -> B link receives",
    "B: decode, apply, commit",
    "B: commit -> event consumer stamps",
)


async def profile_round(pair: CrdtmemPair, writes: int) -> None:
    profiler = cProfile.Profile()
    pair.child.send(cmd="profile_on")
    await asyncio.sleep(0.2)
    profiler.enable()
    await measure(pair, "profile", 0, writes)
    profiler.disable()
    profiler.dump_stats(str(pair.work / f"a-{pair.synchronous}.prof"))  # kept with CRDTMEM_BENCH_KEEP
    pair.child.send(cmd="profile_off")
    await pair.child.expect("profiled")
    for label, stats in (
        ("A (writer, pushes)", pstats.Stats(profiler)),
        ("B (receiver)", pstats.Stats(pair.profile)),
    ):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(25)
        print(f"\n=== profile {pair.label}, {label}, {writes} writes (event-loop thread only) ===")
        print(out.getvalue().replace(str(Path(sys.prefix)), "<venv>"))


async def main(args: Any) -> int:
    rounds = common.rounds_for(args)
    writes = args.writes or (150 if args.quick else 500)
    warmup = args.warmup
    common.print_machine()
    print(
        f"latency: {rounds} rounds x {writes} timed writes (+{warmup} warm-up) per case; "
        f"synchronous modes {', '.join(args.synchronous)}",
        flush=True,
    )
    with common.workdir(args) as work:
        if args.breakdown:
            install_stage_stamps("a")
        raws: list[Any] = [RawPair(work)]
        if not args.no_peer:
            raws.append(PycrdtWebsocketPair(work))
        if not args.no_durable_baseline:
            raws += [RawPair(work, s) for s in args.synchronous]
            raws += [RawPair(work, s, signed=True) for s in args.synchronous]
        subjects = [
            CrdtmemPair(work, s, args.profile, args.breakdown, args.memories) for s in args.synchronous
        ]
        pairs: list[Any] = [*raws, *subjects]
        for pair in pairs:
            await pair.start()
        samples: dict[str, list[list[float]]] = {p.label: [] for p in pairs}
        try:
            for r in range(rounds):
                order = pairs if r % 2 == 0 else pairs[::-1]
                for pair in order:
                    samples[pair.label].append(await measure(pair, f"r{r}", warmup, writes))
                summary = "  ".join(
                    f"{p.label} p50 {statistics.median(samples[p.label][-1]):.2f} ms" for p in pairs
                )
                print(f"  round {r + 1}/{rounds}: {summary}", flush=True)
            if args.profile:
                for pair in subjects:
                    await profile_round(pair, writes)
        finally:
            for pair in pairs:
                await pair.stop()

    rows = []
    stats: dict[str, dict[str, Any]] = {}
    for label, per_round in samples.items():
        p50s = [common.percentile(s, 50) for s in per_round]
        p99s = [common.percentile(s, 99) for s in per_round]
        pooled = [x for s in per_round for x in s]
        stats[label] = {
            "p50_rounds": p50s,
            "p99_rounds": p99s,
            "p50": statistics.median(p50s),
            "p99": statistics.median(p99s),
            "pooled_p50": common.percentile(pooled, 50),
            "pooled_p99": common.percentile(pooled, 99),
            "pooled_mean": statistics.fmean(pooled),
            "pooled_max": max(pooled),
        }
        s = stats[label]
        rows.append(
            [
                label,
                s["p50"],
                s["p99"],
                s["pooled_p50"],
                s["pooled_p99"],
                s["pooled_mean"],
                s["pooled_max"],
                len(pooled),
            ]
        )
    common.table(
        "write-to-visible latency, ms (p50/p99: median over rounds of each round's percentile; "
        "pooled: all samples)",
        ["case", "p50", "p99", "pooled p50", "pooled p99", "mean", "max", "samples"],
        rows,
    )
    if args.breakdown:
        for pair in subjects:
            columns = list(zip(*pair.stages, strict=True))
            common.table(
                f"{pair.label}: where the time goes, ms ({len(pair.stages)} writes with every stamp)",
                ["stage", "p50", "p90", "p99"],
                [
                    [name, *(common.percentile(c, q) for q in (50, 90, 99))]
                    for name, c in zip(STAGES, columns, strict=True)
                ],
            )
    # the targets: against the floor (raw pycrdt + the same durable commits on both sides) with FULL,
    # and against the peer a Python user would pick instead (pycrdt-websocket) with NORMAL
    targets = []
    for pair in subjects:
        s = stats[pair.label]
        if pair.synchronous == "FULL" and not args.no_durable_baseline:
            floor = stats["raw+sqlite FULL"]
            value, low, high = common.paired(s["p50_rounds"], floor["p50_rounds"])
            targets.append(
                Target(
                    f"{pair.label} p50 / floor (raw+sqlite FULL) p50",
                    value,
                    1.5,
                    at_most=True,
                    detail=f"rounds {low:.2f}-{high:.2f}; {s['p50']:.2f} ms vs {floor['p50']:.2f} ms",
                )
            )
        if pair.synchronous == "NORMAL" and not args.no_peer:
            peer = stats["pycrdt-websocket"]
            value, low, high = common.paired(s["p50_rounds"], peer["p50_rounds"])
            targets.append(
                Target(
                    f"{pair.label} p50 / pycrdt-websocket p50",
                    value,
                    1.0,
                    at_most=True,
                    detail=f"rounds {low:.2f}-{high:.2f}; {s['p50']:.2f} ms vs {peer['p50']:.2f} ms",
                )
            )
    print("\nfor information: against raw pycrdt + WebSocket (nothing stored), and the other floors")
    base = stats["raw"]
    for pair in subjects:
        s = stats[pair.label]
        for q in ("p50", "p99"):
            value, low, high = common.paired(s[f"{q}_rounds"], base[f"{q}_rounds"])
            print(f"  {pair.label} {q} / raw {q}: {value:.2f}x (rounds {low:.2f}-{high:.2f})")
    signed_ratios: dict[str, float] = {}
    if not args.no_durable_baseline:
        for pair in subjects:
            s = stats[pair.label]
            for floor_label in (f"raw+sqlite {pair.synchronous}", f"raw+sqlite+sig {pair.synchronous}"):
                floor = stats[floor_label]
                for q in ("p50", "p99"):
                    value, low, high = common.paired(s[f"{q}_rounds"], floor[f"{q}_rounds"])
                    print(
                        f"  {pair.label} {q} / {floor_label} {q}: {value:.2f}x "
                        f"(rounds {low:.2f}-{high:.2f}; {s[q]:.2f} ms vs {floor[q]:.2f} ms)"
                    )
        # the second anchor: the floor plus one Ed25519 sign on A and one verify on B per change
        print("\nagainst the signed floor (the floor + one Ed25519 sign on A and one verify on B a change):")
        for pair in subjects:
            s, floor = stats[pair.label], stats[f"raw+sqlite+sig {pair.synchronous}"]
            value, low, high = common.paired(s["p50_rounds"], floor["p50_rounds"])
            signed_ratios[pair.label] = value
            print(
                f"  {pair.label} p50 / raw+sqlite+sig {pair.synchronous} p50: {value:.2f}x "
                f"(rounds {low:.2f}-{high:.2f}; {s['p50']:.2f} ms vs {floor['p50']:.2f} ms)"
            )
    return common.finish(
        args,
        "sync_latency",
        targets,
        {"latency_ms": stats, "writes": writes, "p50_over_signed_floor": signed_ratios},
    )


def cli() -> int:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument(
        "--writes", type=int, default=None, help="timed writes per case per round (500; quick 150)"
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed writes before each case's round")
    p.add_argument("--synchronous", nargs="+", default=["FULL", "NORMAL"], choices=["FULL", "NORMAL"])
    p.add_argument("--profile", action="store_true", help="cProfile A and B during one crdtmem round")
    p.add_argument(
        "--memories",
        type=int,
        default=100,
        help="facts the writes rotate over (100); 1 = one hot fact, whose state grows with every update",
    )
    p.add_argument("--breakdown", action="store_true", help="stamp each stage of a write in both processes")
    p.add_argument(
        "--no-peer",
        action="store_true",
        help="skip pycrdt-websocket (needs the bench extra: pip install -e '.[bench]')",
    )
    p.add_argument(
        "--no-durable-baseline",
        action="store_true",
        help="skip the raw + SQLite cases (for information only)",
    )
    args = p.parse_args()
    if args.child is not None:
        run_child(args.child)
        return 0
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
