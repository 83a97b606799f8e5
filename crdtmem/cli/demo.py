"""``crdtmem demo``: four replicas as real servers on loopback, syncing, conflicting and merging.

The seed's scenario on embedded defaults (SQLite files, an embedded search index, in-process aiohttp
servers): a phone, a laptop and a support agent sync through an admin replica that also serves the
live dashboard. Every step prints what happened, with measured timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..document.records import Memory
from ..engine.replica import Replica
from ..index import IndexSettings
from ..server.node import Node, PeerConfig

U1 = "user:u1:memories"
ACME = "tenant:acme:shared"
Say = Callable[[str], None]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> float:
    """Wait until ``check()`` is true; returns the milliseconds it took."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"demo step did not complete within {timeout} s")
        await asyncio.sleep(0.002)
    return (time.perf_counter() - started) * 1000


async def _content(replica: Replica, memory_id: str) -> Any:
    with contextlib.suppress(Exception):
        return (await replica.get(memory_id)).content
    return None


class Demo:
    def __init__(self, directory: Path, say: Say = print, *, embedder: str = "hashing"):
        self.dir = directory
        self.say = say
        self.index = IndexSettings(embedder=embedder)
        self.admin = Node(Replica(directory / "admin.db", replica_id="admin", index=self.index))
        self.nodes: dict[str, Node] = {"admin": self.admin}

    async def start(self) -> None:
        await self.admin.start()
        plan = {
            "phone": ([U1], False),
            "laptop": ([U1], False),
            "support": ([U1, ACME], True),
        }
        for name, (channels, index) in plan.items():
            replica = Replica(
                self.dir / f"{name}.db",
                replica_id=name,
                channels=channels,
                index=self.index if index else None,
            )
            node = Node(replica, peers=[PeerConfig(self.admin.url)])
            self.nodes[name] = await node.start()
        for node in self.nodes.values():
            for peer in node.peers:
                await asyncio.wait_for(peer.synced.wait(), 10)
        urls = ", ".join(f"{n} {node.url}" for n, node in self.nodes.items())
        self.say(f"Started 4 replicas as servers on loopback: {urls}")
        self.say(f"  SQLite files and the search index live in {self.dir}")

    async def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            await node.stop()

    def r(self, name: str) -> Replica:
        return self.nodes[name].replica

    async def run(self) -> bool:
        phone, laptop, support = self.r("phone"), self.r("laptop"), self.r("support")
        ok = True

        # 1. a fact learned on the phone reaches the laptop
        fact = await phone.add(
            "User prefers dark mode",
            kind="preference",
            user_id="u1",
            agent_id="phone-agent",
            session_id="s1",
            tags=["ui"],
        )
        ms = await _until(lambda: self._has(laptop, fact.id, fact.content))
        self.say(
            f"1. phone learned {fact.content!r}; laptop had it {ms:.1f} ms later "
            "(phone -> admin -> laptop, eager push over WebSockets)"
        )

        # 2. offline writes, then catch-up on reconnect
        await self.nodes["phone"].disconnect_peers()
        await phone.update(fact.id, content="User prefers dark mode, high contrast")
        name = await phone.add("User's name is Ada", user_id="u1", agent_id="phone-agent")
        city = await laptop.add("User works in Berlin", user_id="u1", agent_id="laptop-agent")
        self.say("2. phone went offline and wrote 2 changes; meanwhile laptop wrote 1")
        await _until(lambda: self._has(self.r("admin"), city.id, city.content))
        started = time.perf_counter()
        await self.nodes["phone"].connect_peers()
        await _until(lambda: self._has(laptop, name.id, name.content))
        await _until(lambda: self._has(phone, city.id, city.content))
        pulled = sum(p.state.pulled_deltas for p in self.nodes["phone"].peers)
        self.say(
            f"   phone reconnected: pulled {pulled} missed delta(s) first, pushed its own; both "
            f"converged in {(time.perf_counter() - started) * 1000:.0f} ms"
        )

        # 3. a concurrent conflict, flagged everywhere, resolved once
        await self.nodes["phone"].disconnect_peers()
        await phone.update(fact.id, content="User prefers light mode")
        await laptop.update(fact.id, content="User prefers solarized")
        await self.nodes["phone"].connect_peers()
        await _until(lambda: self._conflicted_everywhere(fact.id))
        conflict = (await laptop.conflicts(memory_id=fact.id))[0]
        values = [v.value for v in conflict.values]
        self.say(
            f"3. phone (offline) and laptop changed the preference concurrently: conflict on "
            f"'{conflict.field}' flagged on all 4 replicas with values {values}"
        )
        await laptop.resolve(fact.id, field="content", value="User prefers solarized")
        ms = await _until(lambda: self._resolved_everywhere(fact.id))
        self.say(
            f"   resolved on laptop; the resolution reached every replica in {ms:.1f} ms; "
            f"phone reads {await _content(phone, fact.id)!r}"
        )

        # 4. counters and lists merge without conflicts
        counter = await phone.add(0, kind="counter", user_id="u1", metadata={"name": "sessions"})
        groceries = await phone.add(["milk"], kind="list", user_id="u1", metadata={"name": "groceries"})
        await _until(lambda: self._has(laptop, groceries.id, ["milk"]))
        await self.nodes["phone"].disconnect_peers()
        await phone.increment(counter.id, 2)
        await laptop.increment(counter.id, 3)
        await phone.add_items(groceries.id, "eggs")
        await laptop.remove_items(groceries.id, "milk")
        await laptop.add_items(groceries.id, "bread")
        await self.nodes["phone"].connect_peers()
        await _until(lambda: self._has(phone, counter.id, 5))
        # the phone reports the list, so wait for it there too: laptop's "bread" may reach the phone
        # through the admin node after the counter did
        await _until(lambda: self._has(laptop, groceries.id, ["eggs", "bread"]))
        await _until(lambda: self._has(phone, groceries.id, ["eggs", "bread"]))
        items = await _content(phone, groceries.id)
        self.say(
            f"4. concurrent +2 (phone) and +3 (laptop) merged to {await _content(phone, counter.id)} "
            f"everywhere; the list merged to {items} (add wins, observed removes only)"
        )
        ok &= items == ["eggs", "bread"]

        # 5. search by meaning on the support agent's replica, scoped to the tenant
        for text in (
            "Refund policy: customers can ask for a refund within 30 days of purchase",
            "Support hours are 9:00 to 17:00 CET on weekdays",
            "Escalate billing disputes to the finance team",
        ):
            await support.add(text, tenant_id="acme", shared=True, agent_id="support-agent")
        assert support.index is not None
        await support.index.wait_idle(timeout=120)  # a semantic model loads on its first batch
        query = "how long do customers have to request a refund?"
        started = time.perf_counter()
        hits = await support.search(query, tenant_id="acme", limit=3)
        ms = (time.perf_counter() - started) * 1000
        top = hits[0] if hits else None
        described = f"{top.memory.content!r} (score {top.score:.2f})" if top else "nothing"
        self.say(f"5. support agent searched {query!r} in tenant acme in {ms:.1f} ms: top hit {described}")
        model = support.index.embedder.model
        kind = (
            "lexical: matches shared words and spellings; `crdtmem demo --embedder minilm` (minilm "
            "extra) matches by meaning"
            if model.startswith("crdtmem/hashing")
            else "semantic"
        )
        self.say(
            f"   ({model} embedder, {kind}; {support.index.engine.name} engine, "
            f"index lag {support.index.lag()} versions)"
        )
        ok &= top is not None and "refund" in str(top.memory.content)

        # replication is asynchronous: the last changes may still be on their way to a replica
        # that no step above waited on (support), so convergence is waited for, within a bound
        try:
            await _until(self._converged)
            converged = True
        except TimeoutError:
            converged = False
        self.say(
            "Done: every replica converged, nothing was lost."
            if converged and ok
            else "Replicas did NOT converge or a step failed."
        )
        return converged and ok

    async def _has(self, replica: Replica, memory_id: str, content: Any) -> bool:
        found: Any = await _content(replica, memory_id)
        return bool(found == content)

    async def _conflicted_everywhere(self, memory_id: str) -> bool:
        found = [await node.replica.conflicts(memory_id=memory_id) for node in self.nodes.values()]
        return all(len(c) == 1 for c in found) and all(c == found[0] for c in found)

    async def _resolved_everywhere(self, memory_id: str) -> bool:
        for node in self.nodes.values():
            if await node.replica.conflicts(memory_id=memory_id):
                return False
        return True

    async def _converged(self) -> bool:
        def view(memories: list[Memory]) -> list[tuple[str, str]]:
            return sorted((m.id, repr(m.content)) for m in memories)

        reference = view(await self.r("admin").list(user_id="u1", include_deleted=True))
        for name in ("phone", "laptop", "support"):
            if view(await self.r(name).list(user_id="u1", include_deleted=True)) != reference:
                return False
        return True


