"""Kill -9 durability: every acknowledged write survives SIGKILL at a random point.

A child process (``tests/helpers/durable_writer.py``) writes to a replica on a SQLite file in a loop
and prints each write only after the awaited call returned. The parent kills it with SIGKILL after a
random delay, reopens the file, and checks that every acknowledged write is there, that SQLite's
``integrity_check`` is ok, that version vectors survived and the log is contiguous, and that the next
child continues the sequence numbers instead of reusing them.

Every write carries a unique value, so a lost one is visible. Per writer task at most one write is in
flight at the kill; it may or may not have committed, and the checks allow exactly that much slack.

``CRDTMEM_DURABILITY_SEED`` overrides the seed of the kill schedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crdtmem import Replica

HELPER = Path(__file__).parent / "helpers" / "durable_writer.py"
REPLICA_ID = "writer"
USER_CHANNEL = "user:u1:memories"
WRITERS = 3
READY_TIMEOUT_S = 20.0

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@dataclass(frozen=True)
class Ack:
    op: str
    task: int
    n: int
    memory_id: str
    value: str
    seq: int


@dataclass
class Ledger:
    """What the parent knows is durable: acknowledged writes, folded with each verified reopen."""

    facts: dict[str, str] = field(default_factory=dict)
    fact_main: dict[int, str] = field(default_factory=lambda: dict.fromkeys(range(WRITERS), "initial"))
    counters: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(WRITERS), 0))
    items: dict[int, list[str]] = field(default_factory=lambda: {t: [] for t in range(WRITERS)})
    messages: dict[int, list[str]] = field(default_factory=lambda: {t: [] for t in range(WRITERS)})
    vectors: dict[str, dict[str, int]] = field(default_factory=dict)
    acked_writes: int = 0
    fixed_exist: bool = False


@dataclass
class Run:
    number: int
    ready_seq: int | None
    acks: list[Ack]
    returncode: int
    stderr: str


def _spawn_and_kill(db: Path, run: int, rng: random.Random, stderr_path: Path) -> Run:
    with stderr_path.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, str(HELPER), str(db), str(run), str(rng.randrange(2**31)), str(WRITERS)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            if line.startswith("ready "):
                ready.set()
        ready.set()  # EOF: the child died; do not wait any longer

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if rng.random() < 0.12:  # sometimes kill during start-up (schema creation, open, warm)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            assert ready.wait(READY_TIMEOUT_S), "child did not get ready"
            time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        reader.join(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    ready_seq = None
    acks = []
    for line in lines:
        if not line.endswith("\n"):
            continue  # cut short by the kill: never acknowledged to anyone
        op, task, n, memory_id, value, seq = line.split()
        if op == "ready":
            ready_seq = int(seq)
        else:
            acks.append(Ack(op, int(task), int(n), memory_id, value, int(seq)))
    return Run(run, ready_seq, acks, child.returncode, stderr_path.read_text())


def _in_flight(run: Run, task: int) -> str:
    """The value of the one write of ``task`` that may have committed without being printed."""
    last = max((a.n for a in run.acks if a.task == task), default=0)
    return f"r{run.number}t{task}n{last + 1}"


async def _verify(db: Path, ledger: Ledger, run: Run) -> None:
    """Reopen the file and check every acknowledged write; fold the observed state into the ledger."""
    where = f"after run {run.number} ({len(run.acks)} acks)"
    async with Replica(db, replica_id=REPLICA_ID) as replica:
        assert replica.store.integrity_check() == "ok", where  # type: ignore[attr-defined]
        assert await replica.conflicts() == [], where
        assert replica.store.pending() == [], where

        # version vectors survived, never went backwards, and cover every acknowledged write
        vectors = replica.version_vectors()
        for channel, vector in ledger.vectors.items():
            for origin, seq in vector.items():
                assert vectors.get(channel, {}).get(origin, 0) >= seq, f"{where}: {channel} regressed"
        user_seq = vectors.get(USER_CHANNEL, {}).get(REPLICA_ID, 0)
        if run.acks:
            assert user_seq >= max(a.seq for a in run.acks), where
        if run.ready_seq is not None:
            previous = ledger.vectors.get(USER_CHANNEL, {}).get(REPLICA_ID, 0)
            # a child writes before "ready" only to create its fixed memories, the first time
            assert run.ready_seq >= previous, f"{where}: the vector went backwards across a restart"
            if ledger.fixed_exist:
                assert run.ready_seq == previous, where
            assert all(a.seq > run.ready_seq for a in run.acks), f"{where}: a sequence number was reused"

        # the log behind the vectors is contiguous, 1..seq per channel, each delta once
        for channel, vector in vectors.items():
            logged = replica.store.deltas_since([channel], {})
            seqs = sorted(d.seqs[channel] for d in logged if d.origin == REPLICA_ID)
            assert seqs == list(range(1, vector.get(REPLICA_ID, 0) + 1)), f"{where}: {channel} log"
            assert len({d.uid for d in logged}) == len(logged), where

        memories = {m.id: m for m in await replica.list()}
        in_flight = {task: _in_flight(run, task) for task in range(WRITERS)}

        # every acknowledged add is there, with its content
        for ack in run.acks:
            if ack.op == "add":
                ledger.facts[ack.memory_id] = ack.value
        for memory_id, value in ledger.facts.items():
            assert memory_id in memories, f"{where}: acknowledged add {value} lost"
            assert memories[memory_id].content == value, where
            assert memories[memory_id].metadata == {"value": value}, where
        fixed = {f"{kind}-t{t}" for kind in ("fact", "counter", "list", "conv") for t in range(WRITERS)}
        extra = set(memories) - set(ledger.facts) - fixed
        assert {memories[i].content for i in extra} <= set(in_flight.values()), f"{where}: unknown add"
        ledger.facts.update({i: memories[i].content for i in extra})

        for task in range(WRITERS):
            acks = [a for a in run.acks if a.task == task]
            if not all(f"{kind}-t{task}" in memories for kind in ("fact", "counter", "list", "conv")):
                # killed while creating them, before "ready": nothing of this task was acknowledged
                assert not acks, f"{where}: task {task} acknowledged writes but its memories are gone"
                continue

            # fact: the last acknowledged update, or the one in flight
            for ack in acks:
                if ack.op == "update":
                    ledger.fact_main[task] = ack.value
            content = memories[f"fact-t{task}"].content
            assert content in (ledger.fact_main[task], in_flight[task]), f"{where}: update lost"
            ledger.fact_main[task] = content

            # counter: every acknowledged increment, plus at most the one in flight
            for ack in acks:
                if ack.op == "increment":
                    assert int(ack.value) == ledger.counters[task] + 1, where
                    ledger.counters[task] += 1
            value = memories[f"counter-t{task}"].content
            assert value in (ledger.counters[task], ledger.counters[task] + 1), f"{where}: increment lost"
            ledger.counters[task] = value

            # list: every acknowledged item
            ledger.items[task] += [a.value for a in acks if a.op == "add_items"]
            items = memories[f"list-t{task}"].content
            assert set(ledger.items[task]) <= set(items), f"{where}: acknowledged item lost"
            assert set(items) - set(ledger.items[task]) <= {in_flight[task]}, where
            ledger.items[task] = list(items)

            # conversation: every acknowledged message, in order
            ledger.messages[task] += [a.value for a in acks if a.op == "append_message"]
            texts = [m["text"] for m in memories[f"conv-t{task}"].content]
            assert texts in (ledger.messages[task], [*ledger.messages[task], in_flight[task]]), (
                f"{where}: acknowledged message lost or reordered"
            )
            ledger.messages[task] = texts

        ledger.vectors = vectors
        ledger.fixed_exist = fixed <= set(memories)
        ledger.acked_writes += len(run.acks)


async def _write_after_reopen(db: Path, ledger: Ledger) -> None:
    """A fresh process start continues the sequence numbers and the clock; nothing is reused."""
    async with Replica(db, replica_id=REPLICA_ID) as replica:
        before = replica.version_vector(USER_CHANNEL).get(REPLICA_ID, 0)
        assert before == ledger.vectors.get(USER_CHANNEL, {}).get(REPLICA_ID, 0)
        last_hlc = max((d.hlc for d in replica.store.deltas_since([USER_CHANNEL], {})), default="")
        memory = await replica.add("after the last kill", user_id="u1")
        assert replica.version_vector(USER_CHANNEL)[REPLICA_ID] == before + 1
        (delta,) = replica.store.deltas_since([USER_CHANNEL], {USER_CHANNEL: {REPLICA_ID: before}})
        assert delta.doc_id == memory.id
        assert delta.seqs == {USER_CHANNEL: before + 1}
        assert delta.hlc > last_hlc
    async with Replica(db, replica_id=REPLICA_ID) as replica:
        assert (await replica.get(memory.id)).content == "after the last kill"
        assert replica.store.integrity_check() == "ok"  # type: ignore[attr-defined]


def _kill_loop(tmp_path: Path, kills: int, budget_s: float) -> Ledger:
    seed = int(os.environ.get("CRDTMEM_DURABILITY_SEED", "20240611"))
    rng = random.Random(seed)
    db = tmp_path / "durable.db"
    ledger = Ledger()
    deadline = time.monotonic() + budget_s
    done = 0
    while done < kills and time.monotonic() < deadline:
        run = _spawn_and_kill(db, done, rng, tmp_path / f"stderr-{done}.txt")
        assert run.returncode == -signal.SIGKILL, (
            f"child exited by itself (seed {seed}, run {done}): {run.stderr}"
        )
        try:
            asyncio.run(_verify(db, ledger, run))
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
        done += 1
    assert done >= min(kills, 5), f"only {done} kills fit in {budget_s} s"
    asyncio.run(_write_after_reopen(db, ledger))
    return ledger


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    # 15 kills took 36 s beside three busy loops on two cores: the budget only bounds a run that
    # hangs, it must not cut the kills short (at 30 s it did)
    ledger = _kill_loop(tmp_path, kills=15, budget_s=120.0)
    assert ledger.acked_writes > 50  # the kills landed while writes were flowing


@pytest.mark.soak
def test_acknowledged_writes_survive_sigkill_soak(tmp_path: Path) -> None:
    ledger = _kill_loop(tmp_path, kills=200, budget_s=900.0)
    assert ledger.acked_writes > 1000
