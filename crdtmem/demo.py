"""``crdtmem demo``: replicas syncing, step by step, with real timings and real results.

Runs on embedded defaults (SQLite files in a temporary directory). Each step says what happened.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .replica import Replica

CHANNEL = "user:u1:memories"


async def _sync(source: Replica, target: Replica, channel: str = CHANNEL) -> tuple[int, int, float]:
    """Pull what ``target`` misses from ``source``: (deltas applied, bytes, milliseconds)."""
    started = time.perf_counter()
    payload = await source.export_since(channel, target.version_vector(channel))
    result = await target.apply(payload)
    return result.applied, len(payload), (time.perf_counter() - started) * 1000


async def run_demo(directory: Path, say: Callable[[str], None] = print) -> int:
    """Run the whole demo in ``directory``; returns a process exit code."""
    replicas = {
        name: Replica(directory / f"{name}.db", replica_id=name)
        for name in ("phone", "laptop", "support", "admin")
    }
    for replica in replicas.values():
        await replica.start()
    phone, laptop, support = replicas["phone"], replicas["laptop"], replicas["support"]
    try:
        say(f"Started 4 replicas (phone, laptop, support, admin) on SQLite files in {directory}")

        fact = await phone.add(
            "User prefers dark mode", kind="preference", user_id="u1", agent_id="phone-agent",
            session_id="s1", tags=["ui"],
        )
        applied, size, ms = await _sync(phone, laptop)
        seen = await laptop.get(fact.id)
        say(f"1. phone learned {fact.content!r}; laptop synced {applied} delta ({size} B) in "
            f"{ms:.2f} ms and now reads {seen.content!r}")

        await phone.update(fact.id, content="User prefers dark mode, high contrast")
        await phone.add("User's name is Ada", user_id="u1", agent_id="phone-agent")
        await laptop.add("User works in Berlin", user_id="u1", agent_id="laptop-agent")
        say("2. phone went offline and wrote 2 changes; meanwhile laptop wrote 1")
        applied, size, ms = await _sync(phone, laptop)
        back, _, _ = await _sync(laptop, phone)
        names = sorted(m.content for m in await laptop.list(user_id="u1"))
        say(f"   phone reconnected: laptop pulled exactly the {applied} missed deltas ({size} B, "
            f"{ms:.2f} ms), phone pulled {back}; both now have {names}")

        await phone.update(fact.id, content="User prefers light mode")
        await laptop.update(fact.id, content="User prefers solarized")
        await _sync(phone, laptop)
        await _sync(laptop, phone)
        conflicts = await phone.conflicts(user_id="u1")
        values = [v.value for v in conflicts[0].values] if conflicts else []
        same = conflicts == await laptop.conflicts(user_id="u1")
        say(f"3. phone and laptop changed the preference concurrently: conflict flagged on both "
            f"({'identical' if same else 'DIFFERENT'}) with values {values}")
        await laptop.resolve(fact.id, field="content", value="User prefers solarized")
        await _sync(laptop, phone)
        say(f"   resolved on laptop; phone now reads {(await phone.get(fact.id)).content!r} with "
            f"{len(await phone.conflicts(user_id='u1'))} open conflicts")

        counter = await phone.add(0, kind="counter", user_id="u1", metadata={"name": "sessions"})
        items = await phone.add(["milk"], kind="list", user_id="u1", metadata={"name": "groceries"})
        await _sync(phone, laptop)
        await phone.increment(counter.id, 2)
        await laptop.increment(counter.id, 3)
        await phone.add_items(items.id, "eggs")
        await laptop.remove_items(items.id, "milk")
        await laptop.add_items(items.id, "bread")
        await _sync(phone, laptop)
        await _sync(laptop, phone)
        c1, c2 = (await phone.get(counter.id)).content, (await laptop.get(counter.id)).content
        l1, l2 = (await phone.get(items.id)).content, (await laptop.get(items.id)).content
        say(f"4. concurrent +2 (phone) and +3 (laptop) merged to {c1} on phone and {c2} on laptop; "
            f"list merged to {l1} / {l2}")

        applied, size, ms = await _sync(phone, support)
        say(f"5. support agent caught up on {applied} deltas ({size} B) in {ms:.2f} ms and lists "
            f"{len(await support.list(user_id='u1'))} memories for u1")
        ok = c1 == c2 == 5 and l1 == l2 and not await phone.conflicts() and same
        say("Done: every replica converged." if ok else "Replicas did NOT converge.")
        return 0 if ok else 1
    finally:
        for replica in replicas.values():
            await replica.stop()


def main(directory: str | None = None) -> int:
    if directory is not None:
        return asyncio.run(run_demo(Path(directory)))
    with tempfile.TemporaryDirectory(prefix="crdtmem-demo-") as tmp:
        return asyncio.run(run_demo(Path(tmp)))
