"""Child process of ``tests/test_durability.py``: writes to a replica until it is killed.

Usage: ``python durable_writer.py DB_PATH RUN SEED [WRITERS]``

Opens ``Replica(DB_PATH, replica_id="writer")`` and runs WRITERS concurrent tasks (so the group
committer batches several writes into one transaction). Each task owns its memories, so its writes
to them are sequential. After each awaited write *returned* (the write is acknowledged), it prints one
line and flushes::

    ready - - - - <seq>                         once, after start()
    <op> <task> <n> <memory_id> <value> <seq>   per acknowledged write

``n`` counts the task's writes from 1; ``value`` is unique per write (``r{RUN}t{task}n{n}``; for
increments, the counter's value after it) so a lost write is visible; ``seq`` is this replica's
version-vector entry for the user channel right after the write.
"""

from __future__ import annotations

import asyncio
import random
import sys

from crdtmem import NotFound, Replica

USER = "u1"
CHANNEL = f"user:{USER}:memories"
REPLICA_ID = "writer"
OPS = ("add", "update", "increment", "add_items", "append_message")


def fixed_memories(task: int) -> dict[str, tuple[str, object]]:
    """The memories one writer task updates in place: id -> (kind, initial content)."""
    return {
        f"fact-t{task}": ("fact", "initial"),
        f"counter-t{task}": ("counter", 0),
        f"list-t{task}": ("list", []),
        f"conv-t{task}": ("conversation", []),
    }


def emit(*fields: object) -> None:
    print(*fields, flush=True)


def seq(replica: Replica) -> int:
    return replica.version_vector(CHANNEL).get(REPLICA_ID, 0)


async def writer(replica: Replica, run: int, task: int, rng: random.Random) -> None:
    n = 0
    while True:
        n += 1
        value = f"r{run}t{task}n{n}"
        op = rng.choice(OPS)
        if op == "add":
            topics = ["t1"] if n % 2 else []
            memory = await replica.add(value, user_id=USER, topics=topics, metadata={"value": value})
            shown = value
        elif op == "update":
            memory = await replica.update(f"fact-t{task}", content=value)
            shown = value
        elif op == "increment":
            memory = await replica.increment(f"counter-t{task}", 1)
            shown = str(memory.content)
        elif op == "add_items":
            memory = await replica.add_items(f"list-t{task}", value)
            shown = value
        else:
            memory = await replica.append_message(f"conv-t{task}", role="user", text=value)
            shown = value
        emit(op, task, n, memory.id, shown, seq(replica))


async def main(path: str, run: int, seed: int, writers: int) -> None:
    rng = random.Random(seed)
    async with Replica(path, replica_id=REPLICA_ID) as replica:
        for task in range(writers):
            for memory_id, (kind, content) in fixed_memories(task).items():
                try:
                    await replica.get(memory_id)
                except NotFound:
                    await replica.add(content, kind=kind, user_id=USER, memory_id=memory_id)  # type: ignore[arg-type]
        emit("ready", "-", "-", "-", "-", seq(replica))
        await asyncio.gather(
            *(writer(replica, run, task, random.Random(rng.random())) for task in range(writers))
        )


if __name__ == "__main__":
    db_path, run_number, seed_value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    task_count = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    asyncio.run(main(db_path, run_number, seed_value, task_count))
