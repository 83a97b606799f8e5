"""crdtmem.mem0: mem0's documented calls, run as mem0's docs write them, on real SQLite files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from crdtmem.errors import InvalidInput
from crdtmem.mem0 import AsyncMemory, Memory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mem0.db"
    monkeypatch.setenv("CRDTMEM_MEM0_PATH", str(path))
    return path


@pytest.fixture
def m(home: Path) -> Any:
    memory = Memory()
    yield memory
    memory.close()


def memories(answer: dict[str, Any]) -> list[Any]:
    return [r["memory"] for r in answer["results"]]


def test_quickstart_add_and_search(m: Memory, home: Path) -> None:
    # docs/open-source/python-quickstart.mdx
    messages = [
        {"role": "user", "content": "Hi, I'm Alex. I love basketball and gaming."},
        {"role": "assistant", "content": "Hey Alex! I'll remember your interests."},
    ]
    added = m.add(messages, user_id="alex")
    assert [(r["event"], r["role"]) for r in added["results"]] == [("ADD", "user"), ("ADD", "assistant")]
    assert {r["memory"] for r in added["results"]} == {messages[0]["content"], messages[1]["content"]}
    results = m.search("Does Alex love basketball?", filters={"user_id": "alex"})
    best = results["results"][0]
    assert best["memory"] == "Hi, I'm Alex. I love basketball and gaming."
    assert best["user_id"] == "alex" and best["role"] == "user" and 0 < best["score"] <= 1
    assert set(best) >= {"id", "memory", "hash", "metadata", "created_at", "updated_at", "score"}
    assert home.exists()


def test_user_agent_and_session_memories(m: Memory) -> None:
    m.add("I'm vegetarian and allergic to nuts", user_id="alice", metadata={"category": "diet"})
    m.add("Alice prefers window seats", user_id="alice", run_id="trip-2024", metadata={"category": "travel"})
    m.add("Escalate billing issues to a human", agent_id="support-bot")
    m.add(
        [{"role": "user", "content": "Book the table for 8pm", "name": "alice"}],
        user_id="alice",
        agent_id="concierge",
        run_id="session-123",
    )
    assert memories(m.get_all(filters={"agent_id": "support-bot"})) == ["Escalate billing issues to a human"]
    assert memories(m.get_all(filters={"run_id": "trip-2024"})) == ["Alice prefers window seats"]
    assert len(m.get_all(filters={"user_id": "alice"})["results"]) == 3
    session = m.get_all(filters={"user_id": "alice", "agent_id": "concierge", "run_id": "session-123"})
    (booked,) = session["results"]
    assert (booked["actor_id"], booked["agent_id"], booked["run_id"]) == ("alice", "concierge", "session-123")
    # mem0 1.x form: entity ids as arguments
    assert len(m.get_all(user_id="alice", limit=2)["results"]) == 2
    assert len(m.get_all(filters={"user_id": "alice"}, top_k=1)["results"]) == 1
    with pytest.raises(ValueError, match="at least one of"):
        m.get_all(filters={"category": "diet"})
    with pytest.raises(ValueError, match="At least one"):
        m.add("nobody's memory")


def test_search_with_metadata_filters(m: Memory) -> None:
    # docs/open-source/features/metadata-filtering.mdx, with memories for its filters to find
    m.add(
        "Team meeting notes: ship the beta",
        user_id="alice",
        metadata={"category": "work", "priority": 8, "status": "active", "title": "weekly meeting"},
    )
    m.add(
        "Dinner plans with friends",
        user_id="alice",
        metadata={"category": "personal", "priority": 3, "status": "archived"},
    )
    m.add(
        "Meeting with the bank about a loan",
        user_id="alice",
        metadata={"category": "finance", "priority": 9, "status": "completed"},
    )
    m.add("Meeting notes from bob", user_id="bob", metadata={"category": "work", "priority": 9})

    def found(query: str, filters: dict[str, Any]) -> set[str]:
        return set(memories(m.search(query, filters=filters)))

    assert found("What are my meeting notes?", {"user_id": "alice", "category": "work"}) == {
        "Team meeting notes: ship the beta"
    }
    assert found("meeting", {"user_id": "alice", "priority": {"gte": 8}}) == {
        "Team meeting notes: ship the beta",
        "Meeting with the bank about a loan",
    }
    assert found("meeting", {"user_id": "alice", "status": {"ne": "archived"}, "priority": {"lt": 9}}) == {
        "Team meeting notes: ship the beta"
    }
    assert found("meeting", {"user_id": "alice", "category": {"in": ["finance", "travel"]}}) == {
        "Meeting with the bank about a loan"
    }
    assert found("plans", {"user_id": "alice", "status": {"nin": ["active", "completed"]}}) == {
        "Dinner plans with friends"
    }
    assert found("meeting", {"user_id": "alice", "title": {"contains": "meeting"}}) == {
        "Team meeting notes: ship the beta"
    }
    assert found("meeting", {"user_id": "alice", "title": {"icontains": "WEEKLY"}}) == {
        "Team meeting notes: ship the beta"
    }
    assert found("meeting", {"user_id": "alice", "title": "*"}) == {"Team meeting notes: ship the beta"}
    complex_filter = {
        "user_id": "alice",
        "AND": [
            {"OR": [{"category": "work"}, {"category": "finance"}]},
            {"priority": {"gte": 5}},
            {"NOT": [{"status": "completed"}]},
        ],
    }
    assert found("meeting", complex_filter) == {"Team meeting notes: ship the beta"}
    assert found("meeting", {"OR": [{"user_id": "bob"}, {"category": "finance"}]}) == {
        "Meeting notes from bob",
        "Meeting with the bank about a loan",
    }
    # threshold and top_k; an unrelated query finds nothing rather than zero-score noise
    assert len(m.search("meeting", filters={"user_id": "alice"}, top_k=1)["results"]) == 1
    assert m.search("meeting", filters={"user_id": "alice"}, threshold=0.99)["results"] == []
    assert m.search("quantum chromodynamics lecture", filters={"user_id": "alice"})["results"] == []
    try:
        m.search("test query", filters={"user_id": "alice", "invalid_operator": {"unknown": "value"}})
        raise AssertionError("an unknown operator must be refused")
    except ValueError as e:
        assert "unknown" in str(e)


def test_get_update_history_delete(m: Memory) -> None:
    (added,) = m.add("Alex likes coffee", user_id="alex", infer=False)["results"]
    memory_id = added["id"]
    assert m.get(memory_id)["memory"] == "Alex likes coffee"
    assert m.update(memory_id=memory_id, text="Alex now prefers decaf coffee") == {
        "message": "Memory updated successfully!"
    }
    m.update(memory_id, data="Alex prefers decaf, no sugar", metadata={"category": "preferences"})
    got = m.get(memory_id)
    assert got["memory"] == "Alex prefers decaf, no sugar" and got["metadata"] == {"category": "preferences"}
    assert m.delete(memory_id=memory_id) == {"message": "Memory deleted successfully!"}
    assert m.get(memory_id) is None
    history = m.history(memory_id)
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
        ("ADD", None, "Alex likes coffee"),
        ("UPDATE", "Alex likes coffee", "Alex now prefers decaf coffee"),
        ("UPDATE", "Alex now prefers decaf coffee", "Alex prefers decaf, no sugar"),
        ("DELETE", "Alex prefers decaf, no sugar", None),
    ]
    assert history[-1]["is_deleted"] and all(h["memory_id"] == memory_id for h in history)
    assert history[0]["role"] == "user"
    with pytest.raises(ValueError, match="not found"):
        m.delete(memory_id)
    with pytest.raises(ValueError, match="not found"):
        m.update("no-such-memory", text="x")
    assert m.history("no-such-memory") == []


def test_delete_all_and_reset(m: Memory) -> None:
    for n in range(5):
        m.add(f"fact {n}", user_id="alice")
    m.add("bob's fact", user_id="bob")
    m.add("the bot's rule", agent_id="bot")
    assert m.delete_all(user_id="alice") == {"message": "Memories deleted successfully!"}
    assert m.get_all(filters={"user_id": "alice"})["results"] == []
    assert memories(m.get_all(filters={"user_id": "bob"})) == ["bob's fact"]
    with pytest.raises(ValueError, match="reset"):
        m.delete_all()
    m.reset()
    assert m.get_all(filters={"user_id": "bob"})["results"] == []
    assert m.get_all(filters={"agent_id": "bot"})["results"] == []


def test_memories_outlive_the_process_object(home: Path) -> None:
    with Memory() as first:
        memory_id = first.add("kept on disk", user_id="u1")["results"][0]["id"]
    with Memory.from_config({"path": str(home)}) as second:
        assert second.get(memory_id)["memory"] == "kept on disk"
        assert memories(second.search("kept on disk", filters={"user_id": "u1"})) == ["kept on disk"]


def test_infer_needs_an_extractor(m: Memory) -> None:
    with pytest.raises(ValueError, match="extractor"):
        m.add("I moved to Lisbon", user_id="alice", infer=True)


def test_infer_runs_the_extractor(tmp_path: Path) -> None:
    seen: list[Any] = []

    def extractor(messages: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen.append(existing)
        text = messages[-1]["content"]
        city = text.rsplit(" ", 1)[-1].rstrip(".")
        for old in existing:
            if old["memory"].startswith("Lives in"):
                return [{"event": "UPDATE", "id": old["id"], "memory": f"Lives in {city}"}]
        return [{"event": "ADD", "memory": f"Lives in {city}"}, {"event": "NONE"}]

    with Memory.from_config({"path": str(tmp_path / "x.db"), "extractor": extractor}) as m:
        first = m.add("I live in Porto.", user_id="alice")["results"]
        assert [(r["event"], r["memory"]) for r in first] == [("ADD", "Lives in Porto")]
        second = m.add([{"role": "user", "content": "I moved, now I live in Lisbon."}], user_id="alice")
        (update,) = second["results"]
        assert update["event"] == "UPDATE" and update["id"] == first[0]["id"]
        assert update["memory"] == "Lives in Lisbon" and update["previous_memory"] == "Lives in Porto"
        assert memories(m.get_all(filters={"user_id": "alice"})) == ["Lives in Lisbon"]
        assert seen[0] == [] and seen[1][0]["memory"] == "Lives in Porto"
        raw = m.add("stored as said", user_id="alice", infer=False)["results"]
        assert raw[0]["memory"] == "stored as said"


def test_async_memory(home: Path) -> None:
    async def main() -> None:
        m = AsyncMemory()
        try:
            added = await m.add(
                "Alice is training for a marathon", user_id="alice", metadata={"category": "health"}
            )
            memory_id = added["results"][0]["id"]
            await m.add("Alice likes jazz", user_id="alice", metadata={"category": "music"})
            hits = await m.search("marathon training", filters={"user_id": "alice", "category": "health"})
            assert memories(hits) == ["Alice is training for a marathon"]
            assert len((await m.get_all(filters={"user_id": "alice"}))["results"]) == 2
            await m.update(memory_id, text="Alice ran her marathon")
            assert (await m.get(memory_id))["memory"] == "Alice ran her marathon"
            assert [h["event"] for h in await m.history(memory_id)] == ["ADD", "UPDATE"]
            await m.delete(memory_id)
            await m.delete_all(user_id="alice")
            assert (await m.get_all(filters={"user_id": "alice"}))["results"] == []
        finally:
            await m.close()

    asyncio.run(main())


def test_two_memories_on_two_replicas_sync(tmp_path: Path) -> None:
    phone = Memory.from_config({"path": str(tmp_path / "phone.db"), "replica_id": "phone"})
    laptop = Memory.from_config({"path": str(tmp_path / "laptop.db"), "replica_id": "laptop"})
    channel = "user:alice@example.com:memories"

    def sync(source: Memory, target: Memory) -> None:
        target.replica.apply(source.replica.export_since(channel, target.replica.version_vector(channel)))

    try:
        memory_id = phone.add("Alice prefers aisle seats", user_id="alice@example.com")["results"][0]["id"]
        laptop.add("Alice is gluten free", user_id="alice@example.com", metadata={"category": "diet"})
        sync(phone, laptop)
        sync(laptop, phone)
        for m in (phone, laptop):
            assert sorted(memories(m.get_all(filters={"user_id": "alice@example.com"}))) == [
                "Alice is gluten free",
                "Alice prefers aisle seats",
            ]
            diet = m.search("gluten", filters={"user_id": "alice@example.com", "category": "diet"})
            assert memories(diet) == ["Alice is gluten free"]
        laptop.update(memory_id, text="Alice prefers window seats")
        sync(laptop, phone)
        assert phone.get(memory_id)["memory"] == "Alice prefers window seats"
        assert [h["event"] for h in phone.history(memory_id)] == ["ADD", "UPDATE"]
    finally:
        phone.close()
        laptop.close()


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown config keys"):
        Memory.from_config({"path": str(tmp_path / "x.db"), "vectorstore": {}})
    with Memory.from_config({"history_db_path": str(tmp_path / "h.db"), "llm": {"provider": "openai"}}) as m:
        assert m.add("ok", user_id="u")["results"][0]["event"] == "ADD"
    assert (tmp_path / "h.db").exists()


def test_expiration_dates_hide_memories(m: Memory) -> None:
    # docs/core-concepts/memory-operations/add.mdx and update.mdx
    kept = m.add("Trip to Tokyo next month", user_id="alice", expiration_date="2030-01-31")["results"][0]
    old = m.add("Conference badge pickup", user_id="alice", expiration_date="2020-01-31")["results"][0]
    assert memories(m.get_all(filters={"user_id": "alice"})) == ["Trip to Tokyo next month"]
    assert len(m.get_all(filters={"user_id": "alice"}, show_expired=True)["results"]) == 2
    assert memories(m.search("conference badge", filters={"user_id": "alice"})) == []
    shown = m.search("conference badge", filters={"user_id": "alice"}, show_expired=True, explain=True)
    assert memories(shown) == ["Conference badge pickup"]
    assert shown["results"][0]["expiration_date"] == "2020-01-31"
    assert shown["results"][0]["score_details"]["semantic_score"] == shown["results"][0]["score"]
    m.update(memory_id=old["id"], text="Conference badge pickup", expiration_date=None)
    assert len(m.get_all(filters={"user_id": "alice"})["results"]) == 2
    m.update(kept["id"], expiration_date="2021-05-01")
    assert m.get(kept["id"])["expiration_date"] == "2021-05-01"
    assert memories(m.get_all(filters={"user_id": "alice"})) == ["Conference badge pickup"]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        m.add("x", user_id="alice", expiration_date="next week")
