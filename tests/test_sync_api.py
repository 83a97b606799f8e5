"""SyncReplica: the blocking facade runs the async replica on a private loop thread."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import time
import warnings
from pathlib import Path

import pytest

from crdtmem import InvalidInput, NotFound, Replica, ReplicaClosed, SyncReplica, WrongKind
from crdtmem.engine.payload import decode
from crdtmem.index import IndexSettings
from crdtmem.index.indexer import SearchResult

USER_CHANNEL = "user:u1:memories"


def test_write_read_and_reopen(tmp_path: Path) -> None:
    with SyncReplica(tmp_path / "s.db", replica_id="s1") as replica:
        assert replica.id == "s1"
        assert isinstance(replica.replica, Replica)
        memory = replica.add("User prefers dark mode", user_id="u1", metadata={"k": 1})
        assert replica.get(memory.id).content == "User prefers dark mode"
        assert replica.update(memory.id, content="light mode").content == "light mode"
        counter = replica.add(1, kind="counter", user_id="u1")
        assert replica.increment(counter.id, 2).content == 3
        assert replica.decrement(counter.id).content == 2
        items = replica.add(["a"], kind="list", user_id="u1")
        assert replica.add_items(items.id, "b").content == ["a", "b"]
        assert replica.remove_items(items.id, "a").content == ["b"]
        chat = replica.add(kind="conversation", user_id="u1")
        assert [m["text"] for m in replica.append_message(chat.id, role="user", text="hi").content] == ["hi"]
        assert replica.set_embedding(memory.id, [1.0], "m").embedding == (1.0,)
        assert {m.id for m in replica.list(user_id="u1")} == {memory.id, counter.id, items.id, chat.id}
        assert len(replica.history(memory.id)) == 3
        assert replica.delete(chat.id).deleted
        replica.forget(items.id)
        assert replica.forgotten(items.id)
        assert replica.version_vector(USER_CHANNEL) == {"s1": 13}  # one per write above, and the marker
        assert replica.version_vectors() == {USER_CHANNEL: {"s1": 13}}  # passed through
        assert replica.conflicts() == []
    with SyncReplica(tmp_path / "s.db") as again:
        assert again.id == "s1"
        assert again.get(memory.id).content == "light mode"


def test_errors_keep_their_type(tmp_path: Path) -> None:
    with SyncReplica(tmp_path / "s.db", replica_id="s1") as replica:
        fact = replica.add("x")
        with pytest.raises(NotFound):
            replica.get("missing")
        with pytest.raises(WrongKind):
            replica.increment(fact.id)
        with pytest.raises(InvalidInput):
            replica.add("x", kind="note")
        assert replica.get(fact.id).content == "x"  # still usable


def test_exchange_and_conflicts_between_two(tmp_path: Path) -> None:
    with (
        SyncReplica(tmp_path / "a.db", replica_id="a") as a,
        SyncReplica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory = a.add("tea", user_id="u1")
        result = b.apply(a.export_since(USER_CHANNEL))
        assert result.applied == 1
        a.update(memory.id, content="coffee")
        b.update(memory.id, content="water")
        b.apply(a.export_since(USER_CHANNEL, b.version_vector(USER_CHANNEL)))
        a.apply(b.export_since(USER_CHANNEL, a.version_vector(USER_CHANNEL)))
        assert [c.field for c in a.conflicts()] == ["content"]
        assert a.conflicts() == b.conflicts()
        a.resolve(memory.id, field="content", value="tea")
        b.apply(a.export_since(USER_CHANNEL, b.version_vector(USER_CHANNEL)))
        assert b.conflicts() == []
        assert b.get(memory.id).content == "tea"


def test_close_is_idempotent_and_stops_the_thread(tmp_path: Path) -> None:
    replica = SyncReplica(tmp_path / "s.db", replica_id="s1")
    thread = replica._thread
    replica.close()
    replica.close()
    assert not thread.is_alive()


def test_use_after_close_raises_replica_closed(tmp_path: Path) -> None:
    replica = SyncReplica(tmp_path / "s.db", replica_id="s1")
    memory = replica.add("x")
    replica.close()
    raised = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in (lambda: replica.get(memory.id), lambda: replica.add("y")):
            try:
                call()
            except Exception as exc:
                raised.append(type(exc))
            gc.collect()  # a coroutine made and never awaited would warn here
    assert raised == [ReplicaClosed, ReplicaClosed]
    assert [str(w.message) for w in caught] == [], "a call after close left a coroutine never awaited"


def test_a_call_running_in_another_thread_when_closed_gets_replica_closed(tmp_path: Path) -> None:
    """close() from one thread while another waits on a call: that call ends with ReplicaClosed
    instead of waiting forever for a loop that stopped."""
    replica = SyncReplica(tmp_path / "s.db", replica_id="s1")
    started = threading.Event()

    async def never_finishes() -> None:
        started.set()
        await asyncio.Event().wait()

    replica.replica.never_finishes = never_finishes  # type: ignore[attr-defined]
    outcome: list[object] = []

    def caller() -> None:
        try:
            replica.never_finishes()
        except Exception as exc:
            outcome.append(type(exc))

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(30)
    replica.close()
    thread.join(30)
    assert not thread.is_alive() and outcome == [ReplicaClosed]


def test_a_call_after_the_loop_closed_leaves_no_coroutine_behind(tmp_path: Path) -> None:
    """Even past the closed check (another thread closed it in between), the coroutine is closed."""
    replica = SyncReplica(tmp_path / "s.db", replica_id="s1")
    replica.close()
    coroutine = replica.replica.get("anything")
    with pytest.raises(ReplicaClosed):
        replica._run(coroutine)
    assert coroutine.cr_frame is None, "the coroutine was left unawaited and open"


def test_failed_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    with SyncReplica(tmp_path / "s.db", replica_id="owner"):
        pass
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(InvalidInput):
        SyncReplica(tmp_path / "s.db", replica_id="intruder")
    leaked = [t for t in threading.enumerate() if t.ident not in before]
    assert leaked == [], f"threads left running: {leaked}"


def test_every_coroutine_method_blocks_search_included(tmp_path: Path) -> None:
    with SyncReplica(tmp_path / "s.db", replica_id="s1", index=IndexSettings(engine="memory")) as replica:
        memory = replica.add("User prefers dark mode in every editor", user_id="u1")
        deadline = time.monotonic() + 10
        hits: list[SearchResult] = []
        while not hits and time.monotonic() < deadline:  # the indexer follows the feed
            hits = replica.search("dark mode", user_id="u1")
            time.sleep(0.02)
        assert [hit.memory.id for hit in hits] == [memory.id]
        payload = replica.export_since(["user:u1:memories"], {})
        assert replica.apply_payload(decode(payload)).duplicates == 1
        for name in ("start", "stop"):
            with pytest.raises(AttributeError, match="close"):
                getattr(replica, name)
    wrapped = [
        name
        for name, method in inspect.getmembers(Replica, inspect.iscoroutinefunction)
        if not name.startswith("_") and name not in ("start", "stop")
    ]
    assert "search" in wrapped
    with SyncReplica(tmp_path / "t.db", replica_id="t1") as replica:
        for name in wrapped:
            assert not inspect.iscoroutinefunction(getattr(replica, name)), name