async def run_demo(
    directory: Path, say: Say = print, *, keep: bool = False, embedder: str = "hashing"
) -> int:
    demo = Demo(directory, say, embedder=embedder)
    try:
        await demo.start()
        ok = await demo.run()
        if keep:
            say(f"\nDashboard: {demo.admin.url}/dashboard   (Ctrl-C to stop)")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 0 if ok else 1
    finally:
        await demo.stop()


def main(directory: str | None = None, keep: bool = False, embedder: str = "hashing") -> int:
    import logging
    import sys

    from ..errors import CrdtmemError
    from ..index.embedders import load_embedder

    logging.getLogger("crdtmem.node").setLevel(logging.ERROR)  # open loopback servers: expected here
    try:
        load_embedder(embedder)  # a missing extra is one line here, before any replica starts
    except CrdtmemError as exc:
        print(f"crdtmem demo: {exc}", file=sys.stderr)
        return 2
    try:
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            return asyncio.run(run_demo(Path(directory), keep=keep, embedder=embedder))
        with tempfile.TemporaryDirectory(prefix="crdtmem-demo-") as tmp:
            return asyncio.run(run_demo(Path(tmp), keep=keep, embedder=embedder))
    except (TimeoutError, CrdtmemError, OSError) as exc:  # a step that did not complete: one line
        print(f"crdtmem demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
